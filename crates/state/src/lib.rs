//! The SFTS server's persistent state, in one embedded SQLite database
//! (`<state dir>/sfts-state.sqlite3`).
//!
//! * [`digests`]: a cache of whole-file (and optional per-chunk) digests, keyed by the file's
//!   identity (path, size, modification and change times, inode, device) so that a file that
//!   changed in any way is never served with an old digest;
//! * [`history`]: one row per transfer (peer, file, bytes, result, duration, priority), pruned
//!   after a configurable number of days;
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
pub use history::{NewTransfer, TransferRecord};
pub use uploads::StoredUpload;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

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
