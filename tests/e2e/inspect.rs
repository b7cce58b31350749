//! `stat` and `verify` against a real server, in text and JSON; environment variables.

use crate::support::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("JSON {text:?}: {e}"))
}

#[test]
fn stat_shows_size_time_and_both_digests() {
    let server = Server::start();
    std::fs::create_dir(server.root.join("d")).unwrap();
    std::fs::write(server.root.join("d/abc.txt"), b"abc").unwrap();
    let work = tempfile::tempdir().unwrap();

    let out = run(client(work.path()).args(["stat", &server.target(), "d/abc.txt"]));
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("type      file"), "{text}");
    assert!(text.contains("size      3 (3 B)"), "{text}");
    assert!(
        text.contains("sha256    ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        "{text}"
    );
    assert!(
        text.contains("md5       900150983cd24fb0d6963f7d28e17f72"),
        "{text}"
    );

    let out = run(client(work.path()).args(["stat", &server.target(), "d/abc.txt", "--json"]));
    assert_ok(&out);
    let v = json(&out);
    assert_eq!(v["type"], "file");
    assert_eq!(v["size"], 3);
    assert_eq!(v["md5"], "900150983cd24fb0d6963f7d28e17f72");
    let mtime = std::fs::metadata(server.root.join("d/abc.txt"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert_eq!(v["mtime_ns"].as_u64().unwrap(), mtime);

    let out = run(client(work.path()).args(["stat", &server.target(), "d", "--json"]));
    assert_ok(&out);
    assert_eq!(json(&out)["type"], "directory");

    let out = run(client(work.path()).args(["stat", &server.target(), "nope"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let out = run(client(work.path()).args(["stat", &server.target(), "../x", "--json"]));
    assert_eq!(code(&out), 4);
    assert_eq!(json(&out)["status"], "error");
}

#[test]
fn verify_against_a_checksum_and_against_the_server() {
    let server = Server::start();
    let data = write_random(&server.root, "v.bin", 3 << 20, 51);
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("v.bin");
    std::fs::write(&local, &data).unwrap();
    let sha = coreutils_digest("sha256sum", &local);
    let md5 = coreutils_digest("md5sum", &local);

    for hex in [&sha, &md5] {
        let out = run(client(work.path()).args(["verify", "v.bin", "--checksum", hex]));
        assert_ok(&out);
        assert!(stdout(&out).starts_with("v.bin: OK"), "{}", stdout(&out));
    }
    let out = run(client(work.path()).args(["verify", "v.bin", "--checksum", &"0".repeat(64)]));
    assert_eq!(code(&out), 5);
    assert!(stdout(&out).contains("MISMATCH"), "{}", stdout(&out));
    let out = run(client(work.path()).args(["verify", "v.bin", "--checksum", "xyz"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    let out = run(client(work.path()).args(["verify", "v.bin", &server.target(), "v.bin"]));
    assert_ok(&out);
    assert!(stdout(&out).contains(&sha), "{}", stdout(&out));
    let out = run(client(work.path()).args([
        "verify",
        "v.bin",
        &server.target(),
        "v.bin",
        "--algo",
        "md5",
        "--json",
    ]));
    assert_ok(&out);
    let v = json(&out);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["expected"], md5.as_str());

    // One byte different, same size: a mismatch, exit 5.
    let mut changed = data.clone();
    changed[12345] ^= 1;
    std::fs::write(&local, &changed).unwrap();
    let out = run(client(work.path()).args(["verify", "v.bin", &server.target(), "v.bin"]));
    assert_eq!(code(&out), 5);
    assert!(stdout(&out).contains("MISMATCH"), "{}", stdout(&out));
    // Another size: a mismatch without hashing.
    std::fs::write(&local, b"short").unwrap();
    let out =
        run(client(work.path()).args(["verify", "v.bin", &server.target(), "v.bin", "--json"]));
    assert_eq!(code(&out), 5);
    assert!(json(&out)["reason"]
        .as_str()
        .unwrap()
        .contains("sizes differ"));
}

#[test]
fn environment_supplies_the_server_and_settings_and_flags_win() {
    let server = Server::start();
    let data = write_random(&server.root, "e.bin", 100_000, 52);
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path())
        .env("SFTS_SERVER", server.target())
        .env("SFTS_CHUNK_SIZE", "64K")
        .env("SFTS_TIMEOUT", "5")
        .env("SFTS_MAX_RETRIES", "3")
        .args(["get", "e.bin", "--json"]));
    assert_ok(&out);
    assert!(std::fs::read(work.path().join("e.bin")).unwrap() == data);
    assert!(
        client_logs(work.path()).contains("chunk size 65536"),
        "chunk size from SFTS_CHUNK_SIZE not used"
    );

    // A bad value in the environment is a usage error naming it.
    let out = run(client(work.path())
        .env("SFTS_SERVER", server.target())
        .env("SFTS_CHUNK_SIZE", "1")
        .args(["get", "e.bin", "-o", "x"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("chunk"), "{}", stderr(&out));
    // The flag wins over the environment.
    let out = run(client(work.path())
        .env("SFTS_SERVER", server.target())
        .env("SFTS_CHUNK_SIZE", "64K")
        .args(["get", "e.bin", "-o", "y", "--chunk-size", "8K"]));
    assert_ok(&out);
    assert!(client_logs(work.path()).contains("chunk size 8192"));

    // No server anywhere: a usage error that says how to give one.
    let out = run(client(work.path())
        .env_remove("SFTS_SERVER")
        .args(["get", "e.bin"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("SFTS_SERVER"), "{}", stderr(&out));

    let out = run(client(work.path()).args(["get", "--help"]));
    let help = stdout(&out);
    for var in [
        "SFTS_SERVER",
        "SFTS_MAX_RETRIES",
        "SFTS_CHUNK_SIZE",
        "SFTS_TIMEOUT",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
}
