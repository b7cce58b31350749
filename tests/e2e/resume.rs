//! Transfers that never lose progress: resume after a killed client, reconnect after a killed
//! server, cut and stalled links, repair of a corrupted partial, and a file that changed.

use crate::proxy::{Behaviour, Proxy};
use crate::support::*;
use std::process::Stdio;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = MIB;

fn json(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("--json output {text:?}: {e}"))
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Starts a download through `via`, and kills the client with SIGKILL once the partial holds
/// at least `at` bytes. Returns the partial's size at that moment.
fn download_then_kill(work: &std::path::Path, via: &str, name: &str, at: u64) -> u64 {
    download_then_kill_with(work, via, name, at, "sha256")
}

/// [`download_then_kill`] verifying with `checksum`.
fn download_then_kill_with(
    work: &std::path::Path,
    via: &str,
    name: &str,
    at: u64,
    checksum: &str,
) -> u64 {
    download_then_signal(work, via, name, at, checksum, "KILL")
}

/// Starts a download through `via` and sends the client `sig` once the partial holds at
/// least `at` bytes; waits for it to exit. Returns the partial's size then.
fn download_then_signal(
    work: &std::path::Path,
    via: &str,
    name: &str,
    at: u64,
    checksum: &str,
    sig: &str,
) -> u64 {
    let part = work.join(format!("{name}.sfts-part"));
    let mut cmd = client(work);
    cmd.args([
        "get",
        via,
        name,
        "--chunk-size",
        "1M",
        "--checksum",
        checksum,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let size = || std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(60), || size() >= at),
        "partial never reached {at} bytes"
    );
    signal(child.0.id(), sig);
    let _ = wait_child(&mut child.0, Duration::from_secs(10));
    size()
}

/// A server holding `name` (`size` random bytes from `seed`), behind a proxy passing 4 MiB/s.
fn throttled(name: &str, size: u64, seed: u64) -> (Server, Vec<u8>, Proxy) {
    let server = Server::start();
    let data = write_random(&server.root, name, size as usize, seed);
    let rate = 4 * MIB;
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            rate,
            ..Behaviour::default()
        },
    );
    (server, data, proxy)
}

#[test]
fn killed_client_resumes_fetching_only_the_rest() {
    let server = Server::start();
    let size = 64 * MIB;
    let data = write_random(&server.root, "r.bin", size as usize, 31);
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            rate: 48 * MIB,
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let via = proxy.addr.to_string();
    let at_kill = download_then_kill(work.path(), &via, "r.bin", size / 2);
    let through_proxy = proxy.bytes_down.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        through_proxy >= at_kill,
        "{through_proxy} bytes forwarded, {at_kill} on disk"
    );
    assert!(!work.path().join("r.bin").exists());
    assert!(
        work.path().join("r.bin.sfts-journal").exists(),
        "no journal"
    );

    let out = run(client(work.path()).args(["get", &server.target(), "r.bin", "--json"]));
    assert_ok(&out);
    let v = json(&out);
    let (fetched, reused) = (num(&v, "bytes_fetched"), num(&v, "bytes_reused"));
    eprintln!("killed at {at_kill}, reused {reused}, fetched {fetched}");
    assert_eq!(fetched + reused, size);
    assert!(
        reused + CHUNK >= at_kill.min(size) - CHUNK,
        "reused only {reused} of {at_kill}"
    );
    assert!(
        fetched <= size - at_kill + 2 * CHUNK,
        "fetched {fetched} after {at_kill}"
    );
    assert!(std::fs::read(work.path().join("r.bin")).unwrap() == data);
    assert_eq!(
        v["digests"]["sha256"].as_str().unwrap(),
        coreutils_digest("sha256sum", &server.root.join("r.bin"))
    );
    assert!(!work.path().join("r.bin.sfts-part").exists());
    assert!(!work.path().join("r.bin.sfts-journal").exists());
}

/// Kills a download, flips a byte inside chunk 3 of the partial and resumes with `checksum`:
/// only that chunk is fetched again and the file is whole. Returns the resume's stderr.
fn flipped_byte_case(checksum: &str, seed: u64) -> String {
    let server = Server::start();
    let size = 16 * MIB;
    let data = write_random(&server.root, "f.bin", size as usize, seed);
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            rate: 16 * MIB,
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let via = proxy.addr.to_string();
    download_then_kill_with(work.path(), &via, "f.bin", 10 * MIB, checksum);
    // Corrupt a byte inside chunk 3, well inside the confirmed part.
    let part = work.path().join("f.bin.sfts-part");
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[(3 * CHUNK + 12345) as usize] ^= 0xff;
    std::fs::write(&part, &bytes).unwrap();

    let out = run(client(work.path()).args([
        "get",
        &server.target(),
        "f.bin",
        "--json",
        "-v",
        "--checksum",
        checksum,
    ]));
    assert_ok(&out);
    let v = json(&out);
    let (fetched, reused) = (num(&v, "bytes_fetched"), num(&v, "bytes_reused"));
    assert!(std::fs::read(work.path().join("f.bin")).unwrap() == data);
    assert_eq!(fetched + reused, size, "{v}");
    // What was never confirmed, plus the one bad chunk.
    let confirmed_before = bytes.len() as u64 / CHUNK * CHUNK;
    assert!(
        fetched <= size - confirmed_before + CHUNK + CHUNK,
        "fetched {fetched}, confirmed {confirmed_before}"
    );
    assert!(num(&v, "chunks_repaired") == 1, "{v}");
    assert!(!part.exists());
    stderr(&out)
}

#[test]
fn flipped_byte_in_the_partial_refetches_only_that_chunk() {
    // SHA-256: the whole-file digest continues from the state saved in the journal, and the
    // chunk check runs while the rest downloads.
    let err = flipped_byte_case("sha256", 32);
    assert!(err.contains("from the saved hash state"), "{err}");
    assert!(err.contains("chunk 3 "), "{err}");
}

#[test]
fn flipped_byte_in_the_partial_refetches_only_that_chunk_md5() {
    // MD5's state is saved too: as for SHA-256, the check runs while the rest downloads.
    let err = flipped_byte_case("md5", 34);
    assert!(err.contains("from the saved hash state"), "{err}");
    assert!(err.contains("chunk 3 "), "{err}");
}

#[test]
fn flipped_byte_in_the_partial_refetches_only_that_chunk_xxh128() {
    // XXH128's state cannot be saved either: hashed again before the rest, as for MD5.
    let err = flipped_byte_case("xxh128", 35);
    assert!(!err.contains("from the saved hash state"), "{err}");
    assert!(err.contains("chunk 3 "), "{err}");
}

/// The journal's last line.
fn last_journal_line(work: &std::path::Path, name: &str) -> String {
    let text = std::fs::read_to_string(work.join(format!("{name}.sfts-journal"))).unwrap();
    text.lines().last().unwrap_or_default().to_owned()
}

/// Ctrl-C at 5 of 12 MiB with `checksum`, then the same command again: no read-back.
fn sealed_case(checksum: &str, seed: u64) {
    let (server, data, proxy) = throttled("s.bin", 12 * MIB, seed);
    let work = tempfile::tempdir().unwrap();
    let via = proxy.addr.to_string();
    let at = download_then_signal(work.path(), &via, "s.bin", 5 * MIB, checksum, "INT");
    let seal = last_journal_line(work.path(), "s.bin");
    assert!(seal.starts_with("sealed "), "last journal line: {seal}");

    let out = run(client(work.path()).args([
        "get",
        &server.target(),
        "s.bin",
        "--json",
        "-v",
        "--checksum",
        checksum,
    ]));
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("(sealed), so it is not read back"), "{err}");
    assert!(!err.contains("checking the"), "{err}");
    let v = json(&out);
    assert!(
        num(&v, "bytes_reused") + CHUNK >= at / CHUNK * CHUNK,
        "{v}, {at} on disk"
    );
    assert_eq!(num(&v, "bytes_reused") + num(&v, "bytes_fetched"), 12 * MIB);
    // Every reused byte came from the seal, none was read back.
    assert_eq!(
        num(&v, "bytes_reused_sealed"),
        num(&v, "bytes_reused"),
        "{v}"
    );
    assert!(std::fs::read(work.path().join("s.bin")).unwrap() == data);
}

#[test]
fn a_download_stopped_by_ctrl_c_is_sealed_and_resumed_without_reading_it_back() {
    sealed_case("sha256", 36);
}

#[test]
fn an_md5_download_stopped_by_ctrl_c_is_resumed_without_reading_it_back_too() {
    sealed_case("md5", 40);
}

#[test]
fn a_sealed_partial_changed_afterwards_is_read_back_and_repaired() {
    let (server, data, proxy) = throttled("t.bin", 12 * MIB, 37);
    let work = tempfile::tempdir().unwrap();
    let via = proxy.addr.to_string();
    download_then_signal(work.path(), &via, "t.bin", 6 * MIB, "sha256", "INT");
    assert!(last_journal_line(work.path(), "t.bin").starts_with("sealed "));
    // Another program changes a byte of chunk 3 in place, keeping the size. (The pause lets
    // a coarse file-system clock move on: the change must get a change time of its own.)
    std::thread::sleep(Duration::from_millis(50));
    let part = work.path().join("t.bin.sfts-part");
    let mut f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(3 * CHUNK + 777)).unwrap();
    let at = 3 * CHUNK + 777;
    f.write_all(&[data[at as usize] ^ 0x5a]).unwrap();
    drop(f);

    let out = run(client(work.path()).args(["get", &server.target(), "t.bin", "--json", "-v"]));
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("checking the"), "{err}");
    assert!(err.contains("chunk 3 "), "{err}");
    assert_eq!(num(&json(&out), "chunks_repaired"), 1);
    assert!(std::fs::read(work.path().join("t.bin")).unwrap() == data);
}

#[test]
fn a_resume_whose_check_had_finished_and_a_sealed_resume_are_sealed_again_when_stopped() {
    let (server, data, proxy) = throttled("u.bin", 16 * MIB, 39);
    let work = tempfile::tempdir().unwrap();
    let via = proxy.addr.to_string();
    // A crash in the middle of a write: no seal that holds (a running seal, if any, was
    // taken before that write).
    download_then_kill(work.path(), &via, "u.bin", 3 * MIB);
    let running_seal = last_journal_line(work.path(), "u.bin").starts_with("sealed ");
    write_in_flight(work.path(), "u.bin");
    // Resumed (its check of the 3 MiB is over within milliseconds), then Ctrl-C: sealed,
    // since the check had found every chunk good.
    download_then_signal(work.path(), &via, "u.bin", 7 * MIB, "sha256", "INT");
    assert!(last_journal_line(work.path(), "u.bin").starts_with("sealed "));
    // Resumed from the seal, then Ctrl-C again: sealed again.
    download_then_signal(work.path(), &via, "u.bin", 11 * MIB, "sha256", "INT");
    assert!(last_journal_line(work.path(), "u.bin").starts_with("sealed "));
    let journal = std::fs::read_to_string(work.path().join("u.bin.sfts-journal")).unwrap();
    // Each resume that found a seal last voided it, whether it held or not.
    let found = 1 + usize::from(running_seal);
    assert_eq!(journal.matches("\nunsealed\n").count(), found, "{journal}");

    let out = run(client(work.path()).args(["get", &server.target(), "u.bin", "-v"]));
    assert_ok(&out);
    assert!(stderr(&out).contains("(sealed)"), "{}", stderr(&out));
    assert!(std::fs::read(work.path().join("u.bin")).unwrap() == data);
}

/// What a client killed while it wrote the chunk after its last journal line leaves: bytes
/// past the journaled part, written after the last seal was taken.
fn write_in_flight(work: &std::path::Path, name: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(work.join(format!("{name}.sfts-part")))
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[7; 1000]))
        .unwrap();
}

/// Whether running seals must be taken in `dir`: Linux 6.13+ (multigrain change times) on
/// ext4, tmpfs, XFS or Btrfs.
fn multigrain_here(dir: &std::path::Path) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut n = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let kernel = (n.next().unwrap_or(0), n.next().unwrap_or(0)) >= (6, 13);
    let fs = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    kernel && ["ext2/ext3", "tmpfs", "xfs", "btrfs"].contains(&fs.as_str())
}

#[test]
fn a_download_killed_between_two_chunks_resumes_without_reading_the_partial_back() {
    let server = Server::start();
    let data = write_random(&server.root, "b.bin", (8 * MIB) as usize, 42);
    let work = tempfile::tempdir().unwrap();
    // The link stalls inside the fourth chunk: the client waits there, its last journal line
    // a seal taken after the third.
    let sealed = kill_once_sealed_after(work.path(), &server, "b.bin", (0, 3 * MIB + MIB / 2), 2);
    assert_eq!(
        sealed,
        multigrain_here(work.path()),
        "a running seal after chunk 2"
    );
    let out = run(client(work.path()).args(["get", &server.target(), "b.bin", "-v", "--json"]));
    assert_ok(&out);
    let err = stderr(&out);
    let v = json(&out);
    if sealed {
        assert!(err.contains("(sealed), so it is not read back"), "{err}");
        assert!(!err.contains("checking the"), "{err}");
        assert!(num(&v, "bytes_reused_sealed") >= 3 * MIB, "{v}");
    } else {
        assert!(err.contains("checking the"), "{err}");
    }
    assert!(std::fs::read(work.path().join("b.bin")).unwrap() == data);
}

/// Starts `get name` through a proxy to `server` that passes `rate` bytes/s and stalls after
/// `stall` bytes; kills the client once its journal ends with a seal taken after chunk
/// `chunk`, or after 30 s. Returns whether it did.
fn kill_once_sealed_after(
    work: &std::path::Path,
    server: &Server,
    name: &str,
    (rate, stall): (u64, u64),
    chunk: u64,
) -> bool {
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            rate,
            stall_after: Some(stall),
            ..Behaviour::default()
        },
    );
    let mut cmd = client(work);
    cmd.args(["get", &proxy.addr.to_string(), name, "--chunk-size", "1M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let journal = work.join(format!("{name}.sfts-journal"));
    let sealed = || {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        let mut last = text.lines().rev();
        let (seal, line) = (last.next().unwrap_or(""), last.next().unwrap_or(""));
        text.ends_with('\n')
            && seal.starts_with("sealed ")
            && line.starts_with(&format!("{chunk} "))
    };
    let found = wait_until(Duration::from_secs(30), sealed);
    signal(child.0.id(), "KILL");
    let _ = wait_child(&mut child.0, Duration::from_secs(10));
    found
}

#[test]
fn a_resume_that_checked_its_partial_seals_as_it_goes_once_the_check_is_done() {
    let server = Server::start();
    let data = write_random(&server.root, "g.bin", (8 * MIB) as usize, 43);
    let work = tempfile::tempdir().unwrap();
    // A crash while writing chunk 2: its resume reads chunks 0 and 1 back.
    assert_eq!(
        kill_once_sealed_after(work.path(), &server, "g.bin", (0, 2 * MIB + MIB / 2), 1),
        multigrain_here(work.path())
    );
    write_in_flight(work.path(), "g.bin");
    // The resume (from byte 2 MiB) gets two more chunks, slowly, and stalls in the third:
    // its check is long done by then, so it seals after each, and is killed.
    let sealed = kill_once_sealed_after(
        work.path(),
        &server,
        "g.bin",
        (4 * MIB, 2 * MIB + MIB / 2),
        3,
    );
    assert_eq!(sealed, multigrain_here(work.path()));
    let out = run(client(work.path()).args(["get", &server.target(), "g.bin", "-v", "--json"]));
    assert_ok(&out);
    let err = stderr(&out);
    if sealed {
        assert!(err.contains("(sealed), so it is not read back"), "{err}");
        assert_eq!(num(&json(&out), "bytes_reused_sealed"), 4 * MIB, "{err}");
    }
    assert!(std::fs::read(work.path().join("g.bin")).unwrap() == data);
}

#[test]
fn a_partial_changed_after_its_last_seal_is_read_back_on_resume() {
    let (server, data, proxy) = throttled("k.bin", 8 * MIB, 38);
    let work = tempfile::tempdir().unwrap();
    download_then_kill(work.path(), &proxy.addr.to_string(), "k.bin", 3 * MIB);
    write_in_flight(work.path(), "k.bin");
    let out = run(client(work.path()).args(["get", &server.target(), "k.bin", "-v", "--json"]));
    assert_ok(&out);
    assert!(stderr(&out).contains("checking the"), "{}", stderr(&out));
    let v = json(&out);
    assert!(num(&v, "bytes_reused") > 0, "{v}");
    assert_eq!(num(&v, "bytes_reused_sealed"), 0, "{v}");
    assert!(std::fs::read(work.path().join("k.bin")).unwrap() == data);
}

#[test]
fn a_resume_with_another_checksum_does_not_continue_the_first_ones_state() {
    let (server, data, proxy) = throttled("x.bin", 8 * MIB, 41);
    let work = tempfile::tempdir().unwrap();
    download_then_kill_with(
        work.path(),
        &proxy.addr.to_string(),
        "x.bin",
        3 * MIB,
        "sha256",
    );
    let out = run(client(work.path()).args([
        "get",
        &server.target(),
        "x.bin",
        "--json",
        "-v",
        "--checksum",
        "md5",
    ]));
    assert_ok(&out);
    let err = stderr(&out);
    // The journal's SHA-256 states are no MD5 state: the partial is read and hashed again.
    assert!(!err.contains("from the saved hash state"), "{err}");
    assert!(
        num(&json(&out), "bytes_reused") >= 2 * MIB,
        "{}",
        stdout(&out)
    );
    assert_eq!(
        json(&out)["digests"]["md5"].as_str().unwrap(),
        coreutils_digest("md5sum", &server.root.join("x.bin"))
    );
    assert!(std::fs::read(work.path().join("x.bin")).unwrap() == data);
}

#[test]
fn changed_file_on_the_server_starts_over() {
    let server = Server::start();
    write_random(&server.root, "c.bin", (8 * MIB) as usize, 33);
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            rate: 8 * MIB,
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    download_then_kill(work.path(), &proxy.addr.to_string(), "c.bin", 3 * MIB);
    // Same size, new content, new mtime.
    std::thread::sleep(Duration::from_millis(20));
    let new = write_random(&server.root, "c.bin", (8 * MIB) as usize, 34);
    let out = run(client(work.path()).args(["get", &server.target(), "c.bin", "--json"]));
    assert_ok(&out);
    assert!(stderr(&out).contains("changed"), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(num(&v, "bytes_reused"), 0);
    assert!(std::fs::read(work.path().join("c.bin")).unwrap() == new);
}

#[test]
fn no_resume_starts_over() {
    let (server, data, proxy) = throttled("n.bin", 4 * MIB, 35);
    let work = tempfile::tempdir().unwrap();
    download_then_kill(work.path(), &proxy.addr.to_string(), "n.bin", MIB + 1);
    let out =
        run(client(work.path()).args(["get", &server.target(), "n.bin", "--json", "--no-resume"]));
    assert_ok(&out);
    assert_eq!(num(&json(&out), "bytes_fetched"), 4 * MIB);
    assert!(std::fs::read(work.path().join("n.bin")).unwrap() == data);
}

#[test]
fn connection_cut_every_few_megabytes_still_completes() {
    let server = Server::start();
    let size = 24 * MIB;
    let data = write_random(&server.root, "cut.bin", size as usize, 36);
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            cut_after: Some(5 * MIB),
            cut_connections: 100,
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args([
        "get",
        &proxy.addr.to_string(),
        "cut.bin",
        "--json",
        "--max-retries",
        "20",
    ]));
    assert_ok(&out);
    let v = json(&out);
    assert!(num(&v, "retries") >= 4, "{v}");
    let connections = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        connections >= 5,
        "only {connections} connection(s) through the proxy"
    );
    assert!(num(&v, "bytes_fetched") <= size + 8 * CHUNK, "{v}");
    assert!(std::fs::read(work.path().join("cut.bin")).unwrap() == data);
    assert!(stderr(&out).to_lowercase().contains("reconnect") || num(&v, "retries") > 0);
}

#[test]
fn stalled_link_times_out_and_recovers() {
    let server = Server::start();
    let data = write_random(&server.root, "st.bin", (6 * MIB) as usize, 37);
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            stall_after: Some(2 * MIB),
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args([
        "get",
        &proxy.addr.to_string(),
        "st.bin",
        "--json",
        "--timeout",
        "2",
    ]));
    assert_ok(&out);
    assert!(num(&json(&out), "retries") >= 1);
    assert!(std::fs::read(work.path().join("st.bin")).unwrap() == data);
}

#[test]
fn killed_and_restarted_server_the_client_waits_and_completes() {
    let mut server = Server::start();
    let size = 32 * MIB;
    let data = write_random(&server.root, "k.bin", size as usize, 38);
    let (root, logs, port) = (
        server.root.clone(),
        server.log_dir.clone(),
        server.addr.port(),
    );
    let proxy = Proxy::start(
        server.addr,
        Behaviour {
            rate: 16 * MIB,
            ..Behaviour::default()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let mut cmd = client(work.path());
    cmd.args(["get", &proxy.addr.to_string(), "k.bin", "--json"]);
    let pending = std::thread::spawn(move || run(&mut cmd));
    let part = work.path().join("k.bin.sfts-part");
    assert!(wait_until(Duration::from_secs(60), || std::fs::metadata(
        &part
    )
    .map(|m| m.len() > 8 * MIB)
    .unwrap_or(false)));
    server.signal("KILL");
    server
        .wait_exit(Duration::from_secs(10))
        .expect("kill -9 did not stop the server");
    std::thread::sleep(Duration::from_millis(1500));
    let _restarted = Server::start_in(
        &root,
        &logs,
        &ServerOpts {
            port,
            ..ServerOpts::default()
        },
    );
    let out = pending.join().unwrap();
    assert_ok(&out);
    let v = json(&out);
    assert!(num(&v, "retries") >= 1, "{v}");
    assert!(num(&v, "bytes_fetched") < size + 2 * CHUNK, "{v}");
    assert!(std::fs::read(work.path().join("k.bin")).unwrap() == data);
    drop(proxy);
}

#[test]
fn digests_are_cached_and_a_touched_file_is_hashed_again() {
    let server = Server::start();
    write_random(&server.root, "cache.bin", (8 * MIB) as usize, 39);
    let work = tempfile::tempdir().unwrap();
    let get = |out: &str| {
        let o = run(client(work.path()).args(["get", &server.target(), "cache.bin", "-o", out]));
        assert_ok(&o);
    };
    let count = |needle: &str| server.logs().matches(needle).count();
    // The server's log file is written by a background thread: give it a moment.
    let expect = |needle: &str, n: usize| {
        wait_until(Duration::from_secs(5), || count(needle) >= n);
        assert_eq!(count(needle), n, "{needle}: {}", server.logs());
    };
    get("one");
    expect("hashing 'cache.bin' while sending", 1);
    assert_eq!(count("digest cache hit for 'cache.bin'"), 0);
    get("two");
    expect("digest cache hit for 'cache.bin'", 1);
    assert_eq!(
        count("hashing 'cache.bin' while sending"),
        1,
        "rehashed an unchanged file"
    );
    // The original protocol needs the MD5 first: from the cache, no extra pass.
    let o = run(client(work.path()).args([
        "get",
        "--protocol",
        "legacy",
        &server.target(),
        "cache.bin",
        "-o",
        "three",
    ]));
    assert_ok(&o);
    expect("digest cache hit for 'cache.bin'", 2);
    // A touched file is a new version: hashed again.
    let f = std::fs::File::options()
        .write(true)
        .open(server.root.join("cache.bin"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    get("four");
    expect("hashing 'cache.bin' while sending", 2);
}

/// Takes the lock a running client holds on its partial file.
#[test]
fn a_partial_another_client_holds_is_neither_resumed_nor_replaced() {
    let (server, data, proxy) = throttled("h.bin", 4 * MIB, 36);
    let work = tempfile::tempdir().unwrap();
    download_then_kill(work.path(), &proxy.addr.to_string(), "h.bin", 2 * MIB + 1);
    let part = work.path().join("h.bin.sfts-part");
    let journal = work.path().join("h.bin.sfts-journal");
    let part_before = std::fs::read(&part).unwrap();
    let journal_before = std::fs::read(&journal).expect("the killed download's journal");
    let holder = hold(&part);
    // Resuming it, or starting over (which replaces it): both refused.
    for extra in [None, Some("--no-resume")] {
        let mut cmd = client(work.path());
        cmd.args(["get", &server.target(), "h.bin"]).args(extra);
        let out = run(&mut cmd);
        assert_eq!(code(&out), 1, "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("h.bin.sfts-part' is being written by another sfts-client"),
            "{err}"
        );
        assert!(std::fs::read(&part).unwrap() == part_before, "{extra:?}");
        assert!(
            std::fs::read(&journal).unwrap() == journal_before,
            "{extra:?}"
        );
        assert!(!work.path().join("h.bin").exists());
    }
    drop(holder);
    let out = run(client(work.path()).args(["get", &server.target(), "h.bin", "--json"]));
    assert_ok(&out);
    assert!(num(&json(&out), "bytes_reused") >= MIB, "{}", stderr(&out));
    assert!(std::fs::read(work.path().join("h.bin")).unwrap() == data);
}

#[test]
fn a_second_client_into_the_same_output_stops_and_the_first_finishes() {
    let (server, data, proxy) = throttled("two.bin", 6 * MIB, 37);
    let work = tempfile::tempdir().unwrap();
    let part = work.path().join("two.bin.sfts-part");
    let mut first = client(work.path());
    first
        .args(["get", &proxy.addr.to_string(), "two.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = ChildGuard(first.spawn().unwrap());
    let size = || std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(60), || size() >= MIB),
        "the first download never got going"
    );
    let second = run(client(work.path()).args(["get", &server.target(), "two.bin"]));
    assert_eq!(code(&second), 1, "{}", stderr(&second));
    assert!(
        stderr(&second).contains("is being written by another sfts-client"),
        "{}",
        stderr(&second)
    );
    let status = wait_child(&mut first.0, Duration::from_secs(60)).expect("first client hung");
    assert!(status.success(), "first client: {status:?}");
    assert!(std::fs::read(work.path().join("two.bin")).unwrap() == data);
    assert!(!part.exists());
}

#[test]
fn a_partial_replaced_by_a_symlink_is_not_followed_on_resume() {
    let (server, data, proxy) = throttled("l.bin", 4 * MIB, 38);
    let work = tempfile::tempdir().unwrap();
    download_then_kill(work.path(), &proxy.addr.to_string(), "l.bin", 2 * MIB + 1);
    assert!(work.path().join("l.bin.sfts-journal").exists());
    let part = work.path().join("l.bin.sfts-part");
    let victim = work.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    std::fs::remove_file(&part).unwrap();
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    let out = run(client(work.path()).args(["get", &server.target(), "l.bin", "--json"]));
    assert_ok(&out);
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(num(&json(&out), "bytes_reused"), 0);
    assert!(std::fs::read(work.path().join("l.bin")).unwrap() == data);
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}
