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

/// Bytes in a frame header (length + tag).
pub const HEADER_LEN: usize = 5;

/// Largest declared length of any control (non-data) frame: paths, error messages and digests
/// all fit far below it.
pub const MAX_CONTROL_LEN: u32 = 64 * 1024;

/// Largest declared length of a `Data` frame: one chunk plus its tag byte.
pub const MAX_DATA_LEN: u32 = MAX_CHUNK_SIZE + 1;

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
    /// Either way: a refusal or failure, with a code and a human message.
    pub const ERROR: u8 = 0x7f;
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
        tag::HELLO
        | tag::WELCOME
        | tag::GET
        | tag::STAT
        | tag::FILE_INFO
        | tag::FILE_HEADER
        | tag::TRAILER
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
