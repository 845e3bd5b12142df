//! The Vault source against a fake of the KV v2 API (no Vault server on this machine): the
//! walk, fields and ids, namespaces, tokens, the 403 and 404 answers, hostile data, and the
//! kubeconfig written from the result loading in the real kubectl.
#![allow(clippy::unwrap_used)]

mod fakes;
#[path = "support/listed.rs"]
mod listed;

use std::collections::{BTreeMap, BTreeSet};

use k8s_tunnels::discovery::vault::{VaultConfig, VaultEnv, VaultSource};
use k8s_tunnels::discovery::{ClusterSource, Rejection, SourceReport};
use k8s_tunnels::inventory::{Cloud, OriginMode};
use k8s_tunnels::secret::Secret;
use serde_json::{Value, json};

use fakes::vault::Vault;
use listed::{groups, listed};

const TOKEN: &str = "hvs.CAESIJ-test-token-do-not-leak";

fn secrets(entries: &[(&str, Value)]) -> BTreeMap<String, Value> {
    entries
        .iter()
        .map(|(p, v)| ((*p).to_string(), v.clone()))
        .collect()
}

fn vault(namespace: Option<&str>, secrets: BTreeMap<String, Value>) -> Vault {
    Vault {
        token: TOKEN.into(),
        namespace: namespace.map(Into::into),
        mount: "kv".into(),
        secrets,
        ..Vault::default()
    }
}

fn config() -> VaultConfig {
    VaultConfig {
        mount: "kv".into(),
        prefix: "k8s-tunnels".into(),
        ..VaultConfig::default()
    }
}

fn env(addr: &str, namespace: Option<&str>) -> VaultEnv {
    VaultEnv {
        address: Some(addr.into()),
        token: Some(Secret::new(TOKEN)),
        namespace: namespace.map(Into::into),
        home: None,
    }
}

fn assert_no_token(report: &SourceReport) {
    let text = format!("{report:?}");
    assert!(!text.contains(TOKEN), "the token leaked into the report");
}

#[tokio::test]
async fn walks_the_prefix_and_maps_fields_ids_groups() {
    let ca = fakes::ca_pem();
    let (served, state) = fakes::vault::start(vault(
        Some("team-a"),
        secrets(&[
            (
                "k8s-tunnels/dc1/prod-a",
                json!({
                    "server": "https://10.0.0.10:6443",
                    "ca": ca,
                    "hostname": "prod-a.k8s.example.com",
                    "environment": "prod",
                    "origin": "tcp",
                    "region": "dc1",
                    "owner": "platform team (ignored)",
                }),
            ),
            (
                "k8s-tunnels/dc1/stage",
                json!({
                    "server": "https://stage.k8s.internal",
                    "hostname": "stage.k8s.example.com",
                    "environment": "staging",
                }),
            ),
            (
                "k8s-tunnels/edge",
                json!({
                    "name": "edge-01",
                    "cloud": "aws",
                    "server": "https://edge.k8s.internal:443",
                    "hostname": "edge.k8s.example.com",
                    "environment": "prod",
                    "origin": "bastion",
                }),
            ),
            (
                "k8s-tunnels/unpublished",
                json!({"server": "https://hidden.k8s.internal"}),
            ),
            (
                "elsewhere/not-walked",
                json!({"server": "https://x.internal", "hostname": "x.example.com"}),
            ),
        ]),
    ))
    .await;
    let source = VaultSource::with_env(config(), env(&served.url(), Some("team-a")));
    assert_eq!(source.name(), "vault");
    let (report, progress) = fakes::discover(&source).await;

    assert_eq!(report.source, "vault");
    assert_eq!(report.scanned, vec!["vault:kv:k8s-tunnels".to_string()]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let ids: BTreeSet<&str> = report
        .found
        .iter()
        .map(|f| f.cluster.id.0.as_str())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "vault:kv:k8s-tunnels/dc1/prod-a",
            "vault:kv:k8s-tunnels/dc1/stage",
            "vault:kv:k8s-tunnels/edge",
        ])
    );
    assert!(
        report
            .found
            .iter()
            .all(|f| f.scope == "vault:kv:k8s-tunnels")
    );
    let all = fakes::clusters(&report);
    let by_name = |n: &str| all.iter().find(|c| c.name == n).unwrap();
    let prod = by_name("prod-a");
    assert_eq!(prod.cloud, Cloud::Onprem);
    assert_eq!(prod.environment, "prod");
    assert_eq!(prod.region.as_deref(), Some("dc1"));
    assert_eq!(prod.api.url.as_str(), "https://10.0.0.10:6443/");
    assert_eq!((prod.api.host.as_str(), prod.api.port), ("10.0.0.10", 6443));
    assert_eq!(prod.api.ca_pem.as_deref(), Some(ca.as_str()));
    assert_eq!(prod.access.url.as_str(), "wss://prod-a.k8s.example.com/");
    assert_eq!(prod.access.origin, OriginMode::Tcp);
    assert!(prod.user.is_empty(), "no credential comes from Vault data");
    let stage = by_name("stage");
    assert_eq!(stage.api.port, 443);
    assert_eq!(stage.access.origin, OriginMode::Socks);
    assert_eq!(stage.api.ca_pem, None);
    let edge = by_name("edge-01");
    assert_eq!(edge.cloud, Cloud::Aws);
    assert_eq!(edge.access.origin, OriginMode::Bastion);

    let rejected: Vec<_> = report
        .rejected
        .iter()
        .map(|r| (r.name.as_str(), &r.reason))
        .collect();
    assert_eq!(
        rejected,
        vec![("\"unpublished\"", &Rejection::NotPublished)]
    );

    assert_eq!(
        listed(&all, Cloud::Onprem),
        groups(&[("prod", &["prod-a"]), ("staging", &["stage"])])
    );
    assert_eq!(listed(&all, Cloud::Aws), groups(&[("prod", &["edge-01"])]));

    // Every request carried the token and stayed under the prefix; LISTs then GETs.
    let requests = k8s_tunnels::sync::lock(&state.requests).clone();
    assert!(requests.iter().all(|(_, _, token_ok)| *token_ok));
    assert!(requests.iter().all(|(_, p, _)| p.starts_with("/v1/kv/")));
    assert!(!requests.iter().any(|(_, p, _)| p.contains("elsewhere")));
    let lists: Vec<&str> = requests
        .iter()
        .filter(|(m, _, _)| m == "LIST")
        .map(|(_, p, _)| p.as_str())
        .collect();
    assert_eq!(
        lists,
        vec![
            "/v1/kv/metadata/k8s-tunnels",
            "/v1/kv/metadata/k8s-tunnels/dc1"
        ]
    );
    assert_eq!(requests.iter().filter(|(m, _, _)| m == "GET").count(), 4);

    let last = progress.last().unwrap();
    assert_eq!(
        (last.done, last.total),
        (6, 6),
        "2 LISTs + 4 GETs: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[0].done <= w[1].done));
    assert_no_token(&report);

    let dir = tempfile::tempdir().unwrap();
    fakes::kubectl_view(dir.path(), &all);
}

#[tokio::test]
async fn namespace_from_config_wins_and_a_wrong_one_is_denied() {
    let store = secrets(&[(
        "k8s-tunnels/prod",
        json!({"server": "https://10.1.1.1:6443", "hostname": "prod.example.com"}),
    )]);
    let (served, _state) = fakes::vault::start(vault(Some("team-a/sub"), store)).await;

    // VAULT_NAMESPACE alone.
    let source = VaultSource::with_env(config(), env(&served.url(), Some("team-a/sub")));
    let (report, _) = fakes::discover(&source).await;
    assert_eq!(report.found.len(), 1, "{:?}", report.failed);

    // The config's namespace beats VAULT_NAMESPACE.
    let configured = VaultConfig {
        namespace: Some("team-a/sub".into()),
        ..config()
    };
    let source = VaultSource::with_env(configured, env(&served.url(), Some("other")));
    let (report, _) = fakes::discover(&source).await;
    assert_eq!(report.found.len(), 1, "{:?}", report.failed);

    // No namespace: the token is not valid at the root, the scope fails with Vault's answer.
    let source = VaultSource::with_env(config(), env(&served.url(), None));
    let (report, _) = fakes::discover(&source).await;
    assert!(report.found.is_empty() && report.scanned.is_empty());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].scope, "vault:kv:k8s-tunnels");
    assert!(
        report.failed[0].message.contains("permission denied")
            && report.failed[0].message.contains("kv/k8s-tunnels/"),
        "{}",
        report.failed[0].message
    );
    assert_no_token(&report);
}

#[tokio::test]
async fn forbidden_paths_fail_the_scope_without_stopping_the_walk() {
    let ok = |host: &str| json!({"server": "https://10.2.0.1:6443", "hostname": host});
    let mut fake = vault(
        None,
        secrets(&[
            ("k8s-tunnels/a", ok("a.example.com")),
            ("k8s-tunnels/locked", ok("locked.example.com")),
            ("k8s-tunnels/team-b/x", ok("x.example.com")),
            ("k8s-tunnels/team-c/y", ok("y.example.com")),
        ]),
    );
    fake.denied = BTreeSet::from(["k8s-tunnels/team-b/".into(), "k8s-tunnels/locked".into()]);
    let (served, _state) = fakes::vault::start(fake).await;
    let source = VaultSource::with_env(config(), env(&served.url(), None));
    let (report, progress) = fakes::discover(&source).await;

    let names: BTreeSet<&str> = report
        .found
        .iter()
        .map(|f| f.cluster.name.as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a", "y"]),
        "the walk went on past the 403s"
    );
    assert!(
        report.scanned.is_empty(),
        "a scope with holes is not scanned"
    );
    let mut messages: Vec<&str> = report.failed.iter().map(|f| f.message.as_str()).collect();
    messages.sort_unstable();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("kv/k8s-tunnels/locked: permission denied"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with("kv/k8s-tunnels/team-b/: permission denied"),
        "{}",
        messages[1]
    );
    assert!(
        report
            .failed
            .iter()
            .all(|f| f.scope == "vault:kv:k8s-tunnels")
    );
    let last = progress.last().unwrap();
    assert_eq!(last.done, last.total);
    assert_no_token(&report);
}

#[tokio::test]
async fn a_missing_prefix_is_no_clusters_and_a_bad_token_is_reported_without_it() {
    let (served, state) = fakes::vault::start(vault(None, BTreeMap::new())).await;
    let source = VaultSource::with_env(config(), env(&served.url(), None));
    let (report, _) = fakes::discover(&source).await;
    assert_eq!(report.scanned, vec!["vault:kv:k8s-tunnels".to_string()]);
    assert!(report.found.is_empty() && report.failed.is_empty() && report.rejected.is_empty());

    let wrong = VaultEnv {
        token: Some(Secret::new("hvs.wrong-token-value")),
        ..env(&served.url(), None)
    };
    let (report, _) = fakes::discover(&VaultSource::with_env(config(), wrong)).await;
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].message.contains("permission denied"));
    assert!(!format!("{report:?}").contains("wrong-token-value"));
    assert!(
        k8s_tunnels::sync::lock(&state.requests)
            .iter()
            .any(|(_, _, ok)| !ok)
    );
}

#[tokio::test]
async fn the_token_comes_from_vault_token_file_and_its_absence_is_explained() {
    let store = secrets(&[(
        "k8s-tunnels/prod",
        json!({"server": "https://10.1.1.1:6443", "hostname": "prod.example.com"}),
    )]);
    let (served, _state) = fakes::vault::start(vault(None, store)).await;
    let home = tempfile::tempdir().unwrap();
    let from_home = VaultEnv {
        token: None,
        home: Some(home.path().to_path_buf()),
        ..env(&served.url(), None)
    };
    let (report, _) = fakes::discover(&VaultSource::with_env(config(), from_home.clone())).await;
    assert!(report.found.is_empty());
    assert!(
        report.failed[0].message.contains("VAULT_TOKEN")
            && report.failed[0].message.contains(".vault-token"),
        "{}",
        report.failed[0].message
    );

    std::fs::write(home.path().join(".vault-token"), format!("{TOKEN}\n")).unwrap();
    let (report, _) = fakes::discover(&VaultSource::with_env(config(), from_home)).await;
    assert_eq!(report.found.len(), 1, "{:?}", report.failed);
    assert_no_token(&report);
}

#[tokio::test]
async fn the_walk_is_bounded_in_depth_and_count() {
    let ok = json!({"server": "https://10.3.0.1", "hostname": "h.example.com"});
    let store = secrets(&[
        ("k8s-tunnels/a", ok.clone()),
        ("k8s-tunnels/b", ok.clone()),
        ("k8s-tunnels/c", ok.clone()),
        ("k8s-tunnels/d1/d2/deep", ok.clone()),
    ]);
    let (served, _state) = fakes::vault::start(vault(None, store)).await;
    let bounded = VaultConfig {
        max_depth: 1,
        max_secrets: 2,
        ..config()
    };
    let (report, _) =
        fakes::discover(&VaultSource::with_env(bounded, env(&served.url(), None))).await;
    assert_eq!(report.found.len(), 2);
    assert!(report.scanned.is_empty());
    let text: Vec<&str> = report.failed.iter().map(|f| f.message.as_str()).collect();
    assert!(
        text.iter().any(|m| m.contains("max_secrets (2)")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|m| m.contains("kv/k8s-tunnels/d1/d2/") && m.contains("max_depth (1)")),
        "{text:?}"
    );
}

#[tokio::test]
async fn hostile_secrets_are_rejected_or_made_safe_and_kubectl_still_loads_the_result() {
    let ca = fakes::ca_pem();
    let host = |h: &str| json!({"server": "https://10.4.0.1:6443", "hostname": h, "ca": ca});
    let named = |n: &str| json!({"name": n, "server": "https://10.4.0.2:6443", "hostname": "n.example.com"});
    let long = "x".repeat(10 * 1024);
    let store = secrets(&[
        ("k8s-tunnels/slash", named("prod/eu/../../etc")),
        ("k8s-tunnels/dots", named("..")),
        ("k8s-tunnels/space", named("with space")),
        ("k8s-tunnels/unicode", named("ünïcödé-集群")),
        (
            "k8s-tunnels/yaml",
            named("key: value # {flow} *alias &anchor !tag"),
        ),
        ("k8s-tunnels/long", named(&long)),
        ("k8s-tunnels/key with space", host("space-key.example.com")),
        ("k8s-tunnels/ключ", host("cyrillic.example.com")),
        ("k8s-tunnels/../escape", host("escape.example.com")),
        ("k8s-tunnels/host-path", host("k8s.example.com/team")),
        (
            "k8s-tunnels/host-creds",
            host("https://bob:hunter2@k8s.example.com"),
        ),
        (
            "k8s-tunnels/server-creds",
            json!({"server": "https://admin:hunter2@10.4.0.3:6443", "hostname": "s.example.com"}),
        ),
        (
            "k8s-tunnels/server-creds-bare",
            json!({"server": "admin:hunter2@10.4.0.3", "hostname": "s.example.com"}),
        ),
        (
            "k8s-tunnels/bad-ca",
            json!({"server": "https://10.4.0.4", "hostname": "c.example.com", "ca": "not a certificate"}),
        ),
        (
            "k8s-tunnels/not-a-string",
            json!({"server": 6443, "hostname": "t.example.com"}),
        ),
        (
            "k8s-tunnels/bad-cloud",
            json!({"server": "https://10.4.0.5", "hostname": "t.example.com", "cloud": "mars"}),
        ),
        (
            "k8s-tunnels/plain-http",
            json!({"server": "http://10.4.0.6", "hostname": "t.example.com"}),
        ),
    ]);
    let (served, _state) = fakes::vault::start(vault(None, store)).await;
    let (report, _) =
        fakes::discover(&VaultSource::with_env(config(), env(&served.url(), None))).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let found = fakes::clusters(&report);
    let ids: BTreeSet<&str> = found.iter().map(|c| c.id.0.as_str()).collect();
    for id in [
        "vault:kv:k8s-tunnels/slash",
        "vault:kv:k8s-tunnels/dots",
        "vault:kv:k8s-tunnels/space",
        "vault:kv:k8s-tunnels/unicode",
        "vault:kv:k8s-tunnels/yaml",
        "vault:kv:k8s-tunnels/long",
        "vault:kv:k8s-tunnels/key with space",
        "vault:kv:k8s-tunnels/ключ",
        "vault:kv:k8s-tunnels/host-path",
    ] {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    assert_eq!(found.len(), 9, "{ids:?}");
    fakes::assert_safe_distinct_names(&found);
    let path_host = found
        .iter()
        .find(|c| c.id.0.ends_with("host-path"))
        .unwrap();
    assert_eq!(path_host.access.url.as_str(), "wss://k8s.example.com/team");

    let rejected: BTreeMap<&str, &Rejection> = report
        .rejected
        .iter()
        .map(|r| (r.name.as_str(), &r.reason))
        .collect();
    for name in [
        "\"host-creds\"",
        "\"server-creds\"",
        "\"server-creds-bare\"",
        "\"bad-ca\"",
        "\"not-a-string\"",
        "\"bad-cloud\"",
        "\"plain-http\"",
        "\"../\"",
    ] {
        assert!(
            matches!(rejected.get(name), Some(Rejection::Invalid(_))),
            "{name}: {rejected:?}"
        );
    }
    assert_eq!(report.rejected.len(), 8, "{rejected:?}");
    assert!(matches!(rejected["\"bad-ca\""], Rejection::Invalid(m) if m.contains("CA")));
    let text = format!("{report:?}");
    assert!(!text.contains("hunter2"), "a password leaked: {text}");
    assert!(!text.contains(&long), "the 10 KB name is not echoed whole");

    let dir = tempfile::tempdir().unwrap();
    let view = fakes::kubectl_view(dir.path(), &found);
    assert_eq!(view["clusters"].as_array().unwrap().len(), found.len());
}

/// A Vault that accepts connections and never answers: the discovery run ends at its deadline
/// with the source reported as failed (named), and the clusters it found before stay listed,
/// marked stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_that_never_answers_ends_the_run_at_its_deadline_and_keeps_the_clusters() {
    use k8s_tunnels::discovery::runner::refresh_within;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("discovery.json");
    let noop: k8s_tunnels::discovery::ProgressSink = Arc::new(|_| {});
    let store = secrets(&[(
        "k8s-tunnels/dc1/kept",
        json!({"server": "https://10.0.0.1:6443", "hostname": "kept.k8s.example.com"}),
    )]);
    let (served, _state) = fakes::vault::start(vault(None, store)).await;
    let answering: Vec<Box<dyn ClusterSource>> = vec![Box::new(VaultSource::with_env(
        config(),
        env(&served.url(), None),
    ))];
    let (first, _) = refresh_within(&cache, &answering, noop.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(first.clusters.len(), 1);

    // Accepts, reads, never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            held.push(stream);
        }
    });
    let silent: Vec<Box<dyn ClusterSource>> = vec![Box::new(VaultSource::with_env(
        config(),
        env(&format!("http://{hung_addr}"), None),
    ))];
    let start = Instant::now();
    let (next, reports) = refresh_within(&cache, &silent, noop, Duration::from_secs(2))
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "the run took {took:?}");
    assert_eq!(reports[0].source, "vault");
    assert!(
        reports[0].failed[0]
            .message
            .contains("did not answer within 2 s"),
        "{:?}",
        reports[0].failed
    );
    assert_eq!(next.clusters.len(), 1, "the cluster found before stays");
    assert!(next.clusters[0].stale.is_some());

    // Runs that keep meeting the hung Vault leave nothing behind: no thread per run.
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let after_one = threads();
    for _ in 0..3 {
        let noop: k8s_tunnels::discovery::ProgressSink = Arc::new(|_| {});
        refresh_within(&cache, &silent, noop, Duration::from_millis(300))
            .await
            .unwrap();
    }
    assert!(
        threads() <= after_one,
        "threads grew from {after_one} to {}",
        threads()
    );
}
