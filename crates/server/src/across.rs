//! Publishing an upload on another file system than the staging directory: a mount point
//! inside the served root (a disk or a network share mounted into it).
//!
//! The staged file cannot be linked or renamed there (`EXDEV`), so it is copied into a new file
//! in the target's directory first, which is then published the same atomic way: linked (a name
//! that exists meanwhile is never clobbered) or, to replace, renamed. The copy is an unnamed
//! file (`O_TMPFILE`) where the file system has them, so a reader never sees a half-copied file
//! and a crash leaves nothing behind (to replace, it gets the name `.sfts-publish.<staging
//! name>` once whole, just before the rename); elsewhere it is written under that name,
//! removed on every failure, and after a crash by the next attempt at the same upload.
//! Where the file system has no hard links either (vfat, exFAT), a new file is renamed into
//! place after one more look, as on the staging file system.

use crate::paths::PUBLISH_PREFIX;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `EXDEV`: the source and destination of a link or rename are on different file systems.
pub fn is_cross_device(e: &io::Error) -> bool {
    const EXDEV: i32 = 18; // the same on Linux, the BSDs and macOS
    cfg!(unix) && e.raw_os_error() == Some(EXDEV)
}

/// How the copy ended.
#[derive(Debug)]
pub enum Placed {
    /// Under `target`; the returned file is the published one (its inode, for the digest
    /// cache).
    Done(File),
    /// Not replacing, and `target` exists.
    Exists,
}

/// Copies `staged` into `target`'s directory (modification time `mtime`, flushed to the disk
/// when `durable`) and publishes it as `target`: replacing what is there if `replace`, else
/// only if nothing is. `temp_name` names the copy while it is written where an unnamed one is
/// not possible. `staged` itself is left for the caller.
pub fn publish_copy(
    staged: &Path,
    target: &Path,
    temp_name: &str,
    replace: bool,
    mtime: SystemTime,
    durable: bool,
) -> io::Result<Placed> {
    let temp = temp_path(target, temp_name);
    // Left by a crash during an earlier attempt at this very upload (the staging name is
    // unique to it).
    let _ = fs::remove_file(&temp);
    // Unnamed, then linked: nothing under a name until the copy is whole (when replacing,
    // linked under the temporary name, then renamed over the target).
    #[cfg(target_os = "linux")]
    if let Some(copy) = unnamed_in(parent(target))? {
        let copy = fill(copy, staged, mtime, durable)?;
        let name = if replace { temp.as_path() } else { target };
        match link_unnamed(&copy, name) {
            Ok(()) if !replace => return Ok(Placed::Done(copy)),
            Ok(()) => {
                return fs::rename(&temp, target)
                    .map(|()| Placed::Done(copy))
                    .inspect_err(|_| {
                        let _ = fs::remove_file(&temp);
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !replace => {
                return Ok(Placed::Exists)
            }
            // No /proc to link through: copy again, named.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let copy = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&temp)?;
    let published = fill(copy, staged, mtime, durable).and_then(|copy| {
        if replace {
            fs::rename(&temp, target).map(|()| Placed::Done(copy))
        } else {
            match fs::hard_link(&temp, target) {
                Ok(()) => Ok(Placed::Done(copy)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Placed::Exists),
                Err(e) if crate::paths::is_no_space(&e) => Err(e),
                // No hard links here (vfat, exFAT: a USB disk): rename, after one more look,
                // as a publish on the staging file system does.
                Err(_) => match fs::symlink_metadata(target) {
                    Err(gone) if gone.kind() == io::ErrorKind::NotFound => {
                        fs::rename(&temp, target).map(|()| Placed::Done(copy))
                    }
                    _ => Ok(Placed::Exists),
                },
            }
        }
    });
    // Linked or failed: the name goes (renamed: it is gone already).
    let _ = fs::remove_file(&temp);
    published
}

/// Writes `staged`'s bytes into `copy`, sets its modification time and, when `durable`,
/// flushes it.
fn fill(mut copy: File, staged: &Path, mtime: SystemTime, durable: bool) -> io::Result<File> {
    io::copy(&mut File::open(staged)?, &mut copy)?;
    copy.set_modified(mtime)?;
    if durable {
        copy.sync_all()?;
    }
    Ok(copy)
}

/// An unnamed file in `dir` (`O_TMPFILE`), or `None` where the file system has none.
#[cfg(target_os = "linux")]
fn unnamed_in(dir: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        // EOPNOTSUPP: this file system has no unnamed files; EISDIR: nor has this kernel.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives the unnamed `file` the name `target`; fails if the name exists.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, target: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(invalid)?;
    let to = CString::new(target.as_os_str().as_bytes()).map_err(invalid)?;
    // SAFETY: NUL-terminated paths; AT_SYMLINK_FOLLOW makes the link to the file the magic
    // link points at.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The name [`publish_copy`] gives a named copy while it is written.
pub fn temp_path(target: &Path, temp_name: &str) -> PathBuf {
    parent(target).join(format!("{PUBLISH_PREFIX}{temp_name}"))
}

/// The directory `target` is in.
fn parent(target: &Path) -> &Path {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn setup(content: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged.part");
        fs::write(&staged, content).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        (dir, staged, out.join("f.bin"))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_copy_is_published_whole_with_its_time_and_no_temporary_left() {
        let (_dir, staged, target) = setup(b"payload");
        let mtime = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        let placed = publish_copy(&staged, &target, "s1", false, mtime, true).unwrap();
        let Placed::Done(file) = placed else {
            panic!("not published: {placed:?}")
        };
        assert_eq!(fs::read(&target).unwrap(), b"payload");
        assert_eq!(fs::metadata(&target).unwrap().modified().unwrap(), mtime);
        // The returned file is the published inode.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            file.metadata().unwrap().ino(),
            fs::metadata(&target).unwrap().ino()
        );
        assert_eq!(names(target.parent().unwrap()), ["f.bin"]);
        assert!(staged.exists(), "the staged file is the caller's to remove");
    }

    #[test]
    fn an_existing_name_is_kept_unless_replacing() {
        let (_dir, staged, target) = setup(b"new");
        fs::write(&target, b"old").unwrap();
        let mtime = SystemTime::now();
        let placed = publish_copy(&staged, &target, "s2", false, mtime, false).unwrap();
        assert!(matches!(placed, Placed::Exists), "{placed:?}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(target.parent().unwrap()), ["f.bin"]);
        let placed = publish_copy(&staged, &target, "s2", true, mtime, false).unwrap();
        assert!(matches!(placed, Placed::Done(_)), "{placed:?}");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(names(target.parent().unwrap()), ["f.bin"]);
    }

    #[test]
    fn a_failed_copy_leaves_no_temporary() {
        let (_dir, staged, target) = setup(b"x");
        fs::remove_file(&staged).unwrap();
        let err = publish_copy(&staged, &target, "s3", true, SystemTime::now(), false);
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(!temp_path(&target, "s3").exists());
        assert!(names(target.parent().unwrap()).is_empty());
    }

    #[test]
    fn a_copy_left_by_a_crash_does_not_block_the_next_attempt() {
        for replace in [false, true] {
            let (_dir, staged, target) = setup(b"again");
            fs::write(temp_path(&target, "s4"), b"half").unwrap();
            let placed = publish_copy(&staged, &target, "s4", replace, SystemTime::now(), false);
            assert!(
                matches!(placed, Ok(Placed::Done(_))),
                "{replace}: {placed:?}"
            );
            assert_eq!(fs::read(&target).unwrap(), b"again");
            assert_eq!(names(target.parent().unwrap()), ["f.bin"], "{replace}");
        }
    }

    #[test]
    fn cross_device_is_recognised() {
        assert!(is_cross_device(&io::Error::from_raw_os_error(18)));
        assert!(!is_cross_device(&io::Error::from_raw_os_error(17)));
    }
}
