//! Micro-benchmarks of the wire codec: how much the protocol crate costs per frame, next to the
//! bytes it moves.
//!
//! * `frame_header`: parsing and building the five header bytes.
//! * `data_frame/{64KiB,1MiB}`: a `Data` frame encoded as a `Message` (copies the payload),
//!   written header-first with `io::write_data` (no copy: the payload goes straight from the
//!   caller's buffer), and decoded from bytes (borrows the payload: no copy).
//! * `read_frames/{64KiB,1MiB}`: 1 MiB (resp. 4 MiB) of `Data` frames read back the way the
//!   peers do: sans-IO `Message::decode` over a slice (the floor), `io::read_message` over a
//!   plain `Read` (the client's path), over a 64 KiB `BufReader` (the server's path), and the
//!   client's `recv` loop (`read_exact` header, then `read_exact` payload).
//! * `copy/64KiB`: a bare 64 KiB `copy_from_slice` with the destination 0, 16 and 64 bytes past
//!   the source modulo 4 KiB. On this AMD EPYC with glibc 2.36 a distance of 1 to ~31 bytes
//!   makes `memcpy` (which uses `rep movsb` at these sizes) tens of times slower, so every
//!   bench above that copies depends on where the allocator put its buffers; this group shows
//!   the size of that effect on its own.
//! * `control`: encode and decode of the other hot messages: `Get`, `FileHeader`, `PutChunk`
//!   (64 KiB and 1 MiB, with the zero-copy `write_put_chunk` beside it) and a full
//!   `ListEntries` frame, plus `ListBatcher` splitting 10,000 entries into frames.
//!
//! Run with `cargo bench -p sfts-protocol --bench codec` (see `benches/README.md`).

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sfts_protocol::frame::{self, Header, HEADER_LEN};
use sfts_protocol::io::{read_message, write_data, write_put_chunk};
use sfts_protocol::{
    checksum, Algorithm, DigestSet, EntryKind, FileHeader, GetRequest, ListBatcher, ListEntry,
    Message, PutChunk,
};
use std::hint::black_box;
use std::io::{self, BufReader, Read};

/// Chunk sizes worth a look: the server's read buffer and the default chunk size.
const DATA_SIZES: [usize; 2] = [64 * 1024, 1024 * 1024];

/// Bytes of `Data` frames in one `read_frames` iteration, per chunk size.
fn stream_len(chunk: usize) -> usize {
    if chunk >= 1 << 20 {
        4 << 20
    } else {
        1 << 20
    }
}

fn frame_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header");
    let head = frame::data_header(64 * 1024);
    g.bench_function("parse", |b| {
        b.iter(|| Header::parse(black_box(&head)).expect("valid header"))
    });
    g.bench_function("encode", |b| {
        b.iter(|| frame::data_header(black_box(64 * 1024)))
    });
    g.finish();
}

fn data_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_frame");
    for len in DATA_SIZES {
        let payload = common::data(len);
        let label = common::size_label(len);
        g.throughput(Throughput::Bytes(len as u64));
        let mut out = Vec::with_capacity(len + HEADER_LEN);
        g.bench_function(format!("encode_message/{label}"), |b| {
            b.iter(|| {
                out.clear();
                Message::Data(black_box(&payload)).encode(&mut out);
                black_box(out.len())
            })
        });
        g.bench_function(format!("write_data_to_sink/{label}"), |b| {
            b.iter(|| write_data(&mut io::sink(), black_box(&payload)).expect("sink"))
        });
        let mut out = Vec::with_capacity(len + HEADER_LEN);
        g.bench_function(format!("write_data_to_vec/{label}"), |b| {
            b.iter(|| {
                out.clear();
                write_data(&mut out, black_box(&payload)).expect("vec");
                black_box(out.len())
            })
        });
        let mut encoded = Vec::new();
        Message::Data(&payload).encode(&mut encoded);
        g.bench_function(format!("decode/{label}"), |b| {
            b.iter(|| {
                let (msg, used) = Message::decode(black_box(&encoded))
                    .expect("valid frame")
                    .expect("whole frame");
                black_box((msg, used))
            })
        });
    }
    g.finish();
}

/// Every frame `r` holds, read with `io::read_message` into the reused `buf`.
fn read_all<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> usize {
    let mut frames = 0;
    while let Some(msg) = read_message(r, buf).expect("valid frame") {
        black_box(&msg);
        frames += 1;
    }
    frames
}

/// The client's `recv` loop (crates/client/src/native.rs), which lives outside this crate:
/// read the header and the payload with `read_exact` into a reused buffer, then decode.
fn recv_loop<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> usize {
    let mut frames = 0;
    loop {
        let mut head = [0u8; HEADER_LEN];
        if r.read_exact(&mut head).is_err() {
            return frames;
        }
        let header = Header::parse(&head).expect("valid header");
        let n = header.payload_len;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        r.read_exact(&mut buf[..n]).expect("whole payload");
        let msg = Message::decode_payload(header.tag, &buf[..n]).expect("valid frame");
        black_box(&msg);
        frames += 1;
    }
}

fn read_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_frames");
    g.sampling_mode(criterion::SamplingMode::Flat);
    for chunk in DATA_SIZES {
        let payload = common::data(chunk);
        let total = stream_len(chunk);
        let mut stream = Vec::with_capacity(total + total / chunk * HEADER_LEN);
        for _ in 0..total / chunk {
            write_data(&mut stream, &payload).expect("vec");
        }
        let label = common::size_label(chunk);
        g.throughput(Throughput::Bytes(total as u64));

        g.bench_function(format!("decode_slice/{label}"), |b| {
            b.iter(|| {
                let mut rest = &stream[..];
                let mut frames = 0;
                while let Some((msg, used)) = Message::decode(rest).expect("valid frame") {
                    black_box(&msg);
                    rest = &rest[used..];
                    frames += 1;
                }
                frames
            })
        });
        let mut buf = Vec::new();
        g.bench_function(format!("read_message/{label}"), |b| {
            b.iter(|| read_all(&mut &stream[..], &mut buf))
        });
        let mut buf = Vec::new();
        g.bench_function(format!("read_message_bufreader64k/{label}"), |b| {
            b.iter(|| {
                read_all(
                    &mut BufReader::with_capacity(64 * 1024, &stream[..]),
                    &mut buf,
                )
            })
        });
        let mut buf = Vec::new();
        g.bench_function(format!("client_recv_loop/{label}"), |b| {
            b.iter(|| recv_loop(&mut &stream[..], &mut buf))
        });
    }
    g.finish();
}

fn copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy");
    let len = 64 * 1024;
    g.throughput(Throughput::Bytes(len as u64));
    let src = common::data(len + 8192);
    let mut dst = vec![0u8; len + 8192];
    // Start the source on a page boundary so `distance` is exactly (dst - src) mod 4096.
    let src_at = (4096 - src.as_ptr() as usize % 4096) % 4096;
    let dst_page = (4096 - dst.as_ptr() as usize % 4096) % 4096;
    for distance in [0, 16, 64] {
        let dst_at = dst_page + distance;
        g.bench_function(format!("64KiB/distance_{distance}"), |b| {
            b.iter(|| {
                dst[dst_at..dst_at + len].copy_from_slice(black_box(&src[src_at..src_at + len]));
                black_box(&dst);
            })
        });
    }
    g.finish();
}

/// A bench that encodes `msg` into a reused buffer and one that decodes the result.
fn encode_decode(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    msg: &Message<'_>,
) {
    let mut out = Vec::new();
    g.bench_function(format!("encode/{name}"), |b| {
        b.iter(|| {
            out.clear();
            black_box(msg).encode(&mut out);
            black_box(out.len())
        })
    });
    let mut encoded = Vec::new();
    msg.encode(&mut encoded);
    g.bench_function(format!("decode/{name}"), |b| {
        b.iter(|| {
            Message::decode(black_box(&encoded))
                .expect("valid frame")
                .expect("whole frame")
        })
    });
}

/// `n` entries shaped like a recursive listing of a source tree.
fn entries(n: usize) -> Vec<ListEntry> {
    (0..n)
        .map(|i| ListEntry {
            name: format!("project/src/module-{:03}/file-{i:06}.rs", i % 100),
            kind: if i % 20 == 0 {
                EntryKind::Directory
            } else {
                EntryKind::File
            },
            size: (i as u64) * 1021,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
        })
        .collect()
}

fn control(c: &mut Criterion) {
    let mut g = c.benchmark_group("control");

    let get = Message::Get(GetRequest::whole(
        "datasets/2026/run-42/measurements.bin",
        1024 * 1024,
        DigestSet::of(&[Algorithm::Sha256]),
    ));
    encode_decode(&mut g, "get_request", &get);

    let header = Message::FileHeader(FileHeader {
        size: 10 << 30,
        offset: 0,
        length: 10 << 30,
        mtime_ns: 1_700_000_000_123_456_789,
        chunk_size: 1024 * 1024,
    });
    encode_decode(&mut g, "file_header", &header);

    let list = entries(10_000);
    let mut batcher = ListBatcher::new();
    let first_frame = list
        .iter()
        .cloned()
        .find_map(|e| batcher.push(e))
        .expect("10,000 entries fill more than one frame");
    let Message::ListEntries { entries: batch } = &first_frame else {
        unreachable!("ListBatcher yields ListEntries")
    };
    g.throughput(Throughput::Elements(batch.len() as u64));
    encode_decode(
        &mut g,
        &format!("list_entries_{}", batch.len()),
        &first_frame,
    );
    g.throughput(Throughput::Elements(list.len() as u64));
    g.bench_function("list_batcher/10000", |b| {
        b.iter_batched(
            || list.clone(),
            |list| {
                let mut batcher = ListBatcher::new();
                let mut frames = 0;
                for e in list {
                    frames += usize::from(batcher.push(e).is_some());
                }
                frames + usize::from(batcher.finish().is_some())
            },
            BatchSize::LargeInput,
        )
    });

    for len in DATA_SIZES {
        let data = common::data(len);
        let label = common::size_label(len);
        let chunk = PutChunk {
            id: 7,
            index: 3,
            digest: checksum::sha256(&data),
            data: &data,
        };
        g.throughput(Throughput::Bytes(len as u64));
        encode_decode(
            &mut g,
            &format!("put_chunk/{label}"),
            &Message::PutChunk(chunk.clone()),
        );
        g.bench_function(format!("write_put_chunk_to_sink/{label}"), |b| {
            b.iter(|| {
                write_put_chunk(&mut io::sink(), 7, 3, &chunk.digest, black_box(&data))
                    .expect("sink")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = codec;
    config = common::config();
    targets = frame_header, data_frame, read_frames, copy, control
}
criterion_main!(codec);
