//! One download from start to end: plan the output, connect (with retries), request, receive
//! into the temporary file, verify, publish.

use crate::cli::{GetOptions, Protocol};
use crate::connect::with_retries;
use crate::error::ClientError;
use crate::fetch::{open, Stats};
use crate::interrupt::Interrupt;
use crate::legacy;
use crate::output::{Destination, Sink};
use crate::progress::{rate, Progress};
use crate::transfer::{into_error, verify, Context, Stopped};
use sfts_protocol::checksum::HashingWriter;
use sfts_protocol::{Digest, DigestSet};
use std::time::{Duration, Instant};

/// A finished, verified download.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The verified digest of the received bytes.
    pub digest: Digest,
    /// Where the bytes are, as printed after the digest (`-` for standard output).
    pub output: String,
    /// Size of the file.
    pub size: u64,
    /// Time from the first connection to the verified end.
    pub elapsed: Duration,
    /// Bytes fetched and reused, reconnections, repaired chunks.
    pub stats: Stats,
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
    let _watched = Watched(interrupt);
    match opts.protocol {
        Protocol::Native => crate::resume::get_native(opts, &dest, interrupt),
        Protocol::Legacy => {
            let started = Instant::now();
            let mut stream = with_retries(opts.retries, interrupt, |attempt| {
                open(opts, attempt, opts.retries, interrupt)
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
            receive(opts, &dest, meta.size, interrupt, started, |sink, ctx| {
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

/// Opens the output, runs `body` (which fills it and returns the server's digest), verifies
/// and publishes.
fn receive(
    opts: &GetOptions,
    dest: &Destination,
    size: u64,
    interrupt: &Interrupt,
    started: Instant,
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
        size,
        elapsed: started.elapsed(),
        stats: Stats {
            fetched: received,
            ..Stats::default()
        },
    })
}
