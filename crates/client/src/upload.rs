//! `sfts-client put`: a resumable, verified upload of one file.
//!
//! A server with `STREAM_PUT` gets a streamed upload, which reads the file once: see
//! [`crate::upload_stream`]. Older servers (and `put -r`, whose files are mostly small) get
//! the original flow:
//!
//! 1. The local file is hashed (SHA-256): the SHA-256 is the upload's identity on the
//!    server, which is how a rerun finds what the server already holds.
//! 2. `PutBegin` opens (or resumes) the upload; `PutReady` lists the chunks the server holds.
//! 3. The missing chunks are sent pipelined, a window of them unacknowledged at a time, each
//!    with its SHA-256; a chunk the server rejects as corrupted is sent again.
//! 4. `PutCommit`: the server checks the whole file and publishes it atomically; its digests
//!    come back in `PutDone` and are compared with ours.
//!
//! A dropped or stalled connection is re-established like a download's, and the upload
//! resumes with whatever the server confirmed.

use crate::cli::GetOptions;
use crate::error::{ClientError, Kept};
use crate::fetch::Fetcher;
use crate::interrupt::Interrupt;
use crate::progress::Bytes;
use crate::upload_stream::{self, Streamed};
use sfts_protocol::checksum::sha256;
use sfts_protocol::{
    chunk_count, chunk_span, Algorithm, Capabilities, Digest, DigestSet, ErrorCode, Message,
    PutBegin, PutReady,
};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most bytes sent ahead of the server's acknowledgements.
const WINDOW_BYTES: u64 = 64 << 20;
/// Most chunks sent ahead of the server's acknowledgements.
const WINDOW_CHUNKS: u64 = 256;

/// A checked `put` request.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Connection settings, with the remote path as `remote`.
    pub conn: GetOptions,
    /// The local file.
    pub local: PathBuf,
    /// Replace an existing remote file.
    pub force: bool,
    /// Discard what the server holds of an earlier attempt.
    pub restart: bool,
}

/// A finished upload.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    /// The published file's SHA-256: ours, which the server's SHA-256 (or, for an upload
    /// with BLAKE3 tree values, its BLAKE3) matched.
    pub sha256: Digest,
    /// Its MD5, as the server computed it (if it sent one).
    pub md5: Option<Digest>,
    /// The remote path.
    pub remote: String,
    /// The file's size.
    pub size: u64,
    /// Bytes sent in chunks (re-sent ones included).
    pub sent: u64,
    /// Bytes the server already held (resume, duplicate).
    pub skipped: u64,
    /// Reconnections.
    pub retries: u32,
    /// Chunks sent again after the server found them corrupted.
    pub resent: u32,
    /// Time from the start (hashing included) to the server's confirmation.
    pub elapsed: Duration,
}

/// A local file to upload: its identity and digests.
#[derive(Debug)]
pub struct Local {
    /// The open file.
    pub file: File,
    /// Its size.
    pub size: u64,
    /// Its modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// SHA-256 of its content.
    pub digests: Vec<Digest>,
    /// The chunk size `chunk_digests` were computed for.
    pub chunk_size: u32,
    /// SHA-256 of each chunk at `chunk_size`.
    pub chunk_digests: Vec<[u8; 32]>,
}

/// The size of the window of unacknowledged chunks of `cs` bytes.
pub(crate) fn window(cs: u32) -> usize {
    (WINDOW_BYTES / u64::from(cs)).clamp(1, WINDOW_CHUNKS) as usize
}

/// Opens a local regular file to upload; its metadata as opened.
fn open_file(path: &Path) -> Result<(File, std::fs::Metadata), ClientError> {
    let meta = std::fs::metadata(path).map_err(|e| ClientError::local("cannot read", path, e))?;
    if meta.is_dir() {
        return Err(ClientError::Usage(format!(
            "'{}' is a directory; use put -r to upload a tree",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(ClientError::Usage(format!(
            "'{}' is not a regular file",
            path.display()
        )));
    }
    let file = File::open(path).map_err(|e| ClientError::local("cannot open", path, e))?;
    Ok((file, meta))
}

/// Opens a local file for a streamed upload (hashed while it is sent).
pub fn open_streamed(path: &Path) -> Result<Streamed, ClientError> {
    let (file, meta) = open_file(path)?;
    Ok(Streamed {
        file,
        size: meta.len(),
        mtime_ns: crate::tree::mtime_ns(&meta),
    })
}

/// Opens and hashes a local file to upload.
pub fn open_local(path: &Path, chunk_size: u32) -> Result<Local, ClientError> {
    let (mut file, meta) = open_file(path)?;
    let mtime_ns = crate::tree::mtime_ns(&meta);
    // SHA-256 only: it is the upload's identity and what the server checks; the server sends
    // the MD5 back after its own read of the assembled file, so hashing MD5 here (at a third
    // of SHA-256's speed) would only delay the first byte. The chunks' own SHA-256 (each
    // `PutChunk` carries one) are computed in the same read, on a second core, so sending
    // needs no hashing at all.
    let (size, digests, chunk_digests) = hash_with_chunks(&mut file, chunk_size)
        .map_err(|e| ClientError::local("cannot read", path, e))?;
    if size != meta.len() {
        return Err(ClientError::Usage(format!(
            "'{}' changed while it was being read; try again when it is complete",
            path.display()
        )));
    }
    Ok(Local {
        file,
        size,
        mtime_ns,
        digests,
        chunk_size,
        chunk_digests,
    })
}

/// The file's SHA-256 (on this thread) and the SHA-256 of each `chunk_size` chunk (on
/// another), in one read.
fn hash_with_chunks(
    file: &mut File,
    chunk_size: u32,
) -> std::io::Result<(u64, Vec<Digest>, Vec<[u8; 32]>)> {
    use std::sync::mpsc::{channel, sync_channel};
    let (tx, rx) = sync_channel::<Vec<u8>>(2);
    let (give_back, spare) = channel::<Vec<u8>>();
    let worker = std::thread::Builder::new()
        .name("chunk-digests".into())
        .spawn(move || {
            let mut out = Vec::new();
            for buf in rx {
                out.push(sha256(&buf));
                let _ = give_back.send(buf);
            }
            out
        })?;
    let mut whole = sfts_protocol::MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]));
    let mut size = 0u64;
    let result = loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(chunk_size as usize, 0);
        let mut filled = 0;
        let read = loop {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = read {
            break Err(e);
        }
        if filled == 0 {
            break Ok(());
        }
        buf.truncate(filled);
        whole.update(&buf);
        size += filled as u64;
        let last = filled < chunk_size as usize;
        if tx.send(buf).is_err() || last {
            break Ok(());
        }
    };
    drop(tx);
    let chunk_digests = worker
        .join()
        .map_err(|_| std::io::Error::other("the chunk digest thread panicked"))?;
    result?;
    Ok((size, whole.finish(), chunk_digests))
}

/// Counters of one upload.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: u64,
    pub(crate) skipped: u64,
    pub(crate) resent: u32,
}

/// How a file is uploaded.
enum Plan {
    /// Hashed first, its SHA-256 in `PutBegin`.
    Hashed(Local),
    /// Hashed while it is sent, the digests in `PutCommitDigests`.
    Streamed(Streamed),
}

impl Plan {
    fn size(&self) -> u64 {
        match self {
            Plan::Hashed(l) => l.size,
            Plan::Streamed(s) => s.size,
        }
    }
}

/// Uploads `opts.local` to `opts.conn.remote`.
pub fn put(opts: &PutOptions, interrupt: &Interrupt) -> Result<PutOutcome, ClientError> {
    let started = Instant::now();
    let mut f = Fetcher::connect(&opts.conn, interrupt)?;
    let plan = if upload_stream::available(&f) {
        Plan::Streamed(open_streamed(&opts.local)?)
    } else {
        if !opts.conn.quiet {
            eprintln!("hashing '{}' ...", opts.local.display());
        }
        Plan::Hashed(open_local(&opts.local, opts.conn.chunk_size)?)
    };
    let outcome = upload_on(&mut f, opts, plan, started);
    f.progress.finish();
    outcome
}

/// Uploads an opened local file over `f`'s connection (reconnecting as needed).
fn upload_on(
    f: &mut Fetcher<'_>,
    opts: &PutOptions,
    mut plan: Plan,
    started: Instant,
) -> Result<PutOutcome, ClientError> {
    let remote = opts.conn.remote.clone();
    let size = plan.size();
    match &plan {
        Plan::Hashed(local) => tracing::info!(
            "uploading '{}' ({size} bytes, sha256 {}) as '{remote}'",
            opts.local.display(),
            sha256_of(&local.digests)
                .map(|d| d.to_hex())
                .unwrap_or_default()
        ),
        Plan::Streamed(_) => tracing::info!(
            "uploading '{}' ({size} bytes, hashed while sent) as '{remote}'",
            opts.local.display(),
        ),
    }
    if !f.server_has(Capabilities::UPLOAD) {
        return Err(ClientError::Refused {
            remote,
            message: "the server does not take uploads (its protocol has no UPLOAD)".into(),
        });
    }
    f.progress.set_total(size);
    let mut counters = Counters::default();
    let kept = Kept::Nothing;
    let mut failed_in_a_row = 0u32;
    let mut restart = opts.restart;
    let retries_before = f.stats.retries;
    let (done, ours) = loop {
        let tried = match &mut plan {
            Plan::Hashed(local) => attempt(f, opts, local, &mut counters, restart)
                .map(|done| (done, local.digests.clone())),
            Plan::Streamed(local) => upload_stream::attempt(f, opts, local, &mut counters, restart),
        };
        match tried {
            Ok(done) => break done,
            Err(e @ ClientError::Disconnected { .. }) => {
                let reason = e.to_string();
                f.reconnect(&reason, &mut failed_in_a_row, &kept)
                    .map_err(|e| interrupted_upload(e, &remote))?;
                // After a reconnection, resume what the server kept.
                restart = false;
            }
            Err(e) => return Err(interrupted_upload(e, &remote)),
        }
        if f.interrupted() {
            return Err(interrupted_upload(
                ClientError::Interrupted {
                    kept: Kept::Nothing,
                },
                &remote,
            ));
        }
    };
    let sha = sha256_of(&ours).cloned().expect("hashed");
    let md5 = done.iter().find(|d| d.algorithm == Algorithm::Md5).cloned();
    // Every digest both sides computed must agree, and there must be one: the SHA-256, or
    // the BLAKE3 of an upload with tree values (whose server hashes nothing else).
    let mut compared = false;
    for theirs in &done {
        if let Some(mine) = ours.iter().find(|d| d.algorithm == theirs.algorithm) {
            crate::transfer::verify(&remote, theirs, mine, Kept::Nothing)?;
            compared |= mine.algorithm != Algorithm::Md5;
        }
    }
    if !compared {
        return Err(ClientError::Protocol {
            detail: "its PutDone carries neither a sha256 nor a blake3 digest of ours".into(),
            kept: Kept::Nothing,
        });
    }
    let retries = f.stats.retries - retries_before;
    tracing::info!(
        "uploaded '{remote}': {} sent, {} already on the server, {retries} reconnection(s)",
        counters.sent,
        counters.skipped,
    );
    Ok(PutOutcome {
        sha256: sha,
        md5,
        remote,
        size,
        sent: counters.sent,
        skipped: counters.skipped,
        retries,
        resent: counters.resent,
        elapsed: started.elapsed(),
    })
}

/// Uploads `local` to `remote` over an existing connection (for trees).
pub fn put_one(
    f: &mut Fetcher<'_>,
    base: &PutOptions,
    local: &Path,
    remote: &str,
) -> Result<PutOutcome, ClientError> {
    let started = Instant::now();
    let mut opts = base.clone();
    opts.local = local.to_path_buf();
    opts.conn.remote = remote.to_string();
    let opened = open_local(local, base.conn.chunk_size)?;
    upload_on(f, &opts, Plan::Hashed(opened), started)
}

/// The SHA-256 among `digests`.
fn sha256_of(digests: &[Digest]) -> Option<&Digest> {
    digests.iter().find(|d| d.algorithm == Algorithm::Sha256)
}

/// Adds "run it again to resume" to an upload that stopped part-way.
fn interrupted_upload(e: ClientError, remote: &str) -> ClientError {
    match e {
        ClientError::Interrupted { .. } => ClientError::UploadStopped {
            remote: remote.to_string(),
            reason: "interrupted".into(),
            interrupted: true,
        },
        ClientError::Reconnect {
            retries, reason, ..
        } => ClientError::UploadStopped {
            remote: remote.to_string(),
            reason: format!(
                "connection lost and {retries} reconnection(s) in a row failed ({reason})"
            ),
            interrupted: false,
        },
        other => other,
    }
}

/// One connection's worth of the upload: begin, send what is missing, commit.
fn attempt(
    f: &mut Fetcher<'_>,
    opts: &PutOptions,
    local: &mut Local,
    counters: &mut Counters,
    restart: bool,
) -> Result<Vec<Digest>, ClientError> {
    let timeout = opts.conn.timeout;
    let remote = opts.conn.remote.clone();
    let mut begin = PutBegin::new(
        1,
        remote.clone(),
        local.size,
        local.mtime_ns,
        opts.conn.chunk_size,
        &local.digests,
    )
    .map_err(|e| ClientError::Protocol {
        detail: e.to_string(),
        kept: Kept::Nothing,
    })?;
    begin.force = opts.force;
    begin.restart = restart;
    let ready = open_upload(f, opts, begin)?;
    let cs = ready.chunk_size;
    let total = chunk_count(local.size, cs);
    let missing: VecDeque<u64> = ready.have.missing(total).collect();
    let held: u64 = (0..total)
        .filter(|i| ready.have.contains(*i))
        .filter_map(|i| chunk_span(local.size, cs, i).map(|(_, len)| len as u64))
        .sum();
    if held > 0 {
        tracing::info!(
            "the server already holds {} of '{remote}'; sending the other {} chunk(s)",
            Bytes(held),
            missing.len()
        );
        counters.skipped = held;
    }
    f.progress.set_position(held);
    send_chunks(f, opts, local, counters, missing, cs)?;

    let session = f.session()?;
    session
        .send(&Message::PutCommit { id: 1 })
        .map_err(|e| disconnected("committing the upload", e))?;
    match session.recv("waiting for the server to verify the upload", timeout)? {
        Message::PutDone { digests, .. } => Ok(digests),
        Message::Error { code, message } => Err(refusal(&remote, code, message)),
        other => Err(unexpected("PutDone", other.name())),
    }
}

/// Sends `begin` and returns the server's `PutReady`.
pub(crate) fn open_upload(
    f: &mut Fetcher<'_>,
    opts: &PutOptions,
    begin: PutBegin,
) -> Result<PutReady, ClientError> {
    let session = f.session()?;
    session
        .send(&Message::PutBegin(begin))
        .map_err(|e| disconnected("opening the upload", e))?;
    let stage = "waiting for the server to open the upload";
    match session.recv(stage, opts.conn.timeout)? {
        Message::PutReady(r) => Ok(r),
        Message::Error { code, message } => Err(refusal(&opts.conn.remote, code, message)),
        other => Err(unexpected("PutReady", other.name())),
    }
}

/// Sends `missing` chunks with a window of unacknowledged ones, re-sending rejected ones.
fn send_chunks(
    f: &mut Fetcher<'_>,
    opts: &PutOptions,
    local: &mut Local,
    counters: &mut Counters,
    mut missing: VecDeque<u64>,
    cs: u32,
) -> Result<(), ClientError> {
    let window = window(cs);
    let mut in_flight: VecDeque<(u64, u32)> = VecDeque::new();
    let mut buf = vec![0u8; cs as usize];
    while !missing.is_empty() || !in_flight.is_empty() {
        if f.interrupted() {
            return Err(ClientError::Interrupted {
                kept: Kept::Nothing,
            });
        }
        while in_flight.len() < window {
            let Some(index) = missing.pop_front() else {
                break;
            };
            let (start, len) =
                chunk_span(local.size, cs, index).ok_or_else(|| ClientError::Protocol {
                    detail: format!("chunk {index} is past the end of the file"),
                    kept: Kept::Nothing,
                })?;
            let data = &mut buf[..len as usize];
            local
                .file
                .seek(SeekFrom::Start(start))
                .and_then(|_| local.file.read_exact(data))
                .map_err(|e| ClientError::local("cannot read", &opts.local, e))?;
            let digest = match local.chunk_digests.get(index as usize) {
                Some(d) if local.chunk_size == cs => *d,
                _ => sha256(data),
            };
            f.session()?
                .send_chunk(1, index, &digest, data)
                .map_err(|e| disconnected("sending a chunk", e))?;
            in_flight.push_back((index, len));
        }
        if let Some(again) = next_answer(f, opts, &mut in_flight, counters)? {
            missing.push_back(again);
        }
    }
    Ok(())
}

/// Reads the server's answer to the oldest chunk in flight (nothing when none is):
/// `Some(index)` when that chunk must be sent again (it arrived corrupted).
pub(crate) fn next_answer(
    f: &mut Fetcher<'_>,
    opts: &PutOptions,
    in_flight: &mut VecDeque<(u64, u32)>,
    counters: &mut Counters,
) -> Result<Option<u64>, ClientError> {
    let remote = &opts.conn.remote;
    let Some(&(first, _)) = in_flight.front() else {
        return Ok(None);
    };
    let answer = match f
        .session()?
        .recv("waiting for chunk acknowledgements", opts.conn.timeout)?
    {
        Message::ChunkAck { index, .. } => Ok(index),
        Message::ChunkRejected { index, reason, .. } => Err((index, reason)),
        Message::Error { code, message } => return Err(refusal(remote, code, message)),
        other => return Err(unexpected("ChunkAck", other.name())),
    };
    let index = match answer {
        Ok(index) | Err((index, _)) => index,
    };
    if index != first {
        return Err(ClientError::Protocol {
            detail: format!("it answered chunk {index} while chunk {first} was expected"),
            kept: Kept::Nothing,
        });
    }
    let (_, len) = in_flight.pop_front().expect("not empty");
    counters.sent += u64::from(len);
    match answer {
        Ok(_) => {
            f.progress.advance(len as usize);
            Ok(None)
        }
        Err((index, reason)) if reason.resend() => {
            tracing::warn!(
                "chunk {index} of '{remote}' arrived corrupted ({}); sending it again",
                reason.name()
            );
            counters.resent += 1;
            Ok(Some(index))
        }
        Err((index, reason)) => Err(ClientError::Protocol {
            detail: format!("the server refused chunk {index}: {}", reason.name()),
            kept: Kept::Nothing,
        }),
    }
}

pub fn disconnected(stage: &'static str, e: std::io::Error) -> ClientError {
    ClientError::Disconnected {
        stage,
        reason: e.to_string(),
    }
}

pub fn unexpected(wanted: &str, got: &str) -> ClientError {
    ClientError::Protocol {
        detail: format!("expected {wanted}, got {got}"),
        kept: Kept::Nothing,
    }
}

/// An `Error` answer to an upload, as the error the user sees.
pub fn refusal(remote: &str, code: ErrorCode, message: String) -> ClientError {
    match code {
        ErrorCode::ShuttingDown => ClientError::Disconnected {
            stage: "uploading",
            reason: message,
        },
        ErrorCode::AlreadyExists => ClientError::Refused {
            remote: remote.to_string(),
            message: format!("{message} (use --force to replace it)"),
        },
        ErrorCode::ChecksumMismatch => ClientError::Integrity {
            remote: remote.to_string(),
            algorithm: "sha256",
            expected: "the local file's".into(),
            actual: format!(
                "another on the server ({message}); did the file change while it was being sent?"
            ),
            kept: Kept::Nothing,
        },
        _ => ClientError::Refused {
            remote: remote.to_string(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_file_is_hashed_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let l = open_local(&path, 4096).unwrap();
        assert_eq!(l.chunk_digests, [sha256(b"abc")]);
        assert_eq!(l.size, 3);
        let sha = l.digests.iter().find(|d| d.algorithm == Algorithm::Sha256);
        assert_eq!(
            sha.unwrap().to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(l.digests.len(), 1);
        let e = open_local(dir.path(), 4096).unwrap_err();
        assert!(e.to_string().contains("put -r"), "{e}");
        assert!(open_local(&dir.path().join("missing"), 4096).is_err());
        // Chunks: 10,000 bytes at 4 KiB are 3 chunks, the last one short.
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let l = open_local(&path, 4096).unwrap();
        assert_eq!(l.size, 10_000);
        let want: Vec<[u8; 32]> = data.chunks(4096).map(sha256).collect();
        assert_eq!(l.chunk_digests, want);
    }
}
