//! TLS configuration shared by the carrier (client) and the gateway and lab servers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::sync::lock;

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
/// of a self-hosted gateway), offering HTTP/1.1 as WebSocket upgrades need. Reads the platform's
/// roots anew: where several are needed, [`ClientConfigs`] shares them.
pub fn client_config(extra_roots_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, TlsError> {
    ClientConfigs::default().get(extra_roots_pem)
}

/// The client configurations of one engine and its Access client, shared. The platform's roots
/// are read once and one configuration is built per set of extra roots, however many tunnels
/// and Access applications use it: each configuration holds a copy of the ~150 platform
/// anchors, and one per tunnel and two per application made up most of an idle tray's heap.
/// Clones share the cache.
#[derive(Clone, Default)]
pub struct ClientConfigs(Arc<Mutex<SharedConfigs>>);

#[derive(Default)]
struct SharedConfigs {
    /// The platform's roots, read on first use.
    platform: Option<Arc<RootCertStore>>,
    /// By the extra roots' PEM text (`None`: the platform's alone). As many as distinct CAs in
    /// the inventory and settings: a handful.
    built: HashMap<Option<Vec<u8>>, Arc<ClientConfig>>,
}

impl std::fmt::Debug for ClientConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfigs")
            .field("built", &lock(&self.0).built.len())
            .finish()
    }
}

impl ClientConfigs {
    /// The configuration trusting the platform's roots plus `extra_roots_pem`, built on first
    /// use and shared after.
    pub fn get(&self, extra_roots_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, TlsError> {
        let key = extra_roots_pem.map(<[u8]>::to_vec);
        let mut shared = lock(&self.0);
        if let Some(config) = shared.built.get(&key) {
            return Ok(Arc::clone(config));
        }
        let platform = Arc::clone(
            shared
                .platform
                .get_or_insert_with(|| Arc::new(platform_roots())),
        );
        let roots = match extra_roots_pem {
            None => platform,
            Some(pem) => {
                let mut roots = RootCertStore::clone(&platform);
                for cert in certs_from_pem(pem)? {
                    roots.add(cert).map_err(TlsError::BadRoot)?;
                }
                Arc::new(roots)
            }
        };
        let config = Arc::new(new_client_config(roots));
        shared.built.insert(key, Arc::clone(&config));
        Ok(config)
    }
}

/// The platform's trust roots. Roots that fail to parse are skipped, as browsers do; a broken
/// system store must not make a private-CA setup unusable.
fn platform_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

fn new_client_config(roots: Arc<RootCertStore>) -> ClientConfig {
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
    config
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["ca.test".to_string()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn configurations_are_built_once_per_set_of_roots_and_shared() {
        let configs = ClientConfigs::default();
        let (a, b) = (ca_pem(), ca_pem());
        let platform = configs.get(None).unwrap();
        let with_a = configs.get(Some(a.as_bytes())).unwrap();
        assert!(Arc::ptr_eq(&platform, &configs.get(None).unwrap()));
        assert!(Arc::ptr_eq(
            &with_a,
            &configs.clone().get(Some(a.as_bytes())).unwrap()
        ));
        let with_b = configs.get(Some(b.as_bytes())).unwrap();
        assert!(!Arc::ptr_eq(&with_a, &with_b));
        assert!(!Arc::ptr_eq(&with_a, &platform));
        assert_eq!(lock(&configs.0).built.len(), 3);
        // A bad PEM is an error, and nothing is kept for it.
        assert!(matches!(
            configs.get(Some(&b"not a certificate"[..])),
            Err(TlsError::NoCertificate)
        ));
        assert_eq!(lock(&configs.0).built.len(), 3);
    }
}
