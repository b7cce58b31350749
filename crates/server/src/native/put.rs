//! Uploads (`PutBegin`, `PutChunk`, `PutCommit` or `PutCommitDigests`, `PutAbort`) and
//! `Mkdir`, as in `docs/PROTOCOL.md` 1.8.
//!
//! ```text
//! PutBegin  → PutReady{chunk size, chunks held}   or Error (nothing stored)
//! PutChunk  → ChunkAck | ChunkRejected{digest-mismatch, bad-chunk, no-such-upload} | Error
//! PutCommit, PutCommitDigests
//!           → [empty Data every second while the file is read back] PutDone | Error
//! PutAbort  → PutAborted
//! Mkdir     → FileInfo (the directory) | Error
//! ```
//!
//! The checks of `PutBegin` run in this order, before anything is stored: `unsupported`,
//! `read-only`, a duplicate id (a protocol violation: the connection is closed), `busy`,
//! streamed-upload flags the session did not agree on (`bad-request`), the name
//! (`bad-request`, `outside-root`, `unsafe-name`), `too-large`, the place (`outside-root`,
//! `not-a-directory`, `not-a-file`, `already-exists`), `conflict`. Frames pipelined after a
//! refused `PutBegin` find no open upload and get `no-such-upload`.

use super::Native;
use crate::auth::Access;
use crate::digest::{self, KeepAlive};
use crate::error::ServerError;
use crate::fileid::{relative_name, FileId};
use crate::paths::{self, Refusal};
use crate::store::Outcome;
use crate::targets::{self, Found, Walk};
use crate::units::{bytes_text, seconds_text};
use crate::upload::{already_exists, Start, Upload, Verified};
use crate::uploads::{Uploads, CLAIM_WAIT};
use sfts_protocol::io::write_data;
use sfts_protocol::{
    blake3_tree, checksum, clamp_chunk_size, Capabilities, ChunkDigest, Digest, ErrorCode,
    FileInfo, FileKind, Message, PutBegin, RejectReason,
};
use sfts_state::NewTransfer;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;
use tracing::{debug, error, info, warn};

/// Most uploads one connection may hold open (the protocol guarantees at least
/// [`sfts_protocol::GUARANTEED_OPEN_UPLOADS`]).
pub const MAX_OPEN_UPLOADS: usize = 16;

/// The refusal of every upload by a server started without `--allow-upload`.
pub const READ_ONLY: &str = "this server is read-only: it was not started with --allow-upload";

/// Smallest buffer the commit reads the assembled file through.
const VERIFY_BUFFER: usize = 1 << 20;

impl<'a> Native<'a> {
    /// `PutBegin`: opens (or resumes) an upload, or refuses it.
    pub(super) fn put_begin(&mut self, req: PutBegin) -> Result<(), ServerError> {
        if self.uploads.contains_key(&req.id) {
            return self.reject(format!(
                "PutBegin with upload id {}, which is still open on this connection",
                req.id
            ));
        }
        let (id, size) = (req.id, req.size);
        match self.open_upload(&req) {
            Ok(upload) => {
                let have = upload.held.to_ranges();
                let chunk_size = upload.chunk_size;
                self.uploads.insert(id, upload);
                self.send(&Message::PutReady(sfts_protocol::PutReady {
                    id,
                    chunk_size,
                    have,
                }))
            }
            Err(refusal) => {
                warn!(
                    "refused the upload of '{}' ({size} bytes) from {}: {refusal}",
                    paths::shown(&req.path),
                    self.who()
                );
                self.history(&req.path, size, size)
                    .finish(0, Outcome::Refused(&refusal.message));
                self.send_error(refusal.code, refusal.message)
            }
        }
    }

    /// The checks of `PutBegin`, then the upload.
    fn open_upload(&mut self, req: &PutBegin) -> Result<Upload<'a>, Refusal> {
        let state = self.s.state;
        let uploads = &*state.uploads;
        self.may_write()?;
        self.permit(Access::Write, &req.path)?;
        if self.uploads.len() >= MAX_OPEN_UPLOADS {
            return Err(Refusal::new(
                ErrorCode::Busy,
                format!(
                    "this connection already has {MAX_OPEN_UPLOADS} uploads open; commit some \
                     first"
                ),
            ));
        }
        self.stream_flags_agreed(req)?;
        let parts = targets::check_name(&req.path)?;
        if let Some(limit) = uploads.policy.max_size.filter(|l| req.size > *l) {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "'{}' is larger than this server's upload limit of {}: it has {}",
                    req.path,
                    bytes_text(limit),
                    bytes_text(req.size)
                ),
            ));
        }
        let place = targets::walk(&state.root, &req.path, &parts, Walk::Look)?;
        self.permit_resolved(Access::Write, &req.path, &place.path)?;
        match place.found {
            Found::Nothing => {}
            Found::Directory | Found::Other if parts.is_empty() || place.path == state.root => {
                return Err(Refusal::new(
                    ErrorCode::NotAFile,
                    "the served root itself cannot be uploaded to; name a file",
                ))
            }
            Found::Directory | Found::Other => {
                return Err(Refusal::new(
                    ErrorCode::NotAFile,
                    format!(
                        "'{}' is a directory (or another special file) on the server",
                        req.path
                    ),
                ))
            }
            Found::File | Found::Link if req.force && uploads.policy.overwrite => {}
            Found::File | Found::Link => {
                return Err(already_exists(&req.path, uploads.policy.overwrite))
            }
        }
        let path = relative_name(&state.root, &place.path);
        let claim = uploads
            .claim(&path, self.s.guard.id(), CLAIM_WAIT)
            .map_err(|taken| {
                let message = if taken.same_connection {
                    format!(
                        "'{}' is already being uploaded on this connection",
                        req.path
                    )
                } else {
                    format!(
                        "'{}' is being uploaded by another client right now; try again later",
                        req.path
                    )
                };
                Refusal::new(ErrorCode::Conflict, message)
            })?;
        let (mut upload, start) = Upload::open(uploads, claim, req, path)?;
        let held = upload.held_bytes();
        upload.record = Some(self.history(&upload.path, req.size, req.size - held));
        let (peer, u) = (self.s.peer, &upload);
        match start {
            Start::Resumed => info!(
                "upload of '{}' from {peer} resumes: {} of {} chunk(s) already held, {} to go \
                 (id {}, chunk size {}, priority {})",
                u.path,
                u.held.len(),
                u.total,
                bytes_text(req.size - held),
                u.id,
                u.chunk_size,
                self.priority
            ),
            // A new upload of one chunk is logged in one line, when it is published.
            Start::New if u.total <= 1 => {}
            other => {
                let why = match other {
                    Start::Replaced => {
                        " (replacing the stored upload of another version of the file)"
                    }
                    Start::Restarted => " (the client asked to discard the stored chunks)",
                    Start::Lost => " (the stored upload had lost its data)",
                    _ => "",
                };
                info!(
                    "upload of '{}' from {peer} begins: {} in {} chunk(s) of {} bytes (id {}, \
                     priority {}){why}",
                    u.path,
                    bytes_text(req.size),
                    u.total,
                    u.chunk_size,
                    u.id,
                    self.priority
                )
            }
        }
        Ok(upload)
    }

    /// Refuses the streamed-upload flags of `PutBegin` unless both sides announced what they
    /// need: `STREAM_PUT` for digest-at-commit, `BLAKE3` too for BLAKE3 chunks, and
    /// `BLAKE3_TREE` as well for tree values (whose `PutDone` carries the BLAKE3).
    fn stream_flags_agreed(&self, req: &PutBegin) -> Result<(), Refusal> {
        let stream = self.common.has(Capabilities::STREAM_PUT);
        if req.digest_at_commit && !stream {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "PutBegin asks for the digests at the commit, but this session did not agree on \
                 STREAM_PUT",
            ));
        }
        let blake3 = stream && self.common.has(Capabilities::BLAKE3);
        if req.chunk_digest == ChunkDigest::Blake3 && !blake3 {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "PutBegin asks for BLAKE3 chunk digests, but this session did not agree on \
                 STREAM_PUT and BLAKE3",
            ));
        }
        if req.chunk_digest == ChunkDigest::Blake3Tree {
            if !(blake3 && self.common.has(Capabilities::BLAKE3_TREE)) {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "PutBegin asks for BLAKE3 tree chunk values, but this session did not agree \
                     on STREAM_PUT, BLAKE3 and BLAKE3_TREE",
                ));
            }
            let chunk = clamp_chunk_size(req.chunk_size);
            if !blake3_tree::usable_chunk_size(chunk) {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "PutBegin asks for BLAKE3 tree chunk values with chunks of {chunk} \
                         bytes; they need a power of two"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses writes this session may not make: the capability, then the server's policy.
    fn may_write(&self) -> Result<(), Refusal> {
        self.needs(Capabilities::UPLOAD, "Uploading", "UPLOAD")?;
        if !self.s.state.uploads.policy.allow {
            return Err(Refusal::new(ErrorCode::ReadOnly, READ_ONLY));
        }
        Ok(())
    }

    /// `PutChunk`: checks the chunk (its upload, index, length and digest) and stores it.
    pub(super) fn put_chunk(
        &mut self,
        id: u32,
        index: u64,
        digest: &[u8; 32],
        bytes: Range<usize>,
    ) -> Result<(), ServerError> {
        let peer = self.s.peer;
        let reject = |reason| Message::ChunkRejected { id, index, reason };
        let Some(u) = self.uploads.get_mut(&id) else {
            debug!("chunk {index} of upload id {id} from {peer}: no such upload");
            return self.send(&reject(RejectReason::NoSuchUpload));
        };
        let data = &self.rbuf[bytes];
        if u.held.contains(index) {
            // Sent again (a resume that did not know, a repeat after a reconnection): held.
            return self.send(&Message::ChunkAck { id, index });
        }
        let want = u.chunk_len(index);
        if want != Some(data.len() as u32) {
            warn!(
                "rejected chunk {index} of '{}' from {peer}: {} bytes where {} (chunk size {}, \
                 {} chunk(s))",
                u.path,
                data.len(),
                want.map_or("no chunk".into(), |w| format!("{w} bytes are expected")),
                u.chunk_size,
                u.total
            );
            return self.send(&reject(RejectReason::BadChunk));
        }
        let offset = index * u64::from(u.chunk_size);
        if u.chunk_digest.of_chunk(offset, u.size, data) != *digest {
            warn!(
                "rejected chunk {index} of '{}' from {peer}: it does not match its {} \
                 (corrupted in flight); the client sends it again",
                u.path,
                u.chunk_digest.name()
            );
            return self.send(&reject(RejectReason::DigestMismatch));
        }
        match u.store_chunk(index, data, digest) {
            Ok(_) => {
                if let Some(pct) = u.progress() {
                    let (held, total) = (u.held.len(), u.total);
                    info!(
                        "'{}' from {peer}: {pct}% held ({held}/{total} chunks)",
                        u.path
                    );
                }
                self.send(&Message::ChunkAck { id, index })
            }
            Err(e) => {
                let u = self.uploads.remove(&id).expect("open");
                let refusal = paths::write_error(&u.requested, &e);
                if refusal.code == ErrorCode::NoSpace {
                    error!(
                        "the disk is full: upload of '{}' from {peer} failed at chunk {index}; \
                         its partial data was deleted",
                        u.path
                    );
                    let message = format!(
                        "the server's disk is full; the partial upload of '{}' was deleted",
                        u.requested
                    );
                    u.discard(Outcome::Failed(&message));
                    return self.send_error(ErrorCode::NoSpace, message);
                }
                error!(
                    "cannot store chunk {index} of '{}' from {peer}: {e}; the upload is kept \
                     for resuming",
                    u.path
                );
                let message = format!(
                    "the server could not store chunk {index} of '{}'; run the upload again \
                     to resume it",
                    u.requested
                );
                self.keep(u, Outcome::Failed(&message));
                self.send_error(ErrorCode::Internal, message)
            }
        }
    }

    /// `PutCommit` (`at_commit` is `None`) or `PutCommitDigests`: checks that every chunk is
    /// there and that the whole file is the one announced, then publishes it.
    pub(super) fn put_commit(
        &mut self,
        id: u32,
        at_commit: Option<Vec<Digest>>,
    ) -> Result<(), ServerError> {
        let peer = self.s.peer;
        let Some(u) = self.uploads.get(&id) else {
            debug!("commit of upload id {id} from {peer}: no such upload");
            return self.send_error(
                ErrorCode::NoSuchUpload,
                format!("no upload with id {id} is open on this connection"),
            );
        };
        let want = match (u.digest_at_commit, at_commit) {
            (false, None) => u.announced(),
            (true, Some(d)) if u.commit_has_enough(&d) => d,
            (at, _) => {
                let message = match at {
                    true => format!(
                        "the upload of '{}' announced its digests for the commit: commit it \
                         with PutCommitDigests, which carries at least {}",
                        u.requested,
                        u.required()
                    ),
                    false => format!(
                        "the upload of '{}' announced its digests in PutBegin: commit it with \
                         PutCommit",
                        u.requested
                    ),
                };
                warn!("commit of '{}' from {peer} refused: {message}", u.path);
                let u = self.uploads.remove(&id).expect("open");
                self.keep(u, Outcome::Failed(&message));
                return self.send_error(ErrorCode::BadRequest, message);
            }
        };
        if let Some(first) = u.held.first_missing(u.total) {
            let missing = u.total - u.held.len();
            warn!(
                "commit of '{}' from {peer} refused: {missing} of {} chunk(s) missing (the \
                 first is chunk {first}); the upload stays open",
                u.path, u.total
            );
            let message = format!(
                "'{}' is incomplete: {missing} of {} chunk(s) are missing (the first is chunk \
                 {first}); send them and commit again",
                u.requested, u.total
            );
            return self.send_error(ErrorCode::Incomplete, message);
        }
        let mut u = self.uploads.remove(&id).expect("open");
        if u.needs_saving() && u.total > 1 {
            // Its acknowledgements may go out with a keep-alive below: saved first, as always.
            // (A file of one chunk is not: its commit is due now, and should the server die
            // before it, that one chunk is simply sent again.)
            self.keep_saved(&mut u);
        }
        let hashed = u.hashed_on_arrival(&want);
        if u.total > 1 {
            info!(
                "commit of '{}' from {peer}: all {} chunks held; {} ({})",
                u.path,
                u.total,
                if hashed {
                    "hashed as they arrived"
                } else {
                    "reading the whole file back to check it"
                },
                bytes_text(u.size)
            );
        }
        let started = Instant::now();
        if !hashed && self.data.len() < VERIFY_BUFFER {
            self.data.resize(VERIFY_BUFFER, 0);
        }
        let s = self.s;
        let (open, out, io) = (&mut self.uploads, &mut self.out, self.io.get_mut());
        // A keep-alive (at most one a second) flushes what is queued before it.
        let mut alive = KeepAlive::new(move || {
            super::drain(s, open, out, io)?;
            write_data(io, &[])
        });
        let verified = u.verify(&want, &mut self.data, &s.state.stop, &mut alive);
        let digests = match verified {
            Ok(Verified::Match(d)) => d,
            Ok(Verified::Mismatch(algorithm, found)) => {
                warn!(
                    "upload of '{}' from {peer} does not match its {algorithm} (the assembled \
                     file has {found}); discarded",
                    u.path
                );
                let when = if u.digest_at_commit {
                    "sent with the commit"
                } else {
                    "announced when the upload began"
                };
                let message = format!(
                    "the assembled '{}' does not match the {algorithm} {when} (the server got \
                     {found}); the upload was discarded, start it again",
                    u.requested
                );
                u.discard(Outcome::Failed(&message));
                return self.send_error(ErrorCode::ChecksumMismatch, message);
            }
            Ok(Verified::Short) => {
                error!(
                    "upload of '{}' from {peer}: its staging file is shorter than the upload \
                     (data lost on this machine); discarded",
                    u.path
                );
                let message = format!(
                    "the server lost part of '{}' before it was complete; the upload was \
                     discarded, start it again",
                    u.requested
                );
                u.discard(Outcome::Failed(&message));
                return self.send_error(ErrorCode::ChecksumMismatch, message);
            }
            Err(e @ (ServerError::ShuttingDown | ServerError::Peer(_))) => {
                self.keep(u, Outcome::Aborted(&e.to_string()));
                return match e {
                    ServerError::ShuttingDown => self.goodbye(),
                    e => Err(e),
                };
            }
            Err(e) => {
                error!("cannot read back the upload of '{}': {e}", u.path);
                let message = format!(
                    "the server could not read back '{}' to check it; run the upload again",
                    u.requested
                );
                self.keep(u, Outcome::Failed(&message));
                return self.send_error(ErrorCode::Internal, message);
            }
        };
        let overwrite = self.s.state.uploads.policy.overwrite;
        let target = match u.publish(overwrite) {
            Ok(target) => target,
            Err(refusal) => {
                warn!(
                    "could not publish the upload of '{}' from {peer}: {refusal}; its chunks \
                     are kept for resuming",
                    u.path
                );
                self.keep(u, Outcome::Failed(&refusal.message));
                return self.send_error(refusal.code, refusal.message);
            }
        };
        if let Some(key) = u.cache_key(&target) {
            self.s.state.store.remember(&key, &digests);
        }
        // A file sent with BLAKE3 tree values was checked with its BLAKE3 only.
        let (label, digest) = match (digests.sha256, digests.blake3) {
            (Some(sha), _) => ("sha256", checksum::to_hex(&sha)),
            (None, Some(b3)) => ("blake3", checksum::to_hex(&b3)),
            (None, None) => ("sha256", String::new()),
        };
        let secs = u.began.elapsed().as_secs_f64();
        info!(
            "published '{}' from {peer}: {}, {label} {digest}, {} received on this connection in \
             {} ({:.1} MB/s), checked in {}",
            u.path,
            bytes_text(u.size),
            bytes_text(u.received),
            seconds_text(secs),
            u.received as f64 / 1e6 / secs.max(1e-6),
            seconds_text(started.elapsed().as_secs_f64())
        );
        u.finish();
        // The next upload may begin without a rate-limit token (see `Native::covered`).
        self.published = (self.published + 1).min(MAX_OPEN_UPLOADS as u64);
        self.send(&Message::PutDone {
            id,
            digests: digest::all_known(&digests, self.shown_digests()),
        })
    }

    /// `PutAbort`: forgets the upload and deletes what it holds.
    pub(super) fn put_abort(&mut self, id: u32) -> Result<(), ServerError> {
        match self.uploads.remove(&id) {
            Some(u) => {
                info!(
                    "upload of '{}' aborted by {}: its partial data ({} of {} chunk(s)) was \
                     deleted",
                    u.path,
                    self.s.peer,
                    u.held.len(),
                    u.total
                );
                u.discard(Outcome::Aborted("aborted by the client"));
            }
            None => debug!("abort of upload id {id}: nothing open"),
        }
        self.send(&Message::PutAborted { id })
    }

    /// `Mkdir`: creates a directory and its missing parents; answers its `FileInfo`.
    pub(super) fn mkdir(&mut self, path: String) -> Result<(), ServerError> {
        let made = self.may_write().and_then(|()| {
            self.permit(Access::Write, &path)?;
            let parts = targets::check_name(&path)?;
            let root = &self.s.state.root;
            if self.user.is_some() {
                // Where it would be made, before anything is.
                let place = targets::walk(root, &path, &parts, Walk::Look)?;
                self.permit_resolved(Access::Write, &path, &place.path)?;
            }
            targets::walk(root, &path, &parts, Walk::Create)
        });
        let place = match made {
            Ok(p) => p,
            Err(refusal) => return self.refuse(&path, refusal),
        };
        let meta = match std::fs::metadata(&place.path) {
            Ok(m) => m,
            Err(e) => return self.refuse(&path, paths::access_error(&path, &e)),
        };
        debug!("directory '{path}' is there for {}", self.s.peer);
        self.send(&Message::FileInfo(FileInfo {
            kind: FileKind::Directory,
            size: 0,
            mtime_ns: FileId::of(&meta).mtime_ns,
            digests: Vec::new(),
        }))
    }

    /// Saves an upload that is out of the open map, if it stored chunks since its last save.
    fn keep_saved(&self, u: &mut Upload<'a>) {
        if u.needs_saving() {
            self.s.state.uploads.save(&[&u.row()]);
            u.saved();
        }
    }

    /// Ends an upload on this connection, keeping what it holds for a later resume.
    fn keep(&mut self, mut u: Upload<'a>, outcome: Outcome<'_>) {
        self.keep_saved(&mut u);
        u.leave(outcome);
    }

    /// The connection is ending: every open upload is saved and kept for resuming.
    pub(super) fn leave_uploads(&mut self, why: &str) {
        save_open(&self.s.state.uploads, &mut self.uploads);
        for (_, u) in std::mem::take(&mut self.uploads) {
            if u.held.len() > 0 {
                info!(
                    "upload of '{}' from {} left unfinished ({why}): {} of {} chunk(s) held, \
                     kept for resuming",
                    u.path,
                    self.s.peer,
                    u.held.len(),
                    u.total
                );
            } else {
                info!(
                    "upload of '{}' from {} left before any chunk arrived ({why})",
                    u.path, self.s.peer
                );
            }
            u.leave(Outcome::Aborted(why));
        }
    }

    /// Starts the history row of an upload of `size` bytes to `path`, `length` of them to
    /// come.
    fn history(&self, path: &str, size: u64, length: u64) -> crate::store::Record {
        self.s.state.store.begin(&NewTransfer {
            peer: &self.s.peer_text,
            path,
            direction: "upload",
            protocol: "native",
            offset: size - length,
            length,
            size,
            priority: self.priority.name(),
        })
    }
}

/// Saves, in one transaction, every open upload that stored chunks since its last save.
pub(super) fn save_open(uploads: &Uploads, open: &mut BTreeMap<u32, Upload<'_>>) {
    let rows: Vec<_> = open
        .values()
        .filter(|u| u.needs_saving())
        .map(Upload::row)
        .collect();
    if rows.is_empty() {
        return;
    }
    uploads.save(&rows.iter().collect::<Vec<_>>());
    for u in open.values_mut() {
        u.saved();
    }
}
