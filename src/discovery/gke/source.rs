//! The GKE source itself: the Kubernetes Engine API client and what it finds (built with the `gke` feature).
use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use google_cloud_container_v1::client::ClusterManager;
use google_cloud_container_v1::model::{Cluster as GkeCluster, ListClustersResponse};
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt as _};
use serde_norway::{Mapping, Value};

use super::{GkeConfig, SOURCE};
use crate::discovery::metadata::{self, Discovered, MetadataKeys};
use crate::discovery::validate::shown;
use crate::discovery::{
    ClusterSource, Found, Progress, ProgressSink, Rejected, ScopeError, SourceReport,
};
use crate::inventory::Cloud;

/// Projects asked at the same time.
const CONCURRENCY: usize = 8;

/// Longest service message kept in a scope error: enough to name the permission or project.
const MAX_MESSAGE: usize = 300;

/// Errors setting up the GKE source (per project, so that one project never fails the rest).
#[derive(Debug, thiserror::Error)]
pub enum GkeError {
    /// A configured project id is not one GCP allows.
    #[error(
        "project id {0} is not valid (expected lowercase letters, digits, '-', and optionally a 'domain:' prefix)"
    )]
    InvalidProject(String),
    /// The API client could not be created (usually: no Application Default Credentials).
    #[error(
        "cannot create the GKE API client (are Application Default Credentials set up? `gcloud auth application-default login`)"
    )]
    Client(#[source] google_cloud_gax::client_builder::Error),
}

/// Discovers GKE clusters.
pub struct GkeSource {
    config: GkeConfig,
    credentials: Option<google_cloud_auth::credentials::Credentials>,
}

impl GkeSource {
    /// A source using Application Default Credentials.
    pub fn new(config: GkeConfig) -> Self {
        Self {
            config,
            credentials: None,
        }
    }

    /// A source using the given credentials (e.g. anonymous ones against a test server).
    pub fn with_credentials(
        config: GkeConfig,
        credentials: google_cloud_auth::credentials::Credentials,
    ) -> Self {
        Self {
            config,
            credentials: Some(credentials),
        }
    }

    async fn client(&self) -> Result<ClusterManager, GkeError> {
        let mut builder = ClusterManager::builder()
            // The standard policy: retry only what AIP-194 calls transient (UNAVAILABLE), a few times.
            .with_retry_policy(Aip194Strict.with_attempt_limit(3));
        if let Some(endpoint) = &self.config.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if let Some(credentials) = &self.credentials {
            builder = builder.with_credentials(credentials.clone());
        }
        builder.build().await.map_err(GkeError::Client)
    }

    async fn scan_all(&self, progress: ProgressSink) -> SourceReport {
        let mut report = SourceReport {
            source: SOURCE.into(),
            ..SourceReport::default()
        };
        let projects = &self.config.projects;
        let total = projects.len();
        let tell = |done: usize| {
            progress(Progress {
                source: SOURCE.into(),
                done,
                total,
            })
        };
        tell(0);
        if projects.is_empty() {
            return report;
        }
        let client = match self.client().await {
            Ok(client) => Arc::new(client),
            Err(e) => {
                let message = crate::error_chain(&e);
                report.failed = projects
                    .iter()
                    .map(|p| ScopeError {
                        scope: scope(p),
                        message: message.clone(),
                    })
                    .collect();
                tell(total);
                return report;
            }
        };
        let mut scans = futures_util::stream::iter(projects.iter().cloned())
            .map(|project| {
                let client = Arc::clone(&client);
                async move {
                    let answer = list_project(&client, &project).await;
                    (project, answer)
                }
            })
            .buffer_unordered(CONCURRENCY);
        let mut done = 0;
        while let Some((project, answer)) = scans.next().await {
            match answer {
                Ok(response) => project_report(&project, response, &self.config.keys, &mut report),
                Err(message) => report.failed.push(ScopeError {
                    scope: scope(&project),
                    message,
                }),
            }
            done += 1;
            tell(done);
        }
        report
    }
}

impl ClusterSource for GkeSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn discover(&self, progress: ProgressSink) -> BoxFuture<'_, SourceReport> {
        Box::pin(self.scan_all(progress))
    }
}

/// The scope of one project.
fn scope(project: &str) -> String {
    format!("{SOURCE}:{project}")
}

/// GCP project ids: `[a-z][a-z0-9-]{4,28}[a-z0-9]`, or legacy `domain.com:project`. Checked
/// because the id goes into the request path.
fn check_project(project: &str) -> Result<(), GkeError> {
    let (domain, id) = project.rsplit_once(':').unwrap_or(("", project));
    let id_ok = id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let domain_ok = domain
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !domain.contains("..");
    if id_ok && domain_ok {
        Ok(())
    } else {
        Err(GkeError::InvalidProject(shown(project)))
    }
}

/// One `clusters.list` call. The error is a message fit for users: the service's status and
/// message, never a raw body.
async fn list_project(
    client: &ClusterManager,
    project: &str,
) -> Result<ListClustersResponse, String> {
    check_project(project).map_err(|e| e.to_string())?;
    client
        .list_clusters()
        .set_parent(format!("projects/{project}/locations/-"))
        .send()
        .await
        .map_err(|e| describe(&e))
}

fn describe(error: &google_cloud_gax::error::Error) -> String {
    let http = error
        .http_status_code()
        .map(|c| format!("HTTP {c} "))
        .unwrap_or_default();
    if let Some(status) = error.status() {
        let message: String = status.message.chars().take(MAX_MESSAGE).collect();
        return format!("{http}{}: {message}", status.code);
    }
    if let Some(code) = error.http_status_code() {
        // An answer without a Google error body (a proxy, a load balancer): its body is not
        // shown, it may be anything.
        return format!("the GKE API answered HTTP {code}");
    }
    let text: String = crate::error_chain(error)
        .chars()
        .take(MAX_MESSAGE)
        .collect();
    text
}

/// Folds one project's answer into the report.
fn project_report(
    project: &str,
    response: ListClustersResponse,
    keys: &MetadataKeys,
    report: &mut SourceReport,
) {
    let scope = scope(project);
    for cluster in response.clusters {
        let shown_name = shown(&cluster.name);
        match discovered(project, cluster, keys) {
            Ok(found) => match metadata::build(found, keys) {
                Ok(cluster) => report.found.push(Found {
                    cluster,
                    scope: scope.clone(),
                }),
                Err(reason) => report.rejected.push(Rejected {
                    scope: scope.clone(),
                    name: shown_name,
                    reason,
                }),
            },
            Err(reason) => report.rejected.push(Rejected {
                scope: scope.clone(),
                name: shown_name,
                reason,
            }),
        }
    }
    if response.missing_zones.is_empty() {
        report.scanned.push(scope);
    } else {
        // Not scanned completely: the clusters that came back are kept (found above), and the
        // ones cached from the missing zones are kept too, marked stale.
        let zones: Vec<String> = response.missing_zones.iter().map(|z| shown(z)).collect();
        report.failed.push(ScopeError {
            scope,
            message: format!(
                "zones that could not be reached (their clusters may be missing): {}",
                zones.join(", ")
            ),
        });
    }
}

/// What the API says about one cluster, as [`Discovered`].
fn discovered(
    project: &str,
    cluster: GkeCluster,
    keys: &MetadataKeys,
) -> Result<Discovered, crate::discovery::Rejection> {
    let location = cluster.location.clone();
    if location.trim().is_empty() {
        return Err(crate::discovery::Rejection::Invalid(
            "has no location".into(),
        ));
    }
    if cluster.endpoint.trim().is_empty() {
        let status = cluster.status.name().unwrap_or("unknown").to_string();
        return Err(crate::discovery::Rejection::Invalid(format!(
            "has no API endpoint yet (status {status})"
        )));
    }
    // GKE gives an IP address (or a DNS name); anything else, e.g. `user:pw@host` or a path,
    // is refused here without echoing it, since it may hold a credential.
    if !cluster
        .endpoint
        .trim()
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']'))
    {
        return Err(crate::discovery::Rejection::Invalid(
            "endpoint is not an IP address or host name".into(),
        ));
    }
    let ca_pem = match cluster
        .master_auth
        .as_ref()
        .map(|m| m.cluster_ca_certificate.trim())
    {
        None | Some("") => None,
        Some(b64) => Some(decode_ca(b64)?),
    };
    let labels = access_labels(&cluster.resource_labels, &cluster.description, keys);
    Ok(Discovered {
        id: format!("{SOURCE}:{project}:{location}:{}", cluster.name),
        name: cluster.name,
        cloud: Some(Cloud::Gcp),
        region: Some(location),
        endpoint: cluster.endpoint,
        ca_pem,
        labels,
        user: auth_plugin_user(),
    })
}

/// `masterAuth.clusterCaCertificate` is base64 of the PEM.
fn decode_ca(b64: &str) -> Result<String, crate::discovery::Rejection> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| {
            crate::discovery::Rejection::Invalid(format!("API server CA: not base64: {e}"))
        })?;
    String::from_utf8(bytes)
        .map_err(|_| crate::discovery::Rejection::Invalid("API server CA: not PEM text".into()))
}

/// The labels [`metadata::build`] reads: resource labels (a hostname label's `_` decoded to
/// `.`), and `key=value` / `key: value` lines of the description for keys no label sets.
fn access_labels(
    resource_labels: &std::collections::HashMap<String, String>,
    description: &str,
    keys: &MetadataKeys,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = resource_labels
        .iter()
        .map(|(k, v)| {
            let v = if keys.hostname.contains(k) {
                v.replace('_', ".")
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let wanted = keys
        .hostname
        .iter()
        .chain(&keys.environment)
        .chain(&keys.origin);
    let described: BTreeMap<&str, &str> = description
        .lines()
        .filter_map(|line| line.split_once('=').or_else(|| line.split_once(':')))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    for key in wanted {
        if !labels.contains_key(key)
            && let Some(value) = described.get(key.as_str())
        {
            labels.insert(key.clone(), (*value).to_string());
        }
    }
    labels
}

/// The user stanza `gcloud container clusters get-credentials` writes.
pub fn auth_plugin_user() -> Mapping {
    let mut exec = Mapping::new();
    exec.insert(
        "apiVersion".into(),
        "client.authentication.k8s.io/v1beta1".into(),
    );
    exec.insert("command".into(), "gke-gcloud-auth-plugin".into());
    exec.insert(
        "installHint".into(),
        "Install gke-gcloud-auth-plugin for use with kubectl by following \
         https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin"
            .into(),
    );
    exec.insert("provideClusterInfo".into(), Value::Bool(true));
    let mut user = Mapping::new();
    user.insert("exec".into(), Value::Mapping(exec));
    user
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn project_ids_are_checked_before_they_reach_a_path() {
        for ok in ["my-project-123", "example.com:my-project"] {
            assert!(check_project(ok).is_ok(), "{ok}");
        }
        for bad in ["../x", "p/locations", "My-Project", "", "p?x=1", "a..b:p"] {
            assert!(check_project(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostname_label_decodes_underscores_and_description_fills_gaps() {
        let keys = MetadataKeys::default();
        let labels: std::collections::HashMap<String, String> = [
            (
                "k8s-tunnels-hostname".to_string(),
                "prod_k8s_example_com".to_string(),
            ),
            ("env".to_string(), "prod".to_string()),
        ]
        .into();
        let got = access_labels(&labels, "k8s-tunnels-origin: tcp\nenv=ignored", &keys);
        assert_eq!(got["k8s-tunnels-hostname"], "prod.k8s.example.com");
        assert_eq!(got["env"], "prod", "labels win over the description");
        assert_eq!(got["k8s-tunnels-origin"], "tcp");
    }
}
