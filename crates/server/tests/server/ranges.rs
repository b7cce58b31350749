//! Ranged `Get`s: exactly the bytes asked for, the whole file's digests in the trailer, the
//! whole file instead when `if_match` names another version, refusals for offsets past the end,
//! `Stat`, BLAKE3 for the clients that announce it, and how the bytes are cut into frames.

use crate::support::{
    blake3_digest, both_digests, data, range, whole, xxh128_digest, Native, Running, ALL_CAPS,
};
use sfts_protocol::{
    Algorithm, Capabilities, DigestSet, ErrorCode, FileKind, FileVersion, GetRequest, Message,
    TO_END,
};
use std::time::{Duration, SystemTime};

#[test]
fn a_range_is_exactly_its_bytes_with_the_whole_files_digests() {
    let server = Running::with_state();
    let bytes = data(300_000, 1);
    server.put("f.bin", &bytes);
    let want = both_digests(&bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);

    // Uncached: the part before the range, the range and the part after it are all hashed.
    let r = c.get(range("f.bin", 100_000, 50_000)).unwrap();
    assert_eq!(
        (r.header.size, r.header.offset, r.header.length),
        (300_000, 100_000, 50_000)
    );
    assert!(r.data == bytes[100_000..150_000], "wrong bytes");
    assert_eq!(r.digests, want);

    // Cached now; ranges running past the end are cut there.
    for (offset, length, end) in [
        (250_000, TO_END, 300_000),
        (299_999, 10, 300_000),
        (0, 1, 1),
        (4095, 4098, 8193),
    ] {
        let r = c.get(range("f.bin", offset, length)).unwrap();
        assert_eq!(r.header.offset, offset);
        assert!(r.data == bytes[offset as usize..end], "{offset}+{length}");
        assert_eq!(r.digests, want);
    }

    // Empty ranges: a header, no Data, the trailer.
    for (offset, length) in [(300_000, TO_END), (10, 0)] {
        let r = c.get(range("f.bin", offset, length)).unwrap();
        assert_eq!((r.header.length, r.data.len()), (0, 0));
        assert_eq!(r.digests, want);
    }
}

#[test]
fn a_range_of_another_version_gets_the_whole_file() {
    let server = Running::with_state();
    let bytes = data(20_000, 2);
    server.put("f.bin", &bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let mtime = c.stat("f.bin").unwrap().mtime_ns;
    let ranged = |size, mtime_ns| GetRequest {
        if_match: Some(FileVersion { size, mtime_ns }),
        ..range("f.bin", 5000, TO_END)
    };

    let r = c.get(ranged(20_000, mtime)).unwrap();
    assert_eq!((r.header.offset, r.header.mtime_ns), (5000, mtime));
    assert!(r.data == bytes[5000..]);

    for (size, mtime_ns) in [(20_000, mtime - 1), (19_999, mtime), (50_000, mtime)] {
        let r = c.get(ranged(size, mtime_ns)).unwrap();
        assert_eq!((r.header.offset, r.header.length), (0, 20_000));
        assert!(r.data == bytes, "not the whole file");
        assert_eq!(r.digests, both_digests(&bytes));
    }
}

#[test]
fn an_offset_past_the_end_is_a_bad_request_and_the_session_goes_on() {
    let server = Running::with_state();
    server.put("f.bin", &data(1000, 3));
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let (code, message) = c.get(range("f.bin", 1001, TO_END)).unwrap_err();
    assert_eq!(code, ErrorCode::BadRequest);
    assert_eq!(
        message,
        "offset 1001 is beyond the end of 'f.bin', which has 1000 bytes"
    );
    assert_eq!(c.get(range("f.bin", 1000, TO_END)).unwrap().data, b"");
    assert_eq!(c.get(range("f.bin", 999, TO_END)).unwrap().data.len(), 1);
}

#[test]
fn no_digests_wanted_means_an_empty_trailer_and_no_hashing() {
    let server = Running::with_state();
    let bytes = data(100_000, 4);
    server.put("f.bin", &bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let r = c
        .get(GetRequest {
            offset: 4096,
            length: 4096,
            ..whole("f.bin", &[])
        })
        .unwrap();
    assert!(r.data == bytes[4096..8192]);
    assert!(r.digests.is_empty());
    assert_eq!(c.get(whole("f.bin", &[])).unwrap().digests, vec![]);
    assert_eq!(
        server.db().cached_digest_count().unwrap(),
        0,
        "something hashed"
    );

    let only_md5 = c.get(whole("f.bin", &[Algorithm::Md5])).unwrap();
    assert_eq!(only_md5.digests, both_digests(&bytes)[..1]);
    assert_eq!(server.db().cached_digest_count().unwrap(), 1);
}

#[test]
fn stat_describes_files_and_folders_with_cached_digests_only() {
    let server = Running::with_state();
    let bytes = data(5000, 5);
    let path = server.put("f.bin", &bytes);
    std::fs::create_dir(server.root.join("dir")).unwrap();
    let mut c = Native::connect(server.addr, ALL_CAPS);

    let info = c.stat("f.bin").unwrap();
    assert_eq!((info.kind, info.size), (FileKind::File, 5000));
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let since_epoch = modified.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(info.mtime_ns, since_epoch.as_nanos() as i64);
    assert!(info.digests.is_empty(), "Stat must not hash");
    assert_eq!(server.db().cached_digest_count().unwrap(), 0);

    let r = c.get(whole("f.bin", &[Algorithm::Sha256])).unwrap();
    assert_eq!(r.header.mtime_ns, info.mtime_ns);
    assert_eq!(c.stat("./f.bin").unwrap().digests, both_digests(&bytes));

    for dir in ["dir", ".", "dir/"] {
        let info = c.stat(dir).unwrap();
        assert_eq!((info.kind, info.size), (FileKind::Directory, 0), "{dir}");
    }
    for (path, code) in [
        ("missing", ErrorCode::NotFound),
        ("../f.bin", ErrorCode::OutsideRoot),
        ("/etc", ErrorCode::OutsideRoot),
        ("", ErrorCode::BadRequest),
    ] {
        assert_eq!(c.stat(path).unwrap_err().0, code, "{path}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/", server.root.join("out")).unwrap();
        assert_eq!(c.stat("out").unwrap_err().0, ErrorCode::OutsideRoot);
    }
    // Still in step after all those refusals.
    assert_eq!(c.get(whole("f.bin", &[])).unwrap().data, bytes);
}

#[test]
fn keepalives_flow_while_a_large_prefix_is_hashed() {
    // Sparse: nothing on disk, but hashing 640 MiB of zeros takes over a second.
    let server = Running::with_state();
    let size = 640u64 << 20;
    let f = std::fs::File::create(server.root.join("sparse")).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let mut req = range("sparse", size - 10, TO_END);
    req.digests = DigestSet::of(&[Algorithm::Sha256]);
    c.send(&Message::Get(req));
    let started = std::time::Instant::now();
    let r = c.reply().unwrap();
    let took = started.elapsed();
    assert_eq!(r.data, [0; 10]);
    // One keep-alive per full second spent before the data (and after it).
    let expected = took.as_secs().saturating_sub(1) as usize;
    assert!(
        r.keepalives >= expected,
        "{} keep-alives in {took:?}",
        r.keepalives
    );
    eprintln!("KA {} in {took:?}", r.keepalives);
    assert!(took < Duration::from_secs(60));
}

#[test]
fn a_digest_only_get_sends_no_data_and_the_whole_files_digests() {
    let server = Running::with_state();
    let bytes = data(200_000, 6);
    server.put("f.bin", &bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    for _ in ["uncached", "cached"] {
        let r = c.get(range("f.bin", 0, 0)).unwrap();
        assert_eq!(
            (r.header.offset, r.header.length, r.header.size),
            (0, 0, 200_000)
        );
        assert!(r.data.is_empty());
        assert_eq!(r.digests, both_digests(&bytes));
    }
    assert_eq!(server.db().cached_digest_count().unwrap(), 1);
}

/// A digest only the clients announcing `capability` may ask for and see: refused and never
/// shown without it, computed (with the others) and cached when the server hashes the file
/// anyway, served from the cache beside SHA-256 and in `Stat` with it, and the whole file's
/// for a range of an uncached file.
fn optional_digest_case(
    algorithm: Algorithm,
    capability: u64,
    of: fn(&[u8]) -> sfts_protocol::Digest,
    cached_of: fn(&sfts_state::CachedDigests) -> Option<Vec<u8>>,
    seed: u32,
) {
    let server = Running::with_state();
    let bytes = data(300_000, seed);
    server.put("f.bin", &bytes);
    let sha256 = both_digests(&bytes)[1].clone();
    let others = ALL_CAPS | (Capabilities::BLAKE3 | Capabilities::XXH128) & !capability;

    let mut older = Native::connect(server.addr, others);
    assert!(!older.caps.has(capability));
    let (code, message) = older.get(whole("f.bin", &[algorithm])).unwrap_err();
    assert_eq!(code, ErrorCode::Unsupported);
    assert!(message.contains(algorithm.label()), "{message}");
    // The session goes on; hashing the file computed this digest too.
    let r = older.get(whole("f.bin", &[Algorithm::Sha256])).unwrap();
    assert_eq!(r.digests, std::slice::from_ref(&sha256));
    let shown = older.stat("f.bin").unwrap().digests;
    assert!(shown.contains(&sha256) && shown.iter().all(|d| d.algorithm != algorithm));
    let cached = server
        .db()
        .lookup_digests(&crate::cache::key(&server.root, "f.bin"))
        .unwrap()
        .unwrap();
    assert_eq!(cached_of(&cached), Some(of(&bytes).bytes));

    let mut c = Native::connect(server.addr, ALL_CAPS | capability);
    assert!(c.caps.has(capability));
    let r = c
        .get(whole("f.bin", &[algorithm, Algorithm::Sha256]))
        .unwrap();
    assert!(r.data == bytes);
    assert_eq!(r.digests, [sha256.clone(), of(&bytes)]);
    let shown = c.stat("f.bin").unwrap().digests;
    assert!(
        shown.contains(&sha256) && shown.contains(&of(&bytes)),
        "{shown:?}"
    );
    // Uncached, with a range: the whole file's digest.
    server.put("g.bin", &bytes);
    let r = c.get(range_with("g.bin", 1000, 10, &[algorithm])).unwrap();
    assert_eq!(r.digests, [of(&bytes)]);
    assert_eq!(r.data, &bytes[1000..1010]);
}

#[test]
fn blake3_is_computed_cached_and_shown_to_the_clients_that_announce_it() {
    optional_digest_case(
        Algorithm::Blake3,
        Capabilities::BLAKE3,
        blake3_digest,
        |c| c.blake3.map(|d| d.to_vec()),
        21,
    );
}

#[test]
fn xxh128_is_computed_cached_and_shown_to_the_clients_that_announce_it() {
    optional_digest_case(
        Algorithm::Xxh128,
        Capabilities::XXH128,
        xxh128_digest,
        |c| c.xxh128.map(|d| d.to_vec()),
        22,
    );
}

fn range_with(path: &str, offset: u64, length: u64, digests: &[Algorithm]) -> GetRequest {
    GetRequest {
        digests: DigestSet::of(digests),
        ..range(path, offset, length)
    }
}

#[test]
fn the_first_frame_is_small_and_the_others_chunk_sized_however_the_bytes_are_sent() {
    let server = Running::with_state();
    let bytes = data((3 << 20) + 5, 22);
    server.put("f.bin", &bytes);
    let mut c = Native::connect(server.addr, ALL_CAPS);
    let frames = |len: usize| {
        let mut v = vec![65_536.min(len)];
        let mut left = len - v[0];
        while left > 0 {
            v.push(left.min(1 << 20));
            left -= v[v.len() - 1];
        }
        v
    };
    // Hashed while sent (read into a buffer), then from the cache and with no digests at all
    // (sendfile on this plain connection): the same bytes, cut the same way.
    for digests in [&[Algorithm::Sha256][..], &[Algorithm::Sha256], &[]] {
        let mut req = whole("f.bin", digests);
        req.chunk_size = 1 << 20;
        let r = c.get(req).unwrap();
        assert!(r.data == bytes, "wrong bytes");
        assert_eq!(r.frames, frames(bytes.len()));
    }
    let mut req = range("f.bin", 100, TO_END);
    req.chunk_size = 1 << 20;
    let r = c.get(req).unwrap();
    assert!(r.data == bytes[100..], "wrong bytes");
    assert_eq!(r.frames, frames(bytes.len() - 100));
    // A small chunk size bounds the first frame too.
    let mut req = range("f.bin", 0, 10_000);
    req.chunk_size = 4096;
    assert_eq!(c.get(req).unwrap().frames, [4096, 4096, 1808]);
}
