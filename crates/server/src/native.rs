//! A native SFTS session: `Hello` / `Welcome`, then any number of requests on the same
//! connection until the client closes it: `Get` ([`get`]), `Stat` ([`stat`]), `List`
//! ([`list`]), the upload messages and `Mkdir` ([`put`]), and `SetPriority`.
//!
//! A refused request (not found, outside the root, ...) is answered with an `Error` frame and
//! the session goes on; anything that is not a valid request at this point (a second `Hello`,
//! `Data`, garbage, an oversized frame) is answered with `Error{BadRequest}` and the connection
//! is closed, since the stream can no longer be trusted to be in step.
//!
//! **Replies are queued** and written out when the server is about to wait for the client
//! (no complete frame left in the read buffer), when the queue passes [`OUT_LIMIT`], or before
//! a reply that streams (a file, keep-alives). Pipelined requests (a tree of small uploads:
//! `PutBegin`, `PutChunk`, `PutCommit` for several files) are thus answered with a few writes
//! instead of one per frame. Just before the queue goes out, the uploads that stored chunks
//! are saved to the state database in one transaction: a chunk is acknowledged only once it
//! is recorded, so it survives a `kill -9` of the server.
//!
//! The session runs over a [`ServerStream`] (plain TCP or TLS, see [`crate::tls`]) whose
//! [`crate::link::Link`] enforces the opening deadline, the idle timeout and the minimum
//! rate. On a server that requires tokens ([`auth`]) nothing but `Auth` (and `SetPriority`) is
//! accepted before `AuthOk`, and every request is checked against the user's permissions
//! before the file system is touched. Requests are paced by the per-address rate limit.

mod auth;
mod get;
mod list;
mod put;
mod stat;

use crate::connection::Session;
use crate::error::ServerError;
use crate::limits::{AddrKey, Verdict};
use crate::paths::{self, Refusal};
use crate::tls::ServerStream;
use crate::upload::Upload;
use sfts_protocol::io::read_message;
use sfts_protocol::{
    Algorithm, Capabilities, Digest, DigestSet, ErrorCode, GetRequest, Message, Priority,
    ProtocolError, PutBegin, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::collections::BTreeMap;
use std::io::{self, BufReader, Write};
use std::time::Instant;
use tracing::{info, warn};

/// What the server offers: downloads, ranges of files (resume), several requests per
/// connection, `Stat`, uploads (announced even when read-only, so clients can tell "not
/// allowed here" from "not supported"), listings, priorities, BLAKE3 digests and streamed
/// uploads (digests at the commit, BLAKE3 chunks). A request
/// needing a capability the client did not announce gets `Error{Unsupported}` and the session
/// goes on.
const CAPABILITIES: u64 = Capabilities::GET
    | Capabilities::RESUME
    | Capabilities::MULTI_REQUEST
    | Capabilities::STAT
    | Capabilities::UPLOAD
    | Capabilities::LIST
    | Capabilities::PRIORITY
    | Capabilities::BLAKE3
    | Capabilities::STREAM_PUT
    | Capabilities::BLAKE3_TREE
    | Capabilities::XXH128;

/// Queued replies are written out once they reach this size.
const OUT_LIMIT: usize = 64 * 1024;

/// Bytes read from the socket at once; small frames pipelined by a client are taken in one
/// read and answered together (a client's batch of 32 `Get`s is about 2 KiB; big payloads
/// bypass the buffer). Every idle session pays for it in resident memory: `BufReader` zeroes
/// the whole buffer on its first read through `Link` (which cannot offer `read_buf` on stable
/// Rust): 1,000 idle sessions take 91 MiB with 64 KiB, 60 MiB with 32 KiB, 44 MiB with 16 KiB,
/// where 16 KiB made `put -r` of small files (several `PutChunk`s per read) about 10 % slower.
const READ_BUFFER: usize = 32 * 1024;

/// What arrived from the client, with nothing borrowed from the read buffer (a chunk's bytes
/// stay there: `start` and `len` say where).
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
    /// A `List`.
    List { path: String, recursive: bool },
    /// A `SetPriority`.
    Priority(Priority),
    /// A `PutBegin`.
    PutBegin(PutBegin),
    /// A `PutChunk` whose bytes are `rbuf[start..start + len]`.
    PutChunk {
        id: u32,
        index: u64,
        digest: [u8; 32],
        start: usize,
        len: usize,
    },
    /// A `PutCommit`.
    PutCommit(u32),
    /// A `PutCommitDigests`.
    PutCommitDigests { id: u32, digests: Vec<Digest> },
    /// A `PutAbort`.
    PutAbort(u32),
    /// A `Mkdir`.
    Mkdir(String),
    /// An `Auth` with its token (never logged).
    Auth(String),
    /// A well-formed frame that makes no sense here.
    Unexpected(&'static str),
    /// The bytes were not a valid frame, or the stream failed.
    Broken(ProtocolError),
}

/// The buffers and settings of one session, reused for every request.
struct Native<'a> {
    s: &'a Session<'a>,
    /// What both sides announced (set by the handshake).
    common: Capabilities,
    /// The connection, read through a buffer (written through `get_mut`).
    io: BufReader<ServerStream>,
    /// Who presented a valid token (servers with `--auth-file`).
    user: Option<&'a crate::auth::User>,
    /// Incoming frames.
    rbuf: Vec<u8>,
    /// Replies waiting to be written.
    out: Vec<u8>,
    /// Outgoing data: one chunk plus frame-header headroom; also the commit's read buffer.
    data: Vec<u8>,
    /// The session's priority (`SetPriority`), recorded with each transfer.
    priority: Priority,
    /// Open uploads by the client's id.
    uploads: BTreeMap<u32, Upload<'a>>,
    /// `Get`s this connection may still make without a rate-limit token: one per entry its
    /// listings returned (at most one listing's worth), so fetching a listed tree is not
    /// throttled while a flood of unlisted requests still is.
    listed: u64,
    /// `PutBegin`s this connection may still make without a rate-limit token: one per upload
    /// it published (at most [`put::MAX_OPEN_UPLOADS`] banked), so sending a tree of small
    /// files (`put -r`) is not throttled while `PutBegin`s that publish nothing still are.
    published: u64,
}

/// Runs a native session whose magic has been read; the stream's opening deadline bounds
/// the `Hello` (and `Auth`).
pub fn serve(s: &Session<'_>, stream: ServerStream) -> Result<(), ServerError> {
    let mut n = Native {
        s,
        common: Capabilities(Capabilities::GET),
        io: BufReader::with_capacity(READ_BUFFER, stream),
        user: None,
        rbuf: Vec::new(),
        out: Vec::new(),
        data: Vec::new(),
        priority: Priority::Normal,
        uploads: BTreeMap::new(),
        listed: 0,
        published: 0,
    };
    if !n.handshake()? {
        return Ok(());
    }
    if s.state.access.is_none() {
        n.io.get_mut().link_mut().end_opening();
    }
    let result = n.requests();
    n.end(&result);
    result
}

impl<'a> Native<'a> {
    fn next(&mut self) -> Incoming {
        let result = read_message(&mut self.io, &mut self.rbuf);
        let mut incoming = match result {
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
            Ok(Some(Message::List { path, recursive })) => Incoming::List { path, recursive },
            Ok(Some(Message::SetPriority(p))) => Incoming::Priority(p),
            Ok(Some(Message::PutBegin(b))) => Incoming::PutBegin(b),
            Ok(Some(Message::PutChunk(c))) => Incoming::PutChunk {
                id: c.id,
                index: c.index,
                digest: c.digest,
                // The bytes are a slice of `rbuf`: remember where (the address for now, made
                // relative below, once the borrow has ended), not a copy.
                start: c.data.as_ptr() as usize,
                len: c.data.len(),
            },
            Ok(Some(Message::PutCommit { id })) => Incoming::PutCommit(id),
            Ok(Some(Message::PutCommitDigests { id, digests })) => {
                Incoming::PutCommitDigests { id, digests }
            }
            Ok(Some(Message::PutAbort { id })) => Incoming::PutAbort(id),
            Ok(Some(Message::Mkdir { path })) => Incoming::Mkdir(path),
            Ok(Some(Message::Auth { token })) => Incoming::Auth(token),
            Ok(Some(other)) => Incoming::Unexpected(other.name()),
            Err(e) => Incoming::Broken(e),
        };
        if let Incoming::PutChunk { start, .. } = &mut incoming {
            *start -= self.rbuf.as_ptr() as usize;
        }
        incoming
    }

    /// Queues a reply.
    fn send(&mut self, msg: &Message<'_>) -> Result<(), ServerError> {
        msg.encode(&mut self.out);
        if self.out.len() >= OUT_LIMIT {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues an `Error` reply.
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

    /// Saves the uploads that stored chunks, then writes the queued replies: nothing
    /// acknowledged is ever missing from the database.
    fn flush(&mut self) -> Result<(), ServerError> {
        drain(self.s, &mut self.uploads, &mut self.out, self.io.get_mut())
            .map_err(ServerError::peer)
    }

    /// True when the read buffer holds a whole frame: handling it needs no wait for the
    /// client, so the replies can stay queued a little longer.
    fn frame_waiting(&self) -> bool {
        let b = self.io.buffer();
        b.len() >= 4
            && (b.len() - 4) as u64 >= u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads `Hello` and answers it. `Ok(false)`: the session ended politely (client left, or
    /// its version is too old and it was told so).
    fn handshake(&mut self) -> Result<bool, ServerError> {
        let peer = self.s.peer;
        match self.next() {
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
                    self.flush()?;
                    self.io.get_mut().linger_close();
                    return Ok(false);
                }
                if let Err(message) = self.pace() {
                    self.send_error(ErrorCode::Busy, message)?;
                    self.flush()?;
                    self.io.get_mut().linger_close();
                    return Ok(false);
                }
                let agreed = version.min(PROTOCOL_VERSION);
                let tls = if self.io.get_ref().is_tls() {
                    " over TLS"
                } else {
                    ""
                };
                info!("{peer} speaks the native protocol{tls}, version {agreed} ('{agent}')");
                self.common = capabilities.common(Capabilities(CAPABILITIES));
                if self.s.state.access.is_some() {
                    // Not a feature to intersect but a requirement: announced whatever the
                    // client announced (a client that does not know the bit ignores it, and
                    // its requests are refused with `auth-required`).
                    self.common = Capabilities(self.common.0 | Capabilities::AUTH);
                }
                self.send(&Message::Welcome {
                    version: agreed,
                    capabilities: self.common,
                    server: concat!("sfts-server/", env!("CARGO_PKG_VERSION")).into(),
                })?;
                self.flush()?;
                Ok(true)
            }
            Incoming::Closed => Ok(false),
            // The handshake deadline, not the idle timeout: say so in the log.
            Incoming::Broken(e) if e.is_timeout() => Err(e.into()),
            Incoming::Broken(e) => self.broken(e),
            other => self.reject(format!("expected Hello, got {}", other.name())),
        }
    }

    fn requests(&mut self) -> Result<(), ServerError> {
        loop {
            if !self.frame_waiting() {
                self.flush()?;
                self.io.get_mut().link_mut().await_request();
            }
            let mut incoming = self.next();
            if incoming.is_paced() && !self.covered(&incoming) {
                if let Err(message) = self.pace() {
                    self.refuse_paced(&incoming, message)?;
                    continue;
                }
            }
            if self.s.state.access.is_some() && self.user.is_none() {
                match self.gate(incoming)? {
                    auth::Gate::Pass(pass) => incoming = pass,
                    auth::Gate::Handled => continue,
                    auth::Gate::End => return Ok(()),
                }
            }
            match incoming {
                Incoming::Get(req) => self.get(req)?,
                Incoming::Stat(path) => self.stat(path)?,
                Incoming::List { path, recursive } => self.list(path, recursive)?,
                Incoming::Priority(p) => self.set_priority(p),
                Incoming::PutBegin(req) => self.put_begin(req)?,
                Incoming::PutChunk {
                    id,
                    index,
                    digest,
                    start,
                    len,
                } => self.put_chunk(id, index, &digest, start..start + len)?,
                Incoming::PutCommit(id) => self.put_commit(id, None)?,
                Incoming::PutCommitDigests { id, digests } => self.put_commit(id, Some(digests))?,
                Incoming::PutAbort(id) => self.put_abort(id)?,
                Incoming::Mkdir(path) => self.mkdir(path)?,
                Incoming::Auth(token) => self.auth_again(token)?,
                Incoming::Closed if self.s.state.stopping() => return self.goodbye(),
                Incoming::Closed => return Ok(()),
                Incoming::Hello { .. } => return self.reject("unexpected second Hello".into()),
                Incoming::Unexpected(name) => {
                    return self.reject(format!("unexpected {name} message; expected a request"))
                }
                Incoming::Broken(e) => return self.broken(e),
            }
        }
    }

    /// `SetPriority`: applies to every later request; no reply.
    fn set_priority(&mut self, p: Priority) {
        if p != self.priority {
            info!("{} sets its priority to {p}", self.s.peer);
        }
        self.priority = p;
    }

    /// Takes the rate-limit token of one request, waiting for it if need be (the queued
    /// replies go out first). `Err`: refuse the request as busy, with this message.
    fn pace(&mut self) -> Result<(), String> {
        let state = self.s.state;
        match state
            .limiter
            .take(AddrKey::of(self.s.peer.ip()), Instant::now())
        {
            Verdict::Go => Ok(()),
            Verdict::Wait(wait) => {
                let _ = self.flush();
                state.pause(wait);
                Ok(())
            }
            Verdict::Refuse => Err(state.rate_refusal(self.s.peer)),
        }
    }

    /// True for a request that takes no rate-limit token, paid for by earlier work on this
    /// connection (which then covers one fewer): a `Get` by a listing (the `List` took a
    /// token), a `PutBegin` by an upload published.
    fn covered(&mut self, incoming: &Incoming) -> bool {
        let credit = match incoming {
            Incoming::Get(_) => &mut self.listed,
            Incoming::PutBegin(_) => &mut self.published,
            _ => return false,
        };
        if *credit == 0 {
            return false;
        }
        *credit -= 1;
        true
    }

    /// Refuses a request over the rate limit: `busy` as its reply (a `SetPriority`, which has
    /// none, is ignored).
    fn refuse_paced(&mut self, incoming: &Incoming, message: String) -> Result<(), ServerError> {
        match incoming {
            Incoming::Priority(_) => Ok(()),
            _ => self.send_error(ErrorCode::Busy, message),
        }
    }

    /// Tells the client the server is going away (best effort) and ends the session.
    fn goodbye<T>(&mut self) -> Result<T, ServerError> {
        let _ = self.send_error(ErrorCode::ShuttingDown, "server is shutting down");
        let _ = self.flush();
        Err(ServerError::ShuttingDown)
    }

    /// Answers a request that makes no sense here with `BadRequest` and closes.
    fn reject<T>(&mut self, why: String) -> Result<T, ServerError> {
        let _ = self.send_error(ErrorCode::BadRequest, why.clone());
        let _ = self.flush();
        self.io.get_mut().linger_close();
        Err(ServerError::BadRequest(why))
    }

    /// Handles bytes that did not decode, or a stream that failed.
    fn broken<T>(&mut self, e: ProtocolError) -> Result<T, ServerError> {
        if self.s.state.stopping() {
            return self.goodbye();
        }
        match e {
            ProtocolError::Io(io) if crate::link::stall_of(&io).is_some() => {
                Err(ServerError::Peer(io))
            }
            _ if e.is_timeout() => Err(ServerError::Idle(self.s.state.timeout.as_secs())),
            // The stream itself is gone or cut mid-frame: nobody to answer.
            ProtocolError::Io(_) | ProtocolError::ConnectionClosed => Err(e.into()),
            _ => {
                let _ = self.send_error(ErrorCode::BadRequest, e.to_string());
                let _ = self.flush();
                self.io.get_mut().linger_close();
                Err(e.into())
            }
        }
    }

    /// Refuses a request that needs capability `cap` (called `name`) if this session did not
    /// negotiate it.
    fn needs(&self, cap: u64, what: &str, name: &str) -> Result<(), Refusal> {
        if self.common.has(cap) {
            return Ok(());
        }
        Err(Refusal::new(
            ErrorCode::Unsupported,
            format!("{what} needs the {name} capability, which this session did not negotiate"),
        ))
    }

    /// The digest algorithms this session's client can decode: MD5 and SHA-256, and BLAKE3
    /// and XXH128 once both sides announced them (an older client would take algorithms 3 and
    /// 4 for garbage).
    fn shown_digests(&self) -> DigestSet {
        let mut set = DigestSet::EMPTY;
        for a in Algorithm::ALL {
            if a.capability().is_none_or(|cap| self.common.has(cap)) {
                set.insert(a);
            }
        }
        set
    }

    /// Sends a refusal for one request; the session goes on.
    fn refuse(&mut self, path: &str, refusal: Refusal) -> Result<(), ServerError> {
        warn!(
            "refused '{}' for {}: {refusal}",
            paths::shown(path),
            self.who()
        );
        self.send_error(refusal.code, refusal.message)
    }

    /// The session is over: uploads still open are kept for resuming, and whatever replies
    /// are queued go out (the client may still be reading).
    fn end(&mut self, result: &Result<(), ServerError>) {
        let why = match result {
            Ok(()) => "the client closed the connection".to_string(),
            Err(e) => e.to_string(),
        };
        self.leave_uploads(&why);
        let _ = self.flush();
    }
}

/// [`Native::flush`] on the parts of a session it needs, so that a keep-alive can flush the
/// queue while the session's buffer is lent to a long read.
fn drain(
    s: &Session<'_>,
    open: &mut BTreeMap<u32, Upload<'_>>,
    out: &mut Vec<u8>,
    w: &mut ServerStream,
) -> io::Result<()> {
    put::save_open(&s.state.uploads, open);
    if out.is_empty() {
        return Ok(());
    }
    let written = w.write_all(out);
    out.clear();
    written
}

impl Incoming {
    /// The message's name, for "expected X, got Y".
    fn name(&self) -> &'static str {
        match self {
            Incoming::Closed => "the end of the stream",
            Incoming::Hello { .. } => "Hello",
            Incoming::Get(_) => "Get",
            Incoming::Stat(_) => "Stat",
            Incoming::List { .. } => "List",
            Incoming::Priority(_) => "SetPriority",
            Incoming::PutBegin(_) => "PutBegin",
            Incoming::PutChunk { .. } => "PutChunk",
            Incoming::PutCommit(_) => "PutCommit",
            Incoming::PutCommitDigests { .. } => "PutCommitDigests",
            Incoming::PutAbort(_) => "PutAbort",
            Incoming::Mkdir(_) => "Mkdir",
            Incoming::Auth(_) => "Auth",
            Incoming::Unexpected(name) => name,
            Incoming::Broken(_) => "a broken frame",
        }
    }

    /// True for the requests that take a rate-limit token: those that start something. The
    /// parts of an upload belong to its `PutBegin`.
    fn is_paced(&self) -> bool {
        matches!(
            self,
            Incoming::Get(_)
                | Incoming::Stat(_)
                | Incoming::List { .. }
                | Incoming::Priority(_)
                | Incoming::PutBegin(_)
                | Incoming::Mkdir(_)
                | Incoming::Auth(_)
        )
    }
}
