//! Many clients, hostile bytes, retries before the server is up, limits and shutdown.

use crate::fakes::*;
use crate::support::*;
use sfts_protocol::io::write_message;
use sfts_protocol::{Capabilities, Message};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn twenty_concurrent_clients() {
    let server = Server::start();
    let data = write_random(&server.root, "c.bin", 2 << 20, 20);
    let work = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let target = server.target();
            let dir = work.path().to_path_buf();
            std::thread::spawn(move || {
                run(client(&dir).args(["get", &target, "c.bin", "-o", &format!("out{i}.bin")]))
            })
        })
        .collect();
    for h in handles {
        assert_ok(&h.join().unwrap());
    }
    for i in 0..20 {
        let got = std::fs::read(work.path().join(format!("out{i}.bin"))).unwrap();
        assert!(got == data, "client {i} got different bytes");
    }
}

#[test]
fn client_started_before_the_server_retries_then_succeeds() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("share");
    std::fs::create_dir(&root).unwrap();
    let data = write_random(&root, "late.bin", 10_000, 4);
    let work = tempfile::tempdir().unwrap();
    let mut cmd = client(work.path());
    cmd.args([
        "get",
        &format!("127.0.0.1:{port}"),
        "late.bin",
        "--retries",
        "5",
    ]);
    let pending = std::thread::spawn(move || run(&mut cmd));
    std::thread::sleep(Duration::from_millis(1500));
    let _server = Server::start_in(
        &root,
        &dir.path().join("logs"),
        &ServerOpts {
            port,
            ..ServerOpts::default()
        },
    );
    let out = pending.join().unwrap();
    assert_ok(&out);
    assert!(
        stderr(&out).to_lowercase().contains("retry"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(work.path().join("late.bin")).unwrap(), data);
}

#[test]
fn no_server_means_exit_code_3() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let work = tempfile::tempdir().unwrap();
    let out =
        run(client(work.path()).args(["get", &format!("127.0.0.1:{port}"), "x", "--retries", "1"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[test]
fn ctrl_c_with_transfers_in_flight() {
    let mut server = Server::start();
    // A large sparse file: plenty of bytes still to go when the signal arrives.
    let f = std::fs::File::create(server.root.join("huge.bin")).unwrap();
    f.set_len(8 << 30).unwrap();
    drop(f);

    // A client that asked for the file and then stopped reading: its worker is blocked in a write.
    let mut stalled = native_session(server.addr);
    let mut scratch = Vec::new();
    write_message(
        &mut stalled,
        &Message::Get(sfts_protocol::GetRequest::whole(
            "huge.bin",
            1 << 20,
            sfts_protocol::DigestSet::EMPTY,
        )),
        &mut scratch,
    )
    .unwrap();

    let work = tempfile::tempdir().unwrap();
    let part = work.path().join("huge.out.sfts-part");
    let mut cmd = client(work.path());
    // No reconnection: this test is about the server's shutdown, not the client's patience
    // (resume.rs has the client waiting for a restarted server).
    cmd.args(["get", &server.target(), "huge.bin", "-o", "huge.out"])
        .args(["--max-retries", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut downloading = ChildGuard(cmd.spawn().unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::metadata(&part)
            .map(|m| m.len() > 0)
            .unwrap_or(false)),
        "download never started"
    );

    let signalled = Instant::now();
    server.signal("INT");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server still running 10 s after Ctrl-C");
    let took = signalled.elapsed();
    assert!(status.success(), "server exit status {status:?}");
    eprintln!("server stopped {took:?} after Ctrl-C");

    let client_status =
        wait_child(&mut downloading.0, Duration::from_secs(30)).expect("client hangs");
    let mut err = String::new();
    downloading
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(client_status.code(), Some(6), "{err}");
    assert!(
        !work.path().join("huge.out").exists(),
        "partial under the final name"
    );
    assert!(part.exists(), "partial data not kept");
    assert!(
        work.path().join("huge.out.sfts-journal").exists(),
        "no resume journal beside the partial data"
    );
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(server.logs().contains("shutdown"), "{}", server.logs());
    // The stalled connection was closed too.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut closed = false;
    for _ in 0..10_000 {
        match stalled.read(&mut sink) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "stalled connection still open");
}

#[test]
fn sigterm_stops_an_idle_server_with_exit_0() {
    let mut server = Server::start();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("still running");
    assert!(status.success(), "{status:?}");
}

/// Sends `bytes` on a fresh connection, then closes it (after reading whatever comes back).
fn hostile(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut sink);
}

#[test]
fn garbage_and_truncated_requests_do_not_disturb_other_clients() {
    let server = Server::start();
    let data = write_random(&server.root, "g.bin", 500_000, 8);
    // A well-behaved session opened before the garbage and used after it.
    let mut steady = native_session(server.addr);
    // A half-open connection that never says anything.
    let _silent = TcpStream::connect(server.addr).unwrap();

    let mut hello = Vec::new();
    Message::Hello {
        version: 1,
        capabilities: Capabilities(Capabilities::GET),
        agent: "x".into(),
    }
    .encode(&mut hello);
    let with_magic = |rest: &[u8]| [&sfts_protocol::MAGIC[..], rest].concat();
    let cases: Vec<Vec<u8>> = vec![
        random_bytes(4096, 99),
        with_magic(&hello[..hello.len() / 2]),
        with_magic(&[0xff, 0xff, 0xff, 0xff, 0x12]),
        with_magic(&[0, 0, 0, 0, 0x01]),
        with_magic(&[0, 0, 0, 1, 0x66]),
        with_magic(&[&hello[..], &[0, 0, 0, 3, 0x12, 1, 2]].concat()),
        with_magic(&[&hello[..], &hello[..]].concat()),
        with_magic(&[&hello[..], &[0xff, 0xff, 0xff, 0xff, 0x10]].concat()),
        vec![0xff, 0xff, 0xff, 0xf0],
        vec![0, 0, 0, 10, b'a', b'b'],
        vec![0, 0, 0, 0],
        vec![0, 0],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    for (i, case) in cases.iter().enumerate() {
        hostile(server.addr, case);
        assert!(
            native_get(server.addr, "g.bin").unwrap() == data,
            "normal fetch failed after hostile case {i}"
        );
    }
    assert!(native_get_on(&mut steady, "g.bin").unwrap() == data);
    let work = tempfile::tempdir().unwrap();
    assert_ok(&run(client(work.path()).args([
        "get",
        &server.target(),
        "g.bin",
    ])));
}

#[test]
fn connection_limit_refuses_with_busy() {
    let server = Server::start_with(ServerOpts {
        extra: vec!["--max-connections".into(), "2".into()],
        ..ServerOpts::default()
    });
    write_random(&server.root, "b.bin", 1000, 2);
    let first = native_session(server.addr);
    let _second = native_session(server.addr);
    let work = tempfile::tempdir().unwrap();
    let out = run(client(work.path()).args(["get", &server.target(), "b.bin", "--retries", "0"]));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("busy"),
        "{}",
        stderr(&out)
    );
    // An original client is refused in its own protocol.
    match legacy_get(server.addr, "b.bin") {
        LegacyReply::Error(msg) => assert!(msg.to_lowercase().contains("busy"), "{msg}"),
        LegacyReply::Ok { .. } => panic!("limit not enforced for original clients"),
    }
    drop(first);
    // Once a slot is free the next client gets through (the server notices the close).
    assert!(wait_until(Duration::from_secs(10), || {
        run(client(work.path()).args([
            "get",
            &server.target(),
            "b.bin",
            "--retries",
            "0",
            "--force",
        ]))
        .status
        .success()
    }));
}
