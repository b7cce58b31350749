//! The SFTS server: serves the regular files under one folder to SFTS clients (the native,
//! versioned protocol) and to clients of the original design (the legacy protocol), on the same
//! port, told apart by their first four bytes.
//!
//! One `std::thread` per client (`client-<n>`), a mutex-guarded [`registry`] of active
//! connections, a connection limit with polite "busy" refusals, read/write timeouts, strict
//! [`paths`] confinement under the root, and a shutdown that closes every connection and joins
//! the workers within a couple of seconds.
//!
//! Native clients get ranges of files (resume), `Stat` answers and listings; whole-file digests
//! are computed while the bytes are sent and cached in an SQLite database (`sfts-state`, opened
//! once and shared) beside the transfer history. With `--allow-upload` they also upload files:
//! chunked, each chunk checked on arrival, resumable from the sessions kept in the same
//! database ([`uploads`]), published atomically once the whole file matches its SHA-256.
//!
//! Safe on a hostile network: TLS with rustls ([`tls`]), access tokens with per-prefix read
//! and write permissions ([`auth`]), connection limits in total and per address, a request
//! rate per address ([`limits`]), and an opening deadline, an idle timeout and a minimum
//! transfer rate on every socket ([`link`]); see SECURITY.md. The framing, messages and checksums come from `sfts-protocol`;
//! this crate only adds sockets, threads and files.
//!
//! ```no_run
//! let server = sfts_server::Server::bind(sfts_server::Config::new("./share"))?;
//! println!("listening on {}", server.local_addr());
//! let stop = server.shutdown_handle(); // stop.shutdown() from any thread
//! server.run()?;
//! # Ok::<(), sfts_server::ServerError>(())
//! ```

mod across;
pub mod auth;
mod beneath;
mod chunkset;
pub mod config;
mod connection;
mod digest;
pub mod error;
mod fileid;
mod hash_thread;
mod legacy;
pub mod limits;
pub mod link;
mod listener;
mod listing;
mod look;
mod memo;
mod native;
pub mod paths;
mod periodic;
mod range;
mod refuse;
pub mod registry;
mod store;
mod targets;
pub mod tls;
mod transfer;
mod units;
mod upload;
pub mod uploads;
mod writer;

pub use auth::{add_token, AccessList};
pub use config::{Args, Command, Config, TokenCommand, UploadPolicy};
pub use error::ServerError;
pub use listener::{Server, ShutdownHandle};
pub use registry::ConnectionInfo;
pub use sfts_state::StateDb;
pub use tls::TlsConfig;

#[cfg(test)]
mod testing {
    use std::net::{TcpListener, TcpStream};

    /// A connected pair of loopback sockets: (client, server).
    pub fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (client, server)
    }
}
