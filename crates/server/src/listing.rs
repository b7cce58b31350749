//! Directory listings (`List`, `docs/PROTOCOL.md` 1.10): the walk over the file system.
//!
//! * Entries are sorted by name (byte order) within each directory; a recursive listing is
//!   depth first with each directory before its contents, names relative to the listed
//!   directory.
//! * A symlink that stays inside the root is listed as what it leads to, and a directory
//!   behind one is recursed into; one leading outside the root, nowhere, into the staging
//!   directory, or (recursive listings) back into a directory being listed is listed as a
//!   `symlink` and never followed.
//! * The staging directory of uploads is left out; names that are not UTF-8 or too long for
//!   the protocol are left out with a warning (no client could ask for them).
//! * At most `limit` entries are produced; then the walk stops and says it was truncated.
//!
//! Entries go to a sink as they are found, so a large tree is never held in memory (one
//! directory's names at a time, for sorting). The sink is also called with `None` now and
//! then, for keep-alives.

use crate::error::ServerError;
use crate::fileid::FileId;
use crate::look::{Dir, Kind, Look};
use crate::paths::{in_staging, PUBLISH_PREFIX, STAGING_DIR};
use sfts_protocol::{EntryKind, ListEntry, MAX_PATH_LEN};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use tracing::warn;

/// A sink for entries (`Some`) and keep-alive ticks (`None`).
pub type Sink<'s> = dyn FnMut(Option<ListEntry>) -> Result<(), ServerError> + 's;

/// Which entries may be listed (servers with tokens): called with the entry's name relative to
/// the listed directory and, for one reached through a symlink, the root-relative path it
/// leads to. Entries it refuses are left out (and not recursed into, nor counted).
pub type Visible<'v> = dyn Fn(&str, Option<&str>) -> bool + 'v;

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// Entries produced.
    pub total: u64,
    /// The limit was reached; entries are missing.
    pub truncated: bool,
}

/// The identity of a directory, for loop detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId(u64, u64);

impl DirId {
    fn of(meta: &Metadata) -> DirId {
        let id = FileId::of(meta);
        DirId(id.device, id.inode)
    }
}

/// One listing in progress.
pub struct Walker<'a, 's> {
    root: &'a Path,
    recursive: bool,
    limit: u64,
    sent: u64,
    truncated: bool,
    /// The directories from the root down to the one being read (a link back into one of them
    /// would loop).
    ancestors: Vec<DirId>,
    visible: Option<&'a Visible<'a>>,
    sink: &'a mut Sink<'s>,
}

impl<'a, 's> Walker<'a, 's> {
    /// Lists `dir` (canonical, a directory under the canonical `root`) into `sink`.
    pub fn run(
        root: &'a Path,
        dir: &Path,
        recursive: bool,
        limit: u64,
        visible: Option<&'a Visible<'a>>,
        sink: &'a mut Sink<'s>,
    ) -> Result<Walked, ServerError> {
        let ancestors = dir
            .ancestors()
            .take_while(|a| a.starts_with(root))
            .filter_map(|a| fs::metadata(a).ok())
            .map(|m| DirId::of(&m))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut w = Walker {
            root,
            recursive,
            limit,
            sent: 0,
            truncated: false,
            ancestors,
            visible,
            sink,
        };
        w.directory(dir, "")?;
        Ok(Walked {
            total: w.sent,
            truncated: w.truncated,
        })
    }

    /// Lists one directory (and, recursively, its subdirectories); `prefix` is its path
    /// relative to the listed one, with a trailing `/` (empty at the top).
    fn directory(&mut self, dir: &Path, prefix: &str) -> Result<(), ServerError> {
        let mut names: Vec<OsString> = match fs::read_dir(dir) {
            Ok(entries) => entries.flatten().map(|e| e.file_name()).collect(),
            Err(e) => {
                warn!("listing skips '{prefix}': cannot read it ({e})");
                return Ok(());
            }
        };
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        // Entries are looked at relative to one descriptor of `dir` ([`crate::look`]), closed
        // while a subdirectory is listed: a listing holds one at a time. Where it cannot be
        // opened, by path.
        let mut here: Option<Dir> = None;
        let mut by_path = false;
        for name in names {
            if self.truncated {
                return Ok(());
            }
            (self.sink)(None)?;
            let path = dir.join(&name);
            let Some(name) = name.to_str() else {
                warn!(
                    "listing skips a name that is not UTF-8 in '{prefix}': {}",
                    name.to_string_lossy()
                );
                continue;
            };
            // Uploads in progress, and a copy being published into another file system.
            if (dir == self.root && name == STAGING_DIR) || name.starts_with(PUBLISH_PREFIX) {
                continue;
            }
            let rel = format!("{prefix}{name}");
            if rel.len() > MAX_PATH_LEN {
                warn!("listing skips '{rel}': longer than {MAX_PATH_LEN} bytes");
                continue;
            }
            if here.is_none() && !by_path {
                match Dir::open(dir) {
                    Ok(d) => here = Some(d),
                    Err(_) => by_path = true,
                }
            }
            let look = match &here {
                Some(d) => d.look(path.file_name().unwrap_or_default()),
                None => fs::symlink_metadata(&path).map(|m| Look::of(&m)),
            };
            // Gone meanwhile: not listed.
            let Ok(look) = look else {
                continue;
            };
            let Some((entry, follow)) = self.describe(&path, &look, rel) else {
                continue;
            };
            if let Some(visible) = self.visible {
                // Where it leads, if that is not simply `path` (canonical, since `dir` is).
                let real = match (&follow, entry.kind) {
                    (Some((target, _)), _) => Some(target.clone()),
                    (None, EntryKind::Symlink) => None,
                    (None, _) if look.kind == Kind::Symlink => fs::canonicalize(&path).ok(),
                    (None, _) => Some(path.clone()),
                };
                let real = real.map(|r| crate::fileid::relative_name(self.root, &r));
                if !visible(&entry.name, real.as_deref()) {
                    continue;
                }
            }
            if self.sent >= self.limit {
                self.truncated = true;
                return Ok(());
            }
            let rel = entry.name.clone();
            (self.sink)(Some(entry))?;
            self.sent += 1;
            if let (true, Some((target, id))) = (self.recursive, follow) {
                here = None;
                self.ancestors.push(id);
                self.directory(&target, &format!("{rel}/"))?;
                self.ancestors.pop();
            }
        }
        Ok(())
    }

    /// The entry for `path`, whose `lstat` is `look`, and the directory to recurse into if it
    /// is one; `None` when it vanished meanwhile.
    fn describe(
        &self,
        path: &Path,
        look: &Look,
        name: String,
    ) -> Option<(ListEntry, Option<(PathBuf, DirId)>)> {
        let entry = |kind, look: &Look| ListEntry {
            name: name.clone(),
            kind,
            size: if kind == EntryKind::File {
                look.size
            } else {
                0
            },
            mtime_ns: look.mtime_ns,
        };
        match look.kind {
            Kind::Dir => {
                let id = DirId(look.device, look.inode);
                // A bind mount of an ancestor would loop like a symlink.
                let follow = (!self.ancestors.contains(&id)).then(|| (path.to_path_buf(), id));
                return Some((entry(EntryKind::Directory, look), follow));
            }
            Kind::File => return Some((entry(EntryKind::File, look), None)),
            Kind::Other => return Some((entry(EntryKind::Other, look), None)),
            Kind::Symlink => {}
        }
        let not_followed = || Some((entry(EntryKind::Symlink, look), None));
        let target = match fs::canonicalize(path) {
            Ok(t) if t.starts_with(self.root) && !in_staging(self.root, &t) => t,
            _ => return not_followed(),
        };
        let Ok(meta) = fs::metadata(&target) else {
            return not_followed();
        };
        let to = Look::of(&meta);
        match to.kind {
            Kind::Dir => {
                let id = DirId(to.device, to.inode);
                if self.recursive && self.ancestors.contains(&id) {
                    return not_followed();
                }
                Some((entry(EntryKind::Directory, &to), Some((target, id))))
            }
            Kind::File => Some((entry(EntryKind::File, &to), None)),
            _ => Some((entry(EntryKind::Other, &to), None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(
        root: &Path,
        dir: &str,
        recursive: bool,
        limit: u64,
    ) -> (Vec<(String, EntryKind, u64)>, Walked) {
        let mut got = Vec::new();
        let mut sink = |e: Option<ListEntry>| {
            if let Some(e) = e {
                got.push((e.name, e.kind, e.size));
            }
            Ok(())
        };
        let walked = Walker::run(root, &root.join(dir), recursive, limit, None, &mut sink).unwrap();
        (got, walked)
    }

    fn names(v: &[(String, EntryKind, u64)]) -> Vec<&str> {
        v.iter().map(|e| e.0.as_str()).collect()
    }

    #[test]
    fn sorted_depth_first_directories_before_contents() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("b/empty")).unwrap();
        fs::create_dir_all(root.join(STAGING_DIR)).unwrap();
        fs::write(root.join(STAGING_DIR).join("x.part"), b"hidden").unwrap();
        fs::write(root.join("b/z.txt"), b"zz").unwrap();
        fs::write(root.join(format!("b/{PUBLISH_PREFIX}1-abc")), b"half").unwrap();
        fs::write(root.join("a.txt"), b"a").unwrap();
        fs::write(root.join("B.txt"), b"bbb").unwrap();
        let (flat, w) = list(&root, "", false, 100);
        assert_eq!(names(&flat), ["B.txt", "a.txt", "b"]);
        assert_eq!(flat[0], ("B.txt".into(), EntryKind::File, 3));
        assert_eq!(flat[2], ("b".into(), EntryKind::Directory, 0));
        assert_eq!(
            w,
            Walked {
                total: 3,
                truncated: false
            }
        );
        let (deep, _) = list(&root, "", true, 100);
        assert_eq!(names(&deep), ["B.txt", "a.txt", "b", "b/empty", "b/z.txt"]);
        let (sub, _) = list(&root, "b", true, 100);
        assert_eq!(names(&sub), ["empty", "z.txt"]);
        let (cut, w) = list(&root, "", true, 2);
        assert_eq!(names(&cut), ["B.txt", "a.txt"]);
        assert_eq!(
            w,
            Walked {
                total: 2,
                truncated: true
            }
        );
        // Exactly at the limit is not truncated.
        assert!(!list(&root, "", true, 5).1.truncated);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_are_followed_once_and_others_are_not() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let root = base.join("share");
        fs::create_dir_all(root.join("d/sub")).unwrap();
        fs::create_dir(root.join(STAGING_DIR)).unwrap();
        fs::write(root.join("d/sub/f"), b"ffff").unwrap();
        fs::write(base.join("secret"), b"s").unwrap();
        symlink(root.join("d/sub"), root.join("d/alias")).unwrap(); // inside: followed
        symlink(root.join("d/sub/f"), root.join("d/flink")).unwrap(); // to a file
        symlink(&root, root.join("d/sub/up")).unwrap(); // a loop
        symlink(base.join("secret"), root.join("d/out")).unwrap(); // outside
        symlink("nowhere", root.join("d/dangling")).unwrap();
        symlink(root.join(STAGING_DIR), root.join("d/staged")).unwrap();
        let (deep, _) = list(&root, "d", true, 100);
        let kinds: Vec<(&str, EntryKind)> = deep.iter().map(|e| (e.0.as_str(), e.1)).collect();
        use EntryKind::*;
        assert_eq!(
            kinds,
            [
                ("alias", Directory),
                ("alias/f", File),
                ("alias/up", Symlink),
                ("dangling", Symlink),
                ("flink", File),
                ("out", Symlink),
                ("staged", Symlink),
                ("sub", Directory),
                ("sub/f", File),
                ("sub/up", Symlink),
            ]
        );
        assert_eq!(deep[4].2, 4, "a link to a file has the file's size");
        assert_eq!(deep[5].2, 0, "an unfollowed link has no size");
        // Flat: a link to a directory inside is a directory.
        let (flat, _) = list(&root, "d/sub", false, 100);
        assert_eq!(flat[1], ("up".into(), EntryKind::Directory, 0));
    }

    #[test]
    fn a_deep_tree_is_listed_whole() {
        // Levels 0 to 24, each with a file of its level's size and a link to that file.
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let mut d = root.clone();
        let mut want = Vec::new();
        let mut prefix = String::new();
        for level in 0..25usize {
            fs::write(d.join("f"), vec![b'x'; level]).unwrap();
            want.push((format!("{prefix}f"), EntryKind::File, level as u64));
            #[cfg(unix)]
            {
                std::os::unix::fs::symlink(d.join("f"), d.join("g")).unwrap();
                want.push((format!("{prefix}g"), EntryKind::File, level as u64));
            }
            d.push("n");
            fs::create_dir(&d).unwrap();
            want.push((format!("{prefix}n"), EntryKind::Directory, 0));
            prefix.push_str("n/");
        }
        let (got, walked) = list(&root, "", true, 1000);
        assert_eq!(got, want);
        assert_eq!(walked.total, want.len() as u64);
    }
}
