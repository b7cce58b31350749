//! The chunk loop shared by both protocols: file → (optional frame header) → socket, with one
//! reused buffer, hashing as the bytes pass (when the digests are not cached), a lock-free
//! progress counter and progress logs.
//!
//! Three ways to move the bytes:
//!
//! * [`Transfer::run`]: read into the reused buffer, hash, write; for every stream (TLS needs
//!   the bytes) and whenever the bytes must be hashed;
//! * [`Transfer::run_zero_copy`] (Linux, plain TCP, nothing to hash): each frame's 5-byte
//!   header, then its payload straight from the page cache with `sendfile(2)`, never copied
//!   through the server's memory (what nginx does). On loopback the receiving client then
//!   copies from cold page-cache pages, which once made the fastest mode slower and sendfile
//!   was taken out (d64ffcd); measured again under the benchmark's conditions (1.5 GiB touched
//!   and freed before each run, alternated A/B runs, docs/PERFORMANCE.md) it is faster for 64
//!   clients and for SHA-256, and the server's CPU per GiB drops by half or more, so it is back;
//! * [`Transfer::queue`]: a small file's one frame appended to the replies queued for the
//!   client, so a tree of small files goes out in a few large writes.
//!
//! The first frame carries at most [`FIRST_FRAME`] bytes, so the first byte of a file that is
//! not in the page cache does not wait for a whole chunk to be read from the disk.
//!
//! Logs: a transfer of more than one chunk logs its start, every 10 % and its end; one of a
//! single chunk only its end (with bytes, duration and rate), so a tree of small files costs
//! one line per file.

use crate::digest::FileHasher;
use crate::error::ServerError;
use crate::units::{rate_text, seconds_text};
use sfts_protocol::frame::{self, HEADER_LEN};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tracing::{info, warn};

/// Largest first frame of a transfer.
pub const FIRST_FRAME: usize = 64 * 1024;

/// Largest transfer [`Transfer::queue`] takes.
pub const QUEUED_MAX: u64 = 64 * 1024;

/// How each chunk goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Native protocol: every chunk is a `Data` frame.
    Native,
    /// Original protocol: raw bytes.
    Raw,
}

impl Framing {
    /// Bytes kept free at the front of the buffer for the frame header, so header and chunk
    /// go out in one `write_all` without copying the chunk.
    fn headroom(self) -> usize {
        match self {
            Framing::Native => HEADER_LEN,
            Framing::Raw => 0,
        }
    }
}

/// One file going to one client.
pub struct Transfer<'a> {
    /// The path as the client asked for it (for logs and error messages).
    pub name: &'a str,
    /// The client's address.
    pub peer: &'a str,
    /// Where the bytes to send start in the file (the reader is already there; the
    /// zero-copy path reads from here).
    pub offset: u64,
    /// Bytes to send (the length announced to the client).
    pub size: u64,
    /// Size of the whole file (for the logs).
    pub file_size: u64,
    /// Chunk size in bytes.
    pub chunk: usize,
    /// How chunks are framed.
    pub framing: Framing,
    /// Updated after every chunk; read by the registry's snapshots.
    pub counter: &'a AtomicU64,
    /// Set when the server shuts down; checked between chunks.
    pub stop: &'a AtomicBool,
    /// Appended to the end line (where the digests come from, for one-line transfers).
    pub note: &'a str,
}

impl Transfer<'_> {
    /// Sends exactly `self.size` bytes of `file` to `out`, feeding them to `hasher` too if
    /// there is one.
    /// `buf` is reused across calls and grows at most to one chunk plus a frame header plus a
    /// page (each chunk is read to a page boundary in it).
    ///
    /// Errors: [`ServerError::ShuttingDown`] when the stop flag was seen between chunks,
    /// [`ServerError::FileChanged`] when the file ended early, [`ServerError::FileRead`] and
    /// [`ServerError::Peer`] for I/O failures on either side.
    pub fn run<R: Read, W: Write>(
        &self,
        file: &mut R,
        out: &mut W,
        buf: &mut Vec<u8>,
        hasher: Option<&mut FileHasher>,
    ) -> Result<(), ServerError> {
        self.logged(|sent| self.chunks(file, out, buf, hasher, sent))
    }

    /// The length [`Transfer::run`] makes its buffer: a page more than a chunk and its frame
    /// header.
    pub fn buffer_len(&self) -> usize {
        PAGE + self.framing.headroom() + self.chunk
    }

    /// [`Transfer::run`] without hashing and without copying: the payloads go from `file`
    /// (from [`Transfer::offset`]) to the client's socket with `sendfile(2)`. Falls back to
    /// copying through `buf` should the file system not support it.
    #[cfg(target_os = "linux")]
    pub fn run_zero_copy(
        &self,
        file: &std::fs::File,
        link: &mut crate::link::Link,
        buf: &mut Vec<u8>,
    ) -> Result<(), ServerError> {
        self.logged(|sent| self.zero_copy_chunks(file, link, buf, sent))
    }

    /// Appends the whole transfer (at most [`QUEUED_MAX`] bytes: callers send only small
    /// files this way) to `out`, feeding the bytes to `hasher` if there is one. On an error
    /// `out` is left as it was.
    pub fn queue<R: Read>(
        &self,
        file: &mut R,
        out: &mut Vec<u8>,
        hasher: Option<&mut FileHasher>,
    ) -> Result<(), ServerError> {
        debug_assert!(self.size <= QUEUED_MAX);
        self.logged(|sent| {
            let at = out.len();
            let result = self.queue_frames(file, out, hasher, sent);
            if result.is_err() {
                out.truncate(at);
            }
            result
        })
    }

    fn queue_frames<R: Read>(
        &self,
        file: &mut R,
        out: &mut Vec<u8>,
        mut hasher: Option<&mut FileHasher>,
        sent: &mut u64,
    ) -> Result<(), ServerError> {
        let head = self.framing.headroom();
        while *sent < self.size {
            let len = self.next_frame(*sent);
            let at = out.len();
            out.resize(at + head + len, 0);
            let body = at + head;
            let n = fill(file, &mut out[body..]).map_err(|e| self.read_error(e))?;
            if n < len {
                return Err(self.changed());
            }
            if self.framing == Framing::Native {
                out[at..body].copy_from_slice(&frame::data_header(len));
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&out[body..]);
            }
            *sent += len as u64;
        }
        self.counter.store(*sent, Ordering::Relaxed);
        Ok(())
    }

    /// True when the transfer fits in one chunk: then only its end is logged.
    fn one_chunk(&self) -> bool {
        self.size <= self.chunk as u64
    }

    /// Runs `send` (which counts the bytes sent in its argument) between the start and end
    /// log lines.
    fn logged(
        &self,
        send: impl FnOnce(&mut u64) -> Result<(), ServerError>,
    ) -> Result<(), ServerError> {
        let whole = self.offset == 0 && self.size == self.file_size;
        let part = if whole {
            String::new()
        } else {
            format!(
                " (bytes {} to {} of {})",
                self.offset,
                self.offset + self.size,
                self.file_size
            )
        };
        if !self.one_chunk() {
            info!(
                "sending '{}' ({} bytes{}) to {}",
                self.name,
                self.size,
                if whole { "" } else { &part },
                self.peer
            );
        }
        self.counter.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let mut sent = 0u64;
        let result = send(&mut sent);
        let secs = started.elapsed().as_secs_f64();
        match &result {
            Ok(()) => info!(
                "sent '{}'{part} to {}: {} bytes in {}{}{}",
                self.name,
                self.peer,
                sent,
                seconds_text(secs),
                rate_text(sent, secs),
                self.note
            ),
            Err(e) => warn!(
                "transfer of '{}' to {} stopped after {} of {} bytes ({:.2} s): {e}",
                self.name, self.peer, sent, self.size, secs
            ),
        }
        result
    }

    fn read_error(&self, source: io::Error) -> ServerError {
        ServerError::FileRead {
            name: self.name.to_owned(),
            source,
        }
    }

    /// Shorter than announced: the client cannot get what we promised.
    fn changed(&self) -> ServerError {
        ServerError::FileChanged {
            name: self.name.to_owned(),
        }
    }

    /// How many bytes the next frame carries, `sent` bytes in.
    fn next_frame(&self, sent: u64) -> usize {
        let limit = if sent == 0 {
            self.chunk.min(FIRST_FRAME)
        } else {
            self.chunk
        };
        (self.size - sent).min(limit as u64) as usize
    }

    /// After each frame: the counter, the stop flag, the progress lines.
    fn sent_frame(&self, sent: u64, progress: &mut Progress) {
        self.counter.store(sent, Ordering::Relaxed);
        if let Some(pct) = progress.update(sent) {
            info!("'{}': {pct}% ({}/{} bytes)", self.name, sent, self.size);
        }
    }

    fn progress(&self) -> Progress {
        // A one-chunk transfer logs its end only.
        Progress::new(if self.one_chunk() { 0 } else { self.size })
    }

    fn chunks<R: Read, W: Write>(
        &self,
        file: &mut R,
        out: &mut W,
        buf: &mut Vec<u8>,
        mut hasher: Option<&mut FileHasher>,
        sent: &mut u64,
    ) -> Result<(), ServerError> {
        let head = self.framing.headroom();
        if buf.len() < self.buffer_len() {
            buf.resize(self.buffer_len(), 0);
        }
        // The chunk is read to a page boundary of `buf`, its frame header just before it.
        let pad = (buf.as_ptr() as usize + head).wrapping_neg() % PAGE;
        let buf = &mut buf[pad..pad + head + self.chunk];
        let mut progress = self.progress();
        while *sent < self.size {
            if self.stop.load(Ordering::Relaxed) {
                return Err(ServerError::ShuttingDown);
            }
            let want = self.next_frame(*sent);
            let n = fill(file, &mut buf[head..head + want]).map_err(|e| self.read_error(e))?;
            if n < want {
                return Err(self.changed());
            }
            if self.framing == Framing::Native {
                buf[..head].copy_from_slice(&frame::data_header(n));
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[head..head + n]);
            }
            out.write_all(&buf[..head + n]).map_err(ServerError::peer)?;
            *sent += n as u64;
            self.sent_frame(*sent, &mut progress);
        }
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn zero_copy_chunks(
        &self,
        file: &std::fs::File,
        link: &mut crate::link::Link,
        buf: &mut Vec<u8>,
        sent: &mut u64,
    ) -> Result<(), ServerError> {
        let mut progress = self.progress();
        let mut copying = false;
        while *sent < self.size {
            if self.stop.load(Ordering::Relaxed) {
                return Err(ServerError::ShuttingDown);
            }
            let want = self.next_frame(*sent);
            if self.framing == Framing::Native {
                link.write_all_more(&frame::data_header(want))
                    .map_err(ServerError::peer)?;
            }
            let mut left = want;
            while left > 0 {
                let at = self.offset + *sent + (want - left) as u64;
                if copying {
                    copy_at(file, at, left, link, buf).map_err(|e| match e {
                        Copy::Read(e) => self.read_error(e),
                        Copy::Short => self.changed(),
                        Copy::Write(e) => ServerError::peer(e),
                    })?;
                    break;
                }
                match link.send_file(file, at, left) {
                    Ok(0) => return Err(self.changed()),
                    Ok(n) => left -= n,
                    // A file system that cannot splice: copy from here on.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                        copying = true;
                    }
                    // Which side failed is not told apart; the link's own stalls are the
                    // client's, and so, on a local file in the page cache, is nearly
                    // everything else.
                    Err(e) => return Err(ServerError::peer(e)),
                }
            }
            *sent += want as u64;
            self.sent_frame(*sent, &mut progress);
        }
        Ok(())
    }
}

/// What failed in [`copy_at`].
#[cfg(target_os = "linux")]
enum Copy {
    Read(io::Error),
    Short,
    Write(io::Error),
}

/// Copies `len` bytes of `file` from `at` to `out` through `buf`.
#[cfg(target_os = "linux")]
fn copy_at<W: Write>(
    file: &std::fs::File,
    mut at: u64,
    mut len: usize,
    out: &mut W,
    buf: &mut Vec<u8>,
) -> Result<(), Copy> {
    use std::os::unix::fs::FileExt;
    if buf.len() < 64 * 1024 {
        buf.resize(64 * 1024, 0);
    }
    while len > 0 {
        let want = len.min(buf.len());
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) => return Err(Copy::Short),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(Copy::Write)?;
        at += n as u64;
        len -= n;
    }
    Ok(())
}

/// Where [`Transfer::run`] reads each chunk to in its buffer: a page boundary. On some x86
/// machines (measured on AMD EPYC with glibc 2.36) the kernel's copy from the page cache into
/// a buffer a few bytes past a page boundary, where a `Vec` plus a frame header puts it, runs
/// several times slower (see docs/PERFORMANCE.md).
const PAGE: usize = 4096;

/// Reads until `buf` is full or the reader ends; returns how many bytes came.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Decides when to log progress: each time another 10 % boundary is crossed.
struct Progress {
    size: u64,
    next: u64,
}

impl Progress {
    fn new(size: u64) -> Progress {
        Progress { size, next: 10 }
    }

    /// The percentage (a multiple of 10) to log after `sent` bytes, if a boundary was crossed.
    fn update(&mut self, sent: u64) -> Option<u64> {
        if self.size == 0 {
            return None;
        }
        let pct = (sent as u128 * 100 / self.size as u128) as u64;
        if pct < self.next {
            return None;
        }
        let step = pct / 10 * 10;
        self.next = step + 10;
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfts_protocol::io::read_message;
    use sfts_protocol::Message;

    fn transfer<'a>(
        size: u64,
        chunk: usize,
        framing: Framing,
        counter: &'a AtomicU64,
        stop: &'a AtomicBool,
    ) -> Transfer<'a> {
        Transfer {
            name: "f",
            peer: "127.0.0.1:1",
            offset: 0,
            size,
            file_size: size,
            chunk,
            framing,
            counter,
            stop,
            note: "",
        }
    }

    #[test]
    fn progress_steps() {
        let mut p = Progress::new(1000);
        let logged: Vec<u64> = (1..=100).filter_map(|i| p.update(i * 10)).collect();
        assert_eq!(logged, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        let mut p = Progress::new(10);
        assert_eq!(p.update(10), Some(100));
        assert_eq!(p.update(10), None);
        assert_eq!(Progress::new(0).update(0), None);
        let mut p = Progress::new(100);
        assert_eq!(p.update(35), Some(30));
        assert_eq!(p.update(39), None);
        assert_eq!(p.update(40), Some(40));
    }

    /// A reader that notes whether every `read` it got was into a page-aligned buffer.
    struct AlignmentSpy<'d> {
        data: &'d [u8],
        misaligned: usize,
    }

    impl Read for AlignmentSpy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if buf.as_ptr() as usize % PAGE != 0 {
                self.misaligned += 1;
            }
            self.data.read(buf)
        }
    }

    #[test]
    fn chunks_are_read_to_page_boundaries() {
        let data = vec![7u8; 300_000];
        let (counter, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        for framing in [Framing::Native, Framing::Raw] {
            let t = transfer(data.len() as u64, 65_536, framing, &counter, &stop);
            // A buffer that starts off a page boundary, as a Vec does.
            let mut buf = vec![0u8; 17];
            let mut spy = AlignmentSpy {
                data: &data,
                misaligned: 0,
            };
            let mut out = Vec::new();
            t.run(&mut spy, &mut out, &mut buf, None).unwrap();
            assert_eq!(spy.misaligned, 0, "{framing:?}");
            let frames = if framing == Framing::Native { 5 } else { 0 };
            assert_eq!(out.len(), data.len() + frames * HEADER_LEN);
        }
    }

    #[test]
    fn native_frames_and_digest() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31) as u8).collect();
        let (counter, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        let t = transfer(data.len() as u64, 4096, Framing::Native, &counter, &stop);
        let mut hasher = FileHasher::new(data.len() as u64, 4096);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        t.run(&mut &data[..], &mut out, &mut buf, Some(&mut hasher))
            .unwrap();
        assert_eq!(buf.len(), PAGE + 4096 + HEADER_LEN);
        assert_eq!(counter.load(Ordering::Relaxed), 10_000);

        let mut r = &out[..];
        let (mut got, mut sizes, mut rbuf) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(Message::Data(d)) = read_message(&mut r, &mut rbuf).unwrap() {
            sizes.push(d.len());
            got.extend_from_slice(d);
        }
        assert_eq!(sizes, [4096, 4096, 1808]);
        assert_eq!(got, data);
        let mut check = FileHasher::new(data.len() as u64, 4096);
        check.update(&data);
        assert_eq!(hasher.finish(), check.finish());
    }

    #[test]
    fn small_transfers_are_queued_whole_or_not_at_all() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (counter, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        let mut out = b"queued before".to_vec();
        let mut hasher = FileHasher::new(10_000, 4096);
        let t = transfer(10_000, 4096, Framing::Native, &counter, &stop);
        t.queue(&mut &data[..], &mut out, Some(&mut hasher))
            .unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 10_000);
        let mut r = &out[13..];
        let (mut got, mut sizes, mut rbuf) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(Message::Data(d)) = read_message(&mut r, &mut rbuf).unwrap() {
            sizes.push(d.len());
            got.extend_from_slice(d);
        }
        assert_eq!((sizes, got == data), (vec![4096, 4096, 1808], true));
        let mut check = FileHasher::new(10_000, 4096);
        check.update(&data);
        assert_eq!(hasher.finish(), check.finish());
        // A file shorter than announced leaves nothing queued.
        let err = t.queue(&mut &data[..9000], &mut out, None);
        assert!(matches!(err, Err(ServerError::FileChanged { .. })));
        assert_eq!(out.len(), 13 + 10_000 + 3 * HEADER_LEN);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn zero_copy_sends_the_same_frames_and_notices_a_short_file() {
        use crate::link::{Link, Pace};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let (mut client, server) = crate::testing::tcp_pair();
        let pace = Pace {
            window: Duration::from_secs(5),
            min_rate: 0,
        };
        let mut link = Link::new(server, Duration::from_secs(5), Duration::from_secs(5), pace);
        link.end_opening();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            client.read_to_end(&mut all).unwrap();
            all
        });
        let (counter, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        let mut t = transfer(150_000, 32_768, Framing::Native, &counter, &stop);
        t.offset = 50_000;
        t.file_size = 200_000;
        t.run_zero_copy(&file, &mut link, &mut Vec::new()).unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 150_000);
        // Past the end of the file: the file changed.
        let mut past = transfer(10, 4096, Framing::Raw, &counter, &stop);
        past.offset = 199_995;
        let err = past.run_zero_copy(&file, &mut link, &mut Vec::new());
        assert!(matches!(err, Err(ServerError::FileChanged { .. })));
        drop(link);
        let out = reader.join().unwrap();
        let mut r = &out[..];
        let (mut got, mut sizes, mut rbuf) = (Vec::new(), Vec::new(), Vec::new());
        while let Ok(Some(Message::Data(d))) = read_message(&mut r, &mut rbuf) {
            sizes.push(d.len());
            got.extend_from_slice(d);
            if got.len() == 150_000 {
                break;
            }
        }
        assert_eq!(sizes[0], 32_768);
        assert_eq!(sizes.len(), 5);
        assert!(got == data[50_000..], "wrong bytes");
        // The raw transfer's 5 bytes that did exist went out before the end was noticed.
        assert_eq!(r, &data[199_995..]);
    }

    #[test]
    fn raw_short_file_and_stop() {
        let (counter, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        let t = transfer(5, 4096, Framing::Raw, &counter, &stop);
        t.run(&mut &b"hello"[..], &mut out, &mut buf, None).unwrap();
        assert_eq!(out, b"hello");

        let t = transfer(10, 4096, Framing::Raw, &counter, &stop);
        let err = t.run(&mut &b"short"[..], &mut out, &mut buf, None);
        assert!(matches!(err, Err(ServerError::FileChanged { .. })));

        stop.store(true, Ordering::Relaxed);
        let t = transfer(5, 4096, Framing::Raw, &counter, &stop);
        let err = t.run(&mut &b"hello"[..], &mut Vec::new(), &mut buf, None);
        assert!(matches!(err, Err(ServerError::ShuttingDown)));
    }
}
