//! What a listing needs to know of an entry, looked at relative to an open directory.
//!
//! An `lstat` by path walks every component from `/` again; relative to a descriptor of the
//! entry's directory (`fstatat`) it walks one, which was a third of a listing's time on a
//! tree of 10,000 files six directories deep. A listing holds one such descriptor at a time
//! ([`Dir`]), and none while it is listing a subdirectory or waiting for its client.

use std::fs::Metadata;
use std::io;
use std::path::Path;

/// The kind of an entry, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// An entry's kind, size, modification time and identity.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    pub kind: Kind,
    pub size: u64,
    pub mtime_ns: i64,
    pub device: u64,
    pub inode: u64,
}

impl Look {
    /// From metadata std gave (`symlink_metadata` or, for a symlink's target, `metadata`).
    pub fn of(meta: &Metadata) -> Look {
        let id = crate::fileid::FileId::of(meta);
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        Look {
            kind,
            size: meta.len(),
            mtime_ns: id.mtime_ns,
            device: id.device,
            inode: id.inode,
        }
    }
}

/// An open directory whose entries are looked at relative to it.
pub struct Dir {
    fd: std::os::fd::OwnedFd,
}

impl Dir {
    /// Opens `path` (`O_PATH`: nothing is read through it).
    pub fn open(path: &Path) -> io::Result<Dir> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `c` is NUL-terminated; the result is checked before use.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Dir {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// `lstat` of the entry `name` of this directory.
    pub fn look(&self, name: &std::ffi::OsStr) -> io::Result<Look> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: an all-zero `stat` is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and `st` a `stat` we own; both outlive the call.
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        Ok(Look {
            kind,
            size: st.st_size as u64,
            mtime_ns: crate::fileid::ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            device: st.st_dev,
            inode: st.st_ino,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_looks_match_std() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("f"), b"12345").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        let open = Dir::open(d).unwrap();
        for (name, kind) in [("f", Kind::File), ("sub", Kind::Dir), ("l", Kind::Symlink)] {
            let ours = open.look(name.as_ref()).unwrap();
            let std = Look::of(&std::fs::symlink_metadata(d.join(name)).unwrap());
            assert_eq!(ours.kind, kind, "{name}");
            assert_eq!(
                (ours.kind, ours.size, ours.mtime_ns, ours.device, ours.inode),
                (std.kind, std.size, std.mtime_ns, std.device, std.inode),
                "{name}"
            );
        }
        assert_eq!(
            open.look("missing".as_ref()).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
