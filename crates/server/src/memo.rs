//! The whole-file digests of the files used lately, in memory, in front of the digest cache
//! in SQLite.
//!
//! A tree of small files asks the cache once per file; from SQLite that is a read transaction
//! (file locks included), a sixth of the serving thread's time for 4 KiB files. Entries here
//! are found by device and inode and hold a 64-bit hash of the path, the size and both times
//! of the version they describe: the cache's key (path, size, times, inode, device) up to
//! that hash, so an entry does not describe another version of a file, nor a file that took
//! over a deleted file's inode under another name. Finding entries by the path itself
//! (hashing it into the table, then comparing it with the stored copy on another cache line)
//! was about a tenth of the serving thread's time for a tree of 4 KiB files. Entries hold the
//! whole-file digests only (per-chunk digests stay in SQLite), so each costs about a hundred
//! and fifty bytes. Past [`MEMO_ENTRIES`] entries, arbitrary ones are forgotten.

use sfts_state::{CachedDigests, FileKey};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

/// Most entries kept (about 8 MiB).
pub const MEMO_ENTRIES: usize = 50_000;

/// The version of a file an entry describes: a hash of its path, its size, modification and
/// status change times.
type Version = (u64, u64, i64, i64);

/// Digests by device and inode, with the version they describe.
#[derive(Default)]
pub struct Memo {
    entries: Mutex<HashMap<(u64, u64), (Version, CachedDigests)>>,
}

fn inode(key: &FileKey) -> (u64, u64) {
    (key.device, key.inode)
}

fn version(key: &FileKey) -> Version {
    let mut path = DefaultHasher::new();
    key.path.hash(&mut path);
    (path.finish(), key.size, key.mtime_ns, key.ctime_ns)
}

/// `d` without its per-chunk digests.
fn whole(d: &CachedDigests) -> CachedDigests {
    CachedDigests {
        chunks: None,
        ..d.clone()
    }
}

impl Memo {
    /// The digests known for exactly this version of the file, if any.
    pub fn get(&self, key: &FileKey) -> Option<CachedDigests> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&inode(key)) {
            Some((v, d)) if *v == version(key) => Some(d.clone()),
            _ => None,
        }
    }

    /// Adds what is known of this version of the file (merged with what is kept for the same
    /// version; another version is replaced).
    pub fn add(&self, key: &FileKey, digests: &CachedDigests) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let id = inode(key);
        let merged = match entries.get(&id) {
            Some((v, older)) if *v == version(key) => older.merged_with(&whole(digests)),
            _ => whole(digests),
        };
        if entries.len() >= MEMO_ENTRIES && !entries.contains_key(&id) {
            if let Some(any) = entries.keys().next().copied() {
                entries.remove(&any);
            }
        }
        entries.insert(id, (version(key), merged));
    }

    /// Number of entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfts_state::ChunkDigests;

    fn key(inode: u64, mtime_ns: i64) -> FileKey {
        FileKey {
            path: format!("f{inode}"),
            size: 1,
            mtime_ns,
            ctime_ns: 0,
            inode,
            device: 1,
        }
    }

    #[test]
    fn only_the_same_version_is_found_and_merged() {
        let memo = Memo::default();
        let md5 = CachedDigests {
            md5: Some([1; 16]),
            chunks: Some(ChunkDigests {
                chunk_size: 4,
                sha256: vec![[0; 32]],
            }),
            ..Default::default()
        };
        memo.add(&key(7, 1), &md5);
        assert_eq!(memo.get(&key(7, 2)), None);
        assert_eq!(memo.get(&key(8, 1)), None);
        let other_device = FileKey {
            device: 2,
            ..key(7, 1)
        };
        assert_eq!(memo.get(&other_device), None);
        for changed in [
            FileKey {
                size: 2,
                ..key(7, 1)
            },
            FileKey {
                ctime_ns: 1,
                ..key(7, 1)
            },
        ] {
            assert_eq!(memo.get(&changed), None);
        }
        // Another name with the inode (a file that took it over, or a hard link).
        let renamed = FileKey {
            path: "elsewhere/g".into(),
            ..key(7, 1)
        };
        assert_eq!(memo.get(&renamed), None);
        let got = memo.get(&key(7, 1)).unwrap();
        assert_eq!((got.md5, got.chunks), (Some([1; 16]), None));
        let sha = CachedDigests {
            sha256: Some([2; 32]),
            ..Default::default()
        };
        memo.add(&key(7, 1), &sha);
        let got = memo.get(&key(7, 1)).unwrap();
        assert_eq!((got.md5, got.sha256), (Some([1; 16]), Some([2; 32])));
        // Another version replaces it.
        memo.add(&key(7, 2), &sha);
        assert_eq!(memo.get(&key(7, 1)), None);
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn it_stays_bounded() {
        let memo = Memo::default();
        for i in 0..MEMO_ENTRIES as u64 + 10 {
            memo.add(&key(i, 1), &CachedDigests::default());
        }
        assert_eq!(memo.len(), MEMO_ENTRIES);
        assert!(memo.get(&key(MEMO_ENTRIES as u64 + 9, 1)).is_some());
    }
}
