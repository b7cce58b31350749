//! Writes to the state database that can wait, done off the connections' threads: transfer
//! history rows and digest-cache entries.
//!
//! Every request leaves a history row, and every upload (and every file hashed while it is
//! sent) a cache entry. Written where they happen, a tree of small files cost two or three
//! SQLite write transactions per file (a row begun, then completed; the digests), a quarter
//! to a third of the time of the one thread serving it. Instead the connections queue them
//! for one writer thread (`state-writer`), which commits them in one transaction
//! [`FLUSH_EVERY`] after the oldest arrived, or as soon as [`BATCH`] are waiting.
//!
//! * **Short transfers** (under [`RUNNING_ROW_FROM`] bytes) get one complete history row when
//!   they end. **Longer ones** also get a `running` row as soon as they start, completed when
//!   they end, so one cut short by a crash still shows with its start time.
//! * **Digests not committed yet** are looked up in the queue first ([`Writer::pending`]), so
//!   a `Stat` or a `Get` right after an upload finds them as before.
//! * **What survives.** A normal shutdown loses nothing: the server closes the writer after
//!   its workers are joined, which commits what is waiting, and writes that come later (a
//!   worker outliving the join) are done at once. A `kill -9` loses at most what was queued
//!   in the last [`FLUSH_EVERY`] (committed writes are in SQLite's WAL, which survives the
//!   process): history rows, and cache entries, which are computed again when next needed.
//! * Before [`Writer::start`] and after [`Writer::close`] writes are done at once, on the
//!   caller's thread (tests, and anything that runs without the accept loop).

use sfts_state::{Batch, CachedDigests, FileKey, HistoryWrite, StateDb};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tracing::warn;

/// Longest a row waits before it is committed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Writes committed together at most.
pub const BATCH: usize = 512;

/// Transfers of at least this many bytes have a `running` row while they run.
pub const RUNNING_ROW_FROM: u64 = 1 << 20;

/// What the connections and the writer share. Writes are queued under a mutex rather than
/// sent over a channel: the writer is woken once per batch (when a write arrives in an empty
/// queue, or the queue is full), not once per write, which for a tree of small files cost
/// more than the SQLite work it saved.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes those waiting for a flush.
    done: Condvar,
}

#[derive(Default)]
struct Queue {
    rows: Vec<HistoryWrite>,
    /// Digests to cache, by path (a later version of a path replaces an earlier one, as in
    /// the cache itself).
    digests: HashMap<String, (FileKey, CachedDigests)>,
    /// When the oldest write waiting arrived.
    since: Option<Instant>,
    /// The writer takes rows (else they are written by whoever records them).
    running: bool,
    /// The writer is asked to commit everything and stop.
    stop: bool,
    /// Flushes asked for, and done.
    flush_wanted: u64,
    flushed: u64,
}

/// The writer, shared by every connection.
pub struct Writer {
    db: Arc<StateDb>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Keys of rows begun and not finished yet, and their ids.
    running: Arc<Mutex<HashMap<u64, i64>>>,
    keys: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Writer {
    /// A writer that writes at once, until [`Writer::start`].
    pub fn new(db: Arc<StateDb>) -> Writer {
        Writer {
            db,
            shared: Arc::default(),
            thread: Mutex::new(None),
            running: Arc::default(),
            keys: AtomicU64::new(1),
        }
    }

    /// Starts the writer thread (once; rows are written at once if it cannot start).
    pub fn start(&self) {
        let mut thread = lock(&self.thread);
        if thread.is_some() {
            return;
        }
        let (db, running) = (Arc::clone(&self.db), Arc::clone(&self.running));
        let shared = Arc::clone(&self.shared);
        lock(&shared.queue).running = true;
        match thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer(&db, &running, &shared))
        {
            Ok(handle) => *thread = Some(handle),
            Err(e) => {
                lock(&self.shared.queue).running = false;
                warn!(
                    "no state writer thread ({e}); history and cache entries are written at once"
                );
            }
        }
    }

    /// A key for a new transfer.
    pub fn key(&self) -> u64 {
        self.keys.fetch_add(1, Ordering::Relaxed)
    }

    /// Records `w`: queues it for the writer, or writes it now when there is none.
    pub fn write(&self, w: HistoryWrite) {
        let mut q = lock(&self.shared.queue);
        if !q.running {
            drop(q);
            commit(&self.db, &self.running, &Batch::of_history(vec![w]));
            return;
        }
        q.rows.push(w);
        self.queued(q);
    }

    /// Caches `digests` for `key`: queued for the writer (merged with digests of the same
    /// version still waiting), or written now when there is none.
    pub fn remember(&self, key: &FileKey, digests: &CachedDigests) {
        let mut q = lock(&self.shared.queue);
        if !q.running {
            drop(q);
            let batch = Batch {
                history: Vec::new(),
                digests: vec![(key.clone(), digests.clone())],
            };
            commit(&self.db, &self.running, &batch);
            return;
        }
        let merged = match q.digests.get(&key.path) {
            Some((k, older)) if k == key => older.merged_with(digests),
            _ => digests.clone(),
        };
        q.digests.insert(key.path.clone(), (key.clone(), merged));
        self.queued(q);
    }

    /// The digests of exactly `key` still waiting to be written, if any.
    pub fn pending(&self, key: &FileKey) -> Option<CachedDigests> {
        let q = lock(&self.shared.queue);
        match q.digests.get(&key.path) {
            Some((k, d)) if k == key => Some(d.clone()),
            _ => None,
        }
    }

    /// Wakes the writer when a write arrived in an empty queue (its clock starts) or the
    /// queue is full.
    fn queued(&self, mut q: MutexGuard<'_, Queue>) {
        let waiting = q.rows.len() + q.digests.len();
        if q.since.is_none() {
            q.since = Some(Instant::now());
            self.shared.work.notify_one();
        } else if waiting >= BATCH {
            self.shared.work.notify_one();
        }
    }

    /// Waits until everything recorded so far is committed.
    pub fn flush(&self) {
        let mut q = lock(&self.shared.queue);
        if !q.running {
            return;
        }
        q.flush_wanted += 1;
        let target = q.flush_wanted;
        self.shared.work.notify_one();
        while q.running && q.flushed < target {
            q = self
                .shared
                .done
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Commits what is waiting and stops the writer; later rows are written at once.
    pub fn close(&self) {
        let handle = lock(&self.thread).take();
        let Some(handle) = handle else { return };
        lock(&self.shared.queue).stop = true;
        self.shared.work.notify_one();
        let _ = handle.join();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: commits what is queued [`FLUSH_EVERY`] after the oldest write arrived,
/// at once when [`BATCH`] are waiting, a flush is asked for, or the writer is stopped.
fn writer(db: &StateDb, running: &Mutex<HashMap<u64, i64>>, shared: &Shared) {
    let mut q = lock(&shared.queue);
    loop {
        let urgent =
            q.stop || q.flush_wanted > q.flushed || q.rows.len() + q.digests.len() >= BATCH;
        if !urgent {
            let due = q.since.map(|since| since + FLUSH_EVERY);
            match due.map(|due| due.saturating_duration_since(Instant::now())) {
                None => {
                    q = shared.work.wait(q).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                Some(left) if !left.is_zero() => {
                    q = shared
                        .work
                        .wait_timeout(q, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                Some(_) => {}
            }
        }
        // The digests stay visible to lookups until they are committed.
        let batch = Batch {
            history: std::mem::take(&mut q.rows),
            digests: q.digests.values().cloned().collect(),
        };
        q.since = None;
        let target = q.flush_wanted;
        drop(q);
        commit(db, running, &batch);
        q = lock(&shared.queue);
        for (key, digests) in &batch.digests {
            // Unless a newer write replaced it meanwhile.
            if q.digests.get(&key.path) == Some(&(key.clone(), digests.clone())) {
                q.digests.remove(&key.path);
            }
        }
        if !q.rows.is_empty() || !q.digests.is_empty() {
            q.since.get_or_insert_with(Instant::now);
        }
        q.flushed = target;
        shared.done.notify_all();
        if q.stop && q.rows.is_empty() && q.digests.is_empty() {
            q.running = false;
            return;
        }
    }
}

/// Writes `batch` in one transaction; a failure costs those rows and cache entries, never a
/// transfer.
fn commit(db: &StateDb, running: &Mutex<HashMap<u64, i64>>, batch: &Batch) {
    if batch.is_empty() {
        return;
    }
    let mut running = lock(running);
    if let Err(e) = db.write_batch(batch, &mut running) {
        warn!(
            "could not record {} transfer history row(s) and {} digest cache entries: {e}",
            batch.history.len(),
            batch.digests.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfts_state::{TransferEnd, TransferRow};

    fn row(path: &str) -> TransferRow {
        TransferRow {
            started_at: 5,
            peer: "127.0.0.1:1".into(),
            path: path.into(),
            direction: "download",
            protocol: "native",
            offset: 0,
            length: 3,
            size: 3,
            priority: "normal",
        }
    }

    fn done(key: u64, path: &str) -> HistoryWrite {
        HistoryWrite::Finish {
            key,
            row: row(path),
            end: TransferEnd {
                finished_at: 6,
                bytes: 3,
                result: "ok",
                error: None,
                duration_ms: 1,
            },
        }
    }

    #[test]
    fn rows_wait_for_the_batch_and_a_close_commits_them() {
        let db = Arc::new(StateDb::in_memory().unwrap());
        let h = Writer::new(Arc::clone(&db));
        // Not started: at once.
        h.write(done(h.key(), "now"));
        assert_eq!(db.recent_transfers(10).unwrap().len(), 1);

        h.start();
        let key = h.key();
        h.write(HistoryWrite::Begin {
            key,
            row: row("long"),
        });
        h.flush();
        let rows = db.recent_transfers(10).unwrap();
        assert_eq!((rows.len(), rows[0].result.as_str()), (2, "running"));

        h.write(done(key, "long"));
        for i in 0..10 {
            h.write(done(h.key(), &format!("f{i}")));
        }
        h.close();
        let rows = db.recent_transfers(20).unwrap();
        assert_eq!(rows.len(), 12);
        assert!(rows.iter().all(|r| r.result == "ok"), "{rows:?}");
        // Closed: at once again.
        h.write(done(h.key(), "late"));
        assert_eq!(db.recent_transfers(20).unwrap().len(), 13);
    }

    #[test]
    fn digests_waiting_are_seen_by_lookups_and_merged() {
        let db = Arc::new(StateDb::in_memory().unwrap());
        let w = Writer::new(Arc::clone(&db));
        w.start();
        let key = FileKey {
            path: "f".into(),
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            inode: 4,
            device: 5,
        };
        let md5 = CachedDigests {
            md5: Some([1; 16]),
            ..Default::default()
        };
        let sha = CachedDigests {
            sha256: Some([2; 32]),
            ..Default::default()
        };
        w.remember(&key, &md5);
        w.remember(&key, &sha);
        let both = md5.merged_with(&sha);
        assert_eq!(w.pending(&key), Some(both.clone()));
        let other = FileKey {
            mtime_ns: 9,
            ..key.clone()
        };
        assert_eq!(w.pending(&other), None);
        w.flush();
        assert_eq!(w.pending(&key), None);
        assert_eq!(db.lookup_digests(&key).unwrap(), Some(both));
        // A newer version replaces the older one waiting.
        w.remember(&other, &md5);
        w.close();
        assert_eq!(db.lookup_digests(&key).unwrap(), None);
        assert_eq!(db.lookup_digests(&other).unwrap(), Some(md5));
    }

    #[test]
    fn rows_are_committed_within_the_interval() {
        let db = Arc::new(StateDb::in_memory().unwrap());
        let h = Writer::new(Arc::clone(&db));
        h.start();
        h.write(done(h.key(), "f"));
        let started = Instant::now();
        while db.recent_transfers(1).unwrap().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "never committed"
            );
            thread::sleep(Duration::from_millis(5));
        }
        assert!(started.elapsed() >= FLUSH_EVERY / 2);
    }
}
