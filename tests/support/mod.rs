//! Shared harness of the end-to-end tests: the lab world, a counting relay in front of the
//! gateway, and runners for the real CLI and the real kubectl.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_tunnels::inventory::{Cloud, OriginMode};
use k8s_tunnels::lab::{Lab, LabClusterSpec, LabConfig};
use tokio::net::TcpListener;

/// The real kubectl; the tests fail loudly without it.
pub fn kubectl_path() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    found.expect("kubectl is required on PATH for the end-to-end tests (scripts/install-test-deps)")
}

/// A lab of the given clusters, its files in `dir`.
pub async fn start_lab(dir: &Path, clusters: &[(&str, OriginMode)]) -> Lab {
    let specs = clusters
        .iter()
        .map(|(name, origin)| LabClusterSpec::new(name, Cloud::Aws, "test", *origin))
        .collect();
    Lab::start(LabConfig::new(dir, specs))
        .await
        .expect("start the lab")
}

/// A lab running on its own runtime, so that a test can block (run processes, sleep) freely.
pub struct LabWorld {
    pub lab: Lab,
    pub rt: tokio::runtime::Runtime,
}

impl LabWorld {
    pub fn start(dir: &Path, clusters: &[(&str, OriginMode)]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("lab runtime");
        let lab = rt.block_on(start_lab(dir, clusters));
        Self { lab, rt }
    }
}

/// A TCP relay that counts the connections it accepts: put in front of the gateway, it shows
/// whether anything reached the edge. It can also stop forwarding new connections (they are
/// held open, unanswered: an edge that no longer answers new connections) and close every
/// connection it relays (an edge that let them go).
pub struct CountingRelay {
    pub addr: std::net::SocketAddr,
    pub accepted: Arc<AtomicU64>,
    hold_new: Arc<std::sync::atomic::AtomicBool>,
    close_all: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let hold_new = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let close_all = Arc::new(tokio::sync::Notify::new());
        let count = accepted.clone();
        let (hold, close) = (hold_new.clone(), close_all.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let held = hold.load(Ordering::SeqCst);
                let close = close.clone();
                tokio::spawn(async move {
                    let closed = close.notified();
                    if held {
                        closed.await;
                        return;
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = closed => {}
                        }
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            hold_new,
            close_all,
            task,
        }
    }

    pub fn count(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// From now on, new connections are accepted (and counted) but never forwarded.
    pub fn hold_new_connections(&self, hold: bool) {
        self.hold_new.store(hold, Ordering::SeqCst);
    }

    /// Closes every connection open through the relay now.
    pub fn close_all(&self) {
        self.close_all.notify_waiters();
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rewrites the lab inventory so every cluster dials `addr` instead of the gateway.
pub fn redirect_inventory(lab: &Lab, addr: std::net::SocketAddr) -> PathBuf {
    let text = std::fs::read_to_string(lab.inventory_path()).expect("read lab inventory");
    let text = text.replace(&lab.gateway_addr().to_string(), &addr.to_string());
    let path = lab
        .inventory_path()
        .with_file_name("inventory-relayed.yaml");
    std::fs::write(&path, text).expect("write relayed inventory");
    path
}

/// A sandbox for the CLI: its own app home and kubeconfig, no keychain.
pub struct CliWorld {
    pub home: PathBuf,
    pub kubeconfig: PathBuf,
    pub inventory: PathBuf,
}

impl CliWorld {
    pub fn new(root: &Path, inventory: &Path) -> Self {
        let home = root.join("home");
        std::fs::create_dir_all(&home).expect("create home");
        Self {
            home,
            kubeconfig: root.join("kube").join("config"),
            inventory: inventory.to_path_buf(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-tunnels"));
        cmd.env("K8S_TUNNELS_HOME", &self.home)
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env_remove("K8S_TUNNELS_ACCESS_TOKEN")
            .env_remove("TUNNEL_SERVICE_TOKEN_ID")
            .env_remove("TUNNEL_SERVICE_TOKEN_SECRET")
            .arg("--inventory")
            .arg(&self.inventory)
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run k8s-tunnels")
    }

    /// Starts `k8s-tunnels connect ...` in the background.
    pub fn spawn_connect(&self, args: &[&str]) -> ConnectProcess {
        self.spawn_connect_with(args, &[])
    }

    /// [`CliWorld::spawn_connect`] with extra environment variables.
    pub fn spawn_connect_with(&self, args: &[&str], env: &[(&str, &str)]) -> ConnectProcess {
        let mut all = vec!["-v", "connect"];
        all.extend_from_slice(args);
        let mut command = self.command(&all);
        command.envs(env.iter().copied());
        ConnectProcess::spawn(command)
    }

    /// The real kubectl on this world's kubeconfig, to spawn (a `logs -f`, a `port-forward`).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(kubectl_path());
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .args(args);
        command
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args).output().expect("run kubectl")
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Waits until `status` shows every named tunnel in `state`.
    pub fn wait_for_state(&self, names: &[&str], state: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status();
            let ready = names.iter().all(|n| {
                status
                    .iter()
                    .any(|t| t["name"] == *n && t["state"] == state)
            });
            if ready {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tunnels {names:?} not {state} in time; last status: {status:#?}"
            );
            k8s_tunnels::sync::pause_blocking(Duration::from_millis(200));
        }
    }

    /// The SOCKS secret the kubeconfig entry of `cluster` carries (read with the real
    /// kubectl), or `None` when its proxy-url has none (the tunnel is not open).
    pub fn socks_secret(&self, cluster: &str) -> Option<String> {
        let out = self.kubectl(&[
            "config",
            "view",
            "--raw",
            "-o",
            &format!(
                "jsonpath={{.clusters[?(@.name==\"k8s-tunnels/{cluster}\")].cluster.proxy-url}}"
            ),
        ]);
        assert!(
            out.status.success(),
            "kubectl config view: {}",
            text(&out.stderr)
        );
        let proxy = url::Url::parse(text(&out.stdout).trim()).expect("a proxy-url");
        proxy.password().map(str::to_owned)
    }
}

/// A running `connect`; interrupted (Ctrl-C) and reaped on drop.
pub struct ConnectProcess {
    child: Option<Child>,
    log: Arc<std::sync::Mutex<String>>,
}

impl ConnectProcess {
    /// Starts `command` (a `connect`, of whichever build) with stderr collected as it comes.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn k8s-tunnels connect");
        // Drain stderr as it comes so a chatty child never blocks on a full pipe.
        let mut stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                k8s_tunnels::sync::lock(&sink).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child: Some(child),
            log,
        }
    }

    /// Whether the process has exited, with its status.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        k8s_tunnels::sync::lock(&self.log).clone()
    }

    /// Sends SIGINT, as Ctrl-C does, and returns the exit status and the whole stderr.
    pub fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().expect("running");
        let status = interrupt_and_wait(child);
        // The reader thread ends with the pipe; give it a moment to take the last bytes.
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
        (status, self.log())
    }
}

fn interrupt_and_wait(mut child: Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("k8s-tunnels connect did not exit within 15 s of Ctrl-C");
        }
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(50));
    }
}

impl Drop for ConnectProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
