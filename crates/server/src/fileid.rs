//! Which version of a file is being served: size, modification and change times, inode and
//! device, read from the *open* file so they describe the bytes that will be sent.
//!
//! The same values key the digest cache (a rewrite, a `touch` or a replacement by rename all
//! change at least one of them) and detect a file that is modified while it is being sent.

use sfts_state::FileKey;
use std::fs::Metadata;
use std::path::Path;

/// The identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the Unix epoch (what `FileHeader` and `if_match` carry).
    pub mtime_ns: i64,
    /// Status change time, ns since the Unix epoch (0 where the platform has none).
    pub ctime_ns: i64,
    /// Inode number (0 where the platform has none).
    pub inode: u64,
    /// Device number (0 where the platform has none).
    pub device: u64,
}

impl FileId {
    /// The identity `meta` describes.
    pub fn of(meta: &Metadata) -> FileId {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileId {
                size: meta.len(),
                mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
                ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
                inode: meta.ino(),
                device: meta.dev(),
            }
        }
        #[cfg(not(unix))]
        {
            FileId {
                size: meta.len(),
                mtime_ns: modified_ns(meta),
                ctime_ns: 0,
                inode: 0,
                device: 0,
            }
        }
    }

    /// True when a file with identity `later` still holds the same bytes as this one, as far as
    /// the file system can tell. Inode and device come from the same open file, so only size
    /// and times can move.
    pub fn unchanged(&self, later: &FileId) -> bool {
        self == later
    }

    /// The digest-cache key of this version of `rel_path` (relative to the root).
    pub fn key(&self, rel_path: String) -> FileKey {
        FileKey {
            path: rel_path,
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            inode: self.inode,
            device: self.device,
        }
    }
}

/// `secs` and `nsec` as one count of nanoseconds, saturating far outside the year range a file
/// system can hold.
#[cfg(unix)]
pub(crate) fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Modification time from the portable API (negative before 1970, 0 when unknown).
#[cfg(not(unix))]
fn modified_ns(meta: &Metadata) -> i64 {
    use std::time::UNIX_EPOCH;
    let Ok(t) = meta.modified() else { return 0 };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// `path` relative to `root` with `/` separators: the name the cache knows a file by. The
/// canonical path is used, not the client's spelling, so `a//b` and `./a/b` share one entry.
pub fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn identity_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        let before = FileId::of(&file.metadata().unwrap());
        assert_eq!(before.size, 5);
        let modified = file.metadata().unwrap().modified().unwrap();
        let want = modified.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
        assert_eq!(before.mtime_ns, want);
        assert!(before.unchanged(&FileId::of(&file.metadata().unwrap())));

        file.set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        let after = FileId::of(&file.metadata().unwrap());
        assert!(!before.unchanged(&after));
        assert_eq!((after.inode, after.device), (before.inode, before.device));
        assert_eq!(before.key("f".into()).path, "f");
    }

    #[test]
    fn relative_names() {
        let root = Path::new("/srv/share");
        assert_eq!(
            relative_name(root, Path::new("/srv/share/a/b.bin")),
            "a/b.bin"
        );
        assert_eq!(relative_name(root, Path::new("/srv/share/x")), "x");
    }
}
