//! Uploads through the native protocol by hand: commit and publication, resume, chunk and
//! whole-file checks (hashed as the chunks arrive, or read back), restart, conflicts, the
//! read-only server, limits, name rules, no-replace publication, expiry, pipelining, and a
//! kill -9 of the server mid-upload.

use crate::support::{
    begin, blake3_digest, both_digests, data, eventually, start_binary_with, Native, Running, Up,
    ALL_CAPS,
};
use sfts_protocol::{
    Algorithm, Capabilities, ChunkRanges, ErrorCode, FileKind, Message, Priority, PutChunk,
    RejectReason,
};
use sfts_server::paths::STAGING_DIR;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CHUNK: u32 = 4096;

/// Names of the files in the staging directory.
fn staged(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root.join(STAGING_DIR)) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The stored upload rows: (path, chunk runs held).
fn rows(server: &Running) -> Vec<(String, Vec<(u64, u64)>)> {
    let root = server.root.to_string_lossy();
    server
        .db()
        .stored_uploads(&root)
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.held))
        .collect()
}

#[test]
fn an_upload_is_checked_published_with_its_mtime_and_cached() {
    let server = Running::uploads();
    let bytes = data(10_000, 1); // three chunks of 4 KiB, the last short
    let mut c = Native::connect(server.addr, ALL_CAPS);
    assert_eq!(c.caps, Capabilities(ALL_CAPS));
    c.send(&Message::SetPriority(Priority::High));
    // A proposal below the protocol's minimum is clamped.
    let b = begin(1, "up/f.bin", &bytes, 100);
    let ready = c.begin(&b).unwrap();
    assert_eq!((ready.id, ready.chunk_size), (1, CHUNK));
    assert!(ready.have.is_empty());
    assert!(
        !server.root.join("up").exists(),
        "nothing before the commit"
    );
    // Any order; a repeated chunk is acknowledged again.
    for i in [2, 0, 1, 0] {
        assert_eq!(c.chunk(1, i, &bytes, CHUNK), Up::Ack(1, i));
    }
    assert_eq!(c.commit(1).unwrap(), both_digests(&bytes));
    let published = server.root.join("up/f.bin");
    assert_eq!(std::fs::read(&published).unwrap(), bytes);
    let mtime = std::fs::metadata(&published).unwrap().modified().unwrap();
    let want = UNIX_EPOCH + Duration::from_nanos(1_600_000_000_123_456_789);
    assert_eq!(mtime, want);
    assert!(staged(&server.root).is_empty());
    assert!(rows(&server).is_empty());
    // The digests are cached for exactly the published file.
    assert_eq!(c.stat("up/f.bin").unwrap().digests, both_digests(&bytes));
    // The id is free again; an empty file has no chunk.
    assert_eq!(
        c.upload(&begin(1, "empty", b"", CHUNK), b"").unwrap().len(),
        2
    );
    assert_eq!(std::fs::read(server.root.join("empty")).unwrap(), b"");
    drop(c);
    eventually("the history rows", || {
        let r = server.db().recent_transfers(10).unwrap();
        r.len() == 2 && r.iter().all(|r| r.result == "ok")
    });
    let rows = server.db().recent_transfers(10).unwrap();
    let f = &rows[1];
    assert_eq!(
        (
            f.direction.as_str(),
            f.path.as_str(),
            f.size,
            f.bytes,
            f.priority.as_str()
        ),
        ("upload", "up/f.bin", 10_000, 10_000, "high")
    );
}

#[test]
fn a_broken_connection_resumes_with_the_chunks_held_and_acks_are_saved_first() {
    let server = Running::uploads();
    let bytes = data(40_000, 2); // ten chunks
    let b = begin(7, "r.bin", &bytes, CHUNK);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.begin(&b).unwrap();
    for i in 0..6 {
        assert_eq!(c.chunk(7, i, &bytes, CHUNK), Up::Ack(7, i));
    }
    // Acknowledged means recorded: no waiting needed.
    assert_eq!(rows(&server), [("r.bin".to_string(), vec![(0, 6)])]);
    drop(c);

    let mut c = Native::connect(server.addr, ALL_CAPS);
    // Another chunk size is proposed: the stored upload's wins, so held chunks stay valid.
    let again = begin(1, "r.bin", &bytes, 8192);
    let ready = c.begin(&again).unwrap();
    assert_eq!(ready.chunk_size, CHUNK);
    assert_eq!(ready.have, ChunkRanges::prefix(6));
    for i in 6..10 {
        assert_eq!(c.chunk(1, i, &bytes, CHUNK), Up::Ack(1, i));
    }
    assert_eq!(c.commit(1).unwrap(), both_digests(&bytes));
    assert_eq!(std::fs::read(server.root.join("r.bin")).unwrap(), bytes);
    assert!(rows(&server).is_empty() && staged(&server.root).is_empty());
}

#[test]
fn another_version_replaces_the_stored_upload_and_restart_discards_it() {
    let server = Running::uploads();
    let (one, two) = (data(20_000, 3), data(20_000, 4));
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.begin(&begin(1, "v.bin", &one, CHUNK)).unwrap();
    for i in 0..3 {
        c.chunk(1, i, &one, CHUNK);
    }
    c.send(&Message::PutAbort { id: 9 }); // nothing open under 9: answered all the same
    assert_eq!(c.up(), Up::Aborted(9));
    drop(c);
    eventually("the first upload saved", || rows(&server).len() == 1);

    let mut c = Native::connect(server.addr, ALL_CAPS);
    let ready = c.begin(&begin(1, "v.bin", &two, CHUNK)).unwrap();
    assert!(ready.have.is_empty(), "another digest: starts over");
    assert_eq!(
        staged(&server.root).len(),
        1,
        "the old staging file is gone"
    );
    for i in 0..2 {
        c.chunk(1, i, &two, CHUNK);
    }
    drop(c);
    eventually("the second upload saved", || {
        rows(&server) == [("v.bin".to_string(), vec![(0, 2)])]
    });

    let mut c = Native::connect(server.addr, ALL_CAPS);
    let mut restart = begin(1, "v.bin", &two, CHUNK);
    restart.restart = true;
    assert!(c.begin(&restart).unwrap().have.is_empty());
    assert_eq!(
        c.upload(&begin(2, "w.bin", &one, CHUNK), &one)
            .unwrap()
            .len(),
        2
    );
    // An abort deletes what was held.
    c.chunk(1, 0, &two, CHUNK);
    c.send(&Message::PutAbort { id: 1 });
    assert_eq!(c.up(), Up::Aborted(1));
    assert!(rows(&server).is_empty());
    assert!(staged(&server.root).is_empty());
    assert_eq!(c.commit(1).unwrap_err().0, ErrorCode::NoSuchUpload);
}

#[test]
fn bad_chunks_are_rejected_and_nothing_of_them_is_stored() {
    let server = Running::uploads();
    let bytes = data(10_000, 5);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.begin(&begin(3, "c.bin", &bytes, CHUNK)).unwrap();
    // Corrupted in flight: the digest does not match the bytes.
    let mut wrong = PutChunk::new(3, 1, &bytes[4096..8192]);
    wrong.digest[0] ^= 1;
    c.send(&Message::PutChunk(wrong));
    assert_eq!(c.up(), Up::Rejected(3, 1, RejectReason::DigestMismatch));
    // Past the end, and a length that is not the chunk's.
    c.send(&Message::PutChunk(PutChunk::new(3, 3, b"x")));
    assert_eq!(c.up(), Up::Rejected(3, 3, RejectReason::BadChunk));
    c.send(&Message::PutChunk(PutChunk::new(3, 0, &bytes[..100])));
    assert_eq!(c.up(), Up::Rejected(3, 0, RejectReason::BadChunk));
    c.send(&Message::PutChunk(PutChunk::new(4, 0, b"x")));
    assert_eq!(c.up(), Up::Rejected(4, 0, RejectReason::NoSuchUpload));
    // The commit finds chunks missing: incomplete, and the upload stays open.
    c.chunk(3, 0, &bytes, CHUNK);
    let (code, message) = c.commit(3).unwrap_err();
    assert_eq!(code, ErrorCode::Incomplete);
    assert!(
        message.contains("2 of 3 chunk(s) are missing (the first is chunk 1)"),
        "{message}"
    );
    assert_eq!(c.chunk(3, 1, &bytes, CHUNK), Up::Ack(3, 1));
    assert_eq!(c.chunk(3, 2, &bytes, CHUNK), Up::Ack(3, 2));
    assert_eq!(c.commit(3).unwrap(), both_digests(&bytes));
    assert_eq!(std::fs::read(server.root.join("c.bin")).unwrap(), bytes);
}

#[test]
fn a_file_that_does_not_match_its_digests_is_discarded() {
    let server = Running::uploads();
    let (bytes, other) = (data(9000, 6), data(9000, 7));
    let mut c = Native::connect(server.addr, ALL_CAPS);
    // Every chunk is fine on its own, but the whole is not the file announced.
    let mut lie = begin(1, "m.bin", &bytes, CHUNK);
    lie.sha256 = begin(1, "m.bin", &other, CHUNK).sha256;
    let (code, message) = c.upload(&lie, &bytes).unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch);
    assert!(message.contains("SHA-256"), "{message}");
    // Right SHA-256, wrong MD5.
    let mut lie = begin(2, "m.bin", &bytes, CHUNK);
    lie.md5 = Some([0; 16]);
    let (code, message) = c.upload(&lie, &bytes).unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch);
    assert!(message.contains("MD5"), "{message}");
    assert!(!server.root.join("m.bin").exists());
    assert!(staged(&server.root).is_empty() && rows(&server).is_empty());
    // The session goes on.
    assert!(c.upload(&begin(1, "m.bin", &bytes, CHUNK), &bytes).is_ok());
}

#[test]
fn a_client_that_announces_blake3_gets_it_in_put_done() {
    let server = Running::uploads();
    let bytes = data(10_000, 23);
    let mut c = Native::connect(server.addr, ALL_CAPS | Capabilities::BLAKE3);
    let mut want = both_digests(&bytes);
    want.push(blake3_digest(&bytes));
    let b = begin(1, "b3.bin", &bytes, CHUNK);
    assert_eq!(c.upload(&b, &bytes).unwrap(), want);
}

#[test]
fn a_file_of_one_chunk_is_checked_against_the_whole_files_digests_too() {
    let server = Running::uploads();
    let (bytes, other) = (data(3000, 18), data(3000, 19));
    let mut c = Native::connect(server.addr, ALL_CAPS | Capabilities::BLAKE3);
    // The chunk matches its own SHA-256, not the file's announced one.
    let mut lie = begin(1, "one.bin", &bytes, CHUNK);
    lie.sha256 = begin(1, "one.bin", &other, CHUNK).sha256;
    let (code, message) = c.upload(&lie, &bytes).unwrap_err();
    assert_eq!(
        (code, message.contains("SHA-256")),
        (ErrorCode::ChecksumMismatch, true)
    );
    let mut lie = begin(2, "one.bin", &bytes, CHUNK);
    lie.md5 = Some([0; 16]);
    let (code, message) = c.upload(&lie, &bytes).unwrap_err();
    assert_eq!(
        (code, message.contains("MD5")),
        (ErrorCode::ChecksumMismatch, true)
    );
    assert!(!server.root.join("one.bin").exists());
    // The truth, to a client that announced BLAKE3: all three digests.
    let mut want = both_digests(&bytes);
    want.push(blake3_digest(&bytes));
    assert_eq!(
        c.upload(&begin(3, "one.bin", &bytes, CHUNK), &bytes)
            .unwrap(),
        want
    );
    assert_eq!(std::fs::read(server.root.join("one.bin")).unwrap(), bytes);
}

#[test]
fn a_staging_file_cut_short_before_the_commit_is_noticed_without_a_read_back() {
    let server = Running::uploads();
    let bytes = data(12_288, 20); // three full chunks, sent in order on one connection
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.begin(&begin(1, "cut.bin", &bytes, CHUNK)).unwrap();
    for i in 0..3 {
        assert_eq!(c.chunk(1, i, &bytes, CHUNK), Up::Ack(1, i));
    }
    let name = staged(&server.root).pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(server.root.join(STAGING_DIR).join(name))
        .unwrap()
        .set_len(5000)
        .unwrap();
    let (code, message) = c.commit(1).unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch);
    assert!(message.contains("lost part of 'cut.bin'"), "{message}");
    assert!(!server.root.join("cut.bin").exists());
}

#[test]
fn a_read_only_server_refuses_uploads_and_what_was_pipelined_after_them() {
    let server = Running::with_state();
    let mut c = Native::connect(server.addr, ALL_CAPS);
    assert!(
        c.caps.has(Capabilities::UPLOAD),
        "announced even when read-only"
    );
    let bytes = data(100, 8);
    // PutBegin, its chunk and its commit in one go, as put -r sends small files.
    c.send(&Message::PutBegin(begin(1, "r.bin", &bytes, CHUNK)));
    c.send_chunk(1, 0, &bytes, CHUNK);
    c.send(&Message::PutCommit { id: 1 });
    let Up::Error(code, message) = c.up() else {
        panic!("expected a refusal")
    };
    assert_eq!(code, ErrorCode::ReadOnly);
    assert_eq!(
        message,
        "this server is read-only: it was not started with --allow-upload"
    );
    assert_eq!(c.up(), Up::Rejected(1, 0, RejectReason::NoSuchUpload));
    assert!(matches!(c.up(), Up::Error(ErrorCode::NoSuchUpload, _)));
    assert_eq!(c.mkdir("d").unwrap_err().0, ErrorCode::ReadOnly);
    assert!(std::fs::read_dir(&server.root).unwrap().next().is_none());
    // A client without UPLOAD is told it lacks the capability.
    let mut old = Native::connect(server.addr, Capabilities::GET);
    let refused = old.begin(&begin(1, "r.bin", &bytes, CHUNK)).unwrap_err();
    assert_eq!(refused.0, ErrorCode::Unsupported);
}

#[test]
fn limits_names_and_places_are_refused_before_anything_is_stored() {
    let server = Running::start_with(|c| {
        c.uploads.allow = true;
        c.uploads.max_size = Some(5000);
    });
    std::fs::create_dir(server.root.join("dir")).unwrap();
    std::fs::write(server.root.join("file.txt"), b"x").unwrap();
    let outside = server.root.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, server.root.join("out")).unwrap();
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let small = data(10, 9);
    let big = data(5001, 9);
    let (code, message) = c.begin(&begin(1, "big.bin", &big, CHUNK)).unwrap_err();
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(
        message.contains("larger than this server's upload limit of 5000 bytes"),
        "{message}"
    );
    use ErrorCode::*;
    let table: &[(&str, ErrorCode, &str)] = &[
        ("CON", UnsafeName, "reserved device name"),
        ("dir/nul.txt", UnsafeName, "reserved device name"),
        ("AUX/x.bin", UnsafeName, "reserved device name"),
        ("trailing.", UnsafeName, "trailing dot"),
        ("trailing ", UnsafeName, "trailing space"),
        ("ctl\u{1}x", UnsafeName, "control character U+0001"),
        (".sfts-upload/x", UnsafeName, "reserved for the server"),
        ("../up.bin", OutsideRoot, "'..'"),
        ("/abs", OutsideRoot, "absolute"),
        ("out/x", OutsideRoot, "outside the served root"),
        ("a\\b", BadRequest, "backslash"),
        ("file.txt/x", NotADirectory, "'file.txt' is a file"),
        ("dir", NotAFile, "is a directory"),
        (".", NotAFile, "root"),
        (
            "file.txt",
            AlreadyExists,
            "'file.txt' already exists on the server",
        ),
    ];
    for (name, want, text) in table {
        let (code, message) = c.begin(&begin(1, name, &small, CHUNK)).unwrap_err();
        assert_eq!(code, *want, "{name:?}: {message}");
        assert!(message.contains(text), "{name:?}: {message}");
    }
    assert!(staged(&server.root).is_empty());
    let names: Vec<_> = std::fs::read_dir(&server.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}"); // dir, file.txt, out, the staging directory
                                             // At the limit is fine.
    let edge = data(5000, 9);
    assert!(c.upload(&begin(1, "edge.bin", &edge, CHUNK), &edge).is_ok());
}

#[test]
fn replacing_needs_force_and_a_server_that_allows_it() {
    let server = Running::uploads();
    server.put("e.bin", b"old");
    let new = data(3000, 10);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    assert_eq!(
        c.begin(&begin(1, "e.bin", &new, CHUNK)).unwrap_err().0,
        ErrorCode::AlreadyExists
    );
    let mut forced = begin(1, "e.bin", &new, CHUNK);
    forced.force = true;
    assert!(c.upload(&forced, &new).is_ok());
    assert_eq!(std::fs::read(server.root.join("e.bin")).unwrap(), new);

    let strict = Running::start_with(|c| {
        c.uploads.allow = true;
        c.uploads.overwrite = false;
    });
    strict.put("e.bin", b"old");
    let mut c = Native::connect(strict.addr, ALL_CAPS);
    let (code, message) = c.begin(&forced).unwrap_err();
    assert_eq!(code, ErrorCode::AlreadyExists);
    assert!(message.contains("never replaces files"), "{message}");
}

#[test]
fn a_file_that_appears_meanwhile_is_never_clobbered() {
    let server = Running::uploads();
    let bytes = data(10_000, 11);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.begin(&begin(1, "late.bin", &bytes, CHUNK)).unwrap();
    for i in 0..3 {
        c.chunk(1, i, &bytes, CHUNK);
    }
    server.put("late.bin", b"someone else's");
    let (code, message) = c.commit(1).unwrap_err();
    assert_eq!(code, ErrorCode::AlreadyExists, "{message}");
    assert_eq!(
        std::fs::read(server.root.join("late.bin")).unwrap(),
        b"someone else's"
    );
    // The upload is over on this connection but kept: a forced rerun sends nothing.
    assert_eq!(c.commit(1).unwrap_err().0, ErrorCode::NoSuchUpload);
    assert_eq!(rows(&server).len(), 1);
    let mut forced = begin(1, "late.bin", &bytes, CHUNK);
    forced.force = true;
    assert_eq!(c.begin(&forced).unwrap().have, ChunkRanges::prefix(3));
    assert_eq!(c.commit(1).unwrap(), both_digests(&bytes));
    assert_eq!(std::fs::read(server.root.join("late.bin")).unwrap(), bytes);
}

#[test]
fn one_name_is_uploaded_by_one_connection_at_a_time() {
    let server = Running::uploads();
    let bytes = data(5000, 12);
    let mut a = Native::connect(server.addr, ALL_CAPS);
    let mut b = Native::connect(server.addr, ALL_CAPS);
    a.begin(&begin(1, "same.bin", &bytes, CHUNK)).unwrap();
    let started = Instant::now();
    let (code, message) = b.begin(&begin(1, "./same.bin", &bytes, CHUNK)).unwrap_err();
    assert_eq!(code, ErrorCode::Conflict);
    assert_eq!(
        message,
        "'./same.bin' is being uploaded by another client right now; try again later"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited first"
    );
    // The same name under another id of the same connection.
    let (code, message) = a.begin(&begin(2, "same.bin", &bytes, CHUNK)).unwrap_err();
    assert_eq!(code, ErrorCode::Conflict);
    assert!(message.contains("on this connection"), "{message}");
    // A claim released while waiting goes to the waiter.
    let waiter = std::thread::spawn(move || {
        let r = b.begin(&begin(1, "same.bin", &bytes, CHUNK));
        (b, r)
    });
    std::thread::sleep(Duration::from_millis(200));
    drop(a);
    let (_b, r) = waiter.join().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_reused_open_id_is_a_protocol_violation_and_open_uploads_are_limited() {
    let server = Running::uploads();
    let bytes = data(100, 13);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    for id in 0..16 {
        c.begin(&begin(id, &format!("f{id}"), &bytes, CHUNK))
            .unwrap();
    }
    let (code, message) = c.begin(&begin(99, "f99", &bytes, CHUNK)).unwrap_err();
    assert_eq!(code, ErrorCode::Busy);
    assert!(message.contains("commit some first"), "{message}");
    c.send(&Message::PutBegin(begin(3, "again", &bytes, CHUNK)));
    assert_eq!(c.next_error(), Some(ErrorCode::BadRequest));
    assert!(c.closed());
}

#[test]
fn pipelined_small_files_are_answered_in_order() {
    let server = Running::uploads();
    let files: Vec<Vec<u8>> = (0..6).map(|i| data(i * 700, 20 + i as u32)).collect();
    let mut c = Native::connect(server.addr, ALL_CAPS);
    for (i, f) in files.iter().enumerate() {
        let id = i as u32 + 1;
        c.send(&Message::PutBegin(begin(
            id,
            &format!("p/{i}.bin"),
            f,
            CHUNK,
        )));
        if !f.is_empty() {
            c.send_chunk(id, 0, f, CHUNK);
        }
        c.send(&Message::PutCommit { id });
    }
    for (i, f) in files.iter().enumerate() {
        let id = i as u32 + 1;
        assert!(matches!(c.up(), Up::Ready(r) if r.id == id));
        if !f.is_empty() {
            assert_eq!(c.up(), Up::Ack(id, 0));
        }
        assert_eq!(c.up(), Up::Done(id, both_digests(f)));
    }
    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            &std::fs::read(server.root.join(format!("p/{i}.bin"))).unwrap(),
            f
        );
    }
    // One-chunk files committed in the same batch never needed a row.
    assert!(rows(&server).is_empty());
}

#[test]
fn unfinished_uploads_expire_with_their_staging_files() {
    let server = Running::start_with(|c| {
        c.uploads.allow = true;
        c.uploads.ttl = Duration::from_secs(1);
    });
    let bytes = data(10_000, 14);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.begin(&begin(1, "x.bin", &bytes, CHUNK)).unwrap();
    c.chunk(1, 0, &bytes, CHUNK);
    assert_eq!(rows(&server).len(), 1);
    assert_eq!(staged(&server.root).len(), 1);
    // Not while it is open, however old.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rows(&server).len(), 1);
    drop(c);
    eventually("the upload to expire", || {
        rows(&server).is_empty() && staged(&server.root).is_empty()
    });
    let mut c = Native::connect(server.addr, ALL_CAPS);
    assert!(c
        .begin(&begin(1, "x.bin", &bytes, CHUNK))
        .unwrap()
        .have
        .is_empty());
}

#[test]
fn acknowledged_chunks_survive_a_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("share"), dir.path().join("state"));
    std::fs::create_dir(&root).unwrap();
    let bytes = data(100_000, 15); // 25 chunks
    let args = ["--allow-upload"];
    let (mut server, addr) = start_binary_with(&root, &dir.path().join("logs1"), &state, &args);
    let mut c = Native::connect(addr, ALL_CAPS);
    c.begin(&begin(1, "k.bin", &bytes, CHUNK)).unwrap();
    for i in 0..11 {
        assert_eq!(c.chunk(1, i, &bytes, CHUNK), Up::Ack(1, i));
    }
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(c);

    let (_server, addr) = start_binary_with(&root, &dir.path().join("logs2"), &state, &args);
    let mut c = Native::connect(addr, ALL_CAPS);
    let ready = c.begin(&begin(1, "k.bin", &bytes, CHUNK)).unwrap();
    assert_eq!(ready.have, ChunkRanges::prefix(11));
    for i in 11..25 {
        c.chunk(1, i, &bytes, CHUNK);
    }
    assert_eq!(c.commit(1).unwrap(), both_digests(&bytes));
    assert_eq!(std::fs::read(root.join("k.bin")).unwrap(), bytes);
    let logs = crate::support::logs(&dir.path().join("logs2"));
    assert!(
        logs.contains("upload of 'k.bin' from 127.0.0.1:") && logs.contains("resumes: 11 of 25"),
        "{logs}"
    );
}

#[test]
fn a_large_commit_keeps_the_client_alive_and_mkdir_answers_file_info() {
    // Large enough that reading it back may take a moment in a debug build.
    let server = Running::uploads();
    let bytes = data(24 << 20, 16);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let chunk = 1 << 20;
    let ready = c.begin(&begin(1, "big/b.bin", &bytes, chunk)).unwrap();
    // Out of order, so the commit reads the file back.
    for i in (0..24).rev() {
        c.send_chunk(1, i, &bytes, ready.chunk_size);
    }
    for i in (0..24).rev() {
        assert_eq!(c.up(), Up::Ack(1, i));
    }
    let started = SystemTime::now();
    assert_eq!(c.commit(1).unwrap(), both_digests(&bytes));
    let secs = started.elapsed().unwrap().as_secs();
    assert!(
        c.keepalives as u64 + 1 >= secs,
        "{} keep-alives in {secs} s",
        c.keepalives
    );
    let info = c.mkdir("big").unwrap();
    assert_eq!((info.kind, info.size), (FileKind::Directory, 0));
    let sha = c.stat("big/b.bin").unwrap().digests;
    assert!(sha.iter().any(|d| d.algorithm == Algorithm::Sha256));
}

#[test]
fn a_stored_upload_that_lost_its_data_is_discarded_at_the_commit() {
    let server = Running::uploads();
    let bytes = data(12_288, 17); // three full chunks
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.begin(&begin(1, "lost.bin", &bytes, CHUNK)).unwrap();
    for i in 0..3 {
        c.chunk(1, i, &bytes, CHUNK);
    }
    drop(c);
    // As after a power cut: the row says held, the bytes never reached the disk.
    let name = staged(&server.root).pop().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(server.root.join(STAGING_DIR).join(name))
        .unwrap();
    file.set_len(5000).unwrap();
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let ready = c.begin(&begin(1, "lost.bin", &bytes, CHUNK)).unwrap();
    assert_eq!(ready.have, ChunkRanges::prefix(3));
    let (code, message) = c.commit(1).unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch);
    assert!(message.contains("lost part of 'lost.bin'"), "{message}");
    assert!(staged(&server.root).is_empty() && rows(&server).is_empty());
    assert!(c
        .upload(&begin(1, "lost.bin", &bytes, CHUNK), &bytes)
        .is_ok());
}
