//! Whole trees: `put -r` then `get -r` of 2,000 small files with nested empty directories,
//! mtimes kept, and reruns that move only what is missing.

use crate::support::*;
use std::path::Path;

fn json(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("JSON {text:?}: {e}"))
}

/// Builds a tree: `files` small files spread over nested directories, plus empty ones.
fn build_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i % 10, i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let len = (i * 37) % 5000;
        let content: Vec<u8> = (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        std::fs::write(dir.join(format!("f{i}.dat")), content).unwrap();
    }
    std::fs::create_dir_all(root.join("empty/deeper/deepest")).unwrap();
    std::fs::create_dir_all(root.join("d3/also-empty")).unwrap();
    // One file larger than a chunk, to take the single-file path inside a tree.
    write_random(&root.join("d0"), "large.bin", 3 << 20, 71);
}

/// A file's content and modification time (`None` for a directory).
type FileState = Option<(Vec<u8>, std::time::SystemTime)>;

/// Every file and directory under `root`, with sizes, mtimes (files) and contents.
fn snapshot(root: &Path) -> Vec<(String, FileState)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.push((rel, None));
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.push((rel, Some((std::fs::read(&p).unwrap(), m))));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn tree_of_2000_small_files_round_trips_with_mtimes_and_empty_dirs() {
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    build_tree(&src, 2000);

    let out =
        run(client(work.path()).args(["put", "-r", &server.target(), "src", "tree", "--json"]));
    assert_ok(&out);
    let v = json(&out);
    assert_eq!(v["files"], 2001, "{v}");
    assert_eq!(
        snapshot(&src),
        snapshot(&server.root.join("tree")),
        "server copy differs"
    );

    let out = run(client(work.path()).args([
        "get",
        "-r",
        &server.target(),
        "tree",
        "-o",
        "copy",
        "--json",
    ]));
    assert_ok(&out);
    assert_eq!(json(&out)["files"], 2001);
    assert_eq!(
        snapshot(&src),
        snapshot(&work.path().join("copy")),
        "local copy differs"
    );

    // Reruns move nothing.
    let out = run(client(work.path()).args([
        "get",
        "-r",
        &server.target(),
        "tree",
        "-o",
        "copy",
        "--json",
    ]));
    assert_ok(&out);
    let v = json(&out);
    assert_eq!(
        (v["files"].as_u64(), v["unchanged"].as_u64()),
        (Some(0), Some(2001)),
        "{v}"
    );
    let out =
        run(client(work.path()).args(["put", "-r", &server.target(), "src", "tree", "--json"]));
    assert_ok(&out);
    assert_eq!(json(&out)["files"], 0);

    // Remove some local files: only those come back.
    std::fs::remove_file(work.path().join("copy/d1/e1/f1.dat")).unwrap();
    std::fs::remove_file(work.path().join("copy/d0/large.bin")).unwrap();
    let out = run(client(work.path()).args([
        "get",
        "-r",
        &server.target(),
        "tree",
        "-o",
        "copy",
        "--json",
    ]));
    assert_ok(&out);
    assert_eq!(json(&out)["files"], 2);
    assert_eq!(snapshot(&src), snapshot(&work.path().join("copy")));

    // A local file that differs is kept unless --force replaces it.
    let mine = work.path().join("copy/d1/e1/f1.dat");
    std::fs::write(&mine, b"my own edit").unwrap();
    let target = server.target();
    let get_again = |force: bool| {
        let mut args = vec!["get", "-r", &target, "tree", "-o", "copy", "--json"];
        args.extend(force.then_some("--force"));
        run(client(work.path()).args(args))
    };
    let out = get_again(false);
    assert!(!out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("exists and differs; use --force"), "{said}");
    assert_eq!(std::fs::read(&mine).unwrap(), b"my own edit");
    let out = get_again(true);
    assert_ok(&out);
    assert_eq!(json(&out)["files"], 1);
    assert_eq!(snapshot(&src), snapshot(&work.path().join("copy")));
    assert!(!work.path().join("copy/d1/e1/f1.dat.sfts-part").exists());
}

#[test]
fn get_r_skips_symlinks_leading_out_of_the_root() {
    let server = Server::start();
    std::fs::create_dir_all(server.root.join("t/sub")).unwrap();
    std::fs::write(server.root.join("t/sub/a.txt"), b"a").unwrap();
    let outside = server.root.parent().unwrap().join("secret.txt");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, server.root.join("t/leak")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args(["get", "-r", &server.target(), "t", "--json"]));
    assert_ok(&out);
    let v = json(&out);
    assert_eq!(v["files"], 1);
    assert_eq!(v["skipped"], 1);
    assert!(!work.path().join("t/leak").exists());
    assert_eq!(
        std::fs::read(work.path().join("t/sub/a.txt")).unwrap(),
        b"a"
    );
}

#[test]
fn get_r_into_the_current_directory_looks_at_what_is_there() {
    let server = Server::start();
    std::fs::create_dir_all(server.root.join("t/sub")).unwrap();
    std::fs::write(server.root.join("t/sub/a.txt"), b"a").unwrap();
    std::fs::write(server.root.join("t/b.txt"), b"b").unwrap();
    let work = tempfile::tempdir().unwrap();
    // The current directory exists, so its files are looked at first (clap refuses `-o ""`).
    std::fs::write(work.path().join("b.txt"), b"mine").unwrap();
    let get =
        || run(client(work.path()).args(["get", "-r", &server.target(), "t", "-o", ".", "--json"]));
    let out = get();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(work.path().join("b.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(work.path().join("sub/a.txt")).unwrap(), b"a");
    std::fs::remove_file(work.path().join("b.txt")).unwrap();
    let out = get();
    assert_ok(&out);
    assert_eq!(std::fs::read(work.path().join("b.txt")).unwrap(), b"b");
    let v = json(&out);
    assert_eq!(
        (v["files"].as_u64(), v["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
}

#[test]
fn get_r_leaves_a_small_file_another_client_is_writing_and_fetches_the_rest() {
    let server = Server::start();
    std::fs::create_dir_all(server.root.join("t/sub")).unwrap();
    for (name, body) in [
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("c.txt", "c"),
        ("sub/d.txt", "d"),
    ] {
        std::fs::write(server.root.join("t").join(name), body).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    // Another client's partial b.txt, locked as a running client locks it.
    let part = out_dir.join("b.txt.sfts-part");
    std::fs::write(&part, b"half of someone else's b").unwrap();
    let holder = hold(&part);
    let get = || {
        run(client(work.path()).args(["get", "-r", &server.target(), "t", "-o", "out", "--json"]))
    };
    let out = get();
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        (v["status"].as_str(), v["files"].as_u64()),
        (Some("partial"), Some(3)),
        "{v}"
    );
    let failed = v["failed"].as_array().expect("a list of failures");
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["path"], "b.txt", "{v}");
    let why = failed[0]["error"].as_str().unwrap();
    assert!(
        why.contains("is being written by another sfts-client"),
        "{why}"
    );
    // The rest of the tree came; the other client's partial was not touched.
    for (name, body) in [("a.txt", "a"), ("c.txt", "c"), ("sub/d.txt", "d")] {
        assert_eq!(
            std::fs::read(out_dir.join(name)).unwrap(),
            body.as_bytes(),
            "{name}"
        );
    }
    assert!(!out_dir.join("b.txt").exists());
    assert_eq!(std::fs::read(&part).unwrap(), b"half of someone else's b");
    // Once that client is gone, its leftover is stale: replaced and the file fetched.
    drop(holder);
    let out = get();
    assert_ok(&out);
    assert_eq!(std::fs::read(out_dir.join("b.txt")).unwrap(), b"b");
    assert!(!part.exists());
}

#[test]
fn get_r_verifies_every_file_with_the_mode_asked_for() {
    let server = Server::start();
    let src = server.root.join("t");
    build_tree(&src, 40);
    let work = tempfile::tempdir().unwrap();
    for mode in ["xxh128", "blake3", "md5"] {
        let out = run(client(work.path()).args([
            "get",
            "-r",
            &server.target(),
            "t",
            "-o",
            mode,
            "--checksum",
            mode,
            "--json",
        ]));
        assert_ok(&out);
        assert_eq!(json(&out)["files"].as_u64(), Some(41), "{mode}");
        let theirs: Vec<_> = snapshot(&src)
            .into_iter()
            .map(|(p, s)| (p, s.map(|s| s.0)))
            .collect();
        let ours: Vec<_> = snapshot(&work.path().join(mode))
            .into_iter()
            .map(|(p, s)| (p, s.map(|s| s.0)))
            .collect();
        assert!(theirs == ours, "{mode}: the trees differ");
    }
}

#[test]
fn put_r_with_a_small_file_corrupted_in_flight_sends_it_again_and_loses_nothing() {
    use crate::proxy::{Behaviour, Proxy};
    let server = Server::uploads();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    // 100 files of 60 KiB, all small (one chunk each), more than one window of them in
    // flight: the byte flipped about 2 MB into the upload is, all but certainly, in one of
    // their chunks (the rest are frame headers; a flipped header closes the connection,
    // which must lose nothing either).
    for i in 0..100u64 {
        write_random(
            &src.join(format!("d{}", i % 3)),
            &format!("f{i:03}.bin"),
            60 << 10,
            300 + i,
        );
    }
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            flip_upstream_at: Some(2_000_000),
            ..Behaviour::default()
        },
    );
    let out = run(client(work.path()).args([
        "put",
        "-r",
        &proxy.addr.to_string(),
        "src",
        "tree",
        "--json",
    ]));
    assert_ok(&out);
    let v = json(&out);
    assert_eq!(v["files"], 100, "{v}");
    assert_eq!(v["failed"].as_array().map(Vec::len), Some(0), "{v}");
    let theirs = snapshot(&server.root.join("tree"));
    let ours = snapshot(&src);
    let contents = |s: &[(String, FileState)]| -> Vec<(String, Option<Vec<u8>>)> {
        s.iter()
            .map(|(n, f)| (n.clone(), f.as_ref().map(|(b, _)| b.clone())))
            .collect()
    };
    assert!(
        contents(&theirs) == contents(&ours),
        "the server's copy differs"
    );
}

#[test]
fn get_r_refuses_a_small_file_corrupted_in_flight_and_keeps_the_rest() {
    use crate::proxy::{Behaviour, Proxy};
    let server = Server::start();
    // Ten files of 64 KiB: the byte flipped half way through the stream is a file's.
    let mut want = Vec::new();
    for i in 0..10u64 {
        let name = format!("t/f{i}.bin");
        want.push((
            format!("f{i}.bin"),
            write_random(&server.root, &name, 64 << 10, 70 + i),
        ));
    }
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            flip_at: Some(5 * (64 << 10) + 3000),
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let get =
        |via: &str| run(client(work.path()).args(["get", "-r", via, "t", "-o", "out", "--json"]));
    let out = get(&proxy.addr.to_string());
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let v = json(&out);
    let failed = v["failed"].as_array().expect("a list of failures");
    assert_eq!(failed.len(), 1, "{v}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("integrity check failed"),
        "{v}"
    );
    let bad = failed[0]["path"].as_str().unwrap().to_string();
    assert_eq!(v["files"].as_u64(), Some(9), "{v}");
    // Nothing of the damaged file, under its name or beside it; the others whole.
    let out_dir = work.path().join("out");
    assert!(!out_dir.join(&bad).exists(), "{bad} was published");
    assert!(!out_dir.join(format!("{bad}.sfts-part")).exists());
    for (name, data) in &want {
        if *name != bad {
            assert!(
                std::fs::read(out_dir.join(name)).unwrap() == *data,
                "{name}"
            );
        }
    }
    // A rerun straight to the server fetches just that one.
    let out = get(&server.target());
    assert_ok(&out);
    assert_eq!(json(&out)["files"].as_u64(), Some(1));
    assert!(
        std::fs::read(out_dir.join(&bad)).unwrap() == want.iter().find(|w| w.0 == bad).unwrap().1
    );
}

#[test]
fn get_r_leaves_remote_names_that_look_like_partial_downloads_alone() {
    let server = Server::start();
    let t = server.root.join("t");
    std::fs::create_dir_all(t.join("old.sfts-journal")).unwrap();
    // A large file (fetched after the small ones) and a small file named like its partial:
    // fetched, the latter would be taken for a stale partial of the former and removed.
    let big = write_random(&server.root, "t/x", 1536 << 10, 81);
    std::fs::write(t.join("x.sfts-part"), b"not a partial").unwrap();
    std::fs::write(t.join("old.sfts-journal/y"), b"y").unwrap();
    std::fs::write(t.join("z"), b"z").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out =
        run(client(work.path()).args(["get", "-r", &server.target(), "t", "-o", "out", "--json"]));
    assert_ok(&out);
    let v = json(&out);
    assert_eq!(
        (v["files"].as_u64(), v["skipped"].as_u64()),
        (Some(2), Some(3)),
        "{v}"
    );
    let got = work.path().join("out");
    assert!(std::fs::read(got.join("x")).unwrap() == big);
    assert_eq!(std::fs::read(got.join("z")).unwrap(), b"z");
    assert_eq!(names(&got), ["x", "z"]);
    assert!(
        stderr(&out).contains("ends like the partial files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ctrl_c_while_the_listing_comes_is_an_interruption() {
    use crate::proxy::{Behaviour, Proxy};
    use std::process::Stdio;
    use std::time::Duration;
    let server = Server::start();
    build_tree(&server.root.join("t"), 3000);
    // About 120 KB of listing at 20 KB/s: several seconds to come.
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            rate: 20_000,
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let mut child = client(work.path())
        .args(["get", "-r", &proxy.addr.to_string(), "t", "-o", "out"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status =
        wait_child(&mut child, Duration::from_secs(20)).expect("still running 20 s after Ctrl-C");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
}

#[test]
fn get_r_publishes_files_too_large_for_the_writer_queue_the_same_way() {
    // 600 KiB: more than the writer thread takes (256 KiB), less than a chunk (1 MiB), so
    // received and published on the connection's thread.
    let server = Server::start();
    let data = write_random(&server.root, "t/mid.bin", 600 << 10, 91);
    std::fs::write(server.root.join("t/small.txt"), b"s").unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(server.root.join("t/mid.bin"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args(["get", "-r", &server.target(), "t", "-o", "out"]));
    assert_ok(&out);
    let got = work.path().join("out");
    assert!(std::fs::read(got.join("mid.bin")).unwrap() == data);
    let m = std::fs::metadata(got.join("mid.bin")).unwrap();
    assert_eq!(m.modified().unwrap(), when);
    assert_eq!(names(&got), ["mid.bin", "small.txt"]);
}
