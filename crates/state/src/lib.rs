//! The SFTS server's persistent state, in one embedded SQLite database
//! (`<state dir>/sfts-state.sqlite3`).
//!
//! * [`digests`]: a cache of whole-file (and optional per-chunk) digests, keyed by the file's
//!   identity (path, size, modification and change times, inode, device) so that a file that
//!   changed in any way is never served with an old digest;
//! * [`history`]: one row per transfer (peer, file, bytes, result, duration, priority), written
//!   one at a time or in batches, pruned after a configurable number of days;
//! * [`uploads`]: the uploads in progress (target, digests, chunk size, chunks held, staging
//!   file), so that an interrupted upload resumes after a reconnection or a server restart.
//!
//! The database runs in WAL mode with `synchronous = NORMAL`: a `kill -9` of the server loses at
//! most the last few rows and never corrupts the file. Opening checks the file's integrity, so
//! a corrupt or unwritable state is a clear error at start-up, never a crash mid-transfer.
//!
//! This crate knows nothing of sockets or protocols; the server calls it.

pub mod digests;
mod error;
pub mod history;
mod schema;
pub mod uploads;

pub use digests::{CachedDigests, ChunkDigests, FileKey};
pub use error::StateError;
pub use history::{HistoryWrite, NewTransfer, TransferEnd, TransferRecord, TransferRow};
pub use uploads::StoredUpload;

use rusqlite::Connection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes that can wait a moment, applied together in one transaction by
/// [`StateDb::write_batch`] (the server's writer thread collects them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// History rows begun or finished, in order.
    pub history: Vec<HistoryWrite>,
    /// Digests to cache (see [`StateDb::store_digests`]).
    pub digests: Vec<(FileKey, CachedDigests)>,
}

impl Batch {
    /// A batch of history writes only.
    pub fn of_history(history: Vec<HistoryWrite>) -> Batch {
        Batch {
            history,
            digests: Vec::new(),
        }
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty() && self.digests.is_empty()
    }
}

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "sfts-state.sqlite3";

/// Shorthand used throughout the crate.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// The open state database. Cheap to share behind an `Arc`; every call locks an internal
/// mutex for the duration of one short statement, never across network I/O.
pub struct StateDb {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl StateDb {
    /// Opens (creating if needed) the database in `dir`, which is created too.
    pub fn open(dir: &Path) -> Result<StateDb> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let at = |source| StateError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(at)?;
        schema::prepare(&conn).map_err(at)?;
        Ok(StateDb {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Opens a private in-memory database (for tests and `--state-dir` less runs).
    pub fn in_memory() -> Result<StateDb> {
        let conn = Connection::open_in_memory()?;
        schema::prepare(&conn)?;
        Ok(StateDb {
            conn: Mutex::new(conn),
            path: PathBuf::from(":memory:"),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `batch` in one transaction. `running` maps the keys of history rows begun and
    /// not finished yet to their ids; it is updated only once the transaction has committed
    /// (a failed batch leaves it as it was).
    pub fn write_batch(&self, batch: &Batch, running: &mut HashMap<u64, i64>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (begun, finished) = history::apply(&tx, &batch.history, running)?;
        for (key, digests) in &batch.digests {
            digests::store(&tx, key, digests)?;
        }
        tx.commit()?;
        for key in finished {
            running.remove(&key);
        }
        running.extend(begun);
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each call is one
        // statement or one transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopens_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey {
            path: "a.bin".into(),
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 3,
            device: 4,
        };
        let d = CachedDigests {
            md5: Some([1; 16]),
            sha256: None,
            blake3: None,
            xxh128: Some([5; 16]),
            chunks: None,
        };
        {
            let db = StateDb::open(dir.path()).unwrap();
            db.store_digests(&key, &d).unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.lookup_digests(&key).unwrap(), Some(d));
    }

    #[test]
    fn a_batch_writes_history_and_digests_together() {
        let db = StateDb::in_memory().unwrap();
        let key = FileKey {
            path: "f".into(),
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 3,
            device: 4,
        };
        db.store_digests(
            &key,
            &CachedDigests {
                md5: Some([1; 16]),
                ..Default::default()
            },
        )
        .unwrap();
        let row = TransferRow {
            started_at: 1,
            peer: "p".into(),
            path: "f".into(),
            direction: "upload",
            protocol: "native",
            offset: 0,
            length: 3,
            size: 3,
            priority: "normal",
        };
        let batch = Batch {
            history: vec![HistoryWrite::Begin { key: 9, row }],
            digests: vec![(
                key.clone(),
                CachedDigests {
                    sha256: Some([2; 32]),
                    ..Default::default()
                },
            )],
        };
        let mut running = HashMap::new();
        db.write_batch(&batch, &mut running).unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(db.recent_transfers(5).unwrap()[0].result, "running");
        // Merged with what was cached for the same version.
        let got = db.lookup_digests(&key).unwrap().unwrap();
        assert_eq!((got.md5, got.sha256), (Some([1; 16]), Some([2; 32])));
    }

    #[test]
    fn servers_starting_together_on_a_new_dir_all_open_it() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let failures: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| StateDb::open(dir.path()).err()))
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .map(|e| e.to_string())
                    .collect()
            });
            assert!(failures.is_empty(), "{failures:?}");
        }
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
        let err = StateDb::open(dir.path())
            .err()
            .expect("corrupt db accepted");
        let text = err.to_string();
        assert!(text.contains(DB_FILE), "{text}");
    }

    #[test]
    fn unwritable_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = StateDb::open(&file)
            .err()
            .expect("file accepted as state dir");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
