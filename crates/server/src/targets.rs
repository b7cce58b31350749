//! Where uploads and new directories go: the name rules of `docs/PROTOCOL.md` ("Names") and
//! the walk from the root to a target that may not exist yet.
//!
//! A name is checked twice. First its text: the download confinement rules
//! ([`paths::check_syntax`]), then every component must be safe on common file systems (no
//! control characters, no reserved Windows device names, no trailing dot or space, at most
//! 255 bytes), and the staging directory's name is reserved. Then its place: the parents are
//! walked from the canonical root like a download's path, a symlink being followed only when
//! it stays inside the root (and out of the staging directory), a parent that is a file being
//! `not-a-directory`. Missing parents are created only when asked ([`Walk::Create`]): an
//! upload creates them when it publishes, `Mkdir` at once.

use crate::paths::{self, Refusal, STAGING_DIR};
use sfts_protocol::ErrorCode;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Longest name component common file systems store (ext4, NTFS, APFS: 255 bytes or units).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Device names Windows reserves in every directory, with or without an extension.
const RESERVED: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];

/// Checks the text of an upload or `Mkdir` path and returns its components (`.` and empty
/// ones dropped; none for the root itself).
pub fn check_name(requested: &str) -> Result<Vec<&str>, Refusal> {
    let parts = paths::check_syntax(requested)?;
    if parts.first() == Some(&STAGING_DIR) {
        return Err(unsafe_name(
            STAGING_DIR,
            "it is reserved for the server's uploads in progress",
        ));
    }
    for part in &parts {
        if let Some(rule) = broken_rule(part) {
            return Err(unsafe_name(part, &rule));
        }
    }
    Ok(parts)
}

fn unsafe_name(part: &str, rule: &str) -> Refusal {
    Refusal::new(
        ErrorCode::UnsafeName,
        format!("'{}' is not a safe name: {rule}", part.escape_debug()),
    )
}

/// The rule `part` breaks, if any.
fn broken_rule(part: &str) -> Option<String> {
    if let Some(c) = part.chars().find(|c| c.is_control()) {
        return Some(format!(
            "it contains the control character U+{:04X}",
            c as u32
        ));
    }
    if is_reserved(part) {
        return Some(
            "CON, PRN, AUX, NUL, COM1-COM9 and LPT1-LPT9 are reserved device names on Windows, \
             with or without an extension"
                .into(),
        );
    }
    if part.ends_with('.') {
        return Some("Windows drops a trailing dot, so the name would change".into());
    }
    if part.ends_with(' ') {
        return Some("Windows drops a trailing space, so the name would change".into());
    }
    if part.len() > MAX_COMPONENT_LEN {
        return Some(format!(
            "it is {} bytes long; common file systems store at most {MAX_COMPONENT_LEN}",
            part.len()
        ));
    }
    None
}

/// `CON`, `nul.txt`, `Com1.tar.gz`, `LPT9 .x`: reserved whatever the case or extension.
fn is_reserved(part: &str) -> bool {
    let stem = part.split('.').next().unwrap_or(part).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if RESERVED.contains(&upper.as_str()) {
        return true;
    }
    let b = upper.as_bytes();
    b.len() == 4
        && (b.starts_with(b"COM") || b.starts_with(b"LPT"))
        && (b'1'..=b'9').contains(&b[3])
}

/// Whether missing directories are created on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Only look: missing parents are fine (they will be created later).
    Look,
    /// Create missing directories.
    Create,
}

/// Where a checked path leads.
#[derive(Debug, Clone)]
pub struct Place {
    /// The canonical path (its missing components appended as written).
    pub path: PathBuf,
    /// What is there now, if anything.
    pub found: Found,
}

/// What a path names at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link that is not followed (out of the root, dangling): a name that exists.
    Link,
    /// Anything else (a pipe, a socket, a device).
    Other,
}

/// Walks `parts` (from [`check_name`]) from `root` (canonical): every component but the last
/// must be a directory (or missing, or created with [`Walk::Create`]); the last is reported
/// as found. With [`Walk::Create`] the last one is created as a directory too (`Mkdir`).
pub fn walk(root: &Path, requested: &str, parts: &[&str], mode: Walk) -> Result<Place, Refusal> {
    let mut current = root.to_path_buf();
    let mut missing = false;
    let dirs = match mode {
        Walk::Create => parts.len(),
        Walk::Look => parts.len().saturating_sub(1),
    };
    for (i, part) in parts.iter().enumerate().take(dirs) {
        let next = current.join(part);
        if missing {
            current = next;
            continue;
        }
        let shown = || parts[..=i].join("/");
        current = match inspect(root, requested, &next)? {
            (Found::Directory, at) => at,
            (Found::Nothing, _) if mode == Walk::Look => {
                missing = true;
                next
            }
            (Found::Nothing, _) => create_dir(root, requested, &next, &shown())?,
            (Found::Link, _) => {
                return Err(not_a_directory(format!(
                    "'{}' is a symbolic link that leads nowhere",
                    shown()
                )))
            }
            (_, _) => {
                return Err(not_a_directory(format!(
                    "'{}' is a file, not a directory",
                    shown()
                )))
            }
        };
    }
    if mode == Walk::Create || parts.is_empty() {
        return Ok(Place {
            path: current,
            found: Found::Directory,
        });
    }
    let path = current.join(parts[parts.len() - 1]);
    if missing {
        return Ok(Place {
            path,
            found: Found::Nothing,
        });
    }
    last(root, requested, path)
}

/// Walks to the file `parts` names (from [`check_name`], not empty), creating its missing
/// parents: [`walk`] with [`Walk::Create`] over the parents, then a look at the last
/// component, in one pass.
pub fn walk_to_file(root: &Path, requested: &str, parts: &[&str]) -> Result<Place, Refusal> {
    let Some((name, parents)) = parts.split_last() else {
        return Err(Refusal::new(
            ErrorCode::NotAFile,
            "the served root itself is not a file; name one",
        ));
    };
    let dir = walk(root, requested, parents, Walk::Create)?;
    last(root, requested, dir.path.join(name))
}

/// What the last component, `path`, is. It is not followed: a symlink there is replaced,
/// never written through.
fn last(root: &Path, requested: &str, path: PathBuf) -> Result<Place, Refusal> {
    let found = match inspect(root, requested, &path) {
        Ok((Found::Directory, _)) => Found::Directory,
        Ok((found, _)) => found,
        // A symlink leading outside is a name like any other for the last component.
        Err(r) if r.code == ErrorCode::OutsideRoot => Found::Link,
        Err(r) => return Err(r),
    };
    Ok(Place { path, found })
}

/// What `path` is; a symlink is followed when it stays inside the root (the canonical target
/// is returned), refused when it leads outside it or into the staging directory.
fn inspect(root: &Path, requested: &str, path: &Path) -> Result<(Found, PathBuf), Refusal> {
    let access = |e: io::Error| paths::access_error(requested, &e);
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((Found::Nothing, path.to_path_buf()))
        }
        Err(e) => return Err(access(e)),
    };
    let kind = |m: &fs::Metadata| {
        if m.is_dir() {
            Found::Directory
        } else if m.is_file() {
            Found::File
        } else {
            Found::Other
        }
    };
    if !meta.file_type().is_symlink() {
        return Ok((kind(&meta), path.to_path_buf()));
    }
    match fs::canonicalize(path) {
        Ok(target) if !target.starts_with(root) => Err(Refusal::new(
            ErrorCode::OutsideRoot,
            format!("path '{requested}' leads outside the served root"),
        )),
        Ok(target) if paths::in_staging(root, &target) => Err(Refusal::new(
            ErrorCode::UnsafeName,
            format!("path '{requested}' leads into the server's uploads in progress"),
        )),
        Ok(target) => {
            let meta = fs::metadata(&target).map_err(access)?;
            Ok((kind(&meta), target))
        }
        Err(_) => Ok((Found::Link, path.to_path_buf())),
    }
}

/// Creates one directory; a directory someone else created meanwhile is fine.
fn create_dir(root: &Path, requested: &str, path: &Path, shown: &str) -> Result<PathBuf, Refusal> {
    match fs::create_dir(path) {
        Ok(()) => {
            tracing::info!("created directory '{shown}'");
            Ok(path.to_path_buf())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match inspect(root, requested, path)?
        {
            (Found::Directory, at) => Ok(at),
            _ => Err(not_a_directory(format!(
                "'{shown}' is a file, not a directory"
            ))),
        },
        Err(e) => Err(paths::write_error(shown, &e)),
    }
}

fn not_a_directory(message: String) -> Refusal {
    Refusal::new(ErrorCode::NotADirectory, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        use ErrorCode::*;
        let table: &[(&str, ErrorCode, &str)] = &[
            ("CON", UnsafeName, "reserved device name"),
            ("con", UnsafeName, "reserved device name"),
            ("dir/nul.txt", UnsafeName, "reserved device name"),
            ("AUX/x.bin", UnsafeName, "reserved device name"),
            ("a/COM1", UnsafeName, "reserved device name"),
            ("lpt9.tar.gz", UnsafeName, "reserved device name"),
            ("PRN .txt", UnsafeName, "reserved device name"),
            ("trailing.", UnsafeName, "trailing dot"),
            ("d./x", UnsafeName, "trailing dot"),
            ("trailing ", UnsafeName, "trailing space"),
            ("ctl\u{1}x", UnsafeName, "U+0001"),
            ("tab\there", UnsafeName, "U+0009"),
            ("del\u{7f}", UnsafeName, "U+007F"),
            (".sfts-upload/x", UnsafeName, "reserved for the server"),
            ("../up.bin", OutsideRoot, "'..'"),
            ("/abs", OutsideRoot, "absolute"),
            ("a\\b", BadRequest, "backslash"),
            ("", BadRequest, "empty"),
        ];
        for (name, code, text) in table {
            let r = check_name(name).unwrap_err();
            assert_eq!(r.code, *code, "{name:?}");
            assert!(r.message.contains(text), "{name:?}: {}", r.message);
        }
        let long = "x".repeat(MAX_COMPONENT_LEN + 1);
        assert!(check_name(&long).unwrap_err().message.contains("255"));
        assert_eq!(
            check_name("ctl\u{1}x").unwrap_err().message.find('\u{1}'),
            None
        );
        for fine in [
            "CONSOLE",
            "com10",
            "COM0",
            "console.txt",
            "a/b/c.txt",
            ".hidden",
            "x.sfts-upload",
            "sub/.sfts-upload",
            "naïve café.txt",
            "..a",
        ] {
            assert!(check_name(fine).is_ok(), "{fine:?}");
        }
        assert!(check_name(".").unwrap().is_empty());
    }

    struct Tree {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    /// share/{file, dir/, dir/inner}, outside/, share/out -> outside, share/in -> dir,
    /// share/nowhere -> missing
    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let root = base.join("share");
        fs::create_dir_all(root.join("dir")).unwrap();
        fs::create_dir(base.join("outside")).unwrap();
        fs::write(root.join("file"), b"x").unwrap();
        fs::write(root.join("dir/inner"), b"y").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(base.join("outside"), root.join("out")).unwrap();
            symlink(root.join("dir"), root.join("in")).unwrap();
            symlink("missing", root.join("nowhere")).unwrap();
        }
        Tree { _dir: dir, root }
    }

    fn look(t: &Tree, p: &str) -> Result<(PathBuf, Found), ErrorCode> {
        let parts = check_name(p).map_err(|r| r.code)?;
        walk(&t.root, p, &parts, Walk::Look)
            .map(|w| (w.path, w.found))
            .map_err(|r| r.code)
    }

    #[test]
    fn upload_targets() {
        let t = tree();
        let r = &t.root;
        assert_eq!(look(&t, "new"), Ok((r.join("new"), Found::Nothing)));
        assert_eq!(look(&t, "a/b/c"), Ok((r.join("a/b/c"), Found::Nothing)));
        assert!(!r.join("a").exists(), "looking creates nothing");
        assert_eq!(look(&t, "file"), Ok((r.join("file"), Found::File)));
        assert_eq!(look(&t, "dir"), Ok((r.join("dir"), Found::Directory)));
        assert_eq!(look(&t, "."), Ok((r.clone(), Found::Directory)));
        assert_eq!(look(&t, "file/x"), Err(ErrorCode::NotADirectory));
        assert_eq!(look(&t, "dir/inner/x/y"), Err(ErrorCode::NotADirectory));
        #[cfg(unix)]
        {
            assert_eq!(look(&t, "in/new"), Ok((r.join("dir/new"), Found::Nothing)));
            assert_eq!(look(&t, "out/x"), Err(ErrorCode::OutsideRoot));
            assert_eq!(look(&t, "nowhere/x"), Err(ErrorCode::NotADirectory));
            // The last component is a name: a link there is replaced, not followed.
            assert_eq!(look(&t, "out"), Ok((r.join("out"), Found::Link)));
            assert_eq!(look(&t, "nowhere"), Ok((r.join("nowhere"), Found::Link)));
            assert_eq!(look(&t, "in"), Ok((r.join("in"), Found::Directory)));
            fs::create_dir(r.join(STAGING_DIR)).unwrap();
            std::os::unix::fs::symlink(r.join(STAGING_DIR), r.join("st")).unwrap();
            assert_eq!(look(&t, "st/x"), Err(ErrorCode::UnsafeName));
        }
    }

    #[test]
    fn mkdir_creates_parents_and_accepts_existing_directories() {
        let t = tree();
        let mk = |p: &str| {
            let parts = check_name(p).map_err(|r| r.code)?;
            walk(&t.root, p, &parts, Walk::Create)
                .map(|w| w.path)
                .map_err(|r| r.code)
        };
        assert_eq!(mk("a/b/c"), Ok(t.root.join("a/b/c")));
        assert!(t.root.join("a/b/c").is_dir());
        assert_eq!(mk("a/b"), Ok(t.root.join("a/b")));
        assert_eq!(mk("."), Ok(t.root.clone()));
        assert_eq!(mk("file"), Err(ErrorCode::NotADirectory));
        assert_eq!(mk("file/sub"), Err(ErrorCode::NotADirectory));
        #[cfg(unix)]
        assert_eq!(mk("in/made"), Ok(t.root.join("dir/made")));
    }
}
