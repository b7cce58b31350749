//! Writing the small files of a `get -r` on a second thread.
//!
//! A tree of small files is CPU-bound on the client: per file it costs a few microseconds to
//! receive and hash, and about 35 µs of system calls to create `<name>.sfts-part`, lock it,
//! write it, set its time, rename it and close it. On one thread the client was the slowest
//! part of the pipeline. So the connection's thread receives each small file into memory and
//! checks it against the server's digest, and this thread writes and publishes the verified
//! files: as an unnamed file linked under its name once whole ([`crate::unnamed`]), or, to
//! replace a file, beside a `.sfts-part` already there, or where unnamed files do not work,
//! as before ([`DirHandle`]: created new and locked, renamed without replacing unless asked,
//! the time set). A file that fails its check is never written at all.
//!
//! At most [`QUEUE`] files of at most [`MAX_BYTES`] each wait for the writer, which takes all
//! that wait at once (one wake-up per batch, [`crate::handoff`]); larger files of a tree are
//! written by the connection's thread as they arrive. Dropping the [`Writer`]
//! lets it write what it was given and waits for it.

use crate::dir_handle::{DirHandle, KnownParts, Published};
use crate::error::ClientError;
use crate::handoff::{bounded, Receiver, Sender};
use crate::output::part_path;
use crate::unnamed::Unnamed;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Verified files waiting for the writer. It takes them all at once ([`crate::handoff`]), so
/// at most twice as many are held: the queued ones and the ones being written.
pub const QUEUE: usize = 32;
/// Largest file handed to the writer: at most 16 MiB are held.
pub const MAX_BYTES: u64 = 256 * 1024;

/// A small file received whole and verified, to be published.
pub struct Verified {
    /// Its name in the listing (for the summary's failures).
    pub name: String,
    /// Where it goes.
    pub local: PathBuf,
    /// A file already there is replaced (it differs, and --force).
    pub replace: bool,
    /// The modification time it gets, ns since the epoch.
    pub mtime_ns: i64,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What the writer did.
#[derive(Debug, Default)]
pub struct Written {
    /// Files published.
    pub files: u64,
    /// Files not published, with the reason (another client writing it, a name that
    /// appeared meanwhile, a failed rename).
    pub failed: Vec<(String, String)>,
    /// Why the writer stopped, when it could not go on (it cannot create or write files
    /// there): the whole tree stops, as it did before.
    pub fatal: Option<ClientError>,
}

/// The writer thread.
pub struct Writer {
    tx: Option<Sender<Verified>>,
    report: Arc<Mutex<Written>>,
    thread: Option<JoinHandle<()>>,
    /// Set by the thread when it stops on a fatal error.
    halted: Arc<AtomicBool>,
    /// The report was taken ([`Writer::finish`]).
    reported: bool,
}

impl Writer {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Writer> {
        let (tx, rx) = bounded(QUEUE);
        let report = Arc::new(Mutex::new(Written::default()));
        let halted = Arc::new(AtomicBool::new(false));
        let (theirs, flag) = (Arc::clone(&report), Arc::clone(&halted));
        let thread = std::thread::Builder::new()
            .name("tree-writer".into())
            .spawn(move || {
                run(rx, &theirs);
                if lock(&theirs).fatal.is_some() {
                    flag.store(true, Ordering::Release);
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            report,
            thread: Some(thread),
            halted,
            reported: false,
        })
    }

    /// Why the writer stopped, once it stopped on a fatal error (taken: asked once).
    pub fn halted(&mut self) -> Option<ClientError> {
        if !self.halted.load(Ordering::Acquire) {
            return None;
        }
        self.stop();
        self.reported = true;
        lock(&self.report).fatal.take()
    }

    /// Hands over a verified file (waiting while the queue is full). An error when the
    /// writer has stopped: why.
    pub fn write(&mut self, file: Verified) -> Result<(), ClientError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(file).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.stop();
        self.reported = true;
        Err(lock(&self.report).fatal.take().unwrap_or_else(stopped))
    }

    /// Waits until every file handed over is written; what the writer did.
    pub fn finish(mut self) -> Written {
        self.stop();
        self.reported = true;
        std::mem::take(&mut *lock(&self.report))
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                lock(&self.report).fatal.get_or_insert_with(stopped);
            }
        }
    }
}

impl Drop for Writer {
    /// The tree stopped for another reason (Ctrl-C, a lost server): the files handed over are
    /// still written, and what went wrong with them is logged, since no summary will say it.
    fn drop(&mut self) {
        self.stop();
        if self.reported {
            return;
        }
        let written = std::mem::take(&mut *lock(&self.report));
        for (name, why) in &written.failed {
            tracing::warn!("'{name}' was not written: {why}");
        }
        if let Some(e) = &written.fatal {
            tracing::warn!("the tree's files could not all be written: {e}");
        }
    }
}

fn lock(report: &Mutex<Written>) -> MutexGuard<'_, Written> {
    report
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread ended without saying why (it panicked).
fn stopped() -> ClientError {
    ClientError::Local {
        what: "cannot write the tree's files".into(),
        source: std::io::Error::other("the writing thread stopped"),
    }
}

fn run(rx: Receiver<Verified>, report: &Mutex<Written>) {
    let mut dir: Option<DirHandle> = None;
    let mut unnamed = Unnamed::default();
    let mut parts = KnownParts::default();
    let mut batch = VecDeque::with_capacity(QUEUE);
    while rx.take(&mut batch) {
        while let Some(file) = batch.pop_front() {
            match publish(&mut dir, &mut unnamed, &mut parts, &file) {
                Ok(None) => lock(report).files += 1,
                Ok(Some(why)) => lock(report).failed.push((file.name, why)),
                Err(fatal) => {
                    lock(report).fatal = Some(fatal);
                    // Dropping the receiver tells the connection's thread at its next file.
                    return;
                }
            }
        }
    }
}

/// Publishes `file` as an unnamed file linked under its name where that works and it replaces
/// nothing, else writes it as `<name>.sfts-part` beside its name and renames it there: `None`
/// when it is published, or why it was not (the tree goes on); an error stops the tree.
fn publish(
    dir: &mut Option<DirHandle>,
    unnamed: &mut Unnamed,
    parts: &mut KnownParts,
    file: &Verified,
) -> Result<Option<String>, ClientError> {
    let (parent, name) = split(&file.local)?;
    let dir = open_dir(dir, parent)?;
    if unnamed.available() && !file.replace && !parts.has_part(parent, name) {
        match unnamed.publish(dir, name, &file.data, &file.local, file.mtime_ns) {
            Some(Published::Done) => return Ok(None),
            Some(Published::Exists) => return Ok(Some(appeared(&file.local))),
            // It failed (and is off): the named way, which says what is wrong.
            None => {}
        }
    }
    let mut part = match dir.create_part(name) {
        Ok(part) => part,
        // Another client is writing this very file: it is left to it.
        Err(busy @ ClientError::InUse(_)) => return Ok(Some(busy.to_string())),
        Err(e) => return Err(e),
    };
    if let Err(e) = part.write_all(&file.data) {
        let _ = dir.remove_part(name);
        return Err(ClientError::local(
            "cannot write to",
            &part_path(&file.local),
            e,
        ));
    }
    Ok(publish_part(
        dir,
        part,
        &file.local,
        file.mtime_ns,
        file.replace,
    ))
}

/// `dir`, opened on `parent` unless it already is: the listing goes directory by directory,
/// one open directory at a time is enough.
pub fn open_dir<'d>(
    dir: &'d mut Option<DirHandle>,
    parent: &Path,
) -> Result<&'d DirHandle, ClientError> {
    if dir.as_ref().is_none_or(|d| d.path() != parent) {
        let opened =
            DirHandle::open(parent).map_err(|e| ClientError::local("cannot open", parent, e))?;
        *dir = Some(opened);
    }
    Ok(dir.as_ref().expect("opened above"))
}

/// Gives the written and verified `part` of `local` (in `dir`) its time and renames it to
/// `local`: `None` when it is published, or why it was not (its part is then removed).
pub fn publish_part(
    dir: &DirHandle,
    part: File,
    local: &Path,
    mtime_ns: i64,
    replace: bool,
) -> Option<String> {
    let name = local.file_name().unwrap_or_default();
    crate::tree::set_mtime(&part, &part_path(local), mtime_ns);
    // No fsync here: one for the whole tree at the end. The file stays open (and locked)
    // until renamed.
    let why = match dir.publish(name, replace) {
        Ok(Published::Done) => return None,
        Ok(Published::Exists) => appeared(local),
        Err(e) => ClientError::local("cannot rename the download to", local, e).to_string(),
    };
    // Removed while still locked: only a holder of its lock removes a partial file.
    let _ = dir.remove_part(name);
    drop(part);
    Some(why)
}

/// Why a file was not published: its name was taken meanwhile.
fn appeared(local: &Path) -> String {
    format!(
        "'{}' appeared while the tree was fetched; use --force to replace it",
        local.display()
    )
}

/// The directory and the name of a file's path.
pub fn split(local: &Path) -> Result<(&Path, &OsStr), ClientError> {
    match (local.parent(), local.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(ClientError::Usage(format!(
            "'{}' is not a file name",
            local.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn file(dir: &Path, name: &str, data: &[u8], replace: bool) -> Verified {
        Verified {
            name: name.into(),
            local: dir.join(name),
            replace,
            mtime_ns: 1_234_567_890_000_000_000,
            data: data.to_vec(),
        }
    }

    #[test]
    fn files_are_published_with_their_time_and_nothing_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut w = Writer::start().unwrap();
        w.write(file(dir.path(), "a", b"alpha", false)).unwrap();
        w.write(file(dir.path(), "sub/b", b"", false)).unwrap();
        let done = w.finish();
        assert_eq!((done.files, done.failed.len()), (2, 0));
        assert!(done.fatal.is_none());
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(dir.path().join("sub/b")).unwrap(), b"");
        let m = std::fs::metadata(dir.path().join("a")).unwrap();
        assert_eq!(m.mtime(), 1_234_567_890);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "only a and sub: {names:?}");
    }

    #[test]
    fn a_name_already_taken_is_kept_unless_replacing_was_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"theirs").unwrap();
        std::fs::write(dir.path().join("y"), b"old").unwrap();
        let mut w = Writer::start().unwrap();
        w.write(file(dir.path(), "x", b"ours", false)).unwrap();
        w.write(file(dir.path(), "y", b"new", true)).unwrap();
        let done = w.finish();
        assert_eq!(done.files, 1);
        assert_eq!(done.failed.len(), 1);
        assert_eq!(done.failed[0].0, "x");
        assert!(done.failed[0].1.contains("--force"), "{}", done.failed[0].1);
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"theirs");
        assert_eq!(std::fs::read(dir.path().join("y")).unwrap(), b"new");
        assert!(!dir.path().join("x.sfts-part").exists());
    }

    #[test]
    fn a_directory_it_cannot_write_in_stops_it_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let mut w = Writer::start().unwrap();
        // The first file stops the writer; a later one (if the queue took it) is refused.
        w.write(file(&missing, "a", b"a", false)).unwrap();
        let second = (0..1_000).find_map(|_| w.write(file(&missing, "b", b"b", false)).err());
        let e = match second {
            Some(e) => e,
            None => w.finish().fatal.expect("a fatal error"),
        };
        assert!(e.to_string().contains("gone"), "{e}");
        assert!(!missing.exists());
    }

    #[test]
    fn a_stop_is_seen_without_handing_over_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::start().unwrap();
        w.write(file(&dir.path().join("gone"), "a", b"a", false))
            .unwrap();
        // Bounded: 500 looks 10 ms apart.
        let e = (0..500)
            .find_map(|_| {
                let e = w.halted();
                if e.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                e
            })
            .expect("the writer stopped within 5 s");
        assert!(e.to_string().contains("gone"), "{e}");
        assert!(w.halted().is_none(), "said once");
    }
}
