//! TLS for the server: the certificate chain and private key from PEM files.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, ensure};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the server's certificate and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: std::path::PathBuf,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// Reads `files` into an acceptor for TLS 1.2 and 1.3.
///
/// # Errors
/// When a file cannot be read, holds no certificate or key, or the key does not match.
pub(super) fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "reading the TLS key {}: give --tls-key a PEM file with a PRIVATE KEY block",
            files.key.display()
        )
    })?;
    // The provider is named here rather than installed process-wide, so the server does
    // not depend on which provider another part of the process chose first.
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the TLS key {} does not fit the certificate {}: give the key of the certificate's first entry",
                files.key.display(),
                files.cert.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let what = || {
        format!(
            "reading the TLS certificate {}: give --tls-cert a PEM file with CERTIFICATE blocks",
            path.display()
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(what)?
        .collect::<Result<Vec<_>, _>>()
        .with_context(what)?;
    ensure!(
        !certs.is_empty(),
        "the TLS certificate file {} holds no certificate: give --tls-cert a PEM file with CERTIFICATE blocks",
        path.display()
    );
    Ok(certs)
}
