//! The resume journal kept beside a partial download (`OUT.sfts-journal` next to
//! `OUT.sfts-part`).
//!
//! It is a small, append-only text file, readable with `cat`:
//!
//! ```text
//! sfts-journal 1
//! path path/to/file.bin
//! size 67108864
//! mtime_ns 1763797036000000000
//! chunk_size 1048576
//! --
//! 0 3f0c…(64 hex digits: SHA-256 of chunk 0 as written to the partial file)
//! 1 9a11…
//! ```
//!
//! A chunk line is appended (one `write`, no buffering) after the chunk's bytes were written
//! to the partial file, so a crash or `kill -9` loses at most the chunk in flight. On resume
//! each recorded chunk is read back once and checked against its line; a chunk that no longer
//! matches is fetched again. A torn last line (a crash in the middle of the append) is ignored.
//! A repaired chunk is appended again; the last line for an index wins.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

const MAGIC_LINE: &str = "sfts-journal 1";

/// What the partial file is a copy of. If any of it differs on the server, the partial is
/// worthless and the download starts over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalHeader {
    /// The remote path (relative to the server's root). The server address is not recorded:
    /// the same file may be resumed through another address (a proxy, IPv6, ...), and the
    /// size and modification time below catch a different file.
    pub path: String,
    /// Size of the file on the server.
    pub size: u64,
    /// Its modification time on the server (ns since the epoch).
    pub mtime_ns: i64,
    /// Size of every chunk but the last.
    pub chunk_size: u32,
}

impl JournalHeader {
    /// Number of chunks in the whole file.
    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size as u64)
    }

    /// Byte range `[start, end)` of chunk `index`.
    pub fn chunk_range(&self, index: u64) -> (u64, u64) {
        let start = index * self.chunk_size as u64;
        (start, (start + self.chunk_size as u64).min(self.size))
    }
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    header: JournalHeader,
    chunks: Vec<Option<[u8; 32]>>,
}

/// The journal path for a download target.
pub fn journal_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".sfts-journal");
    PathBuf::from(name)
}

impl Journal {
    /// Starts a new journal (replacing any old one) and makes its header durable.
    pub fn create(path: &Path, header: JournalHeader) -> io::Result<Journal> {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        let text = format!(
            "{MAGIC_LINE}\npath {}\nsize {}\nmtime_ns {}\nchunk_size {}\n--\n",
            header.path.replace('\n', " "),
            header.size,
            header.mtime_ns,
            header.chunk_size
        );
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        let count = header.chunk_count() as usize;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            header,
            chunks: vec![None; count],
        })
    }

    /// Opens an existing journal for appending. `Ok(None)` when there is none or it is not a
    /// journal this version understands (the download then starts over).
    pub fn open(path: &Path) -> io::Result<Option<Journal>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((header, chunks)) = parse(BufReader::new(file))? else {
            return Ok(None);
        };
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Some(Journal {
            path: path.to_path_buf(),
            file,
            header,
            chunks,
        }))
    }

    /// The header.
    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded digest of chunk `index`.
    pub fn chunk(&self, index: u64) -> Option<[u8; 32]> {
        self.chunks.get(index as usize).copied().flatten()
    }

    /// Number of chunks recorded without a gap from the start.
    pub fn confirmed_chunks(&self) -> u64 {
        self.chunks.iter().take_while(|c| c.is_some()).count() as u64
    }

    /// Bytes covered by the gap-free recorded prefix.
    pub fn confirmed_bytes(&self) -> u64 {
        let n = self.confirmed_chunks();
        if n == 0 {
            0
        } else {
            self.header.chunk_range(n - 1).1
        }
    }

    /// Records that chunk `index` now holds bytes with this SHA-256. One `write` call, so a
    /// crash leaves either the whole line or a torn one that `open` ignores.
    pub fn record(&mut self, index: u64, sha256: [u8; 32]) -> io::Result<()> {
        let Some(slot) = self.chunks.get_mut(index as usize) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("chunk {index} is beyond the end of the file"),
            ));
        };
        let line = format!("{index} {}\n", sfts_protocol::checksum::to_hex(&sha256));
        self.file.write_all(line.as_bytes())?;
        *slot = Some(sha256);
        Ok(())
    }

    /// Forgets chunk `index` (it failed verification).
    pub fn forget(&mut self, index: u64) {
        if let Some(slot) = self.chunks.get_mut(index as usize) {
            *slot = None;
        }
    }

    /// Flushes the journal to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

type Parsed = (JournalHeader, Vec<Option<[u8; 32]>>);

fn parse(reader: impl BufRead) -> io::Result<Option<Parsed>> {
    let mut lines = reader.lines();
    let mut next = || lines.next().transpose();
    if next()?.as_deref() != Some(MAGIC_LINE) {
        return Ok(None);
    }
    let mut field = |name: &str| -> io::Result<Option<String>> {
        Ok(next()?.and_then(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned)))
    };
    let path = field("path")?;
    let size = field("size")?.and_then(|v| v.parse::<u64>().ok());
    let mtime_ns = field("mtime_ns")?.and_then(|v| v.parse::<i64>().ok());
    let chunk_size = field("chunk_size")?.and_then(|v| v.parse::<u32>().ok());
    let (Some(path), Some(size), Some(mtime_ns), Some(chunk_size)) =
        (path, size, mtime_ns, chunk_size)
    else {
        return Ok(None);
    };
    if chunk_size == 0 || next()?.as_deref() != Some("--") {
        return Ok(None);
    }
    let header = JournalHeader {
        path,
        size,
        mtime_ns,
        chunk_size,
    };
    let mut chunks = vec![None; header.chunk_count() as usize];
    // Lines that do not parse (a torn last line) are skipped: losing a record only costs
    // fetching that chunk again.
    while let Some(line) = next()? {
        let Some((index, hex)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(index), Ok(bytes)) = (
            index.parse::<usize>(),
            sfts_protocol::checksum::from_hex(hex, "sha256"),
        ) else {
            continue;
        };
        if let (Some(slot), Ok(digest)) = (chunks.get_mut(index), <[u8; 32]>::try_from(bytes)) {
            *slot = Some(digest);
        }
    }
    Ok(Some((header, chunks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> JournalHeader {
        JournalHeader {
            path: "a/b.bin".into(),
            size: 10,
            mtime_ns: 1_700_000_000_123_456_789,
            chunk_size: 4,
        }
    }

    #[test]
    fn chunk_geometry() {
        let h = header();
        assert_eq!(h.chunk_count(), 3);
        assert_eq!(h.chunk_range(0), (0, 4));
        assert_eq!(h.chunk_range(2), (8, 10));
        let empty = JournalHeader {
            size: 0,
            ..header()
        };
        assert_eq!(empty.chunk_count(), 0);
    }

    #[test]
    fn create_record_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(&dir.path().join("out.bin"));
        assert!(path.ends_with("out.bin.sfts-journal"));
        let mut j = Journal::create(&path, header()).unwrap();
        j.record(0, [1; 32]).unwrap();
        j.record(2, [3; 32]).unwrap();
        assert_eq!(j.confirmed_chunks(), 1);
        assert_eq!(j.confirmed_bytes(), 4);
        drop(j);
        let mut j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.header(), &header());
        assert_eq!(j.chunk(0), Some([1; 32]));
        assert_eq!(j.chunk(1), None);
        assert_eq!(j.chunk(2), Some([3; 32]));
        j.record(1, [2; 32]).unwrap();
        assert_eq!(j.confirmed_bytes(), 10);
        // A repair appends again; the last line wins.
        j.record(0, [9; 32]).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.chunk(0), Some([9; 32]));
        assert_eq!(j.confirmed_chunks(), 3);
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::create(&path, header()).unwrap();
        j.record(0, [1; 32]).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"1 abcd").unwrap();
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.confirmed_chunks(), 1);
    }

    #[test]
    fn missing_or_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::open(&dir.path().join("none")).unwrap().is_none());
        let path = dir.path().join("foreign");
        std::fs::write(&path, b"something else\n").unwrap();
        assert!(Journal::open(&path).unwrap().is_none());
        std::fs::write(&path, format!("{MAGIC_LINE}\npath x\nsize nope\n")).unwrap();
        assert!(Journal::open(&path).unwrap().is_none());
    }
}
