//! The server's use of its state database (`sfts-state`): opening it at start-up, where every
//! problem is fatal, and using it while serving, where no problem is.
//!
//! * [`open`] refuses a state directory inside the served root (clients could download the
//!   database) and reports a corrupt or unwritable file as a start-up error.
//! * [`Store`] wraps the shared database for the workers: a failed lookup is a cache miss, a
//!   failed write is a lost cache entry or history row, each logged as a warning; none of them
//!   ever fails a transfer. Each call holds the database lock for one statement, never across
//!   network I/O. History rows and cache entries go through the writer thread of
//!   [`crate::writer`].
//! * [`Pruner`] deletes old history once an hour on its own thread.

use crate::digest;
use crate::error::ServerError;
use crate::memo::Memo;
use crate::periodic::Periodic;
use crate::writer::{Writer, RUNNING_ROW_FROM};
use sfts_protocol::DigestSet;
use sfts_state::{
    CachedDigests, FileKey, HistoryWrite, NewTransfer, StateDb, TransferEnd, TransferRow,
};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// How often the history is pruned while the server runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Opens the state database in `dir` (in memory when `None`), after checking that `dir` is
/// not inside `root` (canonical), and prunes history older than `keep`.
pub fn open(dir: Option<&Path>, root: &Path, keep: Option<Duration>) -> Result<Store, ServerError> {
    let db = match dir {
        None => StateDb::in_memory()?,
        Some(dir) => {
            check_outside_root(dir, root)?;
            StateDb::open(dir)?
        }
    };
    info!("state database: {}", db.path().display());
    let store = Store::new(Arc::new(db));
    if let Some(keep) = keep {
        store.prune(keep);
    }
    Ok(store)
}

/// Refuses a state directory that is, or would be once created, inside `root` (canonical).
fn check_outside_root(dir: &Path, root: &Path) -> Result<(), ServerError> {
    let resolved = resolve_future(dir).map_err(|source| ServerError::StateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    if resolved.starts_with(root) {
        return Err(ServerError::StateInsideRoot {
            dir: dir.to_path_buf(),
            root: root.to_path_buf(),
        });
    }
    Ok(())
}

/// Where `dir` is or will be: the canonical form of its deepest existing ancestor (symlinks
/// resolved), followed by the components that do not exist yet.
fn resolve_future(dir: &Path) -> io::Result<PathBuf> {
    let absolute = std::env::current_dir()?.join(dir);
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(canonical) => {
                let mut out = canonical;
                for part in missing.into_iter().rev() {
                    match part {
                        Component::ParentDir => {
                            out.pop();
                        }
                        Component::Normal(name) => out.push(name),
                        _ => {}
                    }
                }
                return Ok(out);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(parent) = existing.parent() else {
                    return Err(e);
                };
                missing.extend(existing.components().next_back());
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How one request ended, for its history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Every byte and the trailer were sent.
    Ok,
    /// The server failed (the file changed, a read error).
    Failed(&'a str),
    /// The client went away or the server stopped.
    Aborted(&'a str),
    /// The request was answered with an error and no data.
    Refused(&'a str),
}

impl<'a> Outcome<'a> {
    fn parts(self) -> (&'static str, Option<&'a str>) {
        match self {
            Outcome::Ok => ("ok", None),
            Outcome::Failed(e) => ("failed", Some(e)),
            Outcome::Aborted(e) => ("aborted", Some(e)),
            Outcome::Refused(e) => ("refused", Some(e)),
        }
    }
}

/// The shared state database, used best-effort.
#[derive(Clone)]
pub struct Store {
    db: Arc<StateDb>,
    writer: Arc<Writer>,
    /// The whole-file digests of the files used lately.
    memo: Arc<Memo>,
}

impl Store {
    /// Wraps `db`; history rows and cache entries are written at once until
    /// [`Store::start_writer`].
    pub fn new(db: Arc<StateDb>) -> Store {
        Store {
            writer: Arc::new(Writer::new(Arc::clone(&db))),
            memo: Arc::default(),
            db,
        }
    }

    /// The database itself (for tests and status output).
    pub fn db(&self) -> &Arc<StateDb> {
        &self.db
    }

    /// Starts the writer thread; it stops, having committed everything, when the returned
    /// guard is dropped.
    pub fn start_writer(&self) -> WriterGuard {
        self.writer.start();
        WriterGuard {
            writer: Arc::clone(&self.writer),
        }
    }

    /// Waits until every history row and cache entry recorded so far is committed.
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// The cached digests of exactly this file version; `None` on a miss or a database error.
    /// From memory when it holds every digest in `wanted`, else from the database (and what
    /// the writer has not written yet).
    pub fn cached(&self, key: &FileKey, wanted: DigestSet) -> Option<CachedDigests> {
        if let Some(d) = self.memo.get(key) {
            if digest::select(&d, wanted).is_some() {
                return Some(d);
            }
        }
        let pending = self.writer.pending(key);
        let stored = self.db.lookup_digests(key).unwrap_or_else(|e| {
            warn!("digest cache lookup for '{}' failed: {e}", key.path);
            None
        });
        let found = match (stored, pending) {
            (Some(stored), Some(pending)) => Some(stored.merged_with(&pending)),
            (stored, pending) => stored.or(pending),
        };
        if let Some(d) = &found {
            self.memo.add(key, d);
        }
        found
    }

    /// Stores the digests of this file version (in memory at once, in the database through
    /// the writer thread).
    pub fn remember(&self, key: &FileKey, digests: &CachedDigests) {
        self.memo.add(key, digests);
        self.writer.remember(key, digests);
    }

    /// Starts the history row of a transfer; finish it with [`Record::finish`]. A transfer of
    /// [`RUNNING_ROW_FROM`] bytes or more shows as `running` until then.
    pub fn begin(&self, t: &NewTransfer<'_>) -> Record {
        let row = TransferRow {
            started_at: epoch_secs(SystemTime::now()),
            peer: t.peer.to_owned(),
            path: t.path.to_owned(),
            direction: t.direction,
            protocol: t.protocol,
            offset: t.offset,
            length: t.length,
            size: t.size,
            priority: t.priority,
        };
        let key = self.writer.key();
        if t.length >= RUNNING_ROW_FROM {
            self.writer.write(HistoryWrite::Begin {
                key,
                row: row.clone(),
            });
        }
        Record {
            writer: Arc::clone(&self.writer),
            key,
            row: Some(row),
            started: Instant::now(),
        }
    }

    /// Deletes history rows older than `keep`.
    pub fn prune(&self, keep: Duration) {
        match self.db.prune_history(keep) {
            Ok(0) => {}
            Ok(n) => info!(
                "deleted {n} transfer history row(s) older than {} day(s)",
                keep.as_secs() / 86_400
            ),
            Err(e) => warn!("could not prune the transfer history: {e}"),
        }
    }
}

/// Stops the writer (committing what waits) when dropped.
pub struct WriterGuard {
    writer: Arc<Writer>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.writer.close();
    }
}

/// Seconds since the Unix epoch.
fn epoch_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One history row being written.
pub struct Record {
    writer: Arc<Writer>,
    key: u64,
    /// Taken when the row is finished.
    row: Option<TransferRow>,
    started: Instant,
}

impl Record {
    /// Completes the row of a transfer that ended with `result`: the client leaving and the
    /// server stopping are `aborted`, every other error `failed`.
    pub fn finish_with(self, bytes: u64, result: &Result<(), ServerError>) {
        match result {
            Ok(()) => self.finish(bytes, Outcome::Ok),
            Err(e @ (ServerError::ShuttingDown | ServerError::Peer(_))) => {
                self.finish(bytes, Outcome::Aborted(&e.to_string()))
            }
            Err(e) => self.finish(bytes, Outcome::Failed(&e.to_string())),
        }
    }

    /// Completes the row: `bytes` sent, how it ended, how long it took.
    pub fn finish(mut self, bytes: u64, outcome: Outcome<'_>) {
        let Some(row) = self.row.take() else { return };
        let (result, error) = outcome.parts();
        self.writer.write(HistoryWrite::Finish {
            key: self.key,
            row,
            end: TransferEnd {
                finished_at: epoch_secs(SystemTime::now()),
                bytes,
                result,
                error: error.map(str::to_owned),
                duration_ms: self.started.elapsed().as_millis() as i64,
            },
        });
    }
}

/// The thread that prunes the history every [`PRUNE_EVERY`]; stops when dropped.
pub struct Pruner {
    _job: Periodic,
}

impl Pruner {
    /// Starts pruning rows older than `keep` (nothing to do, and no thread, when `None`).
    pub fn start(store: &Store, keep: Option<Duration>) -> Pruner {
        Pruner::start_every(store, keep, PRUNE_EVERY)
    }

    fn start_every(store: &Store, keep: Option<Duration>, every: Duration) -> Pruner {
        let Some(keep) = keep else {
            return Pruner {
                _job: Periodic::none(),
            };
        };
        let store = store.clone();
        Pruner {
            _job: Periodic::start(
                "history-pruner",
                every,
                "history is pruned at start-up only",
                move || store.prune(keep),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_inside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root = base.join("share");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for inside in [
            root.clone(),
            root.join("sub"),
            root.join("new/state"),
            base.join("elsewhere/../share/state"),
        ] {
            assert!(
                matches!(
                    check_outside_root(&inside, &root),
                    Err(ServerError::StateInsideRoot { .. })
                ),
                "{inside:?} accepted"
            );
        }
        for outside in [base.join("state"), base.join("share-state/x"), base.clone()] {
            check_outside_root(&outside, &root).unwrap();
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&root, base.join("alias")).unwrap();
            assert!(check_outside_root(&base.join("alias/state"), &root).is_err());
        }
    }

    #[test]
    fn records_and_failures_are_best_effort() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("share");
        std::fs::create_dir(&root).unwrap();
        let store = open(None, &root, Some(Duration::from_secs(60))).unwrap();
        let t = NewTransfer {
            peer: "127.0.0.1:1",
            path: "f",
            direction: "download",
            protocol: "native",
            offset: 5,
            length: 10,
            size: 15,
            priority: "high",
        };
        store.begin(&t).finish(10, Outcome::Ok);
        store.begin(&t).finish(0, Outcome::Refused("no"));
        let rows = store.db().recent_transfers(10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].result.as_str(), rows[0].error.as_deref()),
            ("refused", Some("no"))
        );
        assert_eq!((rows[1].offset, rows[1].length, rows[1].bytes), (5, 10, 10));
        assert_eq!(rows[1].priority, "high");

        // With the writer: a long transfer is `running` from its start, short ones appear
        // once finished; closing the writer commits what waits.
        let writer = store.start_writer();
        let long = NewTransfer {
            length: RUNNING_ROW_FROM,
            ..t.clone()
        };
        let running = store.begin(&long);
        store.begin(&t).finish(3, Outcome::Aborted("gone"));
        store.flush();
        let rows = store.db().recent_transfers(10).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].result, "running");
        assert_eq!((rows[0].result.as_str(), rows[0].bytes), ("aborted", 3));
        running.finish(RUNNING_ROW_FROM, Outcome::Ok);
        drop(writer);
        let rows = store.db().recent_transfers(10).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            (rows[1].result.as_str(), rows[1].bytes),
            ("ok", RUNNING_ROW_FROM)
        );
    }

    #[test]
    fn pruner_runs_and_stops_promptly() {
        let store = Store::new(Arc::new(StateDb::in_memory().unwrap()));
        let pruner = Pruner::start_every(&store, Some(Duration::ZERO), Duration::from_millis(10));
        let t = NewTransfer {
            peer: "p",
            path: "old",
            direction: "download",
            protocol: "native",
            offset: 0,
            length: 0,
            size: 0,
            priority: "normal",
        };
        // With a zero retention every row older than a second goes at the next round.
        store.begin(&t).finish(0, Outcome::Ok);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !store.db().recent_transfers(1).unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(store.db().recent_transfers(1).unwrap().is_empty());
        let started = Instant::now();
        drop(pruner);
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(Pruner::start(&store, None));
    }
}
