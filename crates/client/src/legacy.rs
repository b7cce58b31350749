//! The original protocol, client side: request, `OK`/`ERROR`, metadata, raw bytes, close.
//!
//! The status, the metadata and the first data bytes may arrive in one read or in many; bytes
//! read past what was being decoded are kept and handed to the next step.

use crate::error::{ClientError, Kept};
use crate::transfer::{early_read_failed, Context, Stop, Stopped};
use sfts_protocol::legacy::{self, Metadata, Status};
use sfts_protocol::ProtocolError;
use std::io::{self, Read, Write};
use std::time::Duration;

/// Largest error message read after `ERROR`; the rest is ignored.
const MAX_ERROR_LEN: usize = 64 * 1024;

/// Size of the reads before the data starts.
const HEAD_READ: usize = 8 * 1024;

/// The server accepted the request: its metadata, and any data bytes already read.
#[derive(Debug)]
pub struct Accepted {
    /// Name, size and MD5 as the server announced them.
    pub metadata: Metadata,
    /// Data bytes that arrived together with the metadata.
    pub leftover: Vec<u8>,
}

/// Reads more bytes into `buf`; `Ok(false)` at the end of the stream.
fn fill<R: Read>(stream: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; HEAD_READ];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends the request for `remote` and reads the reply up to the start of the data.
pub fn request<S: Read + Write>(
    stream: &mut S,
    remote: &str,
    timeout: Duration,
) -> Result<Accepted, ClientError> {
    let mut out = Vec::with_capacity(4 + remote.len());
    legacy::encode_request(remote, &mut out);
    let sent = stream.write_all(&out);

    let mut buf = Vec::new();
    let stage = "waiting for the reply";
    let eof = |sent: &io::Result<()>| ClientError::Disconnected {
        stage,
        reason: match sent {
            Err(e) => format!("cannot send the request: {e}"),
            Ok(()) => "the server closed the connection".into(),
        },
    };
    let read_err = |e: io::Error| early_read_failed(stage, ProtocolError::Io(e), timeout);
    let protocol = |e: ProtocolError| ClientError::Protocol {
        detail: e.to_string(),
        kept: Kept::Nothing,
    };

    let (status, used) = loop {
        if let Some(found) = legacy::decode_status(&buf).map_err(protocol)? {
            break found;
        }
        if !fill(stream, &mut buf).map_err(read_err)? {
            return Err(eof(&sent));
        }
    };
    buf.drain(..used);

    if status == Status::Error {
        // The message runs to the end of the stream. A server that stops talking without
        // closing still gets its words shown: a read failure ends the message.
        while buf.len() < MAX_ERROR_LEN {
            match fill(stream, &mut buf) {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        buf.truncate(MAX_ERROR_LEN);
        let text = String::from_utf8_lossy(&buf).trim().to_string();
        return Err(ClientError::Refused {
            remote: remote.to_string(),
            message: if text.is_empty() {
                "the server answered ERROR without a message".into()
            } else {
                text
            },
        });
    }

    let stage = "reading the file's metadata";
    let read_err = |e: io::Error| early_read_failed(stage, ProtocolError::Io(e), timeout);
    loop {
        if let Some((metadata, used)) = Metadata::decode(&buf).map_err(protocol)? {
            buf.drain(..used);
            return Ok(Accepted {
                metadata,
                leftover: buf,
            });
        }
        if !fill(stream, &mut buf).map_err(read_err)? {
            return Err(ClientError::Disconnected {
                stage,
                reason: "the server closed the connection".into(),
            });
        }
    }
}

/// Receives exactly `size` bytes (the `leftover` first) into `sink`, reading with `buf`.
pub fn receive<R: Read, W: Write>(
    stream: &mut R,
    leftover: &[u8],
    size: u64,
    sink: &mut W,
    buf: &mut [u8],
    ctx: &Context<'_>,
) -> Result<(), Stopped> {
    let mut received = 0u64;
    if leftover.len() as u64 > size {
        let detail = format!(
            "it sent more than the {size} bytes it announced ({} in its first packet)",
            leftover.len()
        );
        return Err(ctx.stop(0, Stop::Protocol(detail)));
    }
    ctx.deliver(sink, leftover, &mut received)?;
    while received < size {
        let want = (size - received).min(buf.len() as u64) as usize;
        match stream.read(&mut buf[..want]) {
            Ok(0) => {
                let reason = "the server closed the connection".to_string();
                return Err(ctx.stop(received, Stop::Lost(reason)));
            }
            Ok(n) => ctx.deliver(sink, &buf[..n], &mut received)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ctx.read_failed(received, ProtocolError::Io(e))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::Interrupt;
    use crate::progress::Progress;
    use sfts_protocol::checksum::HashingWriter;
    use sfts_protocol::{Algorithm, Digest, DigestSet, MultiHasher};
    use std::collections::VecDeque;

    /// A stream that hands out the server's bytes in the given pieces, one per read, and
    /// records what the client writes.
    struct Pieces {
        pieces: VecDeque<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Pieces {
        fn new(pieces: &[&[u8]]) -> Pieces {
            Pieces {
                pieces: pieces.iter().map(|p| p.to_vec()).collect(),
                written: Vec::new(),
            }
        }
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut piece) = self.pieces.pop_front() else {
                return Ok(0);
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            if n < piece.len() {
                self.pieces.push_front(piece.split_off(n));
            }
            Ok(n)
        }
    }

    impl Write for Pieces {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn md5(data: &[u8]) -> Digest {
        let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Md5]));
        h.update(data);
        h.finish().remove(0)
    }

    fn metadata(name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Metadata {
            name: name.into(),
            size: data.len() as u64,
            md5: md5(data),
        }
        .encode(&mut out);
        out
    }

    /// Runs request + receive; returns what the client sent, what the sink got, and the
    /// server's and our MD5.
    fn fetch(pieces: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>, Digest, Digest), ClientError> {
        let mut s = Pieces::new(pieces);
        let accepted = request(&mut s, "dir/r.pdf", Duration::from_secs(10))?;
        let interrupt = Interrupt::new();
        let progress = Progress::hidden();
        let ctx = Context {
            interrupt: &interrupt,
            progress: &progress,
            timeout: Duration::from_secs(10),
        };
        let size = accepted.metadata.size;
        let mut sink = HashingWriter::new(Vec::new(), DigestSet::of(&[Algorithm::Md5]));
        let mut buf = vec![0u8; 5];
        receive(&mut s, &accepted.leftover, size, &mut sink, &mut buf, &ctx)
            .map_err(|st| crate::transfer::into_error(st, size, Kept::Nothing))?;
        let (got, mut ours) = sink.finish();
        Ok((s.written, got, accepted.metadata.md5, ours.remove(0)))
    }

    #[test]
    fn status_alone_then_metadata_then_data() {
        let data = b"the quick brown fox";
        let meta = metadata("r.pdf", data);
        let (sent, got, theirs, ours) = fetch(&[b"OK", &meta, &data[..7], &data[7..]]).unwrap();
        assert_eq!(sent, b"\0\0\0\x09dir/r.pdf");
        assert_eq!(got, data);
        assert_eq!(theirs, ours);
    }

    #[test]
    fn everything_in_one_packet() {
        let data = b"the quick brown fox";
        let all = [&b"OK"[..], &metadata("r.pdf", data), data].concat();
        let (_, got, theirs, ours) = fetch(&[&all]).unwrap();
        assert_eq!(got, data);
        assert_eq!(theirs, ours);
    }

    #[test]
    fn byte_by_byte() {
        let data = b"0123456789";
        let all = [&b"OK"[..], &metadata("r.pdf", data), data].concat();
        let pieces: Vec<&[u8]> = all.chunks(1).collect();
        let (_, got, ..) = fetch(&pieces).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn empty_file() {
        let all = [&b"OK"[..], &metadata("e", b"")].concat();
        let (_, got, theirs, ours) = fetch(&[&all]).unwrap();
        assert!(got.is_empty());
        assert_eq!(theirs, ours);
    }

    #[test]
    fn md5_mismatch_is_reported_to_the_caller() {
        let mut meta = metadata("r.pdf", b"abc");
        let n = meta.len();
        meta[n - 1] = if meta[n - 1] == b'0' { b'1' } else { b'0' };
        let (_, got, theirs, ours) = fetch(&[b"OK", &meta, b"abc"]).unwrap();
        assert_eq!(got, b"abc");
        assert_ne!(theirs, ours);
    }

    #[test]
    fn error_status_with_message() {
        let e = fetch(&[b"ERROR", b"File 'dir/r.pdf' not found on server"]).unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert_eq!(
            e.to_string(),
            "server refused 'dir/r.pdf': File 'dir/r.pdf' not found on server"
        );
        let e = fetch(&[b"ERRORFile 'x' not found on server"]).unwrap_err();
        assert!(e.to_string().ends_with(": File 'x' not found on server"));
        let e = fetch(&[b"ER", b"ROR"]).unwrap_err();
        assert!(matches!(e, ClientError::Refused { .. }));
    }

    #[test]
    fn early_eof_everywhere() {
        let data = b"0123456789";
        let meta = metadata("r.pdf", data);
        assert_eq!(fetch(&[]).unwrap_err().exit_code(), 6);
        assert_eq!(fetch(&[b"OK", &meta[..10]]).unwrap_err().exit_code(), 6);
        let e = fetch(&[b"OK", &meta, &data[..4]]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("connection lost after 4 of 10 bytes"),
            "{e}"
        );
    }

    #[test]
    fn garbage_and_too_much_data() {
        let e = fetch(&[b"HTTP/1.1 400"]).unwrap_err();
        assert!(matches!(e, ClientError::Protocol { .. }), "{e}");
        let all = [&b"OK"[..], &metadata("r", b"ab"), b"abc"].concat();
        assert!(matches!(
            fetch(&[&all]).unwrap_err(),
            ClientError::Protocol { .. }
        ));
    }
}
