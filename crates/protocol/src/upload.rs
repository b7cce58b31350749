//! Upload sessions (capability `UPLOAD`): the payloads of `PutBegin`, `PutReady` and
//! `PutChunk`, how chunks are checked ([`ChunkDigest`]), and why a chunk was rejected. Which chunks exist and which are held is
//! [`crate::chunks`]; the lifecycle on the wire is specified in `docs/PROTOCOL.md`.

use crate::checksum::{self, Algorithm, Digest};
use crate::chunks::{ChunkRange, ChunkRanges, MAX_HAVE_RANGES};
use crate::error::{ProtocolError, Result};
use crate::wire::{self, Cursor};
use crate::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// How many uploads every server lets one connection hold open at once; beyond its own limit
/// (at least this) a server refuses `PutBegin` with `busy`.
pub const GUARANTEED_OPEN_UPLOADS: usize = 4;

/// The digest each `PutChunk` of an upload carries (`PutBegin` flag bit 3 picks BLAKE3, bits
/// 3 and 4 together BLAKE3 tree values). All are 32 bytes, so the frame layout is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChunkDigest {
    /// SHA-256: every server with `UPLOAD` checks it.
    #[default]
    Sha256,
    /// BLAKE3 (capabilities `STREAM_PUT` and `BLAKE3`): several times faster to compute.
    Blake3,
    /// The chunk's BLAKE3 chaining value at its place in the file (capabilities `STREAM_PUT`
    /// and `BLAKE3_TREE`, chunk sizes that are a power of two): as fast as [`Self::Blake3`],
    /// and the server assembles the whole file's BLAKE3 from them instead of hashing the file
    /// a second time. See [`crate::blake3_tree`].
    Blake3Tree,
}

impl ChunkDigest {
    /// The digest of the chunk `data` at byte `offset` of a file of `file_size` bytes.
    pub fn of_chunk(self, offset: u64, file_size: u64, data: &[u8]) -> [u8; 32] {
        match self {
            ChunkDigest::Sha256 => checksum::sha256(data),
            ChunkDigest::Blake3 => checksum::blake3(data),
            ChunkDigest::Blake3Tree => crate::blake3_tree::chunk_value(offset, file_size, data),
        }
    }

    /// The digest of `data` as a file of its own (one chunk, or a download's journal entry,
    /// where the place does not matter).
    pub fn of(self, data: &[u8]) -> [u8; 32] {
        self.of_chunk(0, data.len() as u64, data)
    }

    /// The algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            ChunkDigest::Sha256 => Algorithm::Sha256,
            ChunkDigest::Blake3 | ChunkDigest::Blake3Tree => Algorithm::Blake3,
        }
    }

    /// The chunk digest of `algorithm`, if it can be one (MD5 and XXH128 cannot: chunk digests
    /// are 32 bytes); BLAKE3 is the plain one.
    pub fn from_algorithm(algorithm: Algorithm) -> Option<ChunkDigest> {
        match algorithm {
            Algorithm::Sha256 => Some(ChunkDigest::Sha256),
            Algorithm::Blake3 => Some(ChunkDigest::Blake3),
            Algorithm::Md5 | Algorithm::Xxh128 => None,
        }
    }

    /// A number for storing the kind (the state database's `uploads.chunk_digest`): the
    /// algorithm's code (2 SHA-256, 3 BLAKE3), 4 for BLAKE3 tree values. Its own numbering,
    /// never read as an [`Algorithm`] code (where 4 is XXH128, which is never a chunk digest).
    pub fn code(self) -> u8 {
        match self {
            ChunkDigest::Blake3Tree => 4,
            other => other.algorithm().code(),
        }
    }

    /// Human-readable name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ChunkDigest::Blake3Tree => "BLAKE3 tree value",
            other => other.algorithm().label(),
        }
    }
}

/// `PutBegin`: open an upload of `size` bytes to `path`, or resume the one the server keeps
/// for the same path, size and SHA-256 (or, for a [`PutBegin::digest_at_commit`] upload, the
/// same path, size, modification time and chunk digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutBegin {
    /// Connection-local handle chosen by the client; every later frame of this upload carries
    /// it. It must not be in use by another open upload on the connection.
    pub id: u32,
    /// Target path relative to the served root, `/`-separated; missing parent directories are
    /// created.
    pub path: String,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// Modification time to give the published file, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// The chunk size the client proposes; `PutReady` says which one to use.
    pub chunk_size: u32,
    /// Replace an existing file (where the server allows it).
    pub force: bool,
    /// Discard whatever the server holds of an earlier attempt and start from nothing.
    pub restart: bool,
    /// The whole-file digests come at the end, in `PutCommitDigests` (capability
    /// `STREAM_PUT`), so the client reads its file once, while sending it. `sha256` is then
    /// all zeros and `md5` absent.
    pub digest_at_commit: bool,
    /// What each chunk's digest is (BLAKE3 needs `STREAM_PUT` and `BLAKE3`).
    pub chunk_digest: ChunkDigest,
    /// SHA-256 of the whole file: the upload's identity for resume, checked before publishing.
    pub sha256: [u8; 32],
    /// MD5 of the whole file, if the client has it; checked too when present.
    pub md5: Option<[u8; 16]>,
}

const FLAG_FORCE: u8 = 1 << 0;
const FLAG_RESTART: u8 = 1 << 1;
const FLAG_DIGEST_AT_COMMIT: u8 = 1 << 2;
const FLAG_BLAKE3_CHUNKS: u8 = 1 << 3;
const FLAG_BLAKE3_TREE: u8 = 1 << 4;

impl PutBegin {
    /// A fresh (non-forced, resumable) upload, with the whole-file digests taken from
    /// `digests` (as [`crate::MultiHasher::finish`] returns them): SHA-256 is required, MD5 is
    /// used when present.
    pub fn new(
        id: u32,
        path: impl Into<String>,
        size: u64,
        mtime_ns: i64,
        chunk_size: u32,
        digests: &[Digest],
    ) -> Result<PutBegin> {
        let sha256 =
            digests
                .iter()
                .find_map(Digest::sha256_bytes)
                .ok_or(ProtocolError::BadDigest {
                    algorithm: "sha256",
                    detail: "an upload needs the whole file's SHA-256",
                })?;
        Ok(PutBegin {
            digest_at_commit: false,
            sha256,
            md5: digests.iter().find_map(Digest::md5_bytes),
            ..PutBegin::streamed(id, path, size, mtime_ns, chunk_size, ChunkDigest::Sha256)
        })
    }

    /// A fresh streamed upload (capability `STREAM_PUT`): the whole-file digests follow in
    /// `PutCommitDigests`, each chunk carries a `chunk_digest`.
    pub fn streamed(
        id: u32,
        path: impl Into<String>,
        size: u64,
        mtime_ns: i64,
        chunk_size: u32,
        chunk_digest: ChunkDigest,
    ) -> PutBegin {
        PutBegin {
            id,
            path: path.into(),
            size,
            mtime_ns,
            chunk_size,
            force: false,
            restart: false,
            digest_at_commit: true,
            chunk_digest,
            sha256: [0; 32],
            md5: None,
        }
    }

    /// The whole-file digests announced, in algorithm code order (as a `Trailer` or `PutDone`
    /// lists them), for comparing with what the server assembled.
    pub fn digests(&self) -> Vec<Digest> {
        let mut out = Vec::with_capacity(2);
        if let Some(md5) = self.md5 {
            out.push(Digest {
                algorithm: Algorithm::Md5,
                bytes: md5.to_vec(),
            });
        }
        out.push(Digest {
            algorithm: Algorithm::Sha256,
            bytes: self.sha256.to_vec(),
        });
        out
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        wire::put_u32(out, self.id);
        wire::put_string(out, &self.path);
        wire::put_u64(out, self.size);
        wire::put_i64(out, self.mtime_ns);
        wire::put_u32(out, self.chunk_size);
        let mut flags = 0;
        if self.force {
            flags |= FLAG_FORCE;
        }
        if self.restart {
            flags |= FLAG_RESTART;
        }
        if self.digest_at_commit {
            flags |= FLAG_DIGEST_AT_COMMIT;
        }
        match self.chunk_digest {
            ChunkDigest::Sha256 => {}
            ChunkDigest::Blake3 => flags |= FLAG_BLAKE3_CHUNKS,
            ChunkDigest::Blake3Tree => flags |= FLAG_BLAKE3_CHUNKS | FLAG_BLAKE3_TREE,
        }
        wire::put_u8(out, flags);
        out.extend_from_slice(&self.sha256);
        match &self.md5 {
            None => wire::put_u8(out, 0),
            Some(md5) => {
                wire::put_u8(out, 1);
                out.extend_from_slice(md5);
            }
        }
    }

    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<PutBegin> {
        let id = c.u32("upload id")?;
        let path = crate::message::take_path(c)?;
        let size = c.u64("size")?;
        let mtime_ns = c.i64("mtime")?;
        let chunk_size = c.u32("chunk size")?;
        let flags = c.u8("flags")?;
        let known = FLAG_FORCE
            | FLAG_RESTART
            | FLAG_DIGEST_AT_COMMIT
            | FLAG_BLAKE3_CHUNKS
            | FLAG_BLAKE3_TREE;
        if flags & !known != 0 {
            return Err(ProtocolError::malformed("PutBegin", "unknown flag bits"));
        }
        let chunk_digest = match (
            flags & FLAG_BLAKE3_CHUNKS != 0,
            flags & FLAG_BLAKE3_TREE != 0,
        ) {
            (false, false) => ChunkDigest::Sha256,
            (true, false) => ChunkDigest::Blake3,
            (true, true) => ChunkDigest::Blake3Tree,
            (false, true) => {
                return Err(ProtocolError::malformed(
                    "PutBegin",
                    "flag bit 4 (BLAKE3 tree values) without bit 3 (BLAKE3 chunks)",
                ))
            }
        };
        let digest_at_commit = flags & FLAG_DIGEST_AT_COMMIT != 0;
        let sha256 = array(c.take(32, "sha256")?);
        let md5 = match c.u8("md5 flag")? {
            0 => None,
            1 => Some(array(c.take(16, "md5")?)),
            _ => {
                return Err(ProtocolError::malformed(
                    "PutBegin",
                    "md5 flag is neither 0 nor 1",
                ))
            }
        };
        if digest_at_commit && (sha256 != [0; 32] || md5.is_some()) {
            return Err(ProtocolError::malformed(
                "PutBegin",
                "with digest-at-commit the sha256 field is all zeros and no md5 follows",
            ));
        }
        Ok(PutBegin {
            id,
            path,
            size,
            mtime_ns,
            chunk_size,
            force: flags & FLAG_FORCE != 0,
            restart: flags & FLAG_RESTART != 0,
            digest_at_commit,
            chunk_digest,
            sha256,
            md5,
        })
    }
}

/// `PutReady`: the upload is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReady {
    /// The `PutBegin`'s id.
    pub id: u32,
    /// The chunk size to cut the file with (the proposed one clamped to the protocol's range,
    /// or the one of the stored upload being resumed). Decoding checks it is in range.
    pub chunk_size: u32,
    /// The chunks the server already holds (resume, duplicate detection); send the others.
    pub have: ChunkRanges,
}

impl PutReady {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        wire::put_u32(out, self.id);
        wire::put_u32(out, self.chunk_size);
        let ranges = &self.have.0[..self.have.0.len().min(MAX_HAVE_RANGES)];
        wire::put_u16(out, ranges.len() as u16);
        for r in ranges {
            wire::put_u64(out, r.first);
            wire::put_u64(out, r.count);
        }
    }

    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<PutReady> {
        let id = c.u32("upload id")?;
        let chunk_size = c.u32("chunk size")?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ProtocolError::malformed(
                "PutReady",
                "chunk size outside the protocol's range",
            ));
        }
        let count = c.u16("range count")? as usize;
        if count > MAX_HAVE_RANGES {
            return Err(ProtocolError::malformed(
                "PutReady",
                "too many chunk ranges",
            ));
        }
        // The count is checked against what the frame holds before anything is allocated.
        let bytes = c.take(count * 16, "chunk ranges")?;
        let ranges = bytes
            .chunks_exact(16)
            .map(|r| ChunkRange {
                first: u64::from_be_bytes(array(&r[..8])),
                count: u64::from_be_bytes(array(&r[8..])),
            })
            .collect();
        Ok(PutReady {
            id,
            chunk_size,
            have: ChunkRanges::from_ranges(ranges)?,
        })
    }
}

/// `PutChunk`: one chunk of an upload. `data` borrows from the decoded frame, like `Data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutChunk<'a> {
    /// The upload's id.
    pub id: u32,
    /// Which chunk (see [`crate::chunk_span`]).
    pub index: u64,
    /// The digest of `data` (the upload's [`ChunkDigest`]: SHA-256 unless its `PutBegin`
    /// asked for BLAKE3), checked by the server on arrival.
    pub digest: [u8; 32],
    /// The chunk's bytes (1 to [`MAX_CHUNK_SIZE`]).
    pub data: &'a [u8],
}

impl<'a> PutChunk<'a> {
    /// A chunk with its SHA-256 computed from `data`.
    pub fn new(id: u32, index: u64, data: &'a [u8]) -> PutChunk<'a> {
        PutChunk::with(id, index, ChunkDigest::Sha256, data)
    }

    /// A chunk with its `kind` digest computed from `data` as a file of its own (see
    /// [`ChunkDigest::of`]; a BLAKE3 tree value depends on the chunk's place in the file).
    pub fn with(id: u32, index: u64, kind: ChunkDigest, data: &'a [u8]) -> PutChunk<'a> {
        PutChunk {
            id,
            index,
            digest: kind.of(data),
            data,
        }
    }

    /// True when `data` matches `digest` as a `kind` digest of `data` as a file of its own
    /// (the server checks [`ChunkDigest::of_chunk`] at the chunk's place).
    pub fn digest_matches(&self, kind: ChunkDigest) -> bool {
        kind.of(self.data) == self.digest
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        wire::put_u32(out, self.id);
        wire::put_u64(out, self.index);
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(self.data);
    }

    pub(crate) fn decode(c: &mut Cursor<'a>) -> Result<PutChunk<'a>> {
        let id = c.u32("upload id")?;
        let index = c.u64("chunk index")?;
        let digest = array(c.take(32, "chunk digest")?);
        let data = c.rest();
        if data.is_empty() {
            return Err(ProtocolError::malformed(
                "PutChunk",
                "a chunk carries at least one byte",
            ));
        }
        Ok(PutChunk {
            id,
            index,
            digest,
            data,
        })
    }
}

/// Why the server did not store a chunk (`ChunkRejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The data did not match its digest (corrupted in flight): send the chunk again.
    DigestMismatch,
    /// The index is past the last chunk, or the length is not the one [`crate::chunk_span`] gives for
    /// it with `PutReady`'s chunk size: re-cut, do not re-send as is.
    BadChunk,
    /// No open upload has that id (its `PutBegin` was refused, or it ended): drop it.
    NoSuchUpload,
    /// A reason this version does not know; treat it as final (do not re-send).
    Unknown(u8),
}

impl RejectReason {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            RejectReason::DigestMismatch => 1,
            RejectReason::BadChunk => 2,
            RejectReason::NoSuchUpload => 3,
            RejectReason::Unknown(n) => n,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u8) -> RejectReason {
        match code {
            1 => RejectReason::DigestMismatch,
            2 => RejectReason::BadChunk,
            3 => RejectReason::NoSuchUpload,
            n => RejectReason::Unknown(n),
        }
    }

    /// A short, stable name for logs.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::DigestMismatch => "digest-mismatch",
            RejectReason::BadChunk => "bad-chunk",
            RejectReason::NoSuchUpload => "no-such-upload",
            RejectReason::Unknown(_) => "unknown",
        }
    }

    /// True when sending the same chunk again is the right answer.
    pub fn resend(self) -> bool {
        self == RejectReason::DigestMismatch
    }
}

/// Copies a slice whose length the caller has already fixed into an array.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(bytes);
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checksum::{DigestSet, MultiHasher};
    use crate::frame;
    use crate::message::tests::encoded;
    use crate::message::Message;

    fn begin() -> PutBegin {
        PutBegin {
            id: 7,
            path: "d/f".into(),
            size: 5,
            mtime_ns: -1,
            chunk_size: 4096,
            force: true,
            restart: false,
            digest_at_commit: false,
            chunk_digest: ChunkDigest::Sha256,
            sha256: [0xaa; 32],
            md5: None,
        }
    }

    pub(crate) fn samples() -> Vec<Message<'static>> {
        vec![
            Message::PutBegin(begin()),
            Message::PutBegin(PutBegin {
                md5: Some([0x11; 16]),
                restart: true,
                force: false,
                size: 0,
                ..begin()
            }),
            Message::PutReady(PutReady {
                id: 1,
                chunk_size: MIN_CHUNK_SIZE,
                have: ChunkRanges::new(),
            }),
            Message::PutReady(PutReady {
                id: u32::MAX,
                chunk_size: MAX_CHUNK_SIZE,
                have: ChunkRanges::from_sorted([0, 1, 2, 5, 9, 10]),
            }),
            Message::PutBegin(PutBegin::streamed(
                9,
                "s",
                1 << 30,
                5,
                1 << 20,
                ChunkDigest::Blake3,
            )),
            Message::PutBegin(PutBegin {
                force: true,
                ..PutBegin::streamed(9, "s", 0, 5, 4096, ChunkDigest::Sha256)
            }),
            Message::PutChunk(PutChunk::new(3, 0, b"hello")),
            Message::PutChunk(PutChunk::with(3, 1, ChunkDigest::Blake3, b"hello")),
            Message::PutChunk(PutChunk {
                id: 1,
                index: u64::MAX,
                digest: [0; 32],
                data: b"x",
            }),
            Message::ChunkAck { id: 3, index: 9 },
            Message::ChunkRejected {
                id: 3,
                index: 9,
                reason: RejectReason::DigestMismatch,
            },
            Message::ChunkRejected {
                id: 3,
                index: 0,
                reason: RejectReason::Unknown(200),
            },
            Message::PutCommit { id: 3 },
            Message::PutCommitDigests {
                id: 3,
                digests: vec![
                    Digest::new(Algorithm::Md5, vec![2; 16]).unwrap(),
                    Digest::new(Algorithm::Sha256, vec![1; 32]).unwrap(),
                ],
            },
            Message::PutDone {
                id: 3,
                digests: vec![Digest {
                    algorithm: Algorithm::Sha256,
                    bytes: vec![1; 32],
                }],
            },
            Message::PutDone {
                id: 0,
                digests: vec![],
            },
            Message::PutAbort { id: 3 },
            Message::PutAborted { id: 3 },
            Message::Mkdir {
                path: "a/b/c".into(),
            },
        ]
    }

    /// The bytes of a `PutBegin` of id 7, "d/f", size 5, mtime -1, chunk 4096, without MD5,
    /// with these flags and a SHA-256 field of `sha` bytes.
    fn begin_layout(flags: u8, sha: u8) -> Vec<u8> {
        [
            &[0, 0, 0, 64, 0x20, 0, 0, 0, 7, 0, 3, b'd', b'/', b'f'][..],
            &[0, 0, 0, 0, 0, 0, 0, 5],
            &[0xff; 8],
            &[0, 0, 0x10, 0, flags],
            &[sha; 32],
            &[0],
        ]
        .concat()
    }

    #[test]
    fn exact_layouts() {
        // Tags are spelled as numbers here so that these vectors pin them too.
        // PutBegin: id 7, "d/f", size 5, mtime -1, chunk 4096, force, SHA-256, no MD5.
        assert_eq!(encoded(&Message::PutBegin(begin())), begin_layout(1, 0xaa));

        // Restart instead of force, and an MD5: flag byte 2, MD5 flag 1, then the MD5.
        let with_md5 = encoded(&Message::PutBegin(PutBegin {
            md5: Some([0x11; 16]),
            force: false,
            restart: true,
            ..begin()
        }));
        assert_eq!(with_md5[..4], [0, 0, 0, 80]);
        assert_eq!(with_md5[34], 2);
        assert_eq!(with_md5[67], 1);
        assert_eq!(with_md5[68..], [0x11; 16]);

        // PutReady: id 2, chunk 4096, two runs: chunks 0-2 and chunk 7.
        let want = [
            &[0, 0, 0, 43, 0x21, 0, 0, 0, 2, 0, 0, 0x10, 0, 0, 2][..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
            &[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1],
        ]
        .concat();
        let ready = PutReady {
            id: 2,
            chunk_size: 4096,
            have: ChunkRanges::from_sorted([0, 1, 2, 7]),
        };
        assert_eq!(encoded(&Message::PutReady(ready)), want);

        // PutChunk: id 1, index 2, SHA-256, then the data itself.
        let chunk = encoded(&Message::PutChunk(PutChunk {
            id: 1,
            index: 2,
            digest: [0x5a; 32],
            data: b"xy",
        }));
        let want = [
            &[0, 0, 0, 47, 0x22, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2][..],
            &[0x5a; 32],
            b"xy",
        ]
        .concat();
        assert_eq!(chunk, want);
        let header = frame::put_chunk_header(1, 2, &[0x5a; 32], 2);
        assert_eq!(header, chunk[..frame::PUT_CHUNK_HEADER_LEN]);

        let ack = Message::ChunkAck { id: 1, index: 2 };
        let ack_bytes = [0, 0, 0, 13, 0x23, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(encoded(&ack), ack_bytes);
        let rejected = Message::ChunkRejected {
            id: 1,
            index: 2,
            reason: RejectReason::NoSuchUpload,
        };
        let rejected_bytes = [0, 0, 0, 14, 0x24, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 3];
        assert_eq!(encoded(&rejected), rejected_bytes);
        let commit = Message::PutCommit { id: 258 };
        assert_eq!(encoded(&commit), [0, 0, 0, 5, 0x25, 0, 0, 1, 2]);
        let abort = Message::PutAbort { id: 1 };
        assert_eq!(encoded(&abort), [0, 0, 0, 5, 0x27, 0, 0, 0, 1]);
        let aborted = Message::PutAborted { id: 1 };
        assert_eq!(encoded(&aborted), [0, 0, 0, 5, 0x28, 0, 0, 0, 1]);

        // PutDone: id 1, a digest list of one SHA-256 (algorithm 2, 32 bytes).
        let done = Message::PutDone {
            id: 1,
            digests: vec![Digest::new(Algorithm::Sha256, vec![9; 32]).unwrap()],
        };
        let want = [&[0, 0, 0, 40, 0x26, 0, 0, 0, 1, 1, 2, 32][..], &[9; 32]].concat();
        assert_eq!(encoded(&done), want);

        let mkdir = Message::Mkdir { path: "d".into() };
        assert_eq!(encoded(&mkdir), [0, 0, 0, 4, 0x29, 0, 1, b'd']);
    }

    #[test]
    fn streamed_upload_layouts() {
        // PutBegin, digest at commit (flag bit 2) with BLAKE3 chunks (bit 3): the layout of
        // every PutBegin, with flags 0x0c, an all-zero SHA-256 field and no MD5.
        let streamed = PutBegin::streamed(7, "d/f", 5, -1, 4096, ChunkDigest::Blake3);
        let want = begin_layout(0x0c, 0);
        assert_eq!(encoded(&Message::PutBegin(streamed.clone())), want);
        // Force as well: 0x0d. SHA-256 chunks: bit 3 clear.
        let forced = encoded(&Message::PutBegin(PutBegin {
            force: true,
            ..streamed.clone()
        }));
        assert_eq!(forced[34], 0x0d);
        let sha_chunks = PutBegin::streamed(7, "d/f", 5, -1, 4096, ChunkDigest::Sha256);
        assert_eq!(encoded(&Message::PutBegin(sha_chunks))[34], 0x04);
        // BLAKE3 tree values: bits 3 and 4, 0x1c; bit 4 alone is malformed.
        let tree = PutBegin::streamed(7, "d/f", 5, -1, 4096, ChunkDigest::Blake3Tree);
        let mut tree_bytes = encoded(&Message::PutBegin(tree.clone()));
        assert_eq!(tree_bytes[34], 0x1c);
        let decoded = Message::decode(&tree_bytes).unwrap().map(|(m, _)| m);
        assert_eq!(decoded, Some(Message::PutBegin(tree)));
        tree_bytes[34] = 0x14;
        assert!(matches!(
            Message::decode(&tree_bytes),
            Err(ProtocolError::Malformed { .. })
        ));

        // A digest-at-commit PutBegin that still carries a SHA-256 or an MD5 is malformed.
        let mut bytes = want.clone();
        bytes[40] = 1;
        assert!(matches!(
            Message::decode(&bytes),
            Err(ProtocolError::Malformed { .. })
        ));
        let with_md5 = encoded(&Message::PutBegin(PutBegin {
            md5: Some([1; 16]),
            ..streamed
        }));
        assert!(Message::decode(&with_md5).is_err());

        // PutCommitDigests: tag 0x2c, id 1, a digest list of MD5 then SHA-256.
        let commit = Message::PutCommitDigests {
            id: 1,
            digests: vec![
                Digest::new(Algorithm::Md5, vec![8; 16]).unwrap(),
                Digest::new(Algorithm::Sha256, vec![9; 32]).unwrap(),
            ],
        };
        let want = [
            &[0, 0, 0, 58, 0x2c, 0, 0, 0, 1, 2, 1, 16][..],
            &[8; 16],
            &[2, 32],
            &[9; 32],
        ]
        .concat();
        assert_eq!(encoded(&commit), want);

        // A BLAKE3 chunk: the same layout as a SHA-256 one, the digest is BLAKE3's.
        let chunk = PutChunk::with(1, 0, ChunkDigest::Blake3, b"abc");
        assert_eq!(
            checksum::to_hex(&chunk.digest),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert!(chunk.digest_matches(ChunkDigest::Blake3));
        assert!(!chunk.digest_matches(ChunkDigest::Sha256));
        assert_eq!(
            ChunkDigest::from_algorithm(Algorithm::Blake3),
            Some(ChunkDigest::Blake3)
        );
        assert_eq!(ChunkDigest::from_algorithm(Algorithm::Md5), None);
        assert_eq!(ChunkDigest::default().algorithm(), Algorithm::Sha256);
        assert_eq!(ChunkDigest::Blake3Tree.algorithm(), Algorithm::Blake3);
        let codes = [
            ChunkDigest::Sha256,
            ChunkDigest::Blake3,
            ChunkDigest::Blake3Tree,
        ];
        assert_eq!(codes.map(ChunkDigest::code), [2, 3, 4]);
        // A tree value of a whole file is its BLAKE3; of a chunk inside a file, it is not.
        assert_eq!(
            ChunkDigest::Blake3Tree.of(b"abc"),
            ChunkDigest::Blake3.of(b"abc")
        );
        assert_ne!(
            ChunkDigest::Blake3Tree.of_chunk(4096, 8192, &[7; 4096]),
            ChunkDigest::Blake3.of(&[7; 4096])
        );
    }

    #[test]
    fn the_largest_put_ready_fits_a_control_frame() {
        let scattered = ChunkRanges::from_sorted((0..10_000).map(|i| i * 2));
        let bytes = encoded(&Message::PutReady(PutReady {
            id: 1,
            chunk_size: 4096,
            have: scattered,
        }));
        assert!(bytes.len() - 4 <= frame::MAX_CONTROL_LEN as usize);
        assert!(Message::decode(&bytes).unwrap().is_some());
    }

    #[test]
    fn invalid_ranges_rejected() {
        let bad = [
            vec![ChunkRange { first: 0, count: 0 }],
            vec![
                ChunkRange { first: 5, count: 1 },
                ChunkRange { first: 2, count: 1 },
            ],
            vec![
                ChunkRange { first: 0, count: 3 },
                ChunkRange { first: 2, count: 1 },
            ],
            vec![ChunkRange {
                first: u64::MAX,
                count: 2,
            }],
        ];
        for ranges in bad {
            let bytes = encoded(&Message::PutReady(PutReady {
                id: 1,
                chunk_size: 4096,
                have: ChunkRanges(ranges.clone()),
            }));
            assert!(
                matches!(
                    Message::decode(&bytes),
                    Err(ProtocolError::Malformed { .. })
                ),
                "{ranges:?}"
            );
        }
        // Adjacent runs are accepted (only ordering and overlap matter).
        assert!(ChunkRanges::from_ranges(vec![
            ChunkRange { first: 0, count: 2 },
            ChunkRange { first: 2, count: 1 },
        ])
        .is_ok());
    }

    #[test]
    fn range_count_checked_before_allocating() {
        // Claims 65,535 ranges in a 15-byte frame.
        let frame = [0, 0, 0, 11, 0x21, 0, 0, 0, 1, 0, 0, 0x10, 0, 0xff, 0xff];
        assert!(matches!(
            Message::decode(&frame),
            Err(ProtocolError::Malformed { .. })
        ));
        // Claims 10 ranges, carries one.
        let mut frame = vec![0, 0, 0, 27, 0x21, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 10];
        frame.extend_from_slice(&[0; 15]);
        frame.push(1);
        assert!(matches!(
            Message::decode(&frame),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    #[test]
    fn invalid_fields_rejected() {
        // Chunk size outside the protocol's range in PutReady.
        for cs in [0, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1] {
            let bytes = encoded(&Message::PutReady(PutReady {
                id: 1,
                chunk_size: cs,
                have: ChunkRanges::new(),
            }));
            assert!(Message::decode(&bytes).is_err(), "{cs}");
        }
        // Unknown PutBegin flag bit, and an md5 flag of 2.
        let mut bytes = encoded(&Message::PutBegin(begin()));
        bytes[34] = 0x10;
        assert!(Message::decode(&bytes).is_err());
        let mut bytes = encoded(&Message::PutBegin(begin()));
        *bytes.last_mut().unwrap() = 2;
        assert!(Message::decode(&bytes).is_err());
        // A chunk without data.
        let mut bytes = vec![0, 0, 0, 45, 0x22];
        bytes.extend_from_slice(&[0; 44]);
        assert!(matches!(
            Message::decode(&bytes),
            Err(ProtocolError::Malformed { .. })
        ));
        // Over-long path in PutBegin and Mkdir.
        let long = "a".repeat(crate::MAX_PATH_LEN + 1);
        for m in [
            Message::PutBegin(PutBegin {
                path: long.clone(),
                ..begin()
            }),
            Message::Mkdir { path: long },
        ] {
            assert!(matches!(
                Message::decode(&encoded(&m)),
                Err(ProtocolError::PathTooLong { .. })
            ));
        }
    }

    #[test]
    fn chunk_data_is_borrowed_and_verifiable() {
        let data = vec![7u8; 10_000];
        let bytes = encoded(&Message::PutChunk(PutChunk::new(1, 4, &data)));
        let (m, used) = Message::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Message::PutChunk(c) = m else {
            panic!("not a chunk")
        };
        assert!(std::ptr::eq(c.data.as_ptr(), bytes[49..].as_ptr()));
        assert!(c.digest_matches(ChunkDigest::Sha256));
        let mut flipped = bytes.clone();
        flipped[100] ^= 1;
        let (Message::PutChunk(c), _) = Message::decode(&flipped).unwrap().unwrap() else {
            panic!("not a chunk")
        };
        assert!(!c.digest_matches(ChunkDigest::Sha256));
    }

    #[test]
    fn begin_from_hasher_output() {
        let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Md5, Algorithm::Sha256]));
        h.update(b"abc");
        let digests = h.finish();
        let b = PutBegin::new(1, "f", 3, 0, 4096, &digests).unwrap();
        assert_eq!(b.sha256, checksum::sha256(b"abc"));
        assert!(b.md5.is_some() && !b.force && !b.restart);
        assert_eq!(b.digests(), digests);
        assert!(PutBegin::new(1, "f", 3, 0, 4096, &digests[..1]).is_err());
        let sha_only = PutBegin::new(1, "f", 3, 0, 4096, &digests[1..]).unwrap();
        assert_eq!(sha_only.md5, None);
        assert_eq!(sha_only.digests(), digests[1..]);
    }

    #[test]
    fn reject_reasons() {
        for n in 0..=255u8 {
            assert_eq!(RejectReason::from_code(n).code(), n);
        }
        assert!(RejectReason::DigestMismatch.resend());
        assert!(!RejectReason::BadChunk.resend());
        assert!(!RejectReason::Unknown(9).resend());
        assert_eq!(RejectReason::NoSuchUpload.name(), "no-such-upload");
    }
}
