//! Schema creation, migration and the checks run when the database is opened.

use rusqlite::{Connection, Error};

/// Current schema version, stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS digests (
    path         TEXT    PRIMARY KEY,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    ctime_ns     INTEGER NOT NULL,
    inode        INTEGER NOT NULL,
    device       INTEGER NOT NULL,
    md5          BLOB,
    sha256       BLOB,
    chunk_size   INTEGER,
    chunk_sha256 BLOB,
    computed_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transfers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    peer        TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    direction   TEXT    NOT NULL,
    protocol    TEXT    NOT NULL,
    offset      INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    bytes       INTEGER NOT NULL DEFAULT 0,
    result      TEXT    NOT NULL DEFAULT 'running',
    error       TEXT,
    duration_ms INTEGER
);
CREATE INDEX IF NOT EXISTS transfers_started ON transfers(started_at);
";

/// Sets the pragmas, checks integrity and creates or migrates the schema.
pub fn prepare(conn: &Connection) -> Result<(), Error> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Any read fails on a file that is not an SQLite database ("file is not a database").
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("integrity check failed: {check}")),
        ));
    }
    // WAL is not available on every file system; SQLite then keeps its rollback journal, which
    // is slower but just as safe, so the answer is not checked.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {version} is newer than this server understands ({SCHEMA_VERSION}); upgrade sfts-server"
            )),
        ));
    }
    conn.execute_batch(SCHEMA_V1)?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    Ok(())
}
