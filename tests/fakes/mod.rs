//! Fakes of the cloud APIs that have no real peer on this machine (GKE, Vault KV v2), following
//! the published REST shapes, plus the kubectl check every discovery test ends with.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

pub mod gke;
pub mod vault;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use std::sync::{Arc, Mutex};

use axum::Router;
use k8s_tunnels::discovery::{ClusterSource, Progress, SourceReport};
use k8s_tunnels::inventory::Cluster;
use k8s_tunnels::kubeconfig::{ClusterEntry, Kubeconfig};
use k8s_tunnels::secret::Secret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A fake listening on 127.0.0.1; stops when dropped.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on a free loopback port.
pub async fn serve(router: Router) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the fake");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("fake server");
    });
    Served { addr, task }
}

/// The real kubectl; the tests fail loudly without it.
pub fn kubectl() -> Command {
    let path = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("kubectl"))
                .find(|p| p.is_file())
        })
        .expect("kubectl is required on PATH for the discovery tests");
    Command::new(path)
}

/// Writes `clusters` to a fresh kubeconfig in `dir` the way the engine does, loads it with the
/// real `kubectl config view`, and returns kubectl's JSON view of it.
pub fn kubectl_view(dir: &Path, clusters: &[Cluster]) -> serde_json::Value {
    let path = dir.join("kubeconfig");
    let kubeconfig = Kubeconfig::with_paths(vec![path.clone()]);
    for (i, cluster) in clusters.iter().enumerate() {
        let port = 20000 + u16::try_from(i).expect("few clusters");
        let entry = ClusterEntry {
            name: format!("{}{}", kubeconfig.prefix(), cluster.name),
            server: cluster.api.url.to_string(),
            certificate_authority_pem: cluster.api.ca_pem.clone(),
            tls_server_name: cluster.api.tls_server_name.clone(),
            proxy_url: k8s_tunnels::engine::proxy_url("k8s-tunnels", &Secret::new("s3cret"), port),
            user: cluster.user.clone(),
        };
        kubeconfig
            .upsert(&entry)
            .expect("write the kubeconfig entry");
    }
    let out = kubectl()
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(&path)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl could not load the kubeconfig: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kubectl JSON");
    // Every cluster came back under its name, with its server.
    for cluster in clusters {
        let name = format!("{}{}", kubeconfig.prefix(), cluster.name);
        let found = view["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap_or_else(|| panic!("kubectl does not show cluster {name}"));
        assert_eq!(found["cluster"]["server"], cluster.api.url.as_str());
        let context = view["contexts"]
            .as_array()
            .expect("contexts")
            .iter()
            .find(|c| c["name"] == name.as_str());
        assert!(context.is_some(), "kubectl does not show context {name}");
    }
    view
}

/// A throw-away CA certificate, PEM.
pub fn ca_pem() -> String {
    k8s_tunnels::lab::pki::LabCa::new("discovery test CA")
        .expect("make a CA")
        .cert_pem()
        .to_string()
}

/// Runs a source once, collecting the progress it reports.
pub async fn discover(source: &dyn ClusterSource) -> (SourceReport, Vec<Progress>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let report = source
        .discover(Arc::new(move |p| k8s_tunnels::sync::lock(&sink).push(p)))
        .await;
    let progress = k8s_tunnels::sync::lock(&seen).clone();
    (report, progress)
}

/// The clusters a report found.
pub fn clusters(report: &SourceReport) -> Vec<Cluster> {
    report.found.iter().map(|f| f.cluster.clone()).collect()
}

/// Asserts that discovered names are valid kubeconfig keys (no `..`) and still distinct after
/// hostile input was made safe; returns them.
pub fn assert_safe_distinct_names(found: &[Cluster]) -> std::collections::BTreeSet<&str> {
    let names: std::collections::BTreeSet<&str> = found.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names.len(),
        found.len(),
        "hostile names stay distinct: {names:?}"
    );
    for c in found {
        assert!(
            k8s_tunnels::discovery::validate::check_name("name", &c.name).is_ok(),
            "{:?}",
            c.name
        );
        assert!(!c.name.contains(".."), "{}", c.name);
    }
    names
}
