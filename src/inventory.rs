//! The cluster model every part of the app shares, and the order of its environments.
//!
//! A [`Cluster`] is produced by a discovery source (the inventory file, EKS, GKE, Vault) after
//! validation: every field here has been checked, so the engine and the kubeconfig writer can
//! trust it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::secret::Secret;

/// A stable cluster identifier, e.g. `file:prod-eu` or `eks:<account>:<region>:<name>`.
/// It keys persisted state (ports, favourites), so it must not change across runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ClusterId(pub String);

// By hand: ts-rs's derive does not read `#[serde(transparent)]`. On the wire an id is its string.
#[cfg(feature = "ts")]
impl ts_rs::TS for ClusterId {
    type WithoutGenerics = Self;
    type OptionInnerType = Self;

    fn name(config: &ts_rs::Config) -> String {
        <String as ts_rs::TS>::name(config)
    }

    fn inline(config: &ts_rs::Config) -> String {
        <String as ts_rs::TS>::inline(config)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a cluster runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Amazon Web Services (EKS).
    Aws,
    /// Google Cloud (GKE).
    Gcp,
    /// Azure (AKS).
    Azure,
    /// On-premises clusters.
    Onprem,
    /// Anything else.
    Other,
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
            Cloud::Onprem => "onprem",
            Cloud::Other => "other",
        })
    }
}

/// How the far side of the Access application reaches the API server.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OriginMode {
    /// cloudflared `proxyType: socks`: a SOCKS5 server (NoAuth) runs inside each stream; the
    /// carrier performs a SOCKS5 client handshake over the WebSocket, then pipes bytes.
    Socks,
    /// A fixed TCP origin: bytes are piped as they are.
    Tcp,
    /// The edge connects to the destination named in `Cf-Access-Jump-Destination`.
    Bastion,
}

impl fmt::Display for OriginMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OriginMode::Socks => "socks",
            OriginMode::Tcp => "tcp",
            OriginMode::Bastion => "bastion",
        })
    }
}

/// Where a secret value is read from when it is needed. The value itself is never stored in
/// the inventory or the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable holding the value.
    Env(String),
    /// A file holding the value (surrounding whitespace is trimmed).
    File(PathBuf),
}

/// How the tunnel authenticates to the Access application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AccessAuth {
    /// No credential configured for this cluster: use the environment's service token
    /// (`TUNNEL_SERVICE_TOKEN_ID` / `TUNNEL_SERVICE_TOKEN_SECRET`, as cloudflared does) or a
    /// user token (`K8S_TUNNELS_ACCESS_TOKEN`), else the connection needs a login.
    Default,
    /// An Access application token (a JWT), sent as `Cf-Access-Token`.
    Token(SecretRef),
    /// A service token, sent as `Cf-Access-Client-Id` / `Cf-Access-Client-Secret`.
    ServiceToken {
        /// The client id (not secret).
        client_id: String,
        /// Where the client secret is read from.
        client_secret: SecretRef,
    },
}

/// The Access application in front of a cluster's API server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AccessApp {
    /// The application's hostname as configured (what `cloudflared access tcp --hostname` takes).
    pub hostname: String,
    /// The WebSocket URL the carrier dials: `wss://<hostname><path>` (or `ws://` for a
    /// loopback gateway without TLS, for benchmarks and tests).
    pub url: url::Url,
    /// Dial this `host:port` instead of resolving the hostname (TLS and `Host` still use the
    /// hostname), for a self-hosted gateway whose DNS is not in place.
    pub connect_to: Option<String>,
    /// Extra CA (PEM) trusted for the edge, for a self-hosted gateway with a private CA.
    pub edge_ca_pem: Option<String>,
    /// How the edge reaches the API server.
    pub origin: OriginMode,
    /// The credential the tunnel presents.
    pub auth: AccessAuth,
}

/// A cluster's API server as clients address it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ApiServer {
    /// The URL written to kubeconfig, e.g. `https://prod-eu.k8s.internal:6443`.
    pub url: url::Url,
    /// The host clients send in their SOCKS CONNECT (from the URL).
    pub host: String,
    /// The port clients send in their SOCKS CONNECT (from the URL, default 443).
    pub port: u16,
    /// The API server's CA bundle (PEM); `None` means the system roots.
    pub ca_pem: Option<String>,
    /// Overrides the TLS server name clients check, when the certificate does not name the host.
    pub tls_server_name: Option<String>,
}

impl ApiServer {
    /// `host:port` as it appears in `Cf-Access-Jump-Destination` (IPv6 in brackets).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One Kubernetes cluster the user may reach. It serializes whole (the discovery cache stores
/// it); the inventory file's own clusters are never cached, so a static token a user put in a
/// `user` stanza there does not reach the cache.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Cluster {
    /// Stable identifier.
    pub id: ClusterId,
    /// Display name, unique in the inventory and safe as a kubeconfig key and in file names.
    pub name: String,
    /// Where it runs.
    pub cloud: Cloud,
    /// Environment (e.g. `prod`, `staging`, `dev`).
    pub environment: String,
    /// Region, zone or project, when known.
    pub region: Option<String>,
    /// The API server.
    pub api: ApiServer,
    /// The Access application in front of it.
    pub access: AccessApp,
    /// The kubeconfig `user` stanza (e.g. an `exec` plugin or a `tokenFile`), kept as given.
    pub user: serde_norway::Mapping,
    /// Who described the cluster, which decides what it may be sent.
    #[serde(default)]
    pub provenance: Provenance,
}

/// Where a cluster's description came from. Discovered data (EKS tags, GKE labels, Vault) is
/// untrusted: its Access hostname could point anywhere, so credentials the user gave for
/// "every cluster" (the environment's service token or app token) are not sent there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// The user's own inventory file.
    Inventory,
    /// A discovery source (also what a cache entry without the field counts as).
    #[default]
    Discovered,
}

/// Where an environment goes in every list of the app (CLI, tray, window): production first,
/// then the usual stages; any other name after them.
pub fn environment_rank(environment: &str) -> u8 {
    match environment.to_ascii_lowercase().as_str() {
        "prod" | "production" | "prd" => 0,
        "staging" | "stage" | "stg" | "preprod" | "pre-prod" => 1,
        "test" | "qa" | "uat" => 2,
        "dev" | "development" => 3,
        _ => 4,
    }
}

/// Orders environment names the way every list of the app does: by [`environment_rank`], then
/// by name without regard to case, then exactly (so that the order is total).
pub fn compare_environments(a: &str, b: &str) -> std::cmp::Ordering {
    environment_rank(a)
        .cmp(&environment_rank(b))
        .then_with(|| a.to_lowercase().cmp(&b.to_lowercase()))
        .then_with(|| a.cmp(b))
}

/// An environment name as a map key, ordered by [`compare_environments`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnvironmentKey<'a>(pub &'a str);

impl Ord for EnvironmentKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        compare_environments(self.0, other.0)
    }
}

impl PartialOrd for EnvironmentKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for EnvironmentKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Reads a [`SecretRef`]. Errors name the variable or file, never the value.
pub fn resolve_secret(reference: &SecretRef) -> Result<Secret, SecretRefError> {
    let value = match reference {
        SecretRef::Env(var) => {
            std::env::var(var).map_err(|_| SecretRefError::EnvMissing(var.clone()))?
        }
        SecretRef::File(path) => {
            std::fs::read_to_string(path).map_err(|source| SecretRefError::File {
                path: path.clone(),
                source,
            })?
        }
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretRefError::Empty(match reference {
            SecretRef::Env(var) => format!("environment variable {var}"),
            SecretRef::File(path) => format!("file {}", path.display()),
        }));
    }
    Ok(Secret::new(value))
}

/// A [`SecretRef`] that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretRefError {
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The value is empty.
    #[error("{0} is empty")]
    Empty(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_go_production_first_then_the_stages_then_the_rest_by_name() {
        let mut names = vec![
            "dev",
            "sandbox",
            "Staging",
            "prod",
            "qa",
            "Analytics",
            "production",
            "stage",
        ];
        names.sort_by(|a, b| compare_environments(a, b));
        assert_eq!(
            names,
            [
                "prod",
                "production",
                "stage",
                "Staging",
                "qa",
                "dev",
                "Analytics",
                "sandbox"
            ]
        );
        // Total: names equal but for case keep one fixed order.
        assert_eq!(
            compare_environments("Prod", "prod"),
            std::cmp::Ordering::Less
        );
        assert_eq!(
            compare_environments("prod", "prod"),
            std::cmp::Ordering::Equal
        );
    }
}
