//! One client connection, from its first bytes to its close: sniff the protocol, set up TLS,
//! dispatch to the native or the original (legacy) session, log how it ended.
//!
//! What a port accepts ([`Port`]):
//!
//! * a port **with TLS** (the main port when `--tls-cert` is given) serves native clients over
//!   TLS only. The first byte tells: `0x16` opens a TLS handshake (bounded by the opening
//!   deadline), after which the magic and `Hello` travel inside TLS. A native client that
//!   starts in plain text gets `Error{TlsRequired}` in plain text and is closed, never served;
//!   an original-protocol client gets the original `ERROR` sentence saying TLS is required.
//! * a **plain** port (the main port without TLS, or `--plain-port`) serves native clients
//!   (magic `SFTS`) and, unless tokens are required, the original protocol (anything else is
//!   the big-endian length of its requested name).

use crate::auth::AccessList;
use crate::error::ServerError;
use crate::limits::{AddrKey, RateLimiter};
use crate::link::{Link, Pace};
use crate::registry::{ConnectionGuard, Registry};
use crate::store::Store;
use crate::tls::{ServerStream, TlsConfig, TLS_HANDSHAKE_BYTE};
use crate::uploads::Uploads;
use crate::{legacy, native};
use sfts_protocol::{ErrorCode, Message};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// The refusal of a plain native client on a TLS port.
pub const TLS_REQUIRED: &str = "this port requires TLS: connect with sfts-client --tls";

/// The refusal of an original-protocol client on a TLS port.
pub const LEGACY_TLS_REQUIRED: &str =
    "this server requires TLS, which the original protocol cannot use";

/// The refusal of an original-protocol client on a server that requires tokens.
pub const LEGACY_AUTH_REQUIRED: &str =
    "this server requires authentication, which the original protocol cannot provide";

/// State shared by the accept loops and every worker.
pub struct ServerState {
    /// The served root, canonical.
    pub root: PathBuf,
    /// The root's directory, open, for opening files without a walk (`None` where it could
    /// not be opened: files are then found by the careful walk alone).
    pub root_dir: Option<crate::beneath::RootDir>,
    /// How long a client may stay idle between requests (`--timeout`); also the window of
    /// the minimum rate.
    pub timeout: Duration,
    /// How long a client's opening may take.
    pub opening: Duration,
    /// The minimum-rate rule.
    pub pace: Pace,
    /// Set once when shutdown begins; workers check it between chunks.
    pub stop: AtomicBool,
    /// Active connections.
    pub registry: std::sync::Arc<Registry>,
    /// The digest cache and transfer history.
    pub store: Store,
    /// Uploads: policy, staging directory, stored sessions, who uploads what right now.
    pub uploads: std::sync::Arc<Uploads>,
    /// Most entries one listing returns.
    pub max_list_entries: u64,
    /// Tokens and permissions; `None`: no authentication.
    pub access: Option<AccessList>,
    /// Requests per second per address.
    pub limiter: RateLimiter,
}

impl ServerState {
    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `wait` (a rate-limit wait), or less if the server begins shutting down.
    pub fn pause(&self, wait: Duration) {
        debug!("rate limit: waiting {} ms", wait.as_millis());
        let until = Instant::now() + wait;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Logs and words the refusal of a request from `peer` over the rate limit.
    pub fn rate_refusal(&self, peer: SocketAddr) -> String {
        let rate = self.limiter.rate();
        warn!(
            "refused a request from {peer}: address {} is over the rate limit of {rate} \
             requests per second",
            AddrKey::of(peer.ip())
        );
        format!("too many requests from your address (limit {rate} per second); slow down and try again")
    }
}

/// What one listening port accepts.
#[derive(Debug)]
pub struct Port {
    /// TLS for native clients; `None` for a plain port.
    pub tls: Option<TlsConfig>,
    /// Tokens are required (the original protocol is refused).
    pub auth: bool,
}

/// The plain-text native refusal this port gives every native client, if any.
pub fn native_refusal(port: &Port) -> Option<Message<'static>> {
    port.tls.as_ref().map(|_| Message::Error {
        code: ErrorCode::TlsRequired,
        message: TLS_REQUIRED.into(),
    })
}

/// The original-protocol refusal this port gives every such client, if any.
pub fn legacy_refusal(port: &Port) -> Option<&'static str> {
    if port.tls.is_some() {
        Some(LEGACY_TLS_REQUIRED)
    } else if port.auth {
        Some(LEGACY_AUTH_REQUIRED)
    } else {
        None
    }
}

/// What a session needs to know about its connection (the stream itself is the session's).
pub struct Session<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The same as text, formatted once: a tree of small files names it in a log line and
    /// a history row per file.
    pub peer_text: String,
    /// The connection's registry entry.
    pub guard: &'a ConnectionGuard,
    /// Server-wide state.
    pub state: &'a ServerState,
}

/// Serves one connection to its end; runs on the connection's own `client-<n>` thread.
pub fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    guard: ConnectionGuard,
    state: &ServerState,
    port: &Port,
) {
    info!("connection opened from {peer}");
    let started = Instant::now();
    let session = Session {
        peer,
        peer_text: peer.to_string(),
        guard: &guard,
        state,
    };
    let link = Link::new(stream, state.timeout, state.opening, state.pace);
    let result = serve(&session, link, port);
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => info!("connection from {peer} closed after {secs:.1} s"),
        Err(ServerError::ShuttingDown) => {
            info!("connection from {peer} closed by the shutdown after {secs:.1} s")
        }
        Err(
            e @ (ServerError::Protocol(_)
            | ServerError::Peer(_)
            | ServerError::BadRequest(_)
            | ServerError::Idle(_)),
        ) => {
            warn!("connection from {peer} ended after {secs:.1} s: {e}")
        }
        Err(e) => error!("connection from {peer} failed after {secs:.1} s: {e}"),
    }
    // The registry holds a clone of the socket, so the connection really closes when `guard`
    // drops, right after the session's stream: the slot frees exactly when the client sees
    // the close.
    drop(guard);
}

fn serve(s: &Session<'_>, mut link: Link, port: &Port) -> Result<(), ServerError> {
    // Every frame is written whole with one `write_all`, so Nagle's algorithm can only add
    // delay (a small Trailer waiting for the ACK of the last Data frame).
    let _ = link.tcp().set_nodelay(true);
    let first = match link.peek_first() {
        Ok(Some(b)) => b,
        Ok(None) => return closed_early(s),
        Err(e) => return Err(ServerError::peer(e)),
    };
    if let Some(tls) = &port.tls {
        if first == TLS_HANDSHAKE_BYTE {
            return serve_tls(s, tls, link);
        }
    }
    let mut magic = [0u8; 4];
    match link.read_exact(&mut magic) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return closed_early(s),
        Err(e) => return Err(ServerError::peer(e)),
    }
    let native = sfts_protocol::is_native(&magic);
    if native {
        if let Some(refusal) = native_refusal(port) {
            warn!(
                "refused {}: a native client in plain text on the TLS port",
                s.peer
            );
            return refuse_plain(link, &refusal);
        }
        return native::serve(s, ServerStream::Plain(link));
    }
    if first == TLS_HANDSHAKE_BYTE {
        warn!(
            "{} opened a TLS handshake, but this port is plain TCP (a client with --tls \
             needs a server started with --tls-cert and --tls-key); closed",
            s.peer
        );
        return Ok(());
    }
    if let Some(sentence) = legacy_refusal(port) {
        warn!(
            "refused {}: a client of the original protocol ({})",
            s.peer,
            if port.tls.is_some() {
                "it cannot use TLS"
            } else {
                "it cannot present a token"
            }
        );
        let mut out = Vec::new();
        sfts_protocol::legacy::encode_error(sentence, &mut out);
        return refuse_plain_bytes(link, &out);
    }
    legacy::serve(s, link, magic)
}

/// The TLS handshake, then the magic inside TLS, then the native session.
fn serve_tls(s: &Session<'_>, tls: &TlsConfig, link: Link) -> Result<(), ServerError> {
    let mut stream = tls.accept(link).map_err(|e| {
        if s.state.stopping() {
            return ServerError::ShuttingDown;
        }
        match crate::link::stall_of(&e) {
            Some(_) => ServerError::peer(e),
            None => ServerError::BadRequest(format!("TLS handshake failed: {e}")),
        }
    })?;
    debug!("TLS handshake with {} complete", s.peer);
    let mut magic = [0u8; 4];
    match stream.read_exact(&mut magic) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return closed_early(s),
        Err(e) => return Err(ServerError::peer(e)),
    }
    if !sfts_protocol::is_native(&magic) {
        let why = "expected the SFTS magic after the TLS handshake".to_string();
        let mut out = Vec::new();
        Message::Error {
            code: ErrorCode::BadRequest,
            message: why.clone(),
        }
        .encode(&mut out);
        let _ = stream.write_all(&out);
        stream.linger_close();
        return Err(ServerError::BadRequest(why));
    }
    native::serve(s, stream)
}

/// Port probes and clients that changed their mind: nothing to answer.
fn closed_early(s: &Session<'_>) -> Result<(), ServerError> {
    if s.state.stopping() {
        return Err(ServerError::ShuttingDown);
    }
    debug!("{} closed the connection before sending a request", s.peer);
    Ok(())
}

/// Sends a native refusal in plain text and closes.
fn refuse_plain(link: Link, msg: &Message<'_>) -> Result<(), ServerError> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    refuse_plain_bytes(link, &out)
}

fn refuse_plain_bytes(mut link: Link, out: &[u8]) -> Result<(), ServerError> {
    if let Err(e) = link.write_all(out) {
        return Err(ServerError::peer(e));
    }
    link.linger_close();
    Ok(())
}
