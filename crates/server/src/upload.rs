//! One upload being assembled: its staging file, the chunks it holds, the whole-file check and
//! the atomic publication under its name.
//!
//! Chunks are written at their offset (`pwrite`) into `<root>/.sfts-upload/<unique>.part` as
//! they arrive, in any order, each only once. While they arrive in order on the connection
//! that began the upload (the common case), the whole-file digests are computed as they are
//! stored (MD5 on a helper thread). The commit then only checks the staging file's size;
//! otherwise (chunks out of order, an upload resumed from an earlier session) it reads the
//! assembled file back. Either way it checks the SHA-256 (and MD5) of exactly the bytes
//! written against the digests announced in `PutBegin` or, for a streamed upload
//! (digest-at-commit), against those of `PutCommitDigests` (for one with BLAKE3 tree values:
//! the BLAKE3 merged from the chunks' checked values, and nothing hashed here), sets the modification time,
//! flushes the file to the disk (files of [`SYNC_FROM`] bytes or more), and publishes it:
//!
//! * replacing a file (`force`, where the server allows it): `rename`, atomic;
//! * otherwise `link` then `unlink` of the staging name: the link fails if the name exists, so
//!   a file that appeared meanwhile is never clobbered (`already-exists`), and a reader sees
//!   either nothing or the whole file.
//!
//! A target on another file system than the staging directory (a mount point inside the root)
//! is published the same two ways through a copy made in its directory ([`crate::across`]).

use crate::across::{self, Placed};
use crate::chunkset::ChunkSet;
use crate::digest::{self, hash_span, FileHasher, KeepAlive};
use crate::error::ServerError;
use crate::fileid::{relative_name, FileId};
use crate::paths::{self, Refusal};
use crate::store::{Outcome, Record};
use crate::targets::{self, Found};
use crate::uploads::{remove_quietly, Claim, Uploads};
use sfts_protocol::{
    blake3_tree, chunk_count, chunk_span, clamp_chunk_size, Algorithm, ChunkDigest, Digest,
    DigestSet, ErrorCode, PutBegin,
};
use sfts_state::{CachedDigests, StoredUpload};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::warn;

/// Files at least this large are flushed to the disk (`fsync`, and their directory) before
/// they are published. Smaller ones are left to the kernel's writeback: an `fsync` costs a
/// few milliseconds whatever the size, which would dominate a tree of small files, and a
/// small file lost to a power cut shows up as missing or short to the next `put -r`.
pub const SYNC_FROM: u64 = 1 << 20;

/// How an upload was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nothing was stored for this path.
    New,
    /// The stored upload of the same file goes on (same path, size and SHA-256; for a
    /// streamed upload same path, size, modification time and chunk digest).
    Resumed,
    /// A stored upload of the same path with another size or digest was discarded.
    Replaced,
    /// The client asked to discard what was stored (`restart`).
    Restarted,
    /// A stored upload's data was missing; it was discarded.
    Lost,
}

/// An open upload.
pub struct Upload<'a> {
    /// The client's handle.
    pub id: u32,
    /// The target relative to the root, canonical (the key of claims and rows).
    pub path: String,
    /// The target as the client wrote it (for messages).
    pub requested: String,
    /// Whole-file size.
    pub size: u64,
    /// Whole-file SHA-256 announced (zeros for a streamed upload).
    pub sha256: [u8; 32],
    /// The whole-file digests come with the commit (`PutCommitDigests`).
    pub digest_at_commit: bool,
    /// How each chunk is checked on arrival.
    pub chunk_digest: ChunkDigest,
    /// Whole-file MD5 announced, if any.
    pub md5: Option<[u8; 16]>,
    /// Modification time of the published file.
    pub mtime_ns: i64,
    /// Replace an existing file.
    pub force: bool,
    /// The chunk size in use.
    pub chunk_size: u32,
    /// How many chunks the file has.
    pub total: u64,
    /// The chunks held.
    pub held: ChunkSet,
    /// Bytes stored on this connection.
    pub received: u64,
    /// The staging file's name.
    pub staging: String,
    /// Its history row.
    pub record: Option<Record>,
    file: File,
    created_ms: i64,
    /// Chunks stored since the row was last saved.
    dirty: bool,
    /// The next multiple of 10 % of chunks held worth a log line.
    next_pct: u64,
    /// A row exists in the database.
    saved: bool,
    /// The whole-file digests of the chunks stored so far, while they come in order.
    running: Option<Running>,
    /// When it was opened on this connection.
    pub began: std::time::Instant,
    uploads: &'a Uploads,
    _claim: Claim<'a>,
}

/// Whole-file digests computed as the chunks are stored, front to back.
struct Running {
    /// The chunk that must come next.
    next: u64,
    hasher: FileHasher,
    /// The SHA-256 of a file of one chunk sent with a SHA-256: that chunk's, checked when it
    /// arrived (its `hasher` computes the other digests only).
    sha256: Option<[u8; 32]>,
    /// The chunks' BLAKE3 tree values, checked when they arrived, when the upload uses them:
    /// the whole-file BLAKE3 is assembled from them (its `hasher` computes SHA-256 only).
    tree: Option<Vec<[u8; 32]>>,
}

/// What the commit's check found.
pub enum Verified {
    /// The file is what the client announced; its digests.
    Match(CachedDigests),
    /// It is not: the algorithm and the digest found (hex).
    Mismatch(&'static str, String),
    /// The staging file is shorter than the upload: data the server acknowledged was lost
    /// (a crash of the machine before it reached the disk, someone truncating it).
    Short,
}

impl<'a> Upload<'a> {
    /// Opens the upload of `req` to `path` (claimed): resumes the stored one if it is the same
    /// file, otherwise starts a new staging file.
    pub fn open(
        uploads: &'a Uploads,
        claim: Claim<'a>,
        req: &PutBegin,
        path: String,
    ) -> Result<(Upload<'a>, Start), Refusal> {
        let mut start = Start::New;
        let mut resumed = None;
        if let Some(row) = uploads.find(&path) {
            let same = same_file(&row, req);
            if req.restart || !same {
                uploads.discard(&path, &row.staging);
                start = if req.restart {
                    Start::Restarted
                } else {
                    Start::Replaced
                };
            } else {
                let at = uploads.staging_path(&row.staging);
                match OpenOptions::new().read(true).write(true).open(&at) {
                    Ok(file) => resumed = Some((row, file)),
                    Err(e) => {
                        warn!("the stored upload of '{path}' lost its data ({e}); starting over");
                        uploads.discard(&path, &row.staging);
                        start = Start::Lost;
                    }
                }
            }
        }
        let (file, staging, chunk_size, held, created_ms, saved) = match resumed {
            Some((row, file)) => {
                uploads.register(&row.staging);
                let total = chunk_count(row.size, row.chunk_size);
                let held = ChunkSet::from_runs(&row.held, total);
                start = Start::Resumed;
                (
                    file,
                    row.staging,
                    row.chunk_size,
                    held,
                    row.created_ms,
                    true,
                )
            }
            None => {
                let staging = uploads.new_staging_name();
                let file = create_staging(uploads, &staging).map_err(|e| {
                    uploads.unregister(&staging);
                    paths::write_error(&req.path, &e)
                })?;
                let cs = clamp_chunk_size(req.chunk_size);
                let now = sfts_state::uploads::now_ms();
                (file, staging, cs, ChunkSet::new(), now, false)
            }
        };
        // A resumed upload holds chunks from before: they are read back at the commit.
        let one_chunk =
            chunk_count(req.size, chunk_size) == 1 && req.chunk_digest == ChunkDigest::Sha256;
        let tree = req.chunk_digest == ChunkDigest::Blake3Tree;
        let running = (held.len() == 0).then(|| Running {
            next: 0,
            // A streamed upload hashes on the helper thread, except the BLAKE3 that tree
            // values give (with its digests at the commit, that is all it needs: nothing is
            // hashed here at all).
            hasher: if tree || req.digest_at_commit {
                let into = hashed_into(req.chunk_digest, req.digest_at_commit);
                let hashed: Vec<Algorithm> = into
                    .iter()
                    .filter(|a| !(tree && *a == Algorithm::Blake3))
                    .collect();
                FileHasher::on_helper(req.size, DigestSet::of(&hashed))
            } else if one_chunk {
                FileHasher::whole_file_but_sha256(req.size)
            } else {
                FileHasher::whole_file(req.size)
            },
            sha256: None,
            tree: tree.then(Vec::new),
        });
        let upload = Upload {
            id: req.id,
            path,
            requested: req.path.clone(),
            size: req.size,
            sha256: req.sha256,
            digest_at_commit: req.digest_at_commit,
            chunk_digest: req.chunk_digest,
            md5: req.md5,
            mtime_ns: req.mtime_ns,
            force: req.force,
            chunk_size,
            total: chunk_count(req.size, chunk_size),
            held,
            received: 0,
            staging,
            record: None,
            file,
            created_ms,
            dirty: false,
            next_pct: 10,
            saved,
            running,
            began: std::time::Instant::now(),
            uploads,
            _claim: claim,
        };
        Ok((upload, start))
    }

    /// The length chunk `index` must have, or `None` past the last chunk.
    pub fn chunk_len(&self, index: u64) -> Option<u32> {
        chunk_span(self.size, self.chunk_size, index).map(|(_, len)| len)
    }

    /// Bytes of the chunks held.
    pub fn held_bytes(&self) -> u64 {
        let full = self.held.len() * u64::from(self.chunk_size);
        let last_short = self.total > 0 && self.held.contains(self.total - 1);
        match self.chunk_len(self.total.saturating_sub(1)) {
            Some(len) if last_short => full - u64::from(self.chunk_size) + u64::from(len),
            _ => full,
        }
    }

    /// Stores chunk `index` (its length and its digest, `digest`, already checked); `false`
    /// when it was held already (nothing is written twice).
    pub fn store_chunk(&mut self, index: u64, data: &[u8], digest: &[u8; 32]) -> io::Result<bool> {
        if self.held.contains(index) {
            return Ok(false);
        }
        let offset = index * u64::from(self.chunk_size);
        write_at(&self.file, data, offset)?;
        match &mut self.running {
            Some(r) if r.next == index => {
                r.hasher.update(data);
                r.next += 1;
                if self.total == 1 && self.chunk_digest == ChunkDigest::Sha256 {
                    r.sha256 = Some(*digest);
                }
                if let Some(tree) = &mut r.tree {
                    tree.push(*digest);
                }
            }
            // Out of order: the commit reads the file back.
            Some(_) => self.running = None,
            None => {}
        }
        self.held.insert(index);
        self.dirty = true;
        self.received += data.len() as u64;
        Ok(true)
    }

    /// The percentage of chunks held (a multiple of 10) when another 10 % boundary has just
    /// been crossed, for the log; uploads of fewer than 10 chunks have no progress lines.
    pub fn progress(&mut self) -> Option<u64> {
        if self.total < 10 {
            return None;
        }
        let pct = self.held.len() * 100 / self.total;
        if pct < self.next_pct {
            return None;
        }
        self.next_pct = pct / 10 * 10 + 10;
        Some(pct / 10 * 10)
    }

    /// True when chunks were stored since the row was last saved.
    pub fn needs_saving(&self) -> bool {
        self.dirty
    }

    /// The row to save.
    pub fn row(&self) -> StoredUpload {
        StoredUpload {
            path: self.path.clone(),
            size: self.size,
            sha256: self.sha256,
            md5: self.md5,
            digest_at_commit: self.digest_at_commit,
            chunk_digest: self.chunk_digest.code(),
            mtime_ns: self.mtime_ns,
            chunk_size: self.chunk_size,
            held: self.held.runs().to_vec(),
            staging: self.staging.clone(),
            created_ms: self.created_ms,
            updated_ms: 0,
        }
    }

    /// Records that the row was saved.
    pub fn saved(&mut self) {
        self.dirty = false;
        self.saved = true;
    }

    /// True when a commit checking `want` needs no read-back: every chunk was hashed as it
    /// was stored, into every digest of `want`.
    pub fn hashed_on_arrival(&self, want: &[Digest]) -> bool {
        let complete = self.running.as_ref().is_some_and(|r| r.next == self.total);
        let into = hashed_into(self.chunk_digest, self.digest_at_commit);
        complete && want.iter().all(|d| into.contains(d.algorithm))
    }

    /// A streamed upload with BLAKE3 tree values: its commit is checked with the BLAKE3
    /// assembled from the chunks' checked values, and nothing is hashed on arrival.
    fn commits_with_blake3(&self) -> bool {
        self.digest_at_commit && self.chunk_digest == ChunkDigest::Blake3Tree
    }

    /// True when `want`, the digests of a commit, has what this upload is checked with: the
    /// SHA-256, or for a streamed upload with tree values the BLAKE3 or the SHA-256 (which
    /// then costs a read of the whole file: what clients before this rule sent). Any other
    /// digest given is checked too.
    pub fn commit_has_enough(&self, want: &[Digest]) -> bool {
        want.iter().any(|d| {
            d.algorithm == Algorithm::Sha256
                || (d.algorithm == Algorithm::Blake3 && self.commits_with_blake3())
        })
    }

    /// What [`Upload::commit_has_enough`] asks for, in words.
    pub fn required(&self) -> &'static str {
        if self.commits_with_blake3() {
            "the BLAKE3 or the SHA-256"
        } else {
            "the SHA-256"
        }
    }

    /// The whole-file digests announced in `PutBegin` (none for a streamed upload).
    pub fn announced(&self) -> Vec<Digest> {
        if self.digest_at_commit {
            return Vec::new();
        }
        let mut out = vec![Digest {
            algorithm: Algorithm::Sha256,
            bytes: self.sha256.to_vec(),
        }];
        out.extend(self.md5.map(|m| Digest {
            algorithm: Algorithm::Md5,
            bytes: m.to_vec(),
        }));
        out
    }

    /// Checks the assembled file against `want` (enough of it: [`Upload::commit_has_enough`];
    /// the announced digests, or those of `PutCommitDigests`): from the digests computed as the chunks were stored,
    /// or by reading it back, with keep-alives while it reads. `buf` is any reusable buffer
    /// (at least 64 KiB is best).
    pub fn verify<F: FnMut() -> io::Result<()>>(
        &mut self,
        want: &[Digest],
        buf: &mut [u8],
        stop: &AtomicBool,
        alive: &mut KeepAlive<F>,
    ) -> Result<Verified, ServerError> {
        let read_err = |source| ServerError::FileRead {
            name: self.requested.clone(),
            source,
        };
        let on_arrival = match self.running.take() {
            Some(r) if r.next == self.total => {
                // Every byte written was hashed on its way; only a staging file cut short
                // meanwhile (by someone else) would not hold them all.
                if self.file.metadata().map_err(read_err)?.len() < self.size {
                    return Ok(Verified::Short);
                }
                let mut got = r.hasher.finish();
                got.sha256 = got.sha256.or(r.sha256);
                if let Some(tree) = &r.tree {
                    got.blake3 = blake3_tree::file_digest(self.chunk_size, self.size, tree);
                }
                Some(got)
            }
            _ => None,
        };
        // Read back when chunks came out of order (or from an earlier session), or when the
        // commit asks for a digest not computed on the way (a streamed upload's MD5).
        let got = match on_arrival {
            Some(got)
                if want
                    .iter()
                    .all(|d| digest::digest(&got, d.algorithm).is_some()) =>
            {
                got
            }
            _ => {
                let mut hasher = FileHasher::whole_file(self.size);
                (&self.file).seek(SeekFrom::Start(0)).map_err(read_err)?;
                let name = self.requested.clone();
                let read = hash_span(
                    &mut &self.file,
                    self.size,
                    &name,
                    &mut hasher,
                    buf,
                    stop,
                    alive,
                );
                match read {
                    Err(ServerError::FileChanged { .. }) => return Ok(Verified::Short),
                    other => other?,
                }
                hasher.finish()
            }
        };
        if !self.commit_has_enough(want) {
            return Ok(Verified::Mismatch(
                Algorithm::Sha256.label(),
                format!("no digest to compare with: it needs {}", self.required()),
            ));
        }
        for d in want {
            let found = digest::digest(&got, d.algorithm);
            // Every digest is computed; one missing would be a bug, and counts as different.
            if found.as_ref() != Some(d) {
                let found = found.map(|f| f.to_hex()).unwrap_or_default();
                return Ok(Verified::Mismatch(d.algorithm.label(), found));
            }
        }
        Ok(Verified::Match(got))
    }

    /// Gives the file its modification time, flushes it if large, and publishes it under its
    /// name (creating missing parents). Returns the published path.
    pub fn publish(&mut self, overwrite: bool) -> Result<PathBuf, Refusal> {
        let root = self.uploads.root();
        let requested = self.requested.clone();
        let write_err = |e: io::Error| paths::write_error(&requested, &e);
        if let Err(e) = self.file.set_modified(system_time(self.mtime_ns)) {
            warn!("cannot set the modification time of '{}': {e}", self.path);
        }
        let sync = self.size >= SYNC_FROM;
        if sync {
            self.file.sync_all().map_err(write_err)?;
        }
        let parts = targets::check_name(&requested)?;
        if parts.is_empty() {
            return Err(not_a_file(&requested));
        }
        let place = targets::walk_to_file(root, &requested, &parts)?;
        let replace = match place.found {
            Found::Nothing => false,
            Found::Directory | Found::Other => return Err(not_a_file(&requested)),
            Found::File | Found::Link if self.force && overwrite => true,
            Found::File | Found::Link => return Err(already_exists(&requested, overwrite)),
        };
        let staged = self.uploads.staging_path(&self.staging);
        let target = place.path;
        if replace {
            match fs::rename(&staged, &target) {
                Ok(()) => {}
                Err(e) if across::is_cross_device(&e) => {
                    self.publish_copy(&staged, &target, true, sync, overwrite)?
                }
                Err(e) => return Err(publish_error(&requested, e)),
            }
        } else {
            match fs::hard_link(&staged, &target) {
                Ok(()) => remove_quietly(&staged),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(already_exists(&requested, overwrite))
                }
                Err(e) if paths::is_no_space(&e) => return Err(write_err(e)),
                Err(e) if across::is_cross_device(&e) => {
                    self.publish_copy(&staged, &target, false, sync, overwrite)?
                }
                // File systems without hard links: rename, after one more look (a file
                // appearing in between would be replaced; nothing better is portable).
                Err(e) => match fs::symlink_metadata(&target) {
                    Err(gone) if gone.kind() == io::ErrorKind::NotFound => {
                        warn!("no hard link for '{requested}' ({e}); publishing by rename");
                        fs::rename(&staged, &target).map_err(|e| publish_error(&requested, e))?
                    }
                    _ => return Err(already_exists(&requested, overwrite)),
                },
            }
        }
        if sync {
            if let Some(dir) = target.parent() {
                sync_dir(dir);
            }
        }
        Ok(target)
    }

    /// Publishes on another file system than the staging directory's (a mount point inside
    /// the root): through a copy in the target's directory ([`across`]), which becomes this
    /// upload's file; the staged file goes once the copy is published.
    fn publish_copy(
        &mut self,
        staged: &Path,
        target: &Path,
        replace: bool,
        durable: bool,
        overwrite: bool,
    ) -> Result<(), Refusal> {
        let requested = &self.requested;
        let mtime = system_time(self.mtime_ns);
        match across::publish_copy(staged, target, &self.staging, replace, mtime, durable) {
            Ok(Placed::Done(copy)) => {
                tracing::info!(
                    "'{requested}' is on another file system than the staging directory: \
                     published through a copy"
                );
                self.file = copy;
                remove_quietly(staged);
                Ok(())
            }
            Ok(Placed::Exists) => Err(already_exists(requested, overwrite)),
            Err(e) => Err(publish_error(requested, e)),
        }
    }

    /// The digest-cache key of the published file: the identity of the inode just published
    /// (read from the open file, so a file replaced meanwhile cannot take its digests).
    pub fn cache_key(&self, target: &Path) -> Option<sfts_state::FileKey> {
        let meta = self.file.metadata().ok()?;
        Some(FileId::of(&meta).key(relative_name(self.uploads.root(), target)))
    }

    /// The upload is published: its row goes.
    pub fn finish(mut self) {
        if self.saved {
            self.uploads.delete_row(&self.path, &self.staging);
        }
        if let Some(r) = self.record.take() {
            r.finish(self.received, Outcome::Ok);
        }
    }

    /// The upload is over and what it held is deleted (aborted, failed its check, or the disk
    /// is full).
    pub fn discard(mut self, outcome: Outcome<'_>) {
        self.uploads.discard(&self.path, &self.staging);
        if let Some(r) = self.record.take() {
            r.finish(self.received, outcome);
        }
    }

    /// The upload is over on this connection but kept for resuming, if it holds anything (the
    /// caller has saved its row).
    pub fn leave(mut self, outcome: Outcome<'_>) {
        if let Some(r) = self.record.take() {
            r.finish(self.received, outcome);
        }
        if self.held.len() == 0 {
            self.uploads.discard(&self.path, &self.staging);
        }
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        self.uploads.unregister(&self.staging);
    }
}

/// True when the stored upload `row` is the file `req` begins again: the same size and the
/// same kind of upload; an ordinary one with the same SHA-256, a streamed one (whose digest
/// is not known yet) with the same modification time and chunk digest. A streamed file that
/// changed without changing its size or modification time is caught by the commit's check.
/// The whole-file digests that chunks of `kind` stored in order go into (`at_commit`: the
/// digests come with the commit): all of them, but a streamed upload or one with BLAKE3 tree
/// values skips the MD5 (computed only if the commit asks, by reading back), and a streamed
/// one with tree values only has the BLAKE3 assembled from them.
fn hashed_into(kind: ChunkDigest, at_commit: bool) -> DigestSet {
    match (kind, at_commit) {
        (ChunkDigest::Blake3Tree, true) => DigestSet::of(&[Algorithm::Blake3]),
        (ChunkDigest::Blake3Tree, false) | (_, true) => {
            DigestSet::of(&[Algorithm::Sha256, Algorithm::Blake3])
        }
        _ => DigestSet::of(&Algorithm::ALL),
    }
}

fn same_file(row: &StoredUpload, req: &PutBegin) -> bool {
    let kind =
        row.digest_at_commit == req.digest_at_commit && row.chunk_digest == req.chunk_digest.code();
    let content = if req.digest_at_commit {
        row.mtime_ns == req.mtime_ns
    } else {
        row.sha256 == req.sha256
    };
    row.size == req.size && kind && content
}

fn not_a_file(requested: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotAFile,
        format!("'{requested}' is a directory (or another special file) on the server"),
    )
}

/// The refusal for a target that exists.
pub fn already_exists(requested: &str, overwrite: bool) -> Refusal {
    let message = if overwrite {
        format!("'{requested}' already exists on the server")
    } else {
        format!("'{requested}' already exists on the server, which never replaces files")
    };
    Refusal::new(ErrorCode::AlreadyExists, message)
}

fn publish_error(requested: &str, e: io::Error) -> Refusal {
    // EISDIR, ENOTEMPTY: a directory took the name meanwhile.
    if cfg!(unix) && matches!(e.raw_os_error(), Some(21 | 39)) {
        return not_a_file(requested);
    }
    paths::write_error(requested, &e)
}

/// Creates staging file `name` (and the staging directory, should someone have removed it).
fn create_staging(uploads: &Uploads, name: &str) -> io::Result<File> {
    let path = uploads.staging_path(name);
    let create = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            create()
        }
        other => other,
    }
}

/// Writes all of `data` at `offset`, leaving the file position alone.
#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

/// Writes all of `data` at `offset`.
#[cfg(not(unix))]
fn write_at(mut file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::Write;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// Flushes a directory's entries (the name just published) to the disk, where that exists.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!("cannot flush directory '{}': {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// `ns` since the epoch as a `SystemTime` (negative: before 1970).
pub fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_and_after_the_epoch() {
        assert_eq!(system_time(0), UNIX_EPOCH);
        assert_eq!(system_time(1_500), UNIX_EPOCH + Duration::from_nanos(1_500));
        assert_eq!(system_time(-1), UNIX_EPOCH - Duration::from_nanos(1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_reported_as_such() {
        // /dev/full answers every write with ENOSPC.
        let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let e = write_at(&full, b"x", 0).unwrap_err();
        assert!(paths::is_no_space(&e), "{e:?}");
        assert_eq!(paths::write_error("f", &e).code, ErrorCode::NoSpace);
    }
}
