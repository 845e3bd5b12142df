//! The GKE source: every cluster in the configured Google Cloud projects, found with one
//! `projects.locations.clusters.list` call per project (`projects/<p>/locations/-`, every
//! zone and region at once), projects asked in parallel.
//!
//! Resource labels carry the Access settings. GCP label keys allow only `[a-z0-9_-]`, so the
//! default keys are `k8s-tunnels-hostname`, `env` / `environment` and `k8s-tunnels-origin`.
//! GCP label *values* cannot hold dots either, so a hostname label writes each `.` as `_`
//! (`k8s.example.com` → `k8s_example_com`; `_` never appears in a hostname, so this decodes
//! unambiguously). A hostname that does not fit a label value (longer than 63 characters) can
//! instead sit in the cluster's description on a line of its own, `k8s-tunnels-hostname=<host>`
//! (or `key: value`); labels win over the description.
//!
//! The kubeconfig user is the `gke-gcloud-auth-plugin` exec plugin, as
//! `gcloud container clusters get-credentials` writes it. Credentials for the API are
//! Application Default Credentials.

use serde::Deserialize;

use super::ClusterSource;

use super::metadata::MetadataKeys;

/// The source name, also the first part of every cluster id (`gke:<project>:<location>:<name>`).
pub const SOURCE: &str = "gke";

/// `sources.gke` in the app's config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GkeConfig {
    /// Google Cloud project ids to scan (each is one scope, `gke:<project>`).
    pub projects: Vec<String>,
    /// The Kubernetes Engine API endpoint; `https://container.googleapis.com` when unset.
    /// For a private or regional endpoint, or a test server.
    pub endpoint: Option<String>,
    /// Which resource labels carry the Access hostname, environment and origin mode. Label
    /// keys allow only `[a-z0-9_-]`; a hostname label value spells `.` as `_`.
    pub keys: MetadataKeys,
}

/// The source for `config`.
#[cfg(feature = "gke")]
pub fn source_for(config: &GkeConfig) -> Option<Box<dyn ClusterSource>> {
    Some(Box::new(GkeSource::new(config.clone())))
}

/// None: this build has no gke discovery, and reading a configuration that names it already
/// failed ([`crate::config::SourcesConfig::not_built_in`]).
#[cfg(not(feature = "gke"))]
pub fn source_for(_config: &GkeConfig) -> Option<Box<dyn ClusterSource>> {
    None
}

#[cfg(feature = "gke")]
mod source;
#[cfg(feature = "gke")]
pub use source::{GkeError, GkeSource, auth_plugin_user};
