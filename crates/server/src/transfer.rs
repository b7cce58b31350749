//! The chunk loop shared by both protocols: file → (optional frame header) → socket, with one
//! reused buffer, hashing as the bytes pass (when the digests are not cached), a lock-free
//! progress counter and progress logs at the start, every 10 % and the end.

use crate::digest::FileHasher;
use crate::error::ServerError;
use sfts_protocol::frame::{self, HEADER_LEN};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tracing::{info, warn};

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
    /// The client.
    pub peer: SocketAddr,
    /// Where the bytes to send start in the file (for the logs: the reader is already there).
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
}

impl Transfer<'_> {
    /// Sends exactly `self.size` bytes of `file` to `out`, feeding them to `hasher` too if
    /// there is one.
    /// `buf` is reused across calls and grows at most to one chunk plus a frame header.
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
        if self.offset == 0 && self.size == self.file_size {
            info!(
                "sending '{}' ({} bytes) to {}",
                self.name, self.size, self.peer
            );
        } else {
            info!(
                "sending '{}' (bytes {} to {} of {}) to {}",
                self.name,
                self.offset,
                self.offset + self.size,
                self.file_size,
                self.peer
            );
        }
        self.counter.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let mut sent = 0u64;
        let result = self.chunks(file, out, buf, hasher, &mut sent);
        let secs = started.elapsed().as_secs_f64();
        match &result {
            Ok(()) => info!(
                "sent '{}' to {}: {} bytes in {:.2} s ({:.1} MB/s)",
                self.name,
                self.peer,
                sent,
                secs,
                sent as f64 / 1e6 / secs.max(1e-6)
            ),
            Err(e) => warn!(
                "transfer of '{}' to {} stopped after {} of {} bytes ({:.2} s): {e}",
                self.name, self.peer, sent, self.size, secs
            ),
        }
        result
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
        if buf.len() < head + self.chunk {
            buf.resize(head + self.chunk, 0);
        }
        let mut progress = Progress::new(self.size);
        while *sent < self.size {
            if self.stop.load(Ordering::Relaxed) {
                return Err(ServerError::ShuttingDown);
            }
            let want = (self.size - *sent).min(self.chunk as u64) as usize;
            let n = fill(file, &mut buf[head..head + want]).map_err(|source| {
                ServerError::FileRead {
                    name: self.name.to_owned(),
                    source,
                }
            })?;
            if n < want {
                // Shorter than announced: the client cannot get what we promised.
                return Err(ServerError::FileChanged {
                    name: self.name.to_owned(),
                });
            }
            if self.framing == Framing::Native {
                buf[..head].copy_from_slice(&frame::data_header(n));
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[head..head + n]);
            }
            out.write_all(&buf[..head + n]).map_err(ServerError::peer)?;
            *sent += n as u64;
            self.counter.store(*sent, Ordering::Relaxed);
            if let Some(pct) = progress.update(*sent) {
                info!("'{}': {pct}% ({}/{} bytes)", self.name, sent, self.size);
            }
        }
        Ok(())
    }
}

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
            peer: "127.0.0.1:1".parse().unwrap(),
            offset: 0,
            size,
            file_size: size,
            chunk,
            framing,
            counter,
            stop,
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
        assert_eq!(buf.len(), 4096 + HEADER_LEN);
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
