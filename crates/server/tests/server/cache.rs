//! The digest cache and the transfer history, seen from outside: a request is served from the
//! cache (proved by planting digests the server could not have computed, before the server
//! has seen the file: it keeps what it has seen in memory too), a touched file is hashed
//! again, original-protocol clients get their MD5 from the cache, a file that changes while it
//! is sent is never cached, and every request leaves one history row.

use crate::support::{
    both_digests, data, eventually, legacy_get, md5_hex, range, whole, Native, Running, ALL_CAPS,
};
use sfts_protocol::legacy::Metadata;
use sfts_protocol::{Algorithm, Digest, ErrorCode, Message, TO_END};
use sfts_state::{CachedDigests, FileKey};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::time::{Duration, SystemTime};

const BOTH: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha256];

/// The cache key of `name` under `root` as it is now.
pub fn key(root: &Path, name: &str) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root.join(name)).unwrap();
    FileKey {
        path: name.into(),
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        inode: m.ino(),
        device: m.dev(),
    }
}

/// Digests no server could compute from the file: if a client receives them, they came from
/// the cache.
fn planted() -> CachedDigests {
    CachedDigests {
        md5: Some([0xaa; 16]),
        sha256: Some([0xbb; 32]),
        blake3: Some([0xcc; 32]),
        xxh128: Some([0xdd; 16]),
        chunks: None,
    }
}

fn planted_list() -> Vec<Digest> {
    vec![
        Digest::new(Algorithm::Md5, vec![0xaa; 16]).unwrap(),
        Digest::new(Algorithm::Sha256, vec![0xbb; 32]).unwrap(),
    ]
}

#[test]
fn a_repeated_request_is_served_from_the_cache_with_chunk_digests_stored() {
    let server = Running::with_state();
    let bytes = data(50_000, 10);
    server.put("f.bin", &bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    assert_eq!(
        c.get(whole("f.bin", &[Algorithm::Sha256])).unwrap().digests,
        both_digests(&bytes)[1..]
    );
    // Both algorithms and the 4 KiB chunk digests were computed in that one pass.
    let k = key(&server.root, "f.bin");
    let cached = server.db().lookup_digests(&k).unwrap().expect("cached");
    assert_eq!(
        cached.md5.map(|d| d.to_vec()),
        Some(both_digests(&bytes)[0].bytes.clone())
    );
    let chunks = cached.chunks.expect("chunk digests");
    assert_eq!(chunks.chunk_size, 4096);
    let want: Vec<[u8; 32]> = bytes
        .chunks(4096)
        .map(|c| Sha256::digest(c).into())
        .collect();
    assert_eq!(chunks.sha256, want);

    // Another file, whose digests are planted before the server sees it.
    server.put("g.bin", &bytes);
    let k = key(&server.root, "g.bin");
    server.db().store_digests(&k, &planted()).unwrap();
    assert_eq!(
        c.get(whole("g.bin", &BOTH)).unwrap().digests,
        planted_list()
    );
    assert_eq!(
        c.get(range("g.bin", 100, 10)).unwrap().digests,
        planted_list()
    );
    // A request through another spelling of the path hits the same entry.
    assert_eq!(
        c.get(whole("./g.bin", &BOTH)).unwrap().digests,
        planted_list()
    );
}

#[test]
fn a_touched_file_is_hashed_again() {
    let server = Running::with_state();
    let bytes = data(10_000, 11);
    let path = server.put("f.bin", &bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    server
        .db()
        .store_digests(&key(&server.root, "f.bin"), &planted())
        .unwrap();
    assert_eq!(
        c.get(whole("f.bin", &BOTH)).unwrap().digests,
        planted_list()
    );

    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    drop(file);
    assert_eq!(
        c.get(whole("f.bin", &BOTH)).unwrap().digests,
        both_digests(&bytes)
    );
    let fresh = server
        .db()
        .lookup_digests(&key(&server.root, "f.bin"))
        .unwrap();
    assert!(fresh.is_some_and(|d| d.md5 != planted().md5));
    assert_eq!(server.db().cached_digest_count().unwrap(), 1);
}

/// The MD5 an original-protocol reply announced, and the data after it.
fn legacy_md5(server: &Running, name: &str) -> (String, Vec<u8>) {
    let (status, rest) = legacy_get(server.addr, name);
    assert_eq!(status, b"OK", "OK must arrive alone");
    let (meta, used) = Metadata::decode(&rest).unwrap().unwrap();
    (meta.md5.to_hex(), rest[used..].to_vec())
}

#[test]
fn original_protocol_clients_get_their_md5_on_a_miss_and_from_the_cache() {
    let server = Running::with_state();
    let bytes = data(3 << 20, 12);
    server.put("f.bin", &bytes);

    let (md5, got) = legacy_md5(&server, "f.bin");
    assert_eq!(md5, md5_hex(&bytes));
    assert!(got == bytes);
    // The MD5 pass computed SHA-256 too: a native client asking for it finds it cached.
    let k = key(&server.root, "f.bin");
    let cached = server.db().lookup_digests(&k).unwrap().expect("cached");
    assert_eq!(
        cached.sha256.map(|d| d.to_vec()),
        Some(both_digests(&bytes)[1].bytes.clone())
    );
    assert_eq!(cached.chunks.map(|c| c.sha256.len()), Some(3));
    let (md5, _) = legacy_md5(&server, "f.bin");
    assert_eq!(md5, md5_hex(&bytes));

    server.put("g.bin", &bytes);
    server
        .db()
        .store_digests(&key(&server.root, "g.bin"), &planted())
        .unwrap();
    let (md5, got) = legacy_md5(&server, "g.bin");
    assert_eq!(md5, "aa".repeat(16), "the MD5 was not taken from the cache");
    assert!(got == bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    assert_eq!(
        c.get(whole("g.bin", &BOTH)).unwrap().digests,
        planted_list()
    );
}

#[test]
fn a_file_changed_while_it_is_sent_is_an_error_and_never_cached() {
    let server = Running::with_state();
    let path = server.put("big", &data(32 << 20, 13));
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let mut req = whole("big", &BOTH);
    req.chunk_size = 1 << 20;
    c.send(&Message::Get(req));
    // 32 MiB is far more than the socket buffers hold: the server is still sending when the
    // file is touched.
    std::thread::sleep(Duration::from_millis(100));
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    drop(file);
    let (code, message) = c.reply().unwrap_err();
    assert_eq!(code, ErrorCode::Internal);
    assert_eq!(
        message,
        "file 'big' changed while it was being sent; try again"
    );
    assert_eq!(server.db().cached_digest_count().unwrap(), 0);
    eventually("the history row", || {
        let rows = server.db().recent_transfers(1).unwrap();
        rows.first().is_some_and(|r| r.result == "failed")
    });
}

#[test]
fn a_client_that_leaves_mid_transfer_leaves_nothing_cached() {
    let server = Running::with_state();
    server.put("big", &data(32 << 20, 14));
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let mut req = range("big", 16 << 20, TO_END);
    req.chunk_size = 1 << 20;
    c.send(&Message::Get(req));
    drop(c);
    eventually("the aborted history row", || {
        let rows = server.db().recent_transfers(1).unwrap();
        rows.first().is_some_and(|r| r.result == "aborted")
    });
    assert_eq!(server.db().cached_digest_count().unwrap(), 0);
    assert!(server.handle.connections().is_empty());
}

#[test]
fn every_request_leaves_one_history_row() {
    let server = Running::with_state();
    let bytes = data(10_000, 15);
    server.put("f.bin", &bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    c.get(range("f.bin", 1000, 500)).unwrap();
    c.get(whole("missing", &[])).unwrap_err();
    drop(c);
    legacy_md5(&server, "f.bin");
    legacy_get(server.addr, "missing");

    eventually("four history rows", || {
        server.db().recent_transfers(10).unwrap().len() == 4
            && server.db().recent_transfers(10).unwrap()[0].result != "running"
    });
    let rows = server.db().recent_transfers(10).unwrap();
    let summary: Vec<_> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r.protocol.as_str(),
                r.path.as_str(),
                r.offset,
                r.length,
                r.size,
                r.bytes,
                r.result.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("native", "f.bin", 1000, 500, 10_000, 500, "ok"),
            ("native", "missing", 0, 0, 0, 0, "refused"),
            ("legacy", "f.bin", 0, 10_000, 10_000, 10_000, "ok"),
            ("legacy", "missing", 0, 0, 0, 0, "refused"),
        ]
    );
    assert!(rows.iter().all(|r| r.peer.starts_with("127.0.0.1:")));
    assert!(rows.iter().all(|r| r.direction == "download"));
    assert_eq!(
        rows[2].error.as_deref(),
        Some("file 'missing' not found under the served root")
    );
    assert!(rows.iter().all(|r| r.duration_ms.is_some()));
}
