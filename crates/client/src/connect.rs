//! Opening the connection: every resolved address in turn, each attempt bounded by the
//! timeout, retried with exponential backoff, and all of it interruptible by Ctrl-C.

use crate::address::Address;
use crate::error::{ClientError, Kept};
use crate::interrupt::Interrupt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest pause between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(32);

/// Granularity of interruptible waits: a Ctrl-C is noticed within this time.
const POLL: Duration = Duration::from_millis(100);

/// The pause before retry number `retry` (1-based): 1, 2, 4, 8, 16, 32, 32, ... seconds.
pub fn backoff_delay(retry: u32) -> Duration {
    let exponent = retry.saturating_sub(1).min(5);
    Duration::from_secs(1u64 << exponent).min(MAX_DELAY)
}

/// Sleeps for `total`, in steps of at most 100 ms, returning early with an error on Ctrl-C.
pub fn sleep_interruptible(total: Duration, interrupt: &Interrupt) -> Result<(), ClientError> {
    let deadline = Instant::now() + total;
    loop {
        if interrupt.is_set() {
            return Err(ClientError::Interrupted {
                kept: Kept::Nothing,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt. `warning` opens the log line ("connection to X failed (...)");
    /// `error` is what the user sees when no attempt is left.
    Retry {
        /// Start of the warning, without the "; retry n/m in s" part.
        warning: String,
        /// The final error if this was the last attempt.
        error: Box<ClientError>,
    },
    /// Retrying cannot help.
    Fatal(Box<ClientError>),
}

impl Failure {
    /// A failure retrying cannot help.
    pub fn fatal(error: ClientError) -> Failure {
        Failure::Fatal(Box::new(error))
    }
}

/// Runs `attempt` up to `retries + 1` times, sleeping [`backoff_delay`] between failures and
/// logging every retry as a warning. `attempt` receives the 1-based attempt number.
pub fn with_retries<T>(
    retries: u32,
    interrupt: &Interrupt,
    mut attempt: impl FnMut(u32) -> Result<T, Failure>,
) -> Result<T, ClientError> {
    let mut number = 1u32;
    loop {
        match attempt(number) {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(error)) => return Err(*error),
            Err(Failure::Retry { warning, error }) => {
                if number > retries {
                    return Err(*error);
                }
                let delay = backoff_delay(number);
                tracing::warn!(
                    "{warning}; retry {number}/{retries} in {} s",
                    delay.as_secs()
                );
                sleep_interruptible(delay, interrupt)?;
                number += 1;
            }
        }
    }
}

/// One connection attempt to `server`: resolves it and tries each resolved address, each
/// bounded by `timeout`. Failures are retryable except an interruption.
pub fn open(
    server: &Address,
    timeout: Duration,
    attempt: u32,
    retries: u32,
    interrupt: &Interrupt,
) -> Result<TcpStream, Failure> {
    let retry = |reason: String| Failure::Retry {
        warning: format!("connection to {server} failed ({reason})"),
        error: Box::new(ClientError::Connect {
            server: server.to_string(),
            attempts: attempt,
            reason,
        }),
    };
    tracing::info!(
        "connecting to {server} (attempt {attempt} of {})",
        retries.saturating_add(1)
    );
    let addrs = server
        .resolve()
        .map_err(|e| retry(format!("cannot resolve '{}': {e}", server.host)))?;
    let mut last = None;
    for addr in addrs {
        match connect_one(addr, timeout, interrupt) {
            Ok(stream) => {
                tracing::info!("connected to {server} ({addr})");
                return Ok(stream);
            }
            Err(None) => {
                return Err(Failure::fatal(ClientError::Interrupted {
                    kept: Kept::Nothing,
                }))
            }
            Err(Some(e)) => {
                tracing::info!("connecting to {addr} failed: {e}");
                last = Some(describe(&e, timeout));
            }
        }
    }
    Err(retry(last.unwrap_or_else(|| "no address to try".into())))
}

/// A connect error in words; timeouts name the limit.
fn describe(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("no answer within {}", seconds(timeout))
        }
        _ => e.to_string(),
    }
}

/// `10 s`, `0.5 s`.
pub fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Connects to one address. The blocking connect runs on a helper thread so that Ctrl-C is
/// noticed within 100 ms instead of at the end of the timeout; `Err(None)` means interrupted
/// (the helper then finishes on its own and its socket, if any, is dropped).
fn connect_one(
    addr: SocketAddr,
    timeout: Duration,
    interrupt: &Interrupt,
) -> Result<TcpStream, Option<io::Error>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let _ = tx.send(TcpStream::connect_timeout(&addr, timeout));
        })
        .map_err(Some)?;
    loop {
        if interrupt.is_set() {
            return Err(None);
        }
        match rx.recv_timeout(POLL) {
            Ok(result) => return result.map_err(Some),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Some(io::Error::other("the connecting thread ended early")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn delays_double_up_to_32_seconds() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(backoff_delay(u32::MAX), MAX_DELAY);
        assert_eq!(backoff_delay(0).as_secs(), 1);
    }

    #[test]
    fn sleep_stops_early_on_interrupt() {
        let interrupt = Interrupt::new();
        let other = interrupt.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.trigger();
        });
        let start = Instant::now();
        let r = sleep_interruptible(Duration::from_secs(30), &interrupt);
        assert!(matches!(r, Err(ClientError::Interrupted { .. })));
        assert!(start.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
        assert!(sleep_interruptible(Duration::from_millis(10), &Interrupt::new()).is_ok());
    }

    fn retry_failure(n: u32) -> Failure {
        Failure::Retry {
            warning: format!("attempt {n} failed"),
            error: Box::new(ClientError::Connect {
                server: "h:1".into(),
                attempts: n,
                reason: "refused".into(),
            }),
        }
    }

    #[test]
    fn retries_then_gives_up_with_the_last_error() {
        let mut calls = Vec::new();
        let r: Result<(), _> = with_retries(0, &Interrupt::new(), |n| {
            calls.push(n);
            Err(retry_failure(n))
        });
        assert_eq!(calls, [1]);
        assert!(matches!(r, Err(ClientError::Connect { attempts: 1, .. })));

        let r = with_retries(1, &Interrupt::new(), |n| {
            if n == 1 {
                Err(retry_failure(n))
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.unwrap(), 2);
    }

    #[test]
    fn fatal_failures_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), _> = with_retries(5, &Interrupt::new(), |_| {
            calls += 1;
            Err(Failure::fatal(ClientError::Usage("x".into())))
        });
        assert_eq!(calls, 1);
        assert!(matches!(r, Err(ClientError::Usage(_))));
    }

    #[test]
    fn open_connects_and_reports_refusals() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server: Address = format!("127.0.0.1:{port}").parse().unwrap();
        let i = Interrupt::new();
        assert!(open(&server, Duration::from_secs(5), 1, 0, &i).is_ok());
        drop(listener);
        match open(&server, Duration::from_secs(5), 1, 0, &i) {
            Err(Failure::Retry { warning, error }) => {
                assert!(warning.starts_with(&format!("connection to 127.0.0.1:{port} failed")));
                assert_eq!(error.exit_code(), 3);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
