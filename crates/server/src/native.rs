//! A native SFTS session: `Hello` / `Welcome`, then any number of `Get` and `Stat` requests on
//! the same connection until the client closes it. The requests themselves are served in
//! [`get`] and [`stat`].
//!
//! A refused request (not found, outside the root, ...) is answered with an `Error` frame and
//! the session goes on; anything that is not a valid request at this point (a second `Hello`,
//! `Data`, garbage, an oversized frame) is answered with `Error{BadRequest}` and the connection
//! is closed, since the stream can no longer be trusted to be in step.

mod get;
mod stat;

use crate::connection::{linger_close, DeadlineReader, Session};
use crate::error::ServerError;
use crate::paths::Refusal;
use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::{
    Capabilities, ErrorCode, GetRequest, Message, ProtocolError, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use std::time::Instant;
use tracing::{info, warn};

/// What the server offers: downloads, ranges of files (resume), several requests per
/// connection, `Stat`. A request needing a capability the client did not announce gets
/// `Error{Unsupported}` and the session goes on.
const CAPABILITIES: u64 =
    Capabilities::GET | Capabilities::RESUME | Capabilities::MULTI_REQUEST | Capabilities::STAT;

/// What arrived from the client, with nothing borrowed from the read buffer.
enum Incoming {
    /// The client closed the connection between frames.
    Closed,
    /// A `Hello` (only valid as the first frame).
    Hello {
        version: u16,
        capabilities: Capabilities,
        agent: String,
    },
    /// A `Get`.
    Get(GetRequest),
    /// A `Stat`.
    Stat(String),
    /// A well-formed frame that makes no sense here.
    Unexpected(&'static str),
    /// The bytes were not a valid frame, or the stream failed.
    Broken(ProtocolError),
}

/// The buffers of one session, reused for every request.
struct Native<'a> {
    s: &'a Session<'a>,
    /// What both sides announced (set by the handshake).
    common: Capabilities,
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
        common: Capabilities(Capabilities::GET),
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
            Ok(Some(Message::Hello {
                version,
                capabilities,
                agent,
            })) => Incoming::Hello {
                version,
                capabilities,
                agent,
            },
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
            Incoming::Hello {
                version,
                capabilities,
                agent,
            } => {
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
                self.common = capabilities.common(Capabilities(CAPABILITIES));
                self.send(&Message::Welcome {
                    version: agreed,
                    capabilities: self.common,
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
                Incoming::Stat(path) => self.stat(path)?,
                Incoming::Closed if self.s.state.stopping() => return self.goodbye(),
                Incoming::Closed => return Ok(()),
                Incoming::Hello { .. } => return self.reject("unexpected second Hello".into()),
                Incoming::Unexpected(name) => {
                    return self.reject(format!("unexpected {name} message; expected Get or Stat"))
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

    /// Sends a refusal for one request; the session goes on.
    fn refuse(&mut self, path: &str, refusal: Refusal) -> Result<(), ServerError> {
        warn!("refused '{path}' for {}: {refusal}", self.s.peer);
        self.send_error(refusal.code, refusal.message)
    }
}
