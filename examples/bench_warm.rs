//! The delay-proxy benchmark (issue 12): what a new connection costs over a real distance, with
//! warm connections to the edge and without.
//!
//! The demo lab's gateway (wss, a token check per upgrade) and API server run here; a delay
//! proxy between the tunnel and the gateway holds every byte `--delay-ms` in each direction and
//! charges a new connection one round trip before its first byte goes out (the TCP handshake
//! it stands for). Two engines tunnel to the same cluster through it, one with warm connections
//! (as shipped), one without, and the run interleaves them:
//!
//! - **new connection**: a SOCKS5 CONNECT through the tunnel until its reply (the stream is up:
//!   TCP, TLS and the upgrade over the delay for a cold one, the upgrade only for a warm one),
//!   `--connections` times with `--pause-ms` between (a user's commands come seconds apart);
//! - **kubectl get ns**: the real kubectl against each engine's context, `--kubectl` times.
//!
//! ```text
//! cargo run --release --example bench_warm -- --delay-ms 20
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::engine::{ConnectOptions, Engine, EngineConfig};
use k8s_tunnels::inventory::{Cloud, Cluster, OriginMode};
use k8s_tunnels::kubeconfig::Kubeconfig;
use k8s_tunnels::lab::{Lab, LabClusterSpec, LabConfig};
use k8s_tunnels::state::StateStore;
use k8s_tunnels::tunnel::health::{ProbeSchedule, TunnelState};
use k8s_tunnels::tunnel::warm::WarmSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(
    about = "New connections and kubectl over a delayed edge, with warm connections and without"
)]
struct Args {
    /// One-way delay between the tunnel and the edge, in milliseconds.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// New connections per engine.
    #[arg(long, default_value_t = 40)]
    connections: usize,
    /// Pause between new connections, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pause_ms: u64,
    /// `kubectl get ns` runs per engine.
    #[arg(long, default_value_t = 15)]
    kubectl: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let delay = Duration::from_millis(args.delay_ms);
    let dir = tempfile::tempdir()?;
    let spec = LabClusterSpec::new("far", Cloud::Onprem, "bench", OriginMode::Tcp);
    let lab = Lab::start(LabConfig::new(&dir.path().join("lab"), vec![spec]))
        .await
        .context("starting the lab")?;
    let proxy = start_delay_proxy(lab.gateway_addr(), delay).await?;
    let inventory = std::fs::read_to_string(lab.inventory_path())?
        .replace(&lab.gateway_addr().to_string(), &proxy.to_string());
    let inventory_path = dir.path().join("inventory-far.yaml");
    std::fs::write(&inventory_path, inventory)?;
    let cluster = k8s_tunnels::discovery::file::load(&inventory_path)?
        .into_iter()
        .next()
        .context("no cluster in the lab inventory")?;

    let warm = Side::start(dir.path(), "warm", WarmSettings::default(), &cluster).await?;
    let cold = Side::start(dir.path(), "cold", WarmSettings::OFF, &cluster).await?;
    let kubectl =
        which("kubectl").context("kubectl is required on PATH (scripts/install-test-deps)")?;

    let pause = Duration::from_millis(args.pause_ms);
    let (mut warm_conn, mut cold_conn) = (Vec::new(), Vec::new());
    for _ in 0..args.connections {
        warm_conn.push(warm.new_connection().await?);
        cold_conn.push(cold.new_connection().await?);
        tokio::time::sleep(pause).await;
    }
    let (mut warm_kubectl, mut cold_kubectl) = (Vec::new(), Vec::new());
    for _ in 0..args.kubectl {
        warm_kubectl.push(warm.kubectl_get_ns(&kubectl).await?);
        cold_kubectl.push(cold.kubectl_get_ns(&kubectl).await?);
        tokio::time::sleep(pause).await;
    }

    let rtt = 2.0 * args.delay_ms as f64;
    let (wc, cc) = (median(&mut warm_conn), median(&mut cold_conn));
    let (wk, ck) = (median(&mut warm_kubectl), median(&mut cold_kubectl));
    println!(
        "- delay: {} ms each way (round trip {rtt:.0} ms); {} new connections and {} `kubectl get ns` per engine, interleaved, {} ms apart; medians",
        args.delay_ms, args.connections, args.kubectl, args.pause_ms
    );
    println!("- machine: {} cores, load {}", num_cpus(), loadavg());
    println!();
    println!("| path | new connection p50 ms | in round trips | `kubectl get ns` p50 ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| warm connections (as shipped) | {wc:.1} | {:.2} | {wk:.1} |",
        wc / rtt
    );
    println!(
        "| warm connections off | {cc:.1} | {:.2} | {ck:.1} |",
        cc / rtt
    );
    println!(
        "| three round trips (TCP + TLS + upgrade, what `cloudflared access tcp` pays) | {:.1} | 3.00 | |",
        3.0 * rtt
    );
    println!();
    println!(
        "Ratios: new connection warm / off {:.2}×; `kubectl get ns` warm / off {:.2}× ({:.1} ms saved per invocation)",
        wc / cc,
        wk / ck,
        ck - wk
    );
    drop((warm, cold));
    Ok(())
}

/// One engine with its own home and kubeconfig, its tunnel to the cluster open.
struct Side {
    engine: Engine,
    kubeconfig: std::path::PathBuf,
    context: String,
    cluster: Cluster,
}

impl Side {
    async fn start(
        root: &Path,
        name: &str,
        warm: WarmSettings,
        cluster: &Cluster,
    ) -> anyhow::Result<Self> {
        let dirs = AppDirs::at(&root.join(name));
        dirs.ensure()?;
        let kubeconfig = root.join(format!("{name}.kubeconfig"));
        let engine = Engine::new(EngineConfig {
            kubeconfig: Some(Kubeconfig::with_paths(vec![kubeconfig.clone()])),
            prefix: "k8s-tunnels/".into(),
            state: StateStore::new(&dirs),
            // Probed at start only: the probes' own connections stay out of the figures.
            schedule: ProbeSchedule {
                healthy: Duration::from_secs(3600),
                ..ProbeSchedule::default()
            },
            keepalive: k8s_tunnels::tunnel::keepalive::Keepalive::default(),
            warm,
            wake: None,
            kubeconfig_refresh: Duration::from_secs(60),
        });
        engine.connect(cluster, ConnectOptions::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while engine.status_of(&cluster.id).map(|s| s.state) != Some(TunnelState::Up) {
            ensure!(
                Instant::now() < deadline,
                "the {name} tunnel did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let context = engine.context_name(cluster);
        Ok(Self {
            engine,
            kubeconfig,
            context,
            cluster: cluster.clone(),
        })
    }

    /// Milliseconds from the TCP connect to the local port to the CONNECT reply.
    async fn new_connection(&self) -> anyhow::Result<f64> {
        let port = self
            .engine
            .status_of(&self.cluster.id)
            .context("closed")?
            .port;
        let login = self
            .engine
            .socks_login(&self.cluster.id)
            .context("no login")?;
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        s.write_all(&[5, 1, 2]).await?;
        let mut two = [0u8; 2];
        s.read_exact(&mut two).await?;
        let (user, pass) = (
            login.username.as_bytes(),
            login.password.expose().as_bytes(),
        );
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user);
        auth.push(pass.len() as u8);
        auth.extend_from_slice(pass);
        s.write_all(&auth).await?;
        s.read_exact(&mut two).await?;
        ensure!(two == [1, 0], "SOCKS login refused");
        let host = self.cluster.api.host.as_bytes();
        let mut connect = vec![5, 1, 0, 3, host.len() as u8];
        connect.extend_from_slice(host);
        connect.extend_from_slice(&self.cluster.api.port.to_be_bytes());
        s.write_all(&connect).await?;
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await?;
        ensure!(reply[1] == 0, "CONNECT refused with {}", reply[1]);
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    /// Milliseconds of one `kubectl get ns` through this engine's context.
    async fn kubectl_get_ns(&self, kubectl: &Path) -> anyhow::Result<f64> {
        let started = Instant::now();
        let out = tokio::process::Command::new(kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["--context", &self.context, "get", "ns", "-o", "name"])
            .output()
            .await?;
        let took = started.elapsed().as_secs_f64() * 1e3;
        ensure!(
            out.status.success(),
            "kubectl get ns failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    }
}

/// A TCP relay that holds every chunk `delay` in each direction, and a new connection's first
/// bytes out one round trip more (its TCP handshake, which a local accept does not cost).
async fn start_delay_proxy(target: SocketAddr, delay: Duration) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let accepted = tokio::time::Instant::now();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let handshake = accepted + 2 * delay;
                tokio::join!(
                    delayed_copy(ir, ow, delay, Some(handshake)),
                    delayed_copy(or, iw, delay, None)
                );
            });
        }
    });
    Ok(addr)
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (and not before
/// `not_before`), in order.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    not_before: Option<tokio::time::Instant>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut at = tokio::time::Instant::now() + delay;
                    if let Some(t) = not_before {
                        at = at.max(t + delay);
                    }
                    if tx.send((at, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
