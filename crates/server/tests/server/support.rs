//! Fixtures: the server binary and the library server with guards that stop them, a native
//! client speaking the protocol by hand, an original-protocol client, test data and digests
//! computed independently of the server (with the `md-5`, `sha2` and `blake3` crates).

use md5::{Digest as _, Md5};
use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::{
    chunk_count, chunk_span, legacy, Algorithm, Capabilities, ChunkDigest, Digest, DigestSet,
    ErrorCode, FileHeader, FileInfo, GetRequest, ListEntry, Message, PutBegin, PutChunk, PutReady,
    RejectReason, MAGIC, PROTOCOL_VERSION,
};
use sfts_server::{Config, Server, ShutdownHandle};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sfts-server");

/// Every capability a client can announce.
pub const ALL_CAPS: u64 = Capabilities::GET
    | Capabilities::RESUME
    | Capabilities::MULTI_REQUEST
    | Capabilities::STAT
    | Capabilities::UPLOAD
    | Capabilities::LIST
    | Capabilities::PRIORITY;

/// Kills the server process when dropped, whatever the test did.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the binary to completion (at most 20 s) in `cwd`, with `env` set.
pub fn run_to_end_env(args: &[&str], cwd: &Path, env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn().expect("start sfts-server");
    let status = wait(&mut child, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("sfts-server {args:?} did not exit within 20 s");
    });
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs the binary to completion (at most 20 s) in `cwd`.
pub fn run_to_end(args: &[&str], cwd: &Path) -> Output {
    run_to_end_env(args, cwd, &[])
}

pub fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts the binary over `root` with its logs in `logs` and its state in `state`, and returns
/// it with the address from its listening line.
pub fn start_binary(root: &Path, logs: &Path, state: &Path) -> (Guard, SocketAddr) {
    start_binary_with(root, logs, state, &[])
}

/// [`start_binary`] with more arguments.
pub fn start_binary_with(
    root: &Path,
    logs: &Path,
    state: &Path,
    extra: &[&str],
) -> (Guard, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--bind", "127.0.0.1", "--root"])
        .arg(root)
        .arg("--log-dir")
        .arg(logs)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sfts-server");
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no listening line within 20 s");
    let addr = line
        .trim_end()
        .strip_prefix("sfts-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    (guard, addr)
}

/// The server log files in `dir`, once they stopped growing: a running server writes its
/// lines a burst at a time, up to 50 ms after they were logged (`sfts_logging::GATHER`).
pub fn logs(dir: &Path) -> String {
    let read = || -> String {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return String::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("server_"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(150));
        let now = read();
        if now == last || std::time::Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// The library server on its own thread over a temporary root (and, if asked, a temporary
/// state directory); shut down and joined on drop.
pub struct Running {
    pub addr: SocketAddr,
    /// The `--plain-port` listener, if configured.
    pub plain: Option<SocketAddr>,
    pub handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), sfts_server::ServerError>>>,
    pub root: PathBuf,
    state: std::sync::Arc<sfts_server::StateDb>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// A server with the default configuration (state in memory) and `max_connections`.
    pub fn start(max_connections: usize) -> Running {
        Running::start_with(|c| c.max_connections = max_connections)
    }

    /// A server whose state lives in `<temp>/state`.
    pub fn with_state() -> Running {
        Running::start_with(|_| {})
    }

    /// A server that accepts uploads (state in `<temp>/state`).
    pub fn uploads() -> Running {
        Running::start_with(|c| c.uploads.allow = true)
    }

    /// A server with its state in `<temp>/state` and the configuration `adjust` makes.
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        let mut config = Config::new(&root);
        config.port = 0;
        config.bind = Some("127.0.0.1".parse().unwrap());
        config.state_dir = Some(dir.path().join("state"));
        adjust(&mut config);
        let server = Server::bind(config).unwrap();
        let addr = server.local_addr();
        let plain = server.plain_addr();
        let handle = server.shutdown_handle();
        let db = server.state_db().clone();
        let root = server.root().to_path_buf();
        let thread = Some(std::thread::spawn(move || server.run()));
        Running {
            addr,
            plain,
            handle,
            thread,
            root,
            state: db,
            _dir: dir,
        }
    }

    /// Shuts down and returns how long `run` took to return.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.handle.shutdown();
        self.handle.shutdown(); // idempotent
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
        started.elapsed()
    }

    /// The state database, with everything the server recorded so far written to it (history
    /// rows and cache entries are written by a background thread within 100 ms).
    pub fn db(&self) -> &sfts_server::StateDb {
        self.handle.flush_state();
        &self.state
    }

    /// Writes `data` to `name` under the root.
    pub fn put(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A refusal: code and message.
pub type Refused = (ErrorCode, String);

/// A reply to an upload, `Mkdir` or `List` request, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Up {
    Ready(PutReady),
    Ack(u32, u64),
    Rejected(u32, u64, RejectReason),
    Done(u32, Vec<Digest>),
    Aborted(u32),
    Info(FileInfo),
    Entries(Vec<ListEntry>),
    End(u64, bool),
    Error(ErrorCode, String),
}

/// A `PutBegin` with id `id` for `data` to `path`, chunks of `chunk` bytes, both digests.
pub fn begin(id: u32, path: &str, data: &[u8], chunk: u32) -> PutBegin {
    PutBegin {
        id,
        path: path.into(),
        size: data.len() as u64,
        mtime_ns: 1_600_000_000_123_456_789,
        chunk_size: chunk,
        force: false,
        restart: false,
        digest_at_commit: false,
        chunk_digest: ChunkDigest::Sha256,
        sha256: Sha256::digest(data).into(),
        md5: Some(Md5::digest(data).into()),
    }
}

/// What a `Get` brought.
#[derive(Debug)]
pub struct Reply {
    pub header: FileHeader,
    pub data: Vec<u8>,
    pub digests: Vec<Digest>,
    /// Empty `Data` frames received.
    pub keepalives: usize,
    /// The length of every non-empty `Data` frame, in order.
    pub frames: Vec<usize>,
}

/// A native session, by hand.
pub struct Native {
    pub s: TcpStream,
    buf: Vec<u8>,
    /// What the server's `Welcome` said.
    pub caps: Capabilities,
    /// Empty `Data` frames skipped by [`Native::up`].
    pub keepalives: usize,
}

impl Native {
    /// Connects, says `Hello` with `caps` and reads the `Welcome`.
    pub fn connect(addr: SocketAddr, caps: u64) -> Native {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&MAGIC).unwrap();
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            capabilities: Capabilities(caps),
            agent: "server-test".into(),
        };
        write_message(&mut s, &hello, &mut Vec::new()).unwrap();
        let mut buf = Vec::new();
        let caps = match read_message(&mut s, &mut buf).unwrap() {
            Some(Message::Welcome {
                capabilities,
                server,
                ..
            }) => {
                assert!(server.starts_with("sfts-server/"), "{server}");
                capabilities
            }
            other => panic!("expected Welcome, got {other:?}"),
        };
        Native {
            s,
            buf,
            caps,
            keepalives: 0,
        }
    }

    pub fn send(&mut self, msg: &Message<'_>) {
        write_message(&mut self.s, msg, &mut Vec::new()).unwrap();
    }

    /// Sends `req` and reads the whole reply.
    pub fn get(&mut self, req: GetRequest) -> Result<Reply, Refused> {
        self.send(&Message::Get(req));
        self.reply()
    }

    /// Reads the reply to a `Get`: header, data (counting keep-alives), trailer; or an error
    /// in place of the header or the trailer.
    pub fn reply(&mut self) -> Result<Reply, Refused> {
        let header = match read_message(&mut self.s, &mut self.buf).unwrap() {
            Some(Message::FileHeader(h)) => h,
            Some(Message::Error { code, message }) => return Err((code, message)),
            other => panic!("expected FileHeader, got {other:?}"),
        };
        let (mut data, mut keepalives, mut frames) = (Vec::new(), 0, Vec::new());
        loop {
            match read_message(&mut self.s, &mut self.buf).unwrap() {
                Some(Message::Data([])) => keepalives += 1,
                Some(Message::Data(d)) => {
                    assert!(d.len() <= header.chunk_size as usize);
                    data.extend_from_slice(d);
                    frames.push(d.len());
                }
                Some(Message::Trailer { digests }) => {
                    assert_eq!(data.len() as u64, header.length);
                    return Ok(Reply {
                        header,
                        data,
                        digests,
                        keepalives,
                        frames,
                    });
                }
                Some(Message::Error { code, message }) => return Err((code, message)),
                other => panic!("expected Data or Trailer, got {other:?}"),
            }
        }
    }

    /// Sends `Stat` and reads the answer.
    pub fn stat(&mut self, path: &str) -> Result<FileInfo, Refused> {
        self.send(&Message::Stat { path: path.into() });
        match read_message(&mut self.s, &mut self.buf).unwrap() {
            Some(Message::FileInfo(i)) => Ok(i),
            Some(Message::Error { code, message }) => Err((code, message)),
            other => panic!("expected FileInfo, got {other:?}"),
        }
    }

    /// The next reply to an upload, `Mkdir` or `List` request; keep-alives are counted in
    /// `keepalives` and skipped.
    pub fn up(&mut self) -> Up {
        loop {
            let m = read_message(&mut self.s, &mut self.buf).unwrap();
            return match m {
                Some(Message::Data([])) => {
                    self.keepalives += 1;
                    continue;
                }
                Some(Message::PutReady(r)) => Up::Ready(r),
                Some(Message::ChunkAck { id, index }) => Up::Ack(id, index),
                Some(Message::ChunkRejected { id, index, reason }) => {
                    Up::Rejected(id, index, reason)
                }
                Some(Message::PutDone { id, digests }) => Up::Done(id, digests),
                Some(Message::PutAborted { id }) => Up::Aborted(id),
                Some(Message::FileInfo(i)) => Up::Info(i),
                Some(Message::ListEntries { entries }) => Up::Entries(entries),
                Some(Message::ListEnd { total, truncated }) => Up::End(total, truncated),
                Some(Message::Error { code, message }) => Up::Error(code, message),
                other => panic!("unexpected reply {other:?}"),
            };
        }
    }

    /// `PutBegin`, and its answer.
    pub fn begin(&mut self, b: &PutBegin) -> Result<PutReady, Refused> {
        self.send(&Message::PutBegin(b.clone()));
        match self.up() {
            Up::Ready(r) => Ok(r),
            Up::Error(code, message) => Err((code, message)),
            other => panic!("expected PutReady, got {other:?}"),
        }
    }

    /// Sends chunk `index` of `data` (cut in `chunk`-byte pieces) with its digest.
    pub fn send_chunk(&mut self, id: u32, index: u64, data: &[u8], chunk: u32) {
        let (start, len) = chunk_span(data.len() as u64, chunk, index).expect("a chunk");
        let bytes = &data[start as usize..(start + len as u64) as usize];
        self.send(&Message::PutChunk(PutChunk::new(id, index, bytes)));
    }

    /// Sends chunk `index` of `data` with its `kind` digest.
    pub fn send_chunk_with(
        &mut self,
        id: u32,
        index: u64,
        data: &[u8],
        chunk: u32,
        kind: ChunkDigest,
    ) {
        let (start, len) = chunk_span(data.len() as u64, chunk, index).expect("a chunk");
        let bytes = &data[start as usize..(start + len as u64) as usize];
        self.send(&Message::PutChunk(PutChunk {
            id,
            index,
            digest: kind.of_chunk(start, data.len() as u64, bytes),
            data: bytes,
        }));
    }

    /// `PutCommitDigests`, and its answer.
    pub fn commit_with(&mut self, id: u32, digests: Vec<Digest>) -> Result<Vec<Digest>, Refused> {
        self.send(&Message::PutCommitDigests { id, digests });
        self.done(id)
    }

    /// Sends chunk `index` and reads its answer.
    pub fn chunk(&mut self, id: u32, index: u64, data: &[u8], chunk: u32) -> Up {
        self.send_chunk(id, index, data, chunk);
        self.up()
    }

    /// `PutCommit`, and its answer.
    pub fn commit(&mut self, id: u32) -> Result<Vec<Digest>, Refused> {
        self.send(&Message::PutCommit { id });
        self.done(id)
    }

    /// The answer to the commit of upload `id`.
    fn done(&mut self, id: u32) -> Result<Vec<Digest>, Refused> {
        match self.up() {
            Up::Done(got, digests) => {
                assert_eq!(got, id);
                Ok(digests)
            }
            Up::Error(code, message) => Err((code, message)),
            other => panic!("expected PutDone, got {other:?}"),
        }
    }

    /// A whole upload: begin, every chunk not held (each must be acknowledged), commit.
    pub fn upload(&mut self, b: &PutBegin, data: &[u8]) -> Result<Vec<Digest>, Refused> {
        let ready = self.begin(b)?;
        let total = chunk_count(data.len() as u64, ready.chunk_size);
        for i in ready.have.missing(total).collect::<Vec<_>>() {
            assert_eq!(
                self.chunk(b.id, i, data, ready.chunk_size),
                Up::Ack(b.id, i)
            );
        }
        self.commit(b.id)
    }

    /// `Mkdir`, and its answer.
    pub fn mkdir(&mut self, path: &str) -> Result<FileInfo, Refused> {
        self.send(&Message::Mkdir { path: path.into() });
        match self.up() {
            Up::Info(i) => Ok(i),
            Up::Error(code, message) => Err((code, message)),
            other => panic!("expected FileInfo, got {other:?}"),
        }
    }

    /// `List`, and the whole answer: the entries and `ListEnd`'s `truncated` (its total is
    /// checked against the entries).
    pub fn list(&mut self, path: &str, recursive: bool) -> Result<(Vec<ListEntry>, bool), Refused> {
        self.send(&Message::List {
            path: path.into(),
            recursive,
        });
        let mut all = Vec::new();
        loop {
            match self.up() {
                Up::Entries(e) => all.extend(e),
                Up::End(total, truncated) => {
                    assert_eq!(total, all.len() as u64);
                    return Ok((all, truncated));
                }
                Up::Error(code, message) => return Err((code, message)),
                other => panic!("expected ListEntries, got {other:?}"),
            }
        }
    }

    /// The next message's name and, for an error, its code (for protocol-violation tests).
    pub fn next_error(&mut self) -> Option<ErrorCode> {
        match read_message(&mut self.s, &mut self.buf) {
            Ok(Some(Message::Error { code, .. })) => Some(code),
            _ => None,
        }
    }

    /// True once the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        matches!(read_message(&mut self.s, &mut self.buf), Ok(None) | Err(_))
    }
}

/// A request for the whole of `path`, with `digests`, in 4 KiB chunks.
pub fn whole(path: &str, digests: &[Algorithm]) -> GetRequest {
    GetRequest::whole(path, 4096, DigestSet::of(digests))
}

/// A request for `length` bytes of `path` from `offset`, both digests wanted.
pub fn range(path: &str, offset: u64, length: u64) -> GetRequest {
    GetRequest {
        offset,
        length,
        ..whole(path, &[Algorithm::Md5, Algorithm::Sha256])
    }
}

/// The original client: one 5-byte read for the status, then the rest.
pub fn legacy_get(addr: SocketAddr, name: &str) -> (Vec<u8>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = Vec::new();
    legacy::encode_request(name, &mut req);
    s.write_all(&req).unwrap();
    let mut status = [0u8; 5];
    let n = s.read(&mut status).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    (status[..n].to_vec(), rest)
}

/// Deterministic bytes that do not repeat in any short period.
pub fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// MD5 and SHA-256 of `bytes`, as a trailer carries them.
pub fn both_digests(bytes: &[u8]) -> Vec<Digest> {
    vec![
        Digest::new(Algorithm::Md5, Md5::digest(bytes).to_vec()).unwrap(),
        Digest::new(Algorithm::Sha256, Sha256::digest(bytes).to_vec()).unwrap(),
    ]
}

/// The BLAKE3 digest of `bytes`.
pub fn blake3_digest(bytes: &[u8]) -> Digest {
    Digest::new(Algorithm::Blake3, blake3::hash(bytes).as_bytes().to_vec()).unwrap()
}

/// The XXH128 of `bytes`, canonical (big-endian) as `xxh128sum` prints it.
pub fn xxh128_digest(bytes: &[u8]) -> Digest {
    let value = twox_hash::XxHash3_128::oneshot(bytes);
    Digest::new(Algorithm::Xxh128, value.to_be_bytes().to_vec()).unwrap()
}

/// Lowercase hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    both_digests(bytes)[0].to_hex()
}

/// Waits until `cond` holds, at most 10 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
