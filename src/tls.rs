//! TLS configuration shared by the carrier (client) and the gateway and lab servers.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block could not be read.
    #[error("invalid PEM: {0}")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// The PEM text held no certificate.
    #[error("no certificate found in PEM data")]
    NoCertificate,
    /// A certificate was rejected as a trust anchor.
    #[error("certificate is not a usable trust anchor")]
    BadRoot(#[source] rustls::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected")]
    Config(#[source] rustls::Error),
}

/// Parses every certificate in a PEM text; fails when there is none.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// A client configuration trusting the platform's roots plus `extra_roots_pem` (a private CA
/// of a self-hosted gateway), offering HTTP/1.1 as WebSocket upgrades need.
pub fn client_config(extra_roots_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Platform roots that fail to parse are skipped, as browsers do; a broken system store
    // must not make a private-CA setup unusable.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_roots_pem {
        for cert in certs_from_pem(pem)? {
            roots.add(cert).map_err(TlsError::BadRoot)?;
        }
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption. TLS 1.3 resumes in one round trip as a full handshake does (and
    // warm connections hide it), while the tickets a burst of connections leaves in the cache
    // pin the burst's heap pages for good: after three bursts of 1000 the client kept +24 % of
    // its idle memory with them, +8 % without (BENCHMARKS.md, "Scale"); new-connection p50
    // unchanged.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs_from_pem(chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::Pem)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Nor on the gateway: its session cache is churned the same way by every handshake.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}
