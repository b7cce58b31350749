//! Message::decode on arbitrary bytes, against read_message over the same bytes.
//! The checks live in `src/lib.rs` (`sfts_protocol_fuzz::message`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfts_protocol_fuzz::message(data));
