//! Where fetched bytes go, with the hashing each destination needs.
//!
//! * [`FileSink`]: the partial file `<target>.sfts-part`, the whole-file digest, and the
//!   per-chunk digest (with the whole-file hash state after it, where it can be saved)
//!   recorded in the journal as each chunk completes;
//! * [`StdoutSink`]: standard output and the whole-file digest;
//! * [`BufferSink`]: one chunk in memory (repairs of a partial file).

use crate::chunk_check::{ChunkCheck, ChunkHasher};
use crate::error::ClientError;
use crate::fetch::RangeSink;
use crate::journal::{Journal, JournalHeader};
use crate::native::Threads;
use crate::seal::{Seal, Watch};
use sfts_protocol::{Algorithm, Digest, DigestSet, FileHeader, MultiHasher};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Cuts the stream of written bytes into journal chunks, hashes each and records it.
struct Chunker {
    journal: Journal,
    chunk_size: u64,
    size: u64,
    /// Bytes seen so far.
    pos: u64,
    /// How chunks are digested.
    kind: ChunkCheck,
    /// Hash of the current chunk so far.
    chunk: ChunkHasher,
}

impl Chunker {
    fn new(journal: Journal, pos: u64) -> Chunker {
        let kind = journal.chunk_digest();
        Chunker {
            chunk_size: journal.header().chunk_size as u64,
            size: journal.header().size,
            journal,
            pos,
            kind,
            chunk: kind.hasher(),
        }
    }

    /// Digests `buf`; `state` (the whole-file hash state after its last byte) and `seal` (the
    /// file once `buf` was in it) are recorded with the chunk that `buf` completes, if any.
    fn feed(
        &mut self,
        buf: &[u8],
        mut state: Option<Vec<u8>>,
        mut seal: Option<Seal>,
    ) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let room = self.chunk_size - self.pos % self.chunk_size;
            let n = room.min(rest.len() as u64) as usize;
            self.chunk.update(&rest[..n]);
            self.pos += n as u64;
            rest = &rest[n..];
            if self.pos % self.chunk_size == 0 || self.pos == self.size {
                let done = std::mem::replace(&mut self.chunk, self.kind.hasher());
                let bytes = done.finish();
                // Both belong to the end of `buf`, so only to a chunk that ends there.
                let (state, seal) = match rest.is_empty() {
                    true => (state.take(), seal.take()),
                    false => (None, None),
                };
                let index = (self.pos - 1) / self.chunk_size;
                self.journal.record_sealed(index, bytes, state, seal)?;
            }
        }
        Ok(())
    }
}

/// Buffers queued for the chunk worker beyond the one it is hashing: none (a rendezvous), so
/// the journal is at most one write (one `Data` frame) behind the file, and a `kill -9` costs
/// at most that and the chunk being written.
const WORKER_QUEUE: usize = 0;

/// A written buffer for the chunk worker.
struct Written {
    buf: Vec<u8>,
    /// The whole-file hash state after it.
    state: Option<Vec<u8>>,
    /// The partial file once it was written (a running seal, [`Watch`]).
    seal: Option<Seal>,
}

/// The per-chunk digests on a second thread, so a download to disk hashes on two cores: the
/// receiving thread computes the whole-file digest, this one the journal's chunk digests.
/// It gets a copy of every written buffer after the bytes are in the file, so a journal line
/// never precedes its data.
struct ChunkWorker {
    tx: Option<SyncSender<Written>>,
    spare: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<io::Result<Journal>>>,
}

impl ChunkWorker {
    fn start(mut chunker: Chunker) -> ChunkWorker {
        let (tx, rx) = sync_channel::<Written>(WORKER_QUEUE);
        let (give_back, spare) = channel::<Vec<u8>>();
        let handle = std::thread::Builder::new()
            .name("chunk-digests".into())
            .spawn(move || {
                for Written { buf, state, seal } in rx {
                    chunker.feed(&buf, state, seal)?;
                    let _ = give_back.send(buf);
                }
                Ok(chunker.journal)
            })
            .expect("cannot start a thread");
        ChunkWorker {
            tx: Some(tx),
            spare,
            handle: Some(handle),
        }
    }

    fn feed(&mut self, buf: &[u8], state: Option<Vec<u8>>, seal: Option<Seal>) -> io::Result<()> {
        let mut copy = self.spare.try_recv().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(buf);
        let written = Written {
            buf: copy,
            state,
            seal,
        };
        let sent = self.tx.as_ref().map(|tx| tx.send(written));
        match sent {
            Some(Ok(())) => Ok(()),
            // The worker stopped: its error says why.
            _ => match self.stop() {
                Err(e) => Err(e),
                Ok(_) => Err(io::Error::other("the chunk digest thread stopped")),
            },
        }
    }

    /// Waits for every queued buffer to be journaled; returns the journal.
    fn stop(&mut self) -> io::Result<Journal> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the chunk digest thread panicked")),
            None => Err(io::Error::other("the chunk digest thread already stopped")),
        }
    }
}

impl Drop for ChunkWorker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The partial file of a download to disk.
pub struct FileSink {
    file: File,
    /// Where the journal is (created on [`RangeSink::begin`] for a fresh download).
    journal_path: PathBuf,
    /// The journal's chunk digests, computed on a second thread; `None` before `begin`, and
    /// for small files of a tree, which keep no journal.
    worker: Option<ChunkWorker>,
    remote: String,
    /// Size of a journal chunk.
    chunk_size: u32,
    /// Size of the whole file, once known.
    size: u64,
    /// Bytes in the file so far (the next write goes here).
    pos: u64,
    /// Hash of the whole file so far.
    whole: MultiHasher,
    /// Whether `whole`'s state can be saved in the journal at each chunk's end.
    saves_state: bool,
    /// Every journaled byte in the file was written by this run, or checked (or found sealed)
    /// before it continued: trusted as far as a download that is never interrupted trusts its
    /// file. Only then does [`FileSink::sync`] seal the file, and each write that completes
    /// a chunk take a running seal. Shared with the check of a resumed partial, which sets it
    /// once every chunk it read back matched.
    trusted: Arc<AtomicBool>,
    /// Watches the file for running seals ([`Watch`]): where the whole-file hash state is
    /// saved (only a resume that continues from it can skip the read-back) and the file
    /// system allows it.
    watch: Option<Watch>,
}

impl FileSink {
    /// A sink for a fresh download into an empty `file`.
    pub fn fresh(
        file: File,
        journal_path: PathBuf,
        remote: &str,
        chunk_size: u32,
        algorithm: Algorithm,
    ) -> FileSink {
        let whole = MultiHasher::resumable(DigestSet::of(&[algorithm]));
        FileSink {
            file,
            journal_path,
            worker: None,
            remote: remote.to_string(),
            chunk_size,
            size: 0,
            pos: 0,
            saves_state: whole.save().is_some(),
            whole,
            trusted: Arc::new(AtomicBool::new(true)),
            watch: None,
        }
    }

    /// A sink that continues a partial file at `pos` (a chunk boundary of the journal), with
    /// `whole` already fed with the first `pos` bytes. The file's cursor must be at `pos`.
    /// `trusted`: whether the first `pos` bytes are known good (else they are being checked
    /// meanwhile, and the check sets it once they all are; until then an interruption leaves
    /// no seal).
    pub fn resumed(
        file: File,
        journal: Journal,
        remote: &str,
        pos: u64,
        whole: MultiHasher,
        trusted: Arc<AtomicBool>,
    ) -> FileSink {
        let saves_state = whole.save().is_some();
        FileSink {
            chunk_size: journal.header().chunk_size,
            size: journal.header().size,
            journal_path: journal.path().to_path_buf(),
            worker: Some(ChunkWorker::start(Chunker::new(journal, pos))),
            watch: saves_state.then(|| Watch::of(&file)).flatten(),
            file,
            remote: remote.to_string(),
            pos,
            saves_state,
            whole,
            trusted,
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Makes the file and the journal durable (before exiting with a partial download), and
    /// seals the file when it is trusted ([`crate::seal`]): the next run need not read it back.
    pub fn sync(&mut self) {
        let synced = self.file.sync_data();
        if let Err(e) = &synced {
            tracing::warn!("cannot flush the partial download: {e}");
        }
        let Some(mut w) = self.worker.take() else {
            return;
        };
        let mut journal = match w.stop() {
            Ok(journal) => journal,
            Err(e) => {
                tracing::warn!("cannot write the resume journal: {e}");
                return;
            }
        };
        if self.trusted.load(Ordering::Acquire) && synced.is_ok() {
            if let Some(seal) = Seal::settled(&self.file) {
                if let Err(e) = journal.record_seal(seal) {
                    tracing::warn!("cannot seal the partial download: {e}");
                }
            }
        } else if let Err(e) = journal.unseal() {
            // A running seal must not outlive a failed flush: the kernel may have dropped
            // pages it could not write without changing the file's size or change time.
            tracing::warn!("cannot unseal the partial download: {e}");
        }
        if let Err(e) = journal.sync() {
            tracing::warn!("cannot flush the resume journal: {e}");
        }
    }

    /// The file and the whole-file digest; the journal is left on disk (the caller removes
    /// it once the download is verified).
    pub fn finish(mut self) -> (File, Digest) {
        if let Some(mut w) = self.worker.take() {
            if let Err(e) = w.stop() {
                tracing::warn!("the resume journal is incomplete: {e}");
            }
        }
        let digest = self.whole.finish().remove(0);
        (self.file, digest)
    }
}

impl RangeSink for FileSink {
    fn begin(&mut self, header: &FileHeader) -> Result<(), ClientError> {
        if self.worker.is_some() {
            return Ok(());
        }
        let journal = Journal::create(
            &self.journal_path,
            JournalHeader {
                path: self.remote.clone(),
                size: header.size,
                mtime_ns: header.mtime_ns,
                chunk_size: self.chunk_size,
            },
        )
        .map_err(|e| {
            ClientError::local("cannot create the resume journal", &self.journal_path, e)
        })?;
        self.size = header.size;
        self.watch = self.saves_state.then(|| Watch::of(&self.file)).flatten();
        self.worker = Some(ChunkWorker::start(Chunker::new(journal, self.pos)));
        Ok(())
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        let Some(w) = self.worker.as_mut() else {
            self.whole.update(buf);
            self.pos += buf.len() as u64;
            return Ok(buf.len());
        };
        // The whole of `buf` is in the file: a running seal taken now, sent with each chunk
        // it completes, holds until the next write.
        let trusted = self.trusted.load(Ordering::Acquire);
        let mut seal = None;
        // Cut at chunk ends, where the whole-file hash state is saved with the chunk's digest.
        let chunk_size = self.chunk_size as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            let n = if self.saves_state {
                (chunk_size - self.pos % chunk_size).min(rest.len() as u64) as usize
            } else {
                rest.len()
            };
            let (part, tail) = rest.split_at(n);
            self.whole.update(part);
            self.pos += n as u64;
            let at_chunk_end = self.pos % chunk_size == 0 || self.pos == self.size;
            let state = if self.saves_state && at_chunk_end {
                self.whole.save()
            } else {
                None
            };
            // `watch` is only kept where states are saved.
            let sealed = match &self.watch {
                Some(watch) if trusted && at_chunk_end => {
                    seal.get_or_insert_with(|| watch.seal(&self.file)).clone()
                }
                _ => None,
            };
            w.feed(part, state, sealed)?;
            rest = tail;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// True when this CPU has SHA-256 instructions (x86 SHA extensions, Arm SHA2).
fn sha256_in_hardware() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("sha")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("sha2")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Standard output, hashed.
///
/// Written through a duplicate of descriptor 1 as a plain [`File`], one `write` per `Data`
/// payload (or piece of one, see [`Threads::Hot`]) straight from the receive buffer.
/// `Stdout` is a `LineWriter`: for every payload it searches the bytes for a newline and
/// splits the write there, an extra pass over each byte and an extra system call per frame
/// (measured: 2.12 → 2.32 GB/s for BLAKE3 to /dev/null).
pub struct StdoutSink {
    out: Option<File>,
    whole: MultiHasher,
    algorithm: Algorithm,
}

impl StdoutSink {
    /// Opens standard output for the download.
    pub fn new(algorithm: Algorithm) -> StdoutSink {
        // Whatever went to `Stdout` before must come first.
        let _ = io::stdout().flush();
        let out = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .ok();
        StdoutSink {
            out,
            whole: MultiHasher::new(DigestSet::of(&[algorithm])),
            algorithm,
        }
    }

    /// Flushes and returns the digest of everything written.
    pub fn finish(mut self) -> (io::Result<()>, Digest) {
        let flushed = self.flush();
        (flushed, self.whole.finish().remove(0))
    }
}

impl RangeSink for StdoutSink {
    /// BLAKE3 hashes at several GB/s on one core: handing each frame to a second thread costs
    /// CPU (about a seventh more for the download) that only a large one wins back. XXH128,
    /// at over ten, never does. SHA-256 in hardware hashes faster from the cache than from
    /// memory: it takes the bytes in pieces (see `native::PIECE`); in software it is as slow
    /// as MD5, which the extra hand-overs cost more than the cache saves.
    fn threads(&self) -> Threads {
        match self.algorithm {
            Algorithm::Blake3 => Threads::LargeOnly,
            Algorithm::Xxh128 => Threads::One,
            Algorithm::Sha256 if sha256_in_hardware() => Threads::Hot,
            Algorithm::Sha256 | Algorithm::Md5 => Threads::Auto,
        }
    }
}

impl Write for StdoutSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.as_mut() {
            Some(f) => f.write_all(buf)?,
            // Descriptor 1 could not be duplicated (closed?): let `Stdout` report it.
            None => io::stdout().lock().write_all(buf)?,
        }
        self.whole.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(f) => f.flush(),
            None => io::stdout().flush(),
        }
    }
}

/// One chunk in memory.
#[derive(Default)]
pub struct BufferSink(pub Vec<u8>);

impl RangeSink for BufferSink {}

impl Write for BufferSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::journal_path;

    fn header(size: u64) -> FileHeader {
        FileHeader {
            size,
            offset: 0,
            length: size,
            mtime_ns: 7,
            chunk_size: 4,
        }
    }

    #[test]
    fn chunks_are_journaled_as_they_complete_whatever_the_write_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let file = File::create(dir.path().join("out.part")).unwrap();
        let jpath = journal_path(&target);
        let mut sink = FileSink::fresh(file, jpath.clone(), "a/b", 4, Algorithm::Xxh128);
        sink.begin(&header(10)).unwrap();
        sink.write_all(b"ab").unwrap();
        sink.write_all(b"cdefg").unwrap(); // completes chunk 0, half of chunk 1
        sink.write_all(b"h").unwrap(); // completes chunk 1
        sink.write_all(b"ij").unwrap(); // the short last chunk
        let (_, digest) = sink.finish();
        let j = Journal::open(&jpath).unwrap().unwrap();
        assert_eq!(j.confirmed_bytes(), 10);
        assert_eq!(j.chunk(0), Some(ChunkCheck::Xxh3.of(b"abcd")));
        assert_eq!(j.chunk(1), Some(ChunkCheck::Xxh3.of(b"efgh")));
        assert_eq!(j.chunk(2), Some(ChunkCheck::Xxh3.of(b"ij")));
        // XXH128's state cannot be saved.
        assert_eq!(j.state_after(0), None);
        let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Xxh128]));
        h.update(b"abcdefghij");
        assert_eq!(digest, h.finish().remove(0));
        assert_eq!(
            std::fs::read(dir.path().join("out.part")).unwrap(),
            b"abcdefghij"
        );
    }

    /// A SHA-256 download of `part` resumed at byte 4 (its first chunk, "abcd", journaled),
    /// while that chunk is still being checked (until `trusted` is set).
    fn resumed_at_4(
        part: &std::path::Path,
        jpath: &std::path::Path,
        trusted: &Arc<AtomicBool>,
    ) -> FileSink {
        let mut file = std::fs::OpenOptions::new().write(true).open(part).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(4)).unwrap();
        let mut j = Journal::open(jpath).unwrap().unwrap();
        j.unseal().unwrap();
        let mut whole = MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]));
        whole.update(b"abcd");
        FileSink::resumed(file, j, "a/b", 4, whole, Arc::clone(trusted))
    }

    #[test]
    fn a_stop_seals_the_partial_only_when_every_journaled_byte_is_known_good() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("out.part");
        let jpath = journal_path(&dir.path().join("out"));
        // Fresh: everything in the file was written by this run.
        let file = File::create(&part).unwrap();
        let mut sink = FileSink::fresh(file, jpath.clone(), "a/b", 4, Algorithm::Sha256);
        sink.begin(&header(10)).unwrap();
        sink.write_all(b"abcdef").unwrap();
        sink.sync();
        let j = Journal::open(&jpath).unwrap().unwrap();
        let seal = j.seal().expect("sealed").clone();
        assert!(seal.matches(&File::open(&part).unwrap()));
        assert_eq!(seal.size, 6);
        // Resumed while its prefix is still being checked: not sealed, until trusted.
        for trust in [false, true] {
            let checked = Arc::new(AtomicBool::new(false));
            let mut sink = resumed_at_4(&part, &jpath, &checked);
            sink.write_all(b"ef").unwrap();
            if trust {
                checked.store(true, Ordering::Release);
            }
            sink.sync();
            let j = Journal::open(&jpath).unwrap().unwrap();
            assert_eq!(j.seal().is_some(), trust, "trusted: {trust}");
        }
    }

    #[test]
    fn a_run_that_is_killed_leaves_the_seal_of_its_last_chunk_only_where_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("out.part");
        let jpath = journal_path(&dir.path().join("out"));
        let file = File::create(&part).unwrap();
        let watched = Watch::of(&file).is_some();
        assert!(watched || !crate::seal::multigrain_expected(&file));
        let mut sink = FileSink::fresh(file, jpath.clone(), "a/b", 4, Algorithm::Sha256);
        sink.begin(&header(10)).unwrap();
        // Chunk 0, then what a kill -9 before the next write leaves: the journal as the
        // chunk thread wrote it, no clean stop.
        sink.write_all(b"abcd").unwrap();
        drop(sink);
        let j = Journal::open(&jpath).unwrap().unwrap();
        assert_eq!(j.confirmed_bytes(), 4);
        assert_eq!(j.seal().is_some(), watched);
        if let Some(seal) = j.seal() {
            assert!(seal.matches(&File::open(&part).unwrap()));
            // The next chunk's bytes (a kill while they were written), or any other change,
            // void it.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .and_then(|mut f| f.write_all(b"e"))
                .unwrap();
            assert!(!seal.matches(&File::open(&part).unwrap()));
        }
        // Resumed while its prefix is still being checked: no running seal until the check
        // found it good.
        let trusted = Arc::new(AtomicBool::new(false));
        let mut sink = resumed_at_4(&part, &jpath, &trusted);
        sink.write_all(b"efgh").unwrap();
        // The chunk thread journals it meanwhile (bounded wait: 10 s).
        let journaled = || std::fs::read_to_string(&jpath).unwrap().contains("\n1 ");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !journaled() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(journaled());
        trusted.store(true, Ordering::Release);
        sink.write_all(b"ij").unwrap();
        drop(sink);
        let j = Journal::open(&jpath).unwrap().unwrap();
        assert_eq!(j.confirmed_bytes(), 10);
        assert_eq!(
            j.seal().is_some(),
            watched,
            "the chunk after the check is sealed"
        );
        let text = std::fs::read_to_string(&jpath).unwrap();
        let after_unsealed = &text[text.rfind("unsealed").unwrap()..];
        assert_eq!(
            after_unsealed.matches("sealed ").count(),
            usize::from(watched),
            "{text}"
        );
    }

    #[test]
    fn sha256_and_md5_states_are_saved_at_every_chunk_end_even_inside_a_write() {
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("out");
            let file = File::create(dir.path().join("out.part")).unwrap();
            let jpath = journal_path(&target);
            let mut sink = FileSink::fresh(file, jpath.clone(), "a/b", 4, algorithm);
            sink.begin(&header(10)).unwrap();
            sink.write_all(b"abcdef").unwrap(); // chunk 0 ends inside this write
            sink.write_all(b"ghij").unwrap();
            let (_, digest) = sink.finish();
            assert_eq!(digest.algorithm, algorithm);
            let j = Journal::open(&jpath).unwrap().unwrap();
            for (index, rest) in [(0u64, &b"efghij"[..]), (1, b"ij"), (2, b"")] {
                let mut h = MultiHasher::restore(j.state_after(index).unwrap()).unwrap();
                h.update(rest);
                assert_eq!(
                    h.finish().remove(0),
                    digest,
                    "{algorithm:?} after chunk {index}"
                );
            }
            assert_eq!(j.chunk(0), Some(ChunkCheck::Xxh3.of(b"abcd")));
        }
    }
}
