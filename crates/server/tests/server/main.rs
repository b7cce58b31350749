//! The server's integration tests, in one test binary (one link instead of one per file):
//! the binary's command line, start-up errors and restarts ([`cli`]), the library server's
//! sessions ([`service`]), ranges, digests and `Stat` ([`ranges`]), the digest cache and the
//! transfer history ([`cache`]), uploads ([`uploads`]) and streamed uploads ([`streaming`]), listings and `Mkdir` ([`listing`]),
//! TLS, tokens, permissions and the limits ([`security`]).

mod cache;
mod cli;
mod listing;
mod ranges;
mod security;
mod service;
mod streaming;
mod support;
mod uploads;
