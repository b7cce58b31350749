//! The client's socket as every session sees it ([`Link`]): TCP under three clocks, so that no
//! client can hold a worker thread by being slow, however it spaces its bytes.
//!
//! * The **opening deadline** (`--handshake-timeout`, never longer than `--timeout`): a fixed
//!   instant by which the TLS handshake, the magic, `Hello` (and `Auth`, on a server that needs
//!   a token) must be complete. Each read gets the time left as its socket timeout, so a
//!   slowloris that sends one byte every second is dropped at the deadline all the same.
//! * The **idle timeout** (`--timeout`): how long the server waits for the first byte of the
//!   client's next request.
//! * The **minimum rate** (`--min-rate`), in both directions, once bytes are moving: for every
//!   `window` (the `--timeout`) of time the server spends *blocked* on the socket (waiting to
//!   read the rest of a request, or for the client to take more of a reply), at least
//!   `min_rate × window` bytes must pass. Time the server spends elsewhere (reading a file,
//!   hashing, walking a tree) does not count, nor does the wait between requests. A client
//!   that stops reading is dropped after one window; one that reads too slowly, within a few.
//!   This replaces the socket's write timeout, which restarts whenever a write makes the least
//!   progress (a stalled reader used to take two or three timeouts, a trickling one forever).
//!
//! What a client has *taken* is what it acknowledged, not what the kernel accepted into its
//! send buffer: on Linux the bytes still queued (`SIOCOUTQ`) are subtracted from those
//! written, and a blocked write wakes every [`PROBE`] to look, because the kernel wakes a
//! blocked writer only once a third of a (possibly megabytes large) buffer is free, which a
//! slow but steady reader may take minutes to free. Elsewhere, accepted bytes count.
//!
//! The timeouts are applied as socket timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`), set only when
//! the time left changes, so a fast transfer pays no extra system call per read.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The minimum-rate rule: at least `min_rate` bytes per second, averaged over `window` of
/// blocked time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The averaging window (the server uses its `--timeout`).
    pub window: Duration,
    /// Bytes per second; 0 only drops a client that moves nothing at all for a window.
    pub min_rate: u64,
}

/// How often a blocked write looks at what the client has taken.
pub const PROBE: Duration = Duration::from_millis(250);

/// Why a client was dropped for being slow. Carried inside the `io::Error` (kind `TimedOut`)
/// that a read or write of a [`Link`] returns, so the logs can say which clock ran out.
#[derive(Debug, Clone, PartialEq)]
pub enum Stall {
    /// The opening (TLS handshake, magic, `Hello`, `Auth`) was not complete in time.
    Opening(Duration),
    /// Nothing arrived between requests for this long.
    Idle(Duration),
    /// Bytes moved, but too slowly.
    TooSlow {
        /// True when the server was sending (the client reads too slowly).
        sending: bool,
        /// Bytes that moved in the window.
        bytes: u64,
        /// The window.
        window: Duration,
        /// The minimum rate.
        min_rate: u64,
    },
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::Opening(limit) => write!(
                f,
                "the client did not complete its handshake within {} (--handshake-timeout)",
                secs(*limit)
            ),
            Stall::Idle(limit) => write!(f, "client sent nothing for {}", secs(*limit)),
            Stall::TooSlow {
                sending,
                bytes,
                window,
                min_rate,
            } => {
                let waited = secs(*window);
                match (sending, bytes) {
                    (true, 0) => write!(
                        f,
                        "the client stopped reading (nothing taken in {waited} of waiting)"
                    ),
                    (false, 0) => write!(
                        f,
                        "the client stopped sending in the middle of a request (nothing in \
                         {waited})"
                    ),
                    _ => write!(
                        f,
                        "the client {} only {bytes} bytes in {waited} of waiting, too slowly \
                         (at least {min_rate} bytes/s are required: --min-rate)",
                        if *sending { "read" } else { "sent" }
                    ),
                }
            }
        }
    }
}

impl std::error::Error for Stall {}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The [`Stall`] inside `e`, if `e` is one.
pub fn stall_of(e: &io::Error) -> Option<&Stall> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Stall>())
}

fn stalled(why: Stall) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Bytes and blocked time in the current window of one direction.
#[derive(Debug, Clone)]
struct Meter {
    pace: Pace,
    /// Bytes a window must see.
    need: u64,
    blocked: Duration,
    bytes: u64,
}

impl Meter {
    fn new(pace: Pace) -> Meter {
        let need = (pace.min_rate as f64 * pace.window.as_secs_f64()).ceil() as u64;
        Meter {
            pace,
            need: need.max(1),
            blocked: Duration::ZERO,
            bytes: 0,
        }
    }

    /// Blocked time the client has left in this window.
    fn left(&self) -> Duration {
        self.pace.window.saturating_sub(self.blocked)
    }

    /// Counts one system call: `spent` blocked in it, `n` bytes moved. A window that has seen
    /// its bytes starts over.
    fn record(&mut self, spent: Duration, n: usize) {
        self.blocked += spent;
        self.bytes += n as u64;
        if self.bytes >= self.need {
            self.restart();
        }
    }

    fn restart(&mut self) {
        self.blocked = Duration::ZERO;
        self.bytes = 0;
    }

    fn too_slow(&self, sending: bool) -> io::Error {
        stalled(Stall::TooSlow {
            sending,
            bytes: self.bytes,
            window: self.pace.window,
            min_rate: self.pace.min_rate,
        })
    }
}

/// A client's TCP socket with the opening deadline, the idle timeout and the minimum rate.
pub struct Link {
    tcp: TcpStream,
    idle: Duration,
    /// Set during the opening.
    deadline: Option<Instant>,
    /// How long the opening may take (for the message).
    opening: Duration,
    /// True while a request is arriving (from its first byte to [`Link::await_request`]):
    /// the minimum rate applies; false between requests: the idle timeout does.
    reading: bool,
    rx: Meter,
    tx: Meter,
    rx_timeout: Option<Duration>,
    tx_timeout: Option<Duration>,
    /// Bytes written to the socket so far.
    written: u64,
    /// Bytes the client had taken at the last look.
    taken: u64,
}

impl Link {
    /// Wraps an accepted socket; the opening must be complete within `opening` from now.
    pub fn new(tcp: TcpStream, idle: Duration, opening: Duration, pace: Pace) -> Link {
        Link {
            tcp,
            idle,
            deadline: Some(Instant::now() + opening),
            opening,
            reading: false,
            rx: Meter::new(pace),
            tx: Meter::new(pace),
            rx_timeout: None,
            tx_timeout: None,
            written: 0,
            taken: 0,
        }
    }

    /// Bytes the client has taken: written minus still queued (Linux), or written.
    fn taken_now(&self) -> u64 {
        self.written.saturating_sub(queued(&self.tcp))
    }

    /// The socket (for its addresses and the registry's shutdown clone).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The opening is over: from now on the idle timeout and the minimum rate apply.
    pub fn end_opening(&mut self) {
        self.deadline = None;
    }

    /// True while the opening deadline applies.
    pub fn opening(&self) -> bool {
        self.deadline.is_some()
    }

    /// The server is about to wait for the client's next request: until its first byte, only
    /// the idle timeout applies.
    pub fn await_request(&mut self) {
        self.reading = false;
        self.rx.restart();
    }

    /// The first byte the client sent, without consuming it; `None` if it closed first.
    pub fn peek_first(&mut self) -> io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        loop {
            self.arm_read()?;
            match self.tcp.peek(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if is_timeout(&e) && self.deadline.is_some() => continue,
                Err(e) if is_timeout(&e) => return Err(stalled(Stall::Idle(self.idle))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets the read timeout for the next read, or returns the stall if no time is left.
    fn arm_read(&mut self) -> io::Result<()> {
        let limit = self.read_limit()?;
        set_timeout(
            &self.tcp,
            &mut self.rx_timeout,
            limit,
            TcpStream::set_read_timeout,
        )
    }

    /// How long the next read may block, or the stall if none is left.
    fn read_limit(&self) -> io::Result<Duration> {
        let mut limit = if self.reading {
            let left = self.rx.left();
            if left.is_zero() {
                return Err(self.rx.too_slow(false));
            }
            left
        } else {
            self.idle
        };
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(stalled(Stall::Opening(self.opening)));
            }
            limit = limit.min(left);
        }
        Ok(limit)
    }

    /// Closes the sending side after a final reply and discards what the client still sends,
    /// for half a second at most. Closing a socket with unread input makes the kernel send a
    /// reset, which can destroy the reply before the client has read it.
    pub fn linger_close(&mut self) {
        let _ = self.tcp.shutdown(Shutdown::Write);
        self.deadline = Some(Instant::now() + LINGER);
        self.opening = LINGER;
        self.reading = false;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match self.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

/// Bytes written to `tcp` that the peer has not acknowledged yet (`SIOCOUTQ`); 0 when the
/// system cannot say.
#[cfg(target_os = "linux")]
fn queued(tcp: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one int through the pointer, which
    // points to a live c_int; the descriptor is open for as long as `tcp` is borrowed.
    let rc = unsafe { libc::ioctl(tcp.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc == 0 {
        u64::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn queued(_tcp: &TcpStream) -> u64 {
    0
}

/// How long [`Link::linger_close`] drains.
const LINGER: Duration = Duration::from_millis(500);

/// Most bytes [`Link::linger_close`] drains.
const LINGER_BYTES: usize = 256 * 1024;

/// Sets a socket timeout to `want` unless it is already (about) that: within 1 ms, or 1 % of
/// a long one. Never longer than wanted, so a timeout always means the time is up.
fn set_timeout(
    tcp: &TcpStream,
    current: &mut Option<Duration>,
    want: Duration,
    set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let close_enough =
        current.is_some_and(|c| c <= want && want - c <= Duration::from_millis(1).max(want / 100));
    if !close_enough {
        set(tcp, Some(want))?;
        *current = Some(want);
    }
    Ok(())
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.arm_read()?;
            let started = Instant::now();
            let result = (&self.tcp).read(buf);
            let spent = started.elapsed();
            match result {
                Ok(n) => {
                    if self.reading {
                        self.rx.record(spent, n);
                    } else if n > 0 {
                        // The first bytes of a request: its window starts now.
                        self.reading = true;
                        self.rx.restart();
                        self.rx.record(Duration::ZERO, n);
                    }
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => {
                    if self.reading {
                        self.rx.record(spent, 0);
                    } else if self.deadline.is_none() {
                        return Err(stalled(Stall::Idle(self.idle)));
                    }
                    // Otherwise `read_limit` says which clock ran out (or that one did not).
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Link {
    /// One sending system call (`op` on the socket) under the minimum-rate clock: retried
    /// while it times out (every [`PROBE`] on Linux, to look at what the client has taken)
    /// until the client has taken too little for a window.
    fn send_with(
        &mut self,
        mut op: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            let left = self.tx.left();
            if left.is_zero() {
                return Err(self.tx.too_slow(true));
            }
            let wait = if cfg!(target_os = "linux") {
                left.min(PROBE)
            } else {
                left
            };
            set_timeout(
                &self.tcp,
                &mut self.tx_timeout,
                wait,
                TcpStream::set_write_timeout,
            )?;
            let started = Instant::now();
            let result = op(&self.tcp);
            let spent = started.elapsed();
            if let Ok(n) = result {
                self.written += n as u64;
            }
            let taken = self.taken_now();
            let progress = taken.saturating_sub(self.taken);
            self.taken = self.taken.max(taken);
            self.tx.record(spent, progress as usize);
            match result {
                Ok(n) => return Ok(n),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `buf`, telling the kernel that more follows at once (`MSG_MORE`): a frame
    /// header sent before [`Link::send_file`] leaves in the same segment as the payload.
    #[cfg(target_os = "linux")]
    pub fn write_all_more(&mut self, mut buf: &[u8]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        while !buf.is_empty() {
            let n = self.send_with(|tcp| {
                // SAFETY: `buf` is valid for `buf.len()` bytes; the descriptor is open for as
                // long as `tcp` is borrowed.
                let rc = unsafe {
                    libc::send(
                        tcp.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_MORE | libc::MSG_NOSIGNAL,
                    )
                };
                usize::try_from(rc).map_err(|_| io::Error::last_os_error())
            })?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends up to `len` bytes of `file`, from `offset`, straight from the page cache with
    /// `sendfile(2)` (no copy through the server's memory), under the same clocks as a write.
    /// Returns how many were sent: 0 means the file ended before `offset`.
    #[cfg(target_os = "linux")]
    pub fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let Ok(mut at) = libc::off_t::try_from(offset) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        self.send_with(|tcp| {
            // SAFETY: both descriptors are open for the duration of the call; `at` is a live
            // off_t that the kernel advances (the file's own position is left alone).
            let rc = unsafe { libc::sendfile(tcp.as_raw_fd(), file.as_raw_fd(), &mut at, len) };
            usize::try_from(rc).map_err(|_| io::Error::last_os_error())
        })
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_with(|mut tcp| tcp.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tcp_pair as pair;

    /// A link past its opening, with idle timeout `idle`.
    fn serving(server: TcpStream, idle: Duration, pace: Pace) -> Link {
        let mut link = Link::new(server, idle, Duration::from_secs(5), pace);
        link.end_opening();
        link
    }

    /// Writes `byte` every 100 ms, `times` times (or until the other side is gone).
    fn trickle(mut client: TcpStream, byte: u8, times: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for _ in 0..times {
                if client.write_all(&[byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    fn pace(window_ms: u64, min_rate: u64) -> Pace {
        Pace {
            window: Duration::from_millis(window_ms),
            min_rate,
        }
    }

    #[test]
    fn meter_restarts_when_a_window_has_its_bytes() {
        let mut m = Meter::new(pace(2000, 1000));
        assert_eq!(m.need, 2000);
        m.record(Duration::from_millis(500), 1500);
        assert_eq!(m.left(), Duration::from_millis(1500));
        m.record(Duration::from_millis(500), 600);
        assert_eq!((m.blocked, m.bytes), (Duration::ZERO, 0), "restarted");
        m.record(Duration::from_millis(2500), 10);
        assert!(m.left().is_zero());
        let e = m.too_slow(true);
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let text = e.to_string();
        assert!(text.contains("read only 10 bytes in 2.0 s"), "{text}");
        // A zero rate still needs one byte per window.
        assert_eq!(Meter::new(pace(1000, 0)).need, 1);
    }

    #[test]
    fn the_opening_deadline_holds_however_the_bytes_trickle() {
        let (client, server) = pair();
        let writer = trickle(client, b'x', 8);
        let started = Instant::now();
        let mut link = Link::new(
            server,
            Duration::from_secs(5),
            Duration::from_millis(250),
            pace(5000, 0),
        );
        let mut buf = [0u8; 100];
        let err = link.read_exact(&mut buf).unwrap_err();
        assert!(matches!(stall_of(&err), Some(Stall::Opening(_))), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        writer.join().unwrap();
    }

    #[test]
    fn idle_then_a_trickle_too_slow_for_the_minimum_rate() {
        let (client, server) = pair();
        let mut link = serving(server, Duration::from_millis(300), pace(300, 1000));
        let mut buf = [0u8; 16];
        let err = link.read(&mut buf).unwrap_err();
        assert_eq!(
            stall_of(&err),
            Some(&Stall::Idle(Duration::from_millis(300)))
        );
        // A request arrives one byte every 100 ms: 3 bytes a window where 300 are needed (40
        // bytes, 4 s, so the loose bound below, for a shared machine, still tells the two apart).
        let writer = trickle(client, b'y', 40);
        let started = Instant::now();
        let err = link.read_exact(&mut [0u8; 100]).unwrap_err();
        assert!(
            matches!(stall_of(&err), Some(Stall::TooSlow { sending: false, .. })),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        drop(link); // the trickle's next write fails and it ends
        writer.join().unwrap();
    }

    /// Serves `link` a stream of 64 KiB writes to a client that reads 16 KiB every 100 ms
    /// (about 160 KB/s) for `secs`; returns the error that ended it, if any. (Loopback's
    /// 64 KiB segments make the progress the server sees come in 64 KiB steps: reading less
    /// than that a second would look like a stall in a one-second window.)
    fn slow_reader(min_rate: u64, secs: u64) -> Option<io::Error> {
        let (mut client, server) = pair();
        let mut link = serving(server, Duration::from_secs(5), pace(1000, min_rate));
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let until = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < until {
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let chunk = vec![1u8; 64 * 1024];
        // Stops before the reader does, which would reset the connection.
        let until = Instant::now() + Duration::from_secs(secs) - Duration::from_millis(500);
        let mut failed = None;
        while Instant::now() < until {
            if let Err(e) = link.write_all(&chunk) {
                // Only a stall counts: a reset means the reader left first.
                failed = stall_of(&e).is_some().then_some(e);
                break;
            }
        }
        drop(link);
        reader.join().unwrap();
        failed
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_slow_steady_reader_is_kept_and_one_below_the_minimum_rate_dropped() {
        let kept = slow_reader(16 * 1024, 3);
        assert!(kept.is_none(), "160 KB/s is above 16 KiB/s: {kept:?}");
        let e = slow_reader(1 << 20, 3).expect("160 KB/s is below 1 MiB/s");
        assert!(
            matches!(stall_of(&e), Some(Stall::TooSlow { sending: true, .. })),
            "{e}"
        );
    }

    #[test]
    fn a_reader_that_stops_is_dropped_after_one_window() {
        let (client, server) = pair();
        let mut link = serving(server, Duration::from_secs(5), pace(400, 0));
        let chunk = vec![7u8; 1 << 20];
        let started = Instant::now();
        let err = loop {
            if let Err(e) = link.write_all(&chunk) {
                break e;
            }
        };
        assert!(
            matches!(stall_of(&err), Some(Stall::TooSlow { sending: true, .. })),
            "{err}"
        );
        // The buffers filled at once; then one window of waiting.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(client);
    }
}
