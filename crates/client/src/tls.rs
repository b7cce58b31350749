//! TLS for native connections (rustls): the client configuration built once from `--tls`,
//! `--ca` and `--insecure`, and [`Stream`], a connection that is plain TCP or TLS over TCP.
//!
//! The server's certificate is checked against `--ca FILE` (PEM) when given, otherwise the
//! platform's trusted roots, and its name against the host the user typed (a name or an IP
//! address). `--insecure` skips the certificate check but still encrypts; it is loud about it.

use crate::error::ClientError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the user asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsChoice {
    /// Speak TLS.
    pub enabled: bool,
    /// Trust the certificates in this PEM file instead of the platform's roots.
    pub ca: Option<PathBuf>,
    /// Do not check the server's certificate.
    pub insecure: bool,
}

/// A ready TLS client configuration.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Builds the configuration, or `None` without `--tls`.
    pub fn from_choice(choice: &TlsChoice) -> Result<Option<Tls>, ClientError> {
        if !choice.enabled {
            return Ok(None);
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Usage(format!("TLS set-up failed: {e}")))?;
        let config = if choice.insecure {
            tracing::warn!(
                "--insecure: the server's certificate is NOT checked; anyone on the path can \
                 impersonate the server and read or change the transfer"
            );
            eprintln!(
                "sfts-client: WARNING: --insecure: the server's certificate is not checked; \
                 the connection is encrypted but the server is not authenticated"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCheck(provider())))
                .with_no_client_auth()
        } else {
            let roots = match &choice.ca {
                Some(file) => roots_from_file(file)?,
                None => platform_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Some(Tls {
            config: Arc::new(config),
        }))
    }

    /// Runs the TLS handshake over `tcp` for `host`. A certificate problem is fatal (retrying
    /// cannot fix it) and says what to do.
    pub fn connect(&self, host: &str, mut tcp: TcpStream) -> Result<Stream, TlsFailure> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            TlsFailure::Fatal(ClientError::Usage(format!(
                "'{host}' is not a valid host name for TLS"
            )))
        })?;
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name).map_err(|e| {
            TlsFailure::Fatal(ClientError::Usage(format!("TLS set-up failed: {e}")))
        })?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                return Err(classify(host, e));
            }
        }
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }
}

/// How a TLS handshake failed.
#[derive(Debug)]
pub enum TlsFailure {
    /// A certificate or protocol problem: retrying cannot help.
    Fatal(ClientError),
    /// The connection broke: worth another attempt.
    Io(io::Error),
}

fn classify(host: &str, e: io::Error) -> TlsFailure {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match tls_error {
        Some(rustls::Error::InvalidCertificate(why))
            if format!("{why:?}").contains("CaUsedAsEndEntity") =>
        {
            TlsFailure::Fatal(ClientError::Tls {
                host: host.to_string(),
                detail: "its certificate is a CA certificate used as the server's own, which \
                         is refused (`openssl req -x509` makes those by default: add \
                         -addext basicConstraints=critical,CA:FALSE, see SECURITY.md)"
                    .into(),
            })
        }
        Some(rustls::Error::InvalidCertificate(why)) => TlsFailure::Fatal(ClientError::Tls {
            host: host.to_string(),
            detail: format!(
                "its certificate is not valid ({why:?}); trust its CA with --ca FILE, or, \
                 knowing the risk, use --insecure"
            ),
        }),
        Some(other) => TlsFailure::Fatal(ClientError::Tls {
            host: host.to_string(),
            detail: format!(
                "{other}; is it an SFTS server with TLS on this port? (without --tls the \
                 client speaks plain TCP)"
            ),
        }),
        None if e.kind() == io::ErrorKind::InvalidData => TlsFailure::Fatal(ClientError::Tls {
            host: host.to_string(),
            detail: format!("{e}; the port does not seem to speak TLS"),
        }),
        None => TlsFailure::Io(e),
    }
}

fn roots_from_file(file: &Path) -> Result<RootCertStore, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ClientError::Usage(format!("cannot read --ca '{}': {e}", file.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Usage(format!(
            "--ca '{}' holds no PEM certificate",
            file.display()
        )));
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| {
            ClientError::Usage(format!(
                "--ca '{}': unusable certificate: {e}",
                file.display()
            ))
        })?;
    }
    Ok(roots)
}

fn platform_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ClientError::Usage(
            "no trusted root certificates found on this system; name the server's CA with \
             --ca FILE"
                .into(),
        ));
    }
    Ok(roots)
}

/// Accepts any certificate (`--insecure`), still checking the handshake signatures so the
/// connection is at least encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A native connection: plain TCP or TLS over TCP.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf),
            Stream::Tls(s) => s.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsChoice {
            enabled: true,
            ca: Some(dir.path().join("none.pem")),
            insecure: false,
        };
        let e = Tls::from_choice(&missing).unwrap_err();
        assert!(e.to_string().contains("cannot read --ca"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Tls::from_choice(&TlsChoice {
            ca: Some(empty),
            ..missing
        })
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        assert!(Tls::from_choice(&TlsChoice::default()).unwrap().is_none());
    }

    #[test]
    fn a_generated_ca_is_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        let tls = Tls::from_choice(&TlsChoice {
            enabled: true,
            ca: Some(pem),
            insecure: false,
        })
        .unwrap();
        assert!(tls.is_some());
    }
}
