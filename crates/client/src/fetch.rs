//! The native fetcher: one connection at a time, re-established when it drops or stalls, and
//! ranges of one version of a file fetched into a sink without ever splicing two versions.
//!
//! [`Fetcher::fetch`] asks for a range with the file's version (size and modification time)
//! as `if_match`. When the connection breaks mid-range, it reconnects with backoff and asks for
//! the rest of the range from the exact byte where the sink stopped, so nothing is fetched
//! twice. If the server answers with the whole file instead (its version changed), the fetch
//! ends with [`Fetched::Changed`] and the caller decides what to do.

use crate::cli::GetOptions;
use crate::connect::{self, backoff_delay, sleep_interruptible, with_retries, Failure};
use crate::error::{ClientError, Kept};
use crate::interrupt::Interrupt;
use crate::native::{HandshakeError, NativeSession, Request, Threads, Welcome};
use crate::progress::Progress;
use crate::tls::{Stream, Tls, TlsFailure};
use crate::transfer::{into_error, Context, Stop};
use sfts_protocol::{
    Capabilities, Digest, DigestSet, ErrorCode, FileHeader, FileInfo, FileVersion, GetRequest,
    TO_END,
};
use std::io::Write;
use std::net::TcpStream;

/// Counters for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Data bytes received over the network.
    pub fetched: u64,
    /// Bytes of an earlier partial download that verified and were kept.
    pub reused: u64,
    /// Of those, bytes kept without reading them back: the partial was sealed by a clean stop
    /// and found unchanged (see `seal.rs`).
    pub sealed: u64,
    /// Reconnections after a connection dropped or stalled mid-transfer.
    pub retries: u32,
    /// Chunks of a partial download that no longer matched their journal and were fetched
    /// again.
    pub repaired: u32,
}

/// A sink for the bytes of a range. `begin` is called once with the first header, before any
/// byte is written.
pub trait RangeSink: Write {
    /// The server announced the file; a fresh download learns its size and version here.
    fn begin(&mut self, _header: &FileHeader) -> Result<(), ClientError> {
        Ok(())
    }

    /// How many threads a transfer into this sink is received on: by default two from a few
    /// MiB ([`Threads::Auto`]); a sink whose writing and hashing costs about as much as
    /// handing frames to another thread says so ([`Threads::LargeOnly`], [`Threads::One`]),
    /// and one whose hash is faster than memory takes the bytes in pieces ([`Threads::Hot`]).
    fn threads(&self) -> Threads {
        Threads::Auto
    }
}

/// How a range fetch ended.
#[derive(Debug)]
pub enum Fetched {
    /// Every byte of the range arrived; the whole-file digests of the trailer.
    Done(Vec<Digest>),
    /// The file on the server is no longer the version asked for; what it is now.
    Changed(FileHeader),
}

/// A live native connection.
struct Live {
    session: NativeSession<Stream>,
    welcome: Welcome,
}

/// Fetches ranges of one remote file, reconnecting as needed.
pub struct Fetcher<'a> {
    opts: &'a GetOptions,
    interrupt: &'a Interrupt,
    server: String,
    live: Option<Live>,
    /// The TLS configuration with `--tls`.
    tls: Option<Tls>,
    /// The progress bar (its total is set once the size is known).
    pub progress: Progress,
    /// The counters.
    pub stats: Stats,
}

impl<'a> Fetcher<'a> {
    /// Connects (with `--retries` attempts) and shakes hands.
    pub fn connect(opts: &'a GetOptions, interrupt: &'a Interrupt) -> Result<Self, ClientError> {
        let mut f = Fetcher {
            opts,
            interrupt,
            server: opts.server.to_string(),
            live: None,
            tls: Tls::from_choice(&opts.tls)?,
            progress: Progress::new(0, !opts.quiet),
            stats: Stats::default(),
        };
        let live = with_retries(opts.retries, interrupt, |attempt| {
            f.attempt(attempt, opts.retries)
        })?;
        let Welcome {
            version, server, ..
        } = &live.welcome;
        tracing::info!("server '{server}' speaks protocol version {version}");
        f.live = Some(live);
        Ok(f)
    }

    /// The request description used for messages.
    fn request(&self) -> Request<'_> {
        request_of(self.opts, &self.server)
    }

    /// One connection attempt and handshake.
    fn attempt(&self, attempt: u32, retries: u32) -> Result<Live, Failure> {
        let tcp = open(self.opts, attempt, retries, self.interrupt)?;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(tls) => match tls.connect(&self.opts.server.host, tcp) {
                Ok(stream) => stream,
                Err(TlsFailure::Fatal(e)) => return Err(Failure::fatal(e)),
                Err(TlsFailure::Io(e)) => {
                    let reason = format!("TLS handshake failed: {e}");
                    return Err(Failure::Retry {
                        warning: format!("connection to {} failed ({reason})", self.server),
                        error: Box::new(ClientError::Connect {
                            server: self.server.clone(),
                            attempts: attempt,
                            reason,
                        }),
                    });
                }
            },
        };
        let mut session = NativeSession::new(stream);
        match session.handshake(&self.request()) {
            Ok(welcome) => {
                if let Some(token) = &self.opts.token {
                    self.authenticate(&mut session, &welcome, token)?;
                }
                // The priority is a session setting: sent on every (re)connection.
                if let Some(p) = self.opts.priority {
                    if welcome.capabilities.has(Capabilities::PRIORITY) {
                        if let Err(e) = session.send(&sfts_protocol::Message::SetPriority(p)) {
                            return Err(Failure::Retry {
                                warning: format!("cannot send the priority: {e}"),
                                error: Box::new(ClientError::Disconnected {
                                    stage: "sending the priority",
                                    reason: e.to_string(),
                                }),
                            });
                        }
                        tracing::info!("priority {p}");
                    }
                }
                Ok(Live { session, welcome })
            }
            Err(HandshakeError::Fatal(e)) => Err(Failure::fatal(e)),
            Err(HandshakeError::Closed) => {
                self.interrupt.release();
                let reason = "the server closed the connection without answering (a busy \
                              server; or not an SFTS server: for a server of the original \
                              design use --protocol legacy)"
                    .to_string();
                Err(Failure::Retry {
                    warning: format!("{} closed the connection without answering", self.server),
                    error: Box::new(ClientError::Disconnected {
                        stage: "waiting for the server's greeting",
                        reason,
                    }),
                })
            }
            Err(HandshakeError::Unavailable { code, message }) => {
                // Drop our clone too, or the server keeps counting this connection while we
                // wait to retry.
                self.interrupt.release();
                Err(unavailable(&self.server, code, message, retries))
            }
        }
    }

    /// The live session with the progress bar and the interrupt flag, borrowed together.
    pub fn parts(
        &mut self,
    ) -> Result<(&mut NativeSession<Stream>, &Progress, &Interrupt), ClientError> {
        match self.live.as_mut() {
            Some(live) => Ok((&mut live.session, &self.progress, self.interrupt)),
            None => Err(ClientError::Disconnected {
                stage: "reconnecting",
                reason: "no connection".into(),
            }),
        }
    }

    /// The socket timeout.
    pub fn timeout(&self) -> std::time::Duration {
        self.opts.timeout
    }

    /// True once Ctrl-C or SIGTERM arrived.
    pub fn interrupted(&self) -> bool {
        self.interrupt.is_set()
    }

    /// Presents the access token.
    fn authenticate(
        &self,
        session: &mut NativeSession<Stream>,
        welcome: &Welcome,
        token: &str,
    ) -> Result<(), Failure> {
        if !welcome.capabilities.has(Capabilities::AUTH) {
            return Err(Failure::fatal(ClientError::Auth {
                server: self.server.clone(),
                message: "a token was given but the server does not use authentication".into(),
            }));
        }
        let sent = session.send(&sfts_protocol::Message::Auth {
            token: token.to_string(),
        });
        if let Err(e) = sent {
            return Err(Failure::fatal(ClientError::Disconnected {
                stage: "authenticating",
                reason: e.to_string(),
            }));
        }
        match session.recv(
            "waiting for the server to check the token",
            self.opts.timeout,
        ) {
            Ok(sfts_protocol::Message::AuthOk { user }) => {
                tracing::info!("authenticated as '{user}'");
                Ok(())
            }
            Ok(sfts_protocol::Message::Error { message, .. }) => {
                Err(Failure::fatal(ClientError::Auth {
                    server: self.server.clone(),
                    message,
                }))
            }
            Ok(other) => Err(Failure::fatal(ClientError::Protocol {
                detail: format!("expected AuthOk, got {}", other.name()),
                kept: Kept::Nothing,
            })),
            Err(e) => Err(Failure::fatal(e)),
        }
    }

    /// True when the connected server offers every feature in `bits`.
    pub fn server_has(&self, bits: u64) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.welcome.capabilities.has(bits))
    }

    /// `Stat` of the remote file, or `None` when the server does not offer it.
    pub fn stat(&mut self) -> Result<Option<FileInfo>, ClientError> {
        if !self.server_has(Capabilities::STAT) {
            return Ok(None);
        }
        let req = request_of(self.opts, &self.server);
        let live = self.live.as_mut().expect("connected");
        live.session.stat(&req).map(Some)
    }

    /// Stops before any request for digests the server cannot compute (BLAKE3 and XXH128 need
    /// their capabilities; an older server would take the request for garbage).
    pub fn check_digests(&self, digests: DigestSet) -> Result<(), ClientError> {
        for algorithm in digests.iter() {
            if algorithm
                .capability()
                .is_some_and(|capability| !self.server_has(capability))
            {
                return Err(ClientError::Refused {
                    remote: self.opts.remote.clone(),
                    message: format!(
                        "the server does not compute {} digests (it is an older release); \
                         choose sha256 instead",
                        algorithm.label()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Fetches `length` bytes ([`TO_END`] for the rest) from `offset` into `sink`, with the
    /// whole-file `digests` in the trailer. `version` is the file version the bytes must come
    /// from; `None` for a fresh download, which takes the version of the first header.
    pub fn fetch(
        &mut self,
        offset: u64,
        length: u64,
        digests: DigestSet,
        version: &mut Option<FileVersion>,
        sink: &mut impl RangeSink,
        kept: &Kept,
    ) -> Result<Fetched, ClientError> {
        self.check_digests(digests)?;
        let mut done = 0u64;
        // Reconnections since the last byte that arrived: the budget is per stall, not per
        // transfer, so a long transfer over a flaky link is not given up after 10 cuts.
        let mut failed_in_a_row = 0u32;
        loop {
            let (pos, rest) = (
                offset + done,
                if length == TO_END {
                    TO_END
                } else {
                    length - done
                },
            );
            if pos > offset && !self.server_has(Capabilities::RESUME) {
                return Err(ClientError::ConnectionLost {
                    received: pos,
                    size: version.map_or(0, |v| v.size),
                    reason: "the connection dropped and the server cannot resume".into(),
                    kept: kept.clone(),
                });
            }
            let get = GetRequest {
                path: self.opts.remote.clone(),
                offset: pos,
                length: rest,
                chunk_size: self.opts.chunk_size,
                digests,
                if_match: *version,
            };
            let header = match self.request_range(get) {
                Ok(h) => h,
                Err(e) if is_connection_error(&e) => {
                    self.reconnect(&e.to_string(), &mut failed_in_a_row, kept)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match version {
                None => {
                    *version = Some(FileVersion {
                        size: header.size,
                        mtime_ns: header.mtime_ns,
                    });
                    self.progress.set_total(header.size);
                    sink.begin(&header)?;
                }
                Some(v) if header.offset != pos || !same_version(v, &header) => {
                    return Ok(Fetched::Changed(header));
                }
                Some(_) => {}
            }
            if pos > offset {
                tracing::info!("resumed '{}' at byte {pos}", self.opts.remote);
            }
            let ctx = Context {
                interrupt: self.interrupt,
                progress: &self.progress,
                timeout: self.opts.timeout,
            };
            let live = self.live.as_mut().expect("connected");
            let threads = sink.threads();
            match live.session.receive_all(&header, sink, &ctx, threads) {
                Ok(trailer) => {
                    self.stats.fetched += header.length;
                    return Ok(Fetched::Done(trailer));
                }
                Err(stopped) => {
                    self.stats.fetched += stopped.received;
                    done += stopped.received;
                    if stopped.received > 0 {
                        failed_in_a_row = 0;
                    }
                    match &stopped.cause {
                        Stop::Lost(reason) | Stop::Aborted(reason)
                            if retryable_stop(&stopped.cause) =>
                        {
                            let reason = format!(
                                "connection lost after {} of {} bytes ({reason})",
                                pos + stopped.received,
                                header.size
                            );
                            self.reconnect(&reason, &mut failed_in_a_row, kept)?;
                        }
                        _ => return Err(into_error(stopped, header.size, kept.clone())),
                    }
                }
            }
        }
    }

    fn request_range(&mut self, get: GetRequest) -> Result<FileHeader, ClientError> {
        let req = request_of(self.opts, &self.server);
        match self.live.as_mut() {
            Some(live) => live.session.request_range(&req, &live.welcome, get),
            None => Err(ClientError::Disconnected {
                stage: "reconnecting",
                reason: "no connection".into(),
            }),
        }
    }

    /// The live session, for commands that exchange their own messages (uploads, listings).
    pub fn session(&mut self) -> Result<&mut NativeSession<Stream>, ClientError> {
        match self.live.as_mut() {
            Some(live) => Ok(&mut live.session),
            None => Err(ClientError::Disconnected {
                stage: "reconnecting",
                reason: "no connection".into(),
            }),
        }
    }

    /// Drops the broken connection and opens a new one: at once the first time, then after
    /// 1, 2, 4, ... s, at most `--max-retries` times in a row without progress.
    pub fn reconnect(
        &mut self,
        reason: &str,
        failed_in_a_row: &mut u32,
        kept: &Kept,
    ) -> Result<(), ClientError> {
        self.live = None;
        self.interrupt.release();
        let max = self.opts.max_retries;
        loop {
            if self.interrupt.is_set() {
                return Err(ClientError::Interrupted { kept: kept.clone() });
            }
            if *failed_in_a_row >= max {
                return Err(ClientError::Reconnect {
                    retries: max,
                    reason: reason.to_string(),
                    kept: kept.clone(),
                });
            }
            let delay = match *failed_in_a_row {
                0 => std::time::Duration::ZERO,
                n => backoff_delay(n),
            };
            *failed_in_a_row += 1;
            self.stats.retries += 1;
            tracing::warn!(
                "{reason}; reconnecting in {} s (reconnect {}/{max})",
                delay.as_secs(),
                *failed_in_a_row
            );
            sleep_interruptible(delay, self.interrupt)
                .map_err(|_| ClientError::Interrupted { kept: kept.clone() })?;
            match self.attempt(1, 0) {
                Ok(live) => {
                    tracing::info!("reconnected to {}", self.server);
                    self.live = Some(live);
                    return Ok(());
                }
                // The server answered before: a connection that closes during the handshake
                // is a server (or proxy) still coming back, worth another attempt.
                Err(Failure::Fatal(e))
                    if matches!(
                        *e,
                        ClientError::Handshake { .. } | ClientError::Disconnected { .. }
                    ) =>
                {
                    tracing::warn!("reconnection failed: {e}");
                }
                Err(Failure::Fatal(e)) => {
                    return Err(match *e {
                        ClientError::Interrupted { .. } => {
                            ClientError::Interrupted { kept: kept.clone() }
                        }
                        e => e,
                    })
                }
                Err(Failure::Retry { warning, .. }) => {
                    tracing::warn!("{warning}");
                }
            }
        }
    }
}

/// What the native session needs to know of the request, for its messages.
fn request_of<'r>(opts: &'r GetOptions, server: &'r str) -> Request<'r> {
    Request {
        server,
        remote: &opts.remote,
        chunk_size: opts.chunk_size,
        algorithm: opts.algorithm,
        timeout: opts.timeout,
    }
}

/// Errors while asking for a range that a new connection may cure.
fn is_connection_error(e: &ClientError) -> bool {
    matches!(e, ClientError::Disconnected { .. })
}

/// Stops worth a reconnection: a lost or stalled connection, or a server that is going down
/// (it may be back in a moment).
fn retryable_stop(cause: &Stop) -> bool {
    match cause {
        Stop::Lost(_) => true,
        Stop::Aborted(message) => {
            message.ends_with(&format!("({})", ErrorCode::ShuttingDown.name()))
        }
        _ => false,
    }
}

fn same_version(v: &FileVersion, h: &FileHeader) -> bool {
    v.size == h.size && v.mtime_ns == h.mtime_ns
}

/// One connection attempt with the socket timeouts set and the socket watched for Ctrl-C.
pub fn open(
    opts: &GetOptions,
    attempt: u32,
    retries: u32,
    interrupt: &Interrupt,
) -> Result<TcpStream, Failure> {
    let stream = connect::open(&opts.server, opts.timeout, attempt, retries, interrupt)?;
    let timeouts = stream
        .set_read_timeout(Some(opts.timeout))
        .and_then(|()| stream.set_write_timeout(Some(opts.timeout)));
    if let Err(e) = timeouts {
        return Err(Failure::fatal(ClientError::Local {
            what: "cannot set the socket timeouts".into(),
            source: e,
        }));
    }
    // Small frames (Hello, Get) should not wait for Nagle; data flows the other way.
    let _ = stream.set_nodelay(true);
    interrupt.watch(&stream);
    Ok(stream)
}

/// A busy or shutting-down answer to `Hello`: retried like a failed connection.
pub fn unavailable(server: &str, code: ErrorCode, message: String, retries: u32) -> Failure {
    let state = if code == ErrorCode::Busy {
        "busy"
    } else {
        "shutting down"
    };
    Failure::Retry {
        warning: format!("server {server} is {state} ({message})"),
        error: Box::new(ClientError::Unavailable {
            server: server.to_string(),
            state,
            message,
            retries,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lost_connections_and_shutdowns_are_retried() {
        assert!(retryable_stop(&Stop::Lost("x".into())));
        assert!(retryable_stop(&Stop::Aborted(format!(
            "going down ({})",
            ErrorCode::ShuttingDown.name()
        ))));
        assert!(!retryable_stop(&Stop::Aborted(format!(
            "the file changed ({})",
            ErrorCode::Internal.name()
        ))));
        assert!(!retryable_stop(&Stop::Interrupted));
        assert!(!retryable_stop(&Stop::Protocol("x".into())));
    }
}
