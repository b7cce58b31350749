//! A background thread that does one job at a fixed interval (history pruning, upload
//! expiry) and stops, joined, as soon as its handle is dropped: the shutdown never waits for
//! the next round.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tracing::warn;

/// A running periodic job (or none); stops and joins its thread when dropped.
pub struct Periodic {
    wake: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    /// No job at all.
    pub fn none() -> Periodic {
        Periodic {
            wake: None,
            thread: None,
        }
    }

    /// Runs `job` every `every` on a thread called `name`. If the thread cannot start, the
    /// job simply does not run (`what` says what is then lost, for the log).
    pub fn start(
        name: &str,
        every: Duration,
        what: &str,
        mut job: impl FnMut() + Send + 'static,
    ) -> Periodic {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Anything received, or the sender dropped, means: stop.
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    job();
                }
            })
            .map_err(|e| warn!("cannot start the {name} thread ({e}); {what}"))
            .ok();
        Periodic {
            wake: Some(tx),
            thread,
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn runs_repeatedly_and_stops_at_once() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        let p = Periodic::start("test-job", Duration::from_millis(5), "", move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(runs.load(Ordering::SeqCst) >= 3);
        let slow = Periodic::start("test-idle", Duration::from_secs(3600), "", || {});
        let started = Instant::now();
        drop(slow);
        drop(p);
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(Periodic::none());
    }
}
