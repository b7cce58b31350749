//! Error codes carried by the native `Error` message.

/// Why a server refused a request. Each travels as a `u16` together with a human message.
/// Codes this version does not know decode as [`ErrorCode::Unknown`] so that newer servers can
/// add codes without breaking older clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The requested path does not exist under the served root.
    NotFound,
    /// The path exists but is not a regular file (a directory, a device, ...).
    NotAFile,
    /// The path would lead outside the served root (`..`, absolute, symlink out of the root).
    OutsideRoot,
    /// The request was malformed or made no sense at this point of the conversation.
    BadRequest,
    /// The server is at its connection limit; try again later.
    Busy,
    /// The server is shutting down.
    ShuttingDown,
    /// The server failed on its side (an I/O error reading the file, ...).
    Internal,
    /// The client's protocol version is not supported.
    UnsupportedVersion,
    /// The request needs a capability the server does not offer.
    Unsupported,
    /// A code this version of SFTS does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotFound => 1,
            ErrorCode::NotAFile => 2,
            ErrorCode::OutsideRoot => 3,
            ErrorCode::BadRequest => 4,
            ErrorCode::Busy => 5,
            ErrorCode::ShuttingDown => 6,
            ErrorCode::Internal => 7,
            ErrorCode::UnsupportedVersion => 8,
            ErrorCode::Unsupported => 9,
            ErrorCode::Unknown(n) => n,
        }
    }

    /// The code for a number on the wire.
    pub fn from_u16(n: u16) -> ErrorCode {
        match n {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::NotAFile,
            3 => ErrorCode::OutsideRoot,
            4 => ErrorCode::BadRequest,
            5 => ErrorCode::Busy,
            6 => ErrorCode::ShuttingDown,
            7 => ErrorCode::Internal,
            8 => ErrorCode::UnsupportedVersion,
            9 => ErrorCode::Unsupported,
            n => ErrorCode::Unknown(n),
        }
    }

    /// A short, stable name for logs and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not-found",
            ErrorCode::NotAFile => "not-a-file",
            ErrorCode::OutsideRoot => "outside-root",
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::Busy => "busy",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::Internal => "internal",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    /// True when retrying the same request later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorCode::Busy | ErrorCode::ShuttingDown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for n in 0..=20u16 {
            assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
        }
        assert_eq!(ErrorCode::from_u16(1), ErrorCode::NotFound);
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown(999));
    }
}
