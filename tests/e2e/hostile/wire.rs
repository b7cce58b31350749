//! Hostile connections: raw bytes out, whatever comes back in, decoded into owned frames, and
//! the assertions the cases share.

use super::fixture::SECRET;
use sfts_protocol::{
    Algorithm, Capabilities, Digest, DigestSet, ErrorCode, FileHeader, GetRequest, Message,
    RejectReason, MAGIC, PROTOCOL_VERSION,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A hostile client announces every capability bit, known or not.
pub(super) const ALL_CAPS: u64 = u64::MAX;

/// What came back on one connection.
pub(super) struct Reply {
    pub(super) bytes: Vec<u8>,
    /// The server closed the connection (end of stream or reset) before the deadline.
    pub(super) closed: bool,
}

/// Connects, sends `bytes` (all at once), closes the sending side when `half_close`, and reads
/// until the server closes the connection or `limit` passes.
pub(super) fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    let mut s = TcpStream::connect(addr).unwrap();
    // The server may refuse and close before it has read everything: a failed write is fine.
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    read_until_closed(&mut s, deadline)
}

/// Reads until the peer closes the connection or `deadline` passes (at most 64 MiB).
pub(super) fn read_until_closed(s: &mut TcpStream, deadline: Instant) -> Reply {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while bytes.len() < 64 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(250))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return checked(bytes, true),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            // A reset: the server dropped the connection.
            Err(_) => return checked(bytes, true),
        }
    }
    checked(bytes, false)
}

/// Every reply passes through here: the secret beside the root must never be in it.
pub(super) fn checked(bytes: Vec<u8>, closed: bool) -> Reply {
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET),
        "a reply contained the secret file from outside the root"
    );
    Reply { bytes, closed }
}

/// A native frame as received, owned.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Frame {
    Welcome {
        version: u16,
        capabilities: u64,
    },
    Header(FileHeader),
    Data(Vec<u8>),
    Trailer(Vec<Digest>),
    Error(ErrorCode, String),
    Rejected(RejectReason),
    /// Any other message, by name.
    Other(&'static str),
    /// Bytes that are not a frame.
    Garbage(String),
}

/// The whole frames of a native reply (a cut-off last frame is left out).
pub(super) fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match Message::decode(&bytes[at..]) {
            Ok(Some((m, n))) => {
                at += n;
                out.push(match m {
                    Message::Welcome {
                        version,
                        capabilities,
                        ..
                    } => Frame::Welcome {
                        version,
                        capabilities: capabilities.0,
                    },
                    Message::FileHeader(h) => Frame::Header(h),
                    Message::Data(d) => Frame::Data(d.to_vec()),
                    Message::Trailer { digests } => Frame::Trailer(digests),
                    Message::Error { code, message } => Frame::Error(code, message),
                    Message::ChunkRejected { reason, .. } => Frame::Rejected(reason),
                    other => Frame::Other(other.name()),
                });
            }
            Ok(None) => break,
            Err(e) => {
                out.push(Frame::Garbage(e.to_string()));
                break;
            }
        }
    }
    out
}

pub(super) fn enc(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

/// The magic and a `Hello` announcing every capability.
pub(super) fn hello() -> Vec<u8> {
    hello_with(PROTOCOL_VERSION, ALL_CAPS)
}

pub(super) fn hello_with(version: u16, capabilities: u64) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    Message::Hello {
        version,
        capabilities: Capabilities(capabilities),
        agent: "hostile-suite".into(),
    }
    .encode(&mut out);
    out
}

/// The magic, a `Hello`, then `messages`, as one burst.
pub(super) fn session_bytes(messages: &[Message<'_>]) -> Vec<u8> {
    let mut out = hello();
    for m in messages {
        m.encode(&mut out);
    }
    out
}

pub(super) fn get(path: &str) -> Message<'static> {
    Message::Get(GetRequest::whole(
        path,
        64 * 1024,
        DigestSet::of(&[Algorithm::Sha256]),
    ))
}

/// A 5-byte frame header declaring `len` for `t`.
pub(super) fn header(len: u32, t: u8) -> Vec<u8> {
    let mut h = len.to_be_bytes().to_vec();
    h.push(t);
    h
}

/// The frames after the `Welcome` every `Hello`-opened reply starts with.
pub(super) fn after_welcome(case: &str, reply: &Reply) -> (u64, Vec<Frame>) {
    let mut f = frames(&reply.bytes);
    assert!(!f.is_empty(), "{case}: no Welcome");
    match f.remove(0) {
        Frame::Welcome {
            version,
            capabilities,
        } => {
            assert_eq!(version, PROTOCOL_VERSION, "{case}");
            (capabilities, f)
        }
        other => panic!("{case}: expected Welcome, got {other:?}"),
    }
}

/// The reply is exactly one `Error` (after the `Welcome` when `hello`) with one of `codes`, and
/// the server closed the connection on its own.
pub(super) fn assert_refused_and_closed(
    case: &str,
    reply: &Reply,
    hello: bool,
    codes: &[ErrorCode],
) {
    assert!(reply.closed, "{case}: the server kept the connection open");
    let rest = if hello {
        after_welcome(case, reply).1
    } else {
        frames(&reply.bytes)
    };
    match &rest[..] {
        [Frame::Error(code, _)] if codes.contains(code) => {}
        other => panic!("{case}: expected one Error of {codes:?}, got {other:?}"),
    }
}

/// The reply is nothing at all or one `Error`; the server closed the connection.
pub(super) fn assert_silent_or_refused(case: &str, reply: &Reply, hello: bool) {
    assert!(reply.closed, "{case}: the server kept the connection open");
    let rest = if hello {
        after_welcome(case, reply).1
    } else {
        frames(&reply.bytes)
    };
    assert!(
        matches!(&rest[..], [] | [Frame::Error(..)]),
        "{case}: expected nothing or one Error, got {rest:?}"
    );
}

/// The bytes of a legacy reply: nothing, or `ERROR` and a sentence; never a file.
pub(super) fn assert_legacy_refused(case: &str, reply: &Reply) {
    assert!(reply.closed, "{case}: the server kept the connection open");
    assert!(
        reply.bytes.is_empty() || reply.bytes.starts_with(b"ERROR"),
        "{case}: legacy reply {:?}",
        String::from_utf8_lossy(&reply.bytes[..reply.bytes.len().min(80)])
    );
}

/// The names and kinds in the `ListEntries` frames of a reply.
pub(super) fn listed(bytes: &[u8]) -> Vec<(String, sfts_protocol::EntryKind)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((m, n))) = Message::decode(&bytes[at..]) {
        at += n;
        if let Message::ListEntries { entries } = m {
            out.extend(entries.into_iter().map(|e| (e.name, e.kind)));
        }
    }
    out
}

pub(super) fn data_of(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        if let Frame::Data(d) = f {
            out.extend_from_slice(d);
        }
    }
    out
}

/// `FileHeader`, data, `Trailer` with the data's SHA-256; returns the header and the data.
pub(super) fn assert_served(case: &str, frames: &[Frame]) -> (FileHeader, Vec<u8>) {
    let Some(Frame::Header(h)) = frames.first() else {
        panic!("{case}: expected a FileHeader, got {frames:?}")
    };
    let data = data_of(frames);
    assert_eq!(data.len() as u64, h.length, "{case}");
    match frames.last() {
        Some(Frame::Trailer(_)) => {}
        other => panic!("{case}: expected a Trailer at the end, got {other:?}"),
    }
    (h.clone(), data)
}

pub(super) const QUICK: Duration = Duration::from_secs(5);
