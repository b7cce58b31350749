//! The digest cache: whole-file MD5 / SHA-256 / BLAKE3 and optional per-chunk SHA-256, valid
//! only for the exact file identity they were computed on.

use crate::{now_secs, Result, StateDb};
use rusqlite::{params, Connection, OptionalExtension};

/// What identifies one version of a file. Any difference (a rewrite, a `touch`, a replacement
/// by rename, even one that restores the old mtime, which still moves ctime) invalidates the
/// cached digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    /// Path relative to the served root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Device number.
    pub device: u64,
}

/// Per-chunk SHA-256 digests of a file cut into `chunk_size` pieces (the last may be short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDigests {
    /// Size of every chunk but the last.
    pub chunk_size: u32,
    /// One SHA-256 per chunk, in order.
    pub sha256: Vec<[u8; 32]>,
}

/// Cached digests of one file version. Algorithms not computed yet are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CachedDigests {
    /// Whole-file MD5.
    pub md5: Option<[u8; 16]>,
    /// Whole-file SHA-256.
    pub sha256: Option<[u8; 32]>,
    /// Whole-file BLAKE3 (schema version 4; `None` for entries cached before it).
    pub blake3: Option<[u8; 32]>,
    /// Whole-file XXH128, canonical byte order (schema version 6; `None` before it).
    pub xxh128: Option<[u8; 16]>,
    /// Per-chunk SHA-256.
    pub chunks: Option<ChunkDigests>,
}

impl CachedDigests {
    /// Combines what is known: fields of `newer` win where present.
    pub fn merged_with(&self, newer: &CachedDigests) -> CachedDigests {
        CachedDigests {
            md5: newer.md5.or(self.md5),
            sha256: newer.sha256.or(self.sha256),
            blake3: newer.blake3.or(self.blake3),
            xxh128: newer.xxh128.or(self.xxh128),
            chunks: newer.chunks.clone().or_else(|| self.chunks.clone()),
        }
    }
}

fn fixed<const N: usize>(blob: Option<Vec<u8>>) -> Option<[u8; N]> {
    blob.and_then(|b| b.try_into().ok())
}

fn chunks_from(size: Option<i64>, blob: Option<Vec<u8>>) -> Option<ChunkDigests> {
    let (size, blob) = (size?, blob?);
    if blob.len() % 32 != 0 || size <= 0 {
        return None;
    }
    Some(ChunkDigests {
        chunk_size: size as u32,
        sha256: blob
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect(),
    })
}

/// The cached digests for exactly `key`, if any.
fn lookup(conn: &Connection, key: &FileKey) -> Result<Option<CachedDigests>> {
    let row = conn
        .prepare_cached(
            "SELECT md5, sha256, chunk_size, chunk_sha256, blake3, xxh128 FROM digests
             WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND ctime_ns = ?4
               AND inode = ?5 AND device = ?6",
        )?
        .query_row(
            params![
                key.path,
                key.size as i64,
                key.mtime_ns,
                key.ctime_ns,
                key.inode as i64,
                key.device as i64
            ],
            |r| {
                Ok(CachedDigests {
                    md5: fixed(r.get(0)?),
                    sha256: fixed(r.get(1)?),
                    blake3: fixed(r.get(4)?),
                    xxh128: fixed(r.get(5)?),
                    chunks: chunks_from(r.get(2)?, r.get(3)?),
                })
            },
        )
        .optional()?;
    Ok(row)
}

/// Stores `digests` for `key` (see [`StateDb::store_digests`]) through `conn`, which may be
/// inside a transaction.
pub(crate) fn store(conn: &Connection, key: &FileKey, digests: &CachedDigests) -> Result<()> {
    let merged = match lookup(conn, key)? {
        Some(old) => old.merged_with(digests),
        None => digests.clone(),
    };
    let chunk_blob = merged
        .chunks
        .as_ref()
        .map(|c| c.sha256.iter().flatten().copied().collect::<Vec<u8>>());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO digests
         (path, size, mtime_ns, ctime_ns, inode, device, md5, sha256, chunk_size,
          chunk_sha256, computed_at, blake3, xxh128)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        key.path,
        key.size as i64,
        key.mtime_ns,
        key.ctime_ns,
        key.inode as i64,
        key.device as i64,
        merged.md5.map(|d| d.to_vec()),
        merged.sha256.map(|d| d.to_vec()),
        merged.chunks.as_ref().map(|c| c.chunk_size as i64),
        chunk_blob,
        now_secs(),
        merged.blake3.map(|d| d.to_vec()),
        merged.xxh128.map(|d| d.to_vec())
    ])?;
    Ok(())
}

impl StateDb {
    /// The cached digests for exactly this file version, if any.
    pub fn lookup_digests(&self, key: &FileKey) -> Result<Option<CachedDigests>> {
        lookup(&self.conn(), key)
    }

    /// Stores digests for this file version, merging with what is already cached for the same
    /// version and replacing anything cached for an older version of the path.
    pub fn store_digests(&self, key: &FileKey, digests: &CachedDigests) -> Result<()> {
        store(&self.conn(), key, digests)
    }

    /// Number of cached entries (for health output and tests).
    pub fn cached_digest_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM digests", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FileKey {
        FileKey {
            path: "d/f.bin".into(),
            size: 10,
            mtime_ns: 100,
            ctime_ns: 200,
            inode: 7,
            device: 1,
        }
    }

    #[test]
    fn any_identity_change_misses() {
        let db = StateDb::in_memory().unwrap();
        let d = CachedDigests {
            md5: Some([9; 16]),
            sha256: Some([8; 32]),
            blake3: Some([7; 32]),
            xxh128: Some([6; 16]),
            chunks: Some(ChunkDigests {
                chunk_size: 4,
                sha256: vec![[1; 32], [2; 32], [3; 32]],
            }),
        };
        db.store_digests(&key(), &d).unwrap();
        assert_eq!(db.lookup_digests(&key()).unwrap(), Some(d));
        for changed in [
            FileKey { size: 11, ..key() },
            FileKey {
                mtime_ns: 101,
                ..key()
            },
            FileKey {
                ctime_ns: 201,
                ..key()
            },
            FileKey { inode: 8, ..key() },
            FileKey { device: 2, ..key() },
            FileKey {
                path: "other".into(),
                ..key()
            },
        ] {
            assert_eq!(db.lookup_digests(&changed).unwrap(), None, "{changed:?}");
        }
    }

    #[test]
    fn new_version_replaces_old_and_same_version_merges() {
        let db = StateDb::in_memory().unwrap();
        let md5_only = CachedDigests {
            md5: Some([1; 16]),
            ..Default::default()
        };
        let sha_only = CachedDigests {
            sha256: Some([2; 32]),
            ..Default::default()
        };
        let blake3_only = CachedDigests {
            blake3: Some([3; 32]),
            ..Default::default()
        };
        db.store_digests(&key(), &md5_only).unwrap();
        db.store_digests(&key(), &sha_only).unwrap();
        let xxh128_only = CachedDigests {
            xxh128: Some([4; 16]),
            ..Default::default()
        };
        db.store_digests(&key(), &blake3_only).unwrap();
        db.store_digests(&key(), &xxh128_only).unwrap();
        let all = db.lookup_digests(&key()).unwrap().unwrap();
        assert_eq!(
            (all.md5, all.sha256, all.blake3, all.xxh128),
            (Some([1; 16]), Some([2; 32]), Some([3; 32]), Some([4; 16]))
        );

        let newer = FileKey {
            mtime_ns: 5,
            ..key()
        };
        db.store_digests(&newer, &sha_only).unwrap();
        assert_eq!(db.cached_digest_count().unwrap(), 1);
        assert_eq!(db.lookup_digests(&key()).unwrap(), None);
        assert_eq!(db.lookup_digests(&newer).unwrap(), Some(sha_only));
    }
}
