//! The Vault source: on-prem clusters described in a KV v2 secrets engine, one secret per
//! cluster, under a configured mount and path prefix (Vault KV standing in for the tags clouds
//! have).
//!
//! The prefix is walked with `LIST` (recursively, bounded in depth and number of secrets) and
//! each secret read with `GET`. A secret's fields, all strings:
//!
//! | field | meaning |
//! |---|---|
//! | `server` | the API server URL (`https://host:port`) — required |
//! | `hostname` | the Access hostname — without it the cluster is "not published through Access" |
//! | `ca` | the API server CA, PEM (optional: system roots) |
//! | `name` | display name (default: the secret's last path segment) |
//! | `environment` | `prod`, `staging`, ... (default `unknown`) |
//! | `origin` | `socks` (default), `tcp` or `bastion` |
//! | `cloud` | `onprem` (default), `aws`, `gcp`, `azure`, `other` |
//! | `region` | free text, e.g. a datacentre |
//!
//! Other fields are ignored. Nothing from Vault becomes a kubeconfig credential: an exec
//! plugin read from shared data would run a command on the user's machine, so the user
//! stanza is left for the user to fill.
//!
//! Address, token and namespace are found as the `vault` CLI finds them: `VAULT_ADDR`,
//! `VAULT_TOKEN` else `~/.vault-token`, `VAULT_NAMESPACE` (the config's `address` and
//! `namespace`, when set, win). The token is never logged or reported.

use std::path::PathBuf;

use serde::Deserialize;

use super::ClusterSource;

use crate::secret::Secret;

/// The source name, also the first part of every cluster id (`vault:<mount>:<path>`).
pub const SOURCE: &str = "vault";

/// The `vault` CLI's address when `VAULT_ADDR` is unset.
pub const DEFAULT_ADDRESS: &str = "https://127.0.0.1:8200";

/// `sources.vault` in the app's config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault's address; when unset, `VAULT_ADDR`, else `https://127.0.0.1:8200`.
    pub address: Option<String>,
    /// Vault Enterprise namespace; when unset, `VAULT_NAMESPACE`, else none.
    pub namespace: Option<String>,
    /// The KV v2 secrets engine's mount path.
    pub mount: String,
    /// The folder under the mount that holds one secret per cluster (walked recursively).
    pub prefix: String,
    /// How many folder levels below the prefix are walked.
    pub max_depth: usize,
    /// At most this many secrets are read; a larger tree is reported as not fully scanned.
    pub max_secrets: usize,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            address: None,
            namespace: None,
            mount: "secret".into(),
            prefix: "k8s-tunnels".into(),
            max_depth: 4,
            max_secrets: 1000,
        }
    }
}

/// What the source reads from the environment, as the `vault` CLI does.
#[derive(Clone, Debug, Default)]
pub struct VaultEnv {
    /// `VAULT_ADDR`.
    pub address: Option<String>,
    /// `VAULT_TOKEN`.
    pub token: Option<Secret>,
    /// `VAULT_NAMESPACE`.
    pub namespace: Option<String>,
    /// The home directory, where `vault login` leaves `.vault-token`.
    pub home: Option<PathBuf>,
}

impl VaultEnv {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            address: var("VAULT_ADDR"),
            token: var("VAULT_TOKEN").map(Secret::new),
            namespace: var("VAULT_NAMESPACE"),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// The source for `config`.
#[cfg(feature = "vault")]
pub fn source_for(config: &VaultConfig) -> Option<Box<dyn ClusterSource>> {
    Some(Box::new(VaultSource::new(config.clone())))
}

/// None: this build has no vault discovery, and reading a configuration that names it already
/// failed ([`crate::config::SourcesConfig::not_built_in`]).
#[cfg(not(feature = "vault"))]
pub fn source_for(_config: &VaultConfig) -> Option<Box<dyn ClusterSource>> {
    None
}

#[cfg(feature = "vault")]
mod source;
#[cfg(feature = "vault")]
pub use source::{VaultError, VaultSource};
