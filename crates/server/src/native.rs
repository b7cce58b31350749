//! A native SFTS session: `Hello` / `Welcome`, then any number of `Get` requests on the same
//! connection until the client closes it.
//!
//! A refused request (not found, outside the root, ...) is answered with an `Error` frame and
//! the session goes on; anything that is not a valid request at this point (a second `Hello`,
//! `Data`, garbage, an oversized frame) is answered with `Error{BadRequest}` and the connection
//! is closed, since the stream can no longer be trusted to be in step.

use crate::connection::{linger_close, DeadlineReader, Session};
use crate::error::ServerError;
use crate::paths::{self, Refusal};
use crate::transfer::{Framing, Transfer};
use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::{
    clamp_chunk_size, Capabilities, ErrorCode, FileHeader, GetRequest, Message, ProtocolError,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, TO_END,
};
use std::fs::File;
use std::time::{Instant, UNIX_EPOCH};
use tracing::{info, warn};

/// What the server offers: downloads, several per connection. Ranges (RESUME) and STAT come
/// later; requests needing them get `Error{Unsupported}` and the session goes on.
const CAPABILITIES: u64 = Capabilities::GET | Capabilities::MULTI_REQUEST;

/// What arrived from the client, with nothing borrowed from the read buffer.
enum Incoming {
    /// The client closed the connection between frames.
    Closed,
    /// A `Hello` (only valid as the first frame).
    Hello { version: u16, agent: String },
    /// A `Get`.
    Get(GetRequest),
    /// A `Stat` (a capability this server does not offer yet).
    Stat(String),
    /// A well-formed frame that makes no sense here.
    Unexpected(&'static str),
    /// The bytes were not a valid frame, or the stream failed.
    Broken(ProtocolError),
}

/// The buffers of one session, reused for every request.
struct Native<'a> {
    s: &'a Session<'a>,
    /// Incoming frames.
    rbuf: Vec<u8>,
    /// Outgoing control frames.
    scratch: Vec<u8>,
    /// Outgoing data: one chunk plus frame-header headroom.
    data: Vec<u8>,
}

/// Runs a native session whose magic has been read; `deadline` bounds the `Hello`.
pub fn serve(s: &Session<'_>, deadline: Instant) -> Result<(), ServerError> {
    let mut n = Native {
        s,
        rbuf: Vec::new(),
        scratch: Vec::new(),
        data: Vec::new(),
    };
    if !n.handshake(deadline)? {
        return Ok(());
    }
    s.stream
        .set_read_timeout(Some(s.state.timeout))
        .map_err(ServerError::peer)?;
    n.requests()
}

impl Native<'_> {
    fn next(&mut self, deadline: Option<Instant>) -> Incoming {
        let result = match deadline {
            Some(d) => read_message(&mut DeadlineReader::new(self.s.stream, d), &mut self.rbuf),
            None => read_message(&mut { self.s.stream }, &mut self.rbuf),
        };
        match result {
            Ok(None) => Incoming::Closed,
            Ok(Some(Message::Hello { version, agent, .. })) => Incoming::Hello { version, agent },
            Ok(Some(Message::Get(req))) => Incoming::Get(req),
            Ok(Some(Message::Stat { path })) => Incoming::Stat(path),
            Ok(Some(other)) => Incoming::Unexpected(other.name()),
            Err(e) => Incoming::Broken(e),
        }
    }

    fn send(&mut self, msg: &Message<'_>) -> Result<(), ServerError> {
        write_message(&mut { self.s.stream }, msg, &mut self.scratch).map_err(ServerError::peer)
    }

    fn send_error(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), ServerError> {
        self.send(&Message::Error {
            code,
            message: message.into(),
        })
    }

    /// Reads `Hello` and answers it. `Ok(false)`: the session ended politely (client left, or
    /// its version is too old and it was told so).
    fn handshake(&mut self, deadline: Instant) -> Result<bool, ServerError> {
        let peer = self.s.peer;
        match self.next(Some(deadline)) {
            Incoming::Hello { version, agent } => {
                if version < MIN_PROTOCOL_VERSION {
                    warn!("{peer} ('{agent}') speaks protocol version {version}, too old");
                    self.send_error(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol version {version} is not supported; this server speaks \
                             versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                        ),
                    )?;
                    linger_close(self.s.stream);
                    return Ok(false);
                }
                let agreed = version.min(PROTOCOL_VERSION);
                info!("{peer} speaks the native protocol, version {agreed} ('{agent}')");
                self.send(&Message::Welcome {
                    version: agreed,
                    capabilities: Capabilities(CAPABILITIES),
                    server: concat!("sfts-server/", env!("CARGO_PKG_VERSION")).into(),
                })?;
                Ok(true)
            }
            Incoming::Closed => Ok(false),
            Incoming::Get(_) => self.reject("expected Hello, got Get".into()),
            Incoming::Stat(_) => self.reject("expected Hello, got Stat".into()),
            Incoming::Unexpected(name) => self.reject(format!("expected Hello, got {name}")),
            // The handshake deadline, not the idle timeout: say so in the log.
            Incoming::Broken(e) if e.is_timeout() => Err(e.into()),
            Incoming::Broken(e) => self.broken(e),
        }
    }

    fn requests(&mut self) -> Result<(), ServerError> {
        loop {
            match self.next(None) {
                Incoming::Get(req) => self.get(req)?,
                // Well-formed, so the stream is still in step: refuse it and carry on.
                Incoming::Stat(path) => self.refuse(
                    &path,
                    Refusal::new(
                        ErrorCode::Unsupported,
                        "Stat is not supported by this server",
                    ),
                )?,
                Incoming::Closed if self.s.state.stopping() => return self.goodbye(),
                Incoming::Closed => return Ok(()),
                Incoming::Hello { .. } => return self.reject("unexpected second Hello".into()),
                Incoming::Unexpected(name) => {
                    return self.reject(format!("unexpected {name} message; expected Get"))
                }
                Incoming::Broken(e) => return self.broken(e),
            }
        }
    }

    /// Tells the client the server is going away (best effort) and ends the session.
    fn goodbye<T>(&mut self) -> Result<T, ServerError> {
        let _ = self.send_error(ErrorCode::ShuttingDown, "server is shutting down");
        Err(ServerError::ShuttingDown)
    }

    /// Answers a request that makes no sense here with `BadRequest` and closes.
    fn reject<T>(&mut self, why: String) -> Result<T, ServerError> {
        let _ = self.send_error(ErrorCode::BadRequest, why.clone());
        linger_close(self.s.stream);
        Err(ServerError::BadRequest(why))
    }

    /// Handles bytes that did not decode, or a stream that failed.
    fn broken<T>(&mut self, e: ProtocolError) -> Result<T, ServerError> {
        if self.s.state.stopping() {
            return self.goodbye();
        }
        match e {
            _ if e.is_timeout() => Err(ServerError::Idle(self.s.state.timeout.as_secs())),
            // The stream itself is gone or cut mid-frame: nobody to answer.
            ProtocolError::Io(_) | ProtocolError::ConnectionClosed => Err(e.into()),
            _ => {
                let _ = self.send_error(ErrorCode::BadRequest, e.to_string());
                linger_close(self.s.stream);
                Err(e.into())
            }
        }
    }

    /// Serves one `Get`. `Ok` also for refusals (the session goes on); `Err` closes.
    fn get(&mut self, req: GetRequest) -> Result<(), ServerError> {
        let peer = self.s.peer;
        info!(
            "{peer} requests '{}' (offset {}, length {}, chunk {}, digests {:?})",
            req.path,
            req.offset,
            if req.length == TO_END {
                "to end".to_string()
            } else {
                req.length.to_string()
            },
            req.chunk_size,
            req.digests.iter().map(|a| a.name()).collect::<Vec<_>>()
        );
        if req.offset != 0 {
            return self.refuse(
                &req.path,
                Refusal::new(
                    ErrorCode::Unsupported,
                    "resume from an offset is not supported by this server",
                ),
            );
        }
        let resolved = match paths::resolve(&self.s.state.root, &req.path) {
            Ok(r) => r,
            Err(refusal) => return self.refuse(&req.path, refusal),
        };
        let mut file = match File::open(&resolved.path) {
            Ok(f) => f,
            Err(e) => return self.refuse(&req.path, paths::access_error(&req.path, &e)),
        };
        // The open file's own metadata: the file the bytes will come from.
        let meta = file.metadata().unwrap_or(resolved.metadata);
        let size = meta.len();
        if req.length < size {
            // Ranges come with the RESUME capability, which this server does not announce.
            return self.refuse(
                &req.path,
                Refusal::new(
                    ErrorCode::Unsupported,
                    "ranges are not supported by this server; ask for the whole file",
                ),
            );
        }
        let chunk = clamp_chunk_size(req.chunk_size);
        self.send(&Message::FileHeader(FileHeader {
            size,
            offset: 0,
            length: size,
            mtime_ns: mtime_ns(&meta),
            chunk_size: chunk,
        }))?;

        let guard = self.s.guard;
        guard.begin_file(&req.path, size);
        let mut hasher = sfts_protocol::MultiHasher::new(req.digests);
        let transfer = Transfer {
            name: &req.path,
            peer,
            size,
            chunk: chunk as usize,
            framing: Framing::Native,
            counter: guard.bytes_sent(),
            stop: &self.s.state.stop,
        };
        let result = transfer.run(
            &mut file,
            &mut { self.s.stream },
            &mut self.data,
            &mut hasher,
        );
        guard.end_file();
        match result {
            Ok(()) => self.send(&Message::Trailer {
                digests: hasher.finish(),
            }),
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
            Err(e) => Err(e),
        }
    }

    /// Sends a refusal for one request; the session goes on.
    fn refuse(&mut self, path: &str, refusal: Refusal) -> Result<(), ServerError> {
        warn!("refused '{path}' for {}: {refusal}", self.s.peer);
        self.send_error(refusal.code, refusal.message)
    }
}

/// Modification time in nanoseconds since the Unix epoch (negative before 1970; 0 when the
/// platform cannot tell).
fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    let Ok(t) = meta.modified() else { return 0 };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}
