//! Schema creation, migration and the checks run when the database is opened.

use rusqlite::{Connection, Error, ErrorCode};
use std::time::{Duration, Instant};

/// How long a statement waits for another process (another server sharing the state directory)
/// to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Current schema version, stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 6;

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

/// Version 2: how many bytes each transfer was to send (the requested range, cut at the end of
/// the file), beside `offset`, the whole file's `size` and the `bytes` actually sent.
const MIGRATE_V2: &str = "ALTER TABLE transfers ADD COLUMN length INTEGER NOT NULL DEFAULT 0;";

/// Version 3: uploads in progress (one row per target path of each served root, with the
/// chunks held so far and the staging file they are in), and the priority of each transfer.
const MIGRATE_V3: &str = "
CREATE TABLE IF NOT EXISTS uploads (
    root        TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    sha256      BLOB    NOT NULL,
    md5         BLOB,
    mtime_ns    INTEGER NOT NULL,
    chunk_size  INTEGER NOT NULL,
    held        BLOB    NOT NULL,
    staging     TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (root, path)
);
CREATE INDEX IF NOT EXISTS uploads_updated ON uploads(updated_ms);
ALTER TABLE transfers ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
";

/// Version 4: the whole-file BLAKE3 digest in the cache (NULL for entries cached before, which
/// a request for BLAKE3 then misses and hashes again).
const MIGRATE_V4: &str = "ALTER TABLE digests ADD COLUMN blake3 BLOB;";

/// Version 5: streamed uploads, whose whole-file digests come at the commit (their `sha256`
/// is all zeros), and the algorithm of each upload's chunk digests (protocol code: 2 SHA-256,
/// 3 BLAKE3). Rows saved before are ordinary uploads with SHA-256 chunks.
const MIGRATE_V5: &str = "
ALTER TABLE uploads ADD COLUMN digest_at_commit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN chunk_digest INTEGER NOT NULL DEFAULT 2;
";

/// Version 6: the whole-file XXH128 checksum in the cache (NULL for entries cached before).
const MIGRATE_V6: &str = "ALTER TABLE digests ADD COLUMN xxh128 BLOB;";

/// Sets the pragmas, checks integrity and creates or migrates the schema.
pub fn prepare(conn: &Connection) -> Result<(), Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
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
    enable_wal(conn)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    // Several servers may share a state directory and start together: the version is read and
    // the schema migrated inside one write transaction, so only one of them migrates, and a
    // crash half-way leaves the old version intact.
    conn.execute_batch("BEGIN IMMEDIATE;")?;
    let result = migrate(conn);
    let end = if result.is_ok() {
        "COMMIT;"
    } else {
        "ROLLBACK;"
    };
    conn.execute_batch(end)?;
    result
}

/// Switches the file to WAL mode (a setting stored in the file, so usually already done).
/// Changing the mode needs the file to itself and SQLite does not wait for that (the busy
/// timeout does not apply), so when another process is opening the same new file at this very
/// moment, this retries for up to the busy timeout.
fn enable_wal(conn: &Connection) -> Result<(), Error> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &Error) -> bool {
    matches!(e, Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

fn migrate(conn: &Connection) -> Result<(), Error> {
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
    if version < 2 {
        conn.execute_batch(MIGRATE_V2)?;
    }
    if version < 3 {
        conn.execute_batch(MIGRATE_V3)?;
    }
    if version < 4 {
        conn.execute_batch(MIGRATE_V4)?;
    }
    if version < 5 {
        conn.execute_batch(MIGRATE_V5)?;
    }
    if version < 6 {
        conn.execute_batch(MIGRATE_V6)?;
    }
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_files_gain_the_later_columns_and_tables() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute_batch("PRAGMA user_version = 1;").unwrap();
        conn.execute(
            "INSERT INTO transfers (started_at, peer, path, direction, protocol, offset, size)
             VALUES (1, 'p', 'f', 'download', 'native', 0, 10)",
            [],
        )
        .unwrap();
        prepare(&conn).unwrap();
        let (length, version): (i64, i64) = conn
            .query_row(
                "SELECT length, (SELECT user_version FROM pragma_user_version) FROM transfers",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((length, version), (0, SCHEMA_VERSION));
        let priority: String = conn
            .query_row("SELECT priority FROM transfers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(priority, "normal");
        let uploads: i64 = conn
            .query_row("SELECT COUNT(*) FROM uploads", [], |r| r.get(0))
            .unwrap();
        assert_eq!(uploads, 0);
        // Preparing again is a no-op.
        prepare(&conn).unwrap();
    }

    /// A database as a server of schema `version` left it.
    fn database_at(version: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        let steps = [MIGRATE_V2, MIGRATE_V3, MIGRATE_V4, MIGRATE_V5, MIGRATE_V6];
        for step in &steps[..(version - 1) as usize] {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {version};"))
            .unwrap();
        conn
    }

    #[test]
    fn version_3_digests_gain_an_empty_blake3() {
        let conn = database_at(3);
        conn.execute(
            "INSERT INTO digests (path, size, mtime_ns, ctime_ns, inode, device, sha256,
                                  computed_at)
             VALUES ('f', 1, 2, 3, 4, 5, x'00', 6)",
            [],
        )
        .unwrap();
        prepare(&conn).unwrap();
        let (blake3, version): (Option<Vec<u8>>, i64) = conn
            .query_row(
                "SELECT blake3, (SELECT user_version FROM pragma_user_version) FROM digests",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((blake3, version), (None, SCHEMA_VERSION));
    }

    #[test]
    fn version_5_digests_gain_an_empty_xxh128() {
        let conn = database_at(5);
        conn.execute(
            "INSERT INTO digests (path, size, mtime_ns, ctime_ns, inode, device, blake3,
                                  computed_at)
             VALUES ('f', 1, 2, 3, 4, 5, x'03', 6)",
            [],
        )
        .unwrap();
        prepare(&conn).unwrap();
        let (blake3, xxh128, version): (Vec<u8>, Option<Vec<u8>>, i64) = conn
            .query_row(
                "SELECT blake3, xxh128, (SELECT user_version FROM pragma_user_version)
                 FROM digests",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((blake3, xxh128, version), (vec![3], None, SCHEMA_VERSION));
    }

    #[test]
    fn version_4_uploads_become_ordinary_uploads_with_sha256_chunks() {
        let conn = database_at(4);
        conn.execute(
            "INSERT INTO uploads (root, path, size, sha256, mtime_ns, chunk_size, held, staging,
                                  created_ms, updated_ms)
             VALUES ('/r', 'f', 1, x'00', 2, 4096, x'', 's.part', 3, 4)",
            [],
        )
        .unwrap();
        prepare(&conn).unwrap();
        let (at_commit, chunk_digest, version): (bool, i64, i64) = conn
            .query_row(
                "SELECT digest_at_commit, chunk_digest,
                        (SELECT user_version FROM pragma_user_version) FROM uploads",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (at_commit, chunk_digest, version),
            (false, 2, SCHEMA_VERSION)
        );
    }
}
