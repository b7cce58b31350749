//! Transfer history: one row per transfer, completed when it ends. A long transfer's row is
//! written when it starts, so one cut short by a crash still shows as `running` with its start
//! time; a short one's is written once, complete.
//!
//! [`StateDb::write_batch`] applies a batch of such writes in one transaction (the server
//! queues them for a writer thread, off the connections' threads);
//! [`StateDb::begin_transfer`] and [`StateDb::finish_transfer`] write one at a time.

use crate::{now_secs, Result, StateDb};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::time::Duration;

/// A transfer that is starting.
#[derive(Debug, Clone)]
pub struct NewTransfer<'a> {
    /// Peer address, `ip:port`.
    pub peer: &'a str,
    /// Path relative to the served root.
    pub path: &'a str,
    /// `download` or `upload`.
    pub direction: &'static str,
    /// `native` or `legacy`.
    pub protocol: &'static str,
    /// First byte sent.
    pub offset: u64,
    /// Bytes to send from `offset` (the requested range, cut at the end of the file).
    pub length: u64,
    /// Size of the whole file.
    pub size: u64,
    /// The session's priority when the transfer started: `low`, `normal` or `high`.
    pub priority: &'static str,
}

/// One row of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// Row id.
    pub id: i64,
    /// Seconds since the epoch.
    pub started_at: i64,
    /// Peer address.
    pub peer: String,
    /// Path relative to the root.
    pub path: String,
    /// `download` or `upload`.
    pub direction: String,
    /// `native` or `legacy`.
    pub protocol: String,
    /// First byte sent.
    pub offset: u64,
    /// Bytes to send from `offset`.
    pub length: u64,
    /// Whole file size.
    pub size: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// `running`, `ok`, `failed`, `aborted` (the peer went away or the server stopped) or
    /// `refused` (the request got an error reply and no data).
    pub result: String,
    /// Failure text, if any.
    pub error: Option<String>,
    /// Duration in milliseconds, once finished.
    pub duration_ms: Option<i64>,
    /// `low`, `normal` or `high`.
    pub priority: String,
}

/// A transfer as its history row records it, owned (rows travel to a writer thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRow {
    /// When it started, seconds since the epoch.
    pub started_at: i64,
    /// Peer address, `ip:port`.
    pub peer: String,
    /// Path relative to the served root.
    pub path: String,
    /// `download` or `upload`.
    pub direction: &'static str,
    /// `native` or `legacy`.
    pub protocol: &'static str,
    /// First byte moved.
    pub offset: u64,
    /// Bytes to move from `offset`.
    pub length: u64,
    /// Size of the whole file.
    pub size: u64,
    /// `low`, `normal` or `high`.
    pub priority: &'static str,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEnd {
    /// When it ended, seconds since the epoch.
    pub finished_at: i64,
    /// Bytes moved.
    pub bytes: u64,
    /// `ok`, `failed`, `aborted` or `refused`.
    pub result: &'static str,
    /// Failure text, if any.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
}

/// One change to the history, identified by a key the caller chooses (unique per transfer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryWrite {
    /// A transfer started: its row is written as `running`.
    Begin {
        /// The transfer's key.
        key: u64,
        /// Its row.
        row: TransferRow,
    },
    /// A transfer ended: the row begun under `key` is completed, or, if none was begun (or
    /// its writing failed), a complete row is written.
    Finish {
        /// The transfer's key.
        key: u64,
        /// Its row (written only if no row was begun).
        row: TransferRow,
        /// How it ended.
        end: TransferEnd,
    },
}

/// Applies history `writes` in order inside `tx`. Returns the keys of the rows begun (with
/// their ids) and of those finished, for the caller to apply to `running` once committed.
pub(crate) fn apply(
    tx: &Connection,
    writes: &[HistoryWrite],
    running: &HashMap<u64, i64>,
) -> Result<(HashMap<u64, i64>, Vec<u64>)> {
    let mut begun = HashMap::new();
    let mut finished = Vec::new();
    let mut insert = tx.prepare_cached(
        "INSERT INTO transfers
         (started_at, peer, path, direction, protocol, offset, length, size, priority,
          finished_at, bytes, result, error, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE transfers SET finished_at = ?2, bytes = ?3, result = ?4, error = ?5,
         duration_ms = ?6 WHERE id = ?1",
    )?;
    for w in writes {
        match w {
            HistoryWrite::Begin { key, row } => {
                insert.execute(params![
                    row.started_at,
                    row.peer,
                    row.path,
                    row.direction,
                    row.protocol,
                    row.offset as i64,
                    row.length as i64,
                    row.size as i64,
                    row.priority,
                    None::<i64>,
                    0i64,
                    "running",
                    None::<&str>,
                    None::<i64>
                ])?;
                begun.insert(*key, tx.last_insert_rowid());
            }
            HistoryWrite::Finish { key, row, end } => {
                let id = begun.remove(key).or_else(|| running.get(key).copied());
                let updated = match id {
                    Some(id) => {
                        finished.push(*key);
                        update.execute(params![
                            id,
                            end.finished_at,
                            end.bytes as i64,
                            end.result,
                            end.error,
                            end.duration_ms
                        ])? > 0
                    }
                    None => false,
                };
                if !updated {
                    insert.execute(params![
                        row.started_at,
                        row.peer,
                        row.path,
                        row.direction,
                        row.protocol,
                        row.offset as i64,
                        row.length as i64,
                        row.size as i64,
                        row.priority,
                        end.finished_at,
                        end.bytes as i64,
                        end.result,
                        end.error,
                        end.duration_ms
                    ])?;
                }
            }
        }
    }
    Ok((begun, finished))
}

impl StateDb {
    /// Records the start of a transfer; returns its id.
    pub fn begin_transfer(&self, t: &NewTransfer<'_>) -> Result<i64> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO transfers
             (started_at, peer, path, direction, protocol, offset, length, size, priority)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            now_secs(),
            t.peer,
            t.path,
            t.direction,
            t.protocol,
            t.offset as i64,
            t.length as i64,
            t.size as i64,
            t.priority
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// Records the end of a transfer.
    pub fn finish_transfer(
        &self,
        id: i64,
        bytes: u64,
        result: &str,
        error: Option<&str>,
        duration: Duration,
    ) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE transfers SET finished_at = ?2, bytes = ?3, result = ?4, error = ?5,
                 duration_ms = ?6 WHERE id = ?1",
            )?
            .execute(params![
                id,
                now_secs(),
                bytes as i64,
                result,
                error,
                duration.as_millis() as i64
            ])?;
        Ok(())
    }

    /// The most recent transfers, newest first.
    pub fn recent_transfers(&self, limit: usize) -> Result<Vec<TransferRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, started_at, peer, path, direction, protocol, offset, length, size,
                    bytes, result, error, duration_ms, priority
             FROM transfers ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(TransferRecord {
                id: r.get(0)?,
                started_at: r.get(1)?,
                peer: r.get(2)?,
                path: r.get(3)?,
                direction: r.get(4)?,
                protocol: r.get(5)?,
                offset: r.get::<_, i64>(6)? as u64,
                length: r.get::<_, i64>(7)? as u64,
                size: r.get::<_, i64>(8)? as u64,
                bytes: r.get::<_, i64>(9)? as u64,
                result: r.get(10)?,
                error: r.get(11)?,
                duration_ms: r.get(12)?,
                priority: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes history rows that started more than `max_age` ago; returns how many.
    pub fn prune_history(&self, max_age: Duration) -> Result<usize> {
        let cutoff = now_secs() - max_age.as_secs() as i64;
        Ok(self.conn().execute(
            "DELETE FROM transfers WHERE started_at < ?1",
            params![cutoff],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;

    fn start(db: &StateDb, path: &str) -> i64 {
        db.begin_transfer(&NewTransfer {
            peer: "127.0.0.1:5000",
            path,
            direction: "download",
            protocol: "native",
            offset: 0,
            length: 100,
            size: 100,
            priority: "high",
        })
        .unwrap()
    }

    #[test]
    fn begin_finish_list() {
        let db = StateDb::in_memory().unwrap();
        let a = start(&db, "a");
        let b = start(&db, "b");
        db.finish_transfer(a, 100, "ok", None, Duration::from_millis(1500))
            .unwrap();
        let rows = db.recent_transfers(10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, b);
        assert_eq!(rows[0].result, "running");
        assert_eq!(rows[1].result, "ok");
        assert_eq!(rows[1].bytes, 100);
        assert_eq!(rows[1].duration_ms, Some(1500));
        assert_eq!(rows[1].priority, "high");
    }

    fn row(path: &str) -> TransferRow {
        TransferRow {
            started_at: 1_000,
            peer: "[::1]:7".into(),
            path: path.into(),
            direction: "upload",
            protocol: "native",
            offset: 5,
            length: 10,
            size: 15,
            priority: "low",
        }
    }

    fn end(result: &'static str, bytes: u64) -> TransferEnd {
        TransferEnd {
            finished_at: 1_002,
            bytes,
            result,
            error: (result != "ok").then(|| "why".to_string()),
            duration_ms: 2_000,
        }
    }

    #[test]
    fn batches_begin_finish_and_complete_rows() {
        let db = StateDb::in_memory().unwrap();
        let mut running = HashMap::new();
        let finish = |key, path, result, bytes| HistoryWrite::Finish {
            key,
            row: row(path),
            end: end(result, bytes),
        };
        db.write_batch(
            &Batch::of_history(vec![
                HistoryWrite::Begin {
                    key: 1,
                    row: row("long"),
                },
                finish(2, "short", "ok", 10),
                HistoryWrite::Begin {
                    key: 3,
                    row: row("begun and done"),
                },
                finish(3, "begun and done", "aborted", 4),
            ]),
            &mut running,
        )
        .unwrap();
        assert_eq!(running.keys().collect::<Vec<_>>(), [&1]);
        let rows = db.recent_transfers(10).unwrap();
        assert_eq!(rows.len(), 3);
        let long = &rows[2];
        assert_eq!(
            (long.path.as_str(), long.result.as_str()),
            ("long", "running")
        );
        assert_eq!((long.started_at, long.duration_ms), (1_000, None));
        let short = &rows[1];
        assert_eq!(
            (
                short.result.as_str(),
                short.bytes,
                short.duration_ms,
                short.error.as_deref()
            ),
            ("ok", 10, Some(2_000), None)
        );
        assert_eq!((short.offset, short.length, short.size), (5, 10, 15));
        assert_eq!(
            (short.priority.as_str(), short.direction.as_str()),
            ("low", "upload")
        );
        assert_eq!(
            (rows[0].result.as_str(), rows[0].error.as_deref()),
            ("aborted", Some("why"))
        );

        // The long one ends in a later batch: its row is completed, not duplicated.
        db.write_batch(
            &Batch::of_history(vec![finish(1, "long", "failed", 7)]),
            &mut running,
        )
        .unwrap();
        assert!(running.is_empty());
        let rows = db.recent_transfers(10).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[2].result.as_str(), rows[2].bytes), ("failed", 7));
        db.write_batch(&Batch::default(), &mut running).unwrap();
    }

    #[test]
    fn prune_removes_only_old_rows() {
        let db = StateDb::in_memory().unwrap();
        let old = start(&db, "old");
        start(&db, "new");
        db.conn()
            .execute(
                "UPDATE transfers SET started_at = started_at - 90000 WHERE id = ?1",
                params![old],
            )
            .unwrap();
        assert_eq!(db.prune_history(Duration::from_secs(86_400)).unwrap(), 1);
        let rows = db.recent_transfers(10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].path, "new");
    }
}
