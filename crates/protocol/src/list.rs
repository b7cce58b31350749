//! Directory listings (capability `LIST`): the entries of `ListEntries` and a batcher that
//! splits a listing of any length into frames below the control-frame limit.

use crate::error::{ProtocolError, Result};
use crate::frame::MAX_CONTROL_LEN;
use crate::message::{FileKind, Message};
use crate::wire::{self, Cursor};
use crate::MAX_PATH_LEN;

/// Bytes of an entry besides its name: name length (`u16`), kind, size, mtime.
const ENTRY_FIXED_LEN: usize = 2 + 1 + 8 + 8;

/// Largest `ListEntries` payload: the frame limit minus the tag byte.
const MAX_ENTRIES_PAYLOAD: usize = MAX_CONTROL_LEN as usize - 1;

/// What a listed name is. The codes are those of `FileInfo`'s kind, plus `Symlink`, which
/// only listings carry (`Stat` resolves links; one leading outside the root is
/// `outside-root`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// Anything else (device, socket, FIFO, ...).
    Other,
    /// A symbolic link the server does not follow: it leads outside the served root, nowhere,
    /// or into a loop. Links that stay inside the root are listed as what they lead to.
    Symlink,
}

impl EntryKind {
    /// The wire code: 1 file, 2 directory, 3 other, 4 symlink.
    pub fn code(self) -> u8 {
        match self {
            EntryKind::File => 1,
            EntryKind::Directory => 2,
            EntryKind::Other => 3,
            EntryKind::Symlink => 4,
        }
    }

    /// The kind for a wire code; other codes are malformed.
    pub fn from_code(code: u8) -> Result<EntryKind> {
        match code {
            1 => Ok(EntryKind::File),
            2 => Ok(EntryKind::Directory),
            3 => Ok(EntryKind::Other),
            4 => Ok(EntryKind::Symlink),
            _ => Err(ProtocolError::Malformed {
                message: "ListEntries",
                detail: "unknown entry kind",
            }),
        }
    }

    /// A short name for output: `file`, `directory`, `other`, `symlink`.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Other => "other",
            EntryKind::Symlink => "symlink",
        }
    }
}

impl From<FileKind> for EntryKind {
    fn from(k: FileKind) -> EntryKind {
        match k {
            FileKind::File => EntryKind::File,
            FileKind::Directory => EntryKind::Directory,
            FileKind::Other => EntryKind::Other,
        }
    }
}

/// One name in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Name relative to the listed directory: a plain name, or for a recursive listing a
    /// `/`-separated relative path (`sub/dir/file.txt`). Never empty, at most
    /// [`MAX_PATH_LEN`] bytes.
    pub name: String,
    /// File, directory, symlink the server does not follow, or other.
    pub kind: EntryKind,
    /// Size in bytes (0 for anything but a regular file).
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
}

impl ListEntry {
    /// Bytes this entry takes in a `ListEntries` frame.
    pub fn wire_len(&self) -> usize {
        ENTRY_FIXED_LEN + self.name.len()
    }
}

pub(crate) fn encode_entries(out: &mut Vec<u8>, entries: &[ListEntry]) {
    wire::put_u16(out, entries.len() as u16);
    for e in entries {
        wire::put_string(out, &e.name);
        wire::put_u8(out, e.kind.code());
        wire::put_u64(out, e.size);
        wire::put_i64(out, e.mtime_ns);
    }
}

pub(crate) fn decode_entries(c: &mut Cursor<'_>) -> Result<Vec<ListEntry>> {
    let count = c.u16("entry count")? as usize;
    // Each entry takes at least ENTRY_FIXED_LEN + 1 bytes: a count the frame cannot hold is
    // refused before anything is allocated for it.
    if count * (ENTRY_FIXED_LEN + 1) > c.remaining() {
        return Err(ProtocolError::Malformed {
            message: "ListEntries",
            detail: "more entries announced than the frame holds",
        });
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let name = c.string("entry name")?;
        if name.is_empty() {
            return Err(ProtocolError::Malformed {
                message: "ListEntries",
                detail: "empty entry name",
            });
        }
        if name.len() > MAX_PATH_LEN {
            return Err(ProtocolError::PathTooLong {
                len: name.len(),
                max: MAX_PATH_LEN,
            });
        }
        entries.push(ListEntry {
            name,
            kind: EntryKind::from_code(c.u8("entry kind")?)?,
            size: c.u64("entry size")?,
            mtime_ns: c.i64("entry mtime")?,
        });
    }
    Ok(entries)
}

/// Collects entries into `ListEntries` messages that each fit one frame.
///
/// ```
/// use sfts_protocol::{EntryKind, ListBatcher, ListEntry, Message};
/// let mut frames = Vec::new();
/// let mut batch = ListBatcher::new();
/// for i in 0..10_000 {
///     let e = ListEntry { name: format!("file-{i}"), kind: EntryKind::File, size: 1, mtime_ns: 0 };
///     frames.extend(batch.push(e));
/// }
/// frames.extend(batch.finish());
/// frames.push(Message::ListEnd { total: 10_000, truncated: false });
/// assert!(frames.len() > 2);
/// ```
#[derive(Debug, Default)]
pub struct ListBatcher {
    entries: Vec<ListEntry>,
    payload: usize,
}

impl ListBatcher {
    /// An empty batch.
    pub fn new() -> ListBatcher {
        ListBatcher {
            entries: Vec::new(),
            payload: 2,
        }
    }

    /// Adds an entry. When it does not fit the current frame, returns that frame's message
    /// (to send now) and starts the next batch with the entry. Names must be 1 to
    /// [`MAX_PATH_LEN`] bytes: a peer refuses a frame with any other.
    pub fn push(&mut self, entry: ListEntry) -> Option<Message<'static>> {
        debug_assert!(!entry.name.is_empty() && entry.name.len() <= MAX_PATH_LEN);
        let len = entry.wire_len();
        let full = if self.payload + len > MAX_ENTRIES_PAYLOAD {
            self.take()
        } else {
            None
        };
        self.payload += len;
        self.entries.push(entry);
        full
    }

    /// The last, partly filled batch, if it holds any entry.
    pub fn finish(mut self) -> Option<Message<'static>> {
        self.take()
    }

    fn take(&mut self) -> Option<Message<'static>> {
        if self.entries.is_empty() {
            return None;
        }
        self.payload = 2;
        Some(Message::ListEntries {
            entries: std::mem::take(&mut self.entries),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::message::tests::encoded;

    fn entry(name: &str, kind: EntryKind) -> ListEntry {
        ListEntry {
            name: name.into(),
            kind,
            size: 3,
            mtime_ns: 1,
        }
    }

    pub(crate) fn samples() -> Vec<Message<'static>> {
        vec![
            Message::List {
                path: ".".into(),
                recursive: false,
            },
            Message::List {
                path: "a/b".into(),
                recursive: true,
            },
            Message::ListEntries { entries: vec![] },
            Message::ListEntries {
                entries: vec![
                    entry("f.txt", EntryKind::File),
                    entry("sub", EntryKind::Directory),
                    entry("sub/link", EntryKind::Symlink),
                    entry("fifo", EntryKind::Other),
                ],
            },
            Message::ListEnd {
                total: 4,
                truncated: false,
            },
            Message::ListEnd {
                total: u64::MAX,
                truncated: true,
            },
        ]
    }

    #[test]
    fn exact_layouts() {
        assert_eq!(
            encoded(&Message::List {
                path: "d".into(),
                recursive: true
            }),
            [0, 0, 0, 5, 0x17, 0, 1, b'd', 1]
        );
        assert_eq!(
            encoded(&Message::ListEntries {
                entries: vec![ListEntry {
                    name: "ab".into(),
                    kind: EntryKind::Symlink,
                    size: 2,
                    mtime_ns: -1,
                }]
            }),
            [
                0, 0, 0, 24, 0x18, 0, 1, 0, 2, b'a', b'b', 4, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]
        );
        assert_eq!(
            encoded(&Message::ListEnd {
                total: 2,
                truncated: true
            }),
            [0, 0, 0, 10, 0x19, 0, 0, 0, 0, 0, 0, 0, 2, 1]
        );
    }

    #[test]
    fn entry_kinds() {
        for k in [
            EntryKind::File,
            EntryKind::Directory,
            EntryKind::Other,
            EntryKind::Symlink,
        ] {
            assert_eq!(EntryKind::from_code(k.code()).unwrap(), k);
        }
        assert!(EntryKind::from_code(0).is_err() && EntryKind::from_code(5).is_err());
        assert_eq!(EntryKind::from(FileKind::Directory), EntryKind::Directory);
        assert_eq!(EntryKind::Symlink.name(), "symlink");
    }

    #[test]
    fn invalid_fields_rejected() {
        // Unknown flag bits in List and ListEnd.
        assert!(Message::decode(&[0, 0, 0, 5, 0x17, 0, 1, b'd', 2]).is_err());
        assert!(Message::decode(&[0, 0, 0, 10, 0x19, 0, 0, 0, 0, 0, 0, 0, 2, 3]).is_err());
        // Unknown kind.
        let mut bytes = encoded(&Message::ListEntries {
            entries: vec![entry("x", EntryKind::File)],
        });
        bytes[10] = 9;
        assert!(matches!(
            Message::decode(&bytes),
            Err(ProtocolError::Malformed { .. })
        ));
        // Empty and over-long names.
        for name in [String::new(), "n".repeat(MAX_PATH_LEN + 1)] {
            let bytes = encoded(&Message::ListEntries {
                entries: vec![ListEntry {
                    name,
                    kind: EntryKind::File,
                    size: 0,
                    mtime_ns: 0,
                }],
            });
            assert!(Message::decode(&bytes).is_err());
        }
        // An entry count the frame cannot hold, refused before allocating.
        assert!(matches!(
            Message::decode(&[0, 0, 0, 3, 0x18, 0xff, 0xff]),
            Err(ProtocolError::Malformed { .. })
        ));
        // Over-long path in List.
        let bytes = encoded(&Message::List {
            path: "a".repeat(MAX_PATH_LEN + 1),
            recursive: false,
        });
        assert!(matches!(
            Message::decode(&bytes),
            Err(ProtocolError::PathTooLong { .. })
        ));
    }

    #[test]
    fn batches_fit_a_frame_and_keep_every_entry_in_order() {
        let mut batch = ListBatcher::new();
        let mut frames = Vec::new();
        let names: Vec<String> = (0..3000)
            .map(|i| format!("{i}-{}", "n".repeat(i % 200)))
            .chain(std::iter::once("m".repeat(MAX_PATH_LEN)))
            .collect();
        for n in &names {
            frames.extend(batch.push(entry(n, EntryKind::File)));
        }
        frames.extend(batch.finish());
        assert!(frames.len() > 5);
        let mut back = Vec::new();
        for f in &frames {
            let bytes = encoded(f);
            assert!(bytes.len() - 4 <= MAX_CONTROL_LEN as usize);
            match Message::decode(&bytes).unwrap().unwrap().0 {
                Message::ListEntries { entries } => {
                    assert!(!entries.is_empty());
                    back.extend(entries.into_iter().map(|e| e.name));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, names);
        assert!(ListBatcher::new().finish().is_none());
    }

    #[test]
    fn a_full_frame_is_used_up_to_the_limit() {
        // Entries of exactly 64 bytes on the wire: (65,535 - 2) / 64 = 1,023 fit in one frame.
        let e = entry(&"x".repeat(64 - ENTRY_FIXED_LEN), EntryKind::File);
        assert_eq!(e.wire_len(), 64);
        let mut batch = ListBatcher::new();
        for _ in 0..1023 {
            assert!(batch.push(e.clone()).is_none());
        }
        let Some(Message::ListEntries { entries }) = batch.push(e) else {
            panic!("the 1,024th entry should start a new frame")
        };
        assert_eq!(entries.len(), 1023);
        assert_eq!(
            encoded(&Message::ListEntries { entries }).len(),
            4 + 1 + 2 + 1023 * 64
        );
    }
}
