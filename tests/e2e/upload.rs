//! Uploads: round trips, resume after a killed client, a chunk corrupted in flight, two
//! uploads to one name, a read-only server, size limits, unsafe names; and `list`.

use crate::proxy::{Behaviour, Proxy};
use crate::support::*;
use std::process::Stdio;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn json(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("JSON {text:?}: {e}"))
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Files under `dir` other than the expected ones: nothing half-written may be visible.
fn visible_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn round_trips_of_0_1_and_64_mib() {
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    for (name, size) in [("zero.bin", 0usize), ("one.bin", 1), ("big.bin", 64 << 20)] {
        let data = write_random(work.path(), name, size, size as u64 + 7);
        let remote = format!("up/{name}");
        let out = run(client(work.path()).args(["put", &server.target(), name, &remote]));
        assert_ok(&out);
        let sha = coreutils_digest("sha256sum", &work.path().join(name));
        assert_eq!(
            stdout(&out).split_whitespace().next(),
            Some(sha.as_str()),
            "{}",
            stdout(&out)
        );
        assert!(
            std::fs::read(server.root.join(&remote)).unwrap() == data,
            "{name}"
        );
        // And back.
        let back = format!("back-{name}");
        let out = run(client(work.path()).args(["get", &server.target(), &remote, "-o", &back]));
        assert_ok(&out);
        assert!(std::fs::read(work.path().join(&back)).unwrap() == data);
    }
    // The mtime travels with the file.
    let here = std::fs::metadata(work.path().join("big.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let there = std::fs::metadata(server.root.join("up/big.bin"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(here, there);
    assert_eq!(
        visible_files(&server.root),
        ["up/big.bin", "up/one.bin", "up/zero.bin"]
    );
}

#[test]
fn put_streams_to_a_new_server_and_hashes_first_for_an_older_one() {
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    let data = write_random(work.path(), "s.bin", (5 * MIB + 3) as usize, 65);
    let sha = coreutils_digest("sha256sum", &work.path().join("s.bin"));
    // The server has STREAM_PUT: the file is hashed while it is sent, not before.
    let out =
        run(client(work.path()).args(["put", &server.target(), "s.bin", "--chunk-size", "1M"]));
    assert_ok(&out);
    assert!(!stderr(&out).contains("hashing"), "{}", stderr(&out));
    assert_eq!(stdout(&out).split_whitespace().next(), Some(sha.as_str()));
    assert!(std::fs::read(server.root.join("s.bin")).unwrap() == data);
    // Its chunks carried BLAKE3 tree values, from which the server assembled the file's
    // BLAKE3 and cached it: a BLAKE3 download is checked against that cached digest.
    let blake3_get = |name: &str, out_name: &str| {
        let out = run(client(work.path()).args([
            "get",
            &server.target(),
            name,
            "-o",
            out_name,
            "--checksum",
            "blake3",
        ]));
        assert_ok(&out);
        assert!(std::fs::read(work.path().join(out_name)).unwrap() == data);
    };
    blake3_get("s.bin", "back.bin");
    // That BLAKE3 is what the commit was checked with; the server hashed nothing else, so
    // the first SHA-256 download hashes the file on its way (and caches its SHA-256).
    let published = |logs: &str| {
        logs.lines()
            .find(|l| l.contains("published 's.bin'"))
            .map(str::to_string)
    };
    assert!(wait_until(Duration::from_secs(10), || published(
        &server.logs()
    )
    .is_some()));
    let line = published(&server.logs()).unwrap();
    assert!(
        line.contains(", blake3 ") && !line.contains("sha256"),
        "{line}"
    );
    let out = run(client(work.path()).args([
        "get",
        &server.target(),
        "s.bin",
        "-o",
        "sha.bin",
        "--checksum",
        "sha256",
    ]));
    assert_ok(&out);
    assert_eq!(printed_digest(&stdout(&out)), sha);
    assert!(std::fs::read(work.path().join("sha.bin")).unwrap() == data);
    assert!(wait_until(Duration::from_secs(10), || server
        .logs()
        .contains("hashing 's.bin' while sending")));
    // `put` through a proxy that hides `caps` from the server's Welcome, as `name`.
    let put_hiding = |caps: u64, name: &str| {
        let behaviour = Behaviour {
            hide_caps: caps,
            ..Behaviour::default()
        };
        let proxy = Proxy::start(server.addr, behaviour);
        let addr = proxy.addr.to_string();
        let out =
            run(client(work.path()).args(["put", &addr, "s.bin", name, "--chunk-size", "1M"]));
        assert_ok(&out);
        assert_eq!(stdout(&out).split_whitespace().next(), Some(sha.as_str()));
        stderr(&out)
    };
    // Without BLAKE3_TREE: plain BLAKE3 chunk digests, same result.
    put_hiding(sfts_protocol::Capabilities::BLAKE3_TREE, "plain.bin");
    blake3_get("plain.bin", "back2.bin");
    // Without STREAM_PUT: the original flow.
    let err = put_hiding(sfts_protocol::Capabilities::STREAM_PUT, "old.bin");
    assert!(err.contains("hashing"), "{err}");
    assert!(std::fs::read(server.root.join("old.bin")).unwrap() == data);
}

#[test]
fn existing_file_needs_force_and_a_second_put_sends_nothing_new() {
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    write_random(work.path(), "a.bin", 3 << 20, 61);
    let out = run(client(work.path()).args(["put", &server.target(), "a.bin"]));
    assert_ok(&out);
    let out = run(client(work.path()).args(["put", &server.target(), "a.bin"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let new = write_random(work.path(), "a.bin", 2 << 20, 62);
    let out =
        run(client(work.path()).args(["put", &server.target(), "a.bin", "--force", "--json"]));
    assert_ok(&out);
    assert_eq!(num(&json(&out), "size"), 2 << 20);
    assert!(std::fs::read(server.root.join("a.bin")).unwrap() == new);
}

#[test]
fn killed_upload_resumes_sending_only_the_missing_chunks() {
    let server = Server::uploads();
    let size = 64 * MIB;
    let work = tempfile::tempdir().unwrap();
    let data = write_random(work.path(), "u.bin", size as usize, 63);
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            up_rate: 48 * MIB,
            ..Behaviour::default()
        },
    );
    let mut cmd = client(work.path());
    cmd.args([
        "put",
        &proxy.addr.to_string(),
        "u.bin",
        "--chunk-size",
        "1M",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let up = || proxy.bytes_up.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(60), || up() >= size / 2),
        "upload never reached half"
    );
    signal(child.0.id(), "KILL");
    let _ = wait_child(&mut child.0, Duration::from_secs(10));
    let at_kill = up();
    // Nothing is visible under the final name.
    assert!(!server.root.join("u.bin").exists());

    let out = run(client(work.path()).args(["put", &server.target(), "u.bin", "--json"]));
    assert_ok(&out);
    // Both runs were streamed uploads (resumed by size and mtime, hashed while sent).
    assert!(!stderr(&out).contains("hashing"), "{}", stderr(&out));
    let v = json(&out);
    let (sent, skipped) = (num(&v, "bytes_sent"), num(&v, "bytes_skipped"));
    eprintln!("killed after {at_kill} bytes forwarded; rerun sent {sent}, skipped {skipped}");
    assert_eq!(sent + skipped, size, "{v}");
    // Whatever reached the server's disk is not sent again; what was still in socket buffers
    // (a few MiB at most) and the chunk being written may be.
    assert!(skipped + 8 * MIB >= at_kill, "{v}");
    assert!(std::fs::read(server.root.join("u.bin")).unwrap() == data);
}

#[test]
fn chunk_corrupted_in_flight_is_sent_again() {
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    let data = write_random(work.path(), "c.bin", (4 * MIB) as usize, 64);
    // Flip a byte well inside the second chunk's data on the first connection.
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            flip_upstream_at: Some(MIB + MIB / 2),
            ..Behaviour::default()
        },
    );
    let out = run(client(work.path()).args([
        "put",
        &proxy.addr.to_string(),
        "c.bin",
        "--chunk-size",
        "1M",
        "--json",
    ]));
    assert_ok(&out);
    let v = json(&out);
    assert!(num(&v, "chunks_resent") >= 1, "{v}");
    assert!(std::fs::read(server.root.join("c.bin")).unwrap() == data);
}

#[test]
fn two_uploads_to_one_name_one_wins_bytes_never_mix() {
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    let a = write_random(work.path(), "a.bin", (8 * MIB) as usize, 65);
    let b = write_random(work.path(), "b.bin", (8 * MIB) as usize, 66);
    let slow = Behaviour {
        up_rate: 8 * MIB,
        ..Behaviour::default()
    };
    let (pa, pb) = (
        Proxy::start(server.addr, slow.clone()),
        Proxy::start(server.addr, slow),
    );
    let start = |file: &str, via: &Proxy| {
        let mut cmd = client(work.path());
        cmd.args([
            "put",
            &via.addr.to_string(),
            file,
            "same.bin",
            "--max-retries",
            "0",
        ]);
        std::thread::spawn(move || run(&mut cmd))
    };
    let ta = start("a.bin", &pa);
    std::thread::sleep(Duration::from_millis(300));
    let tb = start("b.bin", &pb);
    let (oa, ob) = (ta.join().unwrap(), tb.join().unwrap());
    let ok = [code(&oa), code(&ob)];
    assert!(
        ok.contains(&0) && ok.iter().any(|c| *c != 0),
        "exit codes {ok:?}: {} / {}",
        stderr(&oa),
        stderr(&ob)
    );
    let loser = if code(&oa) == 0 { &ob } else { &oa };
    let text = stderr(loser);
    assert!(
        text.contains("uploading") || text.contains("exists") || text.contains("conflict"),
        "unclear error: {text}"
    );
    let published = std::fs::read(server.root.join("same.bin")).unwrap();
    assert!(
        published == a || published == b,
        "bytes of two uploads mixed"
    );
}

#[test]
fn read_only_server_refuses_uploads_clearly() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    write_random(work.path(), "r.bin", 1000, 67);
    let out = run(client(work.path()).args(["put", &server.target(), "r.bin"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    assert!(visible_files(&server.root).is_empty());
}

#[test]
fn oversize_upload_is_refused_before_any_data_is_stored() {
    let server = Server::start_with(ServerOpts {
        extra: vec![
            "--allow-upload".into(),
            "--max-upload-size".into(),
            "1M".into(),
        ],
        ..ServerOpts::default()
    });
    let work = tempfile::tempdir().unwrap();
    write_random(work.path(), "big.bin", (2 * MIB) as usize, 68);
    let out = run(client(work.path()).args(["put", &server.target(), "big.bin"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("large"), "{}", stderr(&out));
    assert!(visible_files(&server.root).is_empty());
}

#[test]
fn unsafe_remote_names_are_refused_with_a_reason() {
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    write_random(work.path(), "n.bin", 100, 69);
    for name in [
        "CON",
        "dir/nul.txt",
        "trailing.",
        "trailing ",
        "ctl\u{1}x",
        "../up.bin",
        "/abs",
    ] {
        let out = run(client(work.path()).args(["put", &server.target(), "n.bin", name]));
        assert_eq!(code(&out), 4, "{name:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("server refused"),
            "{name:?}: {}",
            stderr(&out)
        );
    }
    assert!(visible_files(&server.root).is_empty());
    // A dangerous parent directory is refused the same way.
    let out = run(client(work.path()).args(["put", &server.target(), "n.bin", "AUX/x.bin"]));
    assert_eq!(code(&out), 4);
}

#[test]
fn list_shows_entries_in_text_and_json() {
    let server = Server::start();
    std::fs::create_dir_all(server.root.join("d/empty")).unwrap();
    std::fs::write(server.root.join("d/x.txt"), vec![1u8; 2048]).unwrap();
    std::fs::write(server.root.join("top.bin"), b"abc").unwrap();
    let work = tempfile::tempdir().unwrap();

    let out = run(client(work.path()).args(["list", &server.target()]));
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains(" d/\n"), "{text}");
    assert!(text.contains("3 B"), "{text}");
    assert!(text.contains(" top.bin\n"), "{text}");

    let out = run(client(work.path()).args(["list", &server.target(), "d", "--json"]));
    assert_ok(&out);
    let v = json(&out);
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["empty", "x.txt"]);
    assert_eq!(v["entries"][1]["size"], 2048);
    assert_eq!(v["entries"][0]["type"], "directory");

    let out = run(client(work.path()).args(["list", &server.target(), "-r", "--json"]));
    assert_ok(&out);
    assert_eq!(json(&out)["total"], 4);

    let out = run(client(work.path()).args(["list", &server.target(), "nope"]));
    assert_eq!(code(&out), 4);
    let out = run(client(work.path()).args(["list", &server.target(), "top.bin"]));
    assert_eq!(code(&out), 4);
}

/// A tmpfs mounted at `at`, unmounted when dropped.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn tmpfs(at: &std::path::Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "sfts-test"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs inside the served root (it needs root, or \
             CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn uploads_into_a_mount_point_inside_the_root_are_published() {
    let server = Server::uploads();
    let _disk = Mounted::tmpfs(&server.root.join("disk"));
    let work = tempfile::tempdir().unwrap();
    let data = write_random(work.path(), "m.bin", 3 << 20, 63);
    let out = run(client(work.path()).args(["put", &server.target(), "m.bin", "disk/m.bin"]));
    assert_ok(&out);
    assert!(std::fs::read(server.root.join("disk/m.bin")).unwrap() == data);
    // Nothing left behind: no copy in the mount, no staged file at the root.
    assert_eq!(visible_files(&server.root.join("disk")), ["m.bin"]);
    assert_eq!(visible_files(&server.root), ["disk/m.bin"]);
    // An existing name is still kept without --force, and replaced with it.
    let out = run(client(work.path()).args(["put", &server.target(), "m.bin", "disk/m.bin"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let new = write_random(work.path(), "m.bin", 1 << 20, 64);
    let out =
        run(client(work.path()).args(["put", &server.target(), "m.bin", "disk/m.bin", "--force"]));
    assert_ok(&out);
    assert!(std::fs::read(server.root.join("disk/m.bin")).unwrap() == new);
    assert_eq!(visible_files(&server.root), ["disk/m.bin"]);
    // The published file's digests are served from the cache: a get verifies.
    let out = run(client(work.path()).args(["get", &server.target(), "disk/m.bin", "-o", "back"]));
    assert_ok(&out);
    assert!(std::fs::read(work.path().join("back")).unwrap() == new);
}
