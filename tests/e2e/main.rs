//! End-to-end tests: the real `sfts-server` and `sfts-client` binaries on loopback, with
//! temporary directories, and minimal peers of the original protocol written in the test
//! straight from `docs/PROTOCOL.md`.
//!
//! Run with `cargo test --workspace` (which also builds the `sfts-server` binary these tests
//! start; the client binary comes from this package).

mod support;

mod fakes;
mod get;
mod hostile;
mod inspect;
mod legacy;
mod paths;
mod proxy;
mod resume;
mod robustness;
mod security;
mod trees;
mod upload;
