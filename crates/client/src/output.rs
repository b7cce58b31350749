//! Where the bytes go: a temporary `<target>.sfts-part` beside the target, published under
//! the final name by a rename only after verification; or standard output for `-o -`.

use crate::error::{ClientError, Kept};
use crate::part_lock;
use std::fs::{self, File, OpenOptions};
use std::io::{self, StdoutLock, Write};
use std::path::{Path, PathBuf};

/// Suffix of the temporary file a download is written to.
pub const PART_SUFFIX: &str = ".sfts-part";

/// What the user asked for with `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// No `-o`: the remote file's base name in the current directory.
    Default,
    /// `-o PATH`: that file, or the base name inside it when it is a directory.
    Path(PathBuf),
    /// `-o -`.
    Stdout,
}

/// The checked destination of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output.
    Stdout,
    /// A file, written as `part` and renamed to `target`.
    File {
        /// The final name.
        target: PathBuf,
        /// The temporary name.
        part: PathBuf,
    },
}

/// The last component of a remote path (`/` or `\` separated), if it can name a local file.
pub fn base_name(remote: &str) -> Option<&str> {
    let name = remote.rsplit(['/', '\\']).next()?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// `<target>.sfts-part`.
pub fn part_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

impl Destination {
    /// Decides where the download goes and checks what can be checked before connecting: an
    /// existing target without `force`, a missing parent directory, a target that is a
    /// directory.
    pub fn plan(spec: &OutputSpec, remote: &str, force: bool) -> Result<Destination, ClientError> {
        let base = || {
            base_name(remote).ok_or_else(|| {
                ClientError::Usage(format!(
                    "cannot derive a local file name from '{remote}'; name the output with -o"
                ))
            })
        };
        let target = match spec {
            OutputSpec::Stdout => return Ok(Destination::Stdout),
            OutputSpec::Default => PathBuf::from(base()?),
            OutputSpec::Path(p) if p.as_os_str().is_empty() => {
                return Err(ClientError::Usage("the output path is empty".into()))
            }
            OutputSpec::Path(p) if p.is_dir() => p.join(base()?),
            OutputSpec::Path(p) => p.clone(),
        };
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if meta.is_dir() {
                return Err(ClientError::local(
                    "cannot write the download to",
                    &target,
                    io::Error::other("it is a directory"),
                ));
            }
            if !force {
                return Err(ClientError::TargetExists(target));
            }
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(ClientError::local(
                "cannot save into",
                parent,
                io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        let part = part_path(&target);
        Ok(Destination::File { target, part })
    }

    /// Where the bytes of a failed download are.
    pub fn kept(&self) -> Kept {
        match self {
            Destination::Stdout => Kept::Stdout,
            Destination::File { part, .. } => Kept::File(part.clone()),
        }
    }

    /// The path to print after the digest (`-` for standard output).
    pub fn display_name(&self) -> String {
        match self {
            Destination::Stdout => "-".into(),
            Destination::File { target, .. } => target.display().to_string(),
        }
    }

    /// Opens the sink. A stale temporary file from an earlier run is replaced (removed first,
    /// so a symlink planted under that name is not followed).
    pub fn open(&self) -> Result<Sink, ClientError> {
        match self {
            Destination::Stdout => Ok(Sink::Stdout(io::stdout().lock())),
            Destination::File { part, .. } => create_part(part).map(Sink::File),
        }
    }

    /// Makes the verified download final: fsync, then rename the temporary file to the target
    /// (or flush standard output). Without `force` an existing target that appeared during the
    /// download is still not overwritten.
    pub fn publish(&self, sink: Sink, force: bool) -> Result<(), ClientError> {
        self.publish_with(sink, force, true)
    }

    /// [`publish`](Self::publish), with the fsync of the file and its directory only when
    /// `durable` (a tree of small files syncs the whole file system once at the end instead).
    pub fn publish_with(&self, sink: Sink, force: bool, durable: bool) -> Result<(), ClientError> {
        match (self, sink) {
            (Destination::File { target, part }, Sink::File(file)) => {
                if durable {
                    file.sync_all()
                        .map_err(|e| ClientError::local("cannot flush", part, e))?;
                }
                if !force && fs::symlink_metadata(target).is_ok() {
                    return Err(ClientError::TargetExists(target.clone()));
                }
                // Still open, so still locked: no other client can replace the partial file
                // between our verification and this rename.
                fs::rename(part, target)
                    .map_err(|e| ClientError::local("cannot rename the download to", target, e))?;
                drop(file);
                if durable {
                    sync_parent(target);
                }
                Ok(())
            }
            (_, mut sink) => sink.flush().map_err(|e| stdout_error(e, "flush")),
        }
    }
}

/// Creates the temporary file `part`, replacing a stale one from an earlier run, and locks it
/// ([`part_lock`]). Always created new (`O_EXCL`), so a symlink planted under that name is
/// never followed: when the name is taken, it is removed and the file created again (a tree of
/// small files usually takes one system call per file, not an `unlink` that fails and then the
/// `open`). A partial file another client holds is left alone: [`ClientError::InUse`].
pub fn create_part(part: &Path) -> Result<File, ClientError> {
    create_replacing_stale(part, &ByPath(part))
}

/// The system calls [`create_replacing_stale`] makes on a partial file's name.
pub trait PartName {
    /// Creates the file, new (`O_EXCL`), for writing.
    fn create(&self) -> io::Result<File>;
    /// Opens what has the name, only to lock it: read-only, no symlink followed, no waiting
    /// for a writer if it is a FIFO.
    fn open_existing(&self) -> io::Result<File>;
    /// Device and inode of what has the name now (not following a symlink).
    fn identity(&self) -> io::Result<(u64, u64)>;
    /// Removes the name.
    fn remove(&self) -> io::Result<()>;
}

/// [`PartName`] by path.
struct ByPath<'a>(&'a Path);

impl PartName for ByPath<'_> {
    fn create(&self) -> io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(self.0)
    }

    fn open_existing(&self) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.0)
    }

    fn identity(&self) -> io::Result<(u64, u64)> {
        fs::symlink_metadata(self.0).map(|m| part_lock::identity(&m))
    }

    fn remove(&self) -> io::Result<()> {
        fs::remove_file(self.0)
    }
}

/// [`create_part`]'s way through `name`'s system calls: create the file new; when the name is
/// taken, lock what is there (a client still writing it holds its lock), remove it and create
/// again. Each file locked is checked to still have its name ([`part_lock::lock_created`],
/// [`part_lock::lock_named`]).
/// `part` names the file in messages.
pub fn create_replacing_stale(part: &Path, name: &dyn PartName) -> Result<File, ClientError> {
    let created = |file: File| part_lock::lock_created(&file, part).map(|()| file);
    match name.create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        made => {
            return made
                .map_err(|e| ClientError::local("cannot create", part, e))
                .and_then(created)
        }
    }
    // Held until the new file is locked, so no other client takes the name meanwhile. What
    // cannot be opened (a symlink, a name gone since) is removed all the same.
    let _stale = match name.open_existing() {
        Ok(file) => {
            part_lock::lock_named(&file, part, || name.identity())?;
            Some(file)
        }
        Err(_) => None,
    };
    match name.remove() {
        Ok(()) => tracing::info!("replacing stale '{}'", part.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ClientError::local("cannot replace", part, e)),
    }
    match name.create() {
        // Another client created it between our remove and create: it holds it now.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ClientError::InUse(part.into())),
        made => made
            .map_err(|e| ClientError::local("cannot create", part, e))
            .and_then(created),
    }
}

/// Makes the rename durable; failing here loses nothing the user could act on, so it is only
/// logged.
fn sync_parent(target: &Path) {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(parent).and_then(|d| d.sync_all()) {
        tracing::info!("could not sync directory '{}': {e}", parent.display());
    }
}

/// Flushes everything written to the file system holding `dir` to stable storage, once (after
/// a tree of small files, instead of an fsync per file). Failing costs a log line.
pub fn sync_file_system(dir: &Path) {
    let synced = File::open(dir).and_then(|d| {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `d` keeps open for the call.
        match unsafe { libc::syncfs(d.as_raw_fd()) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    });
    if let Err(e) = synced {
        tracing::warn!("could not flush '{}' to disk: {e}", dir.display());
    }
}

/// Maps a write error on standard output: a closed pipe is not a failure.
pub fn stdout_error(e: io::Error, action: &str) -> ClientError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        ClientError::StdoutClosed
    } else {
        ClientError::Local {
            what: format!("cannot {action} standard output"),
            source: e,
        }
    }
}

/// An open output.
pub enum Sink {
    /// The temporary file.
    File(File),
    /// Standard output, locked for the whole download.
    Stdout(StdoutLock<'static>),
}

impl Sink {
    /// True for standard output.
    pub fn is_stdout(&self) -> bool {
        matches!(self, Sink::Stdout(_))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(buf),
            Sink::Stdout(s) => s.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        assert_eq!(base_name("file.bin"), Some("file.bin"));
        assert_eq!(base_name("sub/dir/file.bin"), Some("file.bin"));
        assert_eq!(base_name("/etc/passwd"), Some("passwd"));
        assert_eq!(base_name("..\\secret.txt"), Some("secret.txt"));
        assert_eq!(base_name("dir/"), None);
        assert_eq!(base_name(".."), None);
        assert_eq!(base_name("a/."), None);
        assert_eq!(base_name(""), None);
    }

    #[test]
    fn planning() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        let spec = OutputSpec::Path(out.clone());
        let plan = Destination::plan(&spec, "x/y.bin", false).unwrap();
        assert_eq!(
            plan,
            Destination::File {
                target: out.clone(),
                part: dir.path().join("out.bin.sfts-part")
            }
        );
        // A directory as -o: the base name inside it.
        let plan = Destination::plan(&OutputSpec::Path(dir.path().into()), "x/y.bin", false);
        assert!(
            matches!(plan, Ok(Destination::File { target, .. }) if target == dir.path().join("y.bin"))
        );
        // An existing target needs --force.
        fs::write(&out, b"old").unwrap();
        let e = Destination::plan(&spec, "y.bin", false).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("--force"));
        assert!(Destination::plan(&spec, "y.bin", true).is_ok());
        // Missing directory, empty name, underivable base name.
        let missing = OutputSpec::Path(dir.path().join("no/such/out.bin"));
        assert_eq!(
            Destination::plan(&missing, "y", false)
                .unwrap_err()
                .exit_code(),
            1
        );
        let e = Destination::plan(&OutputSpec::Default, "dir/", false).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            Destination::plan(&OutputSpec::Stdout, "dir/", false).unwrap(),
            Destination::Stdout
        );
    }

    #[test]
    fn write_then_publish() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.bin");
        let dest = Destination::plan(&OutputSpec::Path(target.clone()), "t", false).unwrap();
        // A stale partial from an earlier run is replaced.
        fs::write(part_path(&target), b"stale stale stale").unwrap();
        let mut sink = dest.open().unwrap();
        sink.write_all(b"fresh").unwrap();
        assert!(!target.exists());
        dest.publish(sink, false).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"fresh");
        assert!(!part_path(&target).exists());
    }

    #[test]
    fn publish_does_not_clobber_a_target_that_appeared_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.bin");
        let dest = Destination::plan(&OutputSpec::Path(target.clone()), "t", false).unwrap();
        let sink = dest.open().unwrap();
        fs::write(&target, b"someone else's").unwrap();
        assert!(matches!(
            dest.publish(sink, false),
            Err(ClientError::TargetExists(_))
        ));
        assert_eq!(fs::read(&target).unwrap(), b"someone else's");
        assert!(part_path(&target).exists());
    }
}
