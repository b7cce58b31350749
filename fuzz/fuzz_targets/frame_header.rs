//! The native frame header: length and tag checked against the per-tag maximum.
//! The checks live in `src/lib.rs` (`sfts_protocol_fuzz::frame_header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfts_protocol_fuzz::frame_header(data));
