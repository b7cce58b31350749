//! The `sfts-server` binary: help, startup errors and their exit codes, the listening line, a
//! native download done by hand, and a clean exit on SIGTERM.

use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::{
    Algorithm, Capabilities, DigestSet, GetRequest, Message, MultiHasher, MAGIC, PROTOCOL_VERSION,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sfts-server");

/// Kills the server when dropped, whatever the test did.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the binary to completion (at most 20 s).
fn run_to_end(args: &[&str], cwd: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sfts-server");
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

fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_mentions_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_end(&["--help"], dir.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    for opt in [
        "--root",
        "--port",
        "--bind",
        "--max-connections",
        "--timeout",
        "--log-dir",
    ] {
        assert!(help.contains(opt), "--help does not mention {opt}:\n{help}");
    }
}

#[test]
fn usage_error_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_end(&["--max-connections", "zero"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn root_that_is_a_file_exits_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plain"), b"x").unwrap();
    let out = run_to_end(
        &["--root", "plain", "--port", "0", "--log-dir", "logs"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("sfts-server: error: served root 'plain' exists but is not a directory"),
        "{err}"
    );
}

#[test]
fn port_in_use_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run_to_end(
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--root",
            "share",
            "--log-dir",
            "logs",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "sfts-server: error: cannot listen on 127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[test]
fn unwritable_log_dir_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let out = run_to_end(&["--port", "0", "--log-dir", "file/logs"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("sfts-server: error: cannot write logs"));
}

/// Starts the server over `root` and returns it with the address from its listening line.
fn start(root: &Path, logs: &Path) -> (Guard, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--bind", "127.0.0.1", "--root"])
        .arg(root)
        .arg("--log-dir")
        .arg(logs)
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

/// A native download, by hand: magic, Hello, Get, then FileHeader, Data..., Trailer.
fn native_get(addr: SocketAddr, path: &str) -> (Vec<u8>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&MAGIC).unwrap();
    let mut scratch = Vec::new();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities(Capabilities::GET),
        agent: "cli-test".into(),
    };
    write_message(&mut s, &hello, &mut scratch).unwrap();
    let digests = DigestSet::of(&[Algorithm::Sha256]);
    let get = Message::Get(GetRequest::whole(path, 4096, digests));
    write_message(&mut s, &get, &mut scratch).unwrap();

    let mut buf = Vec::new();
    match read_message(&mut s, &mut buf).unwrap() {
        Some(Message::Welcome { server, .. }) => assert!(server.starts_with("sfts-server/")),
        other => panic!("expected Welcome, got {other:?}"),
    }
    let size = match read_message(&mut s, &mut buf).unwrap() {
        Some(Message::FileHeader(h)) => h.size,
        other => panic!("expected FileHeader, got {other:?}"),
    };
    let mut data = Vec::new();
    let mut hasher = MultiHasher::new(digests);
    for _ in 0..=(size / 4096 + 1) {
        if data.len() as u64 == size {
            break;
        }
        match read_message(&mut s, &mut buf).unwrap() {
            Some(Message::Data(d)) => {
                hasher.update(d);
                data.extend_from_slice(d);
            }
            other => panic!("expected Data, got {other:?}"),
        }
    }
    assert_eq!(data.len() as u64, size);
    match read_message(&mut s, &mut buf).unwrap() {
        Some(Message::Trailer { digests }) => {
            let hex = digests[0].to_hex();
            assert_eq!(digests, hasher.finish());
            (data, hex)
        }
        other => panic!("expected Trailer, got {other:?}"),
    }
}

#[test]
fn serves_a_file_then_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("share");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&root).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("f.bin"), &data).unwrap();

    let (mut server, addr) = start(&root, &logs);
    assert!(addr.ip().is_loopback());
    let (got, sha) = native_get(addr, "f.bin");
    assert!(got == data, "served bytes differ");
    assert_eq!(sha.len(), 64);

    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status =
        wait(&mut server.0, Duration::from_secs(5)).expect("still running 5 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    let log: String = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("server_"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(log.contains(" - client-1 - INFO - "), "{log}");
    assert!(log.contains("sending 'f.bin' (100000 bytes)"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn missing_root_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("new/share");
    let (_server, _addr) = start(&root, &dir.path().join("logs"));
    assert!(root.is_dir());
}
