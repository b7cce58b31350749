//! Thin blocking wrappers that move [`Message`]s over any `Read` / `Write`.

use crate::error::{ProtocolError, Result};
use crate::frame::{self, Header, HEADER_LEN};
use crate::message::Message;
use std::io::{self, Read, Write};

/// Encodes `msg` into `scratch` (cleared first, so one buffer serves a whole connection) and
/// writes it with one `write_all`.
pub fn write_message<W: Write + ?Sized>(
    w: &mut W,
    msg: &Message<'_>,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    scratch.clear();
    msg.encode(scratch);
    w.write_all(scratch)
}

/// Writes one `Data` frame: its header, then `bytes`.
pub fn write_data<W: Write + ?Sized>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&frame::data_header(bytes.len()))?;
    w.write_all(bytes)
}

/// Writes one `PutChunk` frame: its header and fields, then `data` straight from the caller's
/// buffer (no copy into a message). `digest` must be the digest of `data` the upload uses
/// ([`crate::ChunkDigest::of`]).
pub fn write_put_chunk<W: Write + ?Sized>(
    w: &mut W,
    id: u32,
    index: u64,
    digest: &[u8; 32],
    data: &[u8],
) -> io::Result<()> {
    w.write_all(&frame::put_chunk_header(id, index, digest, data.len()))?;
    w.write_all(data)
}

/// Reads exactly `buf.len()` bytes. `Ok(false)` when the stream ended before the first byte;
/// [`ProtocolError::ConnectionClosed`] when it ended part-way.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ProtocolError::ConnectionClosed),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// How far `read_message`'s buffer may grow ahead of the bytes that have actually arrived.
const GROW_AHEAD: usize = 64 * 1024;

/// Reads one frame into `buf` (reused across calls: it only ever grows, up to the largest
/// frame allowed) and decodes it. `Ok(None)`: the peer closed the stream cleanly between
/// frames. The declared length is checked before `buf` grows, and `buf` then grows with the
/// bytes that actually arrive (doubling, at most [`GROW_AHEAD`] ahead of them), so a peer that
/// declares a 16 MiB frame and sends five bytes costs 64 KiB, not 16 MiB.
pub fn read_message<'b, R: Read + ?Sized>(
    r: &mut R,
    buf: &'b mut Vec<u8>,
) -> Result<Option<Message<'b>>> {
    let mut head = [0u8; HEADER_LEN];
    if !read_full(r, &mut head)? {
        return Ok(None);
    }
    let header = Header::parse(&head)?;
    let n = header.payload_len;
    let mut got = 0;
    while got < n {
        let end = n.min(got.saturating_mul(2).max(GROW_AHEAD));
        if buf.len() < end {
            buf.resize(end, 0);
        }
        if !read_full(r, &mut buf[got..end])? {
            return Err(ProtocolError::ConnectionClosed);
        }
        got = end;
    }
    Message::decode_payload(header.tag, &buf[..n]).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;

    #[test]
    fn write_then_read() {
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        write_message(
            &mut wire,
            &Message::Error {
                code: ErrorCode::NotFound,
                message: "nope".into(),
            },
            &mut scratch,
        )
        .unwrap();
        write_data(&mut wire, b"abc").unwrap();

        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_message(&mut r, &mut buf).unwrap(),
            Some(Message::Error {
                code: ErrorCode::NotFound,
                ..
            })
        ));
        assert_eq!(
            read_message(&mut r, &mut buf).unwrap(),
            Some(Message::Data(b"abc"))
        );
        assert_eq!(read_message(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn put_chunk_written_in_place_reads_back() {
        let data = vec![3u8; 70_000];
        let sum = crate::checksum::sha256(&data);
        let mut wire = Vec::new();
        write_put_chunk(&mut wire, 9, 41, &sum, &data).unwrap();
        let mut same = Vec::new();
        Message::PutChunk(crate::PutChunk::new(9, 41, &data)).encode(&mut same);
        assert_eq!(wire, same);
        let mut r = &wire[..];
        let mut buf = Vec::new();
        match read_message(&mut r, &mut buf).unwrap() {
            Some(Message::PutChunk(c)) => {
                assert_eq!((c.id, c.index, c.data.len()), (9, 41, 70_000));
                assert!(c.digest_matches(crate::ChunkDigest::Sha256));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut wire = Vec::new();
        write_data(&mut wire, b"abcdef").unwrap();
        for cut in 1..wire.len() {
            let mut r = &wire[..cut];
            let mut buf = Vec::new();
            assert!(matches!(
                read_message(&mut r, &mut buf),
                Err(ProtocolError::ConnectionClosed)
            ));
        }
    }

    /// Found by the `message` fuzz target (`fuzz/regressions/message/`): a `Data` header
    /// declaring 262,269 bytes and nothing after it made `read_message` allocate (and zero)
    /// all of them before reading a byte. A hostile client could hold 16 MiB of server memory
    /// per connection with five bytes. The buffer now follows the bytes that arrive.
    #[test]
    fn declared_length_is_not_allocated_before_the_bytes_arrive() {
        for head in [
            [0, 4, 0, 125, crate::frame::tag::DATA],
            [0x01, 0x00, 0x00, 0x01, crate::frame::tag::DATA],
            [0x01, 0x00, 0x00, 0x2d, crate::frame::tag::PUT_CHUNK],
        ] {
            let mut r = &head[..];
            let mut buf = Vec::new();
            assert!(matches!(
                read_message(&mut r, &mut buf),
                Err(ProtocolError::ConnectionClosed)
            ));
            assert!(buf.capacity() <= GROW_AHEAD, "{}", buf.capacity());
        }
        // 100 KiB of a declared 16 MiB: the buffer stays within twice what arrived.
        let mut wire = crate::frame::data_header(crate::MAX_CHUNK_SIZE as usize).to_vec();
        wire.extend(std::iter::repeat_n(7u8, 100 * 1024));
        let mut buf = Vec::new();
        assert!(read_message(&mut &wire[..], &mut buf).is_err());
        assert!(buf.capacity() <= 2 * GROW_AHEAD, "{}", buf.capacity());
    }

    #[test]
    fn large_frames_read_whole_and_the_buffer_is_reused() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        write_data(&mut wire, &data).unwrap();
        write_data(&mut wire, b"xyz").unwrap();
        write_data(&mut wire, &data[..GROW_AHEAD + 1]).unwrap();
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert_eq!(
            read_message(&mut r, &mut buf).unwrap(),
            Some(Message::Data(&data))
        );
        let grown = buf.capacity();
        assert_eq!(
            read_message(&mut r, &mut buf).unwrap(),
            Some(Message::Data(b"xyz"))
        );
        assert_eq!(
            read_message(&mut r, &mut buf).unwrap(),
            Some(Message::Data(&data[..GROW_AHEAD + 1]))
        );
        assert_eq!(buf.capacity(), grown, "a reused buffer does not grow again");
    }

    mod properties {
        use super::*;
        use crate::frame::{max_len, tag};
        use proptest::prelude::*;

        proptest! {
            /// A frame declared at any allowed length but cut short costs memory in proportion
            /// to the bytes that arrived, never to the declared length.
            #[test]
            fn memory_follows_the_bytes_that_arrive(
                t in proptest::sample::select(&tag::ALL[..]),
                declared in any::<u32>(),
                present in 0usize..200_000,
            ) {
                let len = declared % max_len(t).unwrap() + 1;
                let payload = len as usize - 1;
                prop_assume!(present < payload);
                let mut wire = crate::frame::Header::encode(t, payload).to_vec();
                wire.resize(HEADER_LEN + present, 0x5a);
                let mut buf = Vec::new();
                let result = read_message(&mut &wire[..], &mut buf);
                prop_assert!(matches!(result, Err(ProtocolError::ConnectionClosed)));
                prop_assert!(buf.capacity() <= GROW_AHEAD.max(2 * present));
            }
        }
    }

    #[test]
    fn huge_declared_length_does_not_allocate() {
        let mut r = &[0x7fu8, 0xff, 0xff, 0xff, crate::frame::tag::DATA][..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_message(&mut r, &mut buf),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert_eq!(buf.capacity(), 0);
    }
}
