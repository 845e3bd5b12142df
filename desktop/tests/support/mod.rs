//! Shared harness of the desktop tests: a real demo-style lab and a shell over it, on one
//! runtime that the tests (and Tauri's async runtime) share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod desktop;

use k8s_tunnels::app::{App, AppOptions};
use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::inventory::{Cloud, OriginMode};
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::lab::{Lab, LabClusterSpec, LabConfig};
use k8s_tunnels::tunnel::health::ProbeSchedule;
use k8s_tunnels_desktop::shell::{RunInfo, Shell};

/// Probes often, so that a stopped gateway shows within a second.
pub fn quick_schedule() -> ProbeSchedule {
    ProbeSchedule {
        healthy: Duration::from_millis(300),
        down_min: Duration::from_millis(100),
        down_max: Duration::from_millis(400),
        timeout: Duration::from_secs(2),
        api: true,
    }
}

/// A lab, a shell over it, and the runtime both run on.
pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub lab: Lab,
    pub shell: Arc<Shell>,
    pub home: AppDirs,
    pub kubeconfig: PathBuf,
}

impl World {
    /// Three clusters across two clouds, files under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_via(dir, |_| None)
    }

    /// As [`start`](Self::start), with the clusters reaching the lab's gateway through whatever
    /// `relay` puts in front of it (given the gateway's address, it returns where clients go
    /// instead), or straight when it returns `None`.
    pub fn start_via(
        dir: &Path,
        relay: impl FnOnce(std::net::SocketAddr) -> Option<std::net::SocketAddr>,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let specs = vec![
            LabClusterSpec::new("alpha", Cloud::Aws, "prod", OriginMode::Socks),
            LabClusterSpec::new("beta", Cloud::Aws, "staging", OriginMode::Tcp),
            LabClusterSpec::new("gamma", Cloud::Gcp, "dev", OriginMode::Socks),
        ];
        let lab = rt
            .block_on(Lab::start(LabConfig::new(&dir.join("lab"), specs)))
            .expect("start the lab");
        let inventory = match relay(lab.gateway_addr()) {
            None => lab.inventory_path().to_path_buf(),
            Some(relayed) => {
                let text = std::fs::read_to_string(lab.inventory_path()).expect("lab inventory");
                let path = dir.join("inventory-relayed.yaml");
                let text = text.replace(&lab.gateway_addr().to_string(), &relayed.to_string());
                std::fs::write(&path, text).expect("write the relayed inventory");
                path
            }
        };
        let home = AppDirs::at(&dir.join("home"));
        let kubeconfig = dir.join("kubeconfig");
        let app = App::load(
            home.clone(),
            AppOptions {
                inventory: Some(inventory),
                kubeconfig: Some(kubeconfig.clone()),
                ..AppOptions::default()
            },
        )
        .expect("load the app");
        let keychain = Keychain::disabled("k8s-tunnels-test", "tests keep secrets in files");
        // The engine forwards login events from a task: it is built inside the runtime.
        let shell = rt.block_on(async {
            let (engine, _) = app.engine(&keychain, quick_schedule()).expect("engine");
            let run = RunInfo {
                keychain: keychain.status().clone(),
                inventory_file: app.inventory_path().to_path_buf(),
            };
            Shell::start(app, engine, None, run)
        });
        Self {
            rt,
            lab,
            shell,
            home,
            kubeconfig,
        }
    }

    /// The id of a lab cluster by name.
    pub fn id(&self, name: &str) -> String {
        self.shell
            .clusters()
            .expect("clusters")
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
            .id
            .0
    }
}

/// Polls `f` until it returns `Some`, for up to 20 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(50));
    }
}
