//! Every message type's payload decoder, behind a well-formed header of a known tag.
//! The checks live in `src/lib.rs` (`sfts_protocol_fuzz::message_payload`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfts_protocol_fuzz::message_payload(data));
