//! The server under attack ([`Target`]) and the checks after every case.

use crate::support::*;
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Written beside the served root; no reply may ever contain it.
pub(super) const SECRET: &[u8] = b"HOSTILE-SUITE-SECRET-BESIDE-THE-ROOT";

/// Bound on the server's resident memory after (and during) every case.
pub(super) const RSS_LIMIT_KIB: u64 = 200 * 1024;

/// The server's `--timeout` (idle, stalled and handshake limit) in most of these tests.
pub(super) const TIMEOUT_SECS: u64 = 2;

/// How much later than its deadline the server may drop a client (scheduling, the 0.5 s
/// `linger_close`, a debug build under load).
pub(super) const SLACK: Duration = Duration::from_secs(4);

/// How long a client that stopped reading may still hold its worker: the socket's write
/// timeout restarts whenever a write makes some progress, so a stalled transfer can take two
/// timeouts (the write that fills the buffers, then the one that times out) and more.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(4 * TIMEOUT_SECS + 4);

/// Size of the file the normal client fetches after every case.
pub(super) const GOOD_LEN: usize = 256 * 1024 + 7;

/// One entry of a directory tree snapshot: path, kind, length, modification time.
pub(super) type Entry = (String, char, u64, Option<std::time::SystemTime>);

/// A server over a root holding `good.bin`, `ok.txt`, `sub/` and three symbolic links, with
/// `secret.txt` beside the root.
pub(super) struct Target {
    pub(super) server: Server,
    pub(super) good: Vec<u8>,
    /// The folder holding the root, the secret, the server's logs and state.
    pub(super) outside: PathBuf,
    /// The snapshot every case is compared with.
    pub(super) before: Vec<Entry>,
    /// Where the normal client runs.
    pub(super) work: tempfile::TempDir,
    /// The server's thread count when no client is connected.
    pub(super) idle_threads: u64,
}

/// `--allow-upload` when the server has it: hostile clients then meet the most exposed
/// configuration (uploads and directory creation allowed).
pub(super) fn allow_upload() -> Option<&'static str> {
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
    pub(super) fn start(extra: &[&str]) -> Target {
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

    pub(super) fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub(super) fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// A large sparse file in the root (part of the snapshot from now on).
    pub(super) fn add_sparse_file(&mut self, name: &str, len: u64) {
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
    pub(super) fn fetch_good(&self, case: &str) {
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

    pub(super) fn assert_memory_bounded(&self, case: &str) {
        let rss = status_field(self.pid(), "VmRSS:");
        assert!(
            rss < RSS_LIMIT_KIB,
            "after {case}: the server's resident memory is {rss} KiB (limit {RSS_LIMIT_KIB} KiB)"
        );
    }

    /// The checks after every case.
    pub(super) fn assert_healthy(&self, case: &str) {
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
pub(super) fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
