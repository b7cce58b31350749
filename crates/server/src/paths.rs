//! Path confinement: turns a client's requested path into a file under the served root, or a
//! refusal. Nothing outside the root is ever opened.
//!
//! The checks run in two stages. First the text alone: empty paths, NUL bytes, overlong paths,
//! backslashes, absolute and drive paths and any `..` component are refused before the file
//! system is touched, so a request cannot even probe what exists outside the root. Then the
//! remaining components are walked from the (already canonical) root one at a time; every
//! symlink met on the way is resolved and must land under the root. Only the resulting
//! canonical path is ever opened.
//!
//! Messages sent back never contain absolute server paths: only the path as the client wrote it.
//!
//! The staging directory of uploads in progress ([`STAGING_DIR`], directly under the root) is
//! not part of what is served: a path that leads into it, directly or through a symlink, is
//! answered as if it did not exist, and listings leave it out.
//!
//! A residual race remains (someone with write access *inside* the root swapping a checked
//! directory for a symlink between the check and the open); closing it needs `openat2` with
//! `RESOLVE_BENEATH`, which std does not offer. Remote clients alone cannot trigger it.
//! Downloads of paths without symlinks are opened that way ([`crate::beneath`]), which also
//! saves the walk; this walk handles the rest.

use sfts_protocol::{ErrorCode, MAX_PATH_LEN};
use std::fmt;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Component, Path, PathBuf};

/// The hidden directory under the root where uploads are assembled before they are published
/// by a rename (on the same file system as their targets, so the rename is atomic).
pub const STAGING_DIR: &str = ".sfts-upload";

/// How a copy being published across file systems is named while it is written, where the
/// file system has no unnamed files (see `across.rs`); listings leave such names out.
pub const PUBLISH_PREFIX: &str = ".sfts-publish.";

/// True when `path` (canonical) is the staging directory or inside it.
pub fn in_staging(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .ok()
        .and_then(|rel| rel.components().next())
        .is_some_and(|first| first.as_os_str() == STAGING_DIR)
}

/// A request the server will not serve, with the code and sentence sent back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The native error code.
    pub code: ErrorCode,
    /// A sentence a user can act on; never contains absolute server paths.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

/// A path under the root, checked and ready to open.
#[derive(Debug)]
pub struct Resolved {
    /// The canonical path: the only path the server opens.
    pub path: PathBuf,
    /// Its metadata at the time of the check.
    pub metadata: Metadata,
}

/// Checks the text of a requested path and returns its meaningful components (`.` and empty
/// components dropped). Touches nothing on disk.
pub fn check_syntax(requested: &str) -> Result<Vec<&str>, Refusal> {
    let bad = |m: &str| Err(Refusal::new(ErrorCode::BadRequest, m));
    if requested.is_empty() {
        return bad("empty path");
    }
    if requested.contains('\0') {
        return bad("paths may not contain NUL bytes");
    }
    if requested.len() > MAX_PATH_LEN {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "path of {} bytes is longer than the {MAX_PATH_LEN}-byte limit",
                requested.len()
            ),
        ));
    }
    if requested.contains('\\') {
        return bad("backslashes are not path separators here; use '/'");
    }
    if requested.starts_with('/') || is_drive_path(requested) {
        return Err(Refusal::new(
            ErrorCode::OutsideRoot,
            "absolute paths are not allowed",
        ));
    }
    let mut parts = Vec::new();
    for part in requested.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Refusal::new(
                    ErrorCode::OutsideRoot,
                    "'..' is not allowed in paths",
                ))
            }
            other => parts.push(other),
        }
    }
    Ok(parts)
}

/// `C:`, `C:/x`, `c:name`: a Windows drive path. Refused everywhere so the rules do not depend
/// on the server's platform.
fn is_drive_path(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Resolves `requested` under `root` (which must already be canonical) to a regular file.
pub fn resolve(root: &Path, requested: &str) -> Result<Resolved, Refusal> {
    let found = locate(root, requested)?;
    if !found.metadata.is_file() {
        return Err(Refusal::new(
            ErrorCode::NotAFile,
            format!(
                "'{requested}' is not a regular file (it is {})",
                describe(&found.metadata)
            ),
        ));
    }
    Ok(found)
}

/// Resolves `requested` under `root` (which must already be canonical) to whatever it names:
/// a file, a directory (`.` is the root itself) or something else.
///
/// The path is walked one component at a time. A component that is a symlink is resolved on
/// the spot and must land under the root: a link to a directory outside is refused even when
/// the rest of the path would lead back in, so "symlinks that lead outside" is one simple rule.
pub fn locate(root: &Path, requested: &str) -> Result<Resolved, Refusal> {
    let parts = check_syntax(requested)?;
    let outside = || {
        Refusal::new(
            ErrorCode::OutsideRoot,
            format!("path '{requested}' leads outside the served root"),
        )
    };
    let io_refusal = |e: io::Error| {
        if is_missing(&e) {
            not_found(requested)
        } else {
            access_error(requested, &e)
        }
    };
    // Invariant: `current` is canonical and under the root (the root is canonical; each step
    // appends a plain name, or replaces the path by a symlink's canonical target).
    let mut current = root.to_path_buf();
    // The metadata of `current` when its last step was not a symlink (what
    // `symlink_metadata` said is then what `metadata` would say): saves a look at the end.
    let mut known = None;
    for part in parts {
        let next = current.join(part);
        let meta = fs::symlink_metadata(&next).map_err(io_refusal)?;
        if !meta.file_type().is_symlink() {
            current = next;
            known = Some(meta);
            continue;
        }
        known = None;
        match fs::canonicalize(&next) {
            Ok(target) if target.starts_with(root) => current = target,
            Ok(_) => return Err(outside()),
            // A dangling link: it must get the same answer as a link whose target exists, or
            // the reply would tell what exists outside the root.
            Err(e) if is_missing(&e) && dangling_escapes(root, &current, &next) => {
                return Err(outside())
            }
            Err(e) => return Err(io_refusal(e)),
        }
    }
    if !current.starts_with(root) {
        return Err(outside());
    }
    if in_staging(root, &current) {
        // Uploads in progress are nobody's business: as if they did not exist.
        return Err(not_found(requested));
    }
    let metadata = match known {
        Some(meta) => meta,
        None => fs::metadata(&current).map_err(io_refusal)?,
    };
    Ok(Resolved {
        path: current,
        metadata,
    })
}

/// True when the dangling symlink `link` (in directory `dir`) points, lexically, outside
/// `root`. Only decides which refusal to send; nothing is opened.
fn dangling_escapes(root: &Path, dir: &Path, link: &Path) -> bool {
    match fs::read_link(link) {
        // `join` keeps an absolute target as it is.
        Ok(target) => !normalize(&dir.join(target)).starts_with(root),
        Err(_) => false,
    }
}

/// The refusal for a path that does not exist under the root.
pub fn not_found(requested: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotFound,
        format!("file '{requested}' not found under the served root"),
    )
}

/// The refusal for a file the server may not read; the io error's text carries no path.
pub fn access_error(requested: &str, e: &io::Error) -> Refusal {
    // ENAMETOOLONG (36 on Linux): a component longer than the file system allows. The
    // client's path is at fault, not the server.
    if cfg!(target_os = "linux") && e.raw_os_error() == Some(36) {
        return Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "'{}…' has a path component longer than the file system allows (255 bytes)",
                requested.chars().take(40).collect::<String>()
            ),
        );
    }
    let message = if e.kind() == io::ErrorKind::PermissionDenied {
        format!("the server has no permission to read '{requested}'")
    } else {
        format!("the server cannot access '{requested}': {}", e.kind())
    };
    Refusal::new(ErrorCode::Internal, message)
}

/// The refusal for something the server could not write (create a directory, store a chunk,
/// publish a file); a full disk is `no-space`.
pub fn write_error(requested: &str, e: &io::Error) -> Refusal {
    if is_no_space(e) {
        return Refusal::new(
            ErrorCode::NoSpace,
            format!("the server's disk is full; '{requested}' could not be stored"),
        );
    }
    let message = if e.kind() == io::ErrorKind::PermissionDenied {
        format!("the server has no permission to write '{requested}'")
    } else {
        format!("the server cannot write '{requested}': {}", e.kind())
    };
    Refusal::new(ErrorCode::Internal, message)
}

/// True for "no space left on device" and "disk quota exceeded" (`ErrorKind::StorageFull` and
/// `QuotaExceeded` need a newer Rust than ours).
pub fn is_no_space(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28; // the same on Linux, the BSDs and macOS
    #[cfg(target_os = "linux")]
    const EDQUOT: i32 = 122;
    #[cfg(not(target_os = "linux"))]
    const EDQUOT: i32 = 69;
    cfg!(unix) && matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// "No such file" and "a component is not a directory" both mean: nothing by that name.
fn is_missing(e: &io::Error) -> bool {
    // ENOTDIR is 20 on every Unix; `ErrorKind::NotADirectory` needs a newer Rust than ours.
    e.kind() == io::ErrorKind::NotFound || (cfg!(unix) && e.raw_os_error() == Some(20))
}

/// Removes `.` and folds `..` without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// "a directory", "a named pipe", ... for the not-a-file message.
fn describe(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a named pipe";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    "a special file"
}

/// `requested` as a log line may show it: control characters escaped (`\u{1}`), so a name
/// cannot forge or break log lines.
pub fn shown(requested: &str) -> std::borrow::Cow<'_, str> {
    if requested.chars().any(char::is_control) {
        let escaped: String = requested
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        escaped.into()
    } else {
        requested.into()
    }
}

/// The base name the original protocol announces: the last component the client wrote.
pub fn base_name(requested: &str) -> &str {
    requested
        .rsplit('/')
        .find(|p| !p.is_empty() && *p != ".")
        .unwrap_or(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    /// outside/secret.txt, share/{ok.txt, sub/inner.txt, adir/, link -> secret,
    /// dirlink -> outside, inner -> ok.txt, dangling -> outside/missing, dangling_in -> missing}
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let root = base.join("share");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir(root.join("adir")).unwrap();
        fs::write(base.join("secret.txt"), b"secret").unwrap();
        fs::write(root.join("ok.txt"), b"fine").unwrap();
        fs::write(root.join("sub/inner.txt"), b"inner").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(base.join("secret.txt"), root.join("link")).unwrap();
            symlink(&base, root.join("dirlink")).unwrap();
            symlink(root.join("ok.txt"), root.join("inner")).unwrap();
            symlink("../missing.txt", root.join("dangling")).unwrap();
            symlink("missing.txt", root.join("dangling_in")).unwrap();
        }
        Fixture { _dir: dir, root }
    }

    fn code(f: &Fixture, p: &str) -> Result<PathBuf, ErrorCode> {
        resolve(&f.root, p).map(|r| r.path).map_err(|e| e.code)
    }

    #[test]
    fn syntax_table() {
        use ErrorCode::*;
        let long = "a".repeat(MAX_PATH_LEN + 1);
        let table: &[(&str, ErrorCode)] = &[
            ("", BadRequest),
            ("a\0b", BadRequest),
            (long.as_str(), BadRequest),
            ("..\\x", BadRequest),
            ("sub\\x", BadRequest),
            ("/etc/passwd", OutsideRoot),
            ("C:", OutsideRoot),
            ("C:/x", OutsideRoot),
            ("c:x", OutsideRoot),
            ("..", OutsideRoot),
            ("../x", OutsideRoot),
            ("sub/../ok.txt", OutsideRoot),
            ("a/b/..", OutsideRoot),
        ];
        for (p, want) in table {
            assert_eq!(check_syntax(p).map_err(|e| e.code), Err(*want), "{p:?}");
        }
        assert_eq!(check_syntax("./a//b/./c").unwrap(), ["a", "b", "c"]);
        assert_eq!(check_syntax("..a/b..").unwrap(), ["..a", "b.."]);
        assert_eq!(
            check_syntax("..").unwrap_err().message,
            "'..' is not allowed in paths"
        );
        assert_eq!(
            check_syntax("/x").unwrap_err().message,
            "absolute paths are not allowed"
        );
    }

    #[test]
    fn resolution_table() {
        let f = fixture();
        assert_eq!(code(&f, "ok.txt").unwrap(), f.root.join("ok.txt"));
        assert_eq!(code(&f, "./ok.txt").unwrap(), f.root.join("ok.txt"));
        assert_eq!(
            code(&f, "sub//inner.txt").unwrap(),
            f.root.join("sub/inner.txt")
        );
        assert_eq!(code(&f, "missing"), Err(ErrorCode::NotFound));
        assert_eq!(code(&f, "ok.txt/x"), Err(ErrorCode::NotFound));
        assert_eq!(code(&f, "adir"), Err(ErrorCode::NotAFile));
        assert_eq!(code(&f, "."), Err(ErrorCode::NotAFile));
        let e = resolve(&f.root, "adir").unwrap_err();
        assert_eq!(
            e.message,
            "'adir' is not a regular file (it is a directory)"
        );
        assert!(locate(&f.root, "adir").unwrap().metadata.is_dir());
        assert_eq!(locate(&f.root, ".").unwrap().path, f.root);
        assert_eq!(
            locate(&f.root, "../x").unwrap_err().code,
            ErrorCode::OutsideRoot
        );
        let e = resolve(&f.root, "nope.bin").unwrap_err();
        assert_eq!(e.message, "file 'nope.bin' not found under the served root");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks() {
        let f = fixture();
        assert_eq!(code(&f, "inner").unwrap(), f.root.join("ok.txt"));
        assert_eq!(code(&f, "link"), Err(ErrorCode::OutsideRoot));
        assert_eq!(code(&f, "dirlink/secret.txt"), Err(ErrorCode::OutsideRoot));
        assert_eq!(
            code(&f, "dirlink/share/ok.txt"),
            Err(ErrorCode::OutsideRoot)
        );
        // Same answer whether or not the target outside exists.
        assert_eq!(code(&f, "dirlink/no-such"), Err(ErrorCode::OutsideRoot));
        assert_eq!(code(&f, "dangling"), Err(ErrorCode::OutsideRoot));
        assert_eq!(code(&f, "dangling_in"), Err(ErrorCode::NotFound));
        let e = resolve(&f.root, "link").unwrap_err();
        assert_eq!(e.message, "path 'link' leads outside the served root");
        assert!(!e.message.contains(f.root.to_str().unwrap()));
    }

    #[test]
    fn the_staging_directory_is_not_served() {
        let f = fixture();
        fs::create_dir(f.root.join(STAGING_DIR)).unwrap();
        fs::write(f.root.join(STAGING_DIR).join("x.part"), b"partial").unwrap();
        for p in [
            ".sfts-upload",
            ".sfts-upload/x.part",
            "./.sfts-upload//x.part",
        ] {
            assert_eq!(
                locate(&f.root, p).unwrap_err().code,
                ErrorCode::NotFound,
                "{p}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(f.root.join(STAGING_DIR), f.root.join("peek")).unwrap();
            assert_eq!(code(&f, "peek/x.part"), Err(ErrorCode::NotFound));
        }
        assert!(in_staging(&f.root, &f.root.join(".sfts-upload/a/b")));
        assert!(!in_staging(&f.root, &f.root.join("a/.sfts-upload")));
        assert!(!in_staging(&f.root, &f.root));
    }

    #[test]
    fn write_errors() {
        let full = io::Error::from_raw_os_error(28);
        assert!(is_no_space(&full) == cfg!(unix));
        let r = write_error("a/b", &full);
        if cfg!(unix) {
            assert_eq!(r.code, ErrorCode::NoSpace);
            assert!(r.message.contains("disk is full"), "{}", r.message);
        }
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(!is_no_space(&denied));
        assert_eq!(
            write_error("a/b", &denied).message,
            "the server has no permission to write 'a/b'"
        );
    }

    #[test]
    fn names_in_logs_cannot_break_lines() {
        assert_eq!(shown("a/b c.txt"), "a/b c.txt");
        assert_eq!(shown("x\ny\u{1}"), "x\\ny\\u{1}");
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("docs/report.pdf"), "report.pdf");
        assert_eq!(base_name("a.txt"), "a.txt");
        assert_eq!(base_name("a/b/"), "b");
        assert_eq!(base_name("a/."), "a");
    }

    #[test]
    fn normalize_folds_parents() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
    }
}
