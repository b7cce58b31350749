//! The SFTS wire protocol, sans-IO.
//!
//! This crate knows bytes, not sockets, threads or clocks. It provides:
//!
//! * [`frame`]: the native length-prefixed framing (`u32` big-endian length, one tag byte, payload)
//!   with peer-declared lengths checked against named maxima before anything is allocated;
//! * [`message`]: the typed native messages ([`Message`]) with `encode` / `decode` over byte slices;
//! * [`upload`]: the upload session's payloads; [`chunks`]: chunk arithmetic and the list of
//!   chunks a server holds;
//! * [`list`]: directory listing entries and a batcher that splits listings into frames;
//! * [`legacy`]: the original protocol of the first design document, byte for byte;
//! * [`checksum`]: MD5 / SHA-256 helpers, lowercase hex, and hashing `Read`/`Write` adapters;
//! * [`io`]: thin `read_message` / `write_message` wrappers over any `Read` / `Write`.
//!
//! What it does not do: open connections, time out, retry, touch the file system or log. Those
//! belong to the `sfts-server` and `sfts-client` crates, which feed this crate a `TcpStream`.
//! The byte-level specification lives in `docs/PROTOCOL.md`.

pub mod blake3_tree;
pub mod checksum;
pub mod chunks;
pub mod error;
pub mod error_code;
pub mod frame;
pub mod io;
pub mod legacy;
pub mod list;
pub mod message;
pub mod priority;
pub mod upload;
mod wire;

#[cfg(test)]
mod proptests;

pub use checksum::{Algorithm, Digest, DigestSet, MultiHasher};
pub use chunks::{chunk_count, chunk_span, ChunkRange, ChunkRanges, MAX_HAVE_RANGES};
pub use error::ProtocolError;
pub use error_code::ErrorCode;
pub use list::{EntryKind, ListBatcher, ListEntry};
pub use message::{
    Capabilities, FileHeader, FileInfo, FileKind, FileVersion, GetRequest, Message, TO_END,
};
pub use priority::Priority;
pub use upload::{
    ChunkDigest, PutBegin, PutChunk, PutReady, RejectReason, GUARANTEED_OPEN_UPLOADS,
};

/// The four bytes a native client sends first. As a legacy length prefix they would announce a
/// 1.4 GB file name, which no original client sends, so a server tells the two apart by them.
pub const MAGIC: [u8; 4] = *b"SFTS";

/// The native protocol version this crate speaks (the highest one).
pub const PROTOCOL_VERSION: u16 = 1;

/// The lowest native protocol version this crate still accepts from a peer.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Largest path (in bytes of UTF-8) either protocol accepts in a request.
pub const MAX_PATH_LEN: usize = 4096;

/// Smallest data chunk a peer may ask for.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;

/// Largest data chunk a peer may ask for; also bounds the size of a `Data` frame.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// Chunk size used when the client does not ask for one: large enough that per-chunk costs
/// (a frame header, a syscall, a progress update) vanish next to the bytes moved.
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;

/// True when `first` (the first four bytes a client sent) open a native SFTS session.
pub fn is_native(first: &[u8; 4]) -> bool {
    *first == MAGIC
}

/// Clamp a requested chunk size to the range the protocol allows.
pub fn clamp_chunk_size(requested: u32) -> u32 {
    requested.clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_not_a_plausible_legacy_length() {
        let as_len = u32::from_be_bytes(MAGIC) as usize;
        assert!(as_len > MAX_PATH_LEN);
        assert!(is_native(b"SFTS"));
        assert!(!is_native(&[0, 0, 0, 8]));
    }

    #[test]
    fn chunk_sizes_are_clamped() {
        assert_eq!(clamp_chunk_size(0), MIN_CHUNK_SIZE);
        assert_eq!(clamp_chunk_size(u32::MAX), MAX_CHUNK_SIZE);
        assert_eq!(clamp_chunk_size(65536), 65536);
    }
}
