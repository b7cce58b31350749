//! Where fetched bytes go, with the hashing each destination needs.
//!
//! * [`FileSink`]: the partial file `<target>.sfts-part`, the whole-file digest, and the
//!   per-chunk SHA-256 recorded in the journal as each chunk completes;
//! * [`StdoutSink`]: standard output and the whole-file digest;
//! * [`BufferSink`]: one chunk in memory (repairs of a partial file).

use crate::error::ClientError;
use crate::fetch::RangeSink;
use crate::journal::{Journal, JournalHeader};
use sfts_protocol::{Algorithm, Digest, DigestSet, FileHeader, MultiHasher};
use std::fs::File;
use std::io::{self, StdoutLock, Write};
use std::path::PathBuf;

/// SHA-256 of `bytes`, as stored in the journal.
pub fn chunk_digest(bytes: &[u8]) -> [u8; 32] {
    let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Sha256]));
    h.update(bytes);
    let d = h.finish().remove(0);
    d.bytes.as_slice().try_into().expect("SHA-256 is 32 bytes")
}

/// The partial file of a download to disk.
pub struct FileSink {
    file: File,
    /// Where the journal is (created on [`RangeSink::begin`] for a fresh download).
    journal_path: PathBuf,
    journal: Option<Journal>,
    remote: String,
    /// Size of a journal chunk.
    chunk_size: u32,
    /// Bytes in the file so far (the next write goes here).
    pos: u64,
    /// Hash of the whole file so far.
    whole: MultiHasher,
    /// Hash of the current chunk so far.
    chunk: MultiHasher,
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
        FileSink {
            file,
            journal_path,
            journal: None,
            remote: remote.to_string(),
            chunk_size,
            pos: 0,
            whole: MultiHasher::new(DigestSet::of(&[algorithm])),
            chunk: MultiHasher::new(DigestSet::of(&[Algorithm::Sha256])),
        }
    }

    /// A sink that continues a verified partial file at `pos` (a chunk boundary of the
    /// journal), with `whole` already fed with the first `pos` bytes. The file's cursor must
    /// be at `pos`.
    pub fn resumed(
        file: File,
        journal: Journal,
        remote: &str,
        pos: u64,
        whole: MultiHasher,
    ) -> FileSink {
        FileSink {
            file,
            journal_path: journal.path().to_path_buf(),
            chunk_size: journal.header().chunk_size,
            journal: Some(journal),
            remote: remote.to_string(),
            pos,
            whole,
            chunk: MultiHasher::new(DigestSet::of(&[Algorithm::Sha256])),
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Makes the file and the journal durable (before exiting with a partial download).
    pub fn sync(&self) {
        if let Err(e) = self.file.sync_data() {
            tracing::warn!("cannot flush the partial download: {e}");
        }
        if let Some(j) = &self.journal {
            if let Err(e) = j.sync() {
                tracing::warn!("cannot flush the resume journal: {e}");
            }
        }
    }

    /// The file and the whole-file digest; the journal is left on disk (the caller removes
    /// it once the download is verified).
    pub fn finish(self) -> (File, Digest) {
        let digest = self.whole.finish().remove(0);
        (self.file, digest)
    }

    fn record_chunk(&mut self, index: u64) -> io::Result<()> {
        let done = std::mem::replace(
            &mut self.chunk,
            MultiHasher::new(DigestSet::of(&[Algorithm::Sha256])),
        );
        let digest = done.finish().remove(0);
        let bytes: [u8; 32] = digest.bytes.as_slice().try_into().expect("32 bytes");
        if let Some(j) = self.journal.as_mut() {
            j.record(index, bytes)?;
        }
        Ok(())
    }
}

impl RangeSink for FileSink {
    fn begin(&mut self, header: &FileHeader) -> Result<(), ClientError> {
        if self.journal.is_some() {
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
        self.journal = Some(journal);
        Ok(())
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        self.whole.update(buf);
        let Some(size) = self.journal.as_ref().map(|j| j.header().size) else {
            // No journal (a small file of a tree): no chunk digests to keep.
            self.pos += buf.len() as u64;
            return Ok(buf.len());
        };
        let chunk = self.chunk_size as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            let room = chunk - self.pos % chunk;
            let n = room.min(rest.len() as u64) as usize;
            self.chunk.update(&rest[..n]);
            self.pos += n as u64;
            rest = &rest[n..];
            if self.pos % chunk == 0 || self.pos == size {
                self.record_chunk((self.pos - 1) / chunk)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Standard output, hashed.
pub struct StdoutSink {
    out: StdoutLock<'static>,
    whole: MultiHasher,
}

impl StdoutSink {
    /// Locks standard output for the download.
    pub fn new(algorithm: Algorithm) -> StdoutSink {
        StdoutSink {
            out: io::stdout().lock(),
            whole: MultiHasher::new(DigestSet::of(&[algorithm])),
        }
    }

    /// Flushes and returns the digest of everything written.
    pub fn finish(mut self) -> (io::Result<()>, Digest) {
        let flushed = self.out.flush();
        (flushed, self.whole.finish().remove(0))
    }
}

impl RangeSink for StdoutSink {}

impl Write for StdoutSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write_all(buf)?;
        self.whole.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
        let mut sink = FileSink::fresh(file, jpath.clone(), "a/b", 4, Algorithm::Md5);
        sink.begin(&header(10)).unwrap();
        sink.write_all(b"ab").unwrap();
        sink.write_all(b"cdefg").unwrap(); // completes chunk 0, half of chunk 1
        sink.write_all(b"h").unwrap(); // completes chunk 1
        let j = Journal::open(&jpath).unwrap().unwrap();
        assert_eq!(j.confirmed_chunks(), 2);
        assert_eq!(j.chunk(0), Some(chunk_digest(b"abcd")));
        assert_eq!(j.chunk(1), Some(chunk_digest(b"efgh")));
        sink.write_all(b"ij").unwrap(); // the short last chunk
        let j = Journal::open(&jpath).unwrap().unwrap();
        assert_eq!(j.confirmed_bytes(), 10);
        assert_eq!(j.chunk(2), Some(chunk_digest(b"ij")));
        let (_, digest) = sink.finish();
        let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Md5]));
        h.update(b"abcdefghij");
        assert_eq!(digest, h.finish().remove(0));
        assert_eq!(
            std::fs::read(dir.path().join("out.part")).unwrap(),
            b"abcdefghij"
        );
    }
}
