//! A native download that never loses progress.
//!
//! To a file, the bytes go to `<target>.sfts-part` and every completed chunk's digest
//! (XXH3-128; see [`crate::chunk_check`]) to `<target>.sfts-journal` (see [`crate::journal`]). A rerun after any interruption finds both
//! and resumes:
//!
//! 1. asks the server for the file's size and modification time (`Stat`): if they differ from
//!    the journal's, the file changed; the partial is discarded and the download starts over;
//! 2. when the journal holds the whole-file hash state after its last chunk (SHA-256 and MD5
//!    downloads), continues the whole-file digest from that state and fetches the rest from
//!    there at once, while helper threads ([`crate::prefix_check`]) read each journaled
//!    chunk back and check its digest; a chunk that no longer matches is fetched again afterwards and must be exactly
//!    what was downloaded before (else the saved state would not describe the file, and the
//!    download starts over). A partial file the last run sealed when it stopped cleanly, and
//!    still exactly as sealed, is not read back ([`crate::seal`]);
//! 3. otherwise (BLAKE3 and XXH128 downloads, journals of older releases) reads each journaled
//!    chunk once, checks its digest and feeds it to the whole-file hash, repairing what no
//!    longer matches, then fetches the rest from the end of the verified part.
//!
//! Either way the rest is fetched with the journal's version as `if_match`, so the server
//! never sends bytes of another version.
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
use crate::part_lock;
use crate::prefix_check::PrefixCheck;
use crate::progress::Bytes;
use crate::sinks::{BufferSink, FileSink, StdoutSink};
use crate::transfer::verify;
use sfts_protocol::{Algorithm, Capabilities, Digest, DigestSet, FileVersion, MultiHasher, TO_END};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
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
                // Removed while the partial is still ours: once it is renamed, the next
                // client may create a journal under this name.
                remove_if_present(&jpath);
                dest.publish(Sink::File(file), opts.force)?;
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
                f.stats.sealed = 0;
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
    // Locked first: a journal is only touched by the holder of its partial file.
    let file = create_part(part)?;
    remove_if_present(jpath);
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
                // Refused before the header: nothing was written, leave nothing behind
                // (removed while still held).
                remove_if_present(part);
                drop(sink);
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
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // Not a partial download of ours: the fresh download replaces the link.
            return Ok(Step::StartOver(format!(
                "'{}' is a symbolic link",
                part.display()
            )));
        }
        Err(e) => return Err(ClientError::local("cannot open", part, e)),
    };
    // Another client resuming or writing it now: leave it to that one.
    part_lock::lock_named(&file, part, || {
        fs::symlink_metadata(part).map(|m| part_lock::identity(&m))
    })?;
    let on_disk = file
        .metadata()
        .map_err(|e| ClientError::local("cannot read", part, e))?
        .len();
    f.progress.set_total(header.size);
    let journaled = journal.confirmed_chunks();
    // Sealed when the last run stopped, and unchanged since (see `crate::seal`). The seal no
    // longer holds once this run changes the file.
    let sealed = journal.seal().is_some_and(|seal| seal.matches(&file));
    journal
        .unseal()
        .map_err(|e| ClientError::local("cannot write to", &jpath, e))?;
    if let Some((whole, confirmed)) = saved_state(&journal, journaled, on_disk, opts.algorithm) {
        let state = Continued {
            whole,
            confirmed,
            sealed,
        };
        return continue_from_state(f, opts, part, file, journal, state);
    }

    // Verify the journaled prefix, repairing what no longer matches.
    let mut whole = MultiHasher::resumable(DigestSet::of(&[opts.algorithm]));
    let mut confirmed = 0u64;
    let mut buf = vec![0u8; header.chunk_size as usize];
    let kind = journal.chunk_digest();
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
        if journal.chunk(index) == Some(kind.of(chunk)) {
            whole.update(chunk);
            f.stats.reused += chunk.len() as u64;
            f.progress.advance(chunk.len());
        } else {
            journal.forget(index);
            let Some(fresh) = refetch(f, part, index, &header, &mut version)? else {
                return Ok(changed(opts));
            };
            write_at(&mut file, start, &fresh, part)?;
            journal
                .record(index, kind.of(&fresh), None)
                .map_err(|e| ClientError::local("cannot write to", &jpath, e))?;
            whole.update(&fresh);
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
    truncate_to(&mut file, confirmed, part)?;
    // Every chunk up to `confirmed` was just read back and checked (or repaired).
    let trusted = Arc::new(AtomicBool::new(true));
    let mut sink = FileSink::resumed(file, journal, &opts.remote, confirmed, whole, trusted);
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
/// chunk's digest checked against the journal on another. `Some((hasher, bytes, chunks))`
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
    let kind = journal.chunk_digest();
    let expected: Vec<Option<[u8; 32]>> = (0..journaled).map(|i| journal.chunk(i)).collect();
    let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(2);
    let (give_back, spare) = channel::<Vec<u8>>();
    let checker = std::thread::Builder::new()
        .name("chunk-check".into())
        .spawn(move || {
            for (index, buf) in rx {
                if expected[index as usize] != Some(kind.of(&buf)) {
                    return false;
                }
                let _ = give_back.send(buf);
            }
            true
        })?;
    let mut whole = MultiHasher::resumable(DigestSet::of(&[algorithm]));
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

/// The whole-file hasher restored from the state saved after the last journaled chunk, and
/// the bytes it covers; `None` when there is no usable state (nothing journaled, a journal of
/// an older release, another algorithm than this run's, a partial file shorter than the
/// journal says).
fn saved_state(
    journal: &Journal,
    journaled: u64,
    on_disk: u64,
    algorithm: Algorithm,
) -> Option<(MultiHasher, u64)> {
    let last = journaled.checked_sub(1)?;
    let end = journal.header().chunk_range(last).1;
    let state = journal.state_after(last)?;
    // A state of this run's algorithm (a journal may hold another's, from a run asked for
    // another checksum).
    if end > on_disk || state.first() != Some(&algorithm.code()) {
        return None;
    }
    let whole = MultiHasher::restore(state)?;
    Some((whole, end))
}

/// Where a resume from the saved hash state starts.
struct Continued {
    /// The whole-file hasher after the journaled chunks.
    whole: MultiHasher,
    /// The bytes they cover.
    confirmed: u64,
    /// The partial file is as the last run sealed it: nothing to read back.
    sealed: bool,
}

/// Continues from the saved hash state: fetches the rest at once while [`PrefixCheck`] reads
/// the journaled chunks back (unless the file is sealed), then fetches again the chunks that
/// failed.
fn continue_from_state(
    f: &mut Fetcher<'_>,
    opts: &GetOptions,
    part: &Path,
    mut file: File,
    journal: Journal,
    state: Continued,
) -> Result<Step, ClientError> {
    let Continued {
        whole,
        confirmed,
        sealed,
    } = state;
    let header = journal.header().clone();
    let jpath = journal.path().to_path_buf();
    let kind = journal.chunk_digest();
    let journaled = journal.confirmed_chunks();
    let expected: Vec<[u8; 32]> = (0..journaled).filter_map(|i| journal.chunk(i)).collect();
    let kept = Kept::Resumable(part.to_path_buf());
    let mut version = Some(FileVersion {
        size: header.size,
        mtime_ns: header.mtime_ns,
    });
    // Whatever lies past the journaled part was never confirmed: drop it.
    truncate_to(&mut file, confirmed, part)?;
    // Trusted when sealed; else once the check found every chunk good.
    let trusted = Arc::new(AtomicBool::new(sealed));
    let check = if sealed {
        None
    } else {
        let started = PrefixCheck::start(part, &header, kind, expected.clone(), trusted.clone())
            .map_err(|e| ClientError::local("cannot read", part, e))?;
        Some(started)
    };
    f.stats.reused += confirmed;
    f.progress.advance(confirmed as usize);
    if sealed {
        f.stats.sealed += confirmed;
        tracing::info!(
            "resuming '{}' at byte {confirmed} of {} from the saved hash state; the partial \
             file is as the last run left it when it stopped (sealed), so it is not read back",
            opts.remote,
            header.size
        );
    } else {
        tracing::info!(
            "resuming '{}' at byte {confirmed} of {} from the saved hash state; checking the \
             {} chunk(s) already downloaded meanwhile",
            opts.remote,
            header.size,
            journaled
        );
    }
    let mut sink = FileSink::resumed(file, journal, &opts.remote, confirmed, whole, trusted);
    let digests = DigestSet::of(&[opts.algorithm]);
    let fetched = match f.fetch(confirmed, TO_END, digests, &mut version, &mut sink, &kept) {
        Ok(fetched) => fetched,
        Err(e) => {
            // A check that already found every chunk good has set `trusted`: this stop is
            // sealed too.
            if let Some(check) = check {
                check.stop();
            }
            sink.sync();
            return Err(e);
        }
    };
    let bad = match check {
        Some(check) => check
            .finish()
            .map_err(|e| ClientError::local("cannot read", part, e))?,
        None => Vec::new(),
    };
    if matches!(fetched, Fetched::Done(_)) && !bad.is_empty() {
        let mut out = OpenOptions::new()
            .write(true)
            .open(part)
            .map_err(|e| ClientError::local("cannot open", part, e))?;
        for index in bad {
            let (start, end) = header.chunk_range(index);
            let Some(fresh) = refetch(f, part, index, &header, &mut version)? else {
                return Ok(changed(opts));
            };
            if kind.of(&fresh) != expected[index as usize] {
                // The saved hash state was computed over other bytes than the server has now.
                return Ok(Step::StartOver(format!(
                    "chunk {index} of '{}' on the server is not what was downloaded before",
                    opts.remote
                )));
            }
            write_at(&mut out, start, &fresh, part)?;
            f.stats.repaired += 1;
            f.stats.reused -= end - start;
        }
    }
    finish(opts, part, &jpath, sink, fetched, header.size)
}

/// Fetches chunk `index` again, alone and unhashed (its bytes on disk no longer match the
/// journal); `None` when the file changed on the server meanwhile.
fn refetch(
    f: &mut Fetcher<'_>,
    part: &Path,
    index: u64,
    header: &crate::journal::JournalHeader,
    version: &mut Option<FileVersion>,
) -> Result<Option<Vec<u8>>, ClientError> {
    let (start, end) = header.chunk_range(index);
    tracing::warn!(
        "chunk {index} (bytes {start}..{end}) of '{}' no longer matches its journal entry; \
         fetching it again",
        part.display()
    );
    let mut fresh = BufferSink::default();
    let kept = Kept::Resumable(part.to_path_buf());
    match f.fetch(
        start,
        end - start,
        DigestSet::default(),
        version,
        &mut fresh,
        &kept,
    )? {
        Fetched::Done(_) => Ok(Some(fresh.0)),
        Fetched::Changed(_) => Ok(None),
    }
}

/// Why a resume starts over when the server's file changed under it.
fn changed(opts: &GetOptions) -> Step {
    Step::StartOver(format!(
        "'{}' changed on the server since the partial download began",
        opts.remote
    ))
}

/// Writes a repaired chunk into the partial file at `start`.
fn write_at(file: &mut File, start: u64, bytes: &[u8], part: &Path) -> Result<(), ClientError> {
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.write_all(bytes))
        .map_err(|e| ClientError::local("cannot write to", part, e))
}

/// Cuts the partial file at `at` (what lies past it was never confirmed) and puts the cursor
/// there.
fn truncate_to(file: &mut File, at: u64, part: &Path) -> Result<(), ClientError> {
    file.set_len(at)
        .and_then(|()| file.seek(SeekFrom::Start(at)).map(|_| ()))
        .map_err(|e| ClientError::local("cannot truncate", part, e))
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
