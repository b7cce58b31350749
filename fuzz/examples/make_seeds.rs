//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`, from valid encodings made by the
//! protocol crate itself (plus a few boundary cases), so the fuzzer starts from every message
//! type instead of discovering the layouts by chance. Run from `fuzz/`:
//!
//! ```text
//! cargo run --example make_seeds
//! ```
//!
//! It replaces the whole `corpus/` folder, so the committed corpus is exactly what this file
//! describes; what a fuzzing run discovers goes to `work/` (see `docs/FUZZING.md`).

use sfts_protocol::frame::{self, tag};
use sfts_protocol::legacy::{self, Metadata};
use sfts_protocol::{
    Algorithm, Capabilities, ChunkDigest, ChunkRanges, Digest, DigestSet, EntryKind, ErrorCode, FileHeader,
    FileInfo, FileKind, FileVersion, GetRequest, ListEntry, Message, Priority, PutBegin, PutChunk,
    PutReady, RejectReason, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, TO_END,
};
use std::path::Path;

const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";
const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn md5() -> Digest {
    Digest::from_hex(Algorithm::Md5, MD5_ABC).expect("valid hex")
}

fn sha256() -> Digest {
    Digest::from_hex(Algorithm::Sha256, SHA256_ABC).expect("valid hex")
}

/// One or two valid samples of every message type, with a file-name-friendly label.
fn messages() -> Vec<(&'static str, Message<'static>)> {
    let begin = PutBegin::new(7, "d/f", 5, -1, 4096, &[md5(), sha256()]).expect("has SHA-256");
    vec![
        (
            "hello",
            Message::Hello {
                version: 1,
                capabilities: Capabilities(0x7f),
                agent: "sfts-client/0.1".into(),
            },
        ),
        (
            "welcome",
            Message::Welcome {
                version: 1,
                capabilities: Capabilities(Capabilities::GET | Capabilities::STAT),
                server: "sfts-server/0.1".into(),
            },
        ),
        (
            "get-whole",
            Message::Get(GetRequest::whole(
                "dir/file.bin",
                1 << 20,
                DigestSet::of(&[Algorithm::Sha256]),
            )),
        ),
        (
            "get-range-if-match",
            Message::Get(GetRequest {
                path: "f".into(),
                offset: 2,
                length: TO_END,
                chunk_size: 4096,
                digests: DigestSet::of(&Algorithm::ALL),
                if_match: Some(FileVersion {
                    size: 3,
                    mtime_ns: -1,
                }),
            }),
        ),
        ("stat", Message::Stat { path: "a/b".into() }),
        (
            "file-info",
            Message::FileInfo(FileInfo {
                kind: FileKind::File,
                size: 3,
                mtime_ns: 7,
                digests: vec![md5(), sha256()],
            }),
        ),
        (
            "file-header",
            Message::FileHeader(FileHeader {
                size: 1 << 40,
                offset: 12,
                length: (1 << 40) - 12,
                mtime_ns: -5,
                chunk_size: 65536,
            }),
        ),
        ("data", Message::Data(b"hello world")),
        ("keep-alive", Message::Data(b"")),
        (
            "trailer",
            Message::Trailer {
                digests: vec![sha256()],
            },
        ),
        (
            "error",
            Message::Error {
                code: ErrorCode::NotFound,
                message: "file 'x' not found under the served root".into(),
            },
        ),
        ("set-priority", Message::SetPriority(Priority::High)),
        (
            "list",
            Message::List {
                path: ".".into(),
                recursive: true,
            },
        ),
        (
            "list-entries",
            Message::ListEntries {
                entries: vec![
                    ListEntry {
                        name: "a.jpg".into(),
                        kind: EntryKind::File,
                        size: 3,
                        mtime_ns: 1,
                    },
                    ListEntry {
                        name: "sub/link".into(),
                        kind: EntryKind::Symlink,
                        size: 0,
                        mtime_ns: -1,
                    },
                ],
            },
        ),
        (
            "list-end",
            Message::ListEnd {
                total: 2,
                truncated: false,
            },
        ),
        ("put-begin", Message::PutBegin(begin.clone())),
        (
            "put-begin-restart",
            Message::PutBegin(PutBegin {
                md5: None,
                restart: true,
                force: true,
                ..begin
            }),
        ),
        (
            "put-ready",
            Message::PutReady(PutReady {
                id: 2,
                chunk_size: 4096,
                have: ChunkRanges::from_sorted([0, 1, 2, 7]),
            }),
        ),
        (
            "put-begin-streamed",
            Message::PutBegin(PutBegin::streamed(
                8,
                "d/g",
                1 << 20,
                -1,
                4096,
                ChunkDigest::Blake3,
            )),
        ),
        (
            "put-begin-tree",
            Message::PutBegin(PutBegin::streamed(
                9,
                "d/h",
                1 << 20,
                -1,
                4096,
                ChunkDigest::Blake3Tree,
            )),
        ),
        ("put-chunk", Message::PutChunk(PutChunk::new(1, 2, b"xy"))),
        (
            "put-chunk-blake3",
            Message::PutChunk(PutChunk::with(1, 3, ChunkDigest::Blake3, b"xy")),
        ),
        ("chunk-ack", Message::ChunkAck { id: 1, index: 2 }),
        (
            "chunk-rejected",
            Message::ChunkRejected {
                id: 1,
                index: 2,
                reason: RejectReason::DigestMismatch,
            },
        ),
        ("put-commit", Message::PutCommit { id: 1 }),
        (
            "put-commit-digests",
            Message::PutCommitDigests {
                id: 8,
                digests: vec![md5(), sha256()],
            },
        ),
        (
            "put-done",
            Message::PutDone {
                id: 1,
                digests: vec![md5(), sha256()],
            },
        ),
        ("put-abort", Message::PutAbort { id: 1 }),
        ("put-aborted", Message::PutAborted { id: 1 }),
        ("mkdir", Message::Mkdir { path: "a/b".into() }),
        (
            "auth",
            Message::Auth {
                token: "s3cr3t-token".into(),
            },
        ),
        (
            "auth-ok",
            Message::AuthOk {
                user: "alice".into(),
            },
        ),
    ]
}

fn encoded(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

fn put_ready_payload(id: u32, chunk_size: u32, have: ChunkRanges) -> Vec<u8> {
    encoded(&Message::PutReady(PutReady {
        id,
        chunk_size,
        have,
    }))[frame::HEADER_LEN..]
        .to_vec()
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create corpus folder");
    std::fs::write(d.join(name), bytes).expect("write seed");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear the old corpus");
    }
    let all = messages();

    // frame_header: a header of every size class, at and beyond each maximum.
    let head = |len: u32, t: u8| {
        let mut h = len.to_be_bytes().to_vec();
        h.push(t);
        h
    };
    for (name, bytes) in [
        ("get-small", head(26, tag::GET)),
        ("data-max", head(frame::MAX_DATA_LEN, tag::DATA)),
        ("data-over", head(frame::MAX_DATA_LEN + 1, tag::DATA)),
        (
            "put-chunk-max",
            head(frame::MAX_PUT_CHUNK_LEN, tag::PUT_CHUNK),
        ),
        ("control-max", head(frame::MAX_CONTROL_LEN, tag::ERROR)),
        ("u32-max", head(u32::MAX, tag::LIST_ENTRIES)),
        ("empty", head(0, tag::HELLO)),
        ("unknown-tag", head(1, 0x55)),
    ] {
        write(&dir, "frame_header", name, &bytes);
    }

    // message: every type whole; two frames back to back; a cut frame.
    for (name, m) in &all {
        write(&dir, "message", name, &encoded(m));
    }
    let mut two = encoded(&Message::Data(b"a"));
    two.extend(encoded(&Message::Trailer { digests: vec![] }));
    write(&dir, "message", "two-frames", &two);
    let hello = encoded(&all[0].1);
    write(&dir, "message", "hello-cut", &hello[..hello.len() / 2]);

    // message_payload: the tag, then the payload (the frame without its length).
    for (name, m) in &all {
        let bytes = encoded(m);
        let seed = &bytes[frame::HEADER_LEN - 1..];
        write(&dir, "message_payload", name, seed);
    }

    // chunk_ranges: PutReady payloads.
    for (name, id, chunk, have) in [
        ("none", 1, MIN_CHUNK_SIZE, ChunkRanges::new()),
        ("prefix", 2, 1 << 20, ChunkRanges::prefix(40)),
        (
            "scattered",
            3,
            4096,
            ChunkRanges::from_sorted([0, 1, 2, 5, 9, 10]),
        ),
        (
            "far",
            4,
            MAX_CHUNK_SIZE,
            ChunkRanges::from_sorted([u64::MAX / 2, u64::MAX / 2 + 1]),
        ),
        (
            "many",
            5,
            4096,
            ChunkRanges::from_sorted((0..100).map(|i| i * 3)),
        ),
    ] {
        write(
            &dir,
            "chunk_ranges",
            name,
            &put_ready_payload(id, chunk, have),
        );
    }

    // legacy_request.
    for (name, file) in [
        ("plain", "a.txt"),
        ("nested", "dir/sub/file.bin"),
        ("utf8", "répertoire/ファイル"),
        ("escape", "../secret.txt"),
    ] {
        let mut out = Vec::new();
        legacy::encode_request(file, &mut out);
        write(&dir, "legacy_request", name, &out);
    }
    write(&dir, "legacy_request", "too-long", &[0, 0, 0x10, 1, b'a']);
    write(&dir, "legacy_request", "magic", &sfts_protocol::MAGIC);

    // legacy_reply: OK + metadata (+ data), ERROR + message.
    let meta = Metadata {
        name: "abc.txt".into(),
        size: 3,
        md5: md5(),
    };
    let mut ok = legacy::STATUS_OK.to_vec();
    meta.encode(&mut ok);
    ok.extend_from_slice(b"abc");
    write(&dir, "legacy_reply", "ok", &ok);
    let mut upper = ok.clone();
    let hex_at = ok.len() - 3 - legacy::MD5_HEX_LEN;
    upper[hex_at..ok.len() - 3].make_ascii_uppercase();
    write(&dir, "legacy_reply", "ok-upper-hex", &upper);
    let mut err = Vec::new();
    legacy::encode_error(&legacy::not_found_message("x.bin"), &mut err);
    write(&dir, "legacy_reply", "error", &err);
    write(&dir, "legacy_reply", "http", b"HTTP/1.1 200 OK\r\n");

    let count: usize = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .map(|d| {
            std::fs::read_dir(d.expect("entry").path())
                .expect("target folder")
                .count()
        })
        .sum();
    println!("wrote {count} seed files under {}", dir.display());
}
