//! What every connection shares about uploads: the policy (`--allow-upload`, limits), the
//! staging directory, the stored sessions in the state database, which target paths are being
//! uploaded right now, and their expiry.
//!
//! * **Staging.** Partial uploads are assembled in `<root>/.sfts-upload/<unique>.part`: inside
//!   the root, so on the same file system as their targets and published by an atomic rename,
//!   but never served, listed or accepted as a target ([`crate::paths::STAGING_DIR`]).
//! * **Sessions.** The state database keeps one row per unfinished upload (target, size,
//!   digests, chunk size, chunks held, staging file). A connection saves the rows of its
//!   uploads in one transaction before it sends acknowledgements (see `native/put.rs`), so an
//!   acknowledged chunk is listed in the next `PutReady` even after a `kill -9`.
//! * **What survives.** A `kill -9` of the server loses nothing acknowledged: the chunks are
//!   in the page cache, their rows in SQLite's WAL. Chunk data is not flushed to the disk
//!   (only published files of 1 MiB or more are, see `upload.rs`): after a power cut, a
//!   row may claim chunks whose bytes never reached the disk; the whole-file check at commit
//!   then fails (`checksum-mismatch`), the upload is discarded and the client starts over.
//! * **Claims.** A target path is uploaded by one connection at a time: [`Uploads::claim`]
//!   refuses a second one (`conflict`), after a short wait for a connection that is just
//!   ending (a killed client's, whose last chunks the server is still storing).
//! * **Expiry.** Rows untouched for `--upload-ttl` are deleted with their staging files at
//!   start-up and every [`Cleaner`] round; staging files that no row or open upload knows
//!   (left by a crash) are deleted too.

use crate::config::UploadPolicy;
use crate::error::ServerError;
use crate::paths::STAGING_DIR;
use crate::periodic::Periodic;
use crate::store::Store;
use crate::units::duration_text;
use sfts_state::StoredUpload;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// How long a `PutBegin` waits for another connection to release its target before the answer
/// is `conflict`.
pub const CLAIM_WAIT: Duration = Duration::from_secs(1);

/// Claims of connection 0 belong to the expiry, never to a client.
const EXPIRY: u64 = 0;

/// Uploads under way right now.
#[derive(Default)]
struct Live {
    /// Target path (relative to the root) → connection uploading it.
    paths: HashMap<String, u64>,
    /// Staging files of open uploads (which may have no row yet).
    staging: HashSet<String>,
}

/// The server-wide side of uploads.
pub struct Uploads {
    /// What is accepted.
    pub policy: UploadPolicy,
    /// The canonical served root.
    root: PathBuf,
    /// The root as the database knows it (rows are per root: servers may share a state dir).
    root_key: String,
    /// `<root>/.sfts-upload`.
    staging: PathBuf,
    store: Store,
    live: Mutex<Live>,
    released: Condvar,
    names: AtomicU64,
    /// This process's id, a part of every staging name.
    pid: u32,
}

/// A target path held by one connection; released when dropped.
pub struct Claim<'a> {
    uploads: &'a Uploads,
    path: String,
}

/// Why a claim was refused: the connection holding the path.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    /// `true` when it is this very connection (another upload id on it).
    pub same_connection: bool,
}

impl Uploads {
    /// Sets up uploads for `root` (canonical): creates the staging directory when uploads
    /// are allowed, then expires what is too old and deletes orphaned staging files.
    pub fn open(root: &Path, store: Store, policy: UploadPolicy) -> Result<Uploads, ServerError> {
        let staging = root.join(STAGING_DIR);
        if policy.allow {
            std::fs::create_dir_all(&staging).map_err(|source| ServerError::StagingDir {
                dir: staging.clone(),
                source,
            })?;
        }
        let uploads = Uploads {
            policy,
            root: root.to_path_buf(),
            root_key: root.to_string_lossy().into_owned(),
            staging,
            store,
            live: Mutex::default(),
            released: Condvar::new(),
            names: AtomicU64::new(0),
            pid: std::process::id(),
        };
        uploads.expire(true);
        Ok(uploads)
    }

    /// The canonical served root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shared database, best-effort.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims target `path` for connection `conn`, waiting up to `wait` for another
    /// connection to release it.
    pub fn claim(&self, path: &str, conn: u64, wait: Duration) -> Result<Claim<'_>, Taken> {
        let deadline = Instant::now() + wait;
        let mut live = self.lock();
        loop {
            match live.paths.get(path) {
                None => break,
                Some(&holder) if holder == conn => {
                    return Err(Taken {
                        same_connection: true,
                    })
                }
                Some(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Taken {
                            same_connection: false,
                        });
                    }
                    live = self
                        .released
                        .wait_timeout(live, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        live.paths.insert(path.to_owned(), conn);
        Ok(Claim {
            uploads: self,
            path: path.to_owned(),
        })
    }

    /// A new, unique staging file name, registered as live until [`Uploads::unregister`].
    pub fn new_staging_name(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let name = format!("{:x}-{nanos:x}-{n:x}.part", self.pid);
        self.register(&name);
        name
    }

    /// Marks a staging file as used by an open upload (so the orphan sweep leaves it alone).
    pub fn register(&self, staging: &str) {
        self.lock().staging.insert(staging.to_owned());
    }

    /// The staging file is no longer used by an open upload.
    pub fn unregister(&self, staging: &str) {
        self.lock().staging.remove(staging);
    }

    /// Where staging file `name` is.
    pub fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// The stored upload of `path`, if any (a database error counts as none).
    pub fn find(&self, path: &str) -> Option<StoredUpload> {
        self.store
            .db()
            .find_upload(&self.root_key, path)
            .unwrap_or_else(|e| {
                warn!("cannot look up the stored upload of '{path}': {e}");
                None
            })
    }

    /// Saves these uploads in one transaction; a failure costs resumability, not the upload.
    pub fn save(&self, uploads: &[&StoredUpload]) {
        if let Err(e) = self.store.db().save_uploads(&self.root_key, uploads) {
            warn!(
                "could not save the state of {} upload(s): {e}; their chunks will be sent again \
                 if they are resumed",
                uploads.len()
            );
        }
    }

    /// Deletes the row of `path` if it names `staging`.
    pub fn delete_row(&self, path: &str, staging: &str) {
        if let Err(e) = self.store.db().delete_upload(&self.root_key, path, staging) {
            warn!("could not delete the stored upload of '{path}': {e}");
        }
    }

    /// Deletes a stored upload: its staging file and its row.
    pub fn discard(&self, path: &str, staging: &str) {
        remove_quietly(&self.staging_path(staging));
        self.delete_row(path, staging);
    }

    /// Deletes stored uploads untouched for the time-to-live, and staging files nobody knows
    /// of (at start-up all of them; later only those older than the time-to-live, since an
    /// upload just begun on another connection may not have a row yet).
    pub fn expire(&self, startup: bool) {
        let ttl = self.policy.ttl;
        let db = self.store.db();
        let old = match db.uploads_older_than(&self.root_key, ttl) {
            Ok(rows) => rows,
            Err(e) => {
                warn!("cannot look for expired uploads: {e}");
                return;
            }
        };
        for row in old {
            // Held by the expiry while its files go, so nobody resumes it meanwhile.
            let Ok(claim) = self.claim(&row.path, EXPIRY, Duration::ZERO) else {
                continue; // being uploaded right now
            };
            self.discard(&row.path, &row.staging);
            let total = sfts_protocol::chunk_count(row.size, row.chunk_size);
            let held: u64 = row.held.iter().map(|r| r.1).sum();
            info!(
                "upload of '{}' expired: untouched for more than {}, {held} of {total} chunk(s) \
                 held; its partial data was deleted",
                row.path,
                duration_text(ttl)
            );
            drop(claim);
        }
        self.sweep_orphans(startup);
    }

    /// Deletes staging files that neither a row nor an open upload refers to.
    fn sweep_orphans(&self, startup: bool) {
        let entries = match std::fs::read_dir(&self.staging) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!("cannot read the staging directory: {e}");
                return;
            }
        };
        let known: HashSet<String> = match self.store.db().stored_uploads(&self.root_key) {
            Ok(rows) => rows.into_iter().map(|r| r.staging).collect(),
            Err(e) => {
                warn!("cannot list the stored uploads: {e}");
                return;
            }
        };
        let mut removed = 0usize;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) || self.lock().staging.contains(&name) {
                continue;
            }
            let old_enough = startup
                || entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > self.policy.ttl);
            if !old_enough {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match gone {
                Ok(()) => removed += 1,
                Err(e) => warn!("cannot delete the orphaned staging file '{name}': {e}"),
            }
        }
        if removed > 0 {
            info!("deleted {removed} orphaned staging file(s) of unfinished uploads");
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.uploads.lock().paths.remove(&self.path);
        self.uploads.released.notify_all();
    }
}

/// Deletes a file that may already be gone.
pub fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!("cannot delete '{}': {e}", path.display());
        }
    }
}

/// The thread that expires uploads every [`Cleaner::every`]; stops (and is joined) when
/// dropped.
pub struct Cleaner {
    _job: Periodic,
}

impl Cleaner {
    /// How often a time-to-live of `ttl` is enforced: a quarter of it, between a second and
    /// an hour, so an upload lives at most a quarter longer than asked.
    pub fn every(ttl: Duration) -> Duration {
        (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    /// Starts expiring (no thread when uploads are not allowed: start-up cleaned up already).
    pub fn start(uploads: &Arc<Uploads>) -> Cleaner {
        if !uploads.policy.allow {
            return Cleaner {
                _job: Periodic::none(),
            };
        }
        let uploads = Arc::clone(uploads);
        Cleaner {
            _job: Periodic::start(
                "upload-expiry",
                Cleaner::every(uploads.policy.ttl),
                "unfinished uploads expire at start-up only",
                move || uploads.expire(false),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfts_state::StateDb;

    fn setup(ttl: Duration) -> (tempfile::TempDir, Arc<Uploads>) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let store = crate::store::open(None, &root, None).unwrap();
        let policy = UploadPolicy {
            allow: true,
            ttl,
            ..UploadPolicy::default()
        };
        let u = Uploads::open(&root, store, policy).unwrap();
        (dir, Arc::new(u))
    }

    fn row(path: &str, staging: &str) -> StoredUpload {
        StoredUpload {
            path: path.into(),
            size: 10,
            sha256: [0; 32],
            md5: None,
            mtime_ns: 0,
            chunk_size: 4096,
            held: vec![(0, 1)],
            staging: staging.into(),
            created_ms: 0,
            updated_ms: 0,
            digest_at_commit: false,
            chunk_digest: 2,
        }
    }

    #[test]
    fn claims_are_exclusive_and_released_on_drop() {
        let (_d, u) = setup(Duration::from_secs(60));
        let a = u.claim("x", 1, Duration::ZERO).unwrap();
        assert_eq!(
            u.claim("x", 2, Duration::from_millis(50)).err(),
            Some(Taken {
                same_connection: false
            })
        );
        assert_eq!(
            u.claim("x", 1, Duration::ZERO).err(),
            Some(Taken {
                same_connection: true
            })
        );
        let other = u.claim("y", 2, Duration::ZERO).unwrap();
        // A waiting claim gets the path as soon as it is released.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| u.claim("x", 3, Duration::from_secs(5)).is_ok());
            std::thread::sleep(Duration::from_millis(50));
            drop(a);
            assert!(waiter.join().unwrap());
        });
        drop(other);
    }

    #[test]
    fn startup_removes_orphans_and_expiry_removes_old_rows() {
        let (dir, u) = setup(Duration::from_secs(1));
        let staging = dir.path().join(STAGING_DIR);
        assert!(staging.is_dir());
        for name in ["kept.part", "old.part", "orphan.part", "live.part"] {
            std::fs::write(staging.join(name), b"x").unwrap();
        }
        u.save(&[&row("kept", "kept.part"), &row("old", "old.part")]);
        let db: &StateDb = u.store().db();
        db.save_uploads(&u.root_key, &[&row("old", "old.part")])
            .unwrap();
        u.register("live.part");
        // Not at start-up: the orphan is younger than the time-to-live and stays.
        u.expire(false);
        assert!(staging.join("orphan.part").exists());
        std::thread::sleep(Duration::from_millis(1100));
        // The row of "kept" is being uploaded right now: it stays.
        let claim = u.claim("kept", 7, Duration::ZERO).unwrap();
        u.expire(true);
        drop(claim);
        let mut left: Vec<String> = std::fs::read_dir(&staging)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["kept.part", "live.part"]);
        let rows: Vec<String> = db
            .stored_uploads(&u.root_key)
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(rows, ["kept"]);
        u.unregister("live.part");
    }

    #[test]
    fn cleaner_rounds_and_stops() {
        assert_eq!(
            Cleaner::every(Duration::from_secs(86_400)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            Cleaner::every(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        let (_d, u) = setup(Duration::from_secs(1));
        let c = Cleaner::start(&u);
        let started = Instant::now();
        drop(c);
        assert!(started.elapsed() < Duration::from_secs(1));
        let names: HashSet<String> = (0..100).map(|_| u.new_staging_name()).collect();
        assert_eq!(names.len(), 100);
    }
}
