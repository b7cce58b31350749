//! Whole-file digests on a helper thread, so that hashing a file while sending or receiving
//! it costs the connection's thread only a copy of the bytes.
//!
//! Sending: MD5 runs at about 580 MB/s on one core, SHA-256 (with the CPU's SHA extensions) at
//! about 1.7 GB/s: on the sending thread, the two plus the per-chunk SHA-256 held an uncached
//! transfer to about 300 MB/s. With MD5 beside it, the sender does SHA-256, per-chunk SHA-256
//! and the I/O while the helper does MD5, and the pair runs at close to MD5's own speed.
//!
//! Receiving a streamed upload: the connection's thread checks each chunk's BLAKE3 and writes
//! it; the helper computes the whole-file SHA-256 and BLAKE3 (measured on a 1 GiB `put` from
//! tmpfs: see docs/PERFORMANCE.md). An upload with BLAKE3 tree values and its digests at the
//! commit (what `sfts-client put` sends) needs no helper: its BLAKE3 is assembled from the
//! chunks' values and nothing else is hashed.
//!
//! The bytes are copied into a small pool of recycled buffers (a copy costs about a tenth of
//! the MD5 over the same bytes) and handed over through a bounded channel, which holds the
//! caller back when the helper falls behind. Dropping a [`HashThread`] without finishing it
//! (the client went away) stops the helper after at most the buffer it is working on.

use sfts_protocol::{Digest, DigestSet, MultiHasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Buffers queued for the helper before the caller waits.
const QUEUE: usize = 4;

/// Digests of one set of algorithms, computed on a helper thread (or inline, if asked to or if
/// no thread could be started).
pub struct HashThread {
    inner: Inner,
}

enum Inner {
    Thread {
        queue: Option<SyncSender<Vec<u8>>>,
        recycled: Receiver<Vec<u8>>,
        abort: Arc<AtomicBool>,
        thread: Option<JoinHandle<Vec<Digest>>>,
    },
    Inline(MultiHasher),
}

impl HashThread {
    /// Starts a helper computing the digests of `set`. (The hashers are the protocol crate's,
    /// which the workspace builds optimised even in test builds.)
    pub fn start(set: DigestSet) -> HashThread {
        let (queue, work) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (give_back, recycled) = mpsc::channel::<Vec<u8>>();
        let abort = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&abort);
        let spawned = thread::Builder::new()
            .name(format!(
                "{}-hash",
                thread::current().name().unwrap_or("conn")
            ))
            .spawn(move || {
                let mut hasher = MultiHasher::new(set);
                for buf in work {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    hasher.update(&buf);
                    // The caller may be gone already; then the buffer is simply freed.
                    let _ = give_back.send(buf);
                }
                hasher.finish()
            });
        let inner = match spawned {
            Ok(thread) => Inner::Thread {
                queue: Some(queue),
                recycled,
                abort,
                thread: Some(thread),
            },
            Err(e) => {
                tracing::debug!("no hashing helper thread ({e}); hashing inline");
                Inner::Inline(MultiHasher::new(set))
            }
        };
        HashThread { inner }
    }

    /// Hashes on the caller's thread: for small files, where starting a thread costs more
    /// than the hashing itself.
    pub fn inline(set: DigestSet) -> HashThread {
        HashThread {
            inner: Inner::Inline(MultiHasher::new(set)),
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            Inner::Inline(h) => h.update(bytes),
            Inner::Thread {
                queue, recycled, ..
            } => {
                let Some(tx) = queue else { return };
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(bytes);
                if tx.send(buf).is_err() {
                    // The helper died (it cannot panic on its own; be safe anyway): carry on
                    // without it and let `finish` report the missing digests.
                    *queue = None;
                }
            }
        }
    }

    /// The digests of everything fed, in algorithm-code order; empty only if the helper
    /// thread failed (the caller then finds every digest missing).
    pub fn finish(mut self) -> Vec<Digest> {
        match &mut self.inner {
            Inner::Inline(h) => std::mem::replace(h, MultiHasher::new(DigestSet::EMPTY)).finish(),
            Inner::Thread { queue, thread, .. } => {
                let fed_all = queue.take().is_some();
                match thread.take().map(JoinHandle::join) {
                    Some(Ok(digests)) if fed_all => digests,
                    _ => Vec::new(),
                }
            }
        }
    }
}

impl Drop for HashThread {
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
    use sfts_protocol::Algorithm;

    fn md5_of(digests: &[Digest]) -> Option<[u8; 16]> {
        digests
            .iter()
            .find(|d| d.algorithm == Algorithm::Md5)?
            .bytes
            .clone()
            .try_into()
            .ok()
    }

    #[test]
    fn same_digest_as_inline_whatever_the_split() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let want: [u8; 16] = Md5::digest(&data).into();
        let md5 = DigestSet::of(&[Algorithm::Md5]);
        let mut t = HashThread::start(md5);
        for part in data.chunks(65_537) {
            t.update(part);
        }
        assert_eq!(md5_of(&t.finish()), Some(want));
        let empty = HashThread::start(md5).finish();
        assert_eq!(md5_of(&empty), Some(Md5::digest(b"").into()));
        let mut inline = HashThread::inline(md5);
        inline.update(&data);
        assert_eq!(md5_of(&inline.finish()), Some(want));
        assert!(HashThread::inline(DigestSet::EMPTY).finish().is_empty());
    }

    #[test]
    fn several_algorithms_match_the_protocol_hasher() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
        let all = DigestSet::of(&Algorithm::ALL);
        let mut want = MultiHasher::new(all);
        want.update(&data);
        let mut t = HashThread::start(all);
        for part in data.chunks(1 << 20) {
            t.update(part);
        }
        let got = t.finish();
        assert_eq!(got.len(), Algorithm::ALL.len());
        assert_eq!(got, want.finish());
    }

    #[test]
    fn dropping_unfinished_stops_the_helper() {
        let mut t = HashThread::start(DigestSet::of(&[Algorithm::Md5]));
        for _ in 0..8 {
            t.update(&[1; 1 << 20]);
        }
        let started = std::time::Instant::now();
        drop(t);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
