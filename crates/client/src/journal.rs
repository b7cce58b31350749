//! The resume journal kept beside a partial download (`OUT.sfts-journal` next to
//! `OUT.sfts-part`).
//!
//! It is a small, append-only text file, readable with `cat`:
//!
//! ```text
//! sfts-journal 2
//! path path/to/file.bin
//! size 67108864
//! mtime_ns 1763797036000000000
//! chunk_size 1048576
//! chunk_digest xxh3-128
//! --
//! 0 3f0c…(32 hex digits: XXH3-128 of chunk 0 as written to the partial file) 02d1a7…
//! 1 9a11… 02c4f0…
//! ```
//!
//! A download that stops cleanly appends a last line `sealed <boot id> <dev> <inode> <size>
//! <ctime s> <ctime ns>` describing the partial file as it left it ([`crate::seal`]); a resume
//! that finds the file still so does not read it back. A running SHA-256 or MD5 download
//! also writes such a line after every chunk line, in the same `write`, where the file
//! system allows it and every journaled byte is trusted, so a run killed between two writes
//! leaves a seal too ([`crate::seal::Watch`]). Any line after it voids it, and a run
//! that resumes appends `unsealed` before it changes the file (releases before the seal skip
//! both as lines they do not understand).
//!
//! A chunk line is appended (one `write`, no buffering) after the chunk's bytes were written
//! to the partial file, so a crash or `kill -9` loses at most the chunk in flight. Its optional
//! third field is the whole-file hash state after that chunk (see
//! [`sfts_protocol::MultiHasher::save`]; for SHA-256 and MD5 downloads), so a resume continues the
//! whole-file digest from there instead of hashing everything it already has again. On resume
//! each recorded chunk is still read back and checked against its line (on helper threads,
//! while the rest downloads; not when the file is still as sealed); a chunk that no longer
//! matches is fetched again. A torn last line (a crash in the middle of the append) is
//! ignored. A repaired chunk is appended again; the last line for an index wins.
//!
//! The chunk digest is XXH3-128 ([`crate::chunk_check`] says why a non-cryptographic one).
//! Journals of earlier releases are still resumed: version 2 with `chunk_digest blake3`,
//! version 1 (no `chunk_digest` line, SHA-256 chunk digests, no states). An earlier release
//! that finds `chunk_digest xxh3-128` does not know it and starts the download over.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::chunk_check::{self, ChunkCheck};
use crate::seal::Seal;
use sfts_protocol::checksum::{from_hex, to_hex};

const MAGIC_LINE: &str = "sfts-journal 2";
const MAGIC_LINE_V1: &str = "sfts-journal 1";

/// One chunk's entry: its digest and, when known, the whole-file hash state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    digest: [u8; 32],
    state: Option<Vec<u8>>,
}

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
    /// How the chunk digests were computed.
    chunk_digest: ChunkCheck,
    chunks: Vec<Option<Entry>>,
    /// The seal on the last line, if it is one.
    seal: Option<Seal>,
}

/// The first word of a seal line.
const SEAL_WORD: &str = "sealed ";

/// What a download's journal adds to its target's name.
pub const JOURNAL_SUFFIX: &str = ".sfts-journal";

/// The journal path for a download target.
pub fn journal_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(JOURNAL_SUFFIX);
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
            "{MAGIC_LINE}\npath {}\nsize {}\nmtime_ns {}\nchunk_size {}\nchunk_digest {}\n--\n",
            header.path.replace('\n', " "),
            header.size,
            header.mtime_ns,
            header.chunk_size,
            chunk_check::NEW.name(),
        );
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        let count = header.chunk_count() as usize;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            header,
            chunk_digest: chunk_check::NEW,
            chunks: vec![None; count],
            seal: None,
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
        let Some((header, chunk_digest, chunks, seal)) = parse(BufReader::new(file))? else {
            return Ok(None);
        };
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Some(Journal {
            path: path.to_path_buf(),
            file,
            header,
            chunk_digest,
            chunks,
            seal,
        }))
    }

    /// The seal the last run left, if nothing was recorded after it.
    pub fn seal(&self) -> Option<&Seal> {
        self.seal.as_ref()
    }

    /// Voids the seal before a run changes the partial file: appends a line after it.
    pub fn unseal(&mut self) -> io::Result<()> {
        if self.seal.take().is_some() {
            self.file.write_all(b"unsealed\n")?;
        }
        Ok(())
    }

    /// Appends `seal` (the partial file as it is now, synced). One `write`, like a chunk line.
    pub fn record_seal(&mut self, seal: Seal) -> io::Result<()> {
        self.file.write_all(seal_line(&seal).as_bytes())?;
        self.seal = Some(seal);
        Ok(())
    }

    /// The header.
    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the chunk digests are computed (XXH3-128; BLAKE3 or SHA-256 in journals of
    /// earlier releases).
    pub fn chunk_digest(&self) -> ChunkCheck {
        self.chunk_digest
    }

    /// The recorded digest of chunk `index`.
    pub fn chunk(&self, index: u64) -> Option<[u8; 32]> {
        self.entry(index).map(|e| e.digest)
    }

    /// The whole-file hash state recorded after chunk `index`, if any.
    pub fn state_after(&self, index: u64) -> Option<&[u8]> {
        self.entry(index).and_then(|e| e.state.as_deref())
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        self.chunks.get(index as usize).and_then(Option::as_ref)
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

    /// Records that chunk `index` now holds bytes with this digest (of [`Journal::chunk_digest`])
    /// and, if given, that the whole-file hash state after it is `state`. One `write` call, so
    /// a crash leaves either the whole line or a torn one that `open` ignores.
    pub fn record(
        &mut self,
        index: u64,
        digest: [u8; 32],
        state: Option<Vec<u8>>,
    ) -> io::Result<()> {
        self.record_sealed(index, digest, state, None)
    }

    /// [`Journal::record`], followed in the same `write` by `seal`, if given: the partial file
    /// as it was once the chunk's bytes were in it ([`crate::seal::Watch`]).
    pub fn record_sealed(
        &mut self,
        index: u64,
        digest: [u8; 32],
        state: Option<Vec<u8>>,
        seal: Option<Seal>,
    ) -> io::Result<()> {
        let Some(slot) = self.chunks.get_mut(index as usize) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("chunk {index} is beyond the end of the file"),
            ));
        };
        let hex = to_hex(&digest[..self.chunk_digest.digest_len()]);
        let mut line = match &state {
            Some(state) => format!("{index} {hex} {}\n", to_hex(state)),
            None => format!("{index} {hex}\n"),
        };
        if let Some(seal) = &seal {
            line.push_str(&seal_line(seal));
        }
        self.file.write_all(line.as_bytes())?;
        *slot = Some(Entry { digest, state });
        self.seal = seal;
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

/// The journal line of `seal`.
fn seal_line(seal: &Seal) -> String {
    format!("{SEAL_WORD}{}\n", seal.to_fields())
}

type Parsed = (JournalHeader, ChunkCheck, Vec<Option<Entry>>, Option<Seal>);

fn parse(reader: impl BufRead) -> io::Result<Option<Parsed>> {
    let mut lines = reader.lines();
    let mut next = || lines.next().transpose();
    let version = match next()?.as_deref() {
        Some(MAGIC_LINE) => 2,
        Some(MAGIC_LINE_V1) => 1,
        _ => return Ok(None),
    };
    let mut field = |name: &str| -> io::Result<Option<String>> {
        Ok(next()?.and_then(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned)))
    };
    let path = field("path")?;
    let size = field("size")?.and_then(|v| v.parse::<u64>().ok());
    let mtime_ns = field("mtime_ns")?.and_then(|v| v.parse::<i64>().ok());
    let chunk_size = field("chunk_size")?.and_then(|v| v.parse::<u32>().ok());
    let chunk_digest = if version == 1 {
        Some(ChunkCheck::Sha256)
    } else {
        field("chunk_digest")?.and_then(|v| ChunkCheck::from_name(&v))
    };
    let Some(chunk_digest) = chunk_digest else {
        return Ok(None);
    };
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
    let mut seal = None;
    // Lines that do not parse (a torn last line) are skipped: losing a record only costs
    // fetching that chunk again.
    while let Some(line) = next()? {
        // A seal holds only as the last line.
        seal = line.strip_prefix(SEAL_WORD).and_then(Seal::from_fields);
        if seal.is_some() {
            continue;
        }
        let mut fields = line.split(' ');
        let (Some(index), Some(hex), state, None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(index), Ok(bytes)) = (index.parse::<usize>(), from_hex(hex, chunk_digest.name()))
        else {
            continue;
        };
        if bytes.len() != chunk_digest.digest_len() {
            continue;
        }
        let mut digest = [0u8; 32];
        digest[..bytes.len()].copy_from_slice(&bytes);
        let state = match state.map(|s| from_hex(s, "hash state")) {
            None => None,
            Some(Ok(state)) => Some(state),
            Some(Err(_)) => continue,
        };
        if let Some(slot) = chunks.get_mut(index) {
            *slot = Some(Entry { digest, state });
        }
    }
    Ok(Some((header, chunk_digest, chunks, seal)))
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
        let d = |n: u8| chunk_check::NEW.of(&[n; 4]);
        let mut j = Journal::create(&path, header()).unwrap();
        j.record(0, d(1), None).unwrap();
        j.record(2, d(3), Some(vec![2, 0xab])).unwrap();
        assert_eq!(j.confirmed_chunks(), 1);
        assert_eq!(j.confirmed_bytes(), 4);
        drop(j);
        let mut j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.header(), &header());
        assert_eq!(j.chunk(0), Some(d(1)));
        assert_eq!(j.chunk(1), None);
        assert_eq!(j.chunk(2), Some(d(3)));
        assert_eq!(j.chunk_digest(), ChunkCheck::Xxh3);
        assert_eq!(j.state_after(0), None);
        assert_eq!(j.state_after(2), Some(&[2u8, 0xab][..]));
        j.record(1, d(2), None).unwrap();
        assert_eq!(j.confirmed_bytes(), 10);
        // A repair appends again; the last line wins.
        j.record(0, d(9), None).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.chunk(0), Some(d(9)));
        assert_eq!(j.confirmed_chunks(), 3);
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::create(&path, header()).unwrap();
        j.record(0, [1; 32], None).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"1 abcd").unwrap();
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.confirmed_chunks(), 1);
    }

    #[test]
    fn a_torn_hash_state_is_not_a_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::create(&path, header()).unwrap();
        j.record(0, [1; 32], Some(vec![2, 3, 4])).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        // The crash cut the line inside the state's hex.
        f.write_all(format!("1 {} 0203f", to_hex(&[5; 16])).as_bytes())
            .unwrap();
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.state_after(0), Some(&[2u8, 3, 4][..]));
        assert_eq!(j.chunk(1), None);
        assert_eq!(j.confirmed_chunks(), 1);
    }

    /// A journal of `header()` written by hand: the magic line, `extra` header lines, the
    /// chunk lines.
    fn by_hand(dir: &Path, magic: &str, extra: &str, lines: &str) -> PathBuf {
        let path = dir.join("j");
        let text = format!(
            "{magic}\npath a/b.bin\nsize 10\nmtime_ns 1700000000123456789\nchunk_size 4\n\
             {extra}--\n{lines}"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn version_1_journals_still_resume_with_sha256_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let lines = format!("0 {}\n", to_hex(&[7; 32]));
        let path = by_hand(dir.path(), MAGIC_LINE_V1, "", &lines);
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.header(), &header());
        assert_eq!(j.chunk_digest(), ChunkCheck::Sha256);
        assert_eq!(j.chunk(0), Some([7; 32]));
        assert_eq!(j.state_after(0), None);
    }

    #[test]
    fn a_new_journal_names_its_chunk_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        drop(Journal::create(&path, header()).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("sfts-journal 2\n"), "{text}");
        assert!(text.contains("\nchunk_digest xxh3-128\n--\n"), "{text}");
        // A version 2 journal with an unknown chunk digest is not understood.
        std::fs::write(&path, text.replace("xxh3-128", "crc32")).unwrap();
        assert!(Journal::open(&path).unwrap().is_none());
    }

    #[test]
    fn blake3_journals_of_earlier_releases_still_resume() {
        let dir = tempfile::tempdir().unwrap();
        // Chunk 1's line has a digest of the wrong length (XXH3's): not a record.
        let lines = format!("0 {} 0a0b\n1 {}\n", to_hex(&[7; 32]), to_hex(&[8; 16]));
        let path = by_hand(dir.path(), MAGIC_LINE, "chunk_digest blake3\n", &lines);
        let mut j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.chunk_digest(), ChunkCheck::Blake3);
        assert_eq!(j.chunk(0), Some([7; 32]));
        assert_eq!(j.state_after(0), Some(&[0x0a, 0x0b][..]));
        assert_eq!(j.chunk(1), None);
        // Records appended to it stay BLAKE3-sized.
        j.record(1, [9; 32], None).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.chunk(1), Some([9; 32]));
    }

    fn a_seal() -> Seal {
        Seal {
            boot: "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6".into(),
            dev: 1,
            ino: 2,
            size: 10,
            ctime: (3, 4),
        }
    }

    #[test]
    fn a_seal_holds_only_as_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::create(&path, header()).unwrap();
        j.record(0, [1; 32], None).unwrap();
        assert!(j.seal().is_none());
        j.record_seal(a_seal()).unwrap();
        assert_eq!(j.seal(), Some(&a_seal()));
        drop(j);
        let mut j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.seal(), Some(&a_seal()));
        assert_eq!(j.confirmed_chunks(), 1);
        // A later run voids it before it changes the file.
        j.unseal().unwrap();
        assert!(j.seal().is_none());
        drop(j);
        let mut j = Journal::open(&path).unwrap().unwrap();
        assert!(j.seal().is_none());
        j.record_seal(a_seal()).unwrap();
        // A chunk recorded after it voids it too.
        j.record(1, [2; 32], None).unwrap();
        assert!(j.seal().is_none());
        drop(j);
        let j = Journal::open(&path).unwrap().unwrap();
        assert!(j.seal().is_none());
        assert_eq!(j.confirmed_chunks(), 2);
        // Nor does a torn line after it (a run that crashed while appending).
        let mut j = Journal::open(&path).unwrap().unwrap();
        j.record_seal(a_seal()).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2 ab").unwrap();
        assert!(Journal::open(&path).unwrap().unwrap().seal().is_none());
    }

    #[test]
    fn a_chunk_recorded_with_a_seal_is_sealed_until_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::create(&path, header()).unwrap();
        j.record_sealed(0, [1; 32], None, Some(a_seal())).unwrap();
        assert_eq!(j.seal(), Some(&a_seal()));
        let text = std::fs::read_to_string(&path).unwrap();
        let last: Vec<&str> = text.lines().rev().take(2).collect();
        assert!(last[0].starts_with("sealed "), "{text}");
        assert!(last[1].starts_with("0 "), "{text}");
        let reopened = Journal::open(&path).unwrap().unwrap();
        assert_eq!(reopened.seal(), Some(&a_seal()));
        assert_eq!(reopened.confirmed_chunks(), 1);
        // A chunk recorded without one voids it.
        let mut j = reopened;
        j.record(1, [2; 32], None).unwrap();
        assert!(j.seal().is_none());
        assert!(Journal::open(&path).unwrap().unwrap().seal().is_none());
    }

    #[test]
    fn a_seal_line_is_no_chunk_line_for_earlier_parsers() {
        // The fields of a chunk line are one index, one digest and an optional state: the
        // seal's seven fields fail that pattern, so releases before the seal skip the line.
        let line = format!("{SEAL_WORD}{}", a_seal().to_fields());
        assert_eq!(line.split(' ').count(), 7);
        let dir = tempfile::tempdir().unwrap();
        let lines = format!("0 {}\n{line}\n", to_hex(&[7; 16]));
        let path = by_hand(dir.path(), MAGIC_LINE, "chunk_digest xxh3-128\n", &lines);
        let j = Journal::open(&path).unwrap().unwrap();
        assert_eq!(j.confirmed_chunks(), 1);
        assert_eq!(j.seal(), Some(&a_seal()));
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
