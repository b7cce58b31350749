//! MD5 on a helper thread, so that hashing a file while sending it costs the sending thread
//! only its SHA-256 work.
//!
//! MD5 runs at about 580 MB/s on one core, SHA-256 (with the CPU's SHA extensions) at about
//! 1.7 GB/s: on the sending thread, the two plus the per-chunk SHA-256 held an uncached
//! transfer to about 300 MB/s. With MD5 beside it, the sender does SHA-256, per-chunk SHA-256
//! and the I/O while the helper does MD5, and the pair runs at close to MD5's own speed.
//!
//! The bytes are copied into a small pool of recycled buffers (a copy costs about a tenth of
//! the MD5 over the same bytes) and handed over through a bounded channel, which holds the
//! sender back when MD5 falls behind. Dropping an [`Md5Thread`] without finishing it (the
//! client went away) stops the helper after at most the buffer it is working on.

use sfts_protocol::{Algorithm, DigestSet, MultiHasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Buffers queued for the helper before the sender waits.
const QUEUE: usize = 4;

/// The protocol crate's hasher, restricted to MD5 (it is built optimised even in test builds,
/// where the hashing crates' generic code instantiated here would not be).
fn md5() -> MultiHasher {
    MultiHasher::new(DigestSet::of(&[Algorithm::Md5]))
}

fn finish(h: MultiHasher) -> Option<[u8; 16]> {
    h.finish().pop()?.bytes.try_into().ok()
}

/// An MD5 computed on a helper thread (or inline, if no thread could be started).
pub struct Md5Thread {
    inner: Inner,
}

enum Inner {
    Thread {
        queue: Option<SyncSender<Vec<u8>>>,
        recycled: Receiver<Vec<u8>>,
        abort: Arc<AtomicBool>,
        thread: Option<JoinHandle<Option<[u8; 16]>>>,
    },
    Inline(MultiHasher),
}

impl Md5Thread {
    /// Starts the helper.
    pub fn start() -> Md5Thread {
        let (queue, work) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (give_back, recycled) = mpsc::channel::<Vec<u8>>();
        let abort = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&abort);
        let spawned = thread::Builder::new()
            .name(format!(
                "{}-md5",
                thread::current().name().unwrap_or("hash")
            ))
            .spawn(move || {
                let mut md5 = md5();
                for buf in work {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    md5.update(&buf);
                    // The sender may be gone already; then the buffer is simply freed.
                    let _ = give_back.send(buf);
                }
                finish(md5)
            });
        let inner = match spawned {
            Ok(thread) => Inner::Thread {
                queue: Some(queue),
                recycled,
                abort,
                thread: Some(thread),
            },
            Err(e) => {
                tracing::debug!("no MD5 helper thread ({e}); hashing inline");
                Inner::Inline(md5())
            }
        };
        Md5Thread { inner }
    }

    /// No MD5 at all: `update` does nothing, `finish` gives `None`.
    pub fn none() -> Md5Thread {
        Md5Thread {
            inner: Inner::Inline(MultiHasher::new(DigestSet::EMPTY)),
        }
    }

    /// Hashes on the caller's thread: for small files, where starting a thread costs more
    /// than the MD5 itself.
    pub fn inline() -> Md5Thread {
        Md5Thread {
            inner: Inner::Inline(md5()),
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            Inner::Inline(md5) => md5.update(bytes),
            Inner::Thread {
                queue, recycled, ..
            } => {
                let Some(tx) = queue else { return };
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(bytes);
                if tx.send(buf).is_err() {
                    // The helper died (it cannot panic on its own; be safe anyway): carry on
                    // without it and let `finish` report the missing digest.
                    *queue = None;
                }
            }
        }
    }

    /// The MD5 of everything fed; `None` only if the helper thread failed.
    pub fn finish(mut self) -> Option<[u8; 16]> {
        match &mut self.inner {
            Inner::Inline(h) => finish(std::mem::replace(h, md5())),
            Inner::Thread { queue, thread, .. } => {
                drop(queue.take());
                thread.take()?.join().ok().flatten()
            }
        }
    }
}

impl Drop for Md5Thread {
    fn drop(&mut self) {
        if let Inner::Thread {
            queue,
            abort,
            thread,
            ..
        } = &mut self.inner
        {
            abort.store(true, Ordering::Relaxed);
            drop(queue.take());
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest as _, Md5};

    #[test]
    fn same_digest_as_inline_whatever_the_split() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let want: [u8; 16] = Md5::digest(&data).into();
        let mut t = Md5Thread::start();
        for part in data.chunks(65_537) {
            t.update(part);
        }
        assert_eq!(t.finish(), Some(want));
        assert_eq!(Md5Thread::start().finish(), Some(Md5::digest(b"").into()));
        let mut inline = Md5Thread::inline();
        inline.update(&data);
        assert_eq!(inline.finish(), Some(want));
    }

    #[test]
    fn dropping_unfinished_stops_the_helper() {
        let mut t = Md5Thread::start();
        for _ in 0..8 {
            t.update(&[1; 1 << 20]);
        }
        let started = std::time::Instant::now();
        drop(t);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
