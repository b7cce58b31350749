//! Hostile input against a live server: random bytes, truncated frames, declared lengths at and
//! beyond every maximum (up to `u32::MAX`, and `u64::MAX` in fields), unknown message types,
//! messages out of order, the path escape table through `Get`, `Stat`, `List` and the upload
//! requests, frames declared at their maximum and never sent, 500 half-open connections (under
//! and over the connection limit) and a client that stops reading mid-transfer.
//!
//! After every case (`fixture::Target::assert_healthy`): a normal `sfts-client get` still
//! succeeds and is byte-identical, the server's resident memory (`VmRSS`) stays below 200 MiB,
//! every worker thread of a hostile connection has ended, nothing was written inside the root or
//! beside it, and the secret beside the root never appeared in any reply (every reply is checked
//! as it arrives). Every loop is bounded and every wait has a deadline; the server's `--timeout`
//! is 2 s (`fixture::TIMEOUT_SECS`) so that dropping idle and stalled clients takes seconds.
//!
//! The server runs with `--allow-upload` when it has the flag: hostile clients meet the most
//! exposed configuration. The cases that send `List`, `PutBegin`, `PutChunk`, `PutCommit`,
//! `PutAbort` or `Mkdir` check what the server announced: without the capability they only
//! require a refusal (and print a `NOTE:` line); with it, the answers the protocol specifies.
//!
//! `fixture`: the server under attack and the checks after every case; `wire`: hostile
//! connections and decoding what comes back; the cases: `bytes` (random, truncated, impossible
//! lengths, unknown types), `order` (messages out of order, malformed and extreme fields),
//! `paths` (the escape table), `load` (memory, half-open connections, stalled readers).

mod bytes;
mod fixture;
mod load;
mod order;
mod paths;
mod wire;
