//! Streamed uploads (capability `STREAM_PUT`): the whole-file digests come with the commit
//! (`PutCommitDigests`), chunks carry BLAKE3 (or SHA-256) digests. In order and out of order,
//! resumed, a wrong digest at the commit, flags the session did not agree on, corrupted
//! chunks and the wrong kind of commit; BLAKE3 tree chunk values (capability `BLAKE3_TREE`),
//! from which the server assembles the whole-file BLAKE3 that such an upload is committed
//! with.

use crate::support::{blake3_digest, both_digests, data, Native, Running, Up, ALL_CAPS};
use sfts_protocol::{
    chunk_count, Capabilities, ChunkDigest, Digest, ErrorCode, PutBegin, RejectReason,
};
use sfts_server::paths::STAGING_DIR;
use std::path::Path;

const CHUNK: u32 = 4096;
const MTIME: i64 = 1_600_000_000_123_456_789;
/// What `sfts-client` announces: everything, BLAKE3 and streamed uploads included.
const STREAM_CAPS: u64 = ALL_CAPS | Capabilities::BLAKE3 | Capabilities::STREAM_PUT;

fn streamed(id: u32, path: &str, bytes: &[u8], kind: ChunkDigest) -> PutBegin {
    PutBegin::streamed(id, path, bytes.len() as u64, MTIME, CHUNK, kind)
}

/// The SHA-256 alone, as `sfts-client put` commits without BLAKE3 tree values.
fn sha256_only(bytes: &[u8]) -> Vec<Digest> {
    both_digests(bytes)[1..].to_vec()
}

/// The BLAKE3 alone, as `sfts-client put` commits with BLAKE3 tree values.
fn blake3_only(bytes: &[u8]) -> Vec<Digest> {
    vec![blake3_digest(bytes)]
}

fn nothing_staged(root: &Path) -> bool {
    std::fs::read_dir(root.join(STAGING_DIR)).map_or(true, |mut d| d.next().is_none())
}

/// Begins, sends `order` (each acknowledged), commits with `digests`.
fn upload(
    c: &mut Native,
    b: &PutBegin,
    bytes: &[u8],
    order: &[u64],
    digests: Vec<Digest>,
) -> Result<Vec<Digest>, (ErrorCode, String)> {
    let ready = c.begin(b)?;
    assert_eq!(ready.chunk_size, CHUNK);
    for &i in order {
        c.send_chunk_with(b.id, i, bytes, CHUNK, b.chunk_digest);
        assert_eq!(c.up(), Up::Ack(b.id, i));
    }
    c.commit_with(b.id, digests)
}

#[test]
fn a_streamed_upload_in_order_is_checked_published_and_cached() {
    let server = Running::uploads();
    let bytes = data(10_000, 1); // three chunks, the last short
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    assert!(c.caps.has(Capabilities::STREAM_PUT | Capabilities::BLAKE3));
    let b = streamed(1, "s/in-order.bin", &bytes, ChunkDigest::Blake3);
    let done = upload(&mut c, &b, &bytes, &[0, 1, 2], sha256_only(&bytes)).unwrap();
    // The digests computed on the way: SHA-256 and BLAKE3; MD5 nobody asked for.
    let want = vec![both_digests(&bytes)[1].clone(), blake3_digest(&bytes)];
    assert_eq!(done, want);
    let published = server.root.join("s/in-order.bin");
    assert_eq!(std::fs::read(published).unwrap(), bytes);
    assert!(nothing_staged(&server.root));
    assert_eq!(c.stat("s/in-order.bin").unwrap().digests, want);
    // MD5 may come with the commit too (checked after reading the file back), and SHA-256
    // chunks are fine with STREAM_PUT.
    let b = streamed(2, "s/sha-chunks.bin", &bytes, ChunkDigest::Sha256);
    let done = upload(&mut c, &b, &bytes, &[0, 1, 2], both_digests(&bytes)).unwrap();
    let mut every = both_digests(&bytes);
    every.push(blake3_digest(&bytes));
    assert_eq!(done, every);
    // An empty file: no chunk at all.
    let b = streamed(3, "s/empty", b"", ChunkDigest::Blake3);
    assert!(upload(&mut c, &b, b"", &[], sha256_only(b"")).is_ok());
    assert_eq!(std::fs::read(server.root.join("s/empty")).unwrap(), b"");
}

#[test]
fn a_streamed_upload_out_of_order_is_read_back_and_checked() {
    let server = Running::uploads();
    let bytes = data(20_000, 2);
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    let b = streamed(1, "ooo.bin", &bytes, ChunkDigest::Blake3);
    let done = upload(&mut c, &b, &bytes, &[4, 0, 2, 1, 3], both_digests(&bytes)).unwrap();
    assert_eq!(done[..2], both_digests(&bytes));
    assert_eq!(std::fs::read(server.root.join("ooo.bin")).unwrap(), bytes);
}

#[test]
fn a_streamed_upload_resumes_by_size_mtime_and_chunk_digest() {
    let server = Running::uploads();
    let bytes = data(5 * CHUNK as usize + 7, 3);
    let total = chunk_count(bytes.len() as u64, CHUNK);
    {
        let mut c = Native::connect(server.addr, STREAM_CAPS);
        let b = streamed(1, "r.bin", &bytes, ChunkDigest::Blake3);
        assert!(c.begin(&b).unwrap().have.is_empty());
        for i in 0..3 {
            c.send_chunk_with(1, i, &bytes, CHUNK, ChunkDigest::Blake3);
            assert_eq!(c.up(), Up::Ack(1, i));
        }
        // The connection drops before the commit.
    }
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    let b = streamed(7, "r.bin", &bytes, ChunkDigest::Blake3);
    let ready = c.begin(&b).unwrap();
    assert_eq!(ready.have.missing(total).collect::<Vec<_>>(), [3, 4, 5]);
    for i in 3..total {
        c.send_chunk_with(7, i, &bytes, CHUNK, ChunkDigest::Blake3);
        assert_eq!(c.up(), Up::Ack(7, i));
    }
    // Chunks from the first connection are read back: the digests still match.
    assert!(c.commit_with(7, sha256_only(&bytes)).is_ok());
    assert_eq!(std::fs::read(server.root.join("r.bin")).unwrap(), bytes);

    // Another modification time, or another chunk digest, is another file: not resumed.
    let b = streamed(1, "r2.bin", &bytes, ChunkDigest::Blake3);
    c.begin(&b).unwrap();
    c.send_chunk_with(1, 0, &bytes, CHUNK, ChunkDigest::Blake3);
    assert_eq!(c.up(), Up::Ack(1, 0));
    c.send(&sfts_protocol::Message::PutAbort { id: 1 });
    assert_eq!(c.up(), Up::Aborted(1));
    let b = streamed(1, "r2.bin", &bytes, ChunkDigest::Blake3);
    c.begin(&b).unwrap();
    c.send_chunk_with(1, 0, &bytes, CHUNK, ChunkDigest::Blake3);
    assert_eq!(c.up(), Up::Ack(1, 0));
    drop(c);
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    let later = PutBegin {
        mtime_ns: MTIME + 1,
        ..streamed(1, "r2.bin", &bytes, ChunkDigest::Blake3)
    };
    assert!(c.begin(&later).unwrap().have.is_empty());
    drop(c);
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    let sha_chunks = PutBegin {
        mtime_ns: MTIME + 1,
        ..streamed(1, "r2.bin", &bytes, ChunkDigest::Sha256)
    };
    assert!(c.begin(&sha_chunks).unwrap().have.is_empty());
}

#[test]
fn a_wrong_digest_at_the_commit_discards_the_upload() {
    let server = Running::uploads();
    let bytes = data(10_000, 4);
    let other = data(10_000, 5);
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    let b = streamed(1, "w.bin", &bytes, ChunkDigest::Blake3);
    let (code, message) = upload(&mut c, &b, &bytes, &[0, 1, 2], sha256_only(&other)).unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch, "{message}");
    assert!(message.contains("sent with the commit"), "{message}");
    assert!(!server.root.join("w.bin").exists(), "never published");
    assert!(nothing_staged(&server.root));
    // Nothing is kept: the same upload starts from nothing.
    assert!(c.begin(&b).unwrap().have.is_empty());

    // A matching SHA-256 with a wrong MD5 is refused just the same.
    let b = streamed(2, "w2.bin", &bytes, ChunkDigest::Blake3);
    let mut lie = both_digests(&bytes);
    lie[0] = both_digests(&other)[0].clone();
    let (code, _) = upload(&mut c, &b, &bytes, &[0, 1, 2], lie).unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch);
    assert!(!server.root.join("w2.bin").exists());
}

#[test]
fn streamed_flags_need_the_capabilities() {
    let server = Running::uploads();
    let bytes = data(100, 6);
    // A client that did not announce STREAM_PUT may not use its flags.
    let mut c = Native::connect(server.addr, ALL_CAPS | Capabilities::BLAKE3);
    assert!(!c.caps.has(Capabilities::STREAM_PUT));
    for kind in [ChunkDigest::Sha256, ChunkDigest::Blake3] {
        let (code, message) = c.begin(&streamed(1, "f", &bytes, kind)).unwrap_err();
        assert_eq!(code, ErrorCode::BadRequest, "{message}");
        assert!(message.contains("STREAM_PUT"), "{message}");
    }
    // BLAKE3 chunks without BLAKE3 in a plain upload too.
    let b = PutBegin {
        chunk_digest: ChunkDigest::Blake3,
        ..crate::support::begin(1, "f", &bytes, CHUNK)
    };
    assert_eq!(c.begin(&b).unwrap_err().0, ErrorCode::BadRequest);
    // STREAM_PUT without BLAKE3: SHA-256 chunks only.
    let mut c = Native::connect(server.addr, ALL_CAPS | Capabilities::STREAM_PUT);
    let (code, _) = c
        .begin(&streamed(1, "f", &bytes, ChunkDigest::Blake3))
        .unwrap_err();
    assert_eq!(code, ErrorCode::BadRequest);
    let b = streamed(1, "f", &bytes, ChunkDigest::Sha256);
    assert!(upload(&mut c, &b, &bytes, &[0], sha256_only(&bytes)).is_ok());
    assert!(nothing_staged(&server.root));
}

#[test]
fn tree_values_give_the_whole_file_blake3() {
    let server = Running::uploads();
    let mut c = Native::connect(server.addr, STREAM_CAPS | Capabilities::BLAKE3_TREE);
    assert!(c.caps.has(Capabilities::BLAKE3_TREE));
    // Empty, one byte, one whole chunk, three chunks with a short one, 33 chunks and a byte
    // (an uneven tree); in order, so no byte is hashed twice.
    let c32 = CHUNK as usize;
    for (n, len) in [0, 1, c32, 10_000, 33 * c32 + 1].into_iter().enumerate() {
        let bytes = data(len, 20 + n as u32);
        let name = format!("tree/{len}.bin");
        let b = streamed(n as u32 + 1, &name, &bytes, ChunkDigest::Blake3Tree);
        let order: Vec<u64> = (0..chunk_count(len as u64, CHUNK)).collect();
        let done = upload(&mut c, &b, &bytes, &order, blake3_only(&bytes)).unwrap();
        // Checked with the BLAKE3 assembled from the values; no byte was hashed again, so
        // there is no SHA-256 to report.
        assert_eq!(done, blake3_only(&bytes), "{len} bytes");
        assert_eq!(std::fs::read(server.root.join(&name)).unwrap(), bytes);
        // A SHA-256 in the commit is checked too: the file is read back for it.
        let b = PutBegin {
            force: true,
            ..streamed(99, &name, &bytes, ChunkDigest::Blake3Tree)
        };
        let want = vec![both_digests(&bytes)[1].clone(), blake3_digest(&bytes)];
        let done = upload(&mut c, &b, &bytes, &order, want.clone()).unwrap();
        assert!(
            want.iter().all(|d| done.contains(d)),
            "{len} bytes: {done:?}"
        );
        // And a wrong one is found.
        let b = PutBegin {
            force: true,
            ..streamed(100, &name, &bytes, ChunkDigest::Blake3Tree)
        };
        let mut lie = want.clone();
        lie[0] = both_digests(&data(len + 1, 1))[1].clone();
        let (code, message) = upload(&mut c, &b, &bytes, &order, lie).unwrap_err();
        assert_eq!(code, ErrorCode::ChecksumMismatch, "{len} bytes: {message}");
        assert!(message.contains("SHA-256"), "{message}");
    }
    // Out of order: read back at the commit, same digests.
    let bytes = data(20_000, 30);
    let b = streamed(7, "tree/ooo.bin", &bytes, ChunkDigest::Blake3Tree);
    let done = upload(&mut c, &b, &bytes, &[4, 0, 3, 1, 2], blake3_only(&bytes)).unwrap();
    assert!(done.contains(&blake3_digest(&bytes)), "{done:?}");
    assert!(nothing_staged(&server.root));
}

#[test]
fn a_tree_upload_is_checked_with_its_blake3() {
    let server = Running::uploads();
    let bytes = data(10_000, 33);
    let other = data(10_000, 34);
    let mut c = Native::connect(server.addr, STREAM_CAPS | Capabilities::BLAKE3_TREE);
    // Another file's BLAKE3: the assembled one differs, nothing is published.
    let b = streamed(1, "tw.bin", &bytes, ChunkDigest::Blake3Tree);
    let (code, message) = upload(&mut c, &b, &bytes, &[0, 1, 2], blake3_only(&other)).unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch, "{message}");
    assert!(message.contains("BLAKE3"), "{message}");
    assert!(!server.root.join("tw.bin").exists(), "never published");
    assert!(nothing_staged(&server.root));
    // A commit with neither the BLAKE3 nor the SHA-256 (an MD5 alone) is refused; the
    // chunks are kept.
    let b = streamed(2, "tw.bin", &bytes, ChunkDigest::Blake3Tree);
    let md5 = vec![both_digests(&bytes)[0].clone()];
    let (code, message) = upload(&mut c, &b, &bytes, &[0, 1, 2], md5).unwrap_err();
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    assert!(
        message.contains("at least the BLAKE3 or the SHA-256"),
        "{message}"
    );
    assert!(!server.root.join("tw.bin").exists());
    // The SHA-256 alone (what clients sent before the BLAKE3 rule) still commits: read back.
    let b = streamed(3, "tw.bin", &bytes, ChunkDigest::Blake3Tree);
    assert!(!c.begin(&b).unwrap().have.is_empty());
    let done = c.commit_with(3, sha256_only(&bytes)).unwrap();
    assert!(done.contains(&blake3_digest(&bytes)), "{done:?}");
    assert!(done.contains(&sha256_only(&bytes)[0]), "{done:?}");
    assert_eq!(std::fs::read(server.root.join("tw.bin")).unwrap(), bytes);
}

#[test]
fn tree_values_with_the_sha256_announced_up_front_commit_with_it() {
    let server = Running::uploads();
    let bytes = data(10_000, 35);
    let mut c = Native::connect(server.addr, STREAM_CAPS | Capabilities::BLAKE3_TREE);
    let b = PutBegin {
        chunk_digest: ChunkDigest::Blake3Tree,
        ..crate::support::begin(1, "up-front.bin", &bytes, CHUNK)
    };
    c.begin(&b).unwrap();
    for i in 0..3 {
        c.send_chunk_with(1, i, &bytes, CHUNK, ChunkDigest::Blake3Tree);
        assert_eq!(c.up(), Up::Ack(1, i));
    }
    // Checked with the announced SHA-256 (and MD5), hashed as the chunks arrived.
    let done = c.commit(1).unwrap();
    assert!(done.contains(&sha256_only(&bytes)[0]), "{done:?}");
    assert!(done.contains(&blake3_digest(&bytes)), "{done:?}");
    assert_eq!(
        std::fs::read(server.root.join("up-front.bin")).unwrap(),
        bytes
    );
    // A file that is not the announced one is not published.
    let other = data(10_000, 36);
    let b = PutBegin {
        chunk_digest: ChunkDigest::Blake3Tree,
        sha256: crate::support::begin(2, "x", &other, CHUNK).sha256,
        md5: None,
        ..crate::support::begin(2, "lie.bin", &bytes, CHUNK)
    };
    c.begin(&b).unwrap();
    for i in 0..3 {
        c.send_chunk_with(2, i, &bytes, CHUNK, ChunkDigest::Blake3Tree);
        assert_eq!(c.up(), Up::Ack(2, i));
    }
    assert_eq!(c.commit(2).unwrap_err().0, ErrorCode::ChecksumMismatch);
    assert!(!server.root.join("lie.bin").exists());
}

#[test]
fn a_tree_value_only_fits_its_own_place() {
    let server = Running::uploads();
    let bytes = data(3 * CHUNK as usize, 31);
    let mut c = Native::connect(server.addr, STREAM_CAPS | Capabilities::BLAKE3_TREE);
    let b = streamed(1, "t.bin", &bytes, ChunkDigest::Blake3Tree);
    c.begin(&b).unwrap();
    // The plain BLAKE3 of chunk 1, and chunk 1's bytes with chunk 2's place: both wrong.
    c.send_chunk_with(1, 1, &bytes, CHUNK, ChunkDigest::Blake3);
    assert_eq!(c.up(), Up::Rejected(1, 1, RejectReason::DigestMismatch));
    let chunk1 = &bytes[CHUNK as usize..2 * CHUNK as usize];
    let size = bytes.len() as u64;
    c.send(&sfts_protocol::Message::PutChunk(sfts_protocol::PutChunk {
        id: 1,
        index: 1,
        digest: ChunkDigest::Blake3Tree.of_chunk(2 * u64::from(CHUNK), size, chunk1),
        data: chunk1,
    }));
    assert_eq!(c.up(), Up::Rejected(1, 1, RejectReason::DigestMismatch));
    for i in 0..3 {
        c.send_chunk_with(1, i, &bytes, CHUNK, ChunkDigest::Blake3Tree);
        assert_eq!(c.up(), Up::Ack(1, i));
    }
    let done = c.commit_with(1, blake3_only(&bytes)).unwrap();
    assert_eq!(done, blake3_only(&bytes));
}

#[test]
fn tree_values_need_the_capability_and_a_power_of_two() {
    let server = Running::uploads();
    let bytes = data(100, 32);
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    assert!(!c.caps.has(Capabilities::BLAKE3_TREE));
    let b = streamed(1, "p.bin", &bytes, ChunkDigest::Blake3Tree);
    let (code, message) = c.begin(&b).unwrap_err();
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    assert!(message.contains("BLAKE3_TREE"), "{message}");
    let mut c = Native::connect(server.addr, STREAM_CAPS | Capabilities::BLAKE3_TREE);
    let odd = PutBegin {
        chunk_size: 5000,
        ..b.clone()
    };
    let (code, message) = c.begin(&odd).unwrap_err();
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    assert!(message.contains("power of two"), "{message}");
    assert!(upload(&mut c, &b, &bytes, &[0], blake3_only(&bytes)).is_ok());
}

#[test]
fn a_corrupted_blake3_chunk_is_rejected_and_sent_again() {
    let server = Running::uploads();
    let bytes = data(10_000, 7);
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    let b = streamed(1, "c.bin", &bytes, ChunkDigest::Blake3);
    c.begin(&b).unwrap();
    // A SHA-256 where the upload uses BLAKE3: the digest does not match.
    c.send_chunk_with(1, 0, &bytes, CHUNK, ChunkDigest::Sha256);
    assert_eq!(c.up(), Up::Rejected(1, 0, RejectReason::DigestMismatch));
    for i in 0..3 {
        c.send_chunk_with(1, i, &bytes, CHUNK, ChunkDigest::Blake3);
        assert_eq!(c.up(), Up::Ack(1, i));
    }
    assert!(c.commit_with(1, sha256_only(&bytes)).is_ok());
    assert_eq!(std::fs::read(server.root.join("c.bin")).unwrap(), bytes);
}

#[test]
fn each_kind_of_upload_has_its_own_commit() {
    let server = Running::uploads();
    let bytes = data(100, 8);
    let mut c = Native::connect(server.addr, STREAM_CAPS);
    // A streamed upload committed without digests, or with no SHA-256 among them.
    for digests in [None, Some(vec![both_digests(&bytes)[0].clone()])] {
        let b = streamed(1, "k.bin", &bytes, ChunkDigest::Blake3);
        c.begin(&b).unwrap();
        c.send_chunk_with(1, 0, &bytes, CHUNK, ChunkDigest::Blake3);
        assert_eq!(c.up(), Up::Ack(1, 0));
        let refused = match digests {
            None => c.commit(1),
            Some(d) => c.commit_with(1, d),
        };
        assert_eq!(refused.unwrap_err().0, ErrorCode::BadRequest);
        assert!(!server.root.join("k.bin").exists());
    }
    // The chunk is kept: the upload resumes and commits properly.
    let b = streamed(2, "k.bin", &bytes, ChunkDigest::Blake3);
    assert!(!c.begin(&b).unwrap().have.is_empty());
    assert!(c.commit_with(2, sha256_only(&bytes)).is_ok());
    // An ordinary upload committed with PutCommitDigests.
    let b = crate::support::begin(3, "plain.bin", &bytes, CHUNK);
    c.begin(&b).unwrap();
    c.send_chunk(3, 0, &bytes, CHUNK);
    assert_eq!(c.up(), Up::Ack(3, 0));
    assert_eq!(
        c.commit_with(3, sha256_only(&bytes)).unwrap_err().0,
        ErrorCode::BadRequest
    );
}
