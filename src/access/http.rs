//! The HTTP clients the login uses for one Access application: one for the app host (through
//! the cluster's `connect_to`, trusting the cluster's edge CA too), one for the auth domain and
//! the transfer service (through the configured `resolve` map, trusting the platform roots and
//! `access.ca_file` only). Neither follows redirects by itself (the login reads each hop).

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

use crate::access::settings::AccessSettings;
use crate::inventory::Cluster;
use crate::tls::ClientConfigs;

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
        /// What the operating system answered.
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

/// The login's HTTP clients for one Access application. A cluster's own edge CA
/// (`access.ca_file` in the inventory) is trusted for its edge host only: the auth domain
/// receives the team's org cookie, and the key set and the transfer service decide which
/// tokens the client accepts, so a CA that one (possibly discovered) cluster brings must not
/// vouch for them.
#[derive(Clone, Debug)]
pub struct Clients {
    /// For the application host: the platform roots, `access.ca_file` and the cluster's edge
    /// CA; reaches the host through the cluster's `connect_to`.
    pub app: reqwest::Client,
    /// For the auth domain, its key set and the transfer service: the platform roots and
    /// `access.ca_file` only.
    pub auth: reqwest::Client,
    /// The edge host [`Clients::app`] is for (lowercase).
    edge_host: String,
}

impl Clients {
    /// The client for a request to `host`: the app client for the cluster's edge host, the
    /// auth client for any other.
    pub fn for_host(&self, host: &str) -> &reqwest::Client {
        if host.eq_ignore_ascii_case(&self.edge_host) {
            &self.app
        } else {
            &self.auth
        }
    }
}

/// The client for the auth domain, its key set and the transfer service: the platform roots
/// and `access.ca_file` only. It does not depend on the cluster, so one serves every
/// application (its connection pool and TLS configuration with it).
pub fn auth_client(
    settings: &AccessSettings,
    tls: &ClientConfigs,
) -> Result<reqwest::Client, HttpSetupError> {
    build(settings, tls, &ca_file_pem(settings)?, None)
}

/// Builds the login's clients for `cluster`, sharing `auth` (see [`auth_client`]).
pub fn clients_for(
    settings: &AccessSettings,
    cluster: &Cluster,
    tls: &ClientConfigs,
    auth: &reqwest::Client,
) -> Result<Clients, HttpSetupError> {
    let connect_to = match (cluster.access.url.host_str(), &cluster.access.connect_to) {
        (Some(host), Some(connect_to)) => resolve_connect_to(connect_to).map(|addr| (host, addr)),
        _ => None,
    };
    let app = match (&cluster.access.edge_ca_pem, connect_to) {
        // Nothing of the cluster's own: the app host is reached as the auth domain is.
        (None, None) => auth.clone(),
        (edge_ca, connect_to) => {
            let mut pem = ca_file_pem(settings)?;
            if let Some(edge_ca) = edge_ca {
                pem.extend_from_slice(edge_ca.as_bytes());
            }
            build(settings, tls, &pem, connect_to)?
        }
    };
    Ok(Clients {
        app,
        auth: auth.clone(),
        edge_host: app_host(cluster),
    })
}

/// `access.ca_file`'s PEM text (empty without one), ending in a line break.
fn ca_file_pem(settings: &AccessSettings) -> Result<Vec<u8>, HttpSetupError> {
    let Some(path) = &settings.ca_file else {
        return Ok(Vec::new());
    };
    let mut pem = std::fs::read(path).map_err(|source| HttpSetupError::CaFile {
        path: path.clone(),
        source,
    })?;
    pem.push(b'\n');
    Ok(pem)
}

fn build(
    settings: &AccessSettings,
    tls: &ClientConfigs,
    pem: &[u8],
    connect_to: Option<(&str, SocketAddr)>,
) -> Result<reqwest::Client, HttpSetupError> {
    let tls = tls
        .get((!pem.is_empty()).then_some(pem))
        .map_err(HttpSetupError::Tls)?;
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(crate::wire::USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .no_proxy();
    for (name, addr) in &settings.resolve {
        builder = builder.resolve(name, *addr);
    }
    if let Some((host, addr)) = connect_to {
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
