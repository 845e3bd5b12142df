//! The scale benchmark (issue 12): memory of the real processes under many idle connections.
//!
//! For each build given (`--variant name=dir[,VAR=value...]`, `dir` holding the release
//! `k8s-tunnels` and `k8s-tunnels-gateway` binaries), it starts the gateway binary and one
//! `k8s-tunnels connect` process with `--tunnels` tunnels through it, then three times
//! (`--bursts`) opens `--connections` connections spread over the tunnels (each a real SOCKS5
//! CONNECT with username/password and one round trip to an echo origin), holds them idle,
//! closes them, and reads VmRSS and the open file descriptors of both processes before, during
//! and after. Then one connection carries `--bulk-mib` each way (sent and echoed back at once)
//! and the CPU time each process spent on it is read from /proc. The echo origin runs in this
//! process, so the figures are the two binaries' own.
//!
//! ```text
//! cargo run --release --example bench_scale -- --variant base=target/bench-base --variant new=target/bench-new
//! ```
//!
//! Variants are measured one after another in the same run; the report gives every figure and
//! its ratio to the first variant's.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use k8s_tunnels::gateway::{Claims, TokenIssuer};
use k8s_tunnels::lab::pki::LabCa;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "bench_support/process.rs"]
mod process;
use process::{Proc, Reading, cpu_secs, free_port, mb, read_process, ticks_per_sec};

#[derive(Parser, Debug)]
#[command(about = "Memory of the client and gateway processes under many idle connections")]
struct Args {
    /// A build to measure: `name=dir`, optionally followed by `,VAR=value` environment settings
    /// for both processes (e.g. `new-arena1=target/bench-new,MALLOC_ARENA_MAX=1`), and `,warm=off`
    /// for a build with warm connections: this run measures the connections it opens, so the
    /// client is configured to keep none (a build from before them has no such setting).
    #[arg(long = "variant", required = true)]
    variants: Vec<String>,
    /// Tunnels in the one `connect` process.
    #[arg(long, default_value_t = 50)]
    tunnels: usize,
    /// Idle connections per burst, spread over the tunnels.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Bursts per process.
    #[arg(long, default_value_t = 3)]
    bursts: usize,
    /// Plain ws instead of wss.
    #[arg(long)]
    plain: bool,
    /// Seconds to wait before each reading, for the processes to settle.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// After the bursts, MiB sent through one connection and echoed back, for the CPU time
    /// each process spends per GiB carried (0: none).
    #[arg(long, default_value_t = 1024)]
    bulk_mib: u64,
}

/// One build under test.
struct Variant {
    name: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    warm_off: bool,
}

fn parse_variant(text: &str) -> anyhow::Result<Variant> {
    let mut parts = text.split(',');
    let head = parts.next().unwrap_or_default();
    let Some((name, dir)) = head.split_once('=') else {
        bail!("--variant {text}: expected name=dir[,VAR=value...]");
    };
    let mut warm_off = false;
    let env = parts
        .filter(|kv| {
            let setting = *kv == "warm=off";
            warm_off |= setting;
            !setting
        })
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--variant {text}: `{kv}` is not VAR=value"))
        })
        .collect::<anyhow::Result<_>>()?;
    let dir = PathBuf::from(dir);
    for bin in ["k8s-tunnels", "k8s-tunnels-gateway"] {
        ensure!(
            dir.join(bin).is_file(),
            "--variant {text}: no {bin} in {}",
            dir.display()
        );
    }
    Ok(Variant {
        name: name.to_owned(),
        dir,
        env,
        warm_off,
    })
}

/// Both processes at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Pair {
    client: Reading,
    gateway: Reading,
}

/// What one variant measured.
#[derive(Debug, Default)]
struct Figures {
    before: Pair,
    during: Vec<Pair>,
    after: Vec<Pair>,
    errors: usize,
    first_error: Option<String>,
    open_secs: Vec<f64>,
    bulk: Option<Bulk>,
}

/// One connection carrying `--bulk-mib` each way.
#[derive(Debug, Clone, Copy)]
struct Bulk {
    mib_per_sec: f64,
    client_cpu_per_gib: f64,
    gateway_cpu_per_gib: f64,
}

/// The lab's files and the echo origin, shared by every variant.
struct World {
    dir: tempfile::TempDir,
    echo: SocketAddr,
    names: Vec<String>,
    plain: bool,
}

const DOMAIN: &str = "scale.test";
const API_PORT: u16 = 6443;

impl World {
    async fn start(tunnels: usize, plain: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let echo = start_echo().await?;
        let names: Vec<String> = (0..tunnels).map(|i| format!("t{i}")).collect();
        Ok(Self {
            dir,
            echo,
            names,
            plain,
        })
    }

    /// Writes the gateway config (on `gateway`) and the inventory; returns their paths.
    /// `limits`: the gateway has a `limits:` section (issue 16), to be set so that the one
    /// client address of the benchmark is not held to the per-client default.
    fn write_files(
        &self,
        gateway: SocketAddr,
        run: &Path,
        limits: bool,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(run)?;
        let ca = LabCa::new("k8s-tunnels scale bench CA")?;
        let issuer = TokenIssuer::generate()?;
        let hosts: Vec<String> = self.names.iter().map(|n| format!("{n}.{DOMAIN}")).collect();
        let ca_path = run.join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem())?;
        let jwks = run.join("jwks.json");
        std::fs::write(&jwks, issuer.jwks_json())?;
        let mut claims =
            Claims::for_user("scale-", "bench@scale.test", Duration::from_secs(86_400));
        claims.aud = self.names.iter().map(|n| format!("aud-{n}")).collect();
        let token = run.join("token");
        std::fs::write(&token, issuer.mint(&claims)?.expose())?;
        let k8s_token = run.join("k8s-token");
        std::fs::write(&k8s_token, "unused")?;

        let applications: Vec<_> = self
            .names
            .iter()
            .zip(&hosts)
            .map(|(n, h)| {
                json!({"hostname": h, "aud": format!("aud-{n}"), "origin": format!("tcp://{}", self.echo)})
            })
            .collect();
        let mut gateway_config = json!({
            "listen": gateway.to_string(),
            "jwks": {"file": jwks},
            "applications": applications,
        });
        if limits {
            gateway_config["limits"] =
                json!({"max_connections_per_client": 1_000_000, "max_connections": 1_000_000});
        }
        if !self.plain {
            let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let cert = ca.issue(&names)?;
            let (cert_path, key_path) = (run.join("tls.crt"), run.join("tls.key"));
            std::fs::write(&cert_path, cert.cert_pem)?;
            std::fs::write(&key_path, cert.key_pem)?;
            gateway_config["tls"] = json!({"cert": {"file": cert_path}, "key": {"file": key_path}});
        }
        let gateway_path = run.join("gateway.yaml");
        std::fs::write(&gateway_path, serde_norway::to_string(&gateway_config)?)?;

        let clusters: Vec<_> = self
            .names
            .iter()
            .zip(&hosts)
            .map(|(n, h)| {
                let hostname = if self.plain {
                    format!("ws://{h}")
                } else {
                    h.clone()
                };
                let mut access = json!({
                    "hostname": hostname,
                    "origin": "tcp",
                    "connect_to": gateway.to_string(),
                    "token": {"file": token},
                });
                if !self.plain {
                    access["ca_file"] = json!(ca_path);
                }
                json!({
                    "name": n,
                    "cloud": "onprem",
                    "environment": "bench",
                    "region": "dc1",
                    "server": format!("https://{n}.api.{DOMAIN}:{API_PORT}"),
                    "ca_file": ca_path,
                    "access": access,
                    "user": {"tokenFile": k8s_token},
                })
            })
            .collect();
        let inventory = run.join("inventory.yaml");
        std::fs::write(
            &inventory,
            serde_norway::to_string(&json!({ "clusters": clusters }))?,
        )?;
        Ok((gateway_path, inventory))
    }
}

async fn start_echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Small while idle (a thousand of these are held); large once a read fills it,
                // so the bulk run is not held to 512-byte writes by the origin.
                let mut buf = vec![0u8; 512];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    if n == buf.len() && buf.len() < BULK_CHUNK {
                        buf.resize(BULK_CHUNK, 0);
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Whether the gateway binary in `dir` knows the `limits:` section (builds before issue 16
/// refuse it as an unknown key).
fn has_limits_section(dir: &Path, run: &Path) -> anyhow::Result<bool> {
    std::fs::create_dir_all(run)?;
    let probe = run.join("limits-probe.yaml");
    std::fs::write(
        &probe,
        "listen: 127.0.0.1:0\nlimits: {}\napplications:\n  - {hostname: a.test, aud: a, origin: 'tcp://127.0.0.1:1', service_tokens: [{client_id: c, client_secret: {env: PATH}}]}\n",
    )?;
    let status = Command::new(dir.join("k8s-tunnels-gateway"))
        .arg("--config")
        .arg(&probe)
        .arg("--check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

/// One tunnel's local SOCKS5 endpoint and login, read from the kubeconfig's `proxy-url`.
#[derive(Clone, Debug)]
struct Socks {
    addr: SocketAddr,
    user: String,
    pass: String,
    host: String,
}

/// Reads the `proxy-url` of every `k8s-tunnels/<name>` cluster entry in `kubeconfig`.
fn read_proxies(kubeconfig: &Path, names: &[String]) -> Option<Vec<Socks>> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    let doc: serde_json::Value = serde_norway::from_str(&text).ok()?;
    let clusters = doc.get("clusters")?.as_array()?;
    names
        .iter()
        .map(|n| {
            let entry = clusters.iter().find(|c| {
                c.get("name").and_then(|v| v.as_str()) == Some(&format!("k8s-tunnels/{n}"))
            })?;
            let proxy = entry.get("cluster")?.get("proxy-url")?.as_str()?;
            let url = url::Url::parse(proxy).ok()?;
            let pass = percent_decode(url.password()?);
            Some(Socks {
                addr: format!("{}:{}", url.host_str()?, url.port()?)
                    .parse()
                    .ok()?,
                user: percent_decode(url.username()),
                pass,
                host: format!("{n}.api.{DOMAIN}"),
            })
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn protocol(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// A SOCKS5 CONNECT with username/password through `socks`, then one byte echoed.
async fn open_one(socks: &Socks) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(socks.addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 2]).await?;
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await?;
    if two != [5, 2] {
        return Err(protocol(format!("method choice {two:?}")));
    }
    let mut auth = vec![1, socks.user.len() as u8];
    auth.extend_from_slice(socks.user.as_bytes());
    auth.push(socks.pass.len() as u8);
    auth.extend_from_slice(socks.pass.as_bytes());
    s.write_all(&auth).await?;
    s.read_exact(&mut two).await?;
    if two != [1, 0] {
        return Err(protocol(format!("authentication status {two:?}")));
    }
    let mut connect = vec![5, 1, 0, 3, socks.host.len() as u8];
    connect.extend_from_slice(socks.host.as_bytes());
    connect.extend_from_slice(&API_PORT.to_be_bytes());
    s.write_all(&connect).await?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await?;
    if reply[..2] != [5, 0] || reply[3] != 1 {
        return Err(protocol(format!("CONNECT reply {reply:?}")));
    }
    s.write_all(b"x").await?;
    let mut echo = [0u8; 1];
    s.read_exact(&mut echo).await?;
    if &echo != b"x" {
        return Err(protocol("wrong echo".into()));
    }
    Ok(s)
}

/// The size of the bulk run's reads and writes, in the harness and the echo origin.
const BULK_CHUNK: usize = 256 << 10;

/// Sends `bytes` through one connection while reading the echo back, and reads how much CPU
/// time the client and the gateway process spent on it.
async fn bulk(socks: &Socks, bytes: u64, pids: (u32, u32)) -> anyhow::Result<Bulk> {
    let ticks = ticks_per_sec()?;
    let (mut r, mut w) = open_one(socks).await?.into_split();
    let cpu_before = (cpu_secs(pids.0, ticks)?, cpu_secs(pids.1, ticks)?);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5a_u8; BULK_CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        Ok::<_, std::io::Error>(w)
    });
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut got = 0u64;
    while got < bytes {
        let n = r.read(&mut buf).await?;
        ensure!(
            n > 0,
            "the bulk connection closed after {got} of {bytes} bytes"
        );
        ensure!(
            buf[..n].iter().all(|&b| b == 0x5a),
            "the echo came back altered"
        );
        got += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(writer.await??);
    let gib = bytes as f64 / f64::from(1u32 << 30);
    Ok(Bulk {
        mib_per_sec: bytes as f64 / f64::from(1u32 << 20) / secs,
        client_cpu_per_gib: (cpu_secs(pids.0, ticks)? - cpu_before.0) / gib,
        gateway_cpu_per_gib: (cpu_secs(pids.1, ticks)? - cpu_before.1) / gib,
    })
}

async fn measure(args: &Args, world: &World, variant: &Variant) -> anyhow::Result<Figures> {
    let run = world.dir.path().join(&variant.name);
    let gateway_addr = free_port()?;
    let limits = has_limits_section(&variant.dir, &run)?;
    let (gateway_config, inventory) = world.write_files(gateway_addr, &run, limits)?;
    let home = run.join("home");
    std::fs::create_dir_all(&home)?;
    let kubeconfig = run.join("kubeconfig");

    let gateway = Proc(
        Command::new(variant.dir.join("k8s-tunnels-gateway"))
            .arg("--config")
            .arg(&gateway_config)
            .envs(variant.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(run.join("gateway.log"))?)
            .spawn()
            .context("starting the gateway")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(gateway_addr).await.is_err() {
        ensure!(Instant::now() < deadline, "the gateway did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut connect = Command::new(variant.dir.join("k8s-tunnels"));
    connect
        .env("K8S_TUNNELS_HOME", &home)
        .env("K8S_TUNNELS_KEYCHAIN", "off")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", &home)
        .env("RUST_LOG", "warn")
        .env_remove("K8S_TUNNELS_ACCESS_TOKEN")
        .envs(variant.env.iter().map(|(k, v)| (k, v)));
    if variant.warm_off {
        let config = run.join("config.yaml");
        std::fs::write(&config, "warm: {connections: 0}\n")?;
        connect.arg("--config").arg(config);
    }
    connect
        .arg("--inventory")
        .arg(&inventory)
        .arg("connect")
        .args(&world.names)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(run.join("connect.log"))?);
    let client = Proc(connect.spawn().context("starting k8s-tunnels connect")?);
    let deadline = Instant::now() + Duration::from_secs(60);
    let proxies = loop {
        if let Some(p) = read_proxies(&kubeconfig, &world.names) {
            break p;
        }
        ensure!(
            Instant::now() < deadline,
            "the tunnels did not come up (see {})",
            run.join("connect.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (cpid, gpid) = (client.0.id(), gateway.0.id());
    let read_both = || -> anyhow::Result<Pair> {
        Ok(Pair {
            client: read_process(cpid)?,
            gateway: read_process(gpid)?,
        })
    };
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let mut figures = Figures {
        before: read_both()?,
        ..Figures::default()
    };
    let proxies = Arc::new(proxies);
    for burst in 1..=args.bursts {
        let started = Instant::now();
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.connections {
            let socks = proxies[i % proxies.len()].clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                tokio::time::timeout(Duration::from_secs(30), open_one(&socks))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            });
        }
        let mut held = Vec::with_capacity(args.connections);
        while let Some(joined) = tasks.join_next().await {
            match joined? {
                Ok(stream) => held.push(stream),
                Err(e) => {
                    figures.errors += 1;
                    figures.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        figures.open_secs.push(started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        let during = read_both()?;
        figures.during.push(during);
        eprintln!(
            "{}: burst {burst}: {} open in {:.1} s; client {:.1} MB, gateway {:.1} MB",
            variant.name,
            held.len(),
            started.elapsed().as_secs_f64(),
            mb(during.client.rss_kib),
            mb(during.gateway.rss_kib)
        );
        drop(held);
        // Wait for both processes to close their ends (descriptors back to the idle count).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = read_both()?;
            if now.client.fds <= figures.before.client.fds + 2
                && now.gateway.fds <= figures.before.gateway.fds + 2
            {
                break;
            }
            if Instant::now() > deadline {
                figures.errors += 1;
                figures.first_error.get_or_insert_with(|| {
                    format!(
                        "descriptors not released: client {} (idle {}), gateway {} (idle {})",
                        now.client.fds,
                        figures.before.client.fds,
                        now.gateway.fds,
                        figures.before.gateway.fds
                    )
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        figures.after.push(read_both()?);
    }
    if args.bulk_mib > 0 {
        let b = bulk(&proxies[0], args.bulk_mib << 20, (cpid, gpid)).await?;
        eprintln!(
            "{}: bulk: {:.0} MiB/s each way, client {:.2} s/GiB, gateway {:.2} s/GiB",
            variant.name, b.mib_per_sec, b.client_cpu_per_gib, b.gateway_cpu_per_gib
        );
        figures.bulk = Some(b);
    }
    drop(client);
    drop(gateway);
    Ok(figures)
}

fn per_conn(before: u64, during: u64, n: usize) -> f64 {
    (during as f64 - before as f64) / n as f64
}

fn report(args: &Args, results: &[(Variant, Figures)]) -> String {
    let mut out = String::new();
    let m = args.connections;
    let _ = writeln!(
        out,
        "- workload: {} tunnels in one `k8s-tunnels connect`, {} idle connections per burst ({}), {} bursts; readings {} s after each step",
        args.tunnels,
        m,
        if args.plain { "ws" } else { "wss" },
        args.bursts,
        args.settle
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| variant | process | RSS before MB | during (burst 1) MB | KiB per idle conn | after bursts 1 / 2 / 3 MB | after 3 vs before | anon before / after 3 MB | fds before / during | threads before / during / after 3 | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (variant, f) in results {
        for (label, pick) in [
            ("client", (|p: &Pair| p.client) as fn(&Pair) -> Reading),
            ("gateway", |p: &Pair| p.gateway),
        ] {
            let before = pick(&f.before);
            let during = f.during.first().map(pick).unwrap_or_default();
            let after: Vec<String> = f
                .after
                .iter()
                .map(|p| format!("{:.1}", mb(pick(p).rss_kib)))
                .collect();
            let last = f.after.last().map(pick).unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {label} | {:.1} | {:.1} | {:.1} | {} | {:+.1} % | {:.1} / {:.1} | {} / {} | {} / {} / {} | {} |",
                variant.name,
                mb(before.rss_kib),
                mb(during.rss_kib),
                per_conn(before.rss_kib, during.rss_kib, m),
                after.join(" / "),
                (last.rss_kib as f64 / before.rss_kib as f64 - 1.0) * 100.0,
                mb(before.anon_kib),
                mb(last.anon_kib),
                before.fds,
                during.fds,
                before.threads,
                during.threads,
                last.threads,
                f.errors
            );
        }
    }
    if let Some((base, bf)) = results.first() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Ratios to `{}` (same run):", base.name);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| variant | client KiB/conn | gateway KiB/conn | client RSS after 3 bursts | gateway RSS after 3 bursts |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        let kib = |f: &Figures, pick: fn(&Pair) -> Reading| {
            per_conn(
                pick(&f.before).rss_kib,
                f.during.first().map(pick).unwrap_or_default().rss_kib,
                m,
            )
        };
        let after = |f: &Figures, pick: fn(&Pair) -> Reading| {
            f.after.last().map(pick).unwrap_or_default().rss_kib as f64
        };
        let c: fn(&Pair) -> Reading = |p| p.client;
        let g: fn(&Pair) -> Reading = |p| p.gateway;
        for (variant, f) in results {
            let _ = writeln!(
                out,
                "| {} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
                variant.name,
                kib(f, c) / kib(bf, c),
                kib(f, g) / kib(bf, g),
                after(f, c) / after(bf, c),
                after(f, g) / after(bf, g),
            );
        }
    }
    let bulks: Vec<(&str, Bulk)> = results
        .iter()
        .filter_map(|(v, f)| Some((v.name.as_str(), f.bulk?)))
        .collect();
    if let Some(&(_, first)) = bulks.first() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "One connection after the bursts, {} MiB sent and echoed back at once (the data crosses each process once each way); CPU time (user + system, /proc) per GiB each way, ratios to `{}`:",
            args.bulk_mib, bulks[0].0
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| variant | MiB/s each way | client CPU s/GiB | gateway CPU s/GiB | client CPU ratio | gateway CPU ratio |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for (name, b) in &bulks {
            let _ = writeln!(
                out,
                "| {name} | {:.0} | {:.2} | {:.2} | {:.2}× | {:.2}× |",
                b.mib_per_sec,
                b.client_cpu_per_gib,
                b.gateway_cpu_per_gib,
                b.client_cpu_per_gib / first.client_cpu_per_gib,
                b.gateway_cpu_per_gib / first.gateway_cpu_per_gib,
            );
        }
    }
    for (variant, f) in results {
        if let Some(e) = &f.first_error {
            let _ = writeln!(out, "\n{}: first error: {e}", variant.name);
        }
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.tunnels > 0 && args.connections > 0 && args.bursts > 0);
    let variants = args
        .variants
        .iter()
        .map(|v| parse_variant(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The harness holds one socket per connection and the echo another; the children inherit
    // the raised limit (the client and the gateway hold two per connection each).
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    ensure!(
        limit >= 3 * args.connections as u64 + 256,
        "RLIMIT_NOFILE is {limit}, too low for {} connections",
        args.connections
    );
    let world = World::start(args.tunnels, args.plain).await?;
    let mut results = Vec::new();
    for variant in variants {
        let figures = measure(&args, &world, &variant)
            .await
            .with_context(|| format!("variant {}", variant.name))?;
        results.push((variant, figures));
    }
    print!("{}", report(&args, &results));
    let errors: usize = results.iter().map(|(_, f)| f.errors).sum();
    ensure!(errors == 0, "{errors} connection errors");
    Ok(())
}
