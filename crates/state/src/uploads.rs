//! Uploads in progress: one row per target path of a served root, saying which file is being
//! assembled (size, whole-file digests or, for a streamed upload, none yet, modification time),
//! how it is cut and checked (chunk size, chunk digest), which chunks are already held and in
//! which staging file they are.
//!
//! The server writes a row only when it has chunks worth keeping past the connection (it
//! batches the writes: see the server's `uploads` module), and deletes it when the upload is
//! published, aborted, discarded or expires. The bytes themselves live in the staging file;
//! this table is the index that makes them resumable.

use crate::{Result, StateDb};
use rusqlite::{params, OptionalExtension, Row};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One upload kept for resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// Target path relative to the served root, `/`-separated.
    pub path: String,
    /// Size of the whole file.
    pub size: u64,
    /// SHA-256 of the whole file, as the client announced it (all zeros for a streamed
    /// upload, whose digests come at its commit).
    pub sha256: [u8; 32],
    /// MD5 of the whole file, if the client announced one.
    pub md5: Option<[u8; 16]>,
    /// A streamed upload: its whole-file digests come at the commit, so it is identified by
    /// path, size, modification time and chunk digest.
    pub digest_at_commit: bool,
    /// The kind of the chunks' digests (`ChunkDigest::code`: 2 SHA-256, 3 BLAKE3, 4 BLAKE3
    /// tree values).
    pub chunk_digest: u8,
    /// Modification time the published file gets, ns since the epoch.
    pub mtime_ns: i64,
    /// The chunk size the file is cut with.
    pub chunk_size: u32,
    /// The chunks held, as runs `(first, count)` in ascending order, not overlapping.
    pub held: Vec<(u64, u64)>,
    /// The staging file's name in the server's staging directory.
    pub staging: String,
    /// When the upload was first saved, ms since the epoch.
    pub created_ms: i64,
    /// When it was last saved, ms since the epoch.
    pub updated_ms: i64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn encode_runs(runs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(runs.len() * 16);
    for (first, count) in runs {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// The runs in `blob`; a damaged blob (wrong length, unsorted or overlapping runs) counts as
/// "nothing held": the client then sends everything again, which is slower but never wrong.
fn decode_runs(blob: &[u8]) -> Vec<(u64, u64)> {
    if blob.len() % 16 != 0 {
        return Vec::new();
    }
    let runs: Vec<(u64, u64)> = blob
        .chunks_exact(16)
        .map(|r| {
            let first = u64::from_be_bytes(r[..8].try_into().expect("8 bytes"));
            let count = u64::from_be_bytes(r[8..].try_into().expect("8 bytes"));
            (first, count)
        })
        .collect();
    let mut next_free = 0u64;
    for (i, &(first, count)) in runs.iter().enumerate() {
        let Some(end) = first.checked_add(count) else {
            return Vec::new();
        };
        if count == 0 || (i > 0 && first < next_free) {
            return Vec::new();
        }
        next_free = end;
    }
    runs
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Option<StoredUpload>> {
    let sha256: Vec<u8> = r.get(2)?;
    let md5: Option<Vec<u8>> = r.get(3)?;
    let held: Vec<u8> = r.get(6)?;
    let Ok(sha256) = <[u8; 32]>::try_from(sha256) else {
        return Ok(None);
    };
    let md5 = match md5 {
        None => None,
        Some(m) => match <[u8; 16]>::try_from(m) {
            Ok(m) => Some(m),
            Err(_) => return Ok(None),
        },
    };
    Ok(Some(StoredUpload {
        path: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        sha256,
        md5,
        mtime_ns: r.get(4)?,
        chunk_size: r.get::<_, i64>(5)?.clamp(1, u32::MAX as i64) as u32,
        held: decode_runs(&held),
        staging: r.get(7)?,
        created_ms: r.get(8)?,
        updated_ms: r.get(9)?,
        digest_at_commit: r.get(10)?,
        chunk_digest: r.get::<_, i64>(11)?.clamp(0, 255) as u8,
    }))
}

const COLUMNS: &str = "path, size, sha256, md5, mtime_ns, chunk_size, held, staging, created_ms, \
                       updated_ms, digest_at_commit, chunk_digest";

impl StateDb {
    /// The upload kept for `path` under `root`, if any. A row whose digests are damaged counts
    /// as none.
    pub fn find_upload(&self, root: &str, path: &str) -> Result<Option<StoredUpload>> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM uploads WHERE root = ?1 AND path = ?2"
            ))?
            .query_row(params![root, path], from_row)
            .optional()?;
        Ok(row.flatten())
    }

    /// Saves these uploads of `root` in one transaction (inserting new ones, updating known
    /// ones, keeping their creation time); each one's `updated_ms` becomes now.
    pub fn save_uploads(&self, root: &str, uploads: &[&StoredUpload]) -> Result<()> {
        if uploads.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO uploads (root, path, size, sha256, md5, mtime_ns, chunk_size, held,
                                      staging, created_ms, updated_ms, digest_at_commit,
                                      chunk_digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (root, path) DO UPDATE SET
                    size = excluded.size, sha256 = excluded.sha256, md5 = excluded.md5,
                    digest_at_commit = excluded.digest_at_commit,
                    chunk_digest = excluded.chunk_digest,
                    mtime_ns = excluded.mtime_ns, chunk_size = excluded.chunk_size,
                    held = excluded.held, staging = excluded.staging,
                    updated_ms = excluded.updated_ms,
                    created_ms = CASE WHEN uploads.staging = excluded.staging
                                      THEN uploads.created_ms ELSE excluded.created_ms END",
            )?;
            let now = now_ms();
            for u in uploads {
                stmt.execute(params![
                    root,
                    u.path,
                    u.size as i64,
                    u.sha256.to_vec(),
                    u.md5.map(|m| m.to_vec()),
                    u.mtime_ns,
                    u.chunk_size as i64,
                    encode_runs(&u.held),
                    u.staging,
                    u.created_ms,
                    now,
                    u.digest_at_commit,
                    i64::from(u.chunk_digest)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the row of `path` under `root` if it still names the staging file `staging`
    /// (a newer upload of the same path keeps its own row). Returns whether a row went.
    pub fn delete_upload(&self, root: &str, path: &str, staging: &str) -> Result<bool> {
        let n = self
            .conn()
            .prepare_cached("DELETE FROM uploads WHERE root = ?1 AND path = ?2 AND staging = ?3")?
            .execute(params![root, path, staging])?;
        Ok(n > 0)
    }

    /// Every upload kept for `root`, oldest save first.
    pub fn stored_uploads(&self, root: &str) -> Result<Vec<StoredUpload>> {
        self.uploads_where(root, i64::MAX)
    }

    /// The uploads of `root` last saved more than `age` ago, oldest first.
    pub fn uploads_older_than(&self, root: &str, age: Duration) -> Result<Vec<StoredUpload>> {
        let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.uploads_where(root, now_ms().saturating_sub(age))
    }

    fn uploads_where(&self, root: &str, updated_before: i64) -> Result<Vec<StoredUpload>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM uploads WHERE root = ?1 AND updated_ms < ?2
             ORDER BY updated_ms"
        ))?;
        let rows = stmt.query_map(params![root, updated_before], from_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(r?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(path: &str, staging: &str) -> StoredUpload {
        StoredUpload {
            path: path.into(),
            size: 10_000,
            sha256: [7; 32],
            md5: Some([8; 16]),
            mtime_ns: -5,
            chunk_size: 4096,
            held: vec![(0, 1), (2, 1)],
            staging: staging.into(),
            created_ms: 1_000,
            updated_ms: 0,
            digest_at_commit: false,
            chunk_digest: 2,
        }
    }

    #[test]
    fn save_find_update_delete() {
        let db = StateDb::in_memory().unwrap();
        assert_eq!(db.find_upload("/r", "a").unwrap(), None);
        let a = upload("a", "s1.part");
        db.save_uploads("/r", &[&a, &upload("b", "s2.part")])
            .unwrap();
        let found = db.find_upload("/r", "a").unwrap().unwrap();
        assert!(found.updated_ms > 0);
        assert_eq!(
            StoredUpload {
                updated_ms: 0,
                ..found
            },
            a
        );
        // Another root does not see it.
        assert_eq!(db.find_upload("/other", "a").unwrap(), None);

        let more = StoredUpload {
            held: vec![(0, 3)],
            created_ms: 99,
            ..a.clone()
        };
        db.save_uploads("/r", &[&more]).unwrap();
        let found = db.find_upload("/r", "a").unwrap().unwrap();
        assert_eq!(found.held, [(0, 3)]);
        assert_eq!(found.created_ms, 1_000, "creation time kept");

        // Only the row of the same staging file is deleted.
        assert!(!db.delete_upload("/r", "a", "other.part").unwrap());
        assert!(db.delete_upload("/r", "a", "s1.part").unwrap());
        assert_eq!(db.stored_uploads("/r").unwrap().len(), 1);
        assert!(db.save_uploads("/r", &[]).is_ok());

        // A streamed upload keeps its kind.
        let streamed = StoredUpload {
            sha256: [0; 32],
            md5: None,
            digest_at_commit: true,
            chunk_digest: 3,
            ..upload("s", "s3.part")
        };
        db.save_uploads("/r", &[&streamed]).unwrap();
        let found = db.find_upload("/r", "s").unwrap().unwrap();
        assert_eq!(
            StoredUpload {
                updated_ms: 0,
                ..found
            },
            streamed
        );
    }

    #[test]
    fn old_uploads_are_found_by_age() {
        let db = StateDb::in_memory().unwrap();
        db.save_uploads("/r", &[&upload("old", "o.part"), &upload("new", "n.part")])
            .unwrap();
        db.conn()
            .execute(
                "UPDATE uploads SET updated_ms = updated_ms - 90000 WHERE path = 'old'",
                [],
            )
            .unwrap();
        let old = db
            .uploads_older_than("/r", Duration::from_secs(60))
            .unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].path, "old");
        let hour = Duration::from_secs(3600);
        assert!(db.uploads_older_than("/r", hour).unwrap().is_empty());
        assert_eq!(db.stored_uploads("/r").unwrap()[0].path, "old");
    }

    #[test]
    fn damaged_runs_mean_nothing_held() {
        assert_eq!(
            decode_runs(&encode_runs(&[(0, 2), (5, 1)])),
            [(0, 2), (5, 1)]
        );
        for bad in [
            vec![(0, 0)],
            vec![(5, 1), (2, 1)],
            vec![(0, 3), (2, 1)],
            vec![(u64::MAX, 2)],
        ] {
            assert!(decode_runs(&encode_runs(&bad)).is_empty(), "{bad:?}");
        }
        assert!(decode_runs(&[1, 2, 3]).is_empty());
        // A row with a damaged digest is no upload at all.
        let db = StateDb::in_memory().unwrap();
        db.save_uploads("/r", &[&upload("a", "s")]).unwrap();
        db.conn()
            .execute("UPDATE uploads SET sha256 = x'00'", [])
            .unwrap();
        assert_eq!(db.find_upload("/r", "a").unwrap(), None);
    }
}
