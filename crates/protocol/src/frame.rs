//! Native framing: every message after the 4-byte magic is one frame,
//!
//! ```text
//! +----------------+---------+----------------------+
//! | length: u32 BE | tag: u8 | payload (length - 1) |
//! +----------------+---------+----------------------+
//! ```
//!
//! `length` counts the tag byte and the payload. Each tag has its own maximum, checked as soon as
//! the five header bytes are in, before anything is allocated for the payload.

use crate::error::{ProtocolError, Result};
use crate::MAX_CHUNK_SIZE;

/// Bytes of a `PutChunk` payload before the chunk's data: upload id (`u32`), chunk index
/// (`u64`) and the chunk's digest (32 bytes: SHA-256 or BLAKE3).
pub const PUT_CHUNK_FIELDS_LEN: usize = 4 + 8 + 32;

/// Bytes in a frame header (length + tag).
pub const HEADER_LEN: usize = 5;

/// Largest declared length of any control (non-data) frame: paths, error messages and digests
/// all fit far below it.
pub const MAX_CONTROL_LEN: u32 = 64 * 1024;

/// Largest declared length of a `Data` frame: one chunk plus its tag byte.
pub const MAX_DATA_LEN: u32 = MAX_CHUNK_SIZE + 1;

/// Largest declared length of a `PutChunk` frame: its tag, its fixed fields and one chunk of
/// at most [`MAX_CHUNK_SIZE`] bytes, so uploads use the same chunk sizes as downloads.
pub const MAX_PUT_CHUNK_LEN: u32 = MAX_CHUNK_SIZE + 1 + PUT_CHUNK_FIELDS_LEN as u32;

/// Message type tags.
pub mod tag {
    /// Client → server: opens a native session.
    pub const HELLO: u8 = 0x01;
    /// Server → client: accepts the session, states version and capabilities.
    pub const WELCOME: u8 = 0x02;
    /// Client → server: asks for a file.
    pub const GET: u8 = 0x10;
    /// Client → server: describe a path.
    pub const STAT: u8 = 0x14;
    /// Server → client: the answer to `Stat`.
    pub const FILE_INFO: u8 = 0x15;
    /// Server → client: the file exists; its size and where the data starts.
    pub const FILE_HEADER: u8 = 0x11;
    /// Either way: a chunk of file data.
    pub const DATA: u8 = 0x12;
    /// Server → client: end of the data, with the digests computed while sending.
    pub const TRAILER: u8 = 0x13;
    /// Client → server: the priority of the requests that follow (capability `PRIORITY`).
    pub const SET_PRIORITY: u8 = 0x16;
    /// Client → server: list a directory, optionally the whole tree (capability `LIST`).
    pub const LIST: u8 = 0x17;
    /// Server → client: some entries of a listing.
    pub const LIST_ENTRIES: u8 = 0x18;
    /// Server → client: the listing is complete.
    pub const LIST_END: u8 = 0x19;
    /// Client → server: open (or resume) an upload (capability `UPLOAD`).
    pub const PUT_BEGIN: u8 = 0x20;
    /// Server → client: the upload is open; the chunks the server already holds.
    pub const PUT_READY: u8 = 0x21;
    /// Client → server: one chunk of an upload, with its digest.
    pub const PUT_CHUNK: u8 = 0x22;
    /// Server → client: a chunk was verified and stored.
    pub const CHUNK_ACK: u8 = 0x23;
    /// Server → client: a chunk was not stored, and why.
    pub const CHUNK_REJECTED: u8 = 0x24;
    /// Client → server: every chunk is sent; verify and publish.
    pub const PUT_COMMIT: u8 = 0x25;
    /// Server → client: the upload is published under its name.
    pub const PUT_DONE: u8 = 0x26;
    /// Client → server: give the upload up and delete what the server holds of it.
    pub const PUT_ABORT: u8 = 0x27;
    /// Server → client: the upload is gone.
    pub const PUT_ABORTED: u8 = 0x28;
    /// Client → server: create a directory (and its parents) (capability `UPLOAD`).
    pub const MKDIR: u8 = 0x29;
    /// `Auth`.
    pub const AUTH: u8 = 0x2a;
    /// `AuthOk`.
    pub const AUTH_OK: u8 = 0x2b;
    /// Client → server: commit a digest-at-commit upload, with its whole-file digests
    /// (capability `STREAM_PUT`).
    pub const PUT_COMMIT_DIGESTS: u8 = 0x2c;
    /// Either way: a refusal or failure, with a code and a human message.
    pub const ERROR: u8 = 0x7f;

    /// Every tag this version knows, in tag order.
    pub const ALL: [u8; 26] = [
        HELLO,
        WELCOME,
        GET,
        FILE_HEADER,
        DATA,
        TRAILER,
        STAT,
        FILE_INFO,
        SET_PRIORITY,
        LIST,
        LIST_ENTRIES,
        LIST_END,
        PUT_BEGIN,
        PUT_READY,
        PUT_CHUNK,
        CHUNK_ACK,
        CHUNK_REJECTED,
        PUT_COMMIT,
        PUT_DONE,
        PUT_ABORT,
        PUT_ABORTED,
        MKDIR,
        AUTH,
        AUTH_OK,
        PUT_COMMIT_DIGESTS,
        ERROR,
    ];
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type.
    pub tag: u8,
    /// Payload length (the declared length minus the tag byte).
    pub payload_len: usize,
}

/// The largest declared length allowed for `tag`, or an error for an unknown tag.
pub fn max_len(tag: u8) -> Result<u32> {
    match tag {
        tag::DATA => Ok(MAX_DATA_LEN),
        tag::PUT_CHUNK => Ok(MAX_PUT_CHUNK_LEN),
        tag::HELLO
        | tag::WELCOME
        | tag::GET
        | tag::STAT
        | tag::FILE_INFO
        | tag::FILE_HEADER
        | tag::TRAILER
        | tag::SET_PRIORITY
        | tag::LIST
        | tag::LIST_ENTRIES
        | tag::LIST_END
        | tag::PUT_BEGIN
        | tag::PUT_READY
        | tag::CHUNK_ACK
        | tag::CHUNK_REJECTED
        | tag::PUT_COMMIT
        | tag::PUT_DONE
        | tag::PUT_ABORT
        | tag::PUT_ABORTED
        | tag::MKDIR
        | tag::AUTH
        | tag::AUTH_OK
        | tag::PUT_COMMIT_DIGESTS
        | tag::ERROR => Ok(MAX_CONTROL_LEN),
        other => Err(ProtocolError::UnknownTag(other)),
    }
}

impl Header {
    /// Parses and validates the five header bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let tag = bytes[4];
        if len == 0 {
            return Err(ProtocolError::EmptyFrame);
        }
        let max = max_len(tag)?;
        if len > max {
            return Err(ProtocolError::FrameTooLarge {
                tag,
                len: len as u64,
                max: max as u64,
            });
        }
        Ok(Header {
            tag,
            payload_len: len as usize - 1,
        })
    }

    /// Encodes a header for a payload of `payload_len` bytes.
    pub fn encode(tag: u8, payload_len: usize) -> [u8; HEADER_LEN] {
        let len = (payload_len + 1) as u32;
        let l = len.to_be_bytes();
        [l[0], l[1], l[2], l[3], tag]
    }
}

/// The header of a `Data` frame carrying `len` bytes, so senders can write the header and then
/// the chunk straight from their own buffer (or from the file, with `sendfile`).
pub fn data_header(len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= MAX_CHUNK_SIZE as usize);
    Header::encode(tag::DATA, len)
}

/// Bytes of a `PutChunk` frame before its data: the frame header and the chunk's fields.
pub const PUT_CHUNK_HEADER_LEN: usize = HEADER_LEN + PUT_CHUNK_FIELDS_LEN;

/// The start of a `PutChunk` frame carrying `len` data bytes, so an uploader can write it and
/// then the chunk straight from its own buffer, without copying the chunk into a message.
pub fn put_chunk_header(
    id: u32,
    index: u64,
    digest: &[u8; 32],
    len: usize,
) -> [u8; PUT_CHUNK_HEADER_LEN] {
    debug_assert!(len <= MAX_CHUNK_SIZE as usize);
    let mut out = [0u8; PUT_CHUNK_HEADER_LEN];
    out[..HEADER_LEN].copy_from_slice(&Header::encode(tag::PUT_CHUNK, PUT_CHUNK_FIELDS_LEN + len));
    out[5..9].copy_from_slice(&id.to_be_bytes());
    out[9..17].copy_from_slice(&index.to_be_bytes());
    out[17..].copy_from_slice(digest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        assert_eq!(data_header(3), [0, 0, 0, 4, 0x12]);
        let h = Header::parse(&[0, 0, 0, 4, 0x12]).unwrap();
        assert_eq!(
            h,
            Header {
                tag: tag::DATA,
                payload_len: 3
            }
        );
    }

    #[test]
    fn limits_checked_before_allocation() {
        assert!(matches!(
            Header::parse(&[0xff, 0xff, 0xff, 0xff, tag::DATA]),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        let just_over = (MAX_CONTROL_LEN + 1).to_be_bytes();
        assert!(matches!(
            Header::parse(&[
                just_over[0],
                just_over[1],
                just_over[2],
                just_over[3],
                tag::GET
            ]),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        let max_data = MAX_DATA_LEN.to_be_bytes();
        assert!(Header::parse(&[
            max_data[0],
            max_data[1],
            max_data[2],
            max_data[3],
            tag::DATA
        ])
        .is_ok());
    }

    #[test]
    fn put_chunk_limit_leaves_room_for_a_full_chunk() {
        let max = MAX_PUT_CHUNK_LEN.to_be_bytes();
        let h = Header::parse(&[max[0], max[1], max[2], max[3], tag::PUT_CHUNK]).unwrap();
        assert_eq!(
            h.payload_len,
            PUT_CHUNK_FIELDS_LEN + MAX_CHUNK_SIZE as usize
        );
        let over = (MAX_PUT_CHUNK_LEN + 1).to_be_bytes();
        assert!(matches!(
            Header::parse(&[over[0], over[1], over[2], over[3], tag::PUT_CHUNK]),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        // A Data-sized limit would not do: the chunk's fields come on top.
        let data_max = MAX_DATA_LEN.to_be_bytes();
        assert!(Header::parse(&[
            data_max[0],
            data_max[1],
            data_max[2],
            data_max[3],
            tag::PUT_CHUNK
        ])
        .is_ok());
    }

    #[test]
    fn every_tag_has_a_limit_and_only_data_carriers_exceed_the_control_one() {
        for t in tag::ALL {
            let want = match t {
                tag::DATA => MAX_DATA_LEN,
                tag::PUT_CHUNK => MAX_PUT_CHUNK_LEN,
                _ => MAX_CONTROL_LEN,
            };
            assert_eq!(max_len(t).unwrap(), want, "{t:#04x}");
        }
        let known = (0..=255u8).filter(|t| max_len(*t).is_ok()).count();
        assert_eq!(known, tag::ALL.len());
    }

    #[test]
    fn empty_and_unknown_rejected() {
        assert!(matches!(
            Header::parse(&[0, 0, 0, 0, tag::GET]),
            Err(ProtocolError::EmptyFrame)
        ));
        assert!(matches!(
            Header::parse(&[0, 0, 0, 1, 0x55]),
            Err(ProtocolError::UnknownTag(0x55))
        ));
    }
}
