//! Refusing connections over the limits, politely and in the client's own protocol.
//!
//! A connection over `--max-connections` or `--max-connections-per-ip` gets no worker. One
//! `refuser` thread answers all of them at once, on non-blocking sockets: it learns the
//! client's protocol from its first bytes (the magic `SFTS`, an original request, or on a TLS
//! port a TLS handshake, which it completes so that the answer can travel inside TLS), answers
//! `busy` in that protocol, closes the sending side and drains what the client still sends for
//! a moment. A client that shows nothing within [`SNIFF_TIMEOUT`] gets the original protocol's
//! answer (native clients send their magic at once).
//!
//! Pending refusals are capped ([`MAX_PENDING`] in all, [`MAX_PENDING_PER_ADDRESS`] per
//! address, so that one flooding address cannot use them all up). Past the cap a connection
//! is answered at once from whatever it has sent so far, without waiting: the magic gets the
//! native `busy` frame, other bytes the original protocol's sentence, nothing at all the
//! native frame (the likeliest peer: our own client sends its magic with the connection, and
//! the original protocol's clients are rare); a TLS handshake cannot be answered without doing
//! it, so that connection is closed.

use crate::connection::{legacy_refusal, native_refusal, Port};
use crate::limits::AddrKey;
use rustls::ServerConnection;
use sfts_protocol::{legacy, ErrorCode, Message, MAGIC};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// Refused connections waiting for their answer, at most.
pub const MAX_PENDING: usize = 1024;

/// Of those, at most this many from one address.
pub const MAX_PENDING_PER_ADDRESS: usize = 64;

/// How long a refused client has to show which protocol it speaks (and finish a TLS
/// handshake).
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a refused connection is drained after the answer.
const DRAIN: Duration = Duration::from_millis(500);

/// How often the refuser looks at its sockets when none made progress.
const TICK: Duration = Duration::from_millis(5);

/// The busy sentence of the original protocol.
pub const LEGACY_BUSY: &str = "Server busy: too many connections, try again later";

/// The original protocol's sentence for a client whose address has too many connections.
pub const LEGACY_BUSY_ADDRESS: &str =
    "Server busy: too many connections from your address, try again later";

/// The original protocol's sentence for a request over the per-address rate limit.
pub const LEGACY_TOO_MANY_REQUESTS: &str =
    "Server busy: too many requests from your address, try again later";

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
pub enum Reason {
    /// The server is at `--max-connections`.
    Full {
        /// Connections open.
        active: usize,
        /// The limit.
        limit: usize,
    },
    /// The client's address is at `--max-connections-per-ip`.
    Address {
        /// The limit.
        limit: usize,
    },
}

impl Reason {
    /// The native refusal.
    fn native(self) -> Message<'static> {
        let message = match self {
            Reason::Full { active, limit } => format!(
                "server busy: {active} connections already active (limit {limit}); try again \
                 later"
            ),
            Reason::Address { limit } => format!(
                "too many connections from your address: at most {limit} at once; close some \
                 and try again"
            ),
        };
        Message::Error {
            code: ErrorCode::Busy,
            message,
        }
    }

    fn legacy(self) -> &'static str {
        match self {
            Reason::Full { .. } => LEGACY_BUSY,
            Reason::Address { .. } => LEGACY_BUSY_ADDRESS,
        }
    }
}

/// A connection to refuse.
pub struct Refusal {
    /// The accepted socket.
    pub stream: TcpStream,
    /// The client.
    pub peer: SocketAddr,
    /// Why.
    pub reason: Reason,
    /// The port it came in on (TLS or plain).
    pub port: Arc<Port>,
}

/// Where a pending refusal stands.
enum Stage {
    /// Reading the first bytes (`got` of 4 so far).
    Sniff,
    /// A TLS handshake, then the magic inside it.
    Tls(Box<ServerConnection>),
    /// Answered; discarding what still comes until the deadline.
    Drain,
}

struct Pending {
    r: Refusal,
    key: AddrKey,
    stage: Stage,
    first: [u8; 4],
    got: usize,
    deadline: Instant,
}

#[derive(Default)]
struct Inbox {
    new: Vec<Pending>,
    /// Pending refusals per address, the ones in `new` included.
    per_address: HashMap<AddrKey, usize>,
    total: usize,
    stop: bool,
}

/// The refuser thread and its inbox.
pub struct Refuser {
    inbox: Arc<Mutex<Inbox>>,
    thread: Option<JoinHandle<()>>,
}

impl Refuser {
    /// Starts the `refuser` thread.
    pub fn start() -> Refuser {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let shared = Arc::clone(&inbox);
        let thread = thread::Builder::new()
            .name("refuser".into())
            .spawn(move || run(&shared))
            .map_err(|e| error!("cannot start the refuser thread: {e}"))
            .ok();
        Refuser { inbox, thread }
    }

    /// Hands a connection over to be refused; answers it at once if too many are pending.
    pub fn refuse(&self, r: Refusal) {
        let key = AddrKey::of(r.peer.ip());
        let mut inbox = lock(&self.inbox);
        let mine = inbox.per_address.get(&key).copied().unwrap_or(0);
        if self.thread.is_none()
            || inbox.stop
            || inbox.total >= MAX_PENDING
            || mine >= MAX_PENDING_PER_ADDRESS
        {
            drop(inbox);
            answer_at_once(r);
            return;
        }
        if r.stream.set_nonblocking(true).is_err() {
            return;
        }
        inbox.total += 1;
        *inbox.per_address.entry(key).or_default() += 1;
        inbox.new.push(Pending {
            r,
            key,
            stage: Stage::Sniff,
            first: [0; 4],
            got: 0,
            deadline: Instant::now() + SNIFF_TIMEOUT,
        });
    }

    /// Closes every pending refusal and stops the thread, waiting for it until `deadline`.
    pub fn shutdown(&mut self, deadline: Instant) {
        lock(&self.inbox).stop = true;
        if let Some(h) = self.thread.take() {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

fn lock(inbox: &Mutex<Inbox>) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|p| p.into_inner())
}

/// The refuser thread: moves every pending refusal along until it is done.
fn run(inbox: &Mutex<Inbox>) {
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        {
            let mut guard = lock(inbox);
            if guard.stop {
                for p in pending.iter().chain(&guard.new) {
                    let _ = p.r.stream.shutdown(Shutdown::Both);
                }
                return;
            }
            pending.append(&mut guard.new);
        }
        let now = Instant::now();
        let mut progressed = false;
        let mut done = Vec::new();
        for (i, p) in pending.iter_mut().enumerate() {
            match step(p, now) {
                Step::Waiting => {}
                Step::Moved => progressed = true,
                Step::Done => {
                    progressed = true;
                    done.push(i);
                }
            }
        }
        if !done.is_empty() {
            let mut guard = lock(inbox);
            for i in done.into_iter().rev() {
                let p = pending.swap_remove(i);
                guard.total -= 1;
                if let Some(n) = guard.per_address.get_mut(&p.key) {
                    *n -= 1;
                    if *n == 0 {
                        guard.per_address.remove(&p.key);
                    }
                }
            }
        }
        if !progressed {
            thread::sleep(TICK);
        }
    }
}

enum Step {
    Waiting,
    Moved,
    Done,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Moves one refusal along as far as its socket allows without blocking.
fn step(p: &mut Pending, now: Instant) -> Step {
    match &mut p.stage {
        Stage::Drain => {
            let mut sink = [0u8; 4096];
            loop {
                match (&p.r.stream).read(&mut sink) {
                    Ok(0) => return Step::Done,
                    Ok(_) => continue,
                    Err(e) if would_block(&e) && now < p.deadline => return Step::Waiting,
                    Err(_) => return Step::Done,
                }
            }
        }
        Stage::Sniff => {
            if p.r.port.tls.is_some() && p.got == 0 {
                let mut b = [0u8; 1];
                match p.r.stream.peek(&mut b) {
                    Ok(0) => return Step::Done,
                    Ok(_) if b[0] == crate::tls::TLS_HANDSHAKE_BYTE => {
                        let config = p.r.port.tls.as_ref().map(|t| t.server_config());
                        match config.map(ServerConnection::new) {
                            Some(Ok(conn)) => {
                                p.stage = Stage::Tls(Box::new(conn));
                                return Step::Moved;
                            }
                            _ => return Step::Done,
                        }
                    }
                    Ok(_) => {}
                    Err(e) if would_block(&e) => return timed_out_sniffing(p, now),
                    Err(_) => return Step::Done,
                }
            }
            match (&p.r.stream).read(&mut p.first[p.got..]) {
                Ok(0) => Step::Done,
                Ok(n) => {
                    p.got += n;
                    if p.got == 4 {
                        answer_plain(p, now);
                    }
                    Step::Moved
                }
                Err(e) if would_block(&e) => timed_out_sniffing(p, now),
                Err(_) => Step::Done,
            }
        }
        Stage::Tls(conn) => {
            let conn = conn.as_mut();
            let mut moved = false;
            match conn.read_tls(&mut &p.r.stream) {
                Ok(0) => return Step::Done,
                Ok(_) => moved = true,
                Err(e) if would_block(&e) => {}
                Err(_) => return Step::Done,
            }
            if conn.process_new_packets().is_err() {
                let _ = conn.write_tls(&mut &p.r.stream);
                return Step::Done;
            }
            if !conn.is_handshaking() {
                match conn.reader().read(&mut p.first[p.got..]) {
                    Ok(n) => p.got += n,
                    Err(e) if would_block(&e) => {}
                    Err(_) => return Step::Done,
                }
                if p.got == 4 {
                    if p.first != MAGIC {
                        return Step::Done;
                    }
                    let mut out = Vec::new();
                    p.r.reason.native().encode(&mut out);
                    let _ = conn.writer().write_all(&out);
                    conn.send_close_notify();
                }
            }
            while conn.wants_write() {
                match conn.write_tls(&mut &p.r.stream) {
                    Ok(_) => moved = true,
                    Err(_) => break,
                }
            }
            if p.got == 4 {
                let _ = p.r.stream.shutdown(Shutdown::Write);
                p.stage = Stage::Drain;
                p.deadline = now + DRAIN;
                return Step::Moved;
            }
            if now >= p.deadline {
                return Step::Done;
            }
            if moved {
                Step::Moved
            } else {
                Step::Waiting
            }
        }
    }
}

/// Nothing (more) to read yet: wait, or after [`SNIFF_TIMEOUT`] answer as the original
/// protocol (a native client would have sent its magic at once).
fn timed_out_sniffing(p: &mut Pending, now: Instant) -> Step {
    if now < p.deadline {
        return Step::Waiting;
    }
    answer_plain(p, now);
    Step::Moved
}

/// Answers in plain text, native or original, from the first bytes, and starts draining.
fn answer_plain(p: &mut Pending, now: Instant) {
    let out = plain_answer(&p.r, &p.first[..p.got], true);
    let _ = (&p.r.stream).write_all(&out);
    let _ = p.r.stream.shutdown(Shutdown::Write);
    p.stage = Stage::Drain;
    p.deadline = now + DRAIN;
}

/// The plain-text answer to a client that sent `first` (up to 4 bytes). `silent_is_legacy`:
/// how to read a client that sent nothing.
fn plain_answer(r: &Refusal, first: &[u8], silent_is_legacy: bool) -> Vec<u8> {
    let native = if first.is_empty() {
        !silent_is_legacy
    } else {
        MAGIC.starts_with(first)
    };
    let mut out = Vec::new();
    if native {
        native_refusal(&r.port)
            .unwrap_or_else(|| r.reason.native())
            .encode(&mut out);
    } else {
        let sentence = legacy_refusal(&r.port).unwrap_or(r.reason.legacy());
        legacy::encode_error(sentence, &mut out);
    }
    out
}

/// Answers without waiting, from whatever the client has sent so far (see the module
/// documentation), and closes.
fn answer_at_once(r: Refusal) {
    let _ = r.stream.set_nonblocking(true);
    let mut first = [0u8; 4];
    let got = r.stream.peek(&mut first).unwrap_or(0);
    if got > 0 && first[0] == crate::tls::TLS_HANDSHAKE_BYTE && r.port.tls.is_some() {
        return;
    }
    // What was sent is read, so that closing does not reset the connection over it.
    let mut sink = [0u8; 4096];
    while matches!((&r.stream).read(&mut sink), Ok(n) if n > 0) {}
    let out = plain_answer(&r, &first[..got], false);
    let _ = (&r.stream).write_all(&out);
    let _ = r.stream.shutdown(Shutdown::Write);
}

/// Keeps a flood from filling the log: at most [`LogThrottle::PER_SECOND`] lines a second,
/// and then one line saying how many were left out.
pub struct LogThrottle {
    second: Instant,
    lines: u32,
    skipped: u64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle {
            second: Instant::now(),
            lines: 0,
            skipped: 0,
        }
    }
}

impl LogThrottle {
    /// Lines let through per second.
    pub const PER_SECOND: u32 = 10;

    /// Logs `line` (a warning) unless this second's lines are used up.
    pub fn warn(&mut self, line: impl FnOnce() -> String) {
        let now = Instant::now();
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            if self.skipped > 0 {
                warn!(
                    "{} more refusal(s) in the last second(s) not logged one by one",
                    self.skipped
                );
            }
            self.second = now;
            self.lines = 0;
            self.skipped = 0;
        }
        if self.lines < Self::PER_SECOND {
            self.lines += 1;
            warn!("{}", line());
        } else {
            self.skipped += 1;
        }
    }
}
