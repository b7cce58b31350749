//! A native download that never loses progress.
//!
//! To a file, the bytes go to `<target>.sfts-part` and every completed chunk's SHA-256 to
//! `<target>.sfts-journal` (see [`crate::journal`]). A rerun after any interruption finds both
//! and resumes:
//!
//! 1. asks the server for the file's size and modification time (`Stat`): if they differ from
//!    the journal's, the file changed; the partial is discarded and the download starts over;
//! 2. reads each journaled chunk of the partial once, checks its SHA-256 and feeds it to the
//!    whole-file hash; a chunk that no longer matches is fetched again, alone;
//! 3. fetches the rest from the end of the verified part, with the journal's version as
//!    `if_match`, so the server never sends bytes of another version.
//!
//! The whole-file digest the server sends in the trailer is then compared with ours, which
//! covers every byte of the final file, reused or fetched. Mid-transfer drops and stalls are
//! handled below this module by [`Fetcher`]. To standard output there is nothing to resume,
//! but a dropped connection is still re-established and continued.

use crate::cli::GetOptions;
use crate::download::Outcome;
use crate::error::{ClientError, Kept};
use crate::fetch::{Fetched, Fetcher};
use crate::interrupt::Interrupt;
use crate::journal::{journal_path, Journal};
use crate::output::{create_part, stdout_error, Destination, Sink};
use crate::progress::Bytes;
use crate::sinks::{chunk_digest, BufferSink, FileSink, StdoutSink};
use crate::transfer::verify;
use sfts_protocol::{Algorithm, Capabilities, Digest, DigestSet, FileVersion, MultiHasher, TO_END};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

/// How often a file may change under a download before the client gives up.
const MAX_RESTARTS: u32 = 3;

/// How one attempt at a file download ended.
enum Step {
    /// Verified; the partial file and the digest.
    Done {
        file: File,
        digest: Digest,
        size: u64,
    },
    /// The partial cannot be used (the file changed, or the server cannot resume); why.
    StartOver(String),
}

/// Downloads with the native protocol, resuming and reconnecting.
pub fn get_native(
    opts: &GetOptions,
    dest: &Destination,
    interrupt: &Interrupt,
) -> Result<Outcome, ClientError> {
    let started = Instant::now();
    let mut f = Fetcher::connect(opts, interrupt)?;
    tracing::info!(
        "requesting '{}' (chunk size {}, {})",
        opts.remote,
        opts.chunk_size,
        opts.algorithm
    );
    let result = match dest {
        Destination::Stdout => to_stdout(&mut f, opts),
        Destination::File { target, part } => to_file(&mut f, opts, dest, target, part),
    };
    f.progress.finish();
    let (digest, size) = result?;
    let elapsed = started.elapsed();
    tracing::info!(
        "'{}' done: {} fetched, {} reused, {} reconnection(s), {} chunk(s) repaired, {:.2} s",
        opts.remote,
        f.stats.fetched,
        f.stats.reused,
        f.stats.retries,
        f.stats.repaired,
        elapsed.as_secs_f64()
    );
    Ok(Outcome {
        digest,
        output: dest.display_name(),
        size,
        elapsed,
        stats: f.stats,
    })
}

/// The whole file to standard output.
fn to_stdout(f: &mut Fetcher<'_>, opts: &GetOptions) -> Result<(Digest, u64), ClientError> {
    let mut sink = StdoutSink::new(opts.algorithm);
    let mut version = None;
    let digests = DigestSet::of(&[opts.algorithm]);
    let fetched = f.fetch(0, TO_END, digests, &mut version, &mut sink, &Kept::Stdout)?;
    let size = version.map_or(0, |v| v.size);
    let (flushed, ours) = sink.finish();
    flushed.map_err(|e| stdout_error(e, "flush"))?;
    match fetched {
        Fetched::Done(trailer) => {
            let theirs = pick(trailer, opts.algorithm, &Kept::Stdout)?;
            verify(&opts.remote, &theirs, &ours, Kept::Stdout)?;
            Ok((ours, size))
        }
        Fetched::Changed(_) => Err(ClientError::Aborted {
            received: f.stats.fetched,
            size,
            message: "the file changed on the server during the download".into(),
            kept: Kept::Stdout,
        }),
    }
}

/// The whole file to `target`, through its partial file and journal.
fn to_file(
    f: &mut Fetcher<'_>,
    opts: &GetOptions,
    dest: &Destination,
    target: &Path,
    part: &Path,
) -> Result<(Digest, u64), ClientError> {
    let jpath = journal_path(target);
    let mut journal = if opts.no_resume {
        None
    } else {
        existing_journal(opts, part, &jpath)
    };
    let mut restarts = 0;
    loop {
        let step = match journal.take() {
            Some(j) => resume_file(f, opts, part, j)?,
            None => fresh_file(f, opts, part, &jpath)?,
        };
        match step {
            Step::Done { file, digest, size } => {
                dest.publish(Sink::File(file), opts.force)?;
                remove_if_present(&jpath);
                tracing::info!("saved '{}'", target.display());
                return Ok((digest, size));
            }
            Step::StartOver(why) => {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(ClientError::KeepsChanging {
                        remote: opts.remote.clone(),
                        times: restarts,
                    });
                }
                tracing::warn!("{why}; starting over");
                f.stats.reused = 0;
            }
        }
    }
}

/// The journal of an earlier attempt at this download, if it can be used.
fn existing_journal(opts: &GetOptions, part: &Path, jpath: &Path) -> Option<Journal> {
    let journal = match Journal::open(jpath) {
        Ok(Some(j)) => j,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(
                "cannot read the resume journal '{}' ({e}); starting over",
                jpath.display()
            );
            return None;
        }
    };
    if journal.header().path != opts.remote {
        tracing::info!(
            "'{}' belongs to a download of '{}'; starting over",
            jpath.display(),
            journal.header().path
        );
        return None;
    }
    if !part.is_file() {
        tracing::info!("'{}' is gone; starting over", part.display());
        return None;
    }
    Some(journal)
}

/// A download from byte 0, replacing any partial file and journal.
fn fresh_file(
    f: &mut Fetcher<'_>,
    opts: &GetOptions,
    part: &Path,
    jpath: &Path,
) -> Result<Step, ClientError> {
    remove_if_present(jpath);
    let file = create_part(part)?;
    let mut sink = FileSink::fresh(
        file,
        jpath.to_path_buf(),
        &opts.remote,
        opts.chunk_size,
        opts.algorithm,
    );
    let kept = Kept::Resumable(part.to_path_buf());
    let mut version = None;
    let digests = DigestSet::of(&[opts.algorithm]);
    let fetched = match f.fetch(0, TO_END, digests, &mut version, &mut sink, &kept) {
        Ok(fetched) => fetched,
        Err(e) => {
            if version.is_none() {
                // Refused before the header: nothing was written, leave nothing behind.
                drop(sink);
                remove_if_present(part);
            } else {
                sink.sync();
            }
            return Err(e);
        }
    };
    let size = version.map_or(0, |v| v.size);
    finish(opts, part, jpath, sink, fetched, size)
}

/// Continues the partial file described by `journal`.
fn resume_file(
    f: &mut Fetcher<'_>,
    opts: &GetOptions,
    part: &Path,
    mut journal: Journal,
) -> Result<Step, ClientError> {
    let header = journal.header().clone();
    let jpath = journal.path().to_path_buf();
    let mut version = Some(FileVersion {
        size: header.size,
        mtime_ns: header.mtime_ns,
    });
    if !f.server_has(Capabilities::RESUME) {
        return Ok(Step::StartOver(
            "the server cannot resume downloads (it does not offer ranges)".into(),
        ));
    }
    if let Some(info) = f.stat()? {
        if info.size != header.size || info.mtime_ns != header.mtime_ns {
            return Ok(Step::StartOver(format!(
                "'{}' changed on the server since the partial download began (size {} -> {}, \
                 modified {} -> {})",
                opts.remote,
                header.size,
                info.size,
                time_text(header.mtime_ns),
                time_text(info.mtime_ns)
            )));
        }
    }
    let kept = Kept::Resumable(part.to_path_buf());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(|e| ClientError::local("cannot open", part, e))?;
    let on_disk = file
        .metadata()
        .map_err(|e| ClientError::local("cannot read", part, e))?
        .len();
    f.progress.set_total(header.size);

    // Verify the journaled prefix, repairing what no longer matches.
    let mut whole = MultiHasher::new(DigestSet::of(&[opts.algorithm]));
    let mut confirmed = 0u64;
    let mut buf = vec![0u8; header.chunk_size as usize];
    let journaled = journal.confirmed_chunks();
    if journaled > 0 && !opts.quiet {
        eprintln!(
            "resuming '{}': checking the {} already downloaded",
            opts.remote,
            Bytes(header.chunk_range(journaled - 1).1.min(on_disk))
        );
    }
    // The common case, nothing corrupted: one read, the whole-file digest here and the chunk
    // digests on a second core. Only when a chunk fails does the careful loop below run.
    let fast = fast_check(&mut file, &journal, journaled, on_disk, opts.algorithm)
        .map_err(|e| ClientError::local("cannot read", part, e))?;
    let start_at = match fast {
        Some((hashed, bytes, chunks)) => {
            whole = hashed;
            confirmed = bytes;
            f.stats.reused += bytes;
            f.progress.advance(bytes as usize);
            chunks
        }
        None => 0,
    };
    for index in start_at..journaled {
        let (start, end) = header.chunk_range(index);
        if end > on_disk {
            break;
        }
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(chunk))
            .map_err(|e| ClientError::local("cannot read", part, e))?;
        if journal.chunk(index) == Some(chunk_digest(chunk)) {
            whole.update(chunk);
            f.stats.reused += chunk.len() as u64;
            f.progress.advance(chunk.len());
        } else {
            tracing::warn!(
                "chunk {index} (bytes {start}..{end}) of '{}' no longer matches its journal \
                 entry; fetching it again",
                part.display()
            );
            journal.forget(index);
            let mut fresh = BufferSink::default();
            let digests = DigestSet::default();
            match f.fetch(start, end - start, digests, &mut version, &mut fresh, &kept)? {
                Fetched::Done(_) => {}
                Fetched::Changed(_) => {
                    return Ok(Step::StartOver(format!(
                        "'{}' changed on the server since the partial download began",
                        opts.remote
                    )))
                }
            }
            let write = file
                .seek(SeekFrom::Start(start))
                .and_then(|_| io::Write::write_all(&mut file, &fresh.0));
            write.map_err(|e| ClientError::local("cannot write to", part, e))?;
            journal
                .record(index, chunk_digest(&fresh.0))
                .map_err(|e| ClientError::local("cannot write to", &jpath, e))?;
            whole.update(&fresh.0);
            f.stats.repaired += 1;
        }
        confirmed = end;
    }
    if f.stats.reused > 0 || f.stats.repaired > 0 {
        tracing::info!(
            "resuming '{}' at byte {confirmed} of {} ({} reused, {} chunk(s) repaired)",
            opts.remote,
            header.size,
            f.stats.reused,
            f.stats.repaired
        );
    }

    // Whatever lies past the verified part was never confirmed: drop it and fetch the rest.
    file.set_len(confirmed)
        .and_then(|()| file.seek(SeekFrom::Start(confirmed)).map(|_| ()))
        .map_err(|e| ClientError::local("cannot truncate", part, e))?;
    let mut sink = FileSink::resumed(file, journal, &opts.remote, confirmed, whole);
    let digests = DigestSet::of(&[opts.algorithm]);
    let fetched = match f.fetch(confirmed, TO_END, digests, &mut version, &mut sink, &kept) {
        Ok(fetched) => fetched,
        Err(e) => {
            sink.sync();
            return Err(e);
        }
    };
    finish(opts, part, &jpath, sink, fetched, header.size)
}

/// Reads the journaled chunks of the partial once: the whole-file digest on this thread, each
/// chunk's SHA-256 checked against the journal on another. `Some((hasher, bytes, chunks))`
/// when every chunk present on disk matched; `None` when one did not (the caller then checks
/// chunk by chunk and repairs).
fn fast_check(
    file: &mut File,
    journal: &Journal,
    journaled: u64,
    on_disk: u64,
    algorithm: Algorithm,
) -> io::Result<Option<(MultiHasher, u64, u64)>> {
    use std::sync::mpsc::{channel, sync_channel};
    let header = journal.header();
    let expected: Vec<Option<[u8; 32]>> = (0..journaled).map(|i| journal.chunk(i)).collect();
    let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(2);
    let (give_back, spare) = channel::<Vec<u8>>();
    let checker = std::thread::Builder::new()
        .name("chunk-check".into())
        .spawn(move || {
            for (index, buf) in rx {
                if expected[index as usize] != Some(chunk_digest(&buf)) {
                    return false;
                }
                let _ = give_back.send(buf);
            }
            true
        })?;
    let mut whole = MultiHasher::new(DigestSet::of(&[algorithm]));
    let (mut bytes, mut chunks) = (0u64, 0u64);
    let mut read_failed = None;
    for index in 0..journaled {
        let (start, end) = header.chunk_range(index);
        if end > on_disk {
            break;
        }
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize((end - start) as usize, 0);
        if let Err(e) = file
            .seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut buf))
        {
            read_failed = Some(e);
            break;
        }
        whole.update(&buf);
        if tx.send((index, buf)).is_err() {
            break; // the checker found a bad chunk
        }
        bytes = end;
        chunks = index + 1;
    }
    drop(tx);
    let all_good = checker.join().unwrap_or(false);
    if let Some(e) = read_failed {
        return Err(e);
    }
    Ok(all_good.then_some((whole, bytes, chunks)))
}

/// Compares the trailer with our digest of the whole partial file.
fn finish(
    opts: &GetOptions,
    part: &Path,
    jpath: &Path,
    sink: FileSink,
    fetched: Fetched,
    size: u64,
) -> Result<Step, ClientError> {
    let trailer = match fetched {
        Fetched::Done(trailer) => trailer,
        Fetched::Changed(_) => {
            return Ok(Step::StartOver(format!(
                "'{}' changed on the server during the download",
                opts.remote
            )))
        }
    };
    let written = sink.position();
    let (file, ours) = sink.finish();
    let kept = Kept::File(part.to_path_buf());
    let theirs = pick(trailer, opts.algorithm, &kept)?;
    if let Err(e) = verify(&opts.remote, &theirs, &ours, kept) {
        // The partial is worthless for a resume; keep it for inspection only.
        remove_if_present(jpath);
        return Err(e);
    }
    debug_assert_eq!(written, size);
    tracing::info!("{} verified: {ours}", opts.algorithm);
    Ok(Step::Done {
        file,
        digest: ours,
        size,
    })
}

/// The trailer's digest for `algorithm`.
fn pick(trailer: Vec<Digest>, algorithm: Algorithm, kept: &Kept) -> Result<Digest, ClientError> {
    trailer
        .into_iter()
        .find(|d| d.algorithm == algorithm)
        .ok_or_else(|| ClientError::Protocol {
            detail: format!("its trailer carries no {algorithm} digest"),
            kept: kept.clone(),
        })
}

fn remove_if_present(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove '{}': {e}", path.display()),
    }
}

/// A modification time for messages: UTC, to the second.
pub fn time_text(mtime_ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
    .map_or_else(
        || format!("{mtime_ns} ns"),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}
