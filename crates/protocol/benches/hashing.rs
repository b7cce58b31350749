//! Micro-benchmarks of the checksum code: what our wrappers cost next to the raw `md-5`,
//! `sha2` and `blake3` crates hashing the same buffers.
//!
//! * `md5`, `sha256`, `blake3` (4 KiB, 64 KiB, 1 MiB): the raw crate's one-shot digest beside
//!   a `MultiHasher` holding that one algorithm (new, update, finish); for MD5 also the
//!   `fast-md5` crate's one-shot digest and a `MultiHasher::resumable` (`md-5`); for SHA-256
//!   also the `checksum::sha256` helper the upload path uses per chunk, and for BLAKE3 also
//!   the raw crate's incremental `Hasher` (new, update, finish), which is what `MultiHasher`
//!   wraps.
//! * `combined` (same sizes): one `MultiHasher` computing several digests in one pass
//!   (SHA-256 + BLAKE3 as the server caches them, and all three) beside the raw crates run one
//!   after the other over the buffer.
//! * `per_chunk` (1 MiB in 4 KiB / 64 KiB / 1 MiB chunks): a fresh SHA-256 per chunk, as the
//!   client's journal and the upload path do, against one hasher over the whole megabyte.
//! * `adapters` (1 MiB): `digest_reader` over a `Read` with a 64 KiB buffer and
//!   `HashingWriter` fed 64 KiB writes, into `io::sink()` and into a `Vec` (the copy the
//!   writer makes), beside a bare `MultiHasher` over the same bytes.
//!
//! Every group reports throughput, so criterion prints GiB/s next to the time.
//! Run with `cargo bench -p sfts-protocol --bench hashing` (see `benches/README.md`).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use criterion::{measurement::WallTime, SamplingMode};
use md5::{Digest as _, Md5};
use sfts_protocol::checksum::{self, digest_reader, HashingWriter};
use sfts_protocol::{Algorithm, DigestSet, MultiHasher};
use sha2::Sha256;
use std::hint::black_box;
use std::io::{self, Write};

/// Buffer sizes: a small read, the server's read buffer, the default chunk.
const SIZES: [usize; 3] = [4 * 1024, 64 * 1024, 1024 * 1024];

/// The chunk the adapters move data in, like the server's and client's buffers.
const IO_CHUNK: usize = 64 * 1024;

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    // Bodies of up to a few ms: flat sampling keeps the iteration count, and so the time, sane.
    g.sampling_mode(SamplingMode::Flat);
    g
}

/// One `MultiHasher` over `data`, start to finish.
fn multi(set: DigestSet, data: &[u8]) -> Vec<sfts_protocol::Digest> {
    let mut h = MultiHasher::new(set);
    h.update(data);
    h.finish()
}

fn single_algorithms(c: &mut Criterion) {
    for alg in Algorithm::ALL {
        let mut g = group(c, alg.name());
        let set = DigestSet::of(&[alg]);
        for len in SIZES {
            let data = common::data(len);
            let label = common::size_label(len);
            g.throughput(Throughput::Bytes(len as u64));
            match alg {
                Algorithm::Md5 => {
                    g.bench_function(format!("raw/{label}"), |b| {
                        b.iter(|| Md5::digest(black_box(&data)))
                    });
                    // The assembly MD5 `MultiHasher::new` uses; `md-5` (above) is the one
                    // `MultiHasher::resumable` uses, whose state a journal can keep.
                    g.bench_function(format!("raw_fast_md5/{label}"), |b| {
                        b.iter(|| fast_md5::digest(black_box(&data)))
                    });
                    g.bench_function(format!("multi_resumable/{label}"), |b| {
                        b.iter(|| {
                            let mut h = MultiHasher::resumable(set);
                            h.update(black_box(&data));
                            h.finish()
                        })
                    });
                }
                Algorithm::Sha256 => {
                    g.bench_function(format!("raw/{label}"), |b| {
                        b.iter(|| Sha256::digest(black_box(&data)))
                    });
                    g.bench_function(format!("checksum_sha256/{label}"), |b| {
                        b.iter(|| checksum::sha256(black_box(&data)))
                    });
                }
                Algorithm::Blake3 => {
                    g.bench_function(format!("raw/{label}"), |b| {
                        b.iter(|| blake3::hash(black_box(&data)))
                    });
                    // What any streaming use (and so MultiHasher) must call instead of `hash`.
                    g.bench_function(format!("raw_incremental/{label}"), |b| {
                        b.iter(|| {
                            let mut h = blake3::Hasher::new();
                            h.update(black_box(&data));
                            h.finalize()
                        })
                    });
                }
                Algorithm::Xxh128 => {
                    g.bench_function(format!("raw/{label}"), |b| {
                        b.iter(|| twox_hash::XxHash3_128::oneshot(black_box(&data)))
                    });
                }
            }
            g.bench_function(format!("multi_hasher/{label}"), |b| {
                b.iter(|| multi(set, black_box(&data)))
            });
        }
        g.finish();
    }
}

fn combined(c: &mut Criterion) {
    let mut g = group(c, "combined");
    let pair = DigestSet::of(&[Algorithm::Sha256, Algorithm::Blake3]);
    // The three of the first releases (the measured tables name them `all3`).
    let all = DigestSet::of(&[Algorithm::Md5, Algorithm::Sha256, Algorithm::Blake3]);
    for len in SIZES {
        let data = common::data(len);
        let label = common::size_label(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("raw_sha256+blake3/{label}"), |b| {
            b.iter(|| {
                let d = black_box(&data);
                (Sha256::digest(d), blake3::hash(d))
            })
        });
        g.bench_function(format!("multi_sha256+blake3/{label}"), |b| {
            b.iter(|| multi(pair, black_box(&data)))
        });
        g.bench_function(format!("raw_all3/{label}"), |b| {
            b.iter(|| {
                let d = black_box(&data);
                (Md5::digest(d), Sha256::digest(d), blake3::hash(d))
            })
        });
        g.bench_function(format!("multi_all3/{label}"), |b| {
            b.iter(|| multi(all, black_box(&data)))
        });
    }
    g.finish();
}

fn per_chunk(c: &mut Criterion) {
    let mut g = group(c, "per_chunk");
    let total = 1024 * 1024;
    let data = common::data(total);
    let sha = DigestSet::of(&[Algorithm::Sha256]);
    g.throughput(Throughput::Bytes(total as u64));
    for chunk in SIZES {
        let label = common::size_label(chunk);
        g.bench_function(format!("raw_sha256/{label}"), |b| {
            b.iter(|| {
                for part in black_box(&data).chunks(chunk) {
                    black_box(Sha256::digest(part));
                }
            })
        });
        g.bench_function(format!("checksum_sha256/{label}"), |b| {
            b.iter(|| {
                for part in black_box(&data).chunks(chunk) {
                    black_box(checksum::sha256(part));
                }
            })
        });
        g.bench_function(format!("multi_hasher_sha256/{label}"), |b| {
            b.iter(|| {
                for part in black_box(&data).chunks(chunk) {
                    black_box(multi(sha, part));
                }
            })
        });
    }
    g.finish();
}

fn adapters(c: &mut Criterion) {
    let mut g = group(c, "adapters");
    let total = 1024 * 1024;
    let data = common::data(total);
    g.throughput(Throughput::Bytes(total as u64));
    for alg in [Algorithm::Sha256, Algorithm::Blake3] {
        let set = DigestSet::of(&[alg]);
        let name = alg.name();
        g.bench_function(format!("multi_hasher_64k_updates/{name}"), |b| {
            b.iter(|| {
                let mut h = MultiHasher::new(set);
                for part in black_box(&data).chunks(IO_CHUNK) {
                    h.update(part);
                }
                h.finish()
            })
        });
        let mut buf = vec![0u8; IO_CHUNK];
        g.bench_function(format!("digest_reader/{name}"), |b| {
            b.iter(|| digest_reader(black_box(&data[..]), set, &mut buf).expect("slice"))
        });
        g.bench_function(format!("hashing_writer_sink/{name}"), |b| {
            b.iter(|| {
                let mut w = HashingWriter::new(io::sink(), set);
                for part in black_box(&data).chunks(IO_CHUNK) {
                    w.write_all(part).expect("sink");
                }
                w.finish()
            })
        });
        let mut out = Vec::with_capacity(total);
        g.bench_function(format!("hashing_writer_vec/{name}"), |b| {
            b.iter(|| {
                out.clear();
                let mut w = HashingWriter::new(&mut out, set);
                for part in black_box(&data).chunks(IO_CHUNK) {
                    w.write_all(part).expect("vec");
                }
                w.finish().1
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = hashing;
    config = common::config();
    targets = single_algorithms, combined, per_chunk, adapters
}
criterion_main!(hashing);
