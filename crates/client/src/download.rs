//! One download from start to end: plan the output, connect (with retries), request, receive
//! into the temporary file, verify, publish.

use crate::cli::{GetOptions, Protocol};
use crate::connect::{self, with_retries, Failure};
use crate::error::ClientError;
use crate::interrupt::Interrupt;
use crate::legacy;
use crate::native::{HandshakeError, NativeSession, Request, Welcome};
use crate::output::{Destination, Sink};
use crate::progress::{rate, Progress};
use crate::transfer::{into_error, verify, Context, Stopped};
use sfts_protocol::checksum::HashingWriter;
use sfts_protocol::{Digest, DigestSet, ErrorCode};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A finished, verified download.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The verified digest of the received bytes.
    pub digest: Digest,
    /// Where the bytes are, as printed after the digest (`-` for standard output).
    pub output: String,
    /// Bytes received.
    pub bytes: u64,
    /// Time from the first to the last byte.
    pub elapsed: Duration,
}

/// Forgets the active socket when the download ends, however it ends.
struct Watched<'a>(&'a Interrupt);

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Downloads `opts.remote` as `opts` says. Nothing is written before the server accepted the
/// request; nothing appears under the final name before the digest matched.
pub fn get(opts: &GetOptions, interrupt: &Interrupt) -> Result<Outcome, ClientError> {
    let dest = Destination::plan(&opts.output, &opts.remote, opts.force)?;
    let server = opts.server.to_string();
    let req = Request {
        server: &server,
        remote: &opts.remote,
        chunk_size: opts.chunk_size,
        algorithm: opts.algorithm,
        timeout: opts.timeout,
    };
    let _watched = Watched(interrupt);
    match opts.protocol {
        Protocol::Native => {
            let (mut session, welcome) = with_retries(opts.retries, interrupt, |attempt| {
                let stream = open(opts, attempt, interrupt)?;
                let mut session = NativeSession::new(stream);
                match session.handshake(&req) {
                    Ok(welcome) => Ok((session, welcome)),
                    Err(HandshakeError::Fatal(e)) => Err(Failure::fatal(e)),
                    Err(HandshakeError::Unavailable { code, message }) => {
                        // Drop our clone too, or the server keeps counting this connection
                        // while we wait to retry.
                        interrupt.release();
                        Err(unavailable(opts, &server, code, message))
                    }
                }
            })?;
            let Welcome {
                version,
                server: name,
                ..
            } = &welcome;
            tracing::info!("server '{name}' speaks protocol version {version}");
            tracing::info!(
                "requesting '{}' (chunk size {}, {})",
                opts.remote,
                opts.chunk_size,
                opts.algorithm
            );
            let header = session.request(&req, &welcome)?;
            receive(opts, &dest, header.size, interrupt, |sink, ctx| {
                session.receive(&header, opts.algorithm, sink, ctx)
            })
        }
        Protocol::Legacy => {
            let mut stream = with_retries(opts.retries, interrupt, |attempt| {
                open(opts, attempt, interrupt)
            })?;
            tracing::info!("requesting '{}' (original protocol)", opts.remote);
            let accepted = legacy::request(&mut stream, &opts.remote, opts.timeout)?;
            let meta = &accepted.metadata;
            tracing::info!(
                "server sends '{}': {} bytes, md5 {}",
                meta.name,
                meta.size,
                meta.md5
            );
            let mut buf = vec![0u8; opts.chunk_size as usize];
            receive(opts, &dest, meta.size, interrupt, |sink, ctx| {
                legacy::receive(
                    &mut stream,
                    &accepted.leftover,
                    meta.size,
                    sink,
                    &mut buf,
                    ctx,
                )
                .map(|()| meta.md5.clone())
            })
        }
    }
}

/// One connection attempt with the socket timeouts set and the socket watched for Ctrl-C.
fn open(opts: &GetOptions, attempt: u32, interrupt: &Interrupt) -> Result<TcpStream, Failure> {
    let stream = connect::open(&opts.server, opts.timeout, attempt, opts.retries, interrupt)?;
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
fn unavailable(opts: &GetOptions, server: &str, code: ErrorCode, message: String) -> Failure {
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
            retries: opts.retries,
        }),
    }
}

/// Opens the output, runs `body` (which fills it and returns the server's digest), verifies
/// and publishes.
fn receive(
    opts: &GetOptions,
    dest: &Destination,
    size: u64,
    interrupt: &Interrupt,
    body: impl FnOnce(&mut HashingWriter<Sink>, &Context<'_>) -> Result<Digest, Stopped>,
) -> Result<Outcome, ClientError> {
    let sink = dest.open()?;
    tracing::info!(
        "receiving '{}': {size} bytes into '{}'",
        opts.remote,
        match dest {
            Destination::Stdout => "standard output".into(),
            Destination::File { part, .. } => part.display().to_string(),
        }
    );
    let progress = Progress::new(size, !opts.quiet);
    let ctx = Context {
        interrupt,
        progress: &progress,
        timeout: opts.timeout,
    };
    let started = Instant::now();
    let mut writer = HashingWriter::new(sink, DigestSet::of(&[opts.algorithm]));
    let result = body(&mut writer, &ctx);
    let elapsed = started.elapsed();
    progress.finish();
    let received = writer.written();
    let (mut sink, digests) = writer.finish();
    let expected = match result {
        Ok(digest) => digest,
        Err(stopped) => {
            use std::io::Write;
            let _ = sink.flush();
            tracing::info!(
                "transfer stopped after {} of {size} bytes in {:.2} s: {}",
                stopped.received,
                elapsed.as_secs_f64(),
                stopped.cause
            );
            return Err(into_error(stopped, size, dest.kept()));
        }
    };
    tracing::info!(
        "transfer finished: {received} bytes in {:.2} s ({})",
        elapsed.as_secs_f64(),
        rate(received, elapsed)
    );
    let actual = digests
        .into_iter()
        .next()
        .expect("a hasher for one algorithm yields one digest");
    verify(&opts.remote, &expected, &actual, dest.kept())?;
    tracing::info!("{} verified: {actual}", opts.algorithm);
    dest.publish(sink, opts.force)?;
    if let Destination::File { target, .. } = dest {
        tracing::info!("saved '{}'", target.display());
    }
    Ok(Outcome {
        digest: actual,
        output: dest.display_name(),
        bytes: received,
        elapsed,
    })
}
