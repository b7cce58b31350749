//! Whole-file digests for the trailer and the cache.
//!
//! When the server has to hash a file it always computes MD5, SHA-256, BLAKE3 *and* XXH128 (so
//! that a later request for any algorithm, or an original-protocol client, finds them in the
//! cache) plus per-chunk SHA-256 at the transfer's chunk size, all in the one pass that sends
//! the bytes (MD5, the slowest, on a helper thread: see [`crate::hash_thread`]; BLAKE3 costs
//! the sending thread about a quarter of what its SHA-256 does, XXH128 a quarter of that).
//! The bytes must arrive in file order; how they are split does not matter.
//!
//! Reading without sending (the part of a file before or after a requested range) goes through
//! [`hash_span`], which calls a keep-alive at least every [`KEEPALIVE_EVERY`] so that a client
//! waiting for its first `Data` frame, or for the `Trailer`, does not time out.

use crate::error::ServerError;
use crate::hash_thread::HashThread;
use sfts_protocol::{Algorithm, Digest, DigestSet, MultiHasher};
use sfts_state::{CachedDigests, ChunkDigests};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest silence towards a client while the server reads without sending.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);

/// Most per-chunk digests kept for one file (2 MiB in the database). Beyond that (more than
/// 64 GiB at the default 1 MiB chunk) only the whole-file digests are computed and cached.
pub const MAX_CHUNK_DIGESTS: u64 = 65_536;

/// Files up to this size are hashed on one thread: a helper thread costs more to start than
/// MD5 takes over 64 KiB (about 0.1 ms), and trees hold many small files.
pub const INLINE_HELPER_MAX: u64 = 64 * 1024;

/// Every whole-file digest the cache holds, computed together.
fn all() -> DigestSet {
    DigestSet::of(&Algorithm::ALL)
}

/// A SHA-256 hasher. The protocol crate's, which the workspace builds optimised even in test
/// builds (the hashing crates' generic code, instantiated here, would not be).
fn sha256() -> MultiHasher {
    MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]))
}

fn finish_sha256(h: MultiHasher) -> [u8; 32] {
    h.finish()
        .pop()
        .and_then(|d| d.bytes.try_into().ok())
        .expect("a SHA-256 hasher yields one 32-byte digest")
}

/// Hashes one file, front to back: MD5, SHA-256, BLAKE3, XXH128 and (when the file has few
/// enough chunks) per-chunk SHA-256.
pub struct FileHasher {
    /// The digests computed on a helper thread (MD5; for a streamed upload SHA-256 and BLAKE3).
    helper: HashThread,
    /// The whole-file digests computed on the caller's thread.
    whole: MultiHasher,
    chunks: Option<ChunkHasher>,
    fed: u64,
}

impl FileHasher {
    /// A hasher for a file of `size` bytes sent in chunks of `chunk_size`.
    pub fn new(size: u64, chunk_size: u32) -> FileHasher {
        let chunk = u64::from(chunk_size.max(1));
        let chunks = (size.div_ceil(chunk) <= MAX_CHUNK_DIGESTS).then(|| ChunkHasher {
            size: chunk,
            current: sha256(),
            filled: 0,
            done: Vec::new(),
        });
        FileHasher {
            helper: helper(size, DigestSet::of(&[Algorithm::Md5])),
            whole: MultiHasher::new(DigestSet::of(&[
                Algorithm::Sha256,
                Algorithm::Blake3,
                Algorithm::Xxh128,
            ])),
            chunks,
            fed: 0,
        }
    }

    /// A hasher of the whole-file digests only (MD5, SHA-256, BLAKE3, XXH128): for an upload,
    /// whose chunks are checked one by one on arrival already.
    pub fn whole_file(size: u64) -> FileHasher {
        FileHasher {
            chunks: None,
            ..FileHasher::new(size, u32::MAX)
        }
    }

    /// The whole-file digests of `set` only, all on the helper thread: for a streamed upload,
    /// whose connection thread already checks every chunk's digest (and whose client may not
    /// want the MD5, the slowest of the three, at all).
    pub fn on_helper(size: u64, set: DigestSet) -> FileHasher {
        FileHasher {
            helper: helper(size, set),
            whole: MultiHasher::new(DigestSet::EMPTY),
            chunks: None,
            fed: 0,
        }
    }

    /// [`FileHasher::whole_file`] without SHA-256, for a file of one chunk whose SHA-256 (the
    /// chunk's, checked on arrival) is known: its digests then have no `sha256`.
    pub fn whole_file_but_sha256(size: u64) -> FileHasher {
        FileHasher {
            whole: MultiHasher::new(DigestSet::of(&[Algorithm::Blake3, Algorithm::Xxh128])),
            ..FileHasher::whole_file(size)
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.helper.update(bytes);
        self.whole.update(bytes);
        if let Some(c) = &mut self.chunks {
            c.update(bytes);
        }
        self.fed += bytes.len() as u64;
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// The digests of everything fed (one whose helper thread failed is missing).
    pub fn finish(self) -> CachedDigests {
        let mut out = CachedDigests {
            chunks: self.chunks.map(ChunkHasher::finish),
            ..CachedDigests::default()
        };
        for d in self.helper.finish().into_iter().chain(self.whole.finish()) {
            match d.algorithm {
                Algorithm::Md5 => out.md5 = d.bytes.try_into().ok(),
                Algorithm::Sha256 => out.sha256 = d.bytes.try_into().ok(),
                Algorithm::Blake3 => out.blake3 = d.bytes.try_into().ok(),
                Algorithm::Xxh128 => out.xxh128 = d.bytes.try_into().ok(),
            }
        }
        out
    }
}

/// A helper thread for `set`, or inline hashing for a file too small to be worth a thread (or
/// for nothing to hash at all).
fn helper(size: u64, set: DigestSet) -> HashThread {
    if size <= INLINE_HELPER_MAX || set == DigestSet::EMPTY {
        HashThread::inline(set)
    } else {
        HashThread::start(set)
    }
}

/// SHA-256 of each `size`-byte piece.
struct ChunkHasher {
    size: u64,
    current: MultiHasher,
    filled: u64,
    done: Vec<[u8; 32]>,
}

impl ChunkHasher {
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.size - self.filled).min(bytes.len() as u64) as usize;
            self.current.update(&bytes[..room]);
            self.filled += room as u64;
            bytes = &bytes[room..];
            if self.filled == self.size {
                let done = std::mem::replace(&mut self.current, sha256());
                self.done.push(finish_sha256(done));
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> ChunkDigests {
        if self.filled > 0 {
            self.done.push(finish_sha256(self.current));
        }
        ChunkDigests {
            chunk_size: self.size as u32,
            sha256: self.done,
        }
    }
}

/// The digests of `wanted` from `known`, in algorithm-code order; `None` when any is missing.
pub fn select(known: &CachedDigests, wanted: DigestSet) -> Option<Vec<Digest>> {
    wanted.iter().map(|a| digest(known, a)).collect()
}

/// Every whole-file digest in `known` that is in `shown` (what the peer can decode), in
/// algorithm-code order (possibly none).
pub fn all_known(known: &CachedDigests, shown: DigestSet) -> Vec<Digest> {
    all()
        .iter()
        .filter(|a| shown.contains(*a))
        .filter_map(|a| digest(known, a))
        .collect()
}

/// The digest of `algorithm` in `known`, if it was computed.
pub fn digest(known: &CachedDigests, algorithm: Algorithm) -> Option<Digest> {
    let bytes = match algorithm {
        Algorithm::Md5 => known.md5?.to_vec(),
        Algorithm::Sha256 => known.sha256?.to_vec(),
        Algorithm::Blake3 => known.blake3?.to_vec(),
        Algorithm::Xxh128 => known.xxh128?.to_vec(),
    };
    Some(Digest { algorithm, bytes })
}

/// Calls a keep-alive when [`KEEPALIVE_EVERY`] has passed since the last one.
pub struct KeepAlive<F> {
    last: Instant,
    every: Duration,
    send: F,
}

impl<F: FnMut() -> io::Result<()>> KeepAlive<F> {
    /// Starts the clock now; `send` sends one keep-alive every [`KEEPALIVE_EVERY`].
    pub fn new(send: F) -> Self {
        KeepAlive::every(KEEPALIVE_EVERY, send)
    }

    fn every(every: Duration, send: F) -> Self {
        KeepAlive {
            last: Instant::now(),
            every,
            send,
        }
    }

    /// Sends a keep-alive if one is due.
    pub fn tick(&mut self) -> io::Result<()> {
        if self.last.elapsed() >= self.every {
            (self.send)()?;
            self.last = Instant::now();
        }
        Ok(())
    }
}

/// Reads the next `len` bytes of `file` (`name` in errors) into `hasher` without sending them,
/// through `buf`, keeping the client alive with `keepalive` and stopping at once when the
/// server shuts down or the keep-alive cannot be sent (the client has gone: nobody is waiting
/// for this digest any more).
pub fn hash_span<R: Read, F: FnMut() -> io::Result<()>>(
    file: &mut R,
    len: u64,
    name: &str,
    hasher: &mut FileHasher,
    buf: &mut [u8],
    stop: &AtomicBool,
    keepalive: &mut KeepAlive<F>,
) -> Result<(), ServerError> {
    let mut left = len;
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return Err(ServerError::ShuttingDown);
        }
        keepalive.tick().map_err(ServerError::peer)?;
        let want = left.min(buf.len() as u64) as usize;
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(ServerError::FileChanged {
                    name: name.to_owned(),
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ServerError::FileRead {
                    name: name.to_owned(),
                    source,
                })
            }
        };
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn whole_and_chunk_digests_do_not_depend_on_the_split() {
        let bytes = data(10_000);
        let mut one = FileHasher::new(10_000, 4096);
        one.update(&bytes);
        let one = one.finish();
        let mut many = FileHasher::new(10_000, 4096);
        for part in bytes.chunks(777) {
            many.update(part);
        }
        assert_eq!(many.fed(), 10_000);
        assert_eq!(many.finish(), one);

        assert_eq!(one.sha256, Some(sha256(&bytes)));
        let md5 = sfts_protocol::checksum::digest_reader(
            &bytes[..],
            DigestSet::of(&[Algorithm::Md5]),
            &mut [0; 512],
        )
        .unwrap()
        .1;
        assert_eq!(one.md5.map(|d| d.to_vec()), Some(md5[0].bytes.clone()));
        let chunks = one.chunks.unwrap();
        assert_eq!(chunks.chunk_size, 4096);
        let want: Vec<[u8; 32]> = bytes.chunks(4096).map(sha256).collect();
        assert_eq!(chunks.sha256, want);
    }

    #[test]
    fn empty_exact_and_huge_files() {
        let empty = FileHasher::new(0, 4096).finish();
        assert_eq!(empty.chunks.clone().unwrap().sha256, Vec::<[u8; 32]>::new());
        assert_eq!(empty.sha256, Some(sha256(b"")));

        let mut exact = FileHasher::new(8192, 4096);
        exact.update(&[7; 8192]);
        assert_eq!(exact.finish().chunks.unwrap().sha256.len(), 2);

        let huge = FileHasher::new(MAX_CHUNK_DIGESTS * 4096 + 1, 4096);
        assert!(huge.finish().chunks.is_none());

        let mut but = FileHasher::whole_file_but_sha256(3);
        but.update(b"abc");
        let but = but.finish();
        let mut whole = FileHasher::whole_file(3);
        whole.update(b"abc");
        let whole = whole.finish();
        assert_eq!(
            (but.sha256, but.md5, but.blake3),
            (None, whole.md5, whole.blake3)
        );
        assert!(whole.chunks.is_none() && whole.md5.is_some());
        assert_eq!(whole.sha256, Some(sha256(b"abc")));
        // The reference implementation's vectors.
        let hex = |d: Option<[u8; 32]>| sfts_protocol::checksum::to_hex(&d.unwrap());
        assert_eq!(
            hex(whole.blake3),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(
            hex(empty.blake3),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn selection_needs_every_wanted_algorithm() {
        let md5_only = CachedDigests {
            md5: Some([1; 16]),
            ..Default::default()
        };
        let both = DigestSet::of(&[Algorithm::Md5, Algorithm::Sha256]);
        assert_eq!(select(&md5_only, both), None);
        let got = select(&md5_only, DigestSet::of(&[Algorithm::Md5])).unwrap();
        assert_eq!(got, [Digest::new(Algorithm::Md5, vec![1; 16]).unwrap()]);
        assert_eq!(select(&md5_only, DigestSet::EMPTY), Some(vec![]));
        assert_eq!(all_known(&md5_only, all()).len(), 1);
        assert!(all_known(&CachedDigests::default(), all()).is_empty());
        let every = CachedDigests {
            md5: Some([1; 16]),
            sha256: Some([2; 32]),
            blake3: Some([3; 32]),
            xxh128: Some([4; 16]),
            chunks: None,
        };
        let blake3 = DigestSet::of(&[Algorithm::Blake3]);
        assert_eq!(
            select(&every, blake3).unwrap(),
            [Digest::new(Algorithm::Blake3, vec![3; 32]).unwrap()]
        );
        assert_eq!(select(&md5_only, blake3), None);
        // A peer that cannot decode BLAKE3 is not shown it.
        let older: Vec<_> = all_known(&every, both)
            .iter()
            .map(|d| d.algorithm)
            .collect();
        assert_eq!(older, [Algorithm::Md5, Algorithm::Sha256]);
        assert_eq!(all_known(&every, all()).len(), 4);
        assert_eq!(
            select(&every, DigestSet::of(&[Algorithm::Xxh128])).unwrap(),
            [Digest::new(Algorithm::Xxh128, vec![4; 16]).unwrap()]
        );
    }

    #[test]
    fn hash_span_reads_exactly_and_reports_short_files() {
        let bytes = data(5000);
        let stop = AtomicBool::new(false);
        let mut ka = KeepAlive::new(|| Ok(()));
        let mut h = FileHasher::new(5000, 4096);
        let mut r = &bytes[..];
        hash_span(&mut r, 3000, "f", &mut h, &mut [0; 1024], &stop, &mut ka).unwrap();
        assert_eq!((h.fed(), r.len()), (3000, 2000));
        let err = hash_span(&mut r, 3000, "f", &mut h, &mut [0; 1024], &stop, &mut ka);
        assert!(matches!(err, Err(ServerError::FileChanged { .. })));
        stop.store(true, Ordering::Relaxed);
        let err = hash_span(&mut &bytes[..], 1, "f", &mut h, &mut [0; 8], &stop, &mut ka);
        assert!(matches!(err, Err(ServerError::ShuttingDown)));
    }

    #[test]
    fn keepalive_is_sent_on_time_and_its_failure_stops_the_pass() {
        /// A reader that takes 30 ms per read, like a slow disk.
        struct Slow;
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(30));
                buf[0] = 1;
                Ok(1)
            }
        }
        let stop = AtomicBool::new(false);
        let mut sent = Vec::new();
        let mut h = FileHasher::new(20, 4096);
        let every = Duration::from_millis(100);
        let started = Instant::now();
        {
            let mut ka = KeepAlive::every(every, || {
                sent.push(Instant::now());
                Ok(())
            });
            hash_span(&mut Slow, 20, "f", &mut h, &mut [0; 4], &stop, &mut ka).unwrap();
        }
        assert!(
            sent.len() >= 4,
            "{} keep-alives in {:?}",
            sent.len(),
            started.elapsed()
        );
        let mut last = started;
        for t in sent {
            // At most one read late.
            assert!(
                t - last < every + Duration::from_millis(80),
                "{:?}",
                t - last
            );
            last = t;
        }

        let mut gone = KeepAlive::new(|| Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        gone.last -= KEEPALIVE_EVERY;
        let err = hash_span(&mut Slow, 8, "f", &mut h, &mut [0; 4], &stop, &mut gone);
        assert!(matches!(err, Err(ServerError::Peer(_))));
    }
}
