//! TLS for native clients (rustls): the server configuration from `--tls-cert` and
//! `--tls-key` (PEM), and [`ServerStream`], a client connection that is plain TCP or TLS.
//!
//! A TLS client is recognised by its first byte: a TLS record of type handshake (0x16). On a
//! port with TLS configured, a native client that starts in plain text gets
//! `Error{TlsRequired}` in plain text and is closed; it is never served unencrypted.

use crate::error::ServerError;
use crate::link::Link;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// First byte of a TLS handshake record.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// A loaded certificate and key.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// Loads the certificate chain and private key (PEM) and checks they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsConfig, ServerError> {
        let bad = |what: &Path, detail: String| ServerError::Tls {
            path: what.to_path_buf(),
            detail,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| bad(cert, format!("cannot read the certificate: {e}")))?;
        if chain.is_empty() {
            return Err(bad(cert, "holds no PEM certificate".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| bad(key, format!("cannot read the private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                bad(
                    key,
                    format!("does not match the certificate or is unusable: {e}"),
                )
            })?;
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration (for the refuser, which drives handshakes itself).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Runs the server side of the handshake over `link` (whose opening deadline bounds it).
    pub fn accept(&self, mut link: Link) -> io::Result<ServerStream> {
        let mut conn = ServerConnection::new(Arc::clone(&self.config))
            .map_err(|e| io::Error::other(e.to_string()))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut link) {
                // Tell the client why (an alert), as far as the socket still takes it.
                let _ = conn.write_tls(&mut link);
                return Err(e);
            }
        }
        Ok(ServerStream::Tls(Box::new(rustls::StreamOwned::new(
            conn, link,
        ))))
    }
}

/// A client connection: plain TCP or TLS, both over a [`Link`].
// The plain variant is the common one and lives as long as its connection: kept inline.
#[allow(clippy::large_enum_variant)]
pub enum ServerStream {
    /// Plain TCP.
    Plain(Link),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<ServerConnection, Link>>),
}

impl ServerStream {
    /// The socket underneath, with its clocks.
    pub fn link(&self) -> &Link {
        match self {
            ServerStream::Plain(l) => l,
            ServerStream::Tls(s) => &s.sock,
        }
    }

    /// The socket underneath, with its clocks.
    pub fn link_mut(&mut self) -> &mut Link {
        match self {
            ServerStream::Plain(l) => l,
            ServerStream::Tls(s) => &mut s.sock,
        }
    }

    /// True for TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Ends the connection after a final reply: TLS says `close_notify`, then the sending side
    /// closes and what the client still sends is drained for a moment (see
    /// [`Link::linger_close`]).
    pub fn linger_close(&mut self) {
        if let ServerStream::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                if s.conn.write_tls(&mut s.sock).is_err() {
                    break;
                }
            }
        }
        self.link_mut().linger_close();
    }
}

impl Read for ServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.read(buf),
            // A client that closes its TCP connection without TLS's `close_notify` ends the
            // session like one that does: frames carry their own lengths, so a cut inside a
            // frame is still noticed.
            ServerStream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.write(buf),
            ServerStream::Tls(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            ServerStream::Plain(s) => s.write_all(buf),
            ServerStream::Tls(s) => s.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ServerStream::Plain(s) => s.flush(),
            ServerStream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn loads_a_matching_pair_and_explains_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated(dir.path());
        TlsConfig::load(&cert, &key).unwrap();
        let e = TlsConfig::load(&dir.path().join("none.pem"), &key).unwrap_err();
        assert!(e.to_string().contains("cannot read the certificate"), "{e}");
        let e = TlsConfig::load(&cert, &cert).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = generated(other.path());
        let e = TlsConfig::load(&cert, &other_key).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }
}
