//! The one error type of the protocol crate.

use std::io;

/// Everything that can go wrong while encoding or decoding SFTS bytes.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The peer declared a frame longer than this message type may ever be. Nothing was
    /// allocated for it; the connection should be dropped.
    #[error("peer declared a {len}-byte frame of type {tag:#04x}, above the {max}-byte limit")]
    FrameTooLarge { tag: u8, len: u64, max: u64 },

    /// A frame with a declared length of zero (every frame carries at least its tag byte).
    #[error("peer sent an empty frame (length 0)")]
    EmptyFrame,

    /// A frame type this version of SFTS does not know.
    #[error("peer sent an unknown message type {0:#04x}")]
    UnknownTag(u8),

    /// A field inside a frame was cut short or had an impossible value.
    #[error("malformed {message} message: {detail}")]
    Malformed {
        message: &'static str,
        detail: &'static str,
    },

    /// A frame carried bytes after its last field.
    #[error("malformed {message} message: {extra} unexpected trailing byte(s)")]
    TrailingBytes { message: &'static str, extra: usize },

    /// A text field was not valid UTF-8.
    #[error("malformed {0} message: text is not valid UTF-8")]
    InvalidUtf8(&'static str),

    /// A digest algorithm code or name this version of SFTS does not know.
    #[error("unknown checksum algorithm {0}")]
    UnknownAlgorithm(String),

    /// A digest whose length does not match its algorithm, or hex that is not a digest.
    #[error("invalid {algorithm} digest: {detail}")]
    BadDigest {
        algorithm: &'static str,
        detail: &'static str,
    },

    /// A path or name longer than [`crate::MAX_PATH_LEN`].
    #[error("path of {len} bytes is longer than the {max}-byte limit")]
    PathTooLong { len: usize, max: usize },

    /// The original protocol's reply did not start with `OK` or `ERROR`.
    #[error("the server's reply is not of the original protocol (expected 'OK' or 'ERROR')")]
    BadLegacyStatus,

    /// The stream ended in the middle of a message.
    #[error("connection closed in the middle of a message")]
    ConnectionClosed,

    /// An I/O error from the underlying stream.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ProtocolError {
    /// A [`ProtocolError::Malformed`] for `message`.
    pub(crate) fn malformed(message: &'static str, detail: &'static str) -> ProtocolError {
        ProtocolError::Malformed { message, detail }
    }

    /// True when the error is a timeout of the underlying stream (a stalled peer).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProtocolError::Io(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
