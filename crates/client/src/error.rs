//! The client's one error type and the exit codes it maps to.
//!
//! Every exit code lives here, next to [`EXIT_CODES_HELP`], the text `--help` shows for them;
//! a unit test keeps the two in step.

use std::io;
use std::path::{Path, PathBuf};

/// Exit codes of `sfts-client`.
pub mod exit {
    /// The file was received, verified and saved.
    pub const SUCCESS: u8 = 0;
    /// A local problem: the output cannot be created or written, the target exists, ...
    pub const LOCAL: u8 = 1;
    /// The command line is wrong (clap uses the same code for its own checks).
    pub const USAGE: u8 = 2;
    /// No connection could be made, after every retry.
    pub const CONNECT: u8 = 3;
    /// The server refused the request (not found, not a regular file, busy, ...).
    pub const REFUSED: u8 = 4;
    /// The received data does not match the server's digest.
    pub const INTEGRITY: u8 = 5;
    /// The transfer broke off: connection lost or timed out, protocol violation, server abort.
    pub const TRANSFER: u8 = 6;
    /// Ctrl-C or SIGTERM.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit codes as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success: the file was received, verified and saved
  1    local error: the output cannot be created or written, the target exists (see --force),
       or another sfts-client is downloading to the same output
  2    usage error: invalid command line
  3    cannot connect: every connection attempt failed
  4    refused by the server: not found, not a regular file, outside the served root,
       bad request, busy or shutting down (after the retries), unsupported version
  5    integrity failure: the digest does not match; the bytes are kept in <output>.sfts-part
  6    transfer failed: connection lost and --max-retries reconnections failed, protocol
       violation, server aborted; partial data is kept for a resume
  130  interrupted by Ctrl-C or SIGTERM; partial data is kept in <output>.sfts-part:
       run the same command again to resume";

/// Where the bytes of a failed download are, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Nothing was written yet.
    Nothing,
    /// In this temporary file.
    File(PathBuf),
    /// In this temporary file, with its journal: a rerun resumes.
    Resumable(PathBuf),
    /// They went to standard output.
    Stdout,
}

impl Kept {
    fn verb(&self, what: &str) -> String {
        match self {
            Kept::Nothing => String::new(),
            Kept::File(p) => format!("; {what} kept in '{}'", p.display()),
            Kept::Resumable(p) => format!(
                "; {what} kept in '{}': run the same command again to resume",
                p.display()
            ),
            Kept::Stdout => "; the bytes received so far went to standard output".to_string(),
        }
    }
}

/// Everything that can make a download fail.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A command-line problem clap cannot check on its own.
    #[error("{0}")]
    Usage(String),

    /// The target exists and `--force` was not given.
    #[error("'{}' already exists; use --force to overwrite", .0.display())]
    TargetExists(PathBuf),

    /// Another client is writing this partial file: a download to the same output is running.
    #[error(
        "'{}' is being written by another sfts-client (a download to the same output is \
         running); wait for it to finish, or choose another output with -o",
        .0.display()
    )]
    InUse(PathBuf),

    /// A local file-system problem (creating, writing, syncing or renaming the output).
    #[error("{what}: {source}")]
    Local {
        /// What was being done, with the path: "cannot create 'x.sfts-part'".
        what: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Every connection attempt failed.
    #[error("cannot connect to {server} after {attempts} attempt(s): {reason}")]
    Connect {
        /// `host:port` as given.
        server: String,
        /// How many attempts were made.
        attempts: u32,
        /// Why the last one failed.
        reason: String,
    },

    /// The server answered `Hello` with busy / shutting down, every time.
    #[error("server {server} is {state} ({message}); gave up after {retries} retries")]
    Unavailable {
        /// `host:port` as given.
        server: String,
        /// "busy" or "shutting down".
        state: &'static str,
        /// The server's message.
        message: String,
        /// Retries made.
        retries: u32,
    },

    /// The server refused the request.
    #[error("server refused '{remote}': {message}")]
    Refused {
        /// The requested path.
        remote: String,
        /// The server's own words.
        message: String,
    },

    /// The native handshake failed: the peer does not speak the SFTS protocol as expected.
    #[error(
        "the server at {server} did not complete the SFTS handshake ({detail}); \
         if it is a server of the original design, use --protocol legacy"
    )]
    Handshake {
        /// `host:port` as given.
        server: String,
        /// What went wrong.
        detail: String,
    },

    /// The TLS handshake failed for a reason retrying cannot fix.
    #[error("TLS with {host} failed: {detail}")]
    Tls {
        /// The host as given.
        host: String,
        /// What went wrong and what to do.
        detail: String,
    },

    /// The server did not accept the access token.
    #[error("authentication with {server} failed: {message}")]
    Auth {
        /// `host:port` as given.
        server: String,
        /// The server's words.
        message: String,
    },

    /// The connection broke before any data arrived.
    #[error("connection to the server lost while {stage}: {reason}")]
    Disconnected {
        /// What the client was doing: "waiting for the file header".
        stage: &'static str,
        /// Why: "the server closed the connection", "no data for 10 s", ...
        reason: String,
    },

    /// The received bytes do not match the server's digest.
    #[error(
        "integrity check failed for '{remote}': expected {algorithm} {expected}, received data has {actual}{}",
        kept.verb("the received bytes are")
    )]
    Integrity {
        /// The requested path.
        remote: String,
        /// Algorithm name.
        algorithm: &'static str,
        /// The server's digest (hex).
        expected: String,
        /// Ours (hex).
        actual: String,
        /// Where the bytes are.
        kept: Kept,
    },

    /// The connection broke or stalled mid-transfer.
    #[error("connection lost after {received} of {size} bytes ({reason}){}", kept.verb("partial data"))]
    ConnectionLost {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        size: u64,
        /// Why: "the server closed the connection", "no data for 10 s", ...
        reason: String,
        /// Where the bytes are.
        kept: Kept,
    },

    /// The server sent an `Error` frame in the middle of the transfer.
    #[error("the server aborted the transfer after {received} of {size} bytes: {message}{}", kept.verb("partial data"))]
    Aborted {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        size: u64,
        /// The server's message.
        message: String,
        /// Where the bytes are.
        kept: Kept,
    },

    /// The server broke the protocol.
    #[error("protocol violation by the server: {detail}{}", kept.verb("partial data"))]
    Protocol {
        /// What it did.
        detail: String,
        /// Where the bytes are.
        kept: Kept,
    },

    /// The connection dropped mid-transfer and could not be re-established.
    #[error(
        "connection lost and {retries} reconnection(s) in a row failed ({reason}){}",
        kept.verb("partial data")
    )]
    Reconnect {
        /// Reconnections tried (`--max-retries`).
        retries: u32,
        /// The last failure.
        reason: String,
        /// Where the bytes are.
        kept: Kept,
    },

    /// The file kept changing on the server while it was being downloaded.
    #[error("'{remote}' changed on the server {times} times during the download; try again when it is no longer being written")]
    KeepsChanging {
        /// The requested path.
        remote: String,
        /// How many times it changed.
        times: u32,
    },

    /// An upload stopped part-way; the server keeps what it received.
    #[error(
        "upload of '{remote}' stopped ({reason}); the server keeps the chunks it received: \
         run the same command again to resume"
    )]
    UploadStopped {
        /// The remote path.
        remote: String,
        /// Why.
        reason: String,
        /// Ctrl-C or SIGTERM (exit 130) rather than a lost connection (exit 6).
        interrupted: bool,
    },

    /// Some files of a tree failed (the others were transferred).
    #[error("{failed} file(s) of the tree failed; the first: {first}")]
    TreeIncomplete {
        /// How many.
        failed: u64,
        /// The first failure, with its path.
        first: String,
    },

    /// Ctrl-C or SIGTERM.
    #[error("interrupted{}", kept.verb("partial data"))]
    Interrupted {
        /// Where the bytes are.
        kept: Kept,
    },

    /// Standard output was closed by its reader (`| head`). Not a failure: nothing is printed
    /// and the exit code is 0, as for other Unix filters.
    #[error("standard output was closed")]
    StdoutClosed,
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => exit::USAGE,
            ClientError::TargetExists(_) | ClientError::InUse(_) | ClientError::Local { .. } => {
                exit::LOCAL
            }
            ClientError::Connect { .. } | ClientError::Tls { .. } => exit::CONNECT,
            ClientError::Auth { .. } => exit::REFUSED,
            ClientError::Unavailable { .. } | ClientError::Refused { .. } => exit::REFUSED,
            ClientError::Integrity { .. } => exit::INTEGRITY,
            ClientError::Handshake { .. }
            | ClientError::Disconnected { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Aborted { .. }
            | ClientError::Protocol { .. }
            | ClientError::Reconnect { .. }
            | ClientError::KeepsChanging { .. }
            | ClientError::TreeIncomplete { .. } => exit::TRANSFER,
            ClientError::Interrupted { .. }
            | ClientError::UploadStopped {
                interrupted: true, ..
            } => exit::INTERRUPTED,
            ClientError::UploadStopped { .. } => exit::TRANSFER,
            ClientError::StdoutClosed => exit::SUCCESS,
        }
    }

    /// True when nothing should be printed for this error.
    pub fn is_silent(&self) -> bool {
        matches!(self, ClientError::StdoutClosed)
    }

    /// A local error about `path`: `"{action} '{path}'"` plus the cause.
    pub fn local(action: &str, path: &Path, source: io::Error) -> ClientError {
        ClientError::Local {
            what: format!("{action} '{}'", path.display()),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_exit_code() {
        for code in [
            exit::SUCCESS,
            exit::LOCAL,
            exit::USAGE,
            exit::CONNECT,
            exit::REFUSED,
            exit::INTEGRITY,
            exit::TRANSFER,
            exit::INTERRUPTED,
        ] {
            let line = format!("\n  {code:<4} ");
            assert!(EXIT_CODES_HELP.contains(&line), "code {code} missing");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = ClientError::TargetExists("out.bin".into());
        assert_eq!(
            e.to_string(),
            "'out.bin' already exists; use --force to overwrite"
        );
        assert_eq!(e.exit_code(), 1);
        let e = ClientError::ConnectionLost {
            received: 3,
            size: 10,
            reason: "the server closed the connection".into(),
            kept: Kept::File("x.sfts-part".into()),
        };
        assert_eq!(
            e.to_string(),
            "connection lost after 3 of 10 bytes (the server closed the connection); \
             partial data kept in 'x.sfts-part'"
        );
        assert_eq!(e.exit_code(), 6);
        let e = ClientError::Integrity {
            remote: "x".into(),
            algorithm: "sha256",
            expected: "aa".into(),
            actual: "bb".into(),
            kept: Kept::File("x.sfts-part".into()),
        };
        assert_eq!(
            e.to_string(),
            "integrity check failed for 'x': expected sha256 aa, received data has bb; \
             the received bytes are kept in 'x.sfts-part'"
        );
        let e = ClientError::Interrupted {
            kept: Kept::Nothing,
        };
        assert_eq!(e.to_string(), "interrupted");
        assert_eq!(e.exit_code(), 130);
    }
}
