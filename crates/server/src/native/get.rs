//! `Get`: a whole file or a range of it, with the whole file's digests in the trailer.
//!
//! ```text
//! FileHeader{size, offset, length, mtime, chunk}
//! [empty Data every second while the part before the range is hashed]   (cache miss only)
//! Data ... (exactly `length` bytes, hashed as they go)                   (cache miss only)
//! [empty Data every second while the part after the range is hashed]    (cache miss only)
//! Trailer{digests of the whole file}   or   Error{Internal} if the file changed meanwhile
//! ```
//!
//! No digests wanted: nothing is hashed (clients re-fetch single chunks this way). Digests
//! cached for exactly this version of the file: nothing is hashed either. Otherwise MD5,
//! SHA-256 and per-chunk SHA-256 are computed in one pass, while sending, and cached if the
//! file did not change meanwhile. A client that goes away ends the pass at once.

use super::Native;
use super::OUT_LIMIT;
use crate::auth::Access;
use crate::beneath;
use crate::digest::{self, hash_span, FileHasher, KeepAlive};
use crate::error::ServerError;
use crate::fileid::{relative_name, FileId};
use crate::paths::{self, Refusal};
use crate::range::{self, Range};
use crate::store::Outcome;
use crate::tls::ServerStream;
use crate::transfer::{Framing, Transfer, QUEUED_MAX};
use sfts_protocol::io::write_data;
use sfts_protocol::{
    clamp_chunk_size, Capabilities, Digest, DigestSet, ErrorCode, FileHeader, GetRequest, Message,
    TO_END,
};
use sfts_state::{FileKey, NewTransfer};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use tracing::{debug, info};

/// A file opened for one request.
struct Opened {
    file: File,
    /// Its identity when it was opened.
    id: FileId,
    /// Its digest-cache key.
    key: FileKey,
    /// What will be sent.
    range: Range,
}

/// Where the trailer's digests come from.
enum Digests {
    /// None wanted.
    None,
    /// Known for this version of the file.
    Cached(Vec<Digest>),
    /// Computed on the way.
    Hash(Box<FileHasher>),
}

impl Native<'_> {
    /// Serves one `Get`. `Ok` also for refusals (the session goes on); `Err` closes.
    pub(super) fn get(&mut self, req: GetRequest) -> Result<(), ServerError> {
        let permitted = self
            .digests_allowed(req.digests)
            .and_then(|()| self.permit(Access::Read, &req.path));
        let mut opened = match permitted.and_then(|()| self.open(&req)) {
            Ok(o) => o,
            Err(refusal) => {
                debug!("{} {}", self.who(), requested(&req));
                self.record(&req, &Range::EMPTY, 0)
                    .finish(0, Outcome::Refused(&refusal.message));
                return self.refuse(&req.path, refusal);
            }
        };
        let (id, range) = (opened.id, opened.range);
        let chunk = clamp_chunk_size(req.chunk_size);
        // A transfer of one chunk is logged in one line, at its end.
        let brief = range.length <= u64::from(chunk);
        if !brief {
            info!("{} {}", self.who(), requested(&req));
        }
        if range.restarted {
            info!(
                "'{}' is no longer the version the client has (size or modification time \
                 differ); sending the whole file",
                req.path
            );
        } else if !brief && range.offset > 0 {
            info!(
                "resume of '{}' from {} ({} bytes)",
                req.path, range.offset, range.length
            );
        } else if !brief && !range.is_whole(id.size) {
            info!("range of '{}': first {} bytes", req.path, range.length);
        }
        let digests = self.digests(&req, &opened, chunk, brief);

        let header = FileHeader {
            size: id.size,
            offset: range.offset,
            length: range.length,
            mtime_ns: id.mtime_ns,
            chunk_size: chunk,
        };
        let record = self.record(&req, &range, id.size);
        let guard = self.s.guard;
        guard.begin_file(&req.path, range.length);
        let result = self
            .send(&Message::FileHeader(header))
            .and_then(|()| self.send_range(&req, &mut opened, digests, chunk, brief))
            .and_then(|digests| self.send(&Message::Trailer { digests }));
        guard.end_file();
        record.finish_with(guard.bytes_sent().load(Ordering::Relaxed), &result);
        match result {
            Err(ServerError::ShuttingDown) => self.goodbye(),
            Err(e @ ServerError::FileChanged { .. }) => {
                let _ = self.send_error(ErrorCode::Internal, e.to_string());
                Err(e)
            }
            Err(e @ ServerError::FileRead { .. }) => {
                let msg = format!("error reading '{}' on the server", req.path);
                let _ = self.send_error(ErrorCode::Internal, msg);
                Err(e)
            }
            other => other,
        }
    }

    /// Refuses digests the session did not negotiate (BLAKE3 and XXH128 need their
    /// capabilities).
    fn digests_allowed(&self, wanted: DigestSet) -> Result<(), Refusal> {
        for a in wanted.iter() {
            if let Some(cap) = a.capability() {
                self.needs(cap, &format!("The {} digest", a.label()), a.label())?;
            }
        }
        Ok(())
    }

    /// Resolves, opens and checks the file, and decides the range: in one `openat2` when no
    /// symlink is on the way (see [`crate::beneath`]), else by the careful walk.
    fn open(&self, req: &GetRequest) -> Result<Opened, Refusal> {
        let root = &self.s.state.root;
        let quick = paths::check_syntax(&req.path).ok().and_then(|parts| {
            let dir = self.s.state.root_dir.as_ref()?;
            beneath::open_plain(dir, &parts)
        });
        let (file, meta, path) = match quick {
            Some(p) => (p.file, p.metadata, p.path),
            None => {
                let resolved = paths::resolve(root, &req.path)?;
                let file =
                    File::open(&resolved.path).map_err(|e| paths::access_error(&req.path, &e))?;
                // The open file's own metadata: the file the bytes will come from.
                let meta = file.metadata().unwrap_or(resolved.metadata);
                (file, meta, resolved.path)
            }
        };
        self.permit_resolved(Access::Read, &req.path, &path)?;
        let id = FileId::of(&meta);
        let range = range::plan(req, &id, self.common.has(Capabilities::RESUME))?;
        Ok(Opened {
            file,
            id,
            key: id.key(relative_name(root, &path)),
            range,
        })
    }

    /// Decides where the trailer's digests come from, and says so in the log (`brief`: in
    /// the transfer's one line, later).
    fn digests(&self, req: &GetRequest, opened: &Opened, chunk: u32, brief: bool) -> Digests {
        if req.digests == DigestSet::EMPTY {
            return Digests::None;
        }
        let cached = self.s.state.store.cached(&opened.key, req.digests);
        if let Some(d) = cached.and_then(|c| digest::select(&c, req.digests)) {
            if !brief {
                info!("digest cache hit for '{}'", req.path);
            }
            return Digests::Cached(d);
        }
        let (size, range) = (opened.id.size, opened.range);
        if brief {
            // Said in the transfer's one line.
        } else if range.is_whole(size) {
            info!(
                "hashing '{}' while sending (not in the digest cache)",
                req.path
            );
        } else {
            info!(
                "hashing '{}' while sending (not in the digest cache): {} bytes before the \
                 range and {} after it are read for the whole-file digest",
                req.path,
                range.offset,
                size - range.offset - range.length
            );
        }
        Digests::Hash(Box::new(FileHasher::new(size, chunk)))
    }

    /// Sends the range (hashing around it when needed) and returns the trailer's digests.
    ///
    /// A small range that needs no reading around it is queued with the other replies (a
    /// tree of small files goes out in a few large writes); a larger one streams, with
    /// `sendfile` when nothing is hashed and the connection is plain TCP.
    fn send_range(
        &mut self,
        req: &GetRequest,
        o: &mut Opened,
        digests: Digests,
        chunk: u32,
        brief: bool,
    ) -> Result<Vec<Digest>, ServerError> {
        let s = self.s;
        let (size, range) = (o.id.size, o.range);
        let name = req.path.as_str();
        let read_err = |source| ServerError::FileRead {
            name: name.to_owned(),
            source,
        };
        let (mut hasher, known, note) = match digests {
            Digests::None => (None, Vec::new(), ""),
            Digests::Cached(d) => (None, d, "; digests from the cache"),
            Digests::Hash(h) => (Some(h), Vec::new(), "; digests computed while sending"),
        };
        let transfer = Transfer {
            name,
            peer: &s.peer_text,
            offset: range.offset,
            size: range.length,
            file_size: size,
            chunk: chunk as usize,
            framing: Framing::Native,
            counter: s.guard.bytes_sent(),
            stop: &s.state.stop,
            note: if brief { note } else { "" },
        };
        let queued = range.length <= QUEUED_MAX && (hasher.is_none() || range.is_whole(size));
        if queued {
            if range.offset > 0 {
                o.file
                    .seek(SeekFrom::Start(range.offset))
                    .map_err(read_err)?;
            }
            transfer.queue(&mut o.file, &mut self.out, hasher.as_deref_mut())?;
            if self.out.len() >= OUT_LIMIT {
                self.flush()?;
            }
        } else {
            // The header (and any reply queued before it) goes out before the data streams.
            self.flush()?;
            let need = transfer.buffer_len();
            if self.data.len() < need {
                self.data.resize(need, 0);
            }
            if let Some(h) = hasher.as_deref_mut() {
                let mut alive = keepalive(self.io.get_mut());
                hash_span(
                    &mut o.file,
                    range.offset,
                    name,
                    h,
                    &mut self.data,
                    &s.state.stop,
                    &mut alive,
                )?;
            } else if range.offset > 0 {
                o.file
                    .seek(SeekFrom::Start(range.offset))
                    .map_err(read_err)?;
            }
            match (hasher.as_deref_mut(), self.io.get_mut()) {
                #[cfg(target_os = "linux")]
                (None, ServerStream::Plain(link)) => {
                    transfer.run_zero_copy(&o.file, link, &mut self.data)?
                }
                (h, stream) => transfer.run(&mut o.file, stream, &mut self.data, h)?,
            }
            if let Some(h) = hasher.as_deref_mut() {
                let rest = size - h.fed();
                let mut alive = keepalive(self.io.get_mut());
                hash_span(
                    &mut o.file,
                    rest,
                    name,
                    h,
                    &mut self.data,
                    &s.state.stop,
                    &mut alive,
                )?;
            }
        }
        let now = o.file.metadata().map_err(read_err)?;
        if !o.id.unchanged(&FileId::of(&now)) {
            return Err(ServerError::FileChanged {
                name: name.to_owned(),
            });
        }
        let Some(hasher) = hasher else {
            return Ok(known);
        };
        let computed = hasher.finish();
        s.state.store.remember(&o.key, &computed);
        if !brief {
            info!("cached the digests of '{name}'");
        }
        Ok(digest::select(&computed, req.digests).unwrap_or_default())
    }

    /// Starts the history row of `req`.
    fn record(&self, req: &GetRequest, range: &Range, size: u64) -> crate::store::Record {
        self.s.state.store.begin(&NewTransfer {
            peer: &self.s.peer_text,
            path: &req.path,
            direction: "download",
            protocol: "native",
            offset: range.offset,
            length: range.length,
            size,
            priority: self.priority.name(),
        })
    }
}

/// Sends an empty `Data` frame when one is due: the client's read timeout must not fire while
/// the server reads the file without sending.
fn keepalive(stream: &mut ServerStream) -> KeepAlive<impl FnMut() -> io::Result<()> + '_> {
    KeepAlive::new(move || write_data(stream, &[]))
}

/// How a request reads in the log.
fn requested(req: &GetRequest) -> String {
    format!(
        "requests '{}' (offset {}, length {}, chunk {}, digests {:?})",
        req.path,
        req.offset,
        if req.length == TO_END {
            "to end".to_string()
        } else {
            req.length.to_string()
        },
        req.chunk_size,
        req.digests.iter().map(|a| a.name()).collect::<Vec<_>>()
    )
}
