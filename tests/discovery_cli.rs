//! `k8s-tunnels discover` and `list` end to end through the real CLI: a configured source (Vault,
//! against its REST-faithful fake) is scanned, cached, listed without the network, and kept —
//! marked stale — when the source fails on a later run.
#![allow(clippy::unwrap_used)]

mod fakes;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use fakes::vault::Vault;

const TOKEN: &str = "hvs.CAESIJ-cli-test-token-do-not-leak";

fn cli(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_k8s-tunnels"))
        .env("K8S_TUNNELS_HOME", home)
        .env("K8S_TUNNELS_KEYCHAIN", "off")
        .env("HOME", home)
        .env("VAULT_TOKEN", TOKEN)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_NAMESPACE")
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn listed(home: &Path) -> Vec<Value> {
    let out = cli(home, &["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_caches_lists_offline_and_keeps_clusters_stale_when_the_source_fails() {
    let secrets: BTreeMap<String, Value> = [
        (
            "k8s-tunnels/dc1/factory",
            json!({"server": "https://10.1.0.10:6443", "hostname": "factory.k8s.example.com",
                   "environment": "prod", "origin": "tcp"}),
        ),
        (
            "k8s-tunnels/dc2/lab",
            json!({"server": "https://lab.k8s.internal", "hostname": "lab.k8s.example.com",
                   "environment": "dev"}),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (served, _state) = fakes::vault::start(Vault {
        token: TOKEN.into(),
        mount: "kv".into(),
        secrets,
        ..Vault::default()
    })
    .await;

    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.yaml"),
        format!(
            "sources:\n  vault:\n    address: {}\n    mount: kv\n    prefix: k8s-tunnels\n",
            served.url()
        ),
    )
    .unwrap();
    let home_path = home.path().to_path_buf();
    let run = move |args: &'static [&'static str]| {
        let home = home_path.clone();
        tokio::task::spawn_blocking(move || cli(&home, args))
    };

    let out = run(&["config", "--json"]).await.unwrap();
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["sources"], json!(["vault"]));

    let out = run(&["discover", "--json"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary[0]["source"], "vault");
    assert_eq!(summary[0]["clusters"], 2);
    assert!(!text(&out.stdout).contains(TOKEN) && !text(&out.stderr).contains(TOKEN));

    let home_path = home.path().to_path_buf();
    let clusters = tokio::task::spawn_blocking(move || listed(&home_path))
        .await
        .unwrap();
    let names: Vec<&str> = clusters
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{clusters:#?}");
    assert!(
        names.contains(&"factory") && names.contains(&"lab"),
        "{names:?}"
    );
    assert!(
        clusters
            .iter()
            .all(|c| c["source"] == "vault" && c["stale"].is_null())
    );

    // The source goes away: discovery reports it, and the clusters stay, marked stale.
    drop(served);
    let out = run(&["discover"]).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("✗ vault:kv:k8s-tunnels"),
        "{}",
        text(&out.stdout)
    );
    let home_path = home.path().to_path_buf();
    let clusters = tokio::task::spawn_blocking(move || listed(&home_path))
        .await
        .unwrap();
    assert_eq!(clusters.len(), 2);
    assert!(
        clusters.iter().all(|c| c["stale"].is_string()),
        "{clusters:#?}"
    );
    let out = run(&["list"]).await.unwrap();
    assert!(
        text(&out.stdout).contains("(stale)"),
        "{}",
        text(&out.stdout)
    );
}
