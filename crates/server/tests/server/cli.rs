//! The `sfts-server` binary: help, startup errors and their exit codes, the listening line, a
//! native download done by hand, and a clean exit on SIGTERM.

use crate::support::{
    data, logs, run_to_end, run_to_end_env, start_binary, text, wait, whole, Native, ALL_CAPS,
};
use sfts_protocol::Algorithm;
use std::process::Command;
use std::time::Duration;

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
        "--state-dir",
        "--history-days",
        "--allow-upload",
        "--no-overwrite",
        "--max-upload-size",
        "--upload-ttl",
        "--max-list-entries",
    ] {
        assert!(help.contains(opt), "--help does not mention {opt}:\n{help}");
    }
}

#[test]
fn usage_error_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_end(&["--max-connections", "zero"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run_to_end(&["--upload-ttl", "1w"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("use s, m, h or d"),
        "{}",
        text(&out.stderr)
    );
    let out = run_to_end(&["--max-upload-size", "big"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn root_that_is_a_file_exits_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plain"), b"x").unwrap();
    let out = run_to_end(
        &[
            "--root",
            "plain",
            "--port",
            "0",
            "--log-dir",
            "logs",
            "--state-dir",
            "st",
        ],
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
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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
            "--state-dir",
            "st",
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
    let out = run_to_end(
        &["--port", "0", "--log-dir", "file/logs", "--state-dir", "st"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("sfts-server: error: cannot write logs"));
}

#[test]
fn serves_a_file_then_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("share");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&root).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("f.bin"), &data).unwrap();

    let (mut server, addr) = start_binary(&root, &logs, &dir.path().join("state"));
    assert!(addr.ip().is_loopback());
    let reply = Native::connect(addr, ALL_CAPS)
        .get(whole("f.bin", &[Algorithm::Sha256]))
        .unwrap();
    assert!(reply.data == data, "served bytes differ");
    assert_eq!(reply.digests, crate::support::both_digests(&data)[1..]);

    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status =
        wait(&mut server.0, Duration::from_secs(5)).expect("still running 5 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    let log = crate::support::logs(&logs);
    assert!(log.contains(" - client-1 - INFO - "), "{log}");
    assert!(log.contains("sending 'f.bin' (100000 bytes)"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn missing_root_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("new/share");
    let (_server, _addr) = start_binary(&root, &dir.path().join("logs"), &dir.path().join("st"));
    assert!(root.is_dir());
}

#[test]
fn a_state_dir_inside_the_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("share")).unwrap();
    for inside in ["share/state", "share", "./share/../share/x"] {
        let out = run_to_end(
            &[
                "--port",
                "0",
                "--root",
                "share",
                "--log-dir",
                "logs",
                "--state-dir",
                inside,
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{inside}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "sfts-server: error: the state directory '{inside}' is inside the served root"
            )) && err.contains("choose a --state-dir outside the root"),
            "{err}"
        );
    }
    assert!(!dir.path().join("share/state").exists());
}

#[test]
fn a_corrupt_state_database_exits_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("st")).unwrap();
    std::fs::write(dir.path().join("st/sfts-state.sqlite3"), vec![0x5a; 8192]).unwrap();
    let out = run_to_end(
        &["--port", "0", "--log-dir", "logs", "--state-dir", "st"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("sfts-server: error: cannot use the state database 'st/sfts-state.sqlite3'")
            && err.contains("move the file aside"),
        "{err}"
    );
}

#[test]
fn the_state_dir_defaults_to_xdg_state_home_and_needs_some_home() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    // The port is taken, so the server stops right after opening its state.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let args = ["--bind", "127.0.0.1", "--port", &port, "--log-dir", "logs"];
    let out = run_to_end_env(
        &args,
        dir.path(),
        &[
            ("XDG_STATE_HOME", xdg.to_str()),
            ("HOME", Some("/nonexistent")),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(xdg.join("sfts-server/sfts-state.sqlite3").is_file());

    let out = run_to_end_env(
        &args,
        dir.path(),
        &[("XDG_STATE_HOME", None), ("HOME", None)],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("pass --state-dir DIR"), "{err}");
}

/// Waits (at most 10 s) for the log files in `dir` to contain `line` `times` times.
fn wait_for_log(dir: &std::path::Path, line: &str, times: usize) {
    crate::support::eventually(&format!("{times} x '{line}' in the log"), || {
        logs(dir).matches(line).count() >= times
    });
}

#[test]
fn digests_are_cached_across_requests_and_a_kill_9_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("share"), dir.path().join("state"));
    let (logs1, logs2) = (dir.path().join("logs1"), dir.path().join("logs2"));
    std::fs::create_dir(&root).unwrap();
    let bytes = data(3 << 20, 7);
    std::fs::write(root.join("f.bin"), &bytes).unwrap();
    let want = crate::support::both_digests(&bytes);
    let both = [Algorithm::Md5, Algorithm::Sha256];

    let (mut server, addr) = start_binary(&root, &logs1, &state);
    let mut c = Native::connect(addr, ALL_CAPS);
    assert_eq!(c.get(whole("f.bin", &both)).unwrap().digests, want);
    wait_for_log(
        &logs1,
        "hashing 'f.bin' while sending (not in the digest cache)",
        1,
    );
    assert_eq!(c.get(whole("f.bin", &both)).unwrap().digests, want);
    wait_for_log(&logs1, "digest cache hit for 'f.bin'", 1);
    assert_eq!(logs(&logs1).matches("hashing 'f.bin'").count(), 1);
    drop(c);
    // History rows are committed within 100 ms of the transfer's end (a kill -9 loses at
    // most those of the last 100 ms): wait past that.
    std::thread::sleep(Duration::from_millis(400));

    let killed = Command::new("kill")
        .args(["-KILL", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait(&mut server.0, Duration::from_secs(5)).expect("still running after SIGKILL");
    let db = sfts_server::StateDb::open(&state).expect("the database survives a kill -9");
    assert_eq!(db.cached_digest_count().unwrap(), 1);
    let rows = db.recent_transfers(10).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.result == "ok" && r.bytes == 3 << 20),
        "{rows:?}"
    );
    drop(db);

    let (_server, addr) = start_binary(&root, &logs2, &state);
    let mut c = Native::connect(addr, ALL_CAPS);
    assert_eq!(c.get(whole("f.bin", &both)).unwrap().digests, want);
    wait_for_log(&logs2, "digest cache hit for 'f.bin'", 1);
    assert!(!logs(&logs2).contains("hashing"), "{}", logs(&logs2));
}
