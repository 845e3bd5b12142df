//! Benchmark: EKS discovery of 1000 clusters across 20 regions against moto server, the
//! parallel source against a sequential scan (the same code with every concurrency set to 1,
//! so regions are scanned one after another), in the same run.
//!
//! `cargo run --release --example bench_discovery` (needs moto: `scripts/install-test-deps`).
#![allow(clippy::unwrap_used)]

#[path = "../tests/moto_support/mod.rs"]
mod moto_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_tunnels::discovery::ClusterSource;
use k8s_tunnels::discovery::eks::{EksConfig, EksSource};
use moto_support::{FaultProxy, Faults, MotoServer, create_cluster, eks_client, static_creds};

const REGIONS: [&str; 20] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "eu-south-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "me-south-1",
    "af-south-1",
];
const CLUSTERS: usize = 1000;

#[tokio::main]
async fn main() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config");
    let credentials_file = dir.path().join("credentials");
    std::fs::write(&config_file, "[profile bench]\nregion = us-east-1\n").unwrap();
    std::fs::write(
        &credentials_file,
        "[bench]\naws_access_key_id = AKIABENCH\naws_secret_access_key = testing-secret\n",
    )
    .unwrap();

    let started = Instant::now();
    let per_region = CLUSTERS / REGIONS.len();
    let creates = REGIONS.iter().map(|region| {
        let client = eks_client(&moto.url(), region, static_creds("AKIABENCH"));
        async move {
            for i in 0..per_region {
                let name = format!("{region}-{i:03}");
                let host = format!("{name}.k8s.example.com");
                create_cluster(
                    &client,
                    &name,
                    &[("k8s-tunnels/hostname", &host), ("env", "prod")],
                )
                .await
                .unwrap();
            }
        }
    });
    futures_util::future::join_all(creates).await;
    println!(
        "created {CLUSTERS} clusters in {} regions in {:.1?}",
        REGIONS.len(),
        started.elapsed()
    );

    // Twice: against moto as it is on loopback (a few ms of Python CPU per request, one
    // process), and with a 50 ms round trip added per request, as to a real AWS region.
    let mut last_report = None;
    for latency_ms in [0u64, 50] {
        let proxy = FaultProxy::start(
            moto.port,
            Faults {
                ca_pem: Some(moto_support::test_ca_pem()),
                latency: Duration::from_millis(latency_ms),
                ..Faults::default()
            },
        )
        .await;
        println!("-- added round trip per request: {latency_ms} ms");
        let base = EksConfig {
            profiles: vec!["bench".into()],
            regions: REGIONS.iter().map(|r| r.to_string()).collect(),
            config_file: Some(config_file.clone()),
            credentials_file: Some(credentials_file.clone()),
            endpoint_url: Some(proxy.url()),
            ..EksConfig::default()
        };
        let sequential = EksConfig {
            describe_concurrency: 1,
            scope_concurrency: 1,
            max_concurrency: 1,
            ..base.clone()
        };
        let (seq, _) = run("sequential", sequential).await;
        let (par, _) = run("parallel", base.clone()).await;
        let (par2, report) = run("parallel (again)", base).await;
        last_report = Some(report);
        let best = par.min(par2);
        println!(
            "parallel is {:.1}x faster than sequential ({:.2?} vs {:.2?})",
            seq.as_secs_f64() / best.as_secs_f64(),
            best,
            seq
        );
    }
    if let Some(report) = last_report {
        list_from_cache(report);
    }
}

/// Listing from the cache: what every start of the CLI and the app does, with no network.
/// In-process (read + parse + catalog) and, when the release CLI is built next to this example,
/// the whole `k8s-tunnels list --json` process.
fn list_from_cache(report: k8s_tunnels::discovery::SourceReport) {
    use k8s_tunnels::discovery::{cache, catalog};
    let home = tempfile::tempdir().unwrap();
    let cache_dir = home.path().join("cache");
    std::fs::create_dir_all(&cache_dir).unwrap();
    let path = cache::cache_path(&cache_dir);
    let merged = cache::merge(
        &cache::DiscoveryCache::default(),
        &[report],
        std::time::SystemTime::now(),
    );
    cache::save(&path, &merged).unwrap();
    let mut times: Vec<Duration> = (0..21)
        .map(|_| {
            let started = Instant::now();
            let loaded = cache::load(&path).unwrap();
            let entries = catalog::assemble(Vec::new(), &loaded);
            assert_eq!(entries.len(), CLUSTERS);
            started.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "-- list from cache: {CLUSTERS} clusters, {} KiB file; read + catalog in-process: median {:.2?}",
        std::fs::metadata(&path).unwrap().len() / 1024,
        times[times.len() / 2]
    );
    let cli = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("k8s-tunnels")))
        .filter(|p| p.exists());
    let Some(cli) = cli else {
        println!(
            "   (build the CLI with `cargo build --release --bins` to time `k8s-tunnels list`)"
        );
        return;
    };
    let mut times: Vec<Duration> = (0..11)
        .map(|_| {
            let started = Instant::now();
            let out = std::process::Command::new(&cli)
                .env("K8S_TUNNELS_HOME", home.path())
                .env("K8S_TUNNELS_KEYCHAIN", "off")
                .args(["list", "--json"])
                .output()
                .unwrap();
            assert!(out.status.success());
            started.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "   `k8s-tunnels list --json` as a process (start, read, group, print): median {:.2?}",
        times[times.len() / 2]
    );
}

async fn run(label: &str, config: EksConfig) -> (Duration, k8s_tunnels::discovery::SourceReport) {
    let (d, c, m) = (
        config.describe_concurrency,
        config.scope_concurrency,
        config.max_concurrency,
    );
    let source = EksSource::new(config);
    let started = Instant::now();
    let report = source.discover(Arc::new(|_| {})).await;
    let elapsed = started.elapsed();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report.found.len(),
        CLUSTERS,
        "rejected: {:?}",
        report.rejected.first()
    );
    println!(
        "{label:<18} {:>4} clusters, {:>2} scopes in {elapsed:>9.2?}  (describe {d}/region, {c} scopes, {m} requests at once)",
        report.found.len(),
        report.scanned.len()
    );
    (elapsed, report)
}
