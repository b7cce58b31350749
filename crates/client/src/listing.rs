//! `sfts-client list`: the entries of a remote directory, flat or recursive.

use crate::error::{ClientError, Kept};
use crate::fetch::Fetcher;
use crate::progress::Bytes;
use crate::resume::time_text;
use serde_json::{json, Value};
use sfts_protocol::{Capabilities, EntryKind, ListEntry, Message};

/// A complete listing.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The directory listed.
    pub path: String,
    /// Its entries, in the server's order (recursive: each directory before its contents).
    pub entries: Vec<ListEntry>,
    /// The server stopped at its own limit.
    pub truncated: bool,
}

/// Lists `path` on the connected server.
pub fn list(f: &mut Fetcher<'_>, path: &str, recursive: bool) -> Result<Listing, ClientError> {
    if !f.server_has(Capabilities::LIST) {
        return Err(ClientError::Refused {
            remote: path.to_string(),
            message: "the server does not list directories (its protocol has no LIST)".into(),
        });
    }
    let timeout = f.timeout();
    let session = f.session()?;
    session
        .send(&Message::List {
            path: path.to_string(),
            recursive,
        })
        .map_err(|e| ClientError::Disconnected {
            stage: "asking for the listing",
            reason: e.to_string(),
        })?;
    let mut entries = Vec::new();
    loop {
        match session.recv("waiting for the listing", timeout)? {
            Message::ListEntries { entries: batch } => entries.extend(batch),
            Message::ListEnd { total, truncated } => {
                if total != entries.len() as u64 {
                    return Err(ClientError::Protocol {
                        detail: format!("it announced {total} entries and sent {}", entries.len()),
                        kept: Kept::Nothing,
                    });
                }
                if truncated {
                    tracing::warn!(
                        "the server cut the listing of '{path}' at {total} entries (its limit)"
                    );
                }
                return Ok(Listing {
                    path: path.to_string(),
                    entries,
                    truncated,
                });
            }
            Message::Error { message, .. } => {
                return Err(ClientError::Refused {
                    remote: path.to_string(),
                    message,
                })
            }
            other => {
                return Err(ClientError::Protocol {
                    detail: format!("expected a listing, got {}", other.name()),
                    kept: Kept::Nothing,
                })
            }
        }
    }
}

/// The listing as one JSON object.
pub fn listing_json(l: &Listing) -> Value {
    let entries: Vec<Value> = l
        .entries
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "type": e.kind.name(),
                "size": e.size,
                "mtime_ns": e.mtime_ns,
            })
        })
        .collect();
    json!({
        "path": l.path,
        "total": l.entries.len(),
        "truncated": l.truncated,
        "entries": entries,
    })
}

/// The listing as text: type, size, modification time, name (directories end with `/`).
pub fn listing_text(l: &Listing) -> String {
    let mut out = String::new();
    for e in &l.entries {
        let (mark, size, suffix) = match e.kind {
            EntryKind::File => ("-", Bytes(e.size).to_string(), ""),
            EntryKind::Directory => ("d", "-".to_string(), "/"),
            EntryKind::Symlink => ("l", "-".to_string(), " (symlink, not followed)"),
            _ => ("?", "-".to_string(), ""),
        };
        let when = time_text(e.mtime_ns);
        // Minutes are enough in a listing; `stat` shows the rest.
        let when = when.get(..16).unwrap_or(&when);
        out.push_str(&format!("{mark} {size:>10}  {when}  {}{suffix}\n", e.name));
    }
    let files = l
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .count();
    let bytes: u64 = l.entries.iter().map(|e| e.size).sum();
    out.push_str(&format!(
        "{} entries, {files} files, {}{}\n",
        l.entries.len(),
        Bytes(bytes),
        if l.truncated {
            " (truncated by the server)"
        } else {
            ""
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json() {
        let l = Listing {
            path: ".".into(),
            entries: vec![
                ListEntry {
                    name: "sub".into(),
                    kind: EntryKind::Directory,
                    size: 0,
                    mtime_ns: 0,
                },
                ListEntry {
                    name: "a.bin".into(),
                    kind: EntryKind::File,
                    size: 2048,
                    mtime_ns: 1_700_000_000_000_000_000,
                },
            ],
            truncated: false,
        };
        let text = listing_text(&l);
        assert!(
            text.contains("d          -  1970-01-01 00:00  sub/"),
            "{text}"
        );
        assert!(
            text.contains("-    2.0 KiB  2023-11-14 22:13  a.bin"),
            "{text}"
        );
        assert!(text.ends_with("2 entries, 1 files, 2.0 KiB\n"), "{text}");
        let v = listing_json(&l);
        assert_eq!(v["total"], 2);
        assert_eq!(v["entries"][1]["type"], "file");
        assert_eq!(v["entries"][1]["size"], 2048);
    }
}
