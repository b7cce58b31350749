//! A session of the original protocol: one request, one reply, close.
//!
//! ```text
//! client: [u32 BE name length][UTF-8 name]
//! server: "OK" (alone) [metadata: base name, size, MD5 hex] [size raw bytes], close
//!     or: "ERROR" + "File '<name>' not found on server" (or another sentence), close
//! ```
//!
//! Original clients read the status with one 5-byte `recv`, so `OK` must reach them before the
//! metadata does. The original server's MD5 pass made that gap naturally; we keep the same
//! order (OK, then the MD5 from the digest cache or from a pass over the file) and pad the gap
//! to at least [`MIN_STATUS_GAP`]. A pass computes SHA-256 and the per-chunk digests too and
//! caches them all, so native clients asking for the same file later find them.

use crate::connection::Session;
use crate::digest::{hash_span, FileHasher, KeepAlive};
use crate::error::ServerError;
use crate::fileid::{relative_name, FileId};
use crate::limits::{AddrKey, Verdict};
use crate::link::Link;
use crate::paths;
use crate::store::{Outcome, Record};
use crate::transfer::{Framing, Transfer};
use sfts_protocol::legacy::{self, Metadata};
use sfts_protocol::{Algorithm, Digest, DigestSet, ErrorCode, ProtocolError};
use sfts_state::{FileKey, NewTransfer};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Shortest pause between `OK` and the metadata, so `OK` arrives in a segment of its own.
pub const MIN_STATUS_GAP: Duration = Duration::from_millis(50);

/// Chunk size for the raw data (the original used 4 KB; larger is simply faster).
const CHUNK: usize = sfts_protocol::DEFAULT_CHUNK_SIZE as usize;

/// Runs an original-protocol session whose first four bytes (the name length) were `first`;
/// the link's opening deadline bounds the rest of the request.
pub fn serve(s: &Session<'_>, mut link: Link, first: [u8; 4]) -> Result<(), ServerError> {
    let link = &mut link;
    let peer = s.peer;
    let len = match legacy::check_request_len(u32::from_be_bytes(first)) {
        Ok(len) => len,
        Err(e) => return reject(s, link, format!("Invalid request: {e}")),
    };
    let mut raw = vec![0u8; len];
    if let Err(e) = link.read_exact(&mut raw) {
        if s.state.stopping() {
            return Err(ServerError::ShuttingDown);
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return Err(ProtocolError::ConnectionClosed.into());
        }
        return reject(
            s,
            link,
            "Request timed out: the file name did not arrive".into(),
        );
    }
    link.end_opening();
    let Ok(name) = String::from_utf8(raw) else {
        return reject(
            s,
            link,
            "Invalid request: the file name is not valid UTF-8".into(),
        );
    };
    info!("{peer} requests '{name}' (original protocol)");
    match s.state.limiter.take(AddrKey::of(peer.ip()), Instant::now()) {
        Verdict::Go => {}
        Verdict::Wait(wait) => s.state.pause(wait),
        Verdict::Refuse => {
            s.state.rate_refusal(peer);
            send_error(s, link, crate::refuse::LEGACY_TOO_MANY_REQUESTS);
            link.linger_close();
            return Ok(());
        }
    }

    let resolved = match paths::resolve(&s.state.root, &name) {
        Ok(r) => r,
        Err(refusal) => {
            let message = match refusal.code {
                ErrorCode::NotFound => legacy::not_found_message(&name),
                _ => refusal.message.clone(),
            };
            return refuse(s, link, &name, &refusal.to_string(), &message);
        }
    };
    let mut file = match File::open(&resolved.path) {
        Ok(f) => f,
        Err(e) => {
            let refusal = paths::access_error(&name, &e);
            return refuse(s, link, &name, &refusal.to_string(), &refusal.message);
        }
    };
    let meta = file.metadata().unwrap_or(resolved.metadata);
    let id = FileId::of(&meta);
    let key = id.key(relative_name(&s.state.root, &resolved.path));
    let size = id.size;

    let out = link;
    out.write_all(legacy::STATUS_OK)
        .map_err(ServerError::peer)?;
    out.flush().map_err(ServerError::peer)?;
    let started = Instant::now();
    let record = history(s, &name, size);
    s.guard.begin_file(&name, size);
    let mut buf = vec![0u8; CHUNK];
    let result = md5_of(s, &name, &mut file, &id, &key, &mut buf).and_then(|md5| {
        if let Some(rest) = MIN_STATUS_GAP.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        let mut meta = Vec::new();
        Metadata {
            name: paths::base_name(&name).to_owned(),
            size,
            md5,
        }
        .encode(&mut meta);
        out.write_all(&meta).map_err(ServerError::peer)?;
        let transfer = Transfer {
            name: &name,
            peer: &s.peer_text,
            offset: 0,
            size,
            file_size: size,
            chunk: CHUNK,
            framing: Framing::Raw,
            counter: s.guard.bytes_sent(),
            stop: &s.state.stop,
            note: "",
        };
        // The size went out with the metadata, so the data is exactly what was hashed, even
        // if the file grows meanwhile; a shrinking file ends the transfer short (the original
        // protocol has no way to say so; the client notices the missing bytes).
        #[cfg(target_os = "linux")]
        return transfer.run_zero_copy(&file, out, &mut buf);
        #[cfg(not(target_os = "linux"))]
        transfer.run(&mut file, out, &mut buf, None)
    });
    s.guard.end_file();
    record.finish_with(s.guard.bytes_sent().load(Ordering::Relaxed), &result);
    result
}

/// The file's MD5, from the digest cache or from a pass over the file that also computes
/// SHA-256 and the per-chunk digests, for the cache. Leaves `file` at its start.
fn md5_of(
    s: &Session<'_>,
    name: &str,
    file: &mut File,
    id: &FileId,
    key: &FileKey,
    buf: &mut [u8],
) -> Result<Digest, ServerError> {
    let store = &s.state.store;
    let md5 = match store
        .cached(key, DigestSet::of(&[Algorithm::Md5]))
        .and_then(|c| c.md5)
    {
        Some(md5) => {
            info!("digest cache hit for '{name}'");
            md5
        }
        None => {
            info!("hashing '{name}' before sending (not in the digest cache; the original protocol needs the MD5 first)");
            let mut hasher = FileHasher::new(id.size, CHUNK as u32);
            // The original protocol has nothing to keep a client alive with; its clients wait.
            let mut silent = KeepAlive::new(|| Ok(()));
            hash_span(
                file,
                id.size,
                name,
                &mut hasher,
                buf,
                &s.state.stop,
                &mut silent,
            )?;
            let digests = hasher.finish();
            let read_err = |source| ServerError::FileRead {
                name: name.to_owned(),
                source,
            };
            let now = file.metadata().map_err(read_err)?;
            if id.unchanged(&FileId::of(&now)) {
                store.remember(key, &digests);
                info!("cached the digests of '{name}'");
            }
            file.seek(SeekFrom::Start(0)).map_err(read_err)?;
            digests
                .md5
                .ok_or_else(|| read_err(io::Error::other("no MD5 computed")))?
        }
    };
    Ok(Digest {
        algorithm: Algorithm::Md5,
        bytes: md5.to_vec(),
    })
}

/// Starts the history row of a request for `name`.
fn history(s: &Session<'_>, name: &str, size: u64) -> Record {
    s.state.store.begin(&NewTransfer {
        peer: &s.peer_text,
        path: name,
        direction: "download",
        protocol: "legacy",
        offset: 0,
        length: size,
        size,
        // The original protocol has no priorities: every request is normal.
        priority: "normal",
    })
}

/// Refuses a request for `name`: logs `why`, records it, tells the client `message`.
fn refuse(
    s: &Session<'_>,
    link: &mut Link,
    name: &str,
    why: &str,
    message: &str,
) -> Result<(), ServerError> {
    warn!("refused '{name}' for {}: {why}", s.peer);
    history(s, name, 0).finish(0, Outcome::Refused(message));
    send_error(s, link, message);
    Ok(())
}

/// Writes `ERROR` and `message` in one write, so the client's 5-byte read gets exactly `ERROR`.
fn send_error(s: &Session<'_>, link: &mut Link, message: &str) {
    let mut out = Vec::new();
    legacy::encode_error(message, &mut out);
    if let Err(e) = link.write_all(&out) {
        warn!("could not send the refusal to {}: {e}", s.peer);
    }
}

/// Answers a malformed request and closes.
fn reject(s: &Session<'_>, link: &mut Link, message: String) -> Result<(), ServerError> {
    send_error(s, link, &message);
    link.linger_close();
    Err(ServerError::BadRequest(message))
}
