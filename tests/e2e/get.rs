//! Downloads with the native protocol: sizes at the chunk boundaries, digests, output modes.

use crate::support::*;

/// Fetches `name` from `server` into `work/out.bin` with the given extra args; returns the
/// client output after checking the bytes and the printed digest against coreutils.
fn fetch_and_check(server: &Server, name: &str, data: &[u8], extra: &[&str], tool: &str) {
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path())
        .args(["get", &server.target(), name, "-o", "out.bin"])
        .args(extra));
    assert_ok(&out);
    let got = std::fs::read(work.path().join("out.bin")).unwrap();
    assert!(got == data, "{name}: received bytes differ");
    let expected = coreutils_digest(tool, &server.root.join(name));
    assert_eq!(printed_digest(&stdout(&out)), expected, "{name}");
    assert!(
        !work.path().join("out.bin.sfts-part").exists(),
        "temporary file left behind"
    );
}

#[test]
fn sizes_around_chunk_boundaries_are_byte_identical() {
    let server = Server::start();
    let chunk = 65536usize;
    for (i, len) in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{len}.bin");
        let data = write_random(&server.root, &name, len, i as u64);
        fetch_and_check(&server, &name, &data, &["--chunk-size", "64K"], "sha256sum");
    }
}

#[test]
fn large_random_file_sha256_and_md5() {
    let server = Server::start();
    let data = write_random(&server.root, "big.bin", 64 << 20, 42);
    fetch_and_check(&server, "big.bin", &data, &[], "sha256sum");
    fetch_and_check(&server, "big.bin", &data, &["--checksum", "md5"], "md5sum");
    let logs = server.logs();
    assert!(
        logs.contains("50%"),
        "no 10% progress lines in the log:\n{logs}"
    );
}

#[test]
fn default_output_is_the_base_name_and_subdirectories_work() {
    let server = Server::start();
    let data = write_random(&server.root, "sub/dir/file.bin", 5000, 7);
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args(["get", &server.target(), "sub/dir/file.bin"]));
    assert_ok(&out);
    assert_eq!(std::fs::read(work.path().join("file.bin")).unwrap(), data);
    // An existing directory as -o: the file lands inside it.
    std::fs::create_dir(work.path().join("into")).unwrap();
    let out =
        run(client(work.path()).args(["get", &server.target(), "sub/dir/file.bin", "-o", "into"]));
    assert_ok(&out);
    assert_eq!(
        std::fs::read(work.path().join("into/file.bin")).unwrap(),
        data
    );
}

#[test]
fn stdout_output_carries_only_the_data() {
    let server = Server::start();
    let data = write_random(&server.root, "s.bin", 300_000, 3);
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args(["get", &server.target(), "s.bin", "-o", "-"]));
    assert_ok(&out);
    assert!(out.stdout == data, "stdout is not exactly the file");
    let expected = coreutils_digest("sha256sum", &server.root.join("s.bin"));
    assert_eq!(printed_digest(&stderr(&out)), expected);
}

#[test]
fn existing_target_needs_force() {
    let server = Server::start();
    let data = write_random(&server.root, "a.bin", 1000, 9);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("a.bin"), b"precious").unwrap();
    let out = run(client(work.path()).args(["get", &server.target(), "a.bin"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(work.path().join("a.bin")).unwrap(),
        b"precious"
    );
    let out = run(client(work.path()).args(["get", &server.target(), "a.bin", "--force"]));
    assert_ok(&out);
    assert_eq!(std::fs::read(work.path().join("a.bin")).unwrap(), data);
}

#[test]
fn not_found_and_directory_are_refused() {
    let server = Server::start();
    std::fs::create_dir(server.root.join("adir")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args(["get", &server.target(), "missing.bin"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = run(client(work.path()).args(["get", &server.target(), "adir", "-o", "x"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    let left: Vec<String> = names(work.path())
        .into_iter()
        .filter(|n| n != "logs")
        .collect();
    assert!(left.is_empty(), "refused downloads left files: {left:?}");
}

#[test]
fn ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback on this machine");
        return;
    }
    let server = Server::start_with(ServerOpts {
        bind: "::1".into(),
        ..ServerOpts::default()
    });
    let data = write_random(&server.root, "v6.bin", 100_000, 6);
    let work = tempfile::tempdir().unwrap();
    let target = format!("[::1]:{}", server.addr.port());
    let out = run(client(work.path()).args([
        "get",
        &target,
        "v6.bin",
        "-o",
        "out.bin",
        "--checksum",
        "md5",
    ]));
    assert_ok(&out);
    assert_eq!(std::fs::read(work.path().join("out.bin")).unwrap(), data);
}

#[test]
fn client_and_server_write_log_files_in_the_sfts_format() {
    let server = Server::start();
    write_random(&server.root, "l.bin", 10, 1);
    let work = tempfile::tempdir().unwrap();
    assert_ok(&run(client(work.path()).args([
        "get",
        &server.target(),
        "l.bin",
    ])));
    let logs = names(&work.path().join("logs"));
    assert!(
        logs.iter()
            .any(|n| n.starts_with("client_") && n.ends_with(".log")),
        "{logs:?}"
    );
    let text = std::fs::read_to_string(work.path().join("logs").join(&logs[0])).unwrap();
    let line = text.lines().next().expect("client log is empty");
    // YYYY-MM-DD HH:MM:SS - ThreadName - LEVEL - Message
    let parts: Vec<&str> = line.splitn(4, " - ").collect();
    assert_eq!(parts.len(), 4, "{line}");
    assert_eq!(parts[0].len(), 19, "{line}");
    assert!(
        ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&parts[2]),
        "{line}"
    );
    let server_logs = names(&server.log_dir);
    assert!(
        server_logs.iter().any(|n| n.starts_with("server_")),
        "{server_logs:?}"
    );
    assert!(
        server.logs().contains(" - client-"),
        "worker threads are not named"
    );
}

#[test]
fn blake3_is_offered_verified_and_cached() {
    use sfts_protocol::{Algorithm, DigestSet, MultiHasher};
    let server = Server::start();
    let data = write_random(&server.root, "b3.bin", 9 << 20, 43);
    let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Blake3]));
    h.update(&data);
    let want = h.finish().remove(0).to_hex();
    let work = tempfile::tempdir().unwrap();
    for (i, out_name) in ["one", "two"].iter().enumerate() {
        let out = run(client(work.path()).args([
            "get",
            &server.target(),
            "b3.bin",
            "-o",
            out_name,
            "--checksum",
            "blake3",
        ]));
        assert_ok(&out);
        assert_eq!(printed_digest(&stdout(&out)), want, "run {i}");
        assert!(std::fs::read(work.path().join(out_name)).unwrap() == data);
    }
    // The second run came from the digest cache.
    assert!(
        wait_until(std::time::Duration::from_secs(5), || server
            .logs()
            .contains("digest cache hit for 'b3.bin'")),
        "{}",
        server.logs()
    );
}

#[test]
fn xxh128_is_offered_verified_cached_and_checked_by_verify() {
    use sfts_protocol::{Algorithm, DigestSet, MultiHasher};
    let server = Server::start();
    let data = write_random(&server.root, "x.bin", 9 << 20, 44);
    let mut h = MultiHasher::new(DigestSet::of(&[Algorithm::Xxh128]));
    h.update(&data);
    let want = h.finish().remove(0).to_hex();
    assert_eq!(want.len(), 32);
    let work = tempfile::tempdir().unwrap();
    // To a file, then (by its alias) to standard output: the second from the digest cache.
    let out = run(client(work.path()).args([
        "get",
        &server.target(),
        "x.bin",
        "-o",
        "one",
        "--checksum",
        "xxh128",
    ]));
    assert_ok(&out);
    assert_eq!(printed_digest(&stdout(&out)), want);
    assert!(std::fs::read(work.path().join("one")).unwrap() == data);
    let out = run(client(work.path()).args([
        "get",
        &server.target(),
        "x.bin",
        "-o",
        "-",
        "--checksum",
        "xxh3",
    ]));
    assert_ok(&out);
    assert!(out.stdout == data);
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert!(
        wait_until(std::time::Duration::from_secs(5), || server
            .logs()
            .contains("digest cache hit for 'x.bin'")),
        "{}",
        server.logs()
    );
    // verify: against the server's, and against a given checksum; a different file differs.
    let verify = |args: &[&str]| run(client(work.path()).arg("verify").args(args));
    let target = server.target();
    assert_ok(&verify(&["one", &target, "x.bin", "--algo", "xxh128"]));
    assert_ok(&verify(&["one", "--checksum", &want, "--algo", "xxh128"]));
    // 32 digits without --algo: an MD5 or an XXH128, whichever the file has.
    let out = verify(&["one", "--checksum", &want, "--json"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("\"xxh128\""), "{}", stdout(&out));
    std::fs::write(work.path().join("other"), b"not the same").unwrap();
    let out = verify(&["other", "--checksum", &want, "--algo", "xxh128"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let out = verify(&["other", "--checksum", &want]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        (stdout(&out) + &stderr(&out)).contains("nor is it the file's xxh128"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_server_without_xxh128_is_not_asked_for_it() {
    use crate::fakes::older_native_server;
    use sfts_protocol::Capabilities;
    // The release before XXH128: everything else, BLAKE3 included.
    let caps = Capabilities::GET
        | Capabilities::RESUME
        | Capabilities::STAT
        | Capabilities::LIST
        | Capabilities::MULTI_REQUEST
        | Capabilities::BLAKE3;
    let (addr, server) = older_native_server(caps, 2);
    let work = tempfile::tempdir().unwrap();
    let target = addr.to_string();
    for args in [
        &["get", &target, "f.bin", "--checksum", "xxh128"][..],
        &["get", "-r", &target, "tree", "--checksum", "xxh3"][..],
    ] {
        let out = run(client(work.path()).args(args));
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("does not compute XXH128 digests") && err.contains("sha256"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(server.join().unwrap(), Vec::<String>::new());
    // Nothing written either (a `tree` directory or a partial file).
    let written: Vec<String> = names(work.path())
        .into_iter()
        .filter(|n| n != "logs")
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
