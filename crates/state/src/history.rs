//! Transfer history: one row per transfer, written when it starts and completed when it ends,
//! so a transfer cut short by a crash still shows as `running` with its start time.

use crate::{now_secs, Result, StateDb};
use rusqlite::params;
use std::time::Duration;

/// A transfer that is starting.
#[derive(Debug, Clone)]
pub struct NewTransfer<'a> {
    /// Peer address, `ip:port`.
    pub peer: &'a str,
    /// Path relative to the served root.
    pub path: &'a str,
    /// `download` or `upload`.
    pub direction: &'a str,
    /// `native` or `legacy`.
    pub protocol: &'a str,
    /// First byte sent.
    pub offset: u64,
    /// Bytes to send from `offset` (the requested range, cut at the end of the file).
    pub length: u64,
    /// Size of the whole file.
    pub size: u64,
    /// The session's priority when the transfer started: `low`, `normal` or `high`.
    pub priority: &'a str,
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
