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
    /// The upload's target already exists and `force` was not set (or the server never
    /// replaces files).
    AlreadyExists,
    /// The server does not accept writes (started without `--allow-upload`).
    ReadOnly,
    /// The upload is larger than the server accepts (`--max-upload-size`); refused before
    /// any data is stored.
    TooLarge,
    /// The server's disk is full; the upload's partial data has been removed.
    NoSpace,
    /// Another client is uploading to the same name right now; retry later.
    Conflict,
    /// The name is unsafe on common file systems (control characters, reserved Windows
    /// names, trailing dots or spaces, ...); the message says why.
    UnsafeName,
    /// The assembled upload does not match the whole-file digest announced in `PutBegin`;
    /// the server discarded it.
    ChecksumMismatch,
    /// `PutCommit` arrived while chunks were still missing; the upload stays open.
    Incomplete,
    /// No open upload on this connection has that id (its `PutBegin` was refused, or it
    /// already ended).
    NoSuchUpload,
    /// A path component that must be a directory is not one (`List` of a file, a `PutBegin`
    /// or `Mkdir` below a file).
    NotADirectory,
    /// The server needs an access token (`Auth`) before this request, or the token given is
    /// not valid.
    AuthRequired,
    /// The token is valid but does not allow this request on this path. Sent whether the path
    /// exists or not, so nothing can be learned outside one's permissions.
    PermissionDenied,
    /// This port speaks TLS only; the client connected in plain text.
    TlsRequired,
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
            ErrorCode::AlreadyExists => 10,
            ErrorCode::ReadOnly => 11,
            ErrorCode::TooLarge => 12,
            ErrorCode::NoSpace => 13,
            ErrorCode::Conflict => 14,
            ErrorCode::UnsafeName => 15,
            ErrorCode::ChecksumMismatch => 16,
            ErrorCode::Incomplete => 17,
            ErrorCode::NoSuchUpload => 18,
            ErrorCode::NotADirectory => 19,
            ErrorCode::AuthRequired => 20,
            ErrorCode::PermissionDenied => 21,
            ErrorCode::TlsRequired => 22,
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
            10 => ErrorCode::AlreadyExists,
            11 => ErrorCode::ReadOnly,
            12 => ErrorCode::TooLarge,
            13 => ErrorCode::NoSpace,
            14 => ErrorCode::Conflict,
            15 => ErrorCode::UnsafeName,
            16 => ErrorCode::ChecksumMismatch,
            17 => ErrorCode::Incomplete,
            18 => ErrorCode::NoSuchUpload,
            19 => ErrorCode::NotADirectory,
            20 => ErrorCode::AuthRequired,
            21 => ErrorCode::PermissionDenied,
            22 => ErrorCode::TlsRequired,
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
            ErrorCode::AlreadyExists => "already-exists",
            ErrorCode::ReadOnly => "read-only",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::NoSpace => "no-space",
            ErrorCode::Conflict => "conflict",
            ErrorCode::UnsafeName => "unsafe-name",
            ErrorCode::ChecksumMismatch => "checksum-mismatch",
            ErrorCode::Incomplete => "incomplete",
            ErrorCode::NoSuchUpload => "no-such-upload",
            ErrorCode::NotADirectory => "not-a-directory",
            ErrorCode::AuthRequired => "auth-required",
            ErrorCode::PermissionDenied => "permission-denied",
            ErrorCode::TlsRequired => "tls-required",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    /// True when retrying the same request later may succeed. `Conflict` is one: the other
    /// upload ends (or the server notices that its connection is dead) sooner or later.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Conflict
        )
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

    #[test]
    fn upload_codes_are_pinned() {
        let pinned = [
            (10, ErrorCode::AlreadyExists, "already-exists"),
            (11, ErrorCode::ReadOnly, "read-only"),
            (12, ErrorCode::TooLarge, "too-large"),
            (13, ErrorCode::NoSpace, "no-space"),
            (14, ErrorCode::Conflict, "conflict"),
            (15, ErrorCode::UnsafeName, "unsafe-name"),
            (16, ErrorCode::ChecksumMismatch, "checksum-mismatch"),
            (17, ErrorCode::Incomplete, "incomplete"),
            (18, ErrorCode::NoSuchUpload, "no-such-upload"),
            (19, ErrorCode::NotADirectory, "not-a-directory"),
            (20, ErrorCode::AuthRequired, "auth-required"),
            (21, ErrorCode::PermissionDenied, "permission-denied"),
            (22, ErrorCode::TlsRequired, "tls-required"),
        ];
        for (n, code, name) in pinned {
            assert_eq!(ErrorCode::from_u16(n), code);
            assert_eq!(code.to_u16(), n);
            assert_eq!(code.name(), name);
        }
        assert!(ErrorCode::Conflict.is_transient());
        assert!(!ErrorCode::AlreadyExists.is_transient());
    }
}
