//! Hostile input against a live server: random bytes, truncated frames, declared lengths at and
//! beyond every maximum (up to `u32::MAX`, and `u64::MAX` in fields), unknown message types,
//! messages out of order, the path escape table through `Get`, `Stat`, `List` and the upload
//! requests, frames declared at their maximum and never sent, 500 half-open connections (under
//! and over the connection limit) and a client that stops reading mid-transfer.
//!
//! After every case ([`Target::assert_healthy`]): a normal `sfts-client get` still succeeds and
//! is byte-identical, the server's resident memory (`VmRSS`) stays below [`RSS_LIMIT_KIB`], every
//! worker thread of a hostile connection has ended, nothing was written inside the root or beside
//! it, and the secret beside the root never appeared in any reply (every reply is checked as it
//! arrives). Every loop is bounded and every wait has a deadline; the server's `--timeout` is
//! [`TIMEOUT_SECS`] so that dropping idle and stalled clients takes seconds, not minutes.
//!
//! Uploads and listings may not be served yet: the cases that send `List`, `PutBegin`,
//! `PutChunk`, `PutCommit`, `PutAbort` or `Mkdir` check whatever the server announced. Without
//! the capability they only require a refusal (and print a `NOTE:` line); with it they check
//! the answers the protocol specifies.

use crate::support::*;
use sfts_protocol::frame::{self, tag, MAX_CONTROL_LEN, MAX_DATA_LEN, MAX_PUT_CHUNK_LEN};
use sfts_protocol::{
    Algorithm, Capabilities, Digest, DigestSet, ErrorCode, FileHeader, FileVersion, GetRequest,
    Message, MultiHasher, PutBegin, PutChunk, RejectReason, MAGIC, MAX_PATH_LEN, PROTOCOL_VERSION,
    TO_END,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Written beside the served root; no reply may ever contain it.
const SECRET: &[u8] = b"HOSTILE-SUITE-SECRET-BESIDE-THE-ROOT";

/// Bound on the server's resident memory after (and during) every case.
const RSS_LIMIT_KIB: u64 = 200 * 1024;

/// The server's `--timeout` (idle, stalled and handshake limit) in most of these tests.
const TIMEOUT_SECS: u64 = 2;

/// How much later than its deadline the server may drop a client (scheduling, the 0.5 s
/// `linger_close`, a debug build under load).
const SLACK: Duration = Duration::from_secs(4);

/// How long a client that stopped reading may still hold its worker: the socket's write
/// timeout restarts whenever a write makes some progress, so a stalled transfer can take two
/// timeouts (the write that fills the buffers, then the one that times out) and more.
const STALL_LIMIT: Duration = Duration::from_secs(4 * TIMEOUT_SECS + 4);

/// Size of the file the normal client fetches after every case.
const GOOD_LEN: usize = 256 * 1024 + 7;

/// A hostile client announces every capability bit, known or not.
const ALL_CAPS: u64 = u64::MAX;

// ---------------------------------------------------------------------------------------------
// The server under attack and the checks after every case.

/// One entry of a directory tree snapshot: path, kind, length, modification time.
type Entry = (String, char, u64, Option<std::time::SystemTime>);

/// A server over a root holding `good.bin`, `ok.txt`, `sub/` and three symbolic links, with
/// `secret.txt` beside the root.
struct Target {
    server: Server,
    good: Vec<u8>,
    /// The folder holding the root, the secret, the server's logs and state.
    outside: PathBuf,
    /// The snapshot every case is compared with.
    before: Vec<Entry>,
    /// Where the normal client runs.
    work: tempfile::TempDir,
    /// The server's thread count when no client is connected.
    idle_threads: u64,
}

/// `--allow-upload` when the server has it: hostile clients then meet the most exposed
/// configuration (uploads and directory creation allowed).
fn allow_upload() -> Option<&'static str> {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let has = *HAS.get_or_init(|| {
        let help = std::process::Command::new(bin("sfts-server"))
            .arg("--help")
            .output()
            .expect("run sfts-server --help");
        String::from_utf8_lossy(&help.stdout).contains("--allow-upload")
    });
    has.then_some("--allow-upload")
}

impl Target {
    fn start(extra: &[&str]) -> Target {
        let has_timeout = extra.contains(&"--timeout");
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !has_timeout {
            args.extend(["--timeout".into(), TIMEOUT_SECS.to_string()]);
        }
        args.extend(allow_upload().map(String::from));
        let server = Server::start_with(ServerOpts {
            extra: args,
            ..ServerOpts::default()
        });
        let root = server.root.clone();
        let outside = root.parent().unwrap().to_path_buf();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        let good = write_random(&root, "good.bin", GOOD_LEN, 0x5eed);
        std::fs::write(root.join("ok.txt"), b"fine").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink(outside.join("secret.txt"), root.join("link")).unwrap();
        symlink(&outside, root.join("dirlink")).unwrap();
        symlink(root.join("ok.txt"), root.join("inner")).unwrap();
        let mut t = Target {
            before: Vec::new(),
            server,
            good,
            outside,
            work: tempfile::tempdir().unwrap(),
            idle_threads: 0,
        };
        t.before = t.snapshot();
        // One normal fetch first, so lazily started server threads are counted as idle ones.
        t.fetch_good("start");
        std::thread::sleep(Duration::from_millis(200));
        t.idle_threads = status_field(t.pid(), "Threads:");
        t.assert_healthy("start");
        t
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// A large sparse file in the root (part of the snapshot from now on).
    fn add_sparse_file(&mut self, name: &str, len: u64) {
        let f = std::fs::File::create(self.server.root.join(name)).unwrap();
        f.set_len(len).unwrap();
        self.before = self.snapshot();
    }

    /// The tree beside and inside the root, without the server's logs and state.
    fn snapshot(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut stack = vec![self.outside.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = e.path();
                let rel = path.strip_prefix(&self.outside).unwrap().to_path_buf();
                if dir == self.outside && (rel == Path::new("logs") || rel == Path::new("state")) {
                    continue;
                }
                let m = std::fs::symlink_metadata(&path).unwrap();
                let kind = if m.is_symlink() {
                    'l'
                } else if m.is_dir() {
                    stack.push(path.clone());
                    'd'
                } else {
                    'f'
                };
                let mtime = if m.is_dir() { None } else { m.modified().ok() };
                out.push((rel.to_string_lossy().into_owned(), kind, m.len(), mtime));
            }
        }
        out.sort();
        out
    }

    /// A normal client fetches `good.bin` and gets exactly its bytes.
    fn fetch_good(&self, case: &str) {
        let out = run(client(self.work.path()).args([
            "get",
            &self.server.target(),
            "good.bin",
            "-o",
            "-",
            "--retries",
            "2",
        ]));
        assert!(
            out.status.success(),
            "after {case}: a normal client failed ({:?}): {}",
            out.status,
            stderr(&out)
        );
        assert!(
            out.stdout == self.good,
            "after {case}: a normal client got {} bytes that differ from the file",
            out.stdout.len()
        );
    }

    fn assert_memory_bounded(&self, case: &str) {
        let rss = status_field(self.pid(), "VmRSS:");
        assert!(
            rss < RSS_LIMIT_KIB,
            "after {case}: the server's resident memory is {rss} KiB (limit {RSS_LIMIT_KIB} KiB)"
        );
    }

    /// The checks after every case.
    fn assert_healthy(&self, case: &str) {
        let pid = self.pid();
        let threads_gone = wait_until(Duration::from_secs(TIMEOUT_SECS) + SLACK, || {
            status_field(pid, "Threads:") <= self.idle_threads
        });
        assert!(
            threads_gone,
            "after {case}: the server still runs {} threads ({} when idle): a hostile \
             connection was not dropped",
            status_field(pid, "Threads:"),
            self.idle_threads
        );
        self.fetch_good(case);
        self.assert_memory_bounded(case);
        assert_eq!(
            self.snapshot(),
            self.before,
            "after {case}: something was written inside or beside the served root"
        );
        assert_eq!(
            std::fs::read(self.outside.join("secret.txt")).unwrap(),
            SECRET,
            "after {case}: the secret beside the root changed"
        );
        eprintln!("hostile: {case}: ok");
    }
}

/// A number from `/proc/<pid>/status` (`VmRSS:` in KiB, `Threads:`).
fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------------------------
// Hostile connections.

/// What came back on one connection.
struct Reply {
    bytes: Vec<u8>,
    /// The server closed the connection (end of stream or reset) before the deadline.
    closed: bool,
}

/// Connects, sends `bytes` (all at once), closes the sending side when `half_close`, and reads
/// until the server closes the connection or `limit` passes.
fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    let mut s = TcpStream::connect(addr).unwrap();
    // The server may refuse and close before it has read everything: a failed write is fine.
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    read_until_closed(&mut s, deadline)
}

/// Reads until the peer closes the connection or `deadline` passes (at most 64 MiB).
fn read_until_closed(s: &mut TcpStream, deadline: Instant) -> Reply {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while bytes.len() < 64 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(250))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return checked(bytes, true),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            // A reset: the server dropped the connection.
            Err(_) => return checked(bytes, true),
        }
    }
    checked(bytes, false)
}

/// Every reply passes through here: the secret beside the root must never be in it.
fn checked(bytes: Vec<u8>, closed: bool) -> Reply {
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET),
        "a reply contained the secret file from outside the root"
    );
    Reply { bytes, closed }
}

/// A native frame as received, owned.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Welcome {
        version: u16,
        capabilities: u64,
    },
    Header(FileHeader),
    Data(Vec<u8>),
    Trailer(Vec<Digest>),
    Error(ErrorCode, String),
    Rejected(RejectReason),
    /// Any other message, by name.
    Other(&'static str),
    /// Bytes that are not a frame.
    Garbage(String),
}

/// The whole frames of a native reply (a cut-off last frame is left out).
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match Message::decode(&bytes[at..]) {
            Ok(Some((m, n))) => {
                at += n;
                out.push(match m {
                    Message::Welcome {
                        version,
                        capabilities,
                        ..
                    } => Frame::Welcome {
                        version,
                        capabilities: capabilities.0,
                    },
                    Message::FileHeader(h) => Frame::Header(h),
                    Message::Data(d) => Frame::Data(d.to_vec()),
                    Message::Trailer { digests } => Frame::Trailer(digests),
                    Message::Error { code, message } => Frame::Error(code, message),
                    Message::ChunkRejected { reason, .. } => Frame::Rejected(reason),
                    other => Frame::Other(other.name()),
                });
            }
            Ok(None) => break,
            Err(e) => {
                out.push(Frame::Garbage(e.to_string()));
                break;
            }
        }
    }
    out
}

fn enc(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

/// The magic and a `Hello` announcing every capability.
fn hello() -> Vec<u8> {
    hello_with(PROTOCOL_VERSION, ALL_CAPS)
}

fn hello_with(version: u16, capabilities: u64) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    Message::Hello {
        version,
        capabilities: Capabilities(capabilities),
        agent: "hostile-suite".into(),
    }
    .encode(&mut out);
    out
}

/// The magic, a `Hello`, then `messages`, as one burst.
fn session_bytes(messages: &[Message<'_>]) -> Vec<u8> {
    let mut out = hello();
    for m in messages {
        m.encode(&mut out);
    }
    out
}

fn get(path: &str) -> Message<'static> {
    Message::Get(GetRequest::whole(
        path,
        64 * 1024,
        DigestSet::of(&[Algorithm::Sha256]),
    ))
}

/// A 5-byte frame header declaring `len` for `t`.
fn header(len: u32, t: u8) -> Vec<u8> {
    let mut h = len.to_be_bytes().to_vec();
    h.push(t);
    h
}

/// The frames after the `Welcome` every `Hello`-opened reply starts with.
fn after_welcome(case: &str, reply: &Reply) -> (u64, Vec<Frame>) {
    let mut f = frames(&reply.bytes);
    assert!(!f.is_empty(), "{case}: no Welcome");
    match f.remove(0) {
        Frame::Welcome {
            version,
            capabilities,
        } => {
            assert_eq!(version, PROTOCOL_VERSION, "{case}");
            (capabilities, f)
        }
        other => panic!("{case}: expected Welcome, got {other:?}"),
    }
}

/// The reply is exactly one `Error` (after the `Welcome` when `hello`) with one of `codes`, and
/// the server closed the connection on its own.
fn assert_refused_and_closed(case: &str, reply: &Reply, hello: bool, codes: &[ErrorCode]) {
    assert!(reply.closed, "{case}: the server kept the connection open");
    let rest = if hello {
        after_welcome(case, reply).1
    } else {
        frames(&reply.bytes)
    };
    match &rest[..] {
        [Frame::Error(code, _)] if codes.contains(code) => {}
        other => panic!("{case}: expected one Error of {codes:?}, got {other:?}"),
    }
}

/// The reply is nothing at all or one `Error`; the server closed the connection.
fn assert_silent_or_refused(case: &str, reply: &Reply, hello: bool) {
    assert!(reply.closed, "{case}: the server kept the connection open");
    let rest = if hello {
        after_welcome(case, reply).1
    } else {
        frames(&reply.bytes)
    };
    assert!(
        matches!(&rest[..], [] | [Frame::Error(..)]),
        "{case}: expected nothing or one Error, got {rest:?}"
    );
}

/// The bytes of a legacy reply: nothing, or `ERROR` and a sentence; never a file.
fn assert_legacy_refused(case: &str, reply: &Reply) {
    assert!(reply.closed, "{case}: the server kept the connection open");
    assert!(
        reply.bytes.is_empty() || reply.bytes.starts_with(b"ERROR"),
        "{case}: legacy reply {:?}",
        String::from_utf8_lossy(&reply.bytes[..reply.bytes.len().min(80)])
    );
}

/// The names and kinds in the `ListEntries` frames of a reply.
fn listed(bytes: &[u8]) -> Vec<(String, sfts_protocol::EntryKind)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((m, n))) = Message::decode(&bytes[at..]) {
        at += n;
        if let Message::ListEntries { entries } = m {
            out.extend(entries.into_iter().map(|e| (e.name, e.kind)));
        }
    }
    out
}

fn data_of(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        if let Frame::Data(d) = f {
            out.extend_from_slice(d);
        }
    }
    out
}

/// `FileHeader`, data, `Trailer` with the data's SHA-256; returns the header and the data.
fn assert_served(case: &str, frames: &[Frame]) -> (FileHeader, Vec<u8>) {
    let Some(Frame::Header(h)) = frames.first() else {
        panic!("{case}: expected a FileHeader, got {frames:?}")
    };
    let data = data_of(frames);
    assert_eq!(data.len() as u64, h.length, "{case}");
    match frames.last() {
        Some(Frame::Trailer(_)) => {}
        other => panic!("{case}: expected a Trailer at the end, got {other:?}"),
    }
    (h.clone(), data)
}

const QUICK: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The cases.

#[test]
fn random_bytes_truncated_frames_impossible_lengths_and_unknown_types() {
    let t = Target::start(&["--max-connections", "1000"]);
    let addr = t.addr();

    // 1. Random bytes, raw (the original protocol's length prefix), after the magic, and after
    // a valid Hello.
    for seed in 0..12u64 {
        let len = [1, 2, 3, 4, 5, 9, 64, 100, 1000, 4096, 65_536, 300_000][seed as usize];
        let blob = random_bytes(len, seed + 1);
        let r = exchange(addr, &blob, true, QUICK);
        assert_legacy_refused(&format!("random {len} bytes"), &r);
        let r = exchange(addr, &[&MAGIC[..], &blob].concat(), true, QUICK);
        assert_silent_or_refused(&format!("magic + random {len} bytes"), &r, false);
        let r = exchange(addr, &[hello(), blob].concat(), true, QUICK);
        assert_silent_or_refused(&format!("Hello + random {len} bytes"), &r, true);
    }
    t.assert_healthy("random bytes");

    // 2. Frames cut at every byte, the sending side then closed.
    let full = [hello(), enc(&get("good.bin"))].concat();
    let hello_len = hello().len();
    for cut in 0..full.len() {
        let r = exchange(addr, &full[..cut], true, QUICK);
        let case = format!("Hello + Get cut at byte {cut}");
        assert_silent_or_refused(&case, &r, cut >= hello_len);
    }
    let mut legacy = Vec::new();
    sfts_protocol::legacy::encode_request("good.bin", &mut legacy);
    for cut in 0..legacy.len() {
        let r = exchange(addr, &legacy[..cut], true, QUICK);
        assert_legacy_refused(&format!("legacy request cut at byte {cut}"), &r);
    }
    t.assert_healthy("truncated frames, then end of stream");

    // 3. Frames cut short and left open: the server drops them after its timeout.
    let open: Vec<(String, TcpStream)> = [
        ("half the magic".to_string(), full[..2].to_vec()),
        ("the magic alone".into(), full[..4].to_vec()),
        ("most of a Hello".into(), full[..hello_len - 3].to_vec()),
        (
            "Hello + a Get header".into(),
            full[..hello_len + 3].to_vec(),
        ),
        (
            "Hello + all of a Get but one byte".into(),
            full[..full.len() - 1].to_vec(),
        ),
        (
            "most of a legacy request".into(),
            legacy[..legacy.len() - 1].to_vec(),
        ),
    ]
    .into_iter()
    .map(|(case, bytes)| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&bytes).unwrap();
        (case, s)
    })
    .collect();
    let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS) + SLACK;
    for (case, mut s) in open {
        let r = read_until_closed(&mut s, deadline);
        assert!(
            r.closed,
            "{case}: still open {TIMEOUT_SECS} s + slack later"
        );
        assert!(
            !frames(&r.bytes)
                .iter()
                .any(|f| matches!(f, Frame::Header(_) | Frame::Data(_))),
            "{case}: data sent"
        );
    }
    t.assert_healthy("truncated frames left open");

    // 4. Declared lengths: zero, at each maximum (nothing follows), just above, u32::MAX;
    // before and after the Hello.
    let mut lengths: Vec<(u8, u32)> = [
        (tag::DATA, MAX_DATA_LEN),
        (tag::PUT_CHUNK, MAX_PUT_CHUNK_LEN),
        (tag::GET, MAX_CONTROL_LEN),
        (tag::HELLO, MAX_CONTROL_LEN),
    ]
    .into_iter()
    .flat_map(|(t, max)| [(t, u32::MAX), (t, max + 1), (t, max)])
    .collect();
    lengths.extend([
        (tag::LIST_ENTRIES, u32::MAX),
        (tag::ERROR, MAX_CONTROL_LEN + 1),
        (0x55, u32::MAX),
        (tag::GET, 0),
        (tag::DATA, 0),
    ]);
    for after_hello in [false, true] {
        for &(frame_tag, len) in &lengths {
            let prefix = if after_hello { hello() } else { MAGIC.to_vec() };
            let case = format!(
                "length {len} for tag {frame_tag:#04x}{}",
                if after_hello { " after Hello" } else { "" }
            );
            let over = frame::max_len(frame_tag).map_or(true, |max| len == 0 || len > max);
            if over {
                // Refused from the five header bytes alone, without waiting for more.
                let r = exchange(
                    addr,
                    &[prefix, header(len, frame_tag)].concat(),
                    false,
                    QUICK,
                );
                assert_refused_and_closed(&case, &r, after_hello, &[ErrorCode::BadRequest]);
            } else {
                let r = exchange(
                    addr,
                    &[prefix, header(len, frame_tag), vec![7; 100]].concat(),
                    true,
                    QUICK,
                );
                assert_silent_or_refused(&case, &r, after_hello);
            }
        }
    }
    for (case, bytes) in [
        ("legacy length u32::MAX", vec![0xff, 0xff, 0xff, 0xff, b'a']),
        ("legacy length 4,097", vec![0, 0, 0x10, 0x01, b'a']),
        ("legacy length 0", vec![0, 0, 0, 0]),
    ] {
        let r = exchange(addr, &bytes, false, QUICK);
        assert_legacy_refused(case, &r);
        assert!(!r.bytes.is_empty(), "{case}: no ERROR sentence");
    }
    let mut at_max = (MAX_PATH_LEN as u32).to_be_bytes().to_vec();
    at_max.extend(std::iter::repeat_n(b'a', MAX_PATH_LEN));
    assert_legacy_refused(
        "legacy name of 4,096 bytes",
        &exchange(addr, &at_max, true, QUICK),
    );
    t.assert_healthy("declared lengths");

    // 5. Every unknown message type after the Hello, and some before it.
    let unknown: Vec<u8> = (0..=255u8).filter(|x| !tag::ALL.contains(x)).collect();
    for &x in &unknown {
        let bytes = [hello(), header(3, x), vec![1, 2]].concat();
        let r = exchange(addr, &bytes, false, QUICK);
        let case = format!("unknown type {x:#04x}");
        assert_refused_and_closed(&case, &r, true, &[ErrorCode::BadRequest]);
    }
    for &x in unknown.iter().step_by(16) {
        let bytes = [MAGIC.to_vec(), header(1, x)].concat();
        let r = exchange(addr, &bytes, false, QUICK);
        let case = format!("unknown type {x:#04x} instead of Hello");
        assert_refused_and_closed(&case, &r, false, &[ErrorCode::BadRequest]);
    }
    t.assert_healthy("unknown message types");
}

#[test]
fn messages_out_of_order_and_extreme_field_values() {
    let t = Target::start(&["--max-connections", "1000"]);
    let addr = t.addr();
    let put_begin = PutBegin::new(
        1,
        "new.bin",
        3,
        0,
        4096,
        &[Digest::new(Algorithm::Sha256, vec![0xaa; 32]).unwrap()],
    )
    .unwrap();

    // 1. Requests before the Hello.
    for m in [
        get("good.bin"),
        Message::Stat {
            path: "good.bin".into(),
        },
        Message::List {
            path: ".".into(),
            recursive: true,
        },
        Message::PutBegin(put_begin.clone()),
        Message::Data(b"xx"),
    ] {
        let bytes = [MAGIC.to_vec(), enc(&m)].concat();
        let r = exchange(addr, &bytes, false, QUICK);
        let case = format!("{} before Hello", m.name());
        assert_refused_and_closed(&case, &r, false, &[ErrorCode::BadRequest]);
    }
    // A version below the minimum.
    let r = exchange(addr, &hello_with(0, ALL_CAPS), false, QUICK);
    assert_refused_and_closed(
        "Hello version 0",
        &r,
        false,
        &[ErrorCode::UnsupportedVersion],
    );
    t.assert_healthy("requests before Hello");

    // 2. Messages a client never sends, after the Hello: a second Hello, Data, and every
    // server-to-client message.
    let server_only = vec![
        Message::Hello {
            version: 1,
            capabilities: Capabilities(ALL_CAPS),
            agent: "again".into(),
        },
        Message::Data(b"unasked data"),
        Message::Welcome {
            version: 1,
            capabilities: Capabilities(1),
            server: "me".into(),
        },
        Message::FileHeader(FileHeader {
            size: 1,
            offset: 0,
            length: 1,
            mtime_ns: 0,
            chunk_size: 4096,
        }),
        Message::Trailer { digests: vec![] },
        Message::FileInfo(sfts_protocol::FileInfo {
            kind: sfts_protocol::FileKind::File,
            size: 1,
            mtime_ns: 0,
            digests: vec![],
        }),
        Message::ListEntries { entries: vec![] },
        Message::ListEnd {
            total: 0,
            truncated: false,
        },
        Message::PutReady(sfts_protocol::PutReady {
            id: 1,
            chunk_size: 4096,
            have: sfts_protocol::ChunkRanges::new(),
        }),
        Message::ChunkAck { id: 1, index: 0 },
        Message::PutDone {
            id: 1,
            digests: vec![],
        },
        Message::PutAborted { id: 1 },
        Message::AuthOk {
            user: "root".into(),
        },
        Message::Error {
            code: ErrorCode::Internal,
            message: "client says no".into(),
        },
    ];
    for m in &server_only {
        let r = exchange(addr, &session_bytes(std::slice::from_ref(m)), false, QUICK);
        let case = format!("{} from the client", m.name());
        assert_refused_and_closed(&case, &r, true, &[ErrorCode::BadRequest]);
    }
    t.assert_healthy("server messages sent by a client");

    // 3. Upload messages without an open upload. With UPLOAD the protocol says: PutChunk gets
    // ChunkRejected{no-such-upload}, PutCommit Error{no-such-upload}, PutAbort PutAborted.
    let cases: Vec<(Message<'_>, &str)> = vec![
        (
            Message::PutChunk(PutChunk::new(9, 0, b"abc")),
            "ChunkRejected",
        ),
        (Message::PutCommit { id: 9 }, "Error{no-such-upload}"),
        (Message::PutAbort { id: 9 }, "PutAborted"),
    ];
    for (m, spec) in cases {
        let r = exchange(addr, &session_bytes(std::slice::from_ref(&m)), true, QUICK);
        let case = format!("{} without PutBegin", m.name());
        let (caps, rest) = after_welcome(&case, &r);
        assert!(
            r.closed,
            "{case}: the session did not end with the client's"
        );
        if Capabilities(caps).has(Capabilities::UPLOAD) {
            let ok = match (&m, &rest[..]) {
                (Message::PutChunk(_), [Frame::Rejected(RejectReason::NoSuchUpload)]) => true,
                (Message::PutCommit { .. }, [Frame::Error(ErrorCode::NoSuchUpload, _)]) => true,
                (Message::PutAbort { .. }, [Frame::Other("PutAborted")]) => true,
                // A read-only server may refuse every upload message outright.
                (_, [Frame::Error(ErrorCode::ReadOnly, _)]) => true,
                _ => false,
            };
            assert!(ok, "{case}: expected {spec}, got {rest:?}");
        } else {
            eprintln!(
                "NOTE: {case}: the server does not announce UPLOAD (not implemented yet); \
                 only the refusal was checked, not the {spec} the protocol specifies"
            );
            assert!(
                matches!(&rest[..], [Frame::Error(..)]),
                "{case}: expected a refusal, got {rest:?}"
            );
        }
    }
    t.assert_healthy("upload messages without an upload");

    // 4. An upload fed bad chunks, committed incomplete, then aborted: nothing is published and
    // the abort removes what was staged. Then an upload to a name outside the root with its
    // chunk and commit pipelined behind it.
    let abc = sfts_protocol::checksum::sha256(b"abc");
    let begin = PutBegin::new(
        1,
        "new.bin",
        3,
        0,
        4096,
        &[Digest::new(Algorithm::Sha256, abc.to_vec()).unwrap()],
    )
    .unwrap();
    let messages = [
        Message::PutBegin(begin.clone()),
        Message::PutChunk(PutChunk {
            id: 1,
            index: 0,
            sha256: [0; 32],
            data: b"abc",
        }),
        Message::PutChunk(PutChunk::new(1, 5, b"abc")),
        Message::PutChunk(PutChunk::new(1, 0, b"ab")),
        Message::PutChunk(PutChunk::new(2, 0, b"abc")),
        Message::PutCommit { id: 1 },
        Message::PutAbort { id: 1 },
    ];
    let r = exchange(addr, &session_bytes(&messages), true, QUICK);
    let (caps, rest) = after_welcome("bad chunks", &r);
    if Capabilities(caps).has(Capabilities::UPLOAD) && allow_upload().is_some() {
        use RejectReason::*;
        let want = [
            Frame::Other("PutReady"),
            Frame::Rejected(DigestMismatch),
            Frame::Rejected(BadChunk),
            Frame::Rejected(BadChunk),
            Frame::Rejected(NoSuchUpload),
        ];
        assert_eq!(
            &rest[..want.len().min(rest.len())],
            &want[..],
            "bad chunks: {rest:?}"
        );
        assert!(
            matches!(
                &rest[want.len()..],
                [
                    Frame::Error(ErrorCode::Incomplete, _),
                    Frame::Other("PutAborted")
                ]
            ),
            "bad chunks: {rest:?}"
        );
        let evil = PutBegin {
            path: "../evil.bin".into(),
            ..begin
        };
        let messages = [
            Message::PutBegin(evil),
            Message::PutChunk(PutChunk::new(1, 0, b"abc")),
            Message::PutCommit { id: 1 },
        ];
        let r = exchange(addr, &session_bytes(&messages), true, QUICK);
        let (_, rest) = after_welcome("pipelined upload outside the root", &r);
        assert!(
            matches!(
                &rest[..],
                [
                    Frame::Error(ErrorCode::OutsideRoot, _),
                    Frame::Rejected(RejectReason::NoSuchUpload),
                    Frame::Error(ErrorCode::NoSuchUpload, _)
                ]
            ),
            "pipelined upload outside the root: {rest:?}"
        );
    } else {
        eprintln!("NOTE: bad chunks: uploads are not enabled on this server; not checked");
    }
    t.assert_healthy("bad chunks and an upload outside the root");

    // 5. Malformed fields inside well-sized frames.
    let mut bad_digest_bits = enc(&get("good.bin"));
    let n = bad_digest_bits.len();
    bad_digest_bits[n - 2] = 0x80;
    let mut bad_if_match = enc(&get("good.bin"));
    *bad_if_match.last_mut().unwrap() = 2;
    let mut bad_utf8 = enc(&get("good.bin"));
    bad_utf8[7] = 0xff;
    for (case, frame_bytes) in [
        ("Get with an unknown digest bit", bad_digest_bits),
        ("Get with if-match flag 2", bad_if_match),
        ("Get with a path that is not UTF-8", bad_utf8),
        ("SetPriority 3", vec![0, 0, 0, 2, tag::SET_PRIORITY, 3]),
        (
            "ListEntries announcing 65,535 entries in 2 bytes",
            vec![0, 0, 0, 3, tag::LIST_ENTRIES, 0xff, 0xff],
        ),
        (
            "Get with trailing bytes",
            [enc(&get("good.bin")), vec![0]].concat(),
        ),
    ] {
        let bytes = if case.contains("trailing") {
            let mut b = frame_bytes;
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) + 1;
            b[..4].copy_from_slice(&len.to_be_bytes());
            [hello(), b].concat()
        } else {
            [hello(), frame_bytes].concat()
        };
        let r = exchange(addr, &bytes, false, QUICK);
        assert_refused_and_closed(case, &r, true, &[ErrorCode::BadRequest]);
    }
    t.assert_healthy("malformed fields");

    // 6. Extreme but well-formed values, pipelined on one session: refusals leave the session
    // open, and what is served is exact.
    let size = GOOD_LEN as u64;
    let good = &t.good;
    let req = |offset, length, chunk_size, if_match| {
        Message::Get(GetRequest {
            path: "good.bin".into(),
            offset,
            length,
            chunk_size,
            digests: DigestSet::of(&Algorithm::ALL),
            if_match,
        })
    };
    let requests = [
        req(u64::MAX, TO_END, 65536, None),
        req(size + 1, TO_END, 65536, None),
        req(size, TO_END, 65536, None),
        req(10, u64::MAX - 1, 0, None),
        req(0, TO_END, u32::MAX, None),
        req(
            5,
            TO_END,
            65536,
            Some(FileVersion {
                size: u64::MAX,
                mtime_ns: i64::MIN,
            }),
        ),
    ];
    let r = exchange(addr, &session_bytes(&requests), true, QUICK * 2);
    let (caps, rest) = after_welcome("extreme Get fields", &r);
    assert!(r.closed, "extreme Get fields: the session did not end");
    assert!(
        Capabilities(caps).has(Capabilities::RESUME | Capabilities::MULTI_REQUEST),
        "the server no longer offers RESUME and MULTI_REQUEST: {caps:#x}"
    );
    // Split the reply at each request's end (an Error, or a Trailer).
    let mut replies: Vec<Vec<Frame>> = vec![Vec::new()];
    for f in rest {
        let end = matches!(f, Frame::Error(..) | Frame::Trailer(_));
        replies.last_mut().unwrap().push(f);
        if end {
            replies.push(Vec::new());
        }
    }
    replies.pop();
    assert_eq!(replies.len(), requests.len(), "{replies:?}");
    let refused = |i: usize| {
        assert!(
            matches!(&replies[i][..], [Frame::Error(ErrorCode::BadRequest, _)]),
            "request {i}: {:?}",
            replies[i]
        )
    };
    refused(0); // offset u64::MAX
    refused(1); // offset one past the end
    let (h, data) = assert_served("offset = size", &replies[2]);
    assert_eq!((h.offset, h.length, data.len()), (size, 0, 0));
    let (h, data) = assert_served("length u64::MAX - 1, chunk size 0", &replies[3]);
    assert_eq!(
        (h.offset, h.chunk_size),
        (10, sfts_protocol::MIN_CHUNK_SIZE)
    );
    assert!(data == good[10..], "range from 10 differs");
    assert!(data_frames_at_most(
        &replies[3],
        sfts_protocol::MIN_CHUNK_SIZE
    ));
    let (h, data) = assert_served("chunk size u32::MAX", &replies[4]);
    assert_eq!(h.chunk_size, sfts_protocol::MAX_CHUNK_SIZE);
    assert!(data == *good, "whole file differs");
    let (h, data) = assert_served("if_match of another version", &replies[5]);
    assert_eq!(h.offset, 0, "a changed version must be sent whole");
    assert!(data == *good);
    // The trailers carry the whole file's digests.
    let mut hasher = MultiHasher::new(DigestSet::of(&Algorithm::ALL));
    hasher.update(good);
    let want = hasher.finish();
    for (i, reply) in replies.iter().enumerate().skip(2) {
        assert_eq!(
            reply.last(),
            Some(&Frame::Trailer(want.clone())),
            "request {i}"
        );
    }
    t.assert_healthy("extreme field values");
}

fn data_frames_at_most(frames: &[Frame], max: u32) -> bool {
    frames.iter().all(|f| match f {
        Frame::Data(d) => d.len() <= max as usize,
        _ => true,
    })
}

#[test]
fn path_escapes_are_refused_for_every_request_type() {
    let t = Target::start(&["--max-connections", "1000"]);
    let addr = t.addr();
    let outside = t.outside.to_string_lossy().into_owned();
    let absolute = format!("{outside}/secret.txt");
    let paths: Vec<String> = [
        "../secret.txt",
        "sub/../../secret.txt",
        "./../secret.txt",
        "sub/./../../secret.txt",
        "..",
        "../",
        "../share/good.bin",
        "%2e%2e/secret.txt",
        "%2e%2e%2fsecret.txt",
        "..%2fsecret.txt",
        "%252e%252e/secret.txt",
        "..%c0%afsecret.txt",
        "/etc/passwd",
        absolute.as_str(),
        "//secret.txt",
        "ok.txt\0../secret.txt",
        "\0",
        "..\0",
        "link",
        "dirlink",
        "dirlink/secret.txt",
        "dirlink/share/good.bin",
        "dirlink/newdir",
        "link/x",
        // The server's own staging area for uploads is not part of what it serves.
        ".sfts-upload",
        ".sfts-upload/",
        "./.sfts-upload//x.part",
        "..\\secret.txt",
        "sub\\..\\..\\secret.txt",
        "\\secret.txt",
        "\\\\host\\share\\secret.txt",
        "C:/secret.txt",
        "C:\\secret.txt",
        "C:secret.txt",
        "c:",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        // At the length limit, past it, and one component far beyond NAME_MAX.
        "../".repeat(MAX_PATH_LEN / 3 - 4) + "secret.txt",
        "../".repeat(MAX_PATH_LEN / 3) + "secret.txt",
        "x".repeat(MAX_PATH_LEN),
    ])
    .collect();

    // The server's words must not reveal where the root lives.
    let no_server_path = |case: &str, path: &str, message: &str| {
        let said = message.replace(path, "<path>");
        assert!(
            !said.contains(&outside),
            "{case}: the reply reveals a server path: {message}"
        );
    };

    // Get and Stat, each on its own session.
    let kinds: [(&str, fn(&str) -> Message<'static>); 2] =
        [("Get", get), ("Stat", |p| Message::Stat { path: p.into() })];
    // A refusal with another code is collected and reported at the end, so one run shows
    // every misclassified path.
    let mut misclassified = Vec::new();
    for (kind, make) in kinds {
        for path in &paths {
            let case = format!("{kind} {path:?}");
            let r = exchange(addr, &session_bytes(&[make(path)]), true, QUICK);
            let (_, rest) = after_welcome(&case, &r);
            match &rest[..] {
                [Frame::Error(code, message)] => {
                    if !matches!(
                        code,
                        ErrorCode::OutsideRoot | ErrorCode::BadRequest | ErrorCode::NotFound
                    ) {
                        let shown: String = path.chars().take(24).collect();
                        misclassified.push(format!(
                            "{kind} of {shown:?}... ({} bytes): {} ({} bytes of message)",
                            path.len(),
                            code.name(),
                            message.len()
                        ));
                    }
                    no_server_path(&case, path, message);
                }
                other => panic!("{case}: expected a refusal, got {other:?}"),
            }
        }
        t.assert_healthy(&format!("path escapes through {kind}"));
    }

    // List, flat and recursive.
    let mut announced = None;
    for path in &paths {
        for recursive in [false, true] {
            let case = format!("List {path:?} (recursive {recursive})");
            let m = Message::List {
                path: path.clone(),
                recursive,
            };
            let r = exchange(addr, &session_bytes(&[m]), true, QUICK);
            let (caps, rest) = after_welcome(&case, &r);
            let listing = Capabilities(caps).has(Capabilities::LIST);
            announced = Some(listing);
            match &rest[..] {
                [Frame::Error(code, message)] => {
                    if listing
                        && !matches!(
                            code,
                            ErrorCode::OutsideRoot
                                | ErrorCode::BadRequest
                                | ErrorCode::NotFound
                                | ErrorCode::NotADirectory
                        )
                    {
                        misclassified.push(format!(
                            "List of {:?} ({} bytes): {}",
                            path.chars().take(24).collect::<String>(),
                            path.len(),
                            code.name()
                        ));
                    }
                    no_server_path(&case, path, message)
                }
                other => panic!("{case}: expected a refusal, got {other:?}"),
            }
        }
    }
    if announced == Some(false) {
        eprintln!(
            "NOTE: List: the server does not announce LIST (not implemented yet); every escape \
             was refused, but by the 'unexpected message' rule, not by path confinement"
        );
    } else {
        // The whole tree, recursively: links leading outside are listed as links and never
        // followed, and the staging area does not show.
        let m = Message::List {
            path: ".".into(),
            recursive: true,
        };
        let r = exchange(addr, &session_bytes(&[m]), true, QUICK);
        let (_, rest) = after_welcome("List . recursive", &r);
        let names = listed(&r.bytes);
        assert!(
            matches!(rest.last(), Some(Frame::Other("ListEnd"))),
            "List . recursive: {rest:?}"
        );
        for (name, kind) in &names {
            assert!(
                !name.starts_with(".sfts-upload") && !name.contains("secret"),
                "List . recursive shows {name:?}"
            );
            if name == "link" || name == "dirlink" {
                assert_eq!(*kind, sfts_protocol::EntryKind::Symlink, "{name}");
            }
        }
        assert!(names.iter().any(|(n, _)| n == "good.bin"), "{names:?}");
    }
    t.assert_healthy("path escapes through List");

    // Uploads: PutBegin and Mkdir. Nothing may be created anywhere (checked by assert_healthy).
    // Percent-encoded names are literal names inside the root, which an upload may create:
    // they are escapes only for a server that would decode them, and Get and Stat showed above
    // that this one does not.
    let mut announced = None;
    for path in paths.iter().filter(|p| !p.contains('%')) {
        let begin = PutBegin::new(
            1,
            path.clone(),
            3,
            0,
            4096,
            &[Digest::new(Algorithm::Sha256, vec![0xaa; 32]).unwrap()],
        )
        .unwrap();
        for m in [
            Message::PutBegin(begin),
            Message::Mkdir { path: path.clone() },
        ] {
            let case = format!("{} {path:?}", m.name());
            let r = exchange(addr, &session_bytes(&[m]), true, QUICK);
            let (caps, rest) = after_welcome(&case, &r);
            announced = Some(Capabilities(caps).has(Capabilities::UPLOAD));
            match &rest[..] {
                [Frame::Error(_, message)] => no_server_path(&case, path, message),
                other => panic!("{case}: expected a refusal, got {other:?}"),
            }
        }
    }
    if announced == Some(false) {
        eprintln!(
            "NOTE: PutBegin/Mkdir: the server does not announce UPLOAD (not implemented yet); \
             every escape was refused, but not by the upload path rules"
        );
    }
    t.assert_healthy("path escapes through PutBegin and Mkdir");

    // The original protocol, same table.
    for path in &paths {
        let mut req = Vec::new();
        sfts_protocol::legacy::encode_request(path, &mut req);
        let r = exchange(addr, &req, true, QUICK);
        let case = format!("legacy request {path:?}");
        assert_legacy_refused(&case, &r);
        no_server_path(&case, path, &String::from_utf8_lossy(&r.bytes));
    }
    t.assert_healthy("path escapes through the original protocol");

    // A client's bad name is its own error (outside-root, bad-request or not-found), never
    // the server's `internal` failure.
    assert!(
        misclassified.is_empty(),
        "refused with the wrong code:\n{}",
        misclassified.join("\n")
    );

    // Controls: links that stay inside are served; a `..` that would come back is not.
    let r = exchange(addr, &session_bytes(&[get("inner")]), true, QUICK);
    let (_, rest) = after_welcome("Get inner", &r);
    assert_eq!(assert_served("Get inner", &rest).1, b"fine");
    let r = exchange(addr, &session_bytes(&[get("sub/../ok.txt")]), true, QUICK);
    let (_, rest) = after_welcome("Get sub/../ok.txt", &r);
    assert!(
        matches!(&rest[..], [Frame::Error(ErrorCode::OutsideRoot, _)]),
        "{rest:?}"
    );
}

#[test]
fn frames_declared_at_their_maximum_do_not_pin_server_memory() {
    // Before the fix in `sfts_protocol::io::read_message` (found by the `message` fuzz target),
    // each of these connections made the server allocate and zero 16 MiB for five header bytes.
    let t = Target::start(&["--max-connections", "1000", "--timeout", "20"]);
    let addr = t.addr();
    let mut held = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(addr).unwrap();
        let head = if i % 2 == 0 {
            header(MAX_PUT_CHUNK_LEN, tag::PUT_CHUNK)
        } else {
            header(MAX_DATA_LEN, tag::DATA)
        };
        s.write_all(&[hello(), head, vec![1; 10]].concat()).unwrap();
        held.push(s);
    }
    // Each server worker has answered the Hello and is now reading the frame.
    let mut buf = Vec::new();
    for s in &mut held {
        s.set_read_timeout(Some(QUICK)).unwrap();
        match sfts_protocol::io::read_message(s, &mut buf) {
            Ok(Some(Message::Welcome { .. })) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    t.assert_memory_bounded("100 frames declared at 16 MiB, 10 bytes sent");
    eprintln!(
        "hostile: 100 frames declared at 16 MiB held: server at {} KiB",
        status_field(t.pid(), "VmRSS:")
    );
    t.fetch_good("100 frames declared at 16 MiB, 10 bytes sent");
    drop(held);
    t.assert_healthy("frames declared at their maximum");
}

/// Opens `n` connections that each send the start of something (nothing at all, half of a
/// Hello, half of an original request) and then nothing more.
fn half_open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let hello = hello();
    let legacy = [&8u32.to_be_bytes()[..], b"good"].concat();
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            match i % 3 {
                0 => {}
                1 => s.write_all(&hello[..hello.len() / 2]).unwrap(),
                _ => s.write_all(&legacy).unwrap(),
            }
            s
        })
        .collect()
}

#[test]
fn five_hundred_half_open_connections_do_not_starve_a_normal_client() {
    // Decision: the limit is set above 500 so that every half-open connection gets a worker,
    // which is the harder case for a thread-per-client server (the flood over the limit is the
    // next test). The handshake deadline (the --timeout here) then drops them all.
    let secs = 5;
    let t = Target::start(&["--max-connections", "1000", "--timeout", &secs.to_string()]);
    let opened = Instant::now();
    let held = half_open(t.addr(), 500);
    let pid = t.pid();
    assert!(
        wait_until(Duration::from_secs(secs), || status_field(pid, "Threads:")
            >= t.idle_threads + 450),
        "the server did not take the 500 connections: {} threads",
        status_field(pid, "Threads:")
    );
    // While all of them are held.
    t.fetch_good("500 half-open connections held");
    t.assert_memory_bounded("500 half-open connections held");
    eprintln!(
        "hostile: 500 half-open connections held: server at {} KiB, {} threads",
        status_field(pid, "VmRSS:"),
        status_field(pid, "Threads:")
    );
    let deadline = opened + Duration::from_secs(secs) + SLACK;
    for (i, mut s) in held.into_iter().enumerate() {
        let r = read_until_closed(&mut s, deadline);
        assert!(
            r.closed,
            "half-open connection {i} still open after the deadline"
        );
        assert!(
            r.bytes.is_empty()
                || r.bytes.starts_with(b"ERROR")
                || matches!(&frames(&r.bytes)[..], [Frame::Error(..)]),
            "half-open connection {i} got {:?}",
            String::from_utf8_lossy(&r.bytes)
        );
    }
    eprintln!(
        "hostile: 500 half-open connections dropped {:.1} s after they opened",
        opened.elapsed().as_secs_f64()
    );
    t.assert_healthy("500 half-open connections");
}

#[test]
fn a_flood_of_half_open_connections_over_the_limit_is_refused_cleanly() {
    let t = Target::start(&["--max-connections", "8"]);
    let opened = Instant::now();
    let held = half_open(t.addr(), 500);
    // During the flood a normal client is served, or refused (busy, or its connection closed
    // by a server with no refuser left); it never hangs and never gets wrong bytes.
    let during = Instant::now();
    let out = run(client(t.work.path()).args([
        "get",
        &t.server.target(),
        "good.bin",
        "-o",
        "-",
        "--retries",
        "0",
        "--max-retries",
        "0",
    ]));
    if out.status.success() {
        assert!(out.stdout == t.good, "wrong bytes during the flood");
    }
    eprintln!(
        "hostile: a normal client during the flood: exit {} after {:.1} s: {}",
        code(&out),
        during.elapsed().as_secs_f64(),
        stderr(&out).trim()
    );
    // Every flood connection is answered `busy` in its own protocol or simply closed, within
    // the handshake deadline (workers) or the refusers' sniffing time, plus slack.
    let deadline = opened + Duration::from_secs(TIMEOUT_SECS + 2) + SLACK;
    let mut busy = 0;
    for (i, mut s) in held.into_iter().enumerate() {
        let r = read_until_closed(&mut s, deadline);
        assert!(
            r.closed,
            "flood connection {i} still open after the deadline"
        );
        let text = String::from_utf8_lossy(&r.bytes).to_lowercase();
        if r.bytes.starts_with(b"ERROR") {
            busy += usize::from(text.contains("busy"));
        } else if !r.bytes.is_empty() {
            match &frames(&r.bytes)[..] {
                [Frame::Error(ErrorCode::Busy, _)] => busy += 1,
                other => panic!("flood connection {i} got {other:?}"),
            }
        }
    }
    assert!(busy > 0, "no flood connection was told the server is busy");
    eprintln!(
        "hostile: flood of 500 over a limit of 8: {busy} told busy, all closed after {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    t.assert_healthy("a flood of half-open connections over the limit");
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_timeout() {
    let mut t = Target::start(&["--max-connections", "1000"]);
    t.add_sparse_file("big.bin", 128 << 20);

    // Native: ask for the file, read the start of it, then stop reading.
    let mut s = TcpStream::connect(t.addr()).unwrap();
    let big = Message::Get(GetRequest::whole("big.bin", 1 << 20, DigestSet::EMPTY));
    s.write_all(&session_bytes(&[big])).unwrap();
    s.set_read_timeout(Some(QUICK)).unwrap();
    let mut first = vec![0u8; 2 << 20];
    s.read_exact(&mut first).unwrap();
    let (_, rest) = after_welcome(
        "stalled native reader",
        &Reply {
            bytes: first.clone(),
            closed: false,
        },
    );
    assert!(matches!(rest.first(), Some(Frame::Header(h)) if h.size == 128 << 20));
    assert_stalled_reader_dropped(&t, &mut s, "native", first.len());

    // The original protocol: OK, metadata, the start of the data, then nothing read.
    let mut s = TcpStream::connect(t.addr()).unwrap();
    let mut req = Vec::new();
    sfts_protocol::legacy::encode_request("big.bin", &mut req);
    s.write_all(&req).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut start = vec![0u8; 1 << 20];
    s.read_exact(&mut start).unwrap();
    assert!(start.starts_with(b"OK"), "{:?}", &start[..16]);
    assert_stalled_reader_dropped(&t, &mut s, "original", start.len());
}

/// `s` stopped reading after `received` bytes of the 128 MiB `big.bin`: its worker blocks
/// writing, gives up after the write timeout and ends; what was in flight can still be read,
/// then the stream ends short of the file.
fn assert_stalled_reader_dropped(t: &Target, s: &mut TcpStream, protocol: &str, received: usize) {
    let stalled = Instant::now();
    let pid = t.pid();
    assert!(
        wait_until(STALL_LIMIT, || status_field(pid, "Threads:")
            <= t.idle_threads),
        "the server still serves a {protocol} client that stopped reading {:.1} s ago",
        stalled.elapsed().as_secs_f64()
    );
    eprintln!(
        "hostile: stalled {protocol} reader dropped after {:.1} s",
        stalled.elapsed().as_secs_f64()
    );
    let r = read_until_closed(s, Instant::now() + QUICK);
    assert!(r.closed, "the stalled {protocol} connection was not closed");
    assert!(((received + r.bytes.len()) as u64) < 128 << 20);
    t.assert_healthy(&format!("a {protocol} client that stops reading"));
}
