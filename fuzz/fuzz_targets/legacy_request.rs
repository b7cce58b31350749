//! The original protocol's request (length-prefixed file name).
//! The checks live in `src/lib.rs` (`sfts_protocol_fuzz::legacy_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfts_protocol_fuzz::legacy_request(data));
