//! What the native and legacy receive loops share: their context, how they stop, and how a
//! stop becomes a [`ClientError`].

use crate::connect::seconds;
use crate::error::{ClientError, Kept};
use crate::interrupt::Interrupt;
use crate::progress::Progress;
use sfts_protocol::{Digest, ProtocolError};
use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

/// What a receive loop needs besides its stream and sink.
pub struct Context<'a> {
    /// Checked after every chunk and on every read failure.
    pub interrupt: &'a Interrupt,
    /// Advanced after every chunk.
    pub progress: &'a Progress,
    /// The socket timeout, for messages.
    pub timeout: Duration,
}

/// Why a receive loop stopped before the end.
#[derive(Debug)]
pub enum Stop {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The connection closed, reset or stalled; the reason in words.
    Lost(String),
    /// The server sent an `Error` frame; its message.
    Aborted(String),
    /// The server broke the protocol; what it did.
    Protocol(String),
    /// Writing the output failed.
    Write(io::Error),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Interrupted => f.write_str("interrupted"),
            Stop::Lost(reason) => write!(f, "connection lost ({reason})"),
            Stop::Aborted(message) => write!(f, "aborted by the server: {message}"),
            Stop::Protocol(detail) => write!(f, "protocol violation: {detail}"),
            Stop::Write(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

/// A receive loop's failure: why, and how many bytes had arrived.
#[derive(Debug)]
pub struct Stopped {
    /// Bytes received (and written) before the stop.
    pub received: u64,
    /// Why.
    pub cause: Stop,
}

impl Context<'_> {
    /// A stop after `received` bytes; an interruption wins over whatever the socket reported,
    /// since the interrupt handler is what broke the socket.
    pub fn stop(&self, received: u64, cause: Stop) -> Stopped {
        let cause = if self.interrupt.is_set() {
            Stop::Interrupted
        } else {
            cause
        };
        Stopped { received, cause }
    }

    /// Classifies a failed read.
    pub fn read_failed(&self, received: u64, e: ProtocolError) -> Stopped {
        let cause = match e {
            e if e.is_timeout() => Stop::Lost(format!("no data for {}", seconds(self.timeout))),
            ProtocolError::ConnectionClosed => {
                Stop::Lost("the server closed the connection in the middle of a frame".into())
            }
            ProtocolError::Io(e) => Stop::Lost(e.to_string()),
            other => Stop::Protocol(other.to_string()),
        };
        self.stop(received, cause)
    }

    /// Writes one chunk to the sink (which hashes it) and records it.
    pub fn deliver<W: Write>(
        &self,
        sink: &mut W,
        chunk: &[u8],
        received: &mut u64,
    ) -> Result<(), Stopped> {
        sink.write_all(chunk)
            .map_err(|e| self.stop(*received, Stop::Write(e)))?;
        *received += chunk.len() as u64;
        self.progress.advance(chunk.len());
        if self.interrupt.is_set() {
            return Err(self.stop(*received, Stop::Interrupted));
        }
        Ok(())
    }
}

/// The error for a receive loop that stopped after announcing `size` bytes.
pub fn into_error(stopped: Stopped, size: u64, kept: Kept) -> ClientError {
    let received = stopped.received;
    match stopped.cause {
        Stop::Interrupted => ClientError::Interrupted { kept },
        Stop::Lost(reason) => ClientError::ConnectionLost {
            received,
            size,
            reason,
            kept,
        },
        Stop::Aborted(message) => ClientError::Aborted {
            received,
            size,
            message,
            kept,
        },
        Stop::Protocol(detail) => ClientError::Protocol { detail, kept },
        Stop::Write(e) => match kept {
            Kept::Stdout => crate::output::stdout_error(e, "write to"),
            Kept::File(part) | Kept::Resumable(part) => {
                ClientError::local("cannot write to", &part, e)
            }
            Kept::Nothing => ClientError::Local {
                what: "cannot write the download".into(),
                source: e,
            },
        },
    }
}

/// The error for a read that failed before any data arrived (`stage` says what the client was
/// waiting for).
pub fn early_read_failed(stage: &'static str, e: ProtocolError, timeout: Duration) -> ClientError {
    let reason = match e {
        e if e.is_timeout() => format!("no answer within {}", seconds(timeout)),
        ProtocolError::ConnectionClosed => "the server closed the connection mid-message".into(),
        ProtocolError::Io(e) => e.to_string(),
        other => {
            return ClientError::Protocol {
                detail: format!("{other} (while {stage})"),
                kept: Kept::Nothing,
            }
        }
    };
    ClientError::Disconnected { stage, reason }
}

/// Compares the server's digest with the one computed over the received bytes.
pub fn verify(
    remote: &str,
    expected: &Digest,
    actual: &Digest,
    kept: Kept,
) -> Result<(), ClientError> {
    if expected == actual {
        return Ok(());
    }
    Err(ClientError::Integrity {
        remote: remote.to_string(),
        algorithm: expected.algorithm.name(),
        expected: expected.to_hex(),
        actual: actual.to_hex(),
        kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interruption_wins_over_the_socket_error() {
        let interrupt = Interrupt::new();
        let progress = Progress::hidden();
        let ctx = Context {
            interrupt: &interrupt,
            progress: &progress,
            timeout: Duration::from_secs(10),
        };
        let s = ctx.read_failed(5, ProtocolError::ConnectionClosed);
        assert!(matches!(s.cause, Stop::Lost(_)));
        let s = ctx.read_failed(
            5,
            ProtocolError::Io(io::Error::new(io::ErrorKind::WouldBlock, "x")),
        );
        assert!(matches!(&s.cause, Stop::Lost(r) if r == "no data for 10 s"));
        interrupt.trigger();
        let s = ctx.read_failed(5, ProtocolError::ConnectionClosed);
        assert!(matches!(s.cause, Stop::Interrupted));
        assert_eq!(s.received, 5);
    }

    #[test]
    fn stops_become_exit_codes() {
        let part = || Kept::File("p".into());
        let code = |cause, kept| into_error(Stopped { received: 1, cause }, 2, kept).exit_code();
        assert_eq!(code(Stop::Interrupted, part()), 130);
        assert_eq!(code(Stop::Lost("x".into()), part()), 6);
        assert_eq!(code(Stop::Aborted("x".into()), part()), 6);
        assert_eq!(code(Stop::Protocol("x".into()), part()), 6);
        assert_eq!(code(Stop::Write(io::Error::other("full")), part()), 1);
        let broken = io::Error::new(io::ErrorKind::BrokenPipe, "closed");
        assert_eq!(code(Stop::Write(broken), Kept::Stdout), 0);
    }

    #[test]
    fn verification() {
        let a = Digest::from_hex(sfts_protocol::Algorithm::Md5, &"0".repeat(32)).unwrap();
        let b = Digest::from_hex(sfts_protocol::Algorithm::Md5, &"1".repeat(32)).unwrap();
        assert!(verify("x", &a, &a, Kept::Nothing).is_ok());
        let e = verify("x", &a, &b, Kept::File("x.sfts-part".into())).unwrap_err();
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("expected md5 0000"), "{e}");
    }
}
