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
//! order (OK, then the MD5 pass) and pad the gap to at least [`MIN_STATUS_GAP`].

use crate::connection::{linger_close, DeadlineReader, Session};
use crate::error::ServerError;
use crate::paths;
use crate::transfer::{Framing, Transfer};
use sfts_protocol::checksum::digest_reader;
use sfts_protocol::legacy::{self, Metadata};
use sfts_protocol::{Algorithm, DigestSet, ErrorCode, MultiHasher, ProtocolError};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Shortest pause between `OK` and the metadata, so `OK` arrives in a segment of its own.
pub const MIN_STATUS_GAP: Duration = Duration::from_millis(50);

/// Chunk size for the raw data (the original used 4 KB; larger is simply faster).
const CHUNK: usize = sfts_protocol::DEFAULT_CHUNK_SIZE as usize;

/// Runs an original-protocol session whose first four bytes (the name length) were `first`.
pub fn serve(s: &Session<'_>, first: [u8; 4], deadline: Instant) -> Result<(), ServerError> {
    let peer = s.peer;
    let len = match legacy::check_request_len(u32::from_be_bytes(first)) {
        Ok(len) => len,
        Err(e) => return reject(s, format!("Invalid request: {e}")),
    };
    let mut raw = vec![0u8; len];
    if let Err(e) = DeadlineReader::new(s.stream, deadline).read_exact(&mut raw) {
        if s.state.stopping() {
            return Err(ServerError::ShuttingDown);
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return Err(ProtocolError::ConnectionClosed.into());
        }
        return reject(s, "Request timed out: the file name did not arrive".into());
    }
    let Ok(name) = String::from_utf8(raw) else {
        return reject(
            s,
            "Invalid request: the file name is not valid UTF-8".into(),
        );
    };
    info!("{peer} requests '{name}' (original protocol)");

    let resolved = match paths::resolve(&s.state.root, &name) {
        Ok(r) => r,
        Err(refusal) => {
            warn!("refused '{name}' for {peer}: {refusal}");
            let message = match refusal.code {
                ErrorCode::NotFound => legacy::not_found_message(&name),
                _ => refusal.message,
            };
            send_error(s, &message);
            return Ok(());
        }
    };
    let mut file = match File::open(&resolved.path) {
        Ok(f) => f,
        Err(e) => {
            let refusal = paths::access_error(&name, &e);
            warn!("refused '{name}' for {peer}: {refusal}");
            send_error(s, &refusal.message);
            return Ok(());
        }
    };

    let mut out = s.stream;
    out.write_all(legacy::STATUS_OK)
        .map_err(ServerError::peer)?;
    out.flush().map_err(ServerError::peer)?;

    let file_err = |source| ServerError::FileRead {
        name: name.clone(),
        source,
    };
    let mut buf = vec![0u8; CHUNK];
    let started = Instant::now();
    let (size, digests) =
        digest_reader(&mut file, DigestSet::of(&[Algorithm::Md5]), &mut buf).map_err(file_err)?;
    if let Some(rest) = MIN_STATUS_GAP.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    file.seek(SeekFrom::Start(0)).map_err(file_err)?;
    let Some(md5) = digests.into_iter().next() else {
        return Err(file_err(io::Error::other("no MD5 computed")));
    };

    let mut meta = Vec::new();
    Metadata {
        name: paths::base_name(&name).to_owned(),
        size,
        md5,
    }
    .encode(&mut meta);
    out.write_all(&meta).map_err(ServerError::peer)?;

    s.guard.begin_file(&name, size);
    let transfer = Transfer {
        name: &name,
        peer,
        size,
        chunk: CHUNK,
        framing: Framing::Raw,
        counter: s.guard.bytes_sent(),
        stop: &s.state.stop,
    };
    // The size went out with the metadata, so the data is exactly what was hashed, even if
    // the file grows meanwhile; a shrinking file ends the transfer short (the original
    // protocol has no way to say so; the client notices the missing bytes).
    let result = transfer.run(
        &mut file,
        &mut out,
        &mut buf,
        &mut MultiHasher::new(DigestSet::EMPTY),
    );
    s.guard.end_file();
    result
}

/// Writes `ERROR` and `message` in one write, so the client's 5-byte read gets exactly `ERROR`.
fn send_error(s: &Session<'_>, message: &str) {
    let mut out = Vec::new();
    legacy::encode_error(message, &mut out);
    if let Err(e) = (&mut { s.stream }).write_all(&out) {
        warn!("could not send the refusal to {}: {e}", s.peer);
    }
}

/// Answers a malformed request and closes.
fn reject(s: &Session<'_>, message: String) -> Result<(), ServerError> {
    send_error(s, &message);
    linger_close(s.stream);
    Err(ServerError::BadRequest(message))
}
