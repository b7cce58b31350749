//! The original protocol's reply: status, then metadata.
//! The checks live in `src/lib.rs` (`sfts_protocol_fuzz::legacy_reply`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfts_protocol_fuzz::legacy_reply(data));
