//! EKS: clusters from every configured AWS profile × region.
//!
//! Per profile: STS `GetCallerIdentity` gives the account (for stable ids
//! `eks:<account>:<region>:<name>`), the Account API's `ListRegions` the regions the account has
//! enabled (unless regions are configured), then per region `ListClusters` (paginated, 100 a
//! page) and `DescribeCluster` with bounded concurrency. All scopes run in parallel, with a
//! global cap on requests in flight; throttling is retried by the SDK's standard retry with a
//! bounded number of attempts. The cluster's tags carry the Access settings ([`MetadataKeys`]).
//!
//! A scope is `eks:<profile>:<region>`. A step that fails for a whole profile (its credentials,
//! its account id, its region list) is reported as the scope `eks:<profile>`.

use std::path::PathBuf;

use serde::Deserialize;

use super::ClusterSource;

use super::metadata::MetadataKeys;

/// The source's name, and the prefix of its ids and scopes.
pub const SOURCE: &str = "eks";

/// The scope label used when no profile exists in the AWS config files: the SDK's default
/// credential chain (environment variables, web identity, instance role, ...) is used instead.
pub const DEFAULT_CHAIN: &str = "default-chain";

/// The `sources.eks` section of the app's config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EksConfig {
    /// AWS profiles to scan. Empty: every profile in the AWS config and credentials files (and,
    /// if there is none, the SDK's default credential chain).
    pub profiles: Vec<String>,
    /// Regions to scan in every profile. Empty: every region the account has enabled (Account
    /// API `ListRegions`, which needs `account:ListRegions`).
    pub regions: Vec<String>,
    /// The AWS config file. Default: `AWS_CONFIG_FILE`, else `~/.aws/config`.
    pub config_file: Option<PathBuf>,
    /// The AWS credentials file. Default: `AWS_SHARED_CREDENTIALS_FILE`, else
    /// `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// Send every AWS request to this endpoint (e.g. a test server). Default: the
    /// `AWS_ENDPOINT_URL*` variables and `endpoint_url` profile settings the SDK honours, else
    /// the AWS endpoints.
    pub endpoint_url: Option<String>,
    /// Which tags carry the Access hostname, environment and origin mode.
    pub tags: MetadataKeys,
    /// `DescribeCluster` calls in flight per region.
    pub describe_concurrency: usize,
    /// Profile × region scopes scanned at once.
    pub scope_concurrency: usize,
    /// AWS requests in flight at once, across all profiles and regions.
    pub max_concurrency: usize,
    /// Attempts per request (the first one included) before a throttled or failing call gives
    /// up; the SDK's standard retry with exponential backoff and jitter.
    pub max_attempts: u32,
    /// Time limit for one request, retries included, in seconds.
    pub timeout_secs: u64,
}

impl Default for EksConfig {
    fn default() -> Self {
        Self {
            profiles: Vec::new(),
            regions: Vec::new(),
            config_file: None,
            credentials_file: None,
            endpoint_url: None,
            tags: MetadataKeys::default(),
            describe_concurrency: 8,
            scope_concurrency: 32,
            max_concurrency: 32,
            max_attempts: 3,
            timeout_secs: 30,
        }
    }
}

/// The source for `config`.
#[cfg(feature = "eks")]
pub fn source_for(config: &EksConfig) -> Option<Box<dyn ClusterSource>> {
    Some(Box::new(EksSource::new(config.clone())))
}

/// None: this build has no eks discovery, and reading a configuration that names it already
/// failed ([`crate::config::SourcesConfig::not_built_in`]).
#[cfg(not(feature = "eks"))]
pub fn source_for(_config: &EksConfig) -> Option<Box<dyn ClusterSource>> {
    None
}

#[cfg(feature = "eks")]
mod source;
#[cfg(feature = "eks")]
pub use source::{EksSource, exec_user};
