//! Reading a large payload (a `Data` frame's bytes) with a receive low-water mark.
//!
//! A thread blocked in `recv` is woken each time a segment arrives. On loopback a sender
//! delivers 64 KiB at a time and pays for each wake-up of the receiving thread on its own
//! core (in a virtual machine an inter-processor interrupt is an exit to the host): in the
//! fastest integrity mode that was the limit, not the copying. With `SO_RCVLOWAT` the kernel
//! wakes the reader only once that many bytes wait, so each `recv` takes up to 128 KiB.
//! Measured on the 2-core benchmark machine, 1 GiB `get --checksum xxh128 -o -` to
//! /dev/null, 6 alternated pairs: 0.36–0.45 s without, 0.19–0.25 s with it.
//!
//! The mark must never ask for bytes that will not come: the kernel compares it with what
//! waits in the queue, not with what the reader still lacks, so a reader that took part of
//! what it needs and sleeps is woken only when the whole mark waits. Each `recv` therefore
//! sets it to at most half of what this read still needs, all of which the sender has
//! committed to (the frame's length): whatever the reader took before sleeping (less than
//! the mark), at least the mark is still to arrive. Below 16 KiB it is 1 (every byte wakes),
//! and it goes back to 1 when the read ends, however it ends, because the next read (a frame
//! header, a trailer) may be a few bytes. On a slow link a `recv` then returns after up to
//! the mark's bytes rather than after each segment; the payload is handed on only once whole
//! anyway, and a read that reaches the read timeout returns what it has.

use crate::tls::Stream;
use std::io::{self, Read};
use std::net::TcpStream;

/// The largest low-water mark asked for.
pub const MAX_MARK: usize = 128 << 10;

/// Marks smaller than this are not worth a system call: the mark is 1 instead.
pub const MIN_MARK: usize = 16 << 10;

/// A stream that can read a whole large payload; by default `read_exact`.
pub trait BulkRead: Read {
    /// Reads exactly `buf.len()` bytes, which the peer has committed to sending.
    fn read_bulk(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact(buf)
    }
}

impl BulkRead for Stream {
    fn read_bulk(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => read_marked(tcp, buf),
            // rustls reads records into its own buffer: a mark would not match its reads.
            Stream::Tls(tls) => tls.read_exact(buf),
        }
    }
}

/// The low-water mark for a `recv` that still needs `left` bytes.
pub fn mark_for(left: usize) -> usize {
    match (left / 2).min(MAX_MARK) {
        m if m < MIN_MARK => 1,
        m => m,
    }
}

/// `read_exact` with the low-water mark of [`mark_for`] before each `recv`, back to 1 at the
/// end. Where the mark cannot be set, a plain `read_exact`.
pub fn read_marked(tcp: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
    if buf.len() < 2 * MIN_MARK {
        return tcp.read_exact(buf);
    }
    let mut mark = Mark { tcp, now: 1 };
    let mut got = 0;
    while got < buf.len() {
        mark.set(mark_for(buf.len() - got));
        match mark.tcp.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The socket's low-water mark while a read runs; 1 again when dropped.
struct Mark<'a> {
    tcp: &'a mut TcpStream,
    /// The mark set now; 0 once setting it failed (never tried again).
    now: usize,
}

impl Mark<'_> {
    fn set(&mut self, mark: usize) {
        if self.now == 0 || self.now == mark {
            return;
        }
        self.now = match set_mark(self.tcp, mark) {
            Ok(()) => mark,
            Err(e) => {
                tracing::debug!("cannot set the receive low-water mark: {e}");
                // The kernel keeps the mark it had: make sure it is 1.
                let _ = set_mark(self.tcp, 1);
                0
            }
        };
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        if self.now > 1 {
            if let Err(e) = set_mark(self.tcp, 1) {
                tracing::warn!("cannot reset the receive low-water mark: {e}");
            }
        }
    }
}

/// Sets `SO_RCVLOWAT`.
#[cfg(unix)]
fn set_mark(tcp: &TcpStream, mark: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(mark).unwrap_or(libc::c_int::MAX);
    // SAFETY: a live descriptor, and a pointer to a c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_mark(_: &TcpStream, _: usize) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    impl BulkRead for io::Cursor<Vec<u8>> {}

    /// A connected pair on 127.0.0.1: (the reader, the writer).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (r, _) = l.accept().unwrap();
        (r, w)
    }

    #[cfg(target_os = "linux")]
    fn mark_of(tcp: &TcpStream) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live descriptor, and pointers to a c_int and its length.
        let rc = unsafe {
            libc::getsockopt(
                tcp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    #[test]
    fn the_mark_is_half_of_what_is_still_needed_capped_and_1_when_small() {
        assert_eq!(mark_for(10 << 20), MAX_MARK);
        assert_eq!(mark_for(2 * MAX_MARK), MAX_MARK);
        assert_eq!(mark_for(100_000), 50_000);
        assert_eq!(mark_for(2 * MIN_MARK), MIN_MARK);
        assert_eq!(mark_for(2 * MIN_MARK - 2), 1);
        assert_eq!(mark_for(1), 1);
        assert_eq!(mark_for(0), 1);
        // Never more than half: what a sleeping reader lacks always reaches the mark.
        for left in [1, 3, 40_000, 65_537, 300_000, 1 << 20] {
            assert!(mark_for(left) == 1 || 2 * mark_for(left) <= left, "{left}");
        }
    }

    /// Sends `data` in pieces of the given sizes, 10 ms apart, then holds the connection open
    /// (as a server waiting for the next request) while `r` reads it all with its read
    /// timeout at 5 s. Returns how long the read took.
    fn paced_read(r: &mut TcpStream, mut w: TcpStream, data: &[u8], pieces: &[usize]) -> Duration {
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sent = data.to_vec();
        let pieces = pieces.to_vec();
        let writer = std::thread::spawn(move || {
            let mut at = 0;
            for n in pieces {
                w.write_all(&sent[at..at + n]).unwrap();
                at += n;
                std::thread::sleep(Duration::from_millis(10));
            }
            w
        });
        let started = Instant::now();
        let mut got = vec![0u8; data.len()];
        read_marked(r, &mut got).unwrap();
        let took = started.elapsed();
        assert!(got == data, "the bytes differ");
        #[cfg(target_os = "linux")]
        assert_eq!(mark_of(r), 1, "the mark is reset after the read");
        drop(writer.join().unwrap());
        took
    }

    /// The sender pauses with the reader part-way through, in many patterns: wherever a mark
    /// asked for more than will come (all that the read still needs, say, once part of it was
    /// taken) the reader would sleep until its read timeout. Every read must end long before.
    #[test]
    fn a_read_whose_bytes_come_in_bursts_never_waits_for_the_timeout() {
        let mut seed = 0x2545_f491_u64;
        let mut next = move |below: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % below
        };
        for round in 0..16 {
            let pieces: Vec<usize> = (0..8).map(|_| 1 + next(150_000) as usize).collect();
            let total: usize = pieces.iter().sum();
            let data: Vec<u8> = (0..total)
                .map(|i| (i * 7 + i / 251 + round) as u8)
                .collect();
            let (mut r, w) = pair();
            let took = paced_read(&mut r, w, &data, &pieces);
            // 80 ms of pauses; a missed wake-up would be the 5 s timeout.
            assert!(took < Duration::from_millis(2500), "{pieces:?}: {took:?}");
        }
    }

    #[test]
    fn a_read_cut_short_is_an_error_and_resets_the_mark() {
        let (mut r, mut w) = pair();
        r.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&vec![5u8; 200_000]).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            // Closed with 300,000 bytes still owed.
        });
        let mut buf = vec![0u8; 500_000];
        let e = read_marked(&mut r, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(buf[..200_000].iter().all(|b| *b == 5));
        #[cfg(target_os = "linux")]
        assert_eq!(mark_of(&r), 1);
        writer.join().unwrap();
    }

    #[test]
    fn small_reads_and_the_default_read_whole_buffers() {
        let (mut r, mut w) = pair();
        w.write_all(b"0123456789abcdef").unwrap();
        let mut small = [0u8; 16];
        read_marked(&mut r, &mut small).unwrap();
        assert_eq!(&small, b"0123456789abcdef");
        let mut cursor = io::Cursor::new(vec![9u8; 100_000]);
        let mut buf = vec![0u8; 100_000];
        cursor.read_bulk(&mut buf).unwrap();
        assert!(buf.iter().all(|b| *b == 9));
    }
}
