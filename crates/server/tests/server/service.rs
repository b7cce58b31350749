//! The library server, run in-process on 127.0.0.1:0: both protocols, refusals that keep the
//! session, protocol violations, the connection limit and a fast shutdown with stalled clients.

use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::{
    legacy, Capabilities, DigestSet, ErrorCode, GetRequest, Message, MAGIC, PROTOCOL_VERSION,
};
use sfts_server::{Config, Server, ShutdownHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A server running on its own thread; shut down and joined on drop.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), sfts_server::ServerError>>>,
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Running {
    fn start(max_connections: usize) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        let mut config = Config::new(&root);
        config.port = 0;
        config.bind = Some("127.0.0.1".parse().unwrap());
        config.max_connections = max_connections;
        let server = Server::bind(config).unwrap();
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let thread = Some(std::thread::spawn(move || server.run()));
        Running {
            addr,
            handle,
            thread,
            _dir: dir,
            root,
        }
    }

    /// Shuts down and returns how long `run` took to return.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.handle.shutdown();
        self.handle.shutdown(); // idempotent
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
        started.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn session(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&MAGIC).unwrap();
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities(Capabilities::GET),
        agent: "service-test".into(),
    };
    write_message(&mut s, &hello, &mut Vec::new()).unwrap();
    let mut buf = Vec::new();
    match read_message(&mut s, &mut buf).unwrap() {
        Some(Message::Welcome { capabilities, .. }) => {
            assert!(capabilities.has(Capabilities::GET | Capabilities::MULTI_REQUEST))
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    (s, buf)
}

fn get(s: &mut TcpStream, req: GetRequest) {
    write_message(s, &Message::Get(req), &mut Vec::new()).unwrap();
}

/// Reads the reply to a `Get`: the data, or the refusal.
fn reply(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, (ErrorCode, String)> {
    let length = match read_message(s, buf).unwrap() {
        Some(Message::FileHeader(h)) => h.length,
        Some(Message::Error { code, message }) => return Err((code, message)),
        other => panic!("expected FileHeader, got {other:?}"),
    };
    let mut data = Vec::new();
    for _ in 0..100_000 {
        match read_message(s, buf).unwrap() {
            Some(Message::Data(d)) => data.extend_from_slice(d),
            Some(Message::Trailer { .. }) => break,
            other => panic!("expected Data or Trailer, got {other:?}"),
        }
    }
    assert_eq!(data.len() as u64, length);
    Ok(data)
}

fn whole(path: &str) -> GetRequest {
    GetRequest::whole(path, 4096, DigestSet::EMPTY)
}

#[test]
fn refusals_keep_the_session_and_violations_close_it() {
    let server = Running::start(8);
    std::fs::write(server.root.join("a.txt"), b"alpha").unwrap();
    std::fs::write(server.root.join("empty"), b"").unwrap();
    std::fs::create_dir(server.root.join("dir")).unwrap();
    let (mut s, mut buf) = session(server.addr);

    let cases: &[(&str, ErrorCode)] = &[
        ("nope", ErrorCode::NotFound),
        ("dir", ErrorCode::NotAFile),
        ("../a.txt", ErrorCode::OutsideRoot),
        ("/etc/passwd", ErrorCode::OutsideRoot),
        ("a\\b", ErrorCode::BadRequest),
    ];
    for (path, code) in cases {
        get(&mut s, whole(path));
        assert_eq!(reply(&mut s, &mut buf).unwrap_err().0, *code, "{path}");
    }
    let mut resume = whole("a.txt");
    resume.offset = 1;
    get(&mut s, resume);
    assert_eq!(
        reply(&mut s, &mut buf).unwrap_err().0,
        ErrorCode::Unsupported
    );
    write_message(
        &mut s,
        &Message::Stat {
            path: "a.txt".into(),
        },
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(
        reply(&mut s, &mut buf).unwrap_err().0,
        ErrorCode::Unsupported
    );

    get(&mut s, whole("a.txt"));
    assert_eq!(reply(&mut s, &mut buf).unwrap(), b"alpha");
    get(&mut s, whole("empty"));
    assert_eq!(reply(&mut s, &mut buf).unwrap(), b"");

    // A second Hello is a protocol violation: BadRequest, then the server closes.
    let hello = Message::Hello {
        version: 1,
        capabilities: Capabilities(1),
        agent: "again".into(),
    };
    write_message(&mut s, &hello, &mut Vec::new()).unwrap();
    assert_eq!(
        reply(&mut s, &mut buf).unwrap_err().0,
        ErrorCode::BadRequest
    );
    assert!(matches!(read_message(&mut s, &mut buf), Ok(None) | Err(_)));
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

/// The original client: one 5-byte read for the status, then the rest.
fn legacy_get(addr: SocketAddr, name: &str) -> (Vec<u8>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    legacy::encode_request(name, &mut req);
    s.write_all(&req).unwrap();
    let mut status = [0u8; 5];
    let n = s.read(&mut status).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    (status[..n].to_vec(), rest)
}

#[test]
fn legacy_protocol_ok_alone_then_metadata_and_data() {
    let server = Running::start(8);
    std::fs::create_dir(server.root.join("d")).unwrap();
    std::fs::write(server.root.join("d/abc.txt"), b"abc").unwrap();
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
    std::fs::write(server.root.join("f"), b"x").unwrap();
    let (held, _) = session(server.addr);

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
    let (mut idle, mut idle_buf) = session(server.addr);
    // Asked for 1 GiB and never reads: its worker blocks in a write.
    let (mut stalled, _) = session(server.addr);
    let mut req = whole("big");
    req.chunk_size = 1 << 20;
    get(&mut stalled, req);
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
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    match read_message(&mut idle, &mut idle_buf).unwrap() {
        Some(Message::Error { code, .. }) => assert_eq!(code, ErrorCode::ShuttingDown),
        other => panic!("expected ShuttingDown, got {other:?}"),
    }
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
    assert!(started.elapsed() < Duration::from_secs(2));
}
