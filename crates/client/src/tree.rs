//! Whole trees: `get -r` and `put -r`.
//!
//! Both walk the tree once (a recursive `List` on the server, a directory walk here), create
//! the directories first (empty ones too), skip files the other side already has with the
//! same size and modification time (so a rerun after an interruption moves only what is
//! missing), and then move the files:
//!
//! * small files (at most one chunk) are **pipelined** on one connection: requests go out a
//!   window ahead of the answers, so a tree of many small files costs no round trip per file;
//! * larger files go one after another through the single-file path, with its resume journal
//!   (`get`) or the server's upload sessions (`put`).
//!
//! Every file is verified (whole-file digest) and published atomically, with its modification
//! time kept. Symbolic links are never followed: the server lists links that leave its root as
//! `symlink` entries, which `get -r` skips; `put -r` skips local symlinks (both say so).

use crate::cli::GetOptions;
use crate::dir_handle::DirHandle;
use crate::error::{ClientError, Kept};
use crate::fetch::Fetcher;
use crate::interrupt::Interrupt;
use crate::journal::JOURNAL_SUFFIX;
use crate::listing::list;
use crate::native::{NativeSession, Request};
use crate::output::{base_name, Destination, OutputSpec, PART_SUFFIX};
use crate::progress::Bytes;
use crate::sinks::FileSink;
use crate::transfer::{into_error, verify, Context};
use crate::tree_writer::{self, Verified, Writer, MAX_BYTES};
use crate::upload::{self, disconnected, refusal, unexpected, PutOptions};
use serde_json::{json, Value};
use sfts_protocol::checksum::{digest_reader, sha256};
use sfts_protocol::{
    Algorithm, Capabilities, Digest, DigestSet, EntryKind, ErrorCode, FileHeader, GetRequest,
    ListEntry, Message, MultiHasher, PutBegin, TO_END,
};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, Metadata};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Files in flight in a `get -r` pipeline.
const GET_WINDOW: usize = 64;
/// `Get`s sent together (one write) when that many answers have come in.
const GET_BATCH: usize = 32;
/// Files in flight in a `put -r` pipeline. Not bounded by the open uploads a server promises
/// (`GUARANTEED_OPEN_UPLOADS`, 4): each file's `PutBegin`, chunk and `PutCommit` go out
/// together, so the server has closed one upload before it reads the next `PutBegin`; only
/// an upload whose chunk it rejected stays open, until the `PutAbort` that answer brings. A
/// `PutBegin` refused as busy (a window of rejected chunks, or the request rate) is sent again
/// alone at the end. Over a 50 ms round trip, 300 small files took 4.2 s with 4 in flight.
const PUT_WINDOW: usize = 64;

/// What a tree transfer did.
#[derive(Debug, Clone, Default)]
pub struct TreeOutcome {
    /// Files transferred and verified.
    pub files: u64,
    /// Files the other side already had (same size and modification time).
    pub unchanged: u64,
    /// Directories created (or already there).
    pub dirs: u64,
    /// Entries skipped (symbolic links, special files).
    pub skipped: u64,
    /// Bytes transferred.
    pub bytes: u64,
    /// Files that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Reconnections.
    pub retries: u32,
    /// Wall time.
    pub elapsed: Duration,
}

impl TreeOutcome {
    /// The summary as one JSON object.
    pub fn to_json(&self, direction: &str, root: &str) -> Value {
        json!({
            "status": if self.failed.is_empty() { "ok" } else { "partial" },
            "direction": direction,
            "path": root,
            "files": self.files,
            "unchanged": self.unchanged,
            "dirs": self.dirs,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "retries": self.retries,
            "seconds": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "failed": self.failed.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
        })
    }

    /// The summary line.
    pub fn summary(&self, verb: &str) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "{verb} {} file(s) ({}) in {secs:.2} s, {}; {} unchanged, {} director(ies), {} skipped{}",
            self.files,
            Bytes(self.bytes),
            crate::progress::rate(self.bytes, self.elapsed),
            self.unchanged,
            self.dirs,
            self.skipped,
            if self.failed.is_empty() {
                String::new()
            } else {
                format!(", {} FAILED", self.failed.len())
            }
        )
    }

    /// The error for a tree with failed files (exit code of the first failure's kind is not
    /// kept; a tree with failures exits 6).
    pub fn result(self) -> Result<TreeOutcome, ClientError> {
        if self.failed.is_empty() {
            Ok(self)
        } else {
            Err(ClientError::TreeIncomplete {
                failed: self.failed.len() as u64,
                first: format!("{}: {}", self.failed[0].0, self.failed[0].1),
            })
        }
    }
}

/// Modification time of `meta` in ns since the epoch.
pub fn mtime_ns(meta: &Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
            Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
        },
        Err(_) => 0,
    }
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Gives `file` the modification time `ns`; failing costs a log line, not the transfer.
pub(crate) fn set_mtime(file: &File, path: &Path, ns: i64) {
    if let Err(e) = file.set_modified(system_time(ns)) {
        tracing::warn!(
            "cannot set the modification time of '{}': {e}",
            path.display()
        );
    }
}

/// Checks a relative path the server listed: plain components only.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains(['\\', '\0']) {
            return None;
        }
        out.push(part);
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The first component of a listed path that ends like a partial download or its journal
/// (`<name>.sfts-part`, `<name>.sfts-journal`): `get -r` leaves such entries (and what is
/// below them) alone.
fn reserved(name: &str) -> Option<&str> {
    name.split('/')
        .find(|c| c.ends_with(PART_SUFFIX) || c.ends_with(JOURNAL_SUFFIX))
}

fn join_remote(dir: &str, name: &str) -> String {
    match dir.trim_end_matches('/') {
        "" | "." => name.to_string(),
        d => format!("{d}/{name}"),
    }
}

/// What lies at the local name of a listed file.
enum Local {
    /// Nothing (or nothing readable).
    Absent,
    /// A file with the listed size and modification time.
    Same,
    /// Something else.
    Differs,
}

impl Local {
    fn of(local: &Path, entry: &ListEntry) -> Local {
        match fs::symlink_metadata(local) {
            Ok(m) if is_same(&m, entry.size, entry.mtime_ns) => Local::Same,
            Ok(_) => Local::Differs,
            Err(_) => Local::Absent,
        }
    }
}

/// True when `m` is a file's, with this size and modification time.
fn is_same(m: &Metadata, size: u64, mtime: i64) -> bool {
    m.is_file() && m.len() == size && mtime_ns(m) == mtime
}

// ----------------------------------------------------------------------------------------
// get -r

/// `sfts-client get -r`.
pub fn get_tree(opts: &GetOptions, interrupt: &Interrupt) -> Result<TreeOutcome, ClientError> {
    let started = Instant::now();
    let out_dir = match &opts.output {
        OutputSpec::Stdout => {
            return Err(ClientError::Usage(
                "get -r writes a tree of files; -o - (standard output) cannot hold one".into(),
            ))
        }
        OutputSpec::Path(p) => p.clone(),
        OutputSpec::Default => PathBuf::from(base_name(&opts.remote).unwrap_or(".")),
    };
    // An empty output path (from a library caller; the command line refuses one) is the
    // current directory, which exists.
    let out_dir = match out_dir.as_os_str().is_empty() {
        true => PathBuf::from("."),
        false => out_dir,
    };
    let mut f = Fetcher::connect(opts, interrupt)?;
    f.check_digests(DigestSet::of(&[opts.algorithm]))?;
    let listing = list(&mut f, &opts.remote, true)?;
    // In a directory this run creates, no local file can be in the way: nothing to look at
    // (a small file that appears meanwhile is still never replaced: see `DirHandle::publish`;
    // a large one is looked for just before its rename).
    let fresh = matches!(fs::symlink_metadata(&out_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    fs::create_dir_all(&out_dir).map_err(|e| ClientError::local("cannot create", &out_dir, e))?;
    let mut out = TreeOutcome::default();
    let mut dirs = Vec::new();
    let mut small = Vec::new();
    let mut large = Vec::new();
    for entry in &listing.entries {
        let Some(rel) = safe_relative(&entry.name) else {
            return Err(ClientError::Protocol {
                detail: format!("it listed an unsafe name '{}'", entry.name),
                kept: Kept::Nothing,
            });
        };
        if let Some(part) = reserved(&entry.name) {
            // Fetched, it could be taken for this client's own leftover (the partial of
            // a file of the same name but the suffix) and removed as stale.
            tracing::warn!(
                "skipping '{}' ('{part}' ends like the partial files sfts-client writes)",
                entry.name
            );
            out.skipped += 1;
            continue;
        }
        let local = out_dir.join(&rel);
        match entry.kind {
            EntryKind::Directory => {
                fs::create_dir_all(&local)
                    .map_err(|e| ClientError::local("cannot create", &local, e))?;
                out.dirs += 1;
                dirs.push((local, entry.mtime_ns));
            }
            // One look at the local name (none in a directory this run created): absent (the
            // usual case), the same file, or another (replaced with --force).
            EntryKind::File => {
                let found = match fresh {
                    true => Local::Absent,
                    false => Local::of(&local, entry),
                };
                let replace = match found {
                    Local::Absent => false,
                    Local::Same => {
                        out.unchanged += 1;
                        continue;
                    }
                    Local::Differs if !opts.force => {
                        let why = format!(
                            "'{}' exists and differs; use --force to replace it",
                            local.display()
                        );
                        out.failed.push((entry.name.clone(), why));
                        continue;
                    }
                    Local::Differs => true,
                };
                let item = (entry.clone(), local, replace);
                if entry.size <= opts.chunk_size as u64 {
                    small.push(item);
                } else {
                    large.push(item);
                }
            }
            kind => {
                tracing::warn!("skipping '{}' ({}: not followed)", entry.name, kind.name());
                out.skipped += 1;
            }
        }
    }
    let total: u64 = small.iter().chain(&large).map(|(e, _, _)| e.size).sum();
    f.progress.set_total(total);
    tracing::info!(
        "'{}': {} file(s) to fetch ({}), {} unchanged, {} director(ies)",
        opts.remote,
        small.len() + large.len(),
        Bytes(total),
        out.unchanged,
        out.dirs
    );
    get_small_files(&mut f, opts, small, &mut out)?;
    for (entry, local, replace) in large {
        if f.interrupted() {
            return Err(ClientError::Interrupted {
                kept: Kept::Nothing,
            });
        }
        let mut one = opts.clone();
        one.remote = join_remote(&opts.remote, &entry.name);
        one.output = OutputSpec::Path(local.clone());
        one.recursive = false;
        one.quiet = true;
        one.force = replace; // differing with --force; otherwise absent when looked at
        let dest = Destination::plan(&one.output, &one.remote, true)?;
        match crate::resume::get_native(&one, &dest, interrupt) {
            Ok(o) => {
                if let Ok(file) = File::options().write(true).open(&local) {
                    set_mtime(&file, &local, entry.mtime_ns);
                }
                out.files += 1;
                out.bytes += o.stats.fetched;
                out.retries += o.stats.retries;
                f.progress.advance(entry.size as usize);
            }
            Err(e @ (ClientError::Interrupted { .. } | ClientError::Connect { .. })) => {
                return Err(e)
            }
            Err(e) => out.failed.push((entry.name.clone(), e.to_string())),
        }
    }
    // Deepest first, so setting a child's time does not disturb its parent's.
    for (dir, mtime) in dirs.iter().rev() {
        if let Ok(d) = File::open(dir) {
            set_mtime(&d, dir, *mtime);
        }
    }
    // The small files were published without an fsync each: one for all of them.
    crate::output::sync_file_system(&out_dir);
    f.progress.finish();
    out.retries += f.stats.retries;
    out.elapsed = started.elapsed();
    Ok(out)
}

/// A file of a tree to fetch: what the server listed, where it goes, and whether a file
/// already there is replaced (it differs, and --force).
type Planned = (ListEntry, PathBuf, bool);

/// Fetches small files pipelined on one connection, each written beside its final name and
/// renamed to it through a descriptor of its directory ([`DirHandle`]).
fn get_small_files(
    f: &mut Fetcher<'_>,
    opts: &GetOptions,
    files: Vec<Planned>,
    out: &mut TreeOutcome,
) -> Result<(), ClientError> {
    let mut queue: VecDeque<Planned> = files.into();
    let mut in_flight: VecDeque<Planned> = VecDeque::new();
    // The listing goes directory by directory: one open directory at a time is enough.
    let mut dir: Option<DirHandle> = None;
    let mut failed_in_a_row = 0u32;
    let digests = DigestSet::of(&[opts.algorithm]);
    let server = opts.server.to_string();
    // Without a thread for it, the files are written here as they arrive.
    let mut writer = match queue.is_empty() {
        true => None,
        false => Writer::start()
            .inspect_err(|e| tracing::warn!("writing the files on one thread: {e}"))
            .ok(),
    };
    while !queue.is_empty() || !in_flight.is_empty() {
        if f.interrupted() {
            return Err(ClientError::Interrupted {
                kept: Kept::Nothing,
            });
        }
        // The writer cannot go on (it cannot create files there): neither can the tree.
        if let Some(e) = writer.as_mut().and_then(Writer::halted) {
            return Err(e);
        }
        let step = (|| -> Result<(), ClientError> {
            // Topped up a batch at a time: one write for many requests.
            if in_flight.len() <= GET_WINDOW - GET_BATCH && !queue.is_empty() {
                let session = f.session()?;
                while in_flight.len() < GET_WINDOW {
                    let Some((entry, local, replace)) = queue.pop_front() else {
                        break;
                    };
                    let get = GetRequest::whole(
                        join_remote(&opts.remote, &entry.name),
                        opts.chunk_size,
                        digests,
                    );
                    session.queue(&Message::Get(get));
                    in_flight.push_back((entry, local, replace));
                }
                session
                    .send_queued()
                    .map_err(|e| disconnected("asking for files", e))?;
            }
            let (entry, local, replace) =
                in_flight.front().cloned().expect("a request is in flight");
            let remote = join_remote(&opts.remote, &entry.name);
            let req = Request {
                server: &server,
                remote: &remote,
                chunk_size: opts.chunk_size,
                algorithm: opts.algorithm,
                timeout: opts.timeout,
            };
            let header = match f.session()?.read_header(&req, 0, TO_END, Ok(())) {
                Ok(h) => h,
                Err(e @ ClientError::Refused { .. }) => {
                    in_flight.pop_front();
                    out.failed.push((entry.name.clone(), e.to_string()));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if let Some(writer) = writer.as_mut().filter(|_| header.length <= MAX_BYTES) {
                // Received and checked here, written by the writer thread.
                let mut sink = MemorySink::new(opts.algorithm, header.length);
                let theirs = receive_small(f, &header, opts, &mut sink)?;
                in_flight.pop_front();
                out.bytes += header.length;
                let (data, ours) = sink.finish();
                if let Err(e) = verify(&remote, &theirs, &ours, Kept::Nothing) {
                    out.failed.push((entry.name.clone(), e.to_string()));
                    return Ok(());
                }
                return writer.write(Verified {
                    name: entry.name,
                    local,
                    replace,
                    mtime_ns: entry.mtime_ns,
                    data,
                });
            }
            let (parent, name) = tree_writer::split(&local)?;
            let dir = tree_writer::open_dir(&mut dir, parent)?;
            let file = match dir.create_part(name) {
                Ok(file) => file,
                // Another client is writing this very file: this one is left to it (its answer
                // read and dropped) and the rest of the tree goes on.
                Err(busy @ ClientError::InUse(_)) => {
                    receive_small(f, &header, opts, &mut std::io::sink())?;
                    in_flight.pop_front();
                    out.failed.push((entry.name.clone(), busy.to_string()));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let mut sink = FileSink::fresh(
                file,
                PathBuf::new(),
                &remote,
                opts.chunk_size,
                opts.algorithm,
            );
            let theirs = receive_small(f, &header, opts, &mut sink).inspect_err(|_| {
                let _ = dir.remove_part(name);
            })?;
            in_flight.pop_front();
            out.bytes += header.length;
            let (file, ours) = sink.finish();
            if let Err(e) = verify(&remote, &theirs, &ours, Kept::Nothing) {
                // Nothing of a damaged file is kept (a rerun fetches it whole), as with the
                // files the writer thread publishes.
                let _ = dir.remove_part(name);
                out.failed.push((entry.name.clone(), e.to_string()));
                return Ok(());
            }
            match tree_writer::publish_part(dir, file, &local, entry.mtime_ns, replace) {
                None => out.files += 1,
                Some(why) => out.failed.push((entry.name.clone(), why)),
            }
            Ok(())
        })();
        match step {
            Ok(()) => failed_in_a_row = 0,
            Err(e @ ClientError::Disconnected { .. }) => {
                // Ask again for everything that was not answered.
                while let Some(item) = in_flight.pop_back() {
                    queue.push_front(item);
                }
                f.reconnect(&e.to_string(), &mut failed_in_a_row, &Kept::Nothing)?;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(writer) = writer {
        let written = writer.finish();
        out.files += written.files;
        out.failed.extend(written.failed);
        if let Some(e) = written.fatal {
            return Err(e);
        }
    }
    Ok(())
}

/// A small file received into memory, hashed on the way.
struct MemorySink {
    data: Vec<u8>,
    whole: MultiHasher,
}

impl MemorySink {
    fn new(algorithm: Algorithm, size: u64) -> MemorySink {
        MemorySink {
            data: Vec::with_capacity(size as usize),
            whole: MultiHasher::new(DigestSet::of(&[algorithm])),
        }
    }

    /// The bytes and their digest.
    fn finish(self) -> (Vec<u8>, Digest) {
        (self.data, self.whole.finish().remove(0))
    }
}

impl std::io::Write for MemorySink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.data.extend_from_slice(buf);
        self.whole.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Receives one pipelined small file into `sink`; the server's digest of it, or why the
/// connection cannot go on (a lost connection is a `Disconnected`: the caller asks again).
fn receive_small(
    f: &mut Fetcher<'_>,
    header: &FileHeader,
    opts: &GetOptions,
    sink: &mut impl std::io::Write,
) -> Result<Digest, ClientError> {
    let (session, progress, interrupt) = f.parts()?;
    let ctx = Context {
        interrupt,
        progress,
        timeout: opts.timeout,
    };
    session
        .receive(header, opts.algorithm, sink, &ctx)
        .map_err(
            |stopped| match into_error(stopped, header.size, Kept::Nothing) {
                ClientError::ConnectionLost { reason, .. } => ClientError::Disconnected {
                    stage: "receiving a file",
                    reason,
                },
                other => other,
            },
        )
}

// ----------------------------------------------------------------------------------------
// put -r

/// A local file or directory of a tree to upload.
struct LocalEntry {
    /// `/`-separated path relative to the tree's root.
    rel: String,
    path: PathBuf,
    is_dir: bool,
    size: u64,
    mtime_ns: i64,
}

/// Walks `root` depth first, each directory before its contents, names sorted; symbolic
/// links and special files are skipped (counted in `skipped`).
fn walk(root: &Path, skipped: &mut u64) -> Result<Vec<LocalEntry>, ClientError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| ClientError::local("cannot read", &dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::local("cannot read", &dir, e))?;
        names.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in names {
            let path = e.path();
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                return Err(ClientError::Usage(format!(
                    "'{}' is not a UTF-8 name; SFTS paths are UTF-8",
                    path.display()
                )));
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path)
                .map_err(|e| ClientError::local("cannot read", &path, e))?;
            if meta.is_dir() {
                out.push(LocalEntry {
                    rel: child.clone(),
                    path: path.clone(),
                    is_dir: true,
                    size: 0,
                    mtime_ns: mtime_ns(&meta),
                });
                subdirs.push((path, child));
            } else if meta.is_file() {
                out.push(LocalEntry {
                    rel: child,
                    path,
                    is_dir: false,
                    size: meta.len(),
                    mtime_ns: mtime_ns(&meta),
                });
            } else {
                tracing::warn!(
                    "skipping '{}' (symbolic link or special file)",
                    path.display()
                );
                *skipped += 1;
            }
        }
        // Reverse so the first name is walked first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// `sfts-client put -r`.
pub fn put_tree(opts: &PutOptions, interrupt: &Interrupt) -> Result<TreeOutcome, ClientError> {
    let started = Instant::now();
    let root = &opts.local;
    if !root.is_dir() {
        return Err(ClientError::Usage(format!(
            "'{}' is not a directory (put without -r uploads one file)",
            root.display()
        )));
    }
    let mut out = TreeOutcome::default();
    let entries = walk(root, &mut out.skipped)?;
    let mut f = Fetcher::connect(&opts.conn, interrupt)?;
    if !f.server_has(Capabilities::UPLOAD) {
        return Err(ClientError::Refused {
            remote: opts.conn.remote.clone(),
            message: "the server does not take uploads (its protocol has no UPLOAD)".into(),
        });
    }
    let remote_root = opts.conn.remote.trim_end_matches('/').to_string();
    // What the server already has, to skip unchanged files on a rerun.
    let mut theirs: HashMap<String, (u64, i64)> = HashMap::new();
    if f.server_has(Capabilities::LIST) && !opts.restart {
        match list(&mut f, &remote_root, true) {
            Ok(l) => {
                for e in l.entries {
                    if e.kind == EntryKind::File {
                        theirs.insert(e.name, (e.size, e.mtime_ns));
                    }
                }
            }
            Err(ClientError::Refused { .. }) => {} // not there yet
            Err(e) => return Err(e),
        }
    }
    let mut dirs = vec![remote_root.clone()];
    let mut small = Vec::new();
    let mut large = Vec::new();
    for e in entries {
        if e.is_dir {
            dirs.push(join_remote(&remote_root, &e.rel));
        } else if theirs.get(&e.rel) == Some(&(e.size, e.mtime_ns)) {
            out.unchanged += 1;
        } else if e.size <= opts.conn.chunk_size as u64 {
            small.push(e);
        } else {
            large.push(e);
        }
    }
    make_dirs(f.session()?, &dirs, opts.conn.timeout)?;
    out.dirs += dirs.len() as u64;
    let total: u64 = small.iter().chain(&large).map(|e| e.size).sum();
    f.progress.set_total(total);
    put_small_files(&mut f, opts, &remote_root, small, &mut out)?;
    for e in large {
        if f.interrupted() {
            return Err(ClientError::Interrupted {
                kept: Kept::Nothing,
            });
        }
        let remote = join_remote(&remote_root, &e.rel);
        let position = f.progress.position();
        match upload::put_one(&mut f, opts, &e.path, &remote) {
            Ok(o) => {
                out.files += 1;
                out.bytes += o.sent;
            }
            Err(err @ (ClientError::UploadStopped { .. } | ClientError::Interrupted { .. })) => {
                return Err(err)
            }
            Err(err) => out.failed.push((e.rel.clone(), err.to_string())),
        }
        f.progress.set_total(total);
        f.progress.set_position(position + e.size);
    }
    f.progress.finish();
    out.retries = f.stats.retries;
    out.elapsed = started.elapsed();
    Ok(out)
}

/// Most `Mkdir`s sent ahead of their answers: the answers stay well within the socket
/// buffers, and a tree's directories cost a round trip per window instead of one each.
const MKDIR_WINDOW: usize = 64;

/// Creates the remote directories `paths` (and their parents), in order, up to
/// [`MKDIR_WINDOW`] requests ahead of the answers: one at a time, a tree of 300 directories
/// spent 300 round trips on them, 15 s over a 50 ms link. The first refusal ends it, as the
/// tree is then not sent.
fn make_dirs<S: Read + Write>(
    session: &mut NativeSession<S>,
    paths: &[String],
    timeout: Duration,
) -> Result<(), ClientError> {
    let paths: Vec<&str> = paths
        .iter()
        .map(|p| if p.is_empty() { "." } else { p.as_str() })
        .collect();
    let mut sent = 0;
    for (answered, path) in paths.iter().enumerate() {
        while sent < paths.len() && sent - answered < MKDIR_WINDOW {
            session.queue(&Message::Mkdir {
                path: paths[sent].to_string(),
            });
            sent += 1;
        }
        session
            .send_queued()
            .map_err(|e| disconnected("creating a directory", e))?;
        match session.recv("waiting for a directory to be created", timeout)? {
            Message::FileInfo(_) => {}
            Message::Error { code, message } => return Err(refusal(path, code, message)),
            other => return Err(unexpected("FileInfo", other.name())),
        }
    }
    Ok(())
}

/// A small file being uploaded in the pipeline, or (`entry` = `None`) the `PutAbort` of one
/// whose chunk was rejected: its upload stays open on the server until aborted, and its id
/// must not be reused before.
struct SmallUpload {
    entry: Option<LocalEntry>,
    remote: String,
    id: u32,
    sha256: [u8; 32],
}

/// Uploads files of at most one chunk, pipelined: `PutBegin`, the chunk and `PutCommit` go out
/// together, a window of files ahead of the answers.
fn put_small_files(
    f: &mut Fetcher<'_>,
    opts: &PutOptions,
    remote_root: &str,
    files: Vec<LocalEntry>,
    out: &mut TreeOutcome,
) -> Result<(), ClientError> {
    let timeout = opts.conn.timeout;
    let mut queue: VecDeque<LocalEntry> = files.into();
    let mut in_flight: VecDeque<SmallUpload> = VecDeque::new();
    let mut failed_in_a_row = 0u32;
    let mut retry_alone: Vec<LocalEntry> = Vec::new();
    let mut data = Vec::new();
    while !queue.is_empty() || !in_flight.is_empty() {
        if f.interrupted() {
            return Err(ClientError::Interrupted {
                kept: Kept::Nothing,
            });
        }
        let step = (|| -> Result<(), ClientError> {
            while in_flight.len() < PUT_WINDOW {
                let Some(entry) = queue.pop_front() else {
                    break;
                };
                let id = (1..=PUT_WINDOW as u32)
                    .find(|id| in_flight.iter().all(|u| u.id != *id))
                    .expect("a free id below the window");
                data.clear();
                File::open(&entry.path)
                    .and_then(|mut file| file.read_to_end(&mut data))
                    .map_err(|e| ClientError::local("cannot read", &entry.path, e))?;
                if data.len() as u64 != entry.size {
                    return Err(ClientError::Usage(format!(
                        "'{}' changed while the tree was being sent; run put -r again",
                        entry.path.display()
                    )));
                }
                // One chunk: the file's SHA-256 is the chunk's.
                let sha = sha256(&data);
                let digests = vec![sfts_protocol::Digest {
                    algorithm: Algorithm::Sha256,
                    bytes: sha.to_vec(),
                }];
                let remote = join_remote(remote_root, &entry.rel);
                let mut begin = PutBegin::new(
                    id,
                    remote.clone(),
                    entry.size,
                    entry.mtime_ns,
                    opts.conn.chunk_size,
                    &digests,
                )
                .map_err(|e| ClientError::Protocol {
                    detail: e.to_string(),
                    kept: Kept::Nothing,
                })?;
                begin.force = opts.force;
                let session = f.session()?;
                let sent = session
                    .send(&Message::PutBegin(begin))
                    .and_then(|()| {
                        if data.is_empty() {
                            Ok(())
                        } else {
                            session.send_chunk(id, 0, &sha, &data)
                        }
                    })
                    .and_then(|()| session.send(&Message::PutCommit { id }));
                sent.map_err(|e| disconnected("sending a file", e))?;
                in_flight.push_back(SmallUpload {
                    entry: Some(entry),
                    remote,
                    id,
                    sha256: begin_sha(&digests),
                });
            }
            let u = in_flight.front().expect("an upload is in flight");
            let session = f.session()?;
            let Some(entry) = &u.entry else {
                match session.recv("waiting for an upload to be aborted", timeout)? {
                    Message::PutAborted { .. } => {}
                    other => return Err(unexpected("PutAborted", other.name())),
                }
                in_flight.pop_front();
                return Ok(());
            };
            let entry_size = entry.size;
            // PutReady (or a refusal), the chunk's answer, PutDone (or a refusal).
            let mut refused: Option<String> = None;
            let mut redo = false;
            let mut busy = false;
            match session.recv("waiting for the server to open an upload", timeout)? {
                Message::PutReady(_) => {}
                Message::Error {
                    code: ErrorCode::Busy,
                    message,
                } => {
                    tracing::warn!(
                        "'{}': the server is busy ({message}); sending the file again alone",
                        u.remote
                    );
                    busy = true;
                }
                Message::Error { code, message } => {
                    refused = Some(refusal(&u.remote, code, message).to_string())
                }
                other => return Err(unexpected("PutReady", other.name())),
            }
            if entry_size > 0 {
                match session.recv("waiting for a chunk acknowledgement", timeout)? {
                    Message::ChunkAck { .. } => {}
                    Message::ChunkRejected { reason, .. } if refused.is_none() && !busy => {
                        tracing::warn!(
                            "'{}': chunk rejected ({}); sending the file again alone",
                            u.remote,
                            reason.name()
                        );
                        redo = true;
                    }
                    Message::ChunkRejected { .. } => {}
                    Message::Error { .. } if busy => {}
                    Message::Error { code, message } => {
                        refused.get_or_insert(refusal(&u.remote, code, message).to_string());
                    }
                    other => return Err(unexpected("ChunkAck", other.name())),
                }
            }
            let done = match session.recv("waiting for the server to verify an upload", timeout)? {
                Message::PutDone { digests, .. } => Some(digests),
                Message::Error {
                    code: ErrorCode::Incomplete,
                    ..
                } if redo => None,
                Message::Error { .. } if busy => None,
                Message::Error { code, message } => {
                    refused.get_or_insert(refusal(&u.remote, code, message).to_string());
                    None
                }
                other => return Err(unexpected("PutDone", other.name())),
            };
            let mut u = in_flight.pop_front().expect("in flight");
            let entry = u.entry.take().expect("an upload, not an abort");
            f.progress.advance(entry.size as usize);
            if busy {
                // Nothing was opened: no abort, and the file goes again alone at the end.
                retry_alone.push(entry);
            } else if let Some(why) = refused {
                out.failed.push((entry.rel.clone(), why));
            } else if redo {
                // Close the upload left open by the rejected chunk before its id is reused;
                // the file is sent again alone at the end.
                f.session()?
                    .send(&Message::PutAbort { id: u.id })
                    .map_err(|e| disconnected("aborting an upload", e))?;
                in_flight.push_back(u);
                retry_alone.push(entry);
            } else if let Some(digests) = done {
                let matches = digests
                    .iter()
                    .any(|d| d.algorithm == Algorithm::Sha256 && d.bytes == u.sha256);
                if matches {
                    out.files += 1;
                    out.bytes += entry.size;
                } else {
                    out.failed.push((
                        entry.rel.clone(),
                        "the server's SHA-256 of the published file differs".into(),
                    ));
                }
            }
            Ok(())
        })();
        match step {
            Ok(()) => failed_in_a_row = 0,
            Err(e @ ClientError::Disconnected { .. }) => {
                while let Some(u) = in_flight.pop_back() {
                    if let Some(entry) = u.entry {
                        queue.push_front(entry);
                    }
                }
                f.reconnect(&e.to_string(), &mut failed_in_a_row, &Kept::Nothing)?;
            }
            Err(e) => return Err(e),
        }
    }
    for entry in retry_alone {
        let remote = join_remote(remote_root, &entry.rel);
        match upload::put_one(f, opts, &entry.path, &remote) {
            Ok(o) => {
                out.files += 1;
                out.bytes += o.sent;
            }
            Err(e) => out.failed.push((entry.rel.clone(), e.to_string())),
        }
    }
    Ok(())
}

fn begin_sha(digests: &[sfts_protocol::Digest]) -> [u8; 32] {
    digests
        .iter()
        .find_map(sfts_protocol::Digest::sha256_bytes)
        .unwrap_or([0; 32])
}

/// Hashes a local file (used by tests and `verify`-style checks of trees).
pub fn hash_file(path: &Path, algorithm: Algorithm) -> std::io::Result<String> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (_, mut d) = digest_reader(file, DigestSet::of(&[algorithm]), &mut buf)?;
    Ok(d.remove(0).to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfts_protocol::io::{read_message, write_message};
    use sfts_protocol::{FileInfo, FileKind};
    use std::io::Cursor;

    /// A server's side of a session played from `input`; records what the client wrote, and
    /// how much of it had been written when the client first read.
    struct Recorder {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
        written_at_first_read: Option<usize>,
    }

    impl Read for Recorder {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.written_at_first_read.get_or_insert(self.output.len());
            self.input.read(buf)
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `make_dirs` of `paths` against a server that answers each `Mkdir` with the directory,
    /// or with `Error` from the `fail_at`-th on; the outcome, every `Mkdir` path the client
    /// sent, and how many it had sent when it first read.
    fn make_dirs_against(
        paths: &[String],
        fail_at: Option<usize>,
    ) -> (Result<(), ClientError>, Vec<String>, usize) {
        let mut input = Vec::new();
        let mut scratch = Vec::new();
        for i in 0..paths.len() {
            let answer = if fail_at.is_some_and(|f| i >= f) {
                Message::Error {
                    code: ErrorCode::NotADirectory,
                    message: "a file is in the way".into(),
                }
            } else {
                Message::FileInfo(FileInfo {
                    kind: FileKind::Directory,
                    size: 0,
                    mtime_ns: 0,
                    digests: Vec::new(),
                })
            };
            write_message(&mut input, &answer, &mut scratch).unwrap();
        }
        let mut session = NativeSession::new(Recorder {
            input: Cursor::new(input),
            output: Vec::new(),
            written_at_first_read: None,
        });
        let got = make_dirs(&mut session, paths, Duration::from_secs(5));
        let r = session.into_inner();
        let mkdirs = |mut bytes: &[u8]| {
            let mut names = Vec::new();
            let mut buf = Vec::new();
            while let Some(m) = read_message(&mut bytes, &mut buf).unwrap() {
                match m {
                    Message::Mkdir { path } => names.push(path),
                    other => panic!("sent {}", other.name()),
                }
            }
            names
        };
        let first = r.written_at_first_read.expect("it read an answer");
        let before_first_read = mkdirs(&r.output[..first]).len();
        (got, mkdirs(&r.output), before_first_read)
    }

    #[test]
    fn directories_are_made_in_order_a_window_ahead_of_the_answers() {
        let mut paths = vec![String::new()];
        paths.extend((0..150).map(|i| format!("d{i:03}")));
        let (got, sent, ahead) = make_dirs_against(&paths, None);
        got.unwrap();
        // The root as ".", then every directory once, in order.
        assert_eq!(sent[0], ".");
        assert_eq!(sent[1..], paths[1..]);
        // A window's worth went out before the first answer was read, not one.
        assert_eq!(ahead, MKDIR_WINDOW);
    }

    #[test]
    fn the_first_refused_directory_ends_it_and_is_named() {
        let paths: Vec<String> = (0..10).map(|i| format!("t/d{i}")).collect();
        let (got, sent, ahead) = make_dirs_against(&paths, Some(3));
        let e = got.unwrap_err().to_string();
        assert!(
            e.contains("t/d3") && e.contains("a file is in the way"),
            "{e}"
        );
        // All ten were already sent (within the window); nothing more after the refusal.
        assert_eq!((sent.len(), ahead), (10, 10));
    }

    #[test]
    fn listed_names_must_be_plain_relative_paths() {
        assert_eq!(safe_relative("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a\\b", "a/..", "x\0"] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
        assert_eq!(join_remote(".", "x"), "x");
        assert_eq!(join_remote("d/", "x"), "d/x");
    }

    #[test]
    fn walk_lists_directories_before_their_contents_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("b/empty")).unwrap();
        fs::write(r.join("b/f.txt"), b"x").unwrap();
        fs::write(r.join("a.txt"), b"yy").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("link")).unwrap();
        let mut skipped = 0;
        let names: Vec<String> = walk(r, &mut skipped)
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert_eq!(names, ["a.txt", "b", "b/empty", "b/f.txt"]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn mtimes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let file = File::create(&p).unwrap();
        set_mtime(&file, &p, 1_600_000_000_123_456_789);
        assert_eq!(
            mtime_ns(&fs::metadata(&p).unwrap()),
            1_600_000_000_123_456_789
        );
        let m = fs::symlink_metadata(&p).unwrap();
        assert!(is_same(&m, 0, 1_600_000_000_123_456_789));
        assert!(!is_same(&m, 1, 1_600_000_000_123_456_789));
    }
}
