//! One client connection, from its first bytes to its close: sniff the protocol, dispatch to
//! the native or the original (legacy) session, log how it ended.
//!
//! Native clients open with [`sfts_protocol::MAGIC`]; anything else is taken as the original
//! protocol, whose first four bytes are the length of the requested name.

use crate::error::ServerError;
use crate::registry::{ConnectionGuard, Registry};
use crate::store::Store;
use crate::uploads::Uploads;
use crate::{legacy, native};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// How long a new client has to send its opening bytes (the magic and `Hello`, or the whole
/// original request) before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by the accept loop and every worker.
pub struct ServerState {
    /// The served root, canonical.
    pub root: PathBuf,
    /// Read/write timeout of client sockets.
    pub timeout: Duration,
    /// Set once when shutdown begins; workers check it between chunks.
    pub stop: AtomicBool,
    /// Active connections.
    pub registry: Arc<Registry>,
    /// The digest cache and transfer history.
    pub store: Store,
    /// Uploads: policy, staging directory, stored sessions, who uploads what right now.
    pub uploads: Arc<Uploads>,
    /// Most entries one listing returns.
    pub max_list_entries: u64,
}

impl ServerState {
    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What a session needs to know about its connection.
pub struct Session<'a> {
    /// The client's socket. `&TcpStream` implements `Read` and `Write`, so no `mut` needed.
    pub stream: &'a TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection's registry entry.
    pub guard: &'a ConnectionGuard,
    /// Server-wide state.
    pub state: &'a ServerState,
}

/// Serves one connection to its end; runs on the connection's own `client-<n>` thread.
pub fn handle(stream: TcpStream, peer: SocketAddr, guard: ConnectionGuard, state: &ServerState) {
    info!("connection opened from {peer}");
    let started = Instant::now();
    let session = Session {
        stream: &stream,
        peer,
        guard: &guard,
        state,
    };
    let result = serve(&session);
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
    // drops, right after `stream`: the slot frees exactly when the client sees the close.
    drop(stream);
    drop(guard);
}

fn serve(s: &Session<'_>) -> Result<(), ServerError> {
    // Every frame is written whole with one `write_all`, so Nagle's algorithm can only add
    // delay (a small Trailer waiting for the ACK of the last Data frame).
    let _ = s.stream.set_nodelay(true);
    s.stream
        .set_write_timeout(Some(s.state.timeout))
        .map_err(ServerError::peer)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT.min(s.state.timeout);

    let mut first = [0u8; 4];
    let mut reader = DeadlineReader::new(s.stream, deadline);
    match reader.read_exact(&mut first) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            if s.state.stopping() {
                return Err(ServerError::ShuttingDown);
            }
            // Port probes and clients that changed their mind: nothing to answer.
            debug!("{} closed the connection before sending a request", s.peer);
            return Ok(());
        }
        Err(e) => return Err(ServerError::peer(e)),
    }
    if sfts_protocol::is_native(&first) {
        native::serve(s, deadline)
    } else {
        legacy::serve(s, first, deadline)
    }
}

/// A reader that gives up at a fixed instant, however the bytes trickle in: each read gets the
/// time left as its socket timeout. Used for the opening bytes so a client sending one byte
/// every few seconds cannot hold a thread.
pub struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    /// Reads from `stream` until `deadline`.
    pub fn new(stream: &'a TcpStream, deadline: Instant) -> Self {
        DeadlineReader { stream, deadline }
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not send its request in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not send its request in time",
            ),
            _ => e,
        })
    }
}

/// Closes the sending side after a final reply and discards what the client still sends, for
/// a short while. Closing a socket with unread input makes the kernel send a reset, which can
/// destroy the reply before the client has read it.
pub fn linger_close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut reader = DeadlineReader::new(stream, deadline);
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < 256 * 1024 {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn deadline_reader_gives_up_on_a_trickle() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..6 {
                if client.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        let mut r = DeadlineReader::new(&server, started + Duration::from_millis(250));
        let mut buf = [0u8; 100];
        let err = r.read_exact(&mut buf).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        writer.join().unwrap();
    }
}
