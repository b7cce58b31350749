//! Random bytes, frames cut at every byte, declared lengths at and beyond every maximum,
//! unknown message types.

use super::fixture::*;
use super::wire::*;
use crate::support::*;
use sfts_protocol::frame::{self, tag, MAX_CONTROL_LEN, MAX_DATA_LEN, MAX_PUT_CHUNK_LEN};
use sfts_protocol::{ErrorCode, MAGIC, MAX_PATH_LEN};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn random_bytes_truncated_frames_impossible_lengths_and_unknown_types() {
    let t = Target::start(&["--max-connections", "1000"]);
    let addr = t.addr();

    // 1. Random bytes, raw (the original protocol's length prefix), after the magic, and after
    // a valid Hello.
    for seed in 0..12u64 {
        let len = [1, 2, 3, 4, 5, 9, 64, 100, 1000, 4096, 65_536, 300_000][seed as usize];
        let blob = random_bytes(len, seed + 1);
        let r = exchange(addr, &blob, true, QUICK);
        assert_legacy_refused(&format!("random {len} bytes"), &r);
        let r = exchange(addr, &[&MAGIC[..], &blob].concat(), true, QUICK);
        assert_silent_or_refused(&format!("magic + random {len} bytes"), &r, false);
        let r = exchange(addr, &[hello(), blob].concat(), true, QUICK);
        assert_silent_or_refused(&format!("Hello + random {len} bytes"), &r, true);
    }
    t.assert_healthy("random bytes");

    // 2. Frames cut at every byte, the sending side then closed.
    let full = [hello(), enc(&get("good.bin"))].concat();
    let hello_len = hello().len();
    for cut in 0..full.len() {
        let r = exchange(addr, &full[..cut], true, QUICK);
        let case = format!("Hello + Get cut at byte {cut}");
        assert_silent_or_refused(&case, &r, cut >= hello_len);
    }
    let mut legacy = Vec::new();
    sfts_protocol::legacy::encode_request("good.bin", &mut legacy);
    for cut in 0..legacy.len() {
        let r = exchange(addr, &legacy[..cut], true, QUICK);
        assert_legacy_refused(&format!("legacy request cut at byte {cut}"), &r);
    }
    t.assert_healthy("truncated frames, then end of stream");

    // 3. Frames cut short and left open: the server drops them after its timeout.
    let open: Vec<(String, TcpStream)> = [
        ("half the magic".to_string(), full[..2].to_vec()),
        ("the magic alone".into(), full[..4].to_vec()),
        ("most of a Hello".into(), full[..hello_len - 3].to_vec()),
        (
            "Hello + a Get header".into(),
            full[..hello_len + 3].to_vec(),
        ),
        (
            "Hello + all of a Get but one byte".into(),
            full[..full.len() - 1].to_vec(),
        ),
        (
            "most of a legacy request".into(),
            legacy[..legacy.len() - 1].to_vec(),
        ),
    ]
    .into_iter()
    .map(|(case, bytes)| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&bytes).unwrap();
        (case, s)
    })
    .collect();
    let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS) + SLACK;
    for (case, mut s) in open {
        let r = read_until_closed(&mut s, deadline);
        assert!(
            r.closed,
            "{case}: still open {TIMEOUT_SECS} s + slack later"
        );
        assert!(
            !frames(&r.bytes)
                .iter()
                .any(|f| matches!(f, Frame::Header(_) | Frame::Data(_))),
            "{case}: data sent"
        );
    }
    t.assert_healthy("truncated frames left open");

    // 4. Declared lengths: zero, at each maximum (nothing follows), just above, u32::MAX;
    // before and after the Hello.
    let mut lengths: Vec<(u8, u32)> = [
        (tag::DATA, MAX_DATA_LEN),
        (tag::PUT_CHUNK, MAX_PUT_CHUNK_LEN),
        (tag::GET, MAX_CONTROL_LEN),
        (tag::HELLO, MAX_CONTROL_LEN),
    ]
    .into_iter()
    .flat_map(|(t, max)| [(t, u32::MAX), (t, max + 1), (t, max)])
    .collect();
    lengths.extend([
        (tag::LIST_ENTRIES, u32::MAX),
        (tag::ERROR, MAX_CONTROL_LEN + 1),
        (0x55, u32::MAX),
        (tag::GET, 0),
        (tag::DATA, 0),
    ]);
    for after_hello in [false, true] {
        for &(frame_tag, len) in &lengths {
            let prefix = if after_hello { hello() } else { MAGIC.to_vec() };
            let case = format!(
                "length {len} for tag {frame_tag:#04x}{}",
                if after_hello { " after Hello" } else { "" }
            );
            let over = frame::max_len(frame_tag).map_or(true, |max| len == 0 || len > max);
            if over {
                // Refused from the five header bytes alone, without waiting for more.
                let r = exchange(
                    addr,
                    &[prefix, header(len, frame_tag)].concat(),
                    false,
                    QUICK,
                );
                assert_refused_and_closed(&case, &r, after_hello, &[ErrorCode::BadRequest]);
            } else {
                let r = exchange(
                    addr,
                    &[prefix, header(len, frame_tag), vec![7; 100]].concat(),
                    true,
                    QUICK,
                );
                assert_silent_or_refused(&case, &r, after_hello);
            }
        }
    }
    for (case, bytes) in [
        ("legacy length u32::MAX", vec![0xff, 0xff, 0xff, 0xff, b'a']),
        ("legacy length 4,097", vec![0, 0, 0x10, 0x01, b'a']),
        ("legacy length 0", vec![0, 0, 0, 0]),
    ] {
        let r = exchange(addr, &bytes, false, QUICK);
        assert_legacy_refused(case, &r);
        assert!(!r.bytes.is_empty(), "{case}: no ERROR sentence");
    }
    let mut at_max = (MAX_PATH_LEN as u32).to_be_bytes().to_vec();
    at_max.extend(std::iter::repeat_n(b'a', MAX_PATH_LEN));
    assert_legacy_refused(
        "legacy name of 4,096 bytes",
        &exchange(addr, &at_max, true, QUICK),
    );
    t.assert_healthy("declared lengths");

    // 5. Every unknown message type after the Hello, and some before it.
    let unknown: Vec<u8> = (0..=255u8).filter(|x| !tag::ALL.contains(x)).collect();
    for &x in &unknown {
        let bytes = [hello(), header(3, x), vec![1, 2]].concat();
        let r = exchange(addr, &bytes, false, QUICK);
        let case = format!("unknown type {x:#04x}");
        assert_refused_and_closed(&case, &r, true, &[ErrorCode::BadRequest]);
    }
    for &x in unknown.iter().step_by(16) {
        let bytes = [MAGIC.to_vec(), header(1, x)].concat();
        let r = exchange(addr, &bytes, false, QUICK);
        let case = format!("unknown type {x:#04x} instead of Hello");
        assert_refused_and_closed(&case, &r, false, &[ErrorCode::BadRequest]);
    }
    t.assert_healthy("unknown message types");
}
