//! The checks behind the fuzz targets in `fuzz_targets/`, one public function per target, so
//! the same checks run under libFuzzer (`cargo fuzz run <target>`) and, over the committed
//! corpus, as plain tests on a stable toolchain (`cargo test` in this folder).
//!
//! Every check feeds arbitrary bytes to one decoder of `sfts-protocol` and asserts:
//!
//! * the decoder returns (it never panics, never overflows, never loops);
//! * what it accepts re-encodes to exactly the bytes it consumed (every native layout is
//!   canonical; the legacy metadata is, up to the case of its hex digest);
//! * `Ok(None)` ("need more bytes") only for a true prefix of something valid, and every strict
//!   prefix of a valid frame is `Ok(None)`, never an error;
//! * memory follows the bytes actually present, never a length or count the peer declared: a
//!   counting global allocator measures the peak of live bytes during each decode.
//!
//! What the targets found, and how each finding was fixed, is in `docs/FUZZING.md`.

use sfts_protocol::frame::{self, tag, Header, HEADER_LEN};
use sfts_protocol::io::read_message;
use sfts_protocol::legacy::{self, Metadata, Status};
use sfts_protocol::{ChunkRange, ChunkRanges, Message, ProtocolError, MAX_HAVE_RANGES};
use sfts_protocol::{MAX_CHUNK_SIZE, MAX_PATH_LEN, MIN_CHUNK_SIZE};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};

/// One target's check.
pub type Check = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/<name>.rs` and its corpus folder.
pub const TARGETS: [(&str, Check); 6] = [
    ("frame_header", frame_header),
    ("message", message),
    ("message_payload", message_payload),
    ("chunk_ranges", chunk_ranges),
    ("legacy_request", legacy_request),
    ("legacy_reply", legacy_reply),
];

// ---------------------------------------------------------------------------------------------
// Allocation accounting.

/// The system allocator, counting the live bytes of the current thread and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(n: usize) {
    // `try_with`: allocations made while the thread's locals are torn down are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak of bytes allocated (and still live at that
/// moment) while it ran, the result's own allocations included.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let result = f();
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    (result, peak)
}

/// The most a decoder may allocate for `present` bytes of input: a small multiple of what is
/// there (a listing entry is 48 bytes in memory for at least 20 on the wire), never anything
/// derived from a declared length or count.
pub fn decode_bound(present: usize) -> usize {
    4 * present + 1024
}

/// The most `read_message` may allocate when `present` bytes arrive: its read buffer grows with
/// the bytes that actually arrive (64 KiB ahead at most, doubling), plus what decoding them
/// takes. A peer that declares a 16 MiB frame and sends 5 bytes must not cost 16 MiB.
pub fn read_bound(present: usize) -> usize {
    64 * 1024 + 2 * present + decode_bound(present)
}

/// A reader that hands out its bytes a few at a time, so `read_message` has to reassemble
/// frames from short reads the way it does from a socket.
pub struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl<'a> Trickle<'a> {
    /// Hands out `bytes` in reads of 1 to 7 bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        Trickle { bytes, step: 0 }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step = self.step % 7 + 1;
        let n = self.step.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

fn declared_len(head: &[u8; HEADER_LEN]) -> u32 {
    u32::from_be_bytes([head[0], head[1], head[2], head[3]])
}

/// A handful of strict prefix lengths of a `len`-byte frame (all of them for short frames).
fn prefixes(len: usize) -> Vec<usize> {
    if len <= 64 {
        return (0..len).collect();
    }
    let mut cuts = vec![
        0,
        1,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        len / 2,
        len - 1,
    ];
    cuts.retain(|c| *c < len);
    cuts
}

// ---------------------------------------------------------------------------------------------
// Native framing and messages.

/// Target `frame_header`: [`Header::parse`] on the first five bytes.
pub fn frame_header(data: &[u8]) {
    let Some(head) = data.first_chunk::<HEADER_LEN>() else {
        return;
    };
    let declared = declared_len(head);
    match Header::parse(head) {
        Ok(h) => {
            assert_eq!(h.tag, head[4]);
            let max = frame::max_len(h.tag).expect("a parsed header has a known tag");
            assert!(
                (1..=max).contains(&declared),
                "{declared} accepted, max {max}"
            );
            assert_eq!(h.payload_len, declared as usize - 1);
            assert_eq!(&Header::encode(h.tag, h.payload_len), head);
        }
        Err(ProtocolError::EmptyFrame) => assert_eq!(declared, 0),
        Err(ProtocolError::UnknownTag(t)) => {
            assert_eq!(t, head[4]);
            assert!(!tag::ALL.contains(&t), "known tag {t:#04x} refused");
        }
        Err(ProtocolError::FrameTooLarge { tag, len, max }) => {
            assert_eq!(tag, head[4]);
            assert_eq!(len, u64::from(declared));
            assert_eq!(Ok(max), frame::max_len(tag).map(u64::from).map_err(|_| ()));
            assert!(len > max);
        }
        Err(e) => panic!("unexpected header error: {e}"),
    }
}

/// Target `message`: [`Message::decode`] on arbitrary bytes, checked against
/// [`read_message`] over the same bytes arriving in short reads.
pub fn message(data: &[u8]) {
    let (decoded, peak) = peak_during(|| Message::decode(data));
    assert!(
        peak <= decode_bound(data.len()),
        "Message::decode allocated {peak} bytes for {} bytes of input",
        data.len()
    );
    let mut buf = Vec::new();
    let buf_ref = &mut buf;
    let (read, read_peak) = peak_during(move || read_message(&mut Trickle::new(data), buf_ref));
    assert!(
        read_peak <= read_bound(data.len()),
        "read_message allocated {read_peak} bytes for {} bytes of input",
        data.len()
    );
    match decoded {
        Ok(Some((m, used))) => {
            let head = data
                .first_chunk::<HEADER_LEN>()
                .expect("a frame has a header");
            assert_eq!(used, HEADER_LEN + declared_len(head) as usize - 1);
            assert!(used <= data.len());
            let mut again = Vec::new();
            m.encode(&mut again);
            assert_eq!(again, &data[..used], "{} is not canonical", m.name());
            for cut in prefixes(used) {
                let r = Message::decode(&data[..cut]);
                assert!(matches!(r, Ok(None)), "prefix {cut} of {}: {r:?}", m.name());
            }
            // The blocking reader stops after the frame, whatever follows it.
            assert_eq!(read.expect("read_message refused a valid frame"), Some(m));
        }
        Ok(None) => {
            if let Some(head) = data.first_chunk::<HEADER_LEN>() {
                let h = Header::parse(head).expect("Ok(None) after a bad header");
                assert!(data.len() < HEADER_LEN + h.payload_len);
            }
            match read {
                Ok(None) => assert!(data.is_empty()),
                Err(ProtocolError::ConnectionClosed) => assert!(!data.is_empty()),
                other => panic!("stream cut mid-frame gave {other:?}"),
            }
        }
        Err(e) => {
            assert!(
                read.is_err(),
                "decode refused ({e}) what read_message accepted"
            );
            // Every error renders as a sentence.
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Target `message_payload`: the first byte picks a known tag (itself when it is one, else by
/// its index in the tag list), the rest is that message's payload behind a well-formed header.
/// Random bytes rarely make a valid header; this reaches every field decoder at once.
pub fn message_payload(data: &[u8]) {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let t = if tag::ALL.contains(&pick) {
        pick
    } else {
        tag::ALL[usize::from(pick) % tag::ALL.len()]
    };
    let max = frame::max_len(t).expect("known tag") as usize;
    let payload = &payload[..payload.len().min(max - 1)];
    let mut frame = Header::encode(t, payload.len()).to_vec();
    frame.extend_from_slice(payload);
    message(&frame);
    // The payload decoder alone agrees with the framed one.
    let alone = Message::decode_payload(t, payload);
    let framed = Message::decode(&frame).map(|m| m.map(|(m, _)| m));
    match (alone, framed) {
        (Ok(a), Ok(Some(b))) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("decode_payload gave {a:?}, decode gave {b:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Upload chunk lists.

/// Target `chunk_ranges`: the bytes as a `PutReady` payload (id, chunk size, run count, runs),
/// and the runs after the first ten bytes as input to [`ChunkRanges::from_ranges`] and, as
/// chunk indexes, to [`ChunkRanges::from_sorted`].
pub fn chunk_ranges(data: &[u8]) {
    // 1. Through the message decoder.
    let payload = &data[..data.len().min(frame::MAX_CONTROL_LEN as usize - 1)];
    let mut frame = Header::encode(tag::PUT_READY, payload.len()).to_vec();
    frame.extend_from_slice(payload);
    message(&frame);
    if let Ok(Some((Message::PutReady(r), _))) = Message::decode(&frame) {
        assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&r.chunk_size));
        assert_runs_valid(r.have.ranges());
    }

    // 2. The runs straight into the validating constructor.
    let runs: Vec<ChunkRange> = data
        .get(10..)
        .unwrap_or_default()
        .chunks_exact(16)
        .map(|r| ChunkRange {
            first: u64::from_be_bytes(r[..8].try_into().expect("8 bytes")),
            count: u64::from_be_bytes(r[8..].try_into().expect("8 bytes")),
        })
        .collect();
    let valid = runs_valid(&runs);
    let (checked, peak) = peak_during(|| ChunkRanges::from_ranges(runs.clone()));
    assert!(peak <= decode_bound(data.len()));
    match checked {
        Ok(have) => {
            assert!(valid, "from_ranges accepted invalid runs {runs:?}");
            assert_eq!(have.ranges(), &runs[..]);
            check_queries(&have, &runs);
        }
        Err(_) => assert!(!valid, "from_ranges refused valid runs {runs:?}"),
    }

    // 3. The same numbers as chunk indexes, sorted, into the builder a server uses.
    let mut indexes: Vec<u64> = runs.iter().flat_map(|r| [r.first, r.count]).collect();
    indexes.sort_unstable();
    let built = ChunkRanges::from_sorted(indexes.iter().copied());
    assert_runs_valid(built.ranges());
    let mut recorded = 0;
    for i in &indexes {
        if built.contains(*i) {
            recorded += 1;
        }
    }
    assert!(recorded > 0 || indexes.is_empty() || indexes[0] == u64::MAX);
    check_queries(&built, built.ranges());
}

/// Each run non-empty, not overflowing, after the previous one; at most `MAX_HAVE_RANGES`.
fn runs_valid(runs: &[ChunkRange]) -> bool {
    let mut next_free = 0u64;
    for (i, r) in runs.iter().enumerate() {
        let Some(end) = r.first.checked_add(r.count) else {
            return false;
        };
        if r.count == 0 || (i > 0 && r.first < next_free) {
            return false;
        }
        next_free = end;
    }
    runs.len() <= MAX_HAVE_RANGES
}

fn assert_runs_valid(runs: &[ChunkRange]) {
    assert!(runs_valid(runs), "invalid runs {runs:?}");
}

/// `contains`, `held` and `missing` agree with a brute-force reading of `runs`.
fn check_queries(have: &ChunkRanges, runs: &[ChunkRange]) {
    let held = runs
        .iter()
        .try_fold(0u64, |sum, r| sum.checked_add(r.count));
    assert_eq!(Some(have.held()), held);
    let brute = |i: u64| runs.iter().any(|r| r.first <= i && i - r.first < r.count);
    let mut probes = vec![0, 1, u64::MAX];
    for r in runs.iter().take(64) {
        probes.extend([r.first, r.first.wrapping_sub(1), r.first + (r.count - 1)]);
        probes.push(r.first.saturating_add(r.count));
    }
    for p in probes {
        assert_eq!(have.contains(p), brute(p), "contains({p}) in {runs:?}");
    }
    // `missing` against one walk over the (sorted, valid) runs.
    let total = 2048;
    let missing: Vec<u64> = have.missing(total).collect();
    let mut expected = Vec::new();
    let mut k = 0;
    for i in 0..total {
        while k < runs.len() && runs[k].first + runs[k].count <= i {
            k += 1;
        }
        if !(k < runs.len() && runs[k].first <= i) {
            expected.push(i);
        }
    }
    assert_eq!(missing, expected);
}

// ---------------------------------------------------------------------------------------------
// The original (legacy) protocol.

/// Target `legacy_request`: [`legacy::decode_request`], what a server reads first from a
/// client that did not send the native magic.
pub fn legacy_request(data: &[u8]) {
    let (decoded, peak) = peak_during(|| legacy::decode_request(data));
    assert!(peak <= decode_bound(data.len()));
    let declared = data
        .first_chunk::<4>()
        .map(|h| u32::from_be_bytes(*h) as usize);
    match decoded {
        Ok(Some((name, used))) => {
            assert!((1..=MAX_PATH_LEN).contains(&name.len()));
            assert_eq!(used, 4 + name.len());
            assert_eq!(Some(name.len()), declared);
            let mut again = Vec::new();
            legacy::encode_request(&name, &mut again);
            assert_eq!(again, &data[..used]);
            for cut in prefixes(used) {
                assert!(matches!(legacy::decode_request(&data[..cut]), Ok(None)));
            }
        }
        Ok(None) => match declared {
            None => assert!(data.len() < 4),
            Some(len) => {
                assert_eq!(legacy::check_request_len(len as u32).ok(), Some(len));
                assert!(data.len() < 4 + len);
            }
        },
        Err(ProtocolError::InvalidUtf8(_)) => {
            let len = declared.expect("a length was read");
            assert!(std::str::from_utf8(&data[4..4 + len]).is_err());
        }
        Err(_) => {
            let len = declared.expect("a length was read");
            assert!(len == 0 || len > MAX_PATH_LEN);
            assert!(legacy::check_request_len(len as u32).is_err());
        }
    }
}

/// Target `legacy_reply`: [`legacy::decode_status`] and then [`Metadata::decode`], what an
/// original client parses, and `Metadata::decode` on the whole input too.
pub fn legacy_reply(data: &[u8]) {
    match legacy::decode_status(data) {
        Ok(Some((status, n))) => {
            let word = match status {
                Status::Ok => legacy::STATUS_OK,
                Status::Error => legacy::STATUS_ERROR,
            };
            assert_eq!(&data[..n], word);
            if status == Status::Ok {
                metadata(&data[n..]);
            }
        }
        Ok(None) => assert!(
            legacy::STATUS_OK.starts_with(data) || legacy::STATUS_ERROR.starts_with(data),
            "{data:?} cannot become a status"
        ),
        Err(_) => assert!(
            !data.starts_with(legacy::STATUS_OK)
                && !data.starts_with(legacy::STATUS_ERROR)
                && !legacy::STATUS_OK.starts_with(data)
                && !legacy::STATUS_ERROR.starts_with(data)
        ),
    }
    metadata(data);
}

fn metadata(data: &[u8]) {
    let (decoded, peak) = peak_during(|| Metadata::decode(data));
    assert!(peak <= decode_bound(data.len()));
    match decoded {
        Ok(Some((m, used))) => {
            assert_eq!(used, 4 + m.name.len() + 8 + legacy::MD5_HEX_LEN);
            let mut again = Vec::new();
            m.encode(&mut again);
            // Canonical up to the case of the hex digest, which decoding accepts in either case.
            let mut sent = data[..used].to_vec();
            sent[used - legacy::MD5_HEX_LEN..].make_ascii_lowercase();
            assert_eq!(again, sent);
            for cut in prefixes(used) {
                assert!(matches!(Metadata::decode(&data[..cut]), Ok(None)));
            }
        }
        Ok(None) => {
            if let Some(h) = data.first_chunk::<4>() {
                let len = u32::from_be_bytes(*h) as usize;
                assert!(len <= MAX_PATH_LEN && data.len() < 4 + len + 8 + legacy::MD5_HEX_LEN);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every committed corpus file (and every kept crash input) passes its target's checks on a
    /// stable toolchain, without libFuzzer.
    #[test]
    fn committed_inputs_pass_every_check() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for (name, check) in TARGETS {
            for dir in [
                base.join("corpus").join(name),
                base.join("regressions").join(name),
            ] {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries {
                    let path = e.unwrap().path();
                    check(&std::fs::read(&path).unwrap());
                    seen += 1;
                }
            }
        }
        assert!(seen > 0, "no corpus found under {}", base.display());
    }

    #[test]
    fn trickle_hands_out_everything() {
        let data: Vec<u8> = (0..100).collect();
        let mut out = Vec::new();
        Trickle::new(&data).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}
