//! The whole-file digests of the files used lately, in memory, in front of the digest cache
//! in SQLite.
//!
//! A tree of small files asks the cache once per file; from SQLite that is a read transaction
//! (file locks included), a sixth of the serving thread's time for 4 KiB files. Entries here
//! have the same key as the cache (path, size, times, inode, device), so one can never
//! describe another version of a file; they hold the whole-file digests only (per-chunk
//! digests stay in SQLite), so each costs a couple of hundred bytes. Past [`MEMO_ENTRIES`]
//! entries, arbitrary ones are forgotten.

use sfts_state::{CachedDigests, FileKey};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Most entries kept (about 10 MiB with paths of 60 bytes).
pub const MEMO_ENTRIES: usize = 50_000;

/// Digests by path, with the version they describe.
#[derive(Default)]
pub struct Memo {
    entries: Mutex<HashMap<String, (FileKey, CachedDigests)>>,
}

/// `d` without its per-chunk digests.
fn whole(d: &CachedDigests) -> CachedDigests {
    CachedDigests {
        chunks: None,
        ..d.clone()
    }
}

impl Memo {
    /// The digests known for exactly `key`, if any.
    pub fn get(&self, key: &FileKey) -> Option<CachedDigests> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&key.path) {
            Some((k, d)) if k == key => Some(d.clone()),
            _ => None,
        }
    }

    /// Adds what is known of `key` (merged with what is kept for the same version; another
    /// version of the path is replaced).
    pub fn add(&self, key: &FileKey, digests: &CachedDigests) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let merged = match entries.get(&key.path) {
            Some((k, older)) if k == key => older.merged_with(&whole(digests)),
            _ => whole(digests),
        };
        if entries.len() >= MEMO_ENTRIES && !entries.contains_key(&key.path) {
            if let Some(any) = entries.keys().next().cloned() {
                entries.remove(&any);
            }
        }
        entries.insert(key.path.clone(), (key.clone(), merged));
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

    fn key(path: &str, mtime_ns: i64) -> FileKey {
        FileKey {
            path: path.into(),
            size: 1,
            mtime_ns,
            ctime_ns: 0,
            inode: 1,
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
        memo.add(&key("a", 1), &md5);
        assert_eq!(memo.get(&key("a", 2)), None);
        assert_eq!(memo.get(&key("b", 1)), None);
        let got = memo.get(&key("a", 1)).unwrap();
        assert_eq!((got.md5, got.chunks), (Some([1; 16]), None));
        let sha = CachedDigests {
            sha256: Some([2; 32]),
            ..Default::default()
        };
        memo.add(&key("a", 1), &sha);
        let got = memo.get(&key("a", 1)).unwrap();
        assert_eq!((got.md5, got.sha256), (Some([1; 16]), Some([2; 32])));
        // Another version replaces it.
        memo.add(&key("a", 2), &sha);
        assert_eq!(memo.get(&key("a", 1)), None);
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn it_stays_bounded() {
        let memo = Memo::default();
        for i in 0..MEMO_ENTRIES + 10 {
            memo.add(&key(&format!("f{i}"), 1), &CachedDigests::default());
        }
        assert_eq!(memo.len(), MEMO_ENTRIES);
        let last = format!("f{}", MEMO_ENTRIES + 9);
        assert!(memo.get(&key(&last, 1)).is_some());
    }
}
