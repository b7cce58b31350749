//! Who may touch a `.sfts-part`: only the process holding its lock.
//!
//! Two clients writing the same output at once (a script's retry started while the first run
//! still goes, the same command in two terminals) would otherwise share one partial file: one
//! truncating or replacing it under the other, or renaming the other's half-written file to
//! the final name after verifying its own bytes, a corrupted file reported as good. So a
//! partial file is locked (`flock`, exclusive, never waited for) from the moment it is
//! created or reopened for a resume until it is renamed or removed, and a partial file that
//! is locked is neither resumed, replaced nor removed: that client stops with
//! [`ClientError::InUse`]. The lock goes with the process, so a killed client leaves an
//! unlocked partial that the next run resumes or replaces as before. File systems without
//! `flock` (some network ones answer `ENOLCK`) get the old unlocked behaviour.

use crate::error::ClientError;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Takes the exclusive lock of the partial file `part`, open as `file`, without waiting.
pub fn lock(file: &File, part: &Path) -> Result<(), ClientError> {
    // SAFETY: `flock` on a descriptor `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err(ClientError::InUse(part.to_path_buf())),
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS) => {
            tracing::debug!("'{}' cannot be locked here ({e})", part.display());
            Ok(())
        }
        _ => Err(ClientError::local("cannot lock", part, e)),
    }
}

/// [`lock`], then checks that `part` still names `file` (`name_now`: device and inode of what
/// has the name now). Opening or creating and locking are two steps: a client that replaced the
/// name in between (having locked, removed and recreated it) holds the file under the name now,
/// and ours is a removed one.
pub fn lock_named(
    file: &File,
    part: &Path,
    name_now: impl FnOnce() -> io::Result<(u64, u64)>,
) -> Result<(), ClientError> {
    lock(file, part)?;
    let ours = file
        .metadata()
        .map(|m| identity(&m))
        .map_err(|e| ClientError::local("cannot read", part, e))?;
    match name_now() {
        Ok(now) if now == ours => Ok(()),
        Ok(_) => Err(ClientError::InUse(part.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ClientError::InUse(part.into())),
        Err(e) => Err(ClientError::local("cannot read", part, e)),
    }
}

/// [`lock`] for a file this client has just created new (`O_EXCL`) under `part`. Only a
/// holder of the lock removes a partial file, so between our create and our lock another
/// client could only have locked it and removed it (taking it for stale): then it has no name
/// left (one `fstat`, cheaper than comparing with the name, for every file of a tree).
pub fn lock_created(file: &File, part: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::MetadataExt;
    lock(file, part)?;
    match file.metadata() {
        Ok(m) if m.nlink() == 0 => Err(ClientError::InUse(part.to_path_buf())),
        Ok(_) => Ok(()),
        Err(e) => Err(ClientError::local("cannot read", part, e)),
    }
}

/// Device and inode.
pub fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.sfts-part");
        let first = File::create(&part).unwrap();
        lock(&first, &part).unwrap();
        // Another open of the same file: another holder, as another process would be.
        let second = OpenOptions::new().read(true).open(&part).unwrap();
        let err = lock(&second, &part).unwrap_err();
        assert!(
            matches!(err, ClientError::InUse(ref p) if p == &part),
            "{err}"
        );
        assert!(err.to_string().contains("f.sfts-part"), "{err}");
        drop(first);
        lock(&second, &part).unwrap();
    }

    #[test]
    fn a_lock_on_a_file_no_longer_under_the_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.sfts-part");
        let old = File::create(&part).unwrap();
        let name_now = || std::fs::symlink_metadata(&part).map(|m| identity(&m));
        // Replaced between our open and our lock.
        std::fs::remove_file(&part).unwrap();
        let err = lock_named(&old, &part, name_now).unwrap_err();
        assert!(matches!(err, ClientError::InUse(_)), "{err}");
        let new = File::create(&part).unwrap();
        let err = lock_named(&old, &part, name_now).unwrap_err();
        assert!(matches!(err, ClientError::InUse(_)), "{err}");
        drop(old);
        lock_named(&new, &part, name_now).unwrap();
    }

    #[test]
    fn a_created_file_removed_before_the_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.sfts-part");
        let ours = File::create(&part).unwrap();
        std::fs::remove_file(&part).unwrap();
        let err = lock_created(&ours, &part).unwrap_err();
        assert!(matches!(err, ClientError::InUse(_)), "{err}");
        let again = File::create(&part).unwrap();
        lock_created(&again, &part).unwrap();
    }

    #[test]
    fn a_clone_of_the_holder_keeps_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.sfts-part");
        let first = File::create(&part).unwrap();
        lock(&first, &part).unwrap();
        let kept = first.try_clone().unwrap();
        drop(first);
        let other = File::open(&part).unwrap();
        assert!(matches!(lock(&other, &part), Err(ClientError::InUse(_))));
        drop(kept);
        lock(&other, &part).unwrap();
    }
}
