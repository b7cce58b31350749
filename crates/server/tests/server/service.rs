//! The library server, run in-process on 127.0.0.1:0: both protocols, refusals that keep the
//! session, protocol violations, the connection limit and a fast shutdown with stalled clients.

use crate::support::{legacy_get, whole, Native, Running, ALL_CAPS};
use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::{legacy, Capabilities, ErrorCode, Message, MAGIC};
use sfts_server::{Config, Server};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[test]
fn refusals_keep_the_session_and_violations_close_it() {
    let server = Running::start(8);
    server.put("a.txt", b"alpha");
    server.put("empty", b"");
    std::fs::create_dir(server.root.join("dir")).unwrap();
    // A client of the first native version: downloads only.
    let mut c = Native::connect(server.addr, Capabilities::GET);
    assert_eq!(
        c.caps,
        Capabilities(Capabilities::GET),
        "not the intersection"
    );

    let cases: &[(&str, ErrorCode)] = &[
        ("nope", ErrorCode::NotFound),
        ("dir", ErrorCode::NotAFile),
        ("../a.txt", ErrorCode::OutsideRoot),
        ("/etc/passwd", ErrorCode::OutsideRoot),
        ("a\\b", ErrorCode::BadRequest),
    ];
    for (path, code) in cases {
        assert_eq!(c.get(whole(path, &[])).unwrap_err().0, *code, "{path}");
    }
    // Ranges and Stat need capabilities this client did not announce.
    let mut resume = whole("a.txt", &[]);
    resume.offset = 1;
    assert_eq!(c.get(resume).unwrap_err().0, ErrorCode::Unsupported);
    assert_eq!(c.stat("a.txt").unwrap_err().0, ErrorCode::Unsupported);

    assert_eq!(c.get(whole("a.txt", &[])).unwrap().data, b"alpha");
    assert_eq!(c.get(whole("empty", &[])).unwrap().data, b"");

    // A second Hello is a protocol violation: BadRequest, then the server closes.
    let hello = Message::Hello {
        version: 1,
        capabilities: Capabilities(1),
        agent: "again".into(),
    };
    c.send(&hello);
    assert_eq!(c.next_error(), Some(ErrorCode::BadRequest));
    assert!(c.closed());
}

#[test]
fn welcome_offers_every_capability_to_a_client_that_has_them() {
    let server = Running::start(8);
    let c = Native::connect(server.addr, ALL_CAPS | 1 << 40);
    assert_eq!(c.caps, Capabilities(ALL_CAPS));
}

#[test]
fn too_old_a_version_is_refused() {
    let server = Running::start(8);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&MAGIC).unwrap();
    let hello = Message::Hello {
        version: 0,
        capabilities: Capabilities(1),
        agent: "old".into(),
    };
    write_message(&mut s, &hello, &mut Vec::new()).unwrap();
    match read_message(&mut s, &mut Vec::new()).unwrap() {
        Some(Message::Error { code, .. }) => assert_eq!(code, ErrorCode::UnsupportedVersion),
        other => panic!("expected Error, got {other:?}"),
    }
}

#[test]
fn legacy_protocol_ok_alone_then_metadata_and_data() {
    let server = Running::start(8);
    std::fs::create_dir(server.root.join("d")).unwrap();
    server.put("d/abc.txt", b"abc");
    let (status, rest) = legacy_get(server.addr, "d/abc.txt");
    assert_eq!(status, b"OK");
    let (meta, used) = legacy::Metadata::decode(&rest).unwrap().unwrap();
    assert_eq!(meta.name, "abc.txt");
    assert_eq!(meta.size, 3);
    assert_eq!(meta.md5.to_hex(), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(&rest[used..], b"abc");

    let (status, rest) = legacy_get(server.addr, "missing.txt");
    assert_eq!(status, b"ERROR");
    assert_eq!(rest, b"File 'missing.txt' not found on server");
    let (status, _) = legacy_get(server.addr, "../x");
    assert_eq!(status, b"ERROR");
}

#[test]
fn over_the_limit_clients_hear_busy_in_their_protocol() {
    let server = Running::start(1);
    server.put("f", b"x");
    let held = Native::connect(server.addr, ALL_CAPS);

    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&MAGIC).unwrap();
    match read_message(&mut s, &mut Vec::new()).unwrap() {
        Some(Message::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Busy);
            assert!(message.contains("limit 1"), "{message}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    let (status, rest) = legacy_get(server.addr, "f");
    assert_eq!(status, b"ERROR");
    assert!(String::from_utf8_lossy(&rest).contains("busy"));

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.handle.connections().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(legacy_get(server.addr, "f").0, b"OK");
}

#[test]
fn shutdown_is_fast_with_idle_stalled_and_silent_clients() {
    let mut server = Running::start(8);
    let f = std::fs::File::create(server.root.join("big")).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);

    // Idle after the handshake: told the server is shutting down.
    let mut idle = Native::connect(server.addr, ALL_CAPS);
    // Asked for 1 GiB and never reads: its worker blocks in a write.
    let mut stalled = Native::connect(server.addr, ALL_CAPS);
    let mut req = whole("big", &[]);
    req.chunk_size = 1 << 20;
    stalled.send(&Message::Get(req));
    // Connected, said nothing.
    let _silent = TcpStream::connect(server.addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.handle.connections().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let busy = server.handle.connections();
    assert!(
        busy.iter().any(|c| c.file.as_deref() == Some("big")),
        "{busy:?}"
    );

    let took = server.stop();
    // It usually takes well under a second; the bound is loose for a shared machine (a
    // server that does not let go of its busy sessions never stops).
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(idle.next_error(), Some(ErrorCode::ShuttingDown));
    // New connections are no longer accepted.
    assert!(TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err());
}

#[test]
fn default_bind_serves_ipv4_and_ipv6_and_still_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("share"));
    config.port = 0;
    let server = Server::bind(config).unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_unspecified(), "{addr}");
    std::fs::write(server.root().join("f"), b"dual").unwrap();
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());

    let v4: SocketAddr = ([127, 0, 0, 1], addr.port()).into();
    assert_eq!(legacy_get(v4, "f").0, b"OK");
    if addr.is_ipv6() {
        let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, addr.port()).into();
        assert_eq!(legacy_get(v6, "f").0, b"OK");
    }
    let started = Instant::now();
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
