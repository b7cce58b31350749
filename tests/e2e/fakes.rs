//! Minimal peers written in the test: a native client built on the protocol crate, an original
//! (legacy) client and server written straight from the specification in `docs/PROTOCOL.md`,
//! a native server that lies about the digest, and one of an older release.

use sfts_protocol::io::{read_message, write_message};
use sfts_protocol::{
    Algorithm, Capabilities, DigestSet, ErrorCode, FileHeader, GetRequest, Message, MultiHasher,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// Opens a native session (magic + Hello, expects Welcome).
pub fn native_session(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&sfts_protocol::MAGIC).unwrap();
    let mut scratch = Vec::new();
    write_message(
        &mut s,
        &Message::Hello {
            version: sfts_protocol::PROTOCOL_VERSION,
            capabilities: Capabilities(Capabilities::GET),
            agent: "e2e-test".into(),
        },
        &mut scratch,
    )
    .unwrap();
    let mut buf = Vec::new();
    match read_message(&mut s, &mut buf).unwrap() {
        Some(Message::Welcome { .. }) => s,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Fetches a whole file over a fresh native session; the server's refusal as `Err`.
pub fn native_get(addr: SocketAddr, path: &str) -> Result<Vec<u8>, (ErrorCode, String)> {
    let mut s = native_session(addr);
    native_get_on(&mut s, path)
}

/// Fetches a whole file on an open native session, checking the SHA-256 trailer.
pub fn native_get_on(s: &mut TcpStream, path: &str) -> Result<Vec<u8>, (ErrorCode, String)> {
    let mut scratch = Vec::new();
    let digests = DigestSet::of(&[Algorithm::Sha256]);
    write_message(
        s,
        &Message::Get(GetRequest::whole(path, 65536, digests)),
        &mut scratch,
    )
    .unwrap();
    let mut buf = Vec::new();
    let size = match read_message(s, &mut buf).unwrap() {
        Some(Message::FileHeader(h)) => h.size,
        Some(Message::Error { code, message }) => return Err((code, message)),
        other => panic!("expected FileHeader, got {other:?}"),
    };
    let mut data = Vec::new();
    let mut hasher = MultiHasher::new(digests);
    while (data.len() as u64) < size {
        match read_message(s, &mut buf).unwrap() {
            Some(Message::Data(d)) => {
                hasher.update(d);
                data.extend_from_slice(d);
            }
            other => panic!("expected Data, got {other:?}"),
        }
    }
    match read_message(s, &mut buf).unwrap() {
        Some(Message::Trailer { digests }) => assert_eq!(digests, hasher.finish()),
        other => panic!("expected Trailer, got {other:?}"),
    }
    Ok(data)
}

/// The original client, as the design document describes it: length-prefixed name, one 5-byte
/// read for the status, then metadata and data. Returns the status text and, on OK, the
/// metadata name, the data and the MD5 hex it announced; on ERROR, the message.
pub enum LegacyReply {
    Ok {
        name: String,
        data: Vec<u8>,
        md5_hex: String,
    },
    Error(String),
}

pub fn legacy_get(addr: SocketAddr, name: &str) -> LegacyReply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = (name.len() as u32).to_be_bytes().to_vec();
    req.extend_from_slice(name.as_bytes());
    s.write_all(&req).unwrap();
    // One recv(5), exactly like the original client: "OK" must arrive on its own.
    let mut status = [0u8; 5];
    let n = s.read(&mut status).unwrap();
    match &status[..n] {
        b"OK" => {}
        b"ERROR" => {
            let mut rest = String::new();
            s.read_to_string(&mut rest).unwrap();
            return LegacyReply::Error(rest);
        }
        other => panic!("first read returned {other:?}, not OK or ERROR on its own"),
    }
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut fname = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut fname).unwrap();
    let mut size = [0u8; 8];
    s.read_exact(&mut size).unwrap();
    let mut md5 = [0u8; 32];
    s.read_exact(&mut md5).unwrap();
    let mut data = Vec::new();
    s.read_to_end(&mut data).unwrap();
    assert_eq!(
        data.len() as u64,
        u64::from_be_bytes(size),
        "size field vs data"
    );
    LegacyReply::Ok {
        name: String::from_utf8(fname).unwrap(),
        data,
        md5_hex: String::from_utf8(md5.to_vec()).unwrap(),
    }
}

/// What a fake original server answers.
#[derive(Clone)]
pub enum LegacyAnswer {
    /// `OK`, a pause, metadata with this MD5 hex, the data.
    File { data: Vec<u8>, md5_hex: String },
    /// `ERROR` + the not-found message.
    NotFound,
}

/// An original-design server for one connection; returns its address, and the name the client
/// asked for through the join handle.
pub fn legacy_server(answer: LegacyAnswer) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut name = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut name).unwrap();
        let name = String::from_utf8(name).unwrap();
        match answer {
            LegacyAnswer::NotFound => {
                s.write_all(b"ERROR").unwrap();
                s.write_all(format!("File '{name}' not found on server").as_bytes())
                    .unwrap();
            }
            LegacyAnswer::File { data, md5_hex } => {
                s.write_all(b"OK").unwrap();
                std::thread::sleep(Duration::from_millis(50));
                let base = name.rsplit('/').next().unwrap().to_string();
                let mut meta = (base.len() as u32).to_be_bytes().to_vec();
                meta.extend_from_slice(base.as_bytes());
                meta.extend_from_slice(&(data.len() as u64).to_be_bytes());
                meta.extend_from_slice(md5_hex.as_bytes());
                s.write_all(&meta).unwrap();
                // Send the data in odd-sized pieces to exercise reassembly.
                for part in data.chunks(7777) {
                    s.write_all(part).unwrap();
                }
            }
        }
        name
    });
    (addr, handle)
}

/// A native server for one connection that sends `data` with a SHA-256 trailer of `lie_about`.
pub fn lying_native_server(data: Vec<u8>, lie_about: Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut magic = [0u8; 4];
        s.read_exact(&mut magic).unwrap();
        assert_eq!(magic, sfts_protocol::MAGIC);
        let mut buf = Vec::new();
        let mut scratch = Vec::new();
        let Some(Message::Hello { .. }) = read_message(&mut s, &mut buf).unwrap() else {
            panic!("expected Hello")
        };
        let welcome = Message::Welcome {
            version: 1,
            capabilities: Capabilities(Capabilities::GET),
            server: "liar".into(),
        };
        write_message(&mut s, &welcome, &mut scratch).unwrap();
        let Some(Message::Get(req)) = read_message(&mut s, &mut buf).unwrap() else {
            panic!("expected Get")
        };
        let header = Message::FileHeader(FileHeader {
            size: data.len() as u64,
            offset: 0,
            length: data.len() as u64,
            mtime_ns: 0,
            chunk_size: 4096,
        });
        write_message(&mut s, &header, &mut scratch).unwrap();
        for part in data.chunks(4096) {
            write_message(&mut s, &Message::Data(part), &mut scratch).unwrap();
        }
        let mut h = MultiHasher::new(req.digests);
        h.update(&lie_about);
        let trailer = Message::Trailer {
            digests: h.finish(),
        };
        write_message(&mut s, &trailer, &mut scratch).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    (addr, handle)
}

/// A native server of an older release for `connections` connections, one after another: it
/// announces `capabilities` and answers every request it is sent with `bad-request`, as a
/// server that cannot decode it would. Returns the names of the requests it was sent.
pub fn older_native_server(
    capabilities: u64,
    connections: usize,
) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..connections {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut magic = [0u8; 4];
            s.read_exact(&mut magic).unwrap();
            let (mut buf, mut scratch) = (Vec::new(), Vec::new());
            let Some(Message::Hello { .. }) = read_message(&mut s, &mut buf).unwrap() else {
                panic!("expected Hello")
            };
            let welcome = Message::Welcome {
                version: 1,
                capabilities: Capabilities(capabilities),
                server: "older".into(),
            };
            write_message(&mut s, &welcome, &mut scratch).unwrap();
            // Until the client closes (or 20 s of silence); at most 100 requests.
            for _ in 0..100 {
                let Ok(Some(request)) = read_message(&mut s, &mut buf) else {
                    break;
                };
                seen.push(request.name().to_string());
                let refusal = Message::Error {
                    code: ErrorCode::BadRequest,
                    message: "unknown algorithm".into(),
                };
                if write_message(&mut s, &refusal, &mut scratch).is_err() {
                    break;
                }
            }
        }
        seen
    });
    (addr, handle)
}
