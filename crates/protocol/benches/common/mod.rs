//! What the benches share: deterministic input buffers and one criterion configuration, so
//! every group runs on the same bytes and the whole suite stays within a few minutes on a
//! shared 2-core machine.

use criterion::Criterion;
use std::time::Duration;

/// `len` bytes of a non-repeating-looking pattern. The hashes and copies measured here take the
/// same time whatever the bytes are, so no random generator is needed; the pattern only keeps
/// the buffer from being all zeroes (which the kernel and allocator could treat specially).
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

/// A size as the benchmark ids show it: `4KiB`, `64KiB`, `1MiB`.
pub fn size_label(len: usize) -> String {
    if len >= 1 << 20 && len % (1 << 20) == 0 {
        format!("{}MiB", len >> 20)
    } else if len % 1024 == 0 {
        format!("{}KiB", len >> 10)
    } else {
        format!("{len}B")
    }
}

/// Short warm-up and measurement: enough for stable figures on these µs-to-ms bodies, short
/// enough that `cargo bench -p sfts-protocol` finishes in a few minutes. Command-line flags
/// (`--measurement-time`, `--sample-size`) still override it for a closer look.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
        .configure_from_args()
}
