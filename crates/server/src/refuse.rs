//! Refusing connections over the limit, politely and in the client's own protocol.
//!
//! A connection over `--max-connections` gets no worker. A short-lived "refuser" thread reads
//! its first four bytes (to learn which protocol it speaks), answers "busy" in that protocol
//! and closes. Refusers are capped too, so a flood of connections costs at most
//! [`MAX_REFUSERS`] small threads; beyond that, connections are simply dropped.

use crate::connection::{linger_close, DeadlineReader};
use sfts_protocol::{legacy, ErrorCode, Message, MAGIC};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// Most refusers running at once.
pub const MAX_REFUSERS: usize = 32;

/// How long a refused client has to show which protocol it speaks.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(2);

/// The busy sentence of the original protocol.
pub const LEGACY_BUSY: &str = "Server busy: too many connections, try again later";

/// The running refusers.
#[derive(Default)]
pub struct Refusers {
    running: Arc<AtomicUsize>,
    threads: Vec<(Arc<TcpStream>, JoinHandle<()>)>,
    next: u64,
}

/// Decrements the running count when a refuser ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Refusers {
    /// Refuses `stream` because `active` connections are open and the limit is `limit`.
    pub fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, active: usize, limit: usize) {
        self.reap();
        if self.running.load(Ordering::SeqCst) >= MAX_REFUSERS {
            warn!(
                "refused {peer}: server busy ({active} connections active, limit {limit}) \
                 and {MAX_REFUSERS} refusals pending; dropped without an answer"
            );
            return;
        }
        warn!("refused {peer}: server busy ({active} connections active, limit {limit})");
        let clone = match stream.try_clone() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                warn!("cannot answer {peer}: {e}");
                return;
            }
        };
        self.running.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(Arc::clone(&self.running));
        self.next += 1;
        let spawned = thread::Builder::new()
            .name(format!("refuser-{}", self.next))
            .spawn(move || {
                let _slot = slot;
                answer_busy(&stream, active, limit);
            });
        match spawned {
            Ok(handle) => self.threads.push((clone, handle)),
            Err(e) => error!("cannot start a thread to refuse {peer}: {e}"),
        }
    }

    /// Joins the refusers that have finished.
    pub fn reap(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) =
            self.threads.drain(..).partition(|(_, h)| h.is_finished());
        self.threads = running;
        for (_, h) in done {
            let _ = h.join();
        }
    }

    /// Closes every refused connection still open and waits for the refusers until `deadline`.
    pub fn shutdown(&mut self, deadline: Instant) {
        for (stream, _) in &self.threads {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, h) in self.threads.drain(..) {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// Learns the client's protocol from its first bytes and tells it, in that protocol, that the
/// server is busy.
fn answer_busy(stream: &TcpStream, active: usize, limit: usize) {
    let _ = stream.set_write_timeout(Some(SNIFF_TIMEOUT));
    let mut first = [0u8; 4];
    let native = DeadlineReader::new(stream, Instant::now() + SNIFF_TIMEOUT)
        .read_exact(&mut first)
        .is_ok()
        && first == MAGIC;
    let mut out = Vec::new();
    if native {
        let busy = Message::Error {
            code: ErrorCode::Busy,
            message: format!(
                "server busy: {active} connections already active (limit {limit}); \
                 try again later"
            ),
        };
        busy.encode(&mut out);
    } else {
        legacy::encode_error(LEGACY_BUSY, &mut out);
    }
    let _ = (&mut { stream }).write_all(&out);
    linger_close(stream);
}
