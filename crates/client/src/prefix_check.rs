//! Reading a partial download back to check it against its journal, while the rest downloads.
//!
//! A resume that continues the whole-file hash from the journal's saved state fetches the rest
//! at once; the chunks already on disk must still be checked (a crash can lose writes, a disk
//! can return other bytes, another program can write the file). That check is most of what a
//! resume after 90 % costs: 3.6 GB of a 4 GiB file read back and hashed (XXH3-128,
//! [`crate::chunk_check`]) while the last 10 % downloads.
//!
//! Helper threads check chunks while the download runs, one fewer than the machine has cores
//! (at least one), so that the download, which hashes and writes what arrives, keeps a core of
//! its own; once the download is done, the calling thread takes its share of what is left
//! ([`PrefixCheck::finish`]). Every thread takes the next chunk nobody has taken yet. Before,
//! one helper per core took every n-th chunk: on two cores the download got about half a core
//! while the check ran, and ran alone at the end, one core idle (a 4 GiB resume after kill -9,
//! 5 alternated pairs: median 1.01 s that way, 0.89 s this way).

use crate::chunk_check::ChunkCheck;
use crate::journal::JournalHeader;
use crate::pagebuf::PageBuf;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Reads the journaled chunks of a partial file back and names those whose digest no longer
/// matches the journal: on helper threads while the download runs (one core fewer than the
/// machine has, at least one, at most [`CHECK_THREADS`], so that the download keeps a core),
/// and on the calling thread too once the download is done ([`PrefixCheck::finish`]). Each
/// takes the next chunk not yet taken.
pub struct PrefixCheck {
    work: Arc<CheckWork>,
    handles: Vec<JoinHandle<io::Result<Vec<u64>>>>,
}

/// What the checking threads share.
struct CheckWork {
    file: File,
    path: PathBuf,
    header: JournalHeader,
    kind: ChunkCheck,
    expected: Vec<[u8; 32]>,
    /// The next chunk to take.
    next: AtomicUsize,
    stop: AtomicBool,
    /// Chunks not yet checked.
    left: AtomicUsize,
    /// A chunk did not match.
    bad: AtomicBool,
    /// Set once every chunk was checked and all matched: shared with the download's sink,
    /// which may then seal the file as it goes ([`crate::seal::Watch`]).
    trusted: Arc<AtomicBool>,
}

impl CheckWork {
    /// Checks chunks until none is left (or it is stopped): the bad ones.
    fn run(&self) -> io::Result<Vec<u64>> {
        if self.next.load(Ordering::Relaxed) >= self.expected.len() {
            return Ok(Vec::new());
        }
        // Page-aligned: see `PageBuf`.
        let mut buf = PageBuf::with_capacity(self.header.chunk_size as usize);
        buf.set_len(self.header.chunk_size as usize);
        let mut bad = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(expected) = self.expected.get(index) else {
                break;
            };
            let (start, end) = self.header.chunk_range(index as u64);
            let chunk = &mut buf[..(end - start) as usize];
            match self.file.read_exact_at(chunk, start) {
                Ok(()) if self.kind.of(chunk) == *expected => self.checked(true),
                Ok(()) => {
                    bad.push(index as u64);
                    self.checked(false);
                }
                Err(e) => {
                    // The check has failed: the other threads need not read on.
                    self.stop.store(true, Ordering::Relaxed);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{} at byte {start}: {e}", self.path.display()),
                    ));
                }
            }
        }
        Ok(bad)
    }

    /// Counts one more chunk checked: the last sets `trusted` when none was bad.
    fn checked(&self, good: bool) {
        if !good {
            self.bad.store(true, Ordering::SeqCst);
        }
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 && !self.bad.load(Ordering::SeqCst) {
            self.trusted.store(true, Ordering::Release);
        }
    }
}

/// The most helper threads a prefix check uses. Reading back and hashing is what a resume
/// after 90 % mostly waits for (docs/PERFORMANCE.md).
const CHECK_THREADS: usize = 4;

impl PrefixCheck {
    /// Starts checking `part`'s chunks against `expected`; sets `trusted` once every one was
    /// found good (at once when there is none).
    pub fn start(
        part: &Path,
        header: &JournalHeader,
        kind: ChunkCheck,
        expected: Vec<[u8; 32]>,
        trusted: Arc<AtomicBool>,
    ) -> io::Result<PrefixCheck> {
        let file = File::open(part)?;
        // Read once and never again: without this, every page read a second time is moved
        // to the active list (a lock and a list update per page; Linux 6.3+ honours it).
        // SAFETY: plain advice on a descriptor we own; failure is harmless.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::POSIX_FADV_NOREUSE,
            )
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = (cores - 1)
            .clamp(1, CHECK_THREADS)
            .min(expected.len().max(1));
        if expected.is_empty() {
            trusted.store(true, Ordering::Release);
        }
        let work = Arc::new(CheckWork {
            file,
            path: part.to_path_buf(),
            header: header.clone(),
            kind,
            left: AtomicUsize::new(expected.len()),
            expected,
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            bad: AtomicBool::new(false),
            trusted,
        });
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            let theirs = Arc::clone(&work);
            let spawned = std::thread::Builder::new()
                .name("prefix-check".into())
                .spawn(move || theirs.run());
            match spawned {
                Ok(handle) => handles.push(handle),
                // Fewer helpers (perhaps none): the calling thread checks what they leave.
                Err(e) => {
                    tracing::debug!("the prefix check runs on fewer threads: {e}");
                    break;
                }
            }
        }
        Ok(PrefixCheck { work, handles })
    }

    /// The chunks that failed, in order, once every one was checked: the calling thread
    /// takes its share of what is left.
    pub fn finish(self) -> io::Result<Vec<u64>> {
        let mine = self.work.run();
        if mine.is_err() {
            self.work.stop.store(true, Ordering::Relaxed);
        }
        // Every thread is joined before an error is returned.
        let found: Vec<io::Result<Vec<u64>>> = self
            .handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("the prefix check thread panicked")))
            })
            .collect();
        let mut bad = mine?;
        for f in found {
            bad.extend(f?);
        }
        bad.sort_unstable();
        Ok(bad)
    }

    /// Stops it (the download stopped anyway): `true` when it had already found every chunk
    /// good. Checks nothing more on the calling thread.
    pub fn stop(self) -> bool {
        let taken = self.work.next.load(Ordering::Relaxed) >= self.work.expected.len();
        let done = taken && self.handles.iter().all(JoinHandle::is_finished);
        if done {
            // Every chunk was taken and every taker is done: nothing is left to read.
            return self.finish().is_ok_and(|bad| bad.is_empty());
        }
        self.cancel();
        false
    }

    /// Stops early (the download failed anyway).
    fn cancel(self) {
        self.work.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: ChunkCheck = ChunkCheck::Xxh3;

    /// The journal header of `bytes` in chunks of `chunk`, and each chunk's digest.
    fn journaled(bytes: &[u8], chunk: u32) -> (JournalHeader, Vec<[u8; 32]>) {
        let header = JournalHeader {
            path: "f".into(),
            size: bytes.len() as u64,
            mtime_ns: 0,
            chunk_size: chunk,
        };
        let expected = (0..header.chunk_count())
            .map(|i| {
                let (start, end) = header.chunk_range(i);
                KIND.of(&bytes[start as usize..end as usize])
            })
            .collect();
        (header, expected)
    }

    #[test]
    fn the_prefix_check_names_every_bad_chunk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.sfts-part");
        let chunk = 4096u32;
        // Nine chunks, the last one short.
        let mut bytes: Vec<u8> = (0..8 * chunk + 100).map(|i| (i % 253) as u8).collect();
        let (header, expected) = journaled(&bytes, chunk);
        let kind = KIND;
        // Damage chunks taken early and late: 0, 3, 4 and the short last one.
        for i in [0u32, 3, 4, 8] {
            bytes[(i * chunk + 7) as usize] ^= 1;
        }
        std::fs::write(&part, &bytes).unwrap();
        let trusted = Arc::new(AtomicBool::new(false));
        let check = PrefixCheck::start(&part, &header, kind, expected.clone(), trusted.clone());
        assert_eq!(check.unwrap().finish().unwrap(), vec![0, 3, 4, 8]);
        assert!(!trusted.load(Ordering::Acquire), "bad chunks, yet trusted");
        // A partial cut short is an error, not a list.
        std::fs::write(&part, &bytes[..5000]).unwrap();
        let check = PrefixCheck::start(&part, &header, kind, expected, trusted.clone()).unwrap();
        let err = check.finish().unwrap_err();
        assert!(err.to_string().contains("f.sfts-part"), "{err}");
        assert!(!trusted.load(Ordering::Acquire), "unreadable, yet trusted");
    }

    #[test]
    fn a_prefix_found_all_good_is_trusted_as_soon_as_the_last_chunk_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("t.sfts-part");
        let bytes: Vec<u8> = (0..6 * 4096).map(|i| (i % 241) as u8).collect();
        std::fs::write(&part, &bytes).unwrap();
        let (header, expected) = journaled(&bytes, 4096);
        let trusted = Arc::new(AtomicBool::new(false));
        let check = PrefixCheck::start(&part, &header, KIND, expected, trusted.clone()).unwrap();
        // The helpers alone check all six (bounded: 10 s).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !trusted.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            trusted.load(Ordering::Acquire),
            "not trusted once all were checked"
        );
        assert_eq!(check.finish().unwrap(), Vec::<u64>::new());
        // Nothing to check: trusted from the start.
        let none = Arc::new(AtomicBool::new(false));
        let check = PrefixCheck::start(&part, &header, KIND, Vec::new(), none.clone()).unwrap();
        assert!(none.load(Ordering::Acquire));
        assert_eq!(check.finish().unwrap(), Vec::<u64>::new());
    }

    /// A check of `part` against `expected` with no helper thread, whose next chunk to take
    /// is `next` (the helpers took those before), and the work it shares.
    fn without_helpers(
        part: &Path,
        header: JournalHeader,
        expected: Vec<[u8; 32]>,
        next: usize,
    ) -> (PrefixCheck, Arc<CheckWork>) {
        let work = Arc::new(CheckWork {
            file: File::open(part).unwrap(),
            path: part.to_path_buf(),
            header,
            kind: KIND,
            left: AtomicUsize::new(expected.len() - next),
            expected,
            next: AtomicUsize::new(next),
            stop: AtomicBool::new(false),
            bad: AtomicBool::new(false),
            trusted: Arc::new(AtomicBool::new(false)),
        });
        let check = PrefixCheck {
            work: Arc::clone(&work),
            handles: Vec::new(),
        };
        (check, work)
    }

    #[test]
    fn the_calling_thread_checks_what_the_helpers_left() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("g.sfts-part");
        let chunk = 4096u32;
        let bytes: Vec<u8> = (0..16 * chunk).map(|i| (i % 251) as u8).collect();
        std::fs::write(&part, &bytes).unwrap();
        let (header, mut expected) = journaled(&bytes, chunk);
        expected[15] = [0; 32];
        // As if the helpers had stopped after the first five chunks: the rest is the
        // calling thread's, the bad last chunk included.
        let (check, work) = without_helpers(&part, header, expected, 5);
        assert_eq!(check.finish().unwrap(), vec![15]);
        assert!(work.next.load(Ordering::Relaxed) >= 16);
    }

    #[test]
    fn a_stop_with_chunks_left_says_not_all_good_and_reads_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("h.sfts-part");
        let bytes = vec![7u8; 8 * 4096];
        std::fs::write(&part, &bytes).unwrap();
        let (header, expected) = journaled(&bytes, 4096);
        // No helper ran (as if none could be started): every chunk is still to be checked.
        let (check, work) = without_helpers(&part, header.clone(), expected.clone(), 0);
        assert!(!check.stop());
        assert_eq!(work.next.load(Ordering::Relaxed), 0, "nothing was read");
        // Once every chunk was taken and checked, a stop says all good.
        let (check, _) = without_helpers(&part, header, expected, 8);
        assert!(check.stop());
    }
}
