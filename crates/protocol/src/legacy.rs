//! The original protocol of the first design document, byte for byte.
//!
//! ```text
//! client: [u32 BE name length][UTF-8 name]
//! server: "OK"                                   (written on its own)
//!         [u32 BE base-name length][base name][u64 BE size][32 bytes lowercase hex MD5]
//!         [size raw bytes], then close
//!    or:  "ERROR" + "File '<name>' not found on server", then close
//! ```
//!
//! Original clients read the status with a single 5-byte `recv`, so a server must let `OK`
//! reach the client before the metadata; that timing is the server's business, not this
//! module's.

use crate::checksum::{Algorithm, Digest};
use crate::error::{ProtocolError, Result};
use crate::MAX_PATH_LEN;

/// Status sent before the metadata of a file that will follow.
pub const STATUS_OK: &[u8] = b"OK";

/// Status sent before an error message.
pub const STATUS_ERROR: &[u8] = b"ERROR";

/// Length of the hex MD5 in the metadata.
pub const MD5_HEX_LEN: usize = 32;

/// The exact message the original server sends for an unknown file.
pub fn not_found_message(name: &str) -> String {
    format!("File '{name}' not found on server")
}

/// Appends a request for `name` to `out`.
pub fn encode_request(name: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Checks a request's declared name length before waiting for (or allocating) the name.
pub fn check_request_len(len: u32) -> Result<usize> {
    let len = len as usize;
    if len > MAX_PATH_LEN {
        return Err(ProtocolError::PathTooLong {
            len,
            max: MAX_PATH_LEN,
        });
    }
    if len == 0 {
        return Err(ProtocolError::Malformed {
            message: "legacy request",
            detail: "empty file name",
        });
    }
    Ok(len)
}

/// Parses a request from the front of `buf`; `Ok(None)` until all of it is there.
pub fn decode_request(buf: &[u8]) -> Result<Option<(String, usize)>> {
    let Some(head) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = check_request_len(u32::from_be_bytes(*head))?;
    let Some(name) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let name = std::str::from_utf8(name)
        .map_err(|_| ProtocolError::InvalidUtf8("legacy request"))?
        .to_owned();
    Ok(Some((name, 4 + len)))
}

/// The status that opens a server's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Metadata and data follow.
    Ok,
    /// An error message follows, up to the end of the stream.
    Error,
}

/// Parses the status from the front of `buf`; `Ok(None)` while `buf` is a proper prefix of a
/// status.
pub fn decode_status(buf: &[u8]) -> Result<Option<(Status, usize)>> {
    for (status, word) in [(Status::Ok, STATUS_OK), (Status::Error, STATUS_ERROR)] {
        if buf.starts_with(word) {
            return Ok(Some((status, word.len())));
        }
        if word.starts_with(buf) {
            // "" or "E", "ER", ...: could still become this word. ("O" can only become OK.)
            return Ok(None);
        }
    }
    Err(ProtocolError::BadLegacyStatus)
}

/// The metadata that follows `OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The file's base name.
    pub name: String,
    /// Size in bytes of the data that follows.
    pub size: u64,
    /// MD5 of the data.
    pub md5: Digest,
}

impl Metadata {
    /// Appends the metadata to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert_eq!(self.md5.algorithm, Algorithm::Md5);
        out.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(self.md5.to_hex().as_bytes());
    }

    /// Parses metadata from the front of `buf`; `Ok(None)` until all of it is there.
    pub fn decode(buf: &[u8]) -> Result<Option<(Metadata, usize)>> {
        let Some(head) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > MAX_PATH_LEN {
            return Err(ProtocolError::PathTooLong {
                len,
                max: MAX_PATH_LEN,
            });
        }
        let total = 4 + len + 8 + MD5_HEX_LEN;
        if buf.len() < total {
            return Ok(None);
        }
        let name = std::str::from_utf8(&buf[4..4 + len])
            .map_err(|_| ProtocolError::InvalidUtf8("legacy metadata"))?
            .to_owned();
        let size = u64::from_be_bytes(buf[4 + len..12 + len].try_into().expect("8 bytes"));
        let hex =
            std::str::from_utf8(&buf[12 + len..total]).map_err(|_| ProtocolError::BadDigest {
                algorithm: "md5",
                detail: "not a hex digit",
            })?;
        let md5 = Digest::from_hex(Algorithm::Md5, hex)?;
        Ok(Some((Metadata { name, size, md5 }, total)))
    }
}

/// Appends an error reply (`ERROR` and the message) to `out`.
pub fn encode_error(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(STATUS_ERROR);
    out.extend_from_slice(message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";

    #[test]
    fn request_layout_and_round_trip() {
        let mut out = Vec::new();
        encode_request("a.txt", &mut out);
        assert_eq!(out, [0, 0, 0, 5, b'a', b'.', b't', b'x', b't']);
        assert_eq!(
            decode_request(&out).unwrap(),
            Some(("a.txt".to_string(), 9))
        );
        for cut in 0..out.len() {
            assert_eq!(decode_request(&out[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn request_limits() {
        assert!(decode_request(&[0, 0, 0, 0]).is_err());
        assert!(matches!(
            decode_request(&[0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::PathTooLong { .. })
        ));
        assert!(matches!(
            decode_request(&[0, 0, 0, 1, 0xff]),
            Err(ProtocolError::InvalidUtf8(_))
        ));
    }

    #[test]
    fn metadata_layout_and_round_trip() {
        let m = Metadata {
            name: "abc".into(),
            size: 3,
            md5: Digest::from_hex(Algorithm::Md5, MD5_ABC).unwrap(),
        };
        let mut out = Vec::new();
        m.encode(&mut out);
        let mut expected = vec![0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 3];
        expected.extend_from_slice(MD5_ABC.as_bytes());
        assert_eq!(out, expected);
        assert_eq!(Metadata::decode(&out).unwrap(), Some((m, out.len())));
        for cut in 0..out.len() {
            assert_eq!(Metadata::decode(&out[..cut]).unwrap(), None);
        }
        let mut bad = out.clone();
        bad[20] = b'z';
        assert!(Metadata::decode(&bad).is_err());
    }

    #[test]
    fn status_parsing() {
        assert_eq!(decode_status(b"").unwrap(), None);
        assert_eq!(decode_status(b"O").unwrap(), None);
        assert_eq!(decode_status(b"ERR").unwrap(), None);
        assert_eq!(decode_status(b"OK\0\0").unwrap(), Some((Status::Ok, 2)));
        assert_eq!(
            decode_status(b"ERRORFile").unwrap(),
            Some((Status::Error, 5))
        );
        assert!(decode_status(b"HTTP/1.1").is_err());
        assert!(decode_status(b"OX").is_err());
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn md5() -> impl Strategy<Value = Digest> {
            any::<[u8; 16]>().prop_map(|b| Digest::new(Algorithm::Md5, b.to_vec()).unwrap())
        }

        proptest! {
            /// Any name the protocol allows survives encode → decode, and every strict prefix
            /// of the request asks for more bytes.
            #[test]
            fn requests_round_trip(name in "\\PC{1,64}", tail in vec(any::<u8>(), 0..8)) {
                let mut out = Vec::new();
                encode_request(&name, &mut out);
                let len = out.len();
                for cut in 0..len {
                    prop_assert_eq!(decode_request(&out[..cut]).unwrap(), None);
                }
                out.extend_from_slice(&tail);
                prop_assert_eq!(decode_request(&out).unwrap(), Some((name, len)));
            }

            /// Arbitrary bytes: no panic; what is accepted is canonical; a refusal is for a
            /// length out of range or text that is not UTF-8.
            #[test]
            fn arbitrary_requests(bytes in vec(any::<u8>(), 0..64), len in 0u32..5000) {
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                for input in [&bytes[..], &framed[..]] {
                    match decode_request(input) {
                        Ok(Some((name, used))) => {
                            let mut again = Vec::new();
                            encode_request(&name, &mut again);
                            prop_assert_eq!(&again[..], &input[..used]);
                        }
                        Ok(None) => prop_assert!(
                            input.len() < 4
                                || input.len() < 4 + u32::from_be_bytes(
                                    input[..4].try_into().unwrap()) as usize
                        ),
                        Err(ProtocolError::InvalidUtf8(_)) => {}
                        Err(_) => {
                            let l = u32::from_be_bytes(input[..4].try_into().unwrap());
                            prop_assert!(l == 0 || l as usize > MAX_PATH_LEN);
                        }
                    }
                }
            }

            /// Metadata survives encode → decode (also with the hex in upper case), and every
            /// strict prefix asks for more bytes.
            #[test]
            fn metadata_round_trips(
                name in "\\PC{0,64}",
                size in any::<u64>(),
                md5 in md5(),
                tail in vec(any::<u8>(), 0..8),
            ) {
                let m = Metadata { name, size, md5 };
                let mut out = Vec::new();
                m.encode(&mut out);
                let len = out.len();
                for cut in 0..len {
                    prop_assert_eq!(Metadata::decode(&out[..cut]).unwrap(), None);
                }
                out.extend_from_slice(&tail);
                prop_assert_eq!(Metadata::decode(&out).unwrap(), Some((m.clone(), len)));
                out[len - MD5_HEX_LEN..len].make_ascii_uppercase();
                prop_assert_eq!(Metadata::decode(&out).unwrap(), Some((m, len)));
            }

            /// Arbitrary bytes as a status and as metadata: no panic, and the status decoder
            /// says "need more" exactly for the strict prefixes of `OK` and `ERROR`.
            #[test]
            fn arbitrary_replies(bytes in vec(any::<u8>(), 0..80)) {
                match decode_status(&bytes) {
                    Ok(Some((Status::Ok, 2))) => prop_assert!(bytes.starts_with(STATUS_OK)),
                    Ok(Some((Status::Error, 5))) => prop_assert!(bytes.starts_with(STATUS_ERROR)),
                    Ok(Some(other)) => prop_assert!(false, "{:?}", other),
                    Ok(None) => prop_assert!(
                        STATUS_OK.starts_with(&bytes) || STATUS_ERROR.starts_with(&bytes)
                    ),
                    Err(_) => prop_assert!(
                        !STATUS_OK.starts_with(&bytes)
                            && !STATUS_ERROR.starts_with(&bytes)
                            && !bytes.starts_with(STATUS_OK)
                            && !bytes.starts_with(STATUS_ERROR)
                    ),
                }
                if let Ok(Some((m, used))) = Metadata::decode(&bytes) {
                    prop_assert_eq!(used, 4 + m.name.len() + 8 + MD5_HEX_LEN);
                }
            }
        }
    }

    #[test]
    fn error_reply() {
        let mut out = Vec::new();
        encode_error(&not_found_message("x.bin"), &mut out);
        assert_eq!(out, b"ERRORFile 'x.bin' not found on server");
    }
}
