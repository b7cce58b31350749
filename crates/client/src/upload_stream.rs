//! A streamed `put` (capability `STREAM_PUT`): the local file is read once, while it is sent.
//!
//! The reading thread takes a buffer from a small pool, fills it with the next chunk, gives
//! it its per-chunk digest (BLAKE3 tree values when the server has `BLAKE3_TREE`, BLAKE3 when
//! it has `BLAKE3`, else SHA-256), writes it to the socket and hands it to a second thread,
//! which feeds it to the whole-file SHA-256 and gives it back to the pool. The whole-file
//! hash thus runs on the second core, overlapped with reading and sending; no chunk is ever
//! copied or allocated twice. Chunks the server already holds (a resume) are read and hashed
//! but not sent. The whole-file digest goes to the server at the end, in `PutCommitDigests`,
//! which it checks against what it assembled: with tree values the BLAKE3, merged from the
//! chunks' values on both sides (so the server hashes nothing but the chunks it checks), else
//! the SHA-256. The SHA-256 is what the user is shown either way: equal BLAKE3s mean equal
//! bytes, so it is the published file's.
//!
//! A streamed upload is identified on the server by path, size, modification time and chunk
//! digest (its SHA-256 is not known up front); a file changed without changing those is
//! caught by the commit's check (`checksum-mismatch`, nothing published). A file that changes
//! while it is being read is refused before the commit.

use crate::error::{ClientError, Kept};
use crate::fetch::Fetcher;
use crate::pagebuf::PageBuf;
use crate::progress::Bytes;
use crate::upload::{
    disconnected, next_answer, open_upload, refusal, unexpected, Counters, PutOptions,
};
use sfts_protocol::{
    blake3_tree, chunk_count, chunk_span, Algorithm, Capabilities, ChunkDigest, ChunkRanges,
    Digest, DigestSet, Message, MultiHasher, PutBegin,
};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

/// Chunk buffers in circulation between the reader and the hashing thread: enough for the
/// hash to lag a few chunks behind the socket without either side waiting. They are
/// page-aligned ([`PageBuf`]): reading the file into a `Vec` (page offset 16) took a third of
/// the client's time on the benchmark machine.
const POOL: usize = 4;

/// A local file opened for a streamed upload (nothing hashed yet).
#[derive(Debug)]
pub struct Streamed {
    /// The open file.
    pub file: File,
    /// Its size when opened.
    pub size: u64,
    /// Its modification time when opened, ns since the epoch.
    pub mtime_ns: i64,
}

/// True when uploads to this server can stream: it has `UPLOAD` and `STREAM_PUT`.
pub fn available(f: &Fetcher<'_>) -> bool {
    f.server_has(Capabilities::UPLOAD | Capabilities::STREAM_PUT)
}

/// The chunk digest to use with this server for chunks of `chunk_size` bytes: BLAKE3 tree
/// values where it has them and the size allows (the server then gets the whole-file BLAKE3
/// without hashing the file again), else BLAKE3 where it has it.
fn chunk_digest(f: &Fetcher<'_>, chunk_size: u32) -> ChunkDigest {
    let clamped = sfts_protocol::clamp_chunk_size(chunk_size);
    let tree = Capabilities::BLAKE3 | Capabilities::BLAKE3_TREE;
    if f.server_has(tree) && blake3_tree::usable_chunk_size(clamped) {
        ChunkDigest::Blake3Tree
    } else if f.server_has(Capabilities::BLAKE3) {
        ChunkDigest::Blake3
    } else {
        ChunkDigest::Sha256
    }
}

/// One connection's worth of a streamed upload: begin, read and send (hashing on the way),
/// commit with the digests. Returns the server's `PutDone` digests and ours.
pub(crate) fn attempt(
    f: &mut Fetcher<'_>,
    opts: &PutOptions,
    local: &mut Streamed,
    counters: &mut Counters,
    restart: bool,
) -> Result<(Vec<Digest>, Vec<Digest>), ClientError> {
    if !available(f) {
        return Err(ClientError::Refused {
            remote: opts.conn.remote.clone(),
            message: "the server no longer offers streamed uploads (STREAM_PUT) after the \
                      reconnection; run the upload again"
                .into(),
        });
    }
    let timeout = opts.conn.timeout;
    let remote = &opts.conn.remote;
    let kind = chunk_digest(f, opts.conn.chunk_size);
    let begin = PutBegin {
        force: opts.force,
        restart,
        ..PutBegin::streamed(
            1,
            remote.clone(),
            local.size,
            local.mtime_ns,
            opts.conn.chunk_size,
            kind,
        )
    };
    let ready = open_upload(f, opts, begin)?;
    let cs = ready.chunk_size;
    let total = chunk_count(local.size, cs);
    let held: u64 = (0..total)
        .filter(|i| ready.have.contains(*i))
        .filter_map(|i| chunk_span(local.size, cs, i).map(|(_, len)| u64::from(len)))
        .sum();
    if held > 0 {
        tracing::info!(
            "the server already holds {} of '{remote}'; reading the whole file to hash it, \
             sending the rest",
            Bytes(held),
        );
    }
    counters.skipped = held;
    f.progress.set_position(held);
    local
        .file
        .seek(SeekFrom::Start(0))
        .map_err(|e| ClientError::local("cannot read", &opts.local, e))?;
    let (mut ours, tree) = std::thread::scope(|s| {
        let (to_hash, hashing) = sync_channel::<PageBuf>(POOL);
        let (give_back, pool) = channel::<PageBuf>();
        for _ in 0..POOL {
            let _ = give_back.send(PageBuf::with_capacity(cs as usize));
        }
        let hasher = std::thread::Builder::new()
            .name("upload-sha256".into())
            .spawn_scoped(s, move || whole_file_digests(hashing, give_back))
            .map_err(|e| ClientError::local("cannot start a thread for", &opts.local, e))?;
        let pipe = Pipe {
            to_hash,
            pool,
            kind,
            cs,
            total,
            have: &ready.have,
        };
        let sent = pipe.run(f, opts, local, counters);
        // The pipe is gone (its sender with it): the hasher finishes what it was given.
        let digests = hasher.join().map_err(|_| hasher_gone(&opts.local))?;
        sent.map(|tree| (digests, tree))
    })?;
    unchanged(&opts.local, local)?;
    // With tree values the commit carries the BLAKE3 merged from them, and only that: the
    // server checks every digest a commit carries, and a SHA-256 would make it hash the file.
    let commit = match kind {
        ChunkDigest::Blake3Tree => {
            let blake3 = blake3_tree::file_digest(cs, local.size, &tree).ok_or_else(|| {
                ClientError::Protocol {
                    detail: "the chunks' BLAKE3 tree values do not make up the file".into(),
                    kept: Kept::Nothing,
                }
            })?;
            let blake3 = Digest {
                algorithm: Algorithm::Blake3,
                bytes: blake3.to_vec(),
            };
            ours.push(blake3.clone());
            vec![blake3]
        }
        _ => ours.clone(),
    };
    let session = f.session()?;
    session
        .send(&Message::PutCommitDigests {
            id: 1,
            digests: commit,
        })
        .map_err(|e| disconnected("committing the upload", e))?;
    match session.recv("waiting for the server to verify the upload", timeout)? {
        Message::PutDone { digests, .. } => Ok((digests, ours)),
        Message::Error { code, message } => Err(refusal(remote, code, message)),
        other => Err(unexpected("PutDone", other.name())),
    }
}

/// The hashing thread: SHA-256 of every buffer it is given, in order; each buffer goes back
/// to the pool.
fn whole_file_digests(hashing: Receiver<PageBuf>, give_back: Sender<PageBuf>) -> Vec<Digest> {
    let mut whole = MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]));
    for buf in hashing {
        whole.update(&buf);
        // The reader may have stopped taking buffers back: that is fine.
        let _ = give_back.send(buf);
    }
    whole.finish()
}

/// The reading side of one attempt.
struct Pipe<'h> {
    to_hash: SyncSender<PageBuf>,
    pool: Receiver<PageBuf>,
    kind: ChunkDigest,
    cs: u32,
    total: u64,
    have: &'h ChunkRanges,
}

impl Pipe<'_> {
    /// Reads every chunk in order, sends those the server lacks with a window of
    /// unacknowledged ones, and re-sends the ones it finds corrupted. Returns the chunks'
    /// BLAKE3 tree values, in order, when the upload uses them (else nothing).
    fn run(
        self,
        f: &mut Fetcher<'_>,
        opts: &PutOptions,
        local: &mut Streamed,
        counters: &mut Counters,
    ) -> Result<Vec<[u8; 32]>, ClientError> {
        let read_err = |e| ClientError::local("cannot read", &opts.local, e);
        let window = crate::upload::window(self.cs);
        let mut in_flight: VecDeque<(u64, u32)> = VecDeque::new();
        let mut again: VecDeque<u64> = VecDeque::new();
        let mut scratch = Vec::new();
        let mut tree = Vec::new();
        let mut next = 0u64;
        while next < self.total || !again.is_empty() || !in_flight.is_empty() {
            if f.interrupted() {
                return Err(ClientError::Interrupted {
                    kept: Kept::Nothing,
                });
            }
            while in_flight.len() < window {
                if let Some(index) = again.pop_front() {
                    // Re-read out of order, then back to where the pass is.
                    let (start, len) = self.span(local.size, index)?;
                    scratch.resize(len as usize, 0);
                    let at = local.file.stream_position().map_err(read_err)?;
                    local
                        .file
                        .seek(SeekFrom::Start(start))
                        .and_then(|_| local.file.read_exact(&mut scratch))
                        .and_then(|_| local.file.seek(SeekFrom::Start(at)))
                        .map_err(read_err)?;
                    let digest = self.kind.of_chunk(start, local.size, &scratch);
                    f.session()?
                        .send_chunk(1, index, &digest, &scratch)
                        .map_err(|e| disconnected("sending a chunk", e))?;
                    in_flight.push_back((index, len));
                    continue;
                }
                if next >= self.total {
                    break;
                }
                let index = next;
                next += 1;
                let (start, len) = self.span(local.size, index)?;
                let mut buf = self.pool.recv().map_err(|_| hasher_gone(&opts.local))?;
                buf.set_len(len as usize);
                local.file.read_exact(&mut buf).map_err(read_err)?;
                let tree_value = self.kind == ChunkDigest::Blake3Tree;
                if !self.have.contains(index) {
                    let digest = self.kind.of_chunk(start, local.size, &buf);
                    f.session()?
                        .send_chunk(1, index, &digest, &buf)
                        .map_err(|e| disconnected("sending a chunk", e))?;
                    in_flight.push_back((index, len));
                    if tree_value {
                        tree.push(digest);
                    }
                } else if tree_value {
                    // Held already: its value is still part of the file's BLAKE3.
                    tree.push(self.kind.of_chunk(start, local.size, &buf));
                }
                self.to_hash
                    .send(buf)
                    .map_err(|_| hasher_gone(&opts.local))?;
            }
            if let Some(index) = next_answer(f, opts, &mut in_flight, counters)? {
                again.push_back(index);
            }
        }
        Ok(tree)
    }

    /// Where chunk `index` is.
    fn span(&self, size: u64, index: u64) -> Result<(u64, u32), ClientError> {
        chunk_span(size, self.cs, index).ok_or_else(|| ClientError::Protocol {
            detail: format!("chunk {index} is past the end of the file"),
            kept: Kept::Nothing,
        })
    }
}

/// The hashing thread died (it only does if it panicked).
fn hasher_gone(path: &Path) -> ClientError {
    ClientError::local(
        "cannot hash",
        path,
        std::io::Error::other("the hashing thread stopped"),
    )
}

/// Refuses to commit a file that changed while it was read: what was sent may mix versions.
fn unchanged(path: &Path, local: &Streamed) -> Result<(), ClientError> {
    let meta = std::fs::metadata(path).map_err(|e| ClientError::local("cannot read", path, e))?;
    if meta.len() != local.size || crate::tree::mtime_ns(&meta) != local.mtime_ns {
        return Err(ClientError::Usage(format!(
            "'{}' changed while it was being sent; run the upload again when it is complete",
            path.display()
        )));
    }
    Ok(())
}
