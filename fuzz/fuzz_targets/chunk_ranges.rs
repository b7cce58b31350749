//! PutReady's chunk runs: the message decoder and the ChunkRanges constructors.
//! The checks live in `src/lib.rs` (`sfts_protocol_fuzz::chunk_ranges`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfts_protocol_fuzz::chunk_ranges(data));
