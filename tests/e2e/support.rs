//! Test fixtures: a server guard, client commands, deterministic random files, digests.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of a binary built by this workspace.
pub fn bin(name: &str) -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_sfts-client"));
    let path = client.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so it is built",
        path.display()
    );
    path
}

/// A running `sfts-server`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub log_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Options for starting a server.
pub struct ServerOpts {
    pub bind: String,
    pub port: u16,
    pub extra: Vec<String>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            bind: "127.0.0.1".into(),
            port: 0,
            extra: Vec::new(),
        }
    }
}

impl Server {
    /// A server that accepts uploads (`--allow-upload`), otherwise with the defaults.
    pub fn uploads() -> Server {
        Server::start_with(ServerOpts {
            extra: vec!["--allow-upload".into()],
            ..ServerOpts::default()
        })
    }

    /// Starts a server on 127.0.0.1, any port, over a fresh temporary root.
    pub fn start() -> Server {
        Server::start_with(ServerOpts::default())
    }

    pub fn start_with(opts: ServerOpts) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir(&root).unwrap();
        let log_dir = dir.path().join("logs");
        let mut s = Server::start_in(&root, &log_dir, &opts);
        s._dir = Some(dir);
        s
    }

    /// Starts a server over an existing root (for restart tests).
    pub fn start_in(root: &Path, log_dir: &Path, opts: &ServerOpts) -> Server {
        let mut child = Command::new(bin("sfts-server"))
            .arg("--port")
            .arg(opts.port.to_string())
            .arg("--bind")
            .arg(&opts.bind)
            .arg("--root")
            .arg(root)
            .arg("--log-dir")
            .arg(log_dir)
            // Beside the logs, so a restarted server finds its state again and tests never
            // share (or write to) the user's state directory.
            .arg("--state-dir")
            .arg(log_dir.with_file_name("state"))
            .args(&opts.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sfts-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        // Drain stderr so the server never blocks on a full pipe.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("sfts-server printed no listening line within 20 s");
            }
        };
        let addr_text = line
            .strip_prefix("sfts-server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let addr: SocketAddr = addr_text.parse().expect("listening address");
        Server {
            child,
            addr,
            root: root.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            _dir: None,
        }
    }

    /// `127.0.0.1:PORT` (or `[::1]:PORT`) as a client argument.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Sends a signal (`INT`, `TERM`, `KILL`) to the server process.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Waits for the server to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// The server's log files, once they stopped growing: the server writes its lines a
    /// burst at a time, up to 50 ms after they were logged (`sfts_logging::GATHER`).
    pub fn logs(&self) -> String {
        settled(|| {
            let mut all = String::new();
            if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
                for e in entries.flatten() {
                    all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
            all
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process by pid.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Waits for a child to exit, at most `limit`; `None` when it is still running.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Kills a child process when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An `sfts-client` command running in `cwd`, logging into `cwd/logs`, no stdin, no retries
/// unless the test asks.
pub fn client(cwd: &Path) -> Command {
    let mut cmd = Command::new(bin("sfts-client"));
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .env_remove("SFTS_SERVER")
        .env_remove("SFTS_MAX_RETRIES")
        .env_remove("SFTS_CHUNK_SIZE")
        .env_remove("SFTS_TIMEOUT")
        .env_remove("SFTS_TOKEN")
        .args(["--log-dir"])
        .arg(cwd.join("logs"));
    cmd
}

/// Everything the clients started in `cwd` wrote to their log files.
pub fn client_logs(cwd: &Path) -> String {
    let mut all = String::new();
    if let Ok(entries) = std::fs::read_dir(cwd.join("logs")) {
        for e in entries.flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

/// Runs a client command to completion, at most 120 s.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start sfts-client");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = match wait_child(&mut child, Duration::from_secs(120)) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            panic!("sfts-client did not finish within 120 s");
        }
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Exit code of a finished client, with its stderr on failure to ease debugging.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts success, showing the client's stderr otherwise.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "client failed with {:?}: {}",
        out.status,
        stderr(out)
    );
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a file of `len` random bytes under `dir` and returns its contents.
pub fn write_random(dir: &Path, name: &str, len: usize, seed: u64) -> Vec<u8> {
    let data = random_bytes(len, seed);
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, &data).unwrap();
    data
}

/// The digest the coreutils tool (`sha256sum`, `md5sum`) prints for a file.
pub fn coreutils_digest(tool: &str, path: &Path) -> String {
    let out = Command::new(tool)
        .arg(path)
        .output()
        .expect("run coreutils");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The `<hex>` of the `<hex>  <path>` line a client printed.
pub fn printed_digest(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            let (hex, _) = l.split_once("  ")?;
            (hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| hex.to_string())
        })
        .unwrap_or_else(|| panic!("no digest line in {text:?}"))
}

/// Lists a directory's entry names, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What `read` gives once it gave the same twice, 150 ms apart (at most 5 s).
pub fn settled(read: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(150));
        let now = read();
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Locks `part` the way a running sfts-client locks the partial file it writes; the lock
/// goes with the returned file.
pub fn hold(part: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(part).unwrap();
    // SAFETY: `flock` on a descriptor `file` owns.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "cannot lock {}", part.display());
    file
}
