//! The HTTP client the login uses for one Access application: it reaches the app host (through
//! the cluster's `connect_to`), the auth domain and the transfer service (through the
//! configured `resolve` map), trusts the platform roots plus the configured extra CA and the
//! cluster's edge CA, and never follows redirects by itself (the login reads each hop).

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

use crate::access::settings::AccessSettings;
use crate::inventory::Cluster;

/// Every request of the login is bounded; the transfer long-poll sets its own, longer limit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// The configured CA file could not be read.
    #[error("cannot read the Access CA file {}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The trust roots are unusable.
    #[error("invalid trust roots for Access")]
    Tls(#[source] crate::tls::TlsError),
    /// reqwest refused the configuration.
    #[error("cannot build the Access HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Builds the login's client for `cluster`.
pub fn client_for(
    settings: &AccessSettings,
    cluster: &Cluster,
) -> Result<reqwest::Client, HttpSetupError> {
    let mut pem = Vec::new();
    if let Some(path) = &settings.ca_file {
        pem.extend(
            std::fs::read(path).map_err(|source| HttpSetupError::CaFile {
                path: path.clone(),
                source,
            })?,
        );
        pem.push(b'\n');
    }
    if let Some(edge_ca) = &cluster.access.edge_ca_pem {
        pem.extend_from_slice(edge_ca.as_bytes());
    }
    let tls = crate::tls::client_config((!pem.is_empty()).then_some(pem.as_slice()))
        .map_err(HttpSetupError::Tls)?;
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(crate::tunnel::carrier::USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .no_proxy();
    for (name, addr) in &settings.resolve {
        builder = builder.resolve(name, *addr);
    }
    if let (Some(host), Some(connect_to)) =
        (cluster.access.url.host_str(), &cluster.access.connect_to)
        && let Some(addr) = resolve_connect_to(connect_to)
    {
        builder = builder.resolve(host, addr);
    }
    builder.build().map_err(HttpSetupError::Build)
}

fn resolve_connect_to(connect_to: &str) -> Option<SocketAddr> {
    connect_to
        .parse()
        .ok()
        .or_else(|| connect_to.to_socket_addrs().ok()?.next())
}

/// The `https://` URL of an app host for the cluster's WebSocket URL (`wss://host/path`).
pub fn app_url(cluster: &Cluster) -> url::Url {
    let mut url = cluster.access.url.clone();
    // wss and https share a URL shape; set_scheme refuses only across special/non-special.
    let scheme = if url.scheme() == "ws" {
        "http"
    } else {
        "https"
    };
    let _ = url.set_scheme(scheme);
    url
}

/// The app host of a cluster (lowercase).
pub fn app_host(cluster: &Cluster) -> String {
    cluster
        .access
        .url
        .host_str()
        .unwrap_or(&cluster.access.hostname)
        .to_ascii_lowercase()
}
