//! `Stat`: what a path under the root is, its size and modification time, and the whole-file
//! digests the cache already holds for exactly that version. Never reads a file's contents.

use super::Native;
use crate::auth::Access;
use crate::digest;
use crate::error::ServerError;
use crate::fileid::{relative_name, FileId};
use crate::paths;
use sfts_protocol::{Capabilities, FileInfo, FileKind, Message};
use tracing::info;

impl Native<'_> {
    /// Answers one `Stat` with `FileInfo`, or refuses it (the session goes on either way).
    pub(super) fn stat(&mut self, path: String) -> Result<(), ServerError> {
        info!("{} asks about '{path}'", self.who());
        let allowed = self
            .needs(Capabilities::STAT, "Stat", "STAT")
            .and_then(|()| self.permit(Access::Read, &path));
        if let Err(refusal) = allowed {
            return self.refuse(&path, refusal);
        }
        let root = &self.s.state.root;
        let found = paths::locate(root, &path).and_then(|f| {
            self.permit_resolved(Access::Read, &path, &f.path)
                .map(|()| f)
        });
        let found = match found {
            Ok(f) => f,
            Err(refusal) => return self.refuse(&path, refusal),
        };
        let meta = &found.metadata;
        let id = FileId::of(meta);
        let info = if meta.is_file() {
            let key = id.key(relative_name(root, &found.path));
            let shown = self.shown_digests();
            let cached = self.s.state.store.cached(&key, shown);
            FileInfo {
                kind: FileKind::File,
                size: id.size,
                mtime_ns: id.mtime_ns,
                digests: cached
                    .map(|c| digest::all_known(&c, shown))
                    .unwrap_or_default(),
            }
        } else {
            FileInfo {
                kind: if meta.is_dir() {
                    FileKind::Directory
                } else {
                    FileKind::Other
                },
                size: 0,
                mtime_ns: id.mtime_ns,
                digests: Vec::new(),
            }
        };
        self.send(&Message::FileInfo(info))
    }
}
