//! The EKS source itself: the AWS SDK calls and what they find (built with the `eks` feature).
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_runtime::env_config::file::{
    EnvConfigFileKind as ProfileFileKind, EnvConfigFiles as ProfileFiles,
};
use aws_sdk_eks::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use base64::Engine as _;
use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::{self, StreamExt};
use serde_norway::{Mapping, Value};
use tokio::sync::Semaphore;

use super::{DEFAULT_CHAIN, EksConfig, SOURCE};
use crate::discovery::metadata::{self, Discovered};
use crate::discovery::validate::shown;
use crate::discovery::{
    ClusterSource, Found, Progress, ProgressSink, Rejected, Rejection, ScopeError, SourceReport,
};
use crate::inventory::Cloud;

/// The region STS and the Account API are asked in when no region is configured.
const HOME_REGION: &str = "us-east-1";

/// Discovers EKS clusters.
#[derive(Clone, Debug)]
pub struct EksSource {
    config: EksConfig,
}

impl EksSource {
    /// A source scanning what `config` names. Zero concurrency settings count as 1.
    pub fn new(config: EksConfig) -> Self {
        Self { config }
    }

    fn profile_files(&self) -> ProfileFiles {
        let mut files = ProfileFiles::builder();
        files = match &self.config.config_file {
            Some(path) => files.with_file(ProfileFileKind::Config, path),
            None => files.include_default_config_file(true),
        };
        files = match &self.config.credentials_file {
            Some(path) => files.with_file(ProfileFileKind::Credentials, path),
            None => files.include_default_credentials_file(true),
        };
        files.build()
    }

    /// The profiles to scan: configured, else all in the files; `None` is the default chain.
    async fn profiles(&self) -> Result<Vec<Option<String>>, String> {
        if !self.config.profiles.is_empty() {
            return Ok(self.config.profiles.iter().cloned().map(Some).collect());
        }
        let set = aws_config::profile::load(
            &aws_types::os_shim_internal::Fs::real(),
            &aws_types::os_shim_internal::Env::real(),
            &self.profile_files(),
            None,
        )
        .await
        .map_err(|e| {
            format!(
                "cannot read the AWS config files: {}",
                DisplayErrorContext(e)
            )
        })?;
        let mut names: Vec<String> = set.profiles().map(str::to_string).collect();
        names.sort();
        if names.is_empty() {
            return Ok(vec![None]);
        }
        Ok(names.into_iter().map(Some).collect())
    }

    async fn sdk_config(&self, profile: Option<&str>, region: &str) -> SdkConfig {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(self.config.timeout_secs.max(1)))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(
                RetryConfig::standard().with_max_attempts(self.config.max_attempts.max(1)),
            )
            .timeout_config(timeouts)
            .profile_files(self.profile_files());
        if let Some(profile) = profile {
            // The profile's own credentials, as `aws --profile` uses them: credentials in the
            // environment must not silently replace the profile the user asked for.
            let credentials = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_files(self.profile_files())
                .profile_name(profile)
                .build();
            loader = loader
                .profile_name(profile)
                .credentials_provider(credentials);
        }
        if let Some(url) = &self.config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        loader.load().await
    }

    async fn run(&self, progress: ProgressSink) -> SourceReport {
        let tracker = Tracker::new(progress);
        let mut report = SourceReport {
            source: SOURCE.into(),
            ..SourceReport::default()
        };
        let profiles = match self.profiles().await {
            Ok(p) => p,
            Err(message) => {
                tracker.add(1);
                tracker.finish();
                report.failed.push(ScopeError {
                    scope: SOURCE.into(),
                    message,
                });
                return report;
            }
        };
        let limits = Limits {
            requests: Arc::new(Semaphore::new(self.config.max_concurrency.max(1))),
            scopes: Arc::new(Semaphore::new(self.config.scope_concurrency.max(1))),
        };
        let results = join_all(
            profiles
                .iter()
                .map(|p| self.scan_profile(p.as_deref(), &limits, &tracker)),
        )
        .await;
        // Two profiles may reach the same account: a cluster is reported once.
        let mut seen = std::collections::BTreeSet::new();
        for result in results {
            for scope in result {
                match scope.outcome {
                    Err(message) => report.failed.push(ScopeError {
                        scope: scope.scope,
                        message,
                    }),
                    Ok(clusters) => {
                        for (name, built) in clusters {
                            match built {
                                Ok(cluster) => {
                                    if seen.insert(cluster.id.clone()) {
                                        report.found.push(Found {
                                            cluster,
                                            scope: scope.scope.clone(),
                                        });
                                    }
                                }
                                Err(reason) => report.rejected.push(Rejected {
                                    scope: scope.scope.clone(),
                                    name: shown(&name),
                                    reason,
                                }),
                            }
                        }
                        report.scanned.push(scope.scope);
                    }
                }
            }
        }
        report
    }

    async fn scan_profile(
        &self,
        profile: Option<&str>,
        limits: &Limits,
        tracker: &Tracker,
    ) -> Vec<ScopeResult> {
        let label = profile.unwrap_or(DEFAULT_CHAIN);
        let profile_scope = format!("{SOURCE}:{label}");
        let home = self
            .config
            .regions
            .first()
            .map_or(HOME_REGION, String::as_str);
        let base = self.sdk_config(profile, home).await;
        let account = {
            let _permit = limits.request().await;
            aws_sdk_sts::Client::new(&base)
                .get_caller_identity()
                .send()
                .await
        };
        let account = match account {
            Ok(out) => match out.account {
                Some(a) => a,
                None => {
                    return vec![tracker.profile_failed(
                        profile_scope,
                        "STS GetCallerIdentity returned no account".into(),
                    )];
                }
            },
            Err(e) => {
                return vec![
                    tracker.profile_failed(profile_scope, sdk_error("STS GetCallerIdentity", &e)),
                ];
            }
        };
        let regions = if self.config.regions.is_empty() {
            match self.enabled_regions(&base, limits).await {
                Ok(r) => r,
                Err(message) => return vec![tracker.profile_failed(profile_scope, message)],
            }
        } else {
            self.config.regions.clone()
        };
        tracker.add(regions.len());
        let (base, account) = (&base, account.as_str());
        let scans = regions.iter().map(|region| async move {
            let _scope_permit = limits.scope().await;
            let scope = format!("{SOURCE}:{label}:{region}");
            let config = base
                .to_builder()
                .region(Region::new(region.clone()))
                .build();
            let outcome = self
                .scan_region(&config, profile, account, region, limits)
                .await;
            tracker.done();
            ScopeResult { scope, outcome }
        });
        join_all(scans).await
    }

    async fn enabled_regions(
        &self,
        base: &SdkConfig,
        limits: &Limits,
    ) -> Result<Vec<String>, String> {
        use aws_sdk_account::types::RegionOptStatus;
        let client = aws_sdk_account::Client::new(base);
        let mut pages = client
            .list_regions()
            .region_opt_status_contains(RegionOptStatus::Enabled)
            .region_opt_status_contains(RegionOptStatus::EnabledByDefault)
            .into_paginator()
            .send();
        let mut regions = Vec::new();
        loop {
            let page = {
                let _permit = limits.request().await;
                pages.next().await
            };
            let Some(page) = page else { break };
            let page = page.map_err(|e| {
                format!(
                    "{} (list the regions to scan in sources.eks.regions to skip this step)",
                    sdk_error("Account ListRegions", &e)
                )
            })?;
            for r in page.regions() {
                // The filter is asked of the server; checked again so a region the account
                // has not enabled is never scanned (its requests would only fail).
                let enabled = matches!(
                    r.region_opt_status(),
                    Some(RegionOptStatus::Enabled | RegionOptStatus::EnabledByDefault)
                );
                if let (true, Some(name)) = (enabled, r.region_name()) {
                    regions.push(name.to_string());
                }
            }
        }
        regions.sort();
        regions.dedup();
        Ok(regions)
    }

    async fn scan_region(
        &self,
        config: &SdkConfig,
        profile: Option<&str>,
        account: &str,
        region: &str,
        limits: &Limits,
    ) -> Result<Vec<Built>, String> {
        let client = aws_sdk_eks::Client::new(config);
        let mut pages = client
            .list_clusters()
            .max_results(100)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        loop {
            let page = {
                let _permit = limits.request().await;
                pages.next().await
            };
            let Some(page) = page else { break };
            let page = page.map_err(|e| sdk_error("EKS ListClusters", &e))?;
            names.extend(page.clusters().iter().cloned());
        }
        let described: Vec<Result<Option<aws_sdk_eks::types::Cluster>, String>> =
            stream::iter(names)
                .map(|name| {
                    let client = client.clone();
                    async move {
                        let _permit = limits.request().await;
                        match client.describe_cluster().name(&name).send().await {
                            Ok(out) => Ok(out.cluster),
                            // Deleted between the list and now: it is gone, not an error.
                            Err(SdkError::ServiceError(e))
                                if e.err().is_resource_not_found_exception() =>
                            {
                                Ok(None)
                            }
                            Err(e) => Err(sdk_error(
                                &format!("EKS DescribeCluster {}", shown(&name)),
                                &e,
                            )),
                        }
                    }
                })
                .buffer_unordered(self.config.describe_concurrency.max(1))
                .collect()
                .await;
        let mut clusters = Vec::new();
        for d in described {
            if let Some(cluster) = d? {
                let name = cluster.name().unwrap_or_default().to_string();
                let built = discovered(&cluster, profile, account, region)
                    .and_then(|d| metadata::build(d, &self.config.tags));
                clusters.push((name, built));
            }
        }
        clusters.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(clusters)
    }
}

impl ClusterSource for EksSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn discover(&self, progress: ProgressSink) -> BoxFuture<'_, SourceReport> {
        Box::pin(self.run(progress))
    }
}

/// What `DescribeCluster` said, as [`Discovered`]: the CA decoded from base64, the tags as
/// labels, the `aws eks get-token` exec plugin as the user.
fn discovered(
    cluster: &aws_sdk_eks::types::Cluster,
    profile: Option<&str>,
    account: &str,
    region: &str,
) -> Result<Discovered, Rejection> {
    let name = cluster.name().unwrap_or_default();
    let Some(endpoint) = cluster.endpoint().filter(|e| !e.trim().is_empty()) else {
        let status = cluster
            .status()
            .map_or_else(|| "unknown".to_string(), |s| s.as_str().to_string());
        return Err(Rejection::Invalid(format!(
            "no API server endpoint yet (status {})",
            shown(&status)
        )));
    };
    let ca_pem = match cluster.certificate_authority().and_then(|c| c.data()) {
        None => None,
        Some(data) => Some(decode_ca(data)?),
    };
    let labels: BTreeMap<String, String> = cluster
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Discovered {
        id: format!("{SOURCE}:{account}:{region}:{name}"),
        name: name.to_string(),
        cloud: Some(Cloud::Aws),
        region: Some(region.to_string()),
        endpoint: endpoint.to_string(),
        ca_pem,
        labels,
        user: exec_user(name, region, profile),
    })
}

/// `certificateAuthority.data` is base64 of a PEM bundle.
fn decode_ca(data: &str) -> Result<String, Rejection> {
    let invalid = |what: &str| Rejection::Invalid(format!("API server CA: {what}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| invalid("certificateAuthority.data is not base64"))?;
    let pem = String::from_utf8(bytes).map_err(|_| invalid("not a PEM certificate"))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid("not a PEM certificate"));
    }
    Ok(pem)
}

/// The kubeconfig user: `aws eks get-token --cluster-name <name> --region <region>
/// [--profile <profile>]` as a client-go exec plugin. The profile goes in `--profile` rather
/// than an `AWS_PROFILE` env entry: the AWS CLI lets a command-line profile win over
/// credentials in the environment, so kubectl gets a token for the same identity discovery
/// used, whatever the user's shell exports. Each value is its own argument (no shell).
pub fn exec_user(cluster: &str, region: &str, profile: Option<&str>) -> Mapping {
    let mut args: Vec<Value> = [
        "eks",
        "get-token",
        "--cluster-name",
        cluster,
        "--region",
        region,
    ]
    .into_iter()
    .map(|s| Value::String(s.to_string()))
    .collect();
    if let Some(profile) = profile {
        args.push(Value::String("--profile".into()));
        args.push(Value::String(profile.into()));
    }
    let mut exec = Mapping::new();
    exec.insert(
        "apiVersion".into(),
        "client.authentication.k8s.io/v1beta1".into(),
    );
    exec.insert("command".into(), "aws".into());
    exec.insert("args".into(), Value::Sequence(args));
    let mut user = Mapping::new();
    user.insert("exec".into(), Value::Mapping(exec));
    user
}

/// An SDK error as a message for users: the operation, the AWS error code and message, or
/// what kept the request from being answered. Never the request, its headers or a raw body.
fn sdk_error<E, R>(operation: &str, error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match error {
        SdkError::ServiceError(e) => {
            let e = e.err();
            match (e.code(), e.message()) {
                (Some(code), Some(msg)) => format!("{code}: {}", clip(msg)),
                (Some(code), None) => code.to_string(),
                _ => "the service returned an error without a code".into(),
            }
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(e) => {
            if e.is_timeout() {
                "timed out".into()
            } else {
                format!(
                    "cannot reach AWS: {}",
                    clip(&DisplayErrorContext(error).to_string())
                )
            }
        }
        SdkError::ResponseError(_) => "unreadable response".into(),
        _ => clip(&DisplayErrorContext(error).to_string()),
    };
    format!("{operation}: {detail}")
}

/// Keeps a service-provided message printable and short.
fn clip(message: &str) -> String {
    const MAX: usize = 300;
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if message.chars().count() > MAX {
        format!("{clean}…")
    } else {
        clean
    }
}

/// A described cluster's name (as EKS has it) and what validation made of it.
type Built = (String, Result<crate::inventory::Cluster, Rejection>);

struct ScopeResult {
    scope: String,
    outcome: Result<Vec<Built>, String>,
}

struct Limits {
    requests: Arc<Semaphore>,
    scopes: Arc<Semaphore>,
}

impl Limits {
    async fn request(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphores are never closed; `None` would only mean "no limit".
        self.requests.clone().acquire_owned().await.ok()
    }

    async fn scope(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.scopes.clone().acquire_owned().await.ok()
    }
}

/// Counts scopes for progress events; the total grows as profiles learn their regions.
struct Tracker {
    sink: ProgressSink,
    counts: Mutex<(usize, usize)>,
}

impl Tracker {
    fn new(sink: ProgressSink) -> Self {
        Self {
            sink,
            counts: Mutex::new((0, 0)),
        }
    }

    fn update(&self, f: impl FnOnce(&mut (usize, usize))) {
        let (done, total) = {
            let mut counts = crate::sync::lock(&self.counts);
            f(&mut counts);
            *counts
        };
        (self.sink)(Progress {
            source: SOURCE.into(),
            done,
            total,
        });
    }

    fn add(&self, scopes: usize) {
        self.update(|c| c.1 += scopes);
    }

    fn done(&self) {
        self.update(|c| c.0 += 1);
    }

    fn finish(&self) {
        self.update(|c| c.0 = c.1);
    }

    fn profile_failed(&self, scope: String, message: String) -> ScopeResult {
        self.update(|c| {
            c.0 += 1;
            c.1 += 1;
        });
        ScopeResult {
            scope,
            outcome: Err(message),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exec_user_is_the_aws_cli_plugin() {
        let user = exec_user("prod", "eu-west-1", Some("team a"));
        let yaml = serde_norway::to_string(&user).unwrap();
        let back: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back["exec"]["command"], "aws");
        assert_eq!(
            back["exec"]["apiVersion"],
            "client.authentication.k8s.io/v1beta1"
        );
        let args: Vec<&str> = back["exec"]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "eks",
                "get-token",
                "--cluster-name",
                "prod",
                "--region",
                "eu-west-1",
                "--profile",
                "team a"
            ]
        );
        let no_profile = exec_user("prod", "eu-west-1", None);
        assert_eq!(no_profile["exec"]["args"].as_sequence().unwrap().len(), 6);
    }

    #[test]
    fn ca_must_be_base64_pem() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let data = base64::engine::general_purpose::STANDARD.encode(pem);
        assert_eq!(decode_ca(&data).unwrap(), pem);
        for bad in ["not base64!!", "aGVsbG8=", "//79/A=="] {
            assert!(
                matches!(decode_ca(bad), Err(Rejection::Invalid(m)) if m.contains("CA")),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let c: EksConfig = serde_norway::from_str("regions: [eu-west-1]").unwrap();
        assert_eq!(c.regions, ["eu-west-1"]);
        assert_eq!(c.describe_concurrency, 8);
        assert_eq!(c.tags, crate::discovery::metadata::MetadataKeys::default());
        let err = serde_norway::from_str::<EksConfig>("region: eu-west-1").unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn service_messages_are_clipped_and_printable() {
        let long = format!("a\u{1b}[31m{}", "x".repeat(1000));
        let c = clip(&long);
        assert!(!c.contains('\u{1b}'));
        assert!(c.chars().count() <= 301);
    }
}
