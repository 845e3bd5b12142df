//! EKS discovery against a real AWS API peer: moto server, reached with the real SDK through a
//! small proxy that injects per-region faults (see `moto_support`). The AWS config and
//! credentials files are written per test and passed explicitly, so the developer's own AWS
//! setup plays no part.
#![allow(clippy::unwrap_used)]

#[path = "support/listed.rs"]
mod listed;
mod moto_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_eks::config::Credentials;
use futures_util::StreamExt as _;
use k8s_tunnels::discovery::eks::{EksConfig, EksSource};
use k8s_tunnels::discovery::{ClusterSource, Progress, ProgressSink, Rejection, SourceReport};
use k8s_tunnels::inventory::{Cloud, Cluster, OriginMode};
use k8s_tunnels::kubeconfig::{ClusterEntry, Kubeconfig};
use listed::{groups, listed};
use moto_support::{
    DEFAULT_ACCOUNT, FaultProxy, Faults, MotoServer, create_cluster, creds_in_account, eks_client,
    static_creds, test_ca_pem,
};

const ACCOUNT_B: &str = "222233334444";
const REGIONS: [&str; 3] = ["ap-southeast-2", "eu-west-1", "us-east-1"];

/// Writes `config` and `credentials` files with profiles `alpha` (account A) and `beta`
/// (account B, temporary credentials of an assumed role).
fn write_aws_files(dir: &Path, beta: &Credentials) -> (std::path::PathBuf, std::path::PathBuf) {
    let config = dir.join("config");
    let credentials = dir.join("credentials");
    std::fs::write(
        &config,
        "[profile alpha]\nregion = eu-west-1\n\n[profile beta]\nregion = eu-west-1\n",
    )
    .unwrap();
    std::fs::write(
        &credentials,
        format!(
            "[alpha]\naws_access_key_id = AKIAALPHATESTING\naws_secret_access_key = testing-secret\n\n\
             [beta]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
            beta.access_key_id(),
            beta.secret_access_key(),
            beta.session_token().unwrap_or_default()
        ),
    )
    .unwrap();
    (config, credentials)
}

struct World {
    moto: MotoServer,
    dir: tempfile::TempDir,
    beta: Credentials,
    ca: String,
}

impl World {
    async fn new() -> Self {
        let moto = MotoServer::start();
        let beta = creds_in_account(&moto.url(), ACCOUNT_B).await;
        Self {
            moto,
            dir: tempfile::tempdir().unwrap(),
            beta,
            ca: test_ca_pem(),
        }
    }

    fn alpha(&self, region: &str) -> aws_sdk_eks::Client {
        eks_client(&self.moto.url(), region, static_creds("AKIAALPHATESTING"))
    }

    fn beta(&self, region: &str) -> aws_sdk_eks::Client {
        eks_client(&self.moto.url(), region, self.beta.clone())
    }

    async fn proxy(&self, faults: Faults) -> FaultProxy {
        FaultProxy::start(
            self.moto.port,
            Faults {
                ca_pem: Some(self.ca.clone()),
                ..faults
            },
        )
        .await
    }

    fn config(&self, proxy: &FaultProxy) -> EksConfig {
        let (config_file, credentials_file) = write_aws_files(self.dir.path(), &self.beta);
        EksConfig {
            config_file: Some(config_file),
            credentials_file: Some(credentials_file),
            endpoint_url: Some(proxy.url()),
            ..EksConfig::default()
        }
    }
}

/// Runs discovery, collecting progress events.
async fn discover(config: EksConfig) -> (SourceReport, Vec<Progress>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink: ProgressSink = {
        let events = events.clone();
        Arc::new(move |p| k8s_tunnels::sync::lock(&events).push(p))
    };
    let report = EksSource::new(config).discover(sink).await;
    let events = k8s_tunnels::sync::lock(&events).clone();
    (report, events)
}

fn exec_args(cluster: &Cluster) -> Vec<String> {
    let exec = cluster.user["exec"].as_mapping().expect("an exec user");
    assert_eq!(exec["command"].as_str(), Some("aws"));
    assert_eq!(
        exec["apiVersion"].as_str(),
        Some("client.authentication.k8s.io/v1beta1")
    );
    exec["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn by_id(report: &SourceReport) -> BTreeMap<String, &Cluster> {
    report
        .found
        .iter()
        .map(|f| (f.cluster.id.0.clone(), &f.cluster))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_in_three_regions_and_two_profiles_are_found_grouped_with_exec_users() {
    let world = World::new().await;
    let host = |h: &str| format!("{h}.k8s.example.com");
    create_cluster(
        &world.alpha("eu-west-1"),
        "prod-eu",
        &[("k8s-tunnels/hostname", &host("prod-eu")), ("env", "prod")],
    )
    .await
    .unwrap();
    create_cluster(
        &world.alpha("us-east-1"),
        "staging-us",
        &[
            ("k8s-tunnels/hostname", &host("staging-us")),
            ("environment", "Staging"),
            ("k8s-tunnels/origin", "bastion"),
        ],
    )
    .await
    .unwrap();
    create_cluster(&world.alpha("us-east-1"), "private", &[("env", "prod")])
        .await
        .unwrap();
    create_cluster(
        &world.beta("ap-southeast-2"),
        "dev-ap",
        &[("k8s-tunnels/hostname", &host("dev-ap")), ("env", "dev")],
    )
    .await
    .unwrap();
    // Same name as account A's, other account: a different cluster.
    create_cluster(
        &world.beta("eu-west-1"),
        "prod-eu",
        &[
            ("k8s-tunnels/hostname", &host("prod-eu-b")),
            ("env", "prod"),
        ],
    )
    .await
    .unwrap();

    let proxy = world
        .proxy(Faults {
            account_regions: vec![
                ("eu-west-1".into(), "ENABLED_BY_DEFAULT".into()),
                ("us-east-1".into(), "ENABLED_BY_DEFAULT".into()),
                ("ap-southeast-2".into(), "ENABLED".into()),
                ("me-south-1".into(), "DISABLED".into()),
                ("af-south-1".into(), "DISABLING".into()),
            ],
            ..Faults::default()
        })
        .await;

    // Profiles and regions configured.
    let config = EksConfig {
        profiles: vec!["alpha".into(), "beta".into()],
        regions: REGIONS.iter().map(|r| r.to_string()).collect(),
        ..world.config(&proxy)
    };
    let (report, events) = discover(config.clone()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let expected_scopes: BTreeSet<String> = ["alpha", "beta"]
        .iter()
        .flat_map(|p| REGIONS.iter().map(move |r| format!("eks:{p}:{r}")))
        .collect();
    assert_eq!(
        report.scanned.iter().cloned().collect::<BTreeSet<_>>(),
        expected_scopes
    );
    let found = by_id(&report);
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        [
            format!("eks:{DEFAULT_ACCOUNT}:eu-west-1:prod-eu"),
            format!("eks:{DEFAULT_ACCOUNT}:us-east-1:staging-us"),
            format!("eks:{ACCOUNT_B}:ap-southeast-2:dev-ap"),
            format!("eks:{ACCOUNT_B}:eu-west-1:prod-eu"),
        ]
    );
    let staging = found[&format!("eks:{DEFAULT_ACCOUNT}:us-east-1:staging-us")];
    assert_eq!(staging.cloud, Cloud::Aws);
    assert_eq!(staging.environment, "staging");
    assert_eq!(staging.region.as_deref(), Some("us-east-1"));
    assert_eq!(staging.access.origin, OriginMode::Bastion);
    assert_eq!(
        staging.access.url.as_str(),
        "wss://staging-us.k8s.example.com/"
    );
    assert_eq!(staging.api.url.scheme(), "https");
    assert!(
        staging.api.host.ends_with(".us-east-1.eks.amazonaws.com"),
        "{}",
        staging.api.host
    );
    assert_eq!(staging.api.ca_pem.as_deref(), Some(world.ca.as_str()));
    assert_eq!(
        exec_args(staging),
        [
            "eks",
            "get-token",
            "--cluster-name",
            "staging-us",
            "--region",
            "us-east-1",
            "--profile",
            "alpha"
        ]
    );
    let dev = found[&format!("eks:{ACCOUNT_B}:ap-southeast-2:dev-ap")];
    assert_eq!(
        exec_args(dev)[3..],
        ["dev-ap", "--region", "ap-southeast-2", "--profile", "beta"]
    );
    let scope_of: BTreeMap<_, _> = report
        .found
        .iter()
        .map(|f| (f.cluster.id.0.clone(), f.scope.clone()))
        .collect();
    assert_eq!(
        scope_of[&format!("eks:{ACCOUNT_B}:ap-southeast-2:dev-ap")],
        "eks:beta:ap-southeast-2"
    );
    // Not published: listed, not dropped.
    assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
    assert_eq!(report.rejected[0].scope, "eks:alpha:us-east-1");
    assert!(report.rejected[0].name.contains("private"));
    assert_eq!(report.rejected[0].reason, Rejection::NotPublished);

    // Listed cloud → environment → clusters.
    let clusters: Vec<Cluster> = report.found.iter().map(|f| f.cluster.clone()).collect();
    assert!(clusters.iter().all(|c| c.cloud == Cloud::Aws));
    assert_eq!(
        listed(&clusters, Cloud::Aws),
        groups(&[
            ("prod", &["prod-eu", "prod-eu"]),
            ("staging", &["staging-us"]),
            ("dev", &["dev-ap"]),
        ])
    );

    // Progress: every scope reported, ending at done == total.
    let last = events.last().expect("progress events");
    assert_eq!((last.source.as_str(), last.done, last.total), ("eks", 6, 6));
    assert!(events.windows(2).all(|w| w[0].done <= w[1].done));

    // Nothing configured: every profile of the files, every region the account enabled.
    let auto = EksConfig {
        profiles: vec![],
        regions: vec![],
        ..config
    };
    let (report2, _) = discover(auto).await;
    assert!(report2.failed.is_empty(), "{:?}", report2.failed);
    assert_eq!(
        report2.scanned.iter().cloned().collect::<BTreeSet<_>>(),
        expected_scopes,
        "disabled regions are not scanned"
    );
    assert_eq!(
        by_id(&report2).keys().collect::<Vec<_>>(),
        found.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_and_throttled_regions_fail_alone_and_retries_are_bounded() {
    let world = World::new().await;
    for region in REGIONS {
        create_cluster(
            &world.alpha(region),
            &format!("c-{region}"),
            &[("k8s-tunnels/hostname", &format!("{region}.k8s.example.com"))],
        )
        .await
        .unwrap();
    }
    let proxy = world
        .proxy(Faults {
            deny: ["eu-west-1".to_string()].into(),
            throttle: ["us-east-1".to_string()].into(),
            ..Faults::default()
        })
        .await;
    let config = EksConfig {
        profiles: vec!["alpha".into()],
        regions: REGIONS.iter().map(|r| r.to_string()).collect(),
        max_attempts: 3,
        ..world.config(&proxy)
    };
    let started = Instant::now();
    let (report, _) = discover(config).await;
    let elapsed = started.elapsed();

    assert_eq!(report.scanned, ["eks:alpha:ap-southeast-2"]);
    assert_eq!(
        by_id(&report).keys().collect::<Vec<_>>(),
        [&format!(
            "eks:{DEFAULT_ACCOUNT}:ap-southeast-2:c-ap-southeast-2"
        )]
    );
    let failed: BTreeMap<&str, &str> = report
        .failed
        .iter()
        .map(|f| (f.scope.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let denied = failed["eks:alpha:eu-west-1"];
    assert!(
        denied.starts_with("EKS ListClusters: AccessDeniedException: User: arn:aws:iam::"),
        "{denied}"
    );
    let throttled = failed["eks:alpha:us-east-1"];
    assert_eq!(
        throttled,
        "EKS ListClusters: ThrottlingException: Rate exceeded"
    );
    for message in failed.values() {
        assert!(!message.contains("testing-secret"), "{message}");
        assert!(!message.contains("AKIAALPHA"), "{message}");
    }
    // The SDK's standard retry: throttling retried, exactly max_attempts tries, then given up
    // (backoff ≤ 1 s + 2 s with jitter); AccessDenied not retried.
    let seen = k8s_tunnels::sync::lock(&proxy.seen);
    assert_eq!(seen.faulted.get("us-east-1"), Some(&3), "{seen:?}");
    assert_eq!(seen.faulted.get("eu-west-1"), Some(&1), "{seen:?}");
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}: retries are not bounded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_one_page_of_clusters_is_found() {
    let world = World::new().await;
    let client = world.alpha("eu-north-1");
    const COUNT: usize = 230;
    // Sixteen at a time: all 230 at once made moto's server drop a connection on a loaded
    // machine, and the SDK's retry of a create that had gone through then met "already exists".
    futures_util::stream::iter(0..COUNT)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            async move {
                create_cluster(
                    &client,
                    &format!("c{i:03}"),
                    &[("k8s-tunnels/hostname", &format!("c{i}.k8s.example.com"))],
                )
                .await
                .unwrap();
            }
        })
        .await;
    let proxy = world.proxy(Faults::default()).await;
    let config = EksConfig {
        profiles: vec!["alpha".into()],
        regions: vec!["eu-north-1".into()],
        ..world.config(&proxy)
    };
    let (report, _) = discover(config).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let names: BTreeSet<String> = report
        .found
        .iter()
        .map(|f| f.cluster.name.clone())
        .collect();
    assert_eq!(names.len(), COUNT);
    assert!(names.contains("c000") && names.contains(&format!("c{:03}", COUNT - 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tags_are_rejected_or_made_safe_and_kubectl_still_loads_the_kubeconfig() {
    let world = World::new().await;
    let client = world.alpha("eu-west-1");
    let long_name = format!("n{}", "x".repeat(99)); // EKS allows 100 characters; we keep 63.
    let huge = "e".repeat(10 * 1024);
    let ok_host = "ok.k8s.example.com";
    let hostile_env = [
        "prod/../../etc",
        "a b.c",
        "ünïcödé",
        "key: value",
        "{flow}",
        "- item",
        "*alias",
        "&anchor",
        "!tag",
        "$(rm -rf ~)",
        huge.as_str(),
    ];
    for (i, env) in hostile_env.iter().enumerate() {
        create_cluster(
            &client,
            &format!("env{i}"),
            &[("k8s-tunnels/hostname", ok_host), ("env", env)],
        )
        .await
        .unwrap();
    }
    create_cluster(&client, &long_name, &[("k8s-tunnels/hostname", ok_host)])
        .await
        .unwrap();
    let bad_hosts = [
        ("creds", "https://admin:hunter2@k8s.example.com"),
        ("query", "k8s.example.com/?next=evil"),
        ("plain", "http://k8s.example.com"),
        ("space", "k8s example.com"),
        ("port", "k8s.example.com:99999"),
        ("scheme", "file:///etc/passwd"),
    ];
    for (name, host) in bad_hosts {
        create_cluster(&client, name, &[("k8s-tunnels/hostname", host)])
            .await
            .unwrap();
    }
    create_cluster(
        &client,
        "pathhost",
        &[("k8s-tunnels/hostname", "k8s.example.com/some/path")],
    )
    .await
    .unwrap();
    create_cluster(
        &client,
        "badorigin",
        &[
            ("k8s-tunnels/hostname", ok_host),
            ("k8s-tunnels/origin", "socks; rm -rf ~"),
        ],
    )
    .await
    .unwrap();
    // moto's own certificateAuthority.data: random characters, not base64 of a PEM.
    create_cluster(
        &client,
        "notpem",
        &[("k8s-tunnels/hostname", ok_host), ("test/moto-ca", "keep")],
    )
    .await
    .unwrap();

    let proxy = world.proxy(Faults::default()).await;
    let config = EksConfig {
        profiles: vec!["alpha".into()],
        regions: vec!["eu-west-1".into()],
        ..world.config(&proxy)
    };
    let (report, _) = discover(config).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let rejected: BTreeMap<String, &Rejection> = report
        .rejected
        .iter()
        .map(|r| (r.name.trim_matches('"').to_string(), &r.reason))
        .collect();
    for name in [
        "creds",
        "query",
        "plain",
        "space",
        "port",
        "scheme",
        "badorigin",
        "notpem",
    ] {
        let reason = rejected
            .get(name)
            .unwrap_or_else(|| panic!("{name} not rejected: {report:?}"));
        let Rejection::Invalid(message) = reason else {
            panic!("{name}: {reason:?}");
        };
        assert!(!message.contains("hunter2"), "{message}");
        if name == "notpem" {
            assert!(message.contains("CA"), "{message}");
        }
    }
    assert_eq!(rejected.len(), 8, "{rejected:?}");

    let found = by_id(&report);
    // A path is part of an Access hostname (as cloudflared takes it); the host stays the host.
    let path = found[&format!("eks:{DEFAULT_ACCOUNT}:eu-west-1:pathhost")];
    assert_eq!(path.access.url.host_str(), Some("k8s.example.com"));
    let mut envs = BTreeSet::new();
    for cluster in found.values() {
        assert!(
            k8s_tunnels::discovery::validate::check_name("name", &cluster.name).is_ok(),
            "{}",
            cluster.name
        );
        assert!(
            k8s_tunnels::discovery::validate::check_name("env", &cluster.environment).is_ok(),
            "{}",
            cluster.environment
        );
        envs.insert(cluster.environment.clone());
    }
    assert_eq!(
        envs.len(),
        hostile_env.len() + 1,
        "distinct environments: {envs:?}"
    );
    let long = found[&format!("eks:{DEFAULT_ACCOUNT}:eu-west-1:{long_name}")];
    assert!(long.name.len() <= 63 && long.name != long_name);
    // The exec plugin still names the real cluster.
    assert_eq!(exec_args(long)[3], long_name);

    // Written to a kubeconfig and read back by the real kubectl.
    let path = world.dir.path().join("kubeconfig");
    let kubeconfig = Kubeconfig::with_paths(vec![path.clone()]);
    for cluster in found.values() {
        let entry = ClusterEntry {
            name: format!("k8s-tunnels/{}", cluster.name),
            server: cluster.api.url.to_string(),
            certificate_authority_pem: cluster.api.ca_pem.clone(),
            tls_server_name: cluster.api.tls_server_name.clone(),
            proxy_url: k8s_tunnels::engine::proxy_url(
                "k8s-tunnels",
                &k8s_tunnels::secret::Secret::new("s3cret"),
                1080,
            ),
            user: cluster.user.clone(),
        };
        kubeconfig.upsert(&entry).unwrap();
    }
    let out = std::process::Command::new("kubectl")
        .args(["config", "view", "-o", "json", "--kubeconfig"])
        .arg(&path)
        .output()
        .expect("kubectl must be installed (scripts/install-test-deps)");
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let contexts: BTreeSet<&str> = view["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<String> = found
        .values()
        .map(|c| format!("k8s-tunnels/{}", c.name))
        .collect();
    assert_eq!(
        contexts,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    let long_user = view["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == format!("k8s-tunnels/{}", long.name))
        .expect("the long-named cluster's user");
    assert_eq!(long_user["user"]["exec"]["args"][3], long_name.as_str());
    assert_eq!(long_user["user"]["exec"]["command"], "aws");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_that_cannot_start_fails_as_its_own_scope() {
    let world = World::new().await;
    let proxy = world
        .proxy(Faults {
            deny_services: ["account".to_string()].into(),
            ..Faults::default()
        })
        .await;
    let config = EksConfig {
        profiles: vec!["alpha".into(), "ghost".into()],
        regions: vec![],
        ..world.config(&proxy)
    };
    let (report, events) = discover(config).await;
    assert!(report.scanned.is_empty(), "{:?}", report.scanned);
    let failed: BTreeMap<&str, &str> = report
        .failed
        .iter()
        .map(|f| (f.scope.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(
        failed.keys().copied().collect::<Vec<_>>(),
        ["eks:alpha", "eks:ghost"]
    );
    assert!(
        failed["eks:alpha"].starts_with("Account ListRegions: AccessDeniedException")
            && failed["eks:alpha"].contains("sources.eks.regions"),
        "{}",
        failed["eks:alpha"]
    );
    assert!(
        failed["eks:ghost"].starts_with("STS GetCallerIdentity:")
            && failed["eks:ghost"].contains("ghost"),
        "{}",
        failed["eks:ghost"]
    );
    let last = events.last().expect("progress");
    assert_eq!((last.done, last.total), (2, 2));
}
