//! The quick way to open a file a client asked for: one `openat2(2)` relative to the root's
//! directory, with the kernel refusing any step outside it.
//!
//! [`crate::paths::locate`] walks a requested path one component at a time (a `statx` per
//! component, each walking the whole path again) so that symlinks can be followed and checked;
//! then the file is opened by its path, one more walk. For a tree of small files that was a
//! fifth of the server's CPU. Most paths have no symlink at all, and for those
//! [`open_plain`] does it in one look and one open:
//!
//! 1. `symlink_metadata` of the path: only a regular file goes on (a device, a pipe or a
//!    directory is never opened here: opening some devices has side effects, a pipe blocks);
//! 2. `openat2` from the root's descriptor with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!    RESOLVE_NO_MAGICLINKS` and `O_NONBLOCK`: the kernel refuses a symlink anywhere on the
//!    way and any escape from the root, and nothing swapped in meanwhile can block the open;
//! 3. the open file must be the very file of step 1 (device and inode), and regular.
//!
//! Whenever one step does not hold (a symlink on the way, an old kernel without `openat2`,
//! something that is not a regular file, a race) the caller takes the careful walk, which
//! also words the refusals. The quick way never decides anything the careful walk would not.

use crate::paths::STAGING_DIR;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The served root's directory, opened once, for [`open_plain`].
#[derive(Debug)]
pub struct RootDir {
    root: PathBuf,
    dir: File,
}

impl RootDir {
    /// Opens `root` (canonical) as a directory.
    pub fn open(root: &Path) -> io::Result<RootDir> {
        Ok(RootDir {
            root: root.to_path_buf(),
            dir: open_dir(root)?,
        })
    }
}

/// A file opened the quick way.
#[derive(Debug)]
pub struct Plain {
    /// The open file.
    pub file: File,
    /// Its metadata (of the open file).
    pub metadata: fs::Metadata,
    /// Its canonical path (the root and the components: no symlink was met).
    pub path: PathBuf,
}

/// Opens the regular file `parts` (checked components, see [`crate::paths::check_syntax`])
/// under the root when no symlink is on the way; `None` sends the caller the careful way.
pub fn open_plain(root: &RootDir, parts: &[&str]) -> Option<Plain> {
    if parts.is_empty() || parts[0] == STAGING_DIR {
        return None;
    }
    let relative = parts.join("/");
    let path = root.root.join(&relative);
    let seen = fs::symlink_metadata(&path).ok()?;
    if !seen.file_type().is_file() {
        return None;
    }
    let file = open_beneath(&root.dir, &relative).ok()?;
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() || !same_file(&seen, &metadata) {
        return None;
    }
    Some(Plain {
        file,
        metadata,
        path,
    })
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(unix)]
fn open_dir(root: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
}

#[cfg(not(unix))]
fn open_dir(root: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).open(root)
}

/// `openat2(dir, relative, O_RDONLY, beneath, no symlinks)`, then back to blocking reads.
#[cfg(target_os = "linux")]
fn open_beneath(dir: &File, relative: &str) -> io::Result<File> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = CString::new(relative).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    /// `struct open_how` of `linux/openat2.h` (libc's is marked non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `name` is a NUL-terminated string and `how` an `open_how` of the size passed;
    // both outlive the call. The kernel returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the kernel just opened for us, owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    // O_NONBLOCK only guarded the open (step 2 of the module comment); reads block as usual.
    // SAFETY: F_SETFL on a descriptor we own; 0 clears the status flags we set.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// No `openat2` here: always the careful way.
#[cfg(not(target_os = "linux"))]
fn open_beneath(_dir: &File, _relative: &str) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Read;

    fn root() -> (tempfile::TempDir, RootDir) {
        let dir = tempfile::tempdir().unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        let root = RootDir::open(&canonical).unwrap();
        (dir, root)
    }

    #[test]
    fn plain_files_open_and_read() {
        let (dir, root) = root();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f.txt"), b"hello").unwrap();
        if let Err(e) = open_beneath(&root.dir, "a/b/f.txt") {
            // A kernel before 5.6, or a sandbox that filters the call: the server then always
            // takes the careful way, which the other tests cover.
            assert!(
                matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
                "{e}"
            );
            eprintln!("openat2 is not available here ({e}); nothing to test");
            return;
        }
        let mut p = open_plain(&root, &["a", "b", "f.txt"]).expect("opened the quick way");
        let mut got = String::new();
        p.file.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        assert_eq!(p.metadata.len(), 5);
        assert_eq!(p.path, root.root.join("a/b/f.txt"));
    }

    #[test]
    fn everything_else_goes_the_careful_way() {
        use std::os::unix::fs::symlink;
        let (dir, root) = root();
        let d = dir.path();
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/f"), b"x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        symlink(outside.path().join("secret"), d.join("out")).unwrap();
        symlink("sub/f", d.join("inside")).unwrap();
        symlink("sub", d.join("dirlink")).unwrap();
        fs::create_dir_all(d.join(STAGING_DIR)).unwrap();
        fs::write(d.join(STAGING_DIR).join("part"), b"p").unwrap();
        let fifo = std::ffi::CString::new(d.join("pipe").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for parts in [
            &["out"][..],           // a symlink leading outside
            &["inside"][..],        // a symlink inside: the careful walk resolves it
            &["dirlink", "f"][..],  // a symlinked directory on the way
            &["sub"][..],           // a directory
            &["pipe"][..],          // a named pipe: never opened (it would block)
            &["missing"][..],       // nothing
            &[STAGING_DIR, "part"], // uploads in progress
            &[][..],                // the root itself
        ] {
            assert!(open_plain(&root, parts).is_none(), "{parts:?}");
        }
    }

    #[test]
    fn openat2_itself_refuses_symlinks_and_escapes() {
        use std::os::unix::fs::symlink;
        let (dir, root) = root();
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/f"), b"x").unwrap();
        symlink("sub", dir.path().join("link")).unwrap();
        assert!(open_beneath(&root.dir, "sub/f").is_ok());
        assert!(open_beneath(&root.dir, "link/f").is_err());
        assert!(open_beneath(&root.dir, "../x").is_err());
        assert!(open_beneath(&root.dir, "/etc/hostname").is_err());
    }
}
