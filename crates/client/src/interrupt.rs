//! Ctrl-C and SIGTERM: a flag the transfer checks, and a slot holding a clone of the active
//! socket so the handler can shut it down and a blocked read returns at once.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Exit code used when a second Ctrl-C arrives while the first is still being handled.
const FORCED_EXIT: i32 = 130;

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    active: Mutex<Option<TcpStream>>,
}

/// Shared interruption state; clones share it.
#[derive(Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

impl Interrupt {
    /// A fresh, untriggered state with no process-wide handler (tests use it as is).
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Installs the process-wide Ctrl-C / SIGTERM handler. A second signal while the first is
    /// still being handled exits at once.
    pub fn install(&self) -> Result<(), ctrlc::Error> {
        let me = self.clone();
        ctrlc::set_handler(move || {
            if me.is_set() {
                std::process::exit(FORCED_EXIT);
            }
            me.trigger();
        })
    }

    /// Marks the download as interrupted and unblocks the active socket, if any.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        if let Some(stream) = self.slot().as_ref() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// True once a signal arrived.
    pub fn is_set(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Remembers `stream` as the socket to shut down on a signal. If a signal already arrived,
    /// shuts it down right away so the caller's next read fails.
    pub fn watch(&self, stream: &TcpStream) {
        // Without a clone the signal still sets the flag; reads then end at the timeout.
        let clone = stream.try_clone().ok();
        *self.slot() = clone;
        if self.is_set() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Forgets the active socket.
    pub fn release(&self) {
        *self.slot() = None;
    }

    fn slot(&self) -> MutexGuard<'_, Option<TcpStream>> {
        // A panic while holding the lock leaves a valid Option behind; keep using it.
        self.inner
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    #[test]
    fn trigger_unblocks_a_blocked_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server_side = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let interrupt = Interrupt::new();
        interrupt.watch(&stream);
        let other = interrupt.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            other.trigger();
        });
        let start = Instant::now();
        let r = stream.read(&mut [0u8; 16]);
        assert!(matches!(r, Ok(0) | Err(_)));
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(interrupt.is_set());
        t.join().unwrap();
        interrupt.release();
    }

    #[test]
    fn watching_after_the_signal_shuts_down_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server_side = listener.accept().unwrap();
        let interrupt = Interrupt::new();
        interrupt.trigger();
        interrupt.watch(&stream);
        assert!(matches!(stream.read(&mut [0u8; 4]), Ok(0) | Err(_)));
    }
}
