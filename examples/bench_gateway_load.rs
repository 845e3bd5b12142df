//! The gateway under load (issue 16): the release gateway binary on loopback, flooded the ways
//! a client can without logging in, while authenticated streams are probed all along.
//!
//! For each build given (`--variant name=dir`, `dir` holding a release `k8s-tunnels-gateway`),
//! it starts the binary with TLS, one `tcp://` application (an echo origin in this process) and
//! an `access:` section, its limits left at their defaults, then runs these phases one after
//! another, each bounded:
//!
//! 1. `quiet`: nothing but the probes, for the baseline;
//! 2. `idle flood`: `--idle` TCP connections (20 000) opened from `--sources` loopback
//!    addresses, as fast as the workers can, and held without a byte for `--hold-secs`;
//! 3. `slow handshakes`: `--slow` connections each sending a real TLS ClientHello one byte
//!    every `--slow-byte-ms`, each opened again `--slow-reopen-ms` after the gateway closed it;
//! 4. `metadata flood`: `--metadata-clients` kept-alive TLS connections asking for the signed
//!    `cf-access-metadata` answer as fast as they can;
//! 5. `after`: the probes again, once the load has stopped.
//!
//! The floods run in worker processes (this program again, `--worker`), so their descriptors,
//! memory and CPU are theirs. All along, this process opens a new authenticated stream every
//! `--probe-ms` (TCP, TLS, upgrade with a token, one echo) and sends one echo through a
//! stream opened before the floods; it reads the gateway's RSS, descriptors and threads from
//! /proc four times a second and its CPU time per phase. The report gives each phase's figures
//! per build, and their ratios to the first build's where a comparison is made.
//!
//! ```text
//! scripts/bench gateway-load                    # this tree's gateway
//! BENCH_BASE=<ref> scripts/bench gateway-load   # also the build of <ref>, measured first
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use k8s_tunnels::gateway::{Claims, TokenIssuer};
use k8s_tunnels::lab::pki::LabCa;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[path = "bench_support/process.rs"]
mod process;
use process::{Proc, Reading, cpu_secs, free_port, mb, read_process, ticks_per_sec};

const APP: &str = "tcp.load.test";
const AUD: &str = "aud-load";
const AUTH_DOMAIN: &str = "load.cloudflareaccess.com";

#[derive(Parser, Debug)]
#[command(about = "The gateway binary under floods on loopback, with authenticated streams probed")]
struct Args {
    /// A build to measure: `name=dir`, `dir` holding its release `k8s-tunnels-gateway`.
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// Idle connections of the idle flood.
    #[arg(long, default_value_t = 20_000)]
    idle: usize,
    /// Seconds the idle flood holds its connections once they are open.
    #[arg(long, default_value_t = 15)]
    hold_secs: u64,
    /// Slow-handshake connections open at once.
    #[arg(long, default_value_t = 4000)]
    slow: usize,
    /// Milliseconds between two bytes of a slow handshake.
    #[arg(long, default_value_t = 200)]
    slow_byte_ms: u64,
    /// Seconds of the slow-handshake flood.
    #[arg(long, default_value_t = 20)]
    slow_secs: u64,
    /// Milliseconds before a slow-handshake connection the gateway closed is opened again.
    #[arg(long, default_value_t = 1000)]
    slow_reopen_ms: u64,
    /// Kept-alive connections of the metadata flood.
    #[arg(long, default_value_t = 32)]
    metadata_clients: usize,
    /// Seconds of the metadata flood.
    #[arg(long, default_value_t = 10)]
    metadata_secs: u64,
    /// Loopback addresses (127.1.x.y) the floods come from, spread over the workers.
    #[arg(long, default_value_t = 100)]
    sources: usize,
    /// Worker processes per flood.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Milliseconds between two probes.
    #[arg(long, default_value_t = 250)]
    probe_ms: u64,
    /// Seconds of the quiet and after phases, and of settling between phases.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Run as a flood worker (internal: the JSON of a `Job`).
    #[arg(long, hide = true)]
    worker: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Workers

/// What a worker process floods with.
#[derive(Serialize, Deserialize, Debug, Clone)]
enum Flood {
    /// Connect, then say nothing.
    Idle { count: usize, hold_secs: u64 },
    /// Connect, send a ClientHello a byte at a time; connect again when closed.
    Slow {
        count: usize,
        byte_ms: u64,
        reopen_ms: u64,
        secs: u64,
    },
    /// Ask for the metadata answer over kept-alive connections.
    Metadata { clients: usize, secs: u64 },
}

/// One worker's job.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Job {
    flood: Flood,
    gateway: SocketAddr,
    sources: Vec<Ipv4Addr>,
    ca_pem: PathBuf,
}

/// What a worker saw.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
struct Outcome {
    /// Connections the kernel accepted.
    opened: u64,
    /// Connect calls that failed.
    connect_failed: u64,
    /// Connections the gateway closed with a FIN (timed out, or closed to make room).
    closed: u64,
    /// Connections the gateway reset (refused at accept).
    reset: u64,
    /// Connections still open at the end.
    held: u64,
    /// Metadata answers received (200 with the header).
    answers: u64,
    /// Requests that failed.
    errors: u64,
    /// Seconds from the first connect to the last one opened (idle flood).
    open_secs: f64,
}

impl Outcome {
    fn add(&mut self, o: &Outcome) {
        self.opened += o.opened;
        self.connect_failed += o.connect_failed;
        self.closed += o.closed;
        self.reset += o.reset;
        self.held += o.held;
        self.answers += o.answers;
        self.errors += o.errors;
        self.open_secs = self.open_secs.max(o.open_secs);
    }
}

#[derive(Default)]
struct Counters {
    outcome: Mutex<Outcome>,
}

impl Counters {
    fn with(&self, f: impl FnOnce(&mut Outcome)) {
        f(&mut k8s_tunnels::sync::lock(&self.outcome));
    }
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Waits for the gateway to close `stream`; `true` for a reset.
async fn until_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

async fn idle_flood(job: &Job, count: usize, hold_secs: u64) -> Outcome {
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let opening = Arc::new(tokio::sync::Semaphore::new(512));
    let last_open = Arc::new(Mutex::new(started));
    let (release, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (counters, opening, last_open) = (counters.clone(), opening.clone(), last_open.clone());
        let source = job.sources[i % job.sources.len()];
        let gateway = job.gateway;
        let mut released = release.subscribe();
        tasks.spawn(async move {
            let permit = opening.acquire_owned().await;
            let mut stream = match connect_from(source, gateway).await {
                Ok(stream) => stream,
                // Reset before `connect` returned: refused at accept.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return counters.with(|o| {
                        o.opened += 1;
                        o.reset += 1;
                    });
                }
                Err(_) => return counters.with(|o| o.connect_failed += 1),
            };
            drop(permit);
            *k8s_tunnels::sync::lock(&last_open) = Instant::now();
            counters.with(|o| o.opened += 1);
            tokio::select! {
                reset = until_closed(&mut stream) => counters.with(|o| if reset { o.reset += 1 } else { o.closed += 1 }),
                _ = released.recv() => counters.with(|o| o.held += 1),
            }
        });
    }
    // Hold from when every connect has been tried (each within its 10 s limit).
    loop {
        let tried = {
            let o = k8s_tunnels::sync::lock(&counters.outcome);
            o.opened + o.connect_failed
        };
        if tried as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_secs = (*k8s_tunnels::sync::lock(&last_open) - started).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let _ = release.send(());
    while tasks.join_next().await.is_some() {}
    let mut outcome = *k8s_tunnels::sync::lock(&counters.outcome);
    outcome.open_secs = open_secs;
    outcome
}

/// The bytes of a real TLS 1.3 ClientHello for the application's name.
fn client_hello(ca_pem: &Path) -> anyhow::Result<Vec<u8>> {
    let config = k8s_tunnels::tls::client_config(Some(&std::fs::read(ca_pem)?))?;
    let name = rustls_pki_types::ServerName::try_from(APP)?.to_owned();
    let mut conn = rustls::ClientConnection::new(config, name)?;
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello)?;
    }
    Ok(hello)
}

async fn slow_flood(
    job: &Job,
    count: usize,
    byte_ms: u64,
    reopen_ms: u64,
    secs: u64,
) -> anyhow::Result<Outcome> {
    let hello = Arc::new(client_hello(&job.ca_pem)?);
    let counters = Arc::new(Counters::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (counters, hello) = (counters.clone(), hello.clone());
        let source = job.sources[i % job.sources.len()];
        let gateway = job.gateway;
        tasks.spawn(async move {
            // Spread the first connects over the first second.
            tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / count as u64)).await;
            while tokio::time::Instant::now() < deadline {
                let stream = tokio::select! {
                    s = connect_from(source, gateway) => s,
                    () = tokio::time::sleep_until(deadline) => break,
                };
                let mut stream = match stream {
                    Ok(s) => s,
                    // Reset before `connect` returned: refused at accept.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        counters.with(|o| o.reset += 1);
                        tokio::time::sleep(Duration::from_millis(reopen_ms)).await;
                        continue;
                    }
                    Err(_) => {
                        counters.with(|o| o.connect_failed += 1);
                        tokio::time::sleep(Duration::from_millis(reopen_ms)).await;
                        continue;
                    }
                };
                counters.with(|o| o.opened += 1);
                let (mut read, mut write) = stream.split();
                let trickle = async {
                    for byte in hello.iter() {
                        if write.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(byte_ms)).await;
                    }
                    std::future::pending::<()>().await;
                };
                let closed = async {
                    let mut buf = [0u8; 256];
                    loop {
                        match read.read(&mut buf).await {
                            Ok(0) => return false,
                            Ok(_) => {}
                            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
                        }
                    }
                };
                tokio::select! {
                    () = trickle => {}
                    reset = closed => counters.with(|o| if reset { o.reset += 1 } else { o.closed += 1 }),
                    () = tokio::time::sleep_until(deadline) => counters.with(|o| o.held += 1),
                }
                tokio::time::sleep(Duration::from_millis(reopen_ms)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(*k8s_tunnels::sync::lock(&counters.outcome))
}

async fn metadata_flood(job: &Job, clients: usize, secs: u64) -> anyhow::Result<Outcome> {
    let counters = Arc::new(Counters::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let ca = std::fs::read(&job.ca_pem)?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        // One client (one kept-alive connection) per task, each from its own source address.
        let client = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca)?)
            .resolve(APP, job.gateway)
            .local_address(IpAddr::V4(job.sources[i % job.sources.len()]))
            .pool_max_idle_per_host(1)
            .no_proxy()
            .build()?;
        let url = format!("https://{APP}:{}/", job.gateway.port());
        let counters = counters.clone();
        tasks.spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let answer = client
                    .head(&url)
                    .header("cf-access-metadata-request", "true")
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.headers().contains_key("cf-access-metadata") => {
                        counters.with(|o| o.answers += 1)
                    }
                    _ => counters.with(|o| o.errors += 1),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(*k8s_tunnels::sync::lock(&counters.outcome))
}

async fn run_worker(spec: &str) -> anyhow::Result<()> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let job: Job = serde_json::from_str(spec)?;
    let outcome = match job.flood.clone() {
        Flood::Idle { count, hold_secs } => idle_flood(&job, count, hold_secs).await,
        Flood::Slow {
            count,
            byte_ms,
            reopen_ms,
            secs,
        } => slow_flood(&job, count, byte_ms, reopen_ms, secs).await?,
        Flood::Metadata { clients, secs } => metadata_flood(&job, clients, secs).await?,
    };
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The gateway process and what it uses

async fn start_echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The files one gateway run needs.
struct Files {
    config: PathBuf,
    ca_pem: PathBuf,
    ca: String,
    token: String,
}

fn write_files(dir: &Path, gateway: SocketAddr, echo: SocketAddr) -> anyhow::Result<Files> {
    std::fs::create_dir_all(dir)?;
    let ca = LabCa::new("k8s-tunnels gateway load bench CA")?;
    let cert = ca.issue(&[APP, AUTH_DOMAIN, "login.cloudflareaccess.org"])?;
    let issuer = TokenIssuer::generate()?;
    let path = |name: &str| dir.join(name);
    std::fs::write(path("tls.crt"), &cert.cert_pem)?;
    std::fs::write(path("tls.key"), &cert.key_pem)?;
    std::fs::write(path("access-key.pem"), issuer.private_key_pem().expose())?;
    std::fs::write(path("ca.pem"), ca.cert_pem())?;
    // Limits are left at their defaults: what is measured is the gateway as shipped.
    let config = json!({
        "listen": gateway.to_string(),
        "tls": {"cert": {"file": path("tls.crt")}, "key": {"file": path("tls.key")}},
        "applications": [{"hostname": APP, "aud": AUD, "origin": format!("tcp://{echo}")}],
        "access": {"auth_domain": AUTH_DOMAIN, "signing_key": {"file": path("access-key.pem")}},
    });
    std::fs::write(path("gateway.yaml"), serde_norway::to_string(&config)?)?;
    // The login's key opens every application.
    let mut claims = Claims::for_user(AUD, "bench@load.test", Duration::from_secs(86_400));
    claims.iss = Some(format!("https://{AUTH_DOMAIN}"));
    claims.kind = Some("app".into());
    Ok(Files {
        config: path("gateway.yaml"),
        ca_pem: path("ca.pem"),
        ca: ca.cert_pem().to_owned(),
        token: issuer.mint(&claims)?.expose().to_owned(),
    })
}

// ---------------------------------------------------------------------------------------
// Probes

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// What the probes need to open a stream.
#[derive(Clone)]
struct Prober {
    gateway: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

impl Prober {
    async fn open(&self) -> anyhow::Result<Ws> {
        let mut request = format!("wss://{APP}:{}/", self.gateway.port()).into_client_request()?;
        request
            .headers_mut()
            .insert("cf-access-token", self.token.parse()?);
        let tcp = TcpStream::connect(self.gateway).await?;
        tcp.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            None,
            Some(tokio_tungstenite::Connector::Rustls(self.tls.clone())),
        )
        .await?;
        Ok(ws)
    }
}

/// One echo through `ws`.
async fn echo(ws: &mut Ws, payload: &[u8]) -> anyhow::Result<()> {
    ws.send(Message::Binary(payload.to_vec().into())).await?;
    let mut got = Vec::new();
    while got.len() < payload.len() {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the stream closed"),
        }
    }
    ensure!(got == payload, "the echo came back altered");
    Ok(())
}

/// A new stream (TCP, TLS, upgrade, one echo) within 5 s.
async fn probe_new(prober: &Prober) -> anyhow::Result<Duration> {
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut ws = prober.open().await?;
        echo(&mut ws, b"probe").await?;
        let _ = ws.close(None).await;
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("timed out after 5 s")??;
    Ok(started.elapsed())
}

/// The probes' results of one phase.
#[derive(Default, Debug, Clone)]
struct Probes {
    new_ok: Vec<Duration>,
    new_failed: usize,
    first_failure: Option<String>,
    held_ok: Vec<Duration>,
    held_failed: usize,
}

/// The probes' results by phase; the phase now is the last.
#[derive(Default)]
struct ProbeLog {
    phases: Vec<(String, Probes)>,
}

impl ProbeLog {
    fn current(&mut self) -> &mut Probes {
        if self.phases.is_empty() {
            self.phases.push(("-".into(), Probes::default()));
        }
        let last = self.phases.len() - 1;
        &mut self.phases[last].1
    }
}

/// Probes until `stop`: a new stream every `every`, and an echo through one stream held from
/// the start (opened again when it fails).
async fn run_probes(
    prober: Prober,
    every: Duration,
    log: Arc<Mutex<ProbeLog>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let held = {
        let (prober, log, stop) = (prober.clone(), log.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ws: Option<Ws> = None;
            while !stop.is_cancelled() {
                let started = Instant::now();
                let result = tokio::time::timeout(Duration::from_secs(5), async {
                    if ws.is_none() {
                        ws = Some(prober.open().await?);
                    }
                    match ws.as_mut() {
                        Some(stream) => echo(stream, b"held stream").await,
                        None => bail!("no stream"),
                    }
                })
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                {
                    let mut log = k8s_tunnels::sync::lock(&log);
                    match result {
                        Ok(()) => log.current().held_ok.push(started.elapsed()),
                        Err(_) => {
                            log.current().held_failed += 1;
                            ws = None;
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    while !stop.is_cancelled() {
        let result = probe_new(&prober).await;
        {
            let mut log = k8s_tunnels::sync::lock(&log);
            let probes = log.current();
            match result {
                Ok(took) => probes.new_ok.push(took),
                Err(e) => {
                    probes.new_failed += 1;
                    probes
                        .first_failure
                        .get_or_insert_with(|| k8s_tunnels::error_chain(&*e));
                }
            }
        }
        tokio::time::sleep(every).await;
    }
    let _ = held.await;
}

// ---------------------------------------------------------------------------------------
// Phases

/// What one phase measured.
#[derive(Debug, Default, Clone)]
struct Phase {
    name: String,
    secs: f64,
    peak: Reading,
    end: Reading,
    cpu_secs: f64,
    flood: Option<Outcome>,
    probes: Probes,
}

/// What one build measured.
#[derive(Debug, Default)]
struct Figures {
    before: Reading,
    phases: Vec<Phase>,
    after: Reading,
}

struct Run<'a> {
    args: &'a Args,
    pid: u32,
    ticks: f64,
    log: Arc<Mutex<ProbeLog>>,
    figures: Figures,
}

impl Run<'_> {
    /// Runs one phase: `jobs` in worker processes, one each, until they end (none: `secs` of
    /// probing alone), reading the gateway while they run.
    async fn phase(&mut self, name: &str, jobs: Vec<Job>, secs: u64) -> anyhow::Result<()> {
        k8s_tunnels::sync::lock(&self.log)
            .phases
            .push((name.to_owned(), Probes::default()));
        let cpu_before = cpu_secs(self.pid, self.ticks)?;
        let started = Instant::now();
        let mut workers = Vec::new();
        for job in jobs {
            workers.push(
                tokio::process::Command::new(std::env::current_exe()?)
                    .arg("--worker")
                    .arg(serde_json::to_string(&job)?)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting a flood worker")?,
            );
        }
        let no_workers = workers.is_empty();
        let waiting = async {
            if no_workers {
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            let mut outcomes = Vec::new();
            for worker in workers {
                let out = worker.wait_with_output().await?;
                ensure!(out.status.success(), "a flood worker failed");
                outcomes.push(serde_json::from_slice::<Outcome>(&out.stdout)?);
            }
            Ok::<_, anyhow::Error>(outcomes)
        };
        tokio::pin!(waiting);
        let mut peak = Reading::default();
        let outcomes = loop {
            let now = read_process(self.pid)?;
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
            peak.anon_kib = peak.anon_kib.max(now.anon_kib);
            peak.fds = peak.fds.max(now.fds);
            peak.threads = peak.threads.max(now.threads);
            tokio::select! {
                outcomes = &mut waiting => break Some(outcomes?),
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        };
        let flood = outcomes.filter(|o| !o.is_empty()).map(|o| {
            let mut sum = Outcome::default();
            for one in &o {
                sum.add(one);
            }
            sum
        });
        let cpu = cpu_secs(self.pid, self.ticks)? - cpu_before;
        let probes = k8s_tunnels::sync::lock(&self.log)
            .phases
            .last()
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        let phase = Phase {
            name: name.to_owned(),
            secs: started.elapsed().as_secs_f64(),
            peak,
            end: read_process(self.pid)?,
            cpu_secs: cpu,
            flood,
            probes,
        };
        eprintln!(
            "  {name}: {:.0} s, gateway peak {:.1} MB ({:.1} anonymous) / {} fds, CPU {:.1} s, new streams {} ok / {} failed{}",
            phase.secs,
            mb(phase.peak.rss_kib),
            mb(phase.peak.anon_kib),
            phase.peak.fds,
            phase.cpu_secs,
            phase.probes.new_ok.len(),
            phase.probes.new_failed,
            phase
                .flood
                .map_or_else(String::new, |f| format!(", flood {f:?}"))
        );
        self.figures.phases.push(phase);
        // Settle, probes still counted into this phase's successor ("settling" is not shown).
        k8s_tunnels::sync::lock(&self.log)
            .phases
            .push(("settling".to_owned(), Probes::default()));
        tokio::time::sleep(Duration::from_secs(self.args.settle)).await;
        Ok(())
    }
}

fn split(sources: &[Ipv4Addr], workers: usize, i: usize) -> Vec<Ipv4Addr> {
    sources
        .iter()
        .enumerate()
        .filter(|(n, _)| n % workers == i)
        .map(|(_, a)| *a)
        .collect()
}

async fn measure(args: &Args, name: &str, dir: &Path, work: &Path) -> anyhow::Result<Figures> {
    let echo = start_echo().await?;
    let gateway_addr = free_port()?;
    let run_dir = work.join(name);
    let files = write_files(&run_dir, gateway_addr, echo)?;
    let gateway = Proc(
        Command::new(dir.join("k8s-tunnels-gateway"))
            .arg("--config")
            .arg(&files.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(run_dir.join("gateway.log"))?)
            .spawn()
            .context("starting the gateway")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(gateway_addr).await.is_err() {
        ensure!(Instant::now() < deadline, "the gateway did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = gateway.0.id();
    let prober = Prober {
        gateway: gateway_addr,
        tls: k8s_tunnels::tls::client_config(Some(files.ca.as_bytes()))?,
        token: files.token.clone(),
    };
    probe_new(&prober).await.context("the first stream")?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let sources: Vec<Ipv4Addr> = (0..args.sources)
        .map(|i| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
        .collect();
    let log = Arc::new(Mutex::new(ProbeLog::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut run = Run {
        args,
        pid,
        ticks: ticks_per_sec()?,
        log: log.clone(),
        figures: Figures {
            before: read_process(pid)?,
            ..Figures::default()
        },
    };
    let probes = tokio::spawn(run_probes(
        prober,
        Duration::from_millis(args.probe_ms),
        log.clone(),
        stop.clone(),
    ));
    let per_worker = |n: usize| n.div_ceil(args.workers);
    // One job per worker, each with its own share of the source addresses.
    let jobs = |flood: Flood| -> Vec<Job> {
        (0..args.workers)
            .map(|i| Job {
                flood: flood.clone(),
                gateway: gateway_addr,
                sources: split(&sources, args.workers, i),
                ca_pem: files.ca_pem.clone(),
            })
            .collect()
    };
    run.phase("quiet", Vec::new(), args.settle).await?;
    run.phase(
        "idle flood",
        jobs(Flood::Idle {
            count: per_worker(args.idle),
            hold_secs: args.hold_secs,
        }),
        0,
    )
    .await?;
    run.phase(
        "slow handshakes",
        jobs(Flood::Slow {
            count: per_worker(args.slow),
            byte_ms: args.slow_byte_ms,
            reopen_ms: args.slow_reopen_ms,
            secs: args.slow_secs,
        }),
        0,
    )
    .await?;
    run.phase(
        "metadata flood",
        jobs(Flood::Metadata {
            clients: per_worker(args.metadata_clients),
            secs: args.metadata_secs,
        }),
        0,
    )
    .await?;
    run.phase("after", Vec::new(), args.settle).await?;
    stop.cancel();
    let _ = probes.await;
    run.figures.after = read_process(pid)?;
    ensure!(
        gateway_running(pid),
        "the gateway exited (see {})",
        run_dir.join("gateway.log").display()
    );
    drop(gateway);
    Ok(run.figures)
}

fn gateway_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(spec) = &args.worker {
        return runtime.block_on(run_worker(spec));
    }
    runtime.block_on(orchestrate(&args))
}

async fn orchestrate(args: &Args) -> anyhow::Result<()> {
    ensure!(
        !args.variants.is_empty(),
        "give at least one --variant name=dir"
    );
    ensure!(args.workers > 0 && args.sources >= args.workers);
    rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let work = tempfile::tempdir()?;
    let mut results = Vec::new();
    for variant in &args.variants {
        let (name, dir) = variant
            .split_once('=')
            .with_context(|| format!("--variant {variant}: expected name=dir"))?;
        let dir = PathBuf::from(dir);
        ensure!(
            dir.join("k8s-tunnels-gateway").is_file(),
            "--variant {variant}: no k8s-tunnels-gateway in {}",
            dir.display()
        );
        eprintln!("== {name}");
        let figures = measure(args, name, &dir, work.path())
            .await
            .with_context(|| format!("variant {name}"))?;
        results.push((name.to_owned(), figures));
    }
    print!("{}", report(args, &results));
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

fn report(args: &Args, results: &[(String, Figures)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- machine: {} cores, load {}; floods from {} loopback addresses in {} worker processes; a new authenticated stream every {} ms and an echo through a held one as often",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        args.sources,
        args.workers,
        args.probe_ms
    );
    let _ = writeln!(
        out,
        "- phases: quiet {} s; idle flood: {} connections opened then held {} s; slow handshakes: {} connections trickling a ClientHello a byte every {} ms for {} s, each reopened {} ms after the gateway closed it; metadata flood: {} kept-alive clients for {} s; after: {} s once the load stopped",
        args.settle,
        args.idle,
        args.hold_secs,
        args.slow,
        args.slow_byte_ms,
        args.slow_secs,
        args.slow_reopen_ms,
        args.metadata_clients,
        args.metadata_secs,
        args.settle
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| build | phase | s | gateway RSS peak / end MB | fds peak | threads peak | gateway CPU s (% of a core) | flood: opened / closed by the gateway (FIN / reset) / open at the end (the flood's view) | new streams ok / failed | new stream p50 / p99 / max ms | held-stream echoes ok / failed, max ms |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    for (name, f) in results {
        let _ = writeln!(
            out,
            "| {name} | before | | {:.1} | {} | {} | | | | | |",
            mb(f.before.rss_kib),
            f.before.fds,
            f.before.threads
        );
        for p in &f.phases {
            let mut new = p.probes.new_ok.clone();
            new.sort();
            let held_max = p
                .probes
                .held_ok
                .iter()
                .max()
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            let flood = p.flood.map_or_else(
                || "–".to_owned(),
                |o| {
                    if o.answers > 0 || o.errors > 0 {
                        format!(
                            "{} answers ({:.0}/s), {} errors",
                            o.answers,
                            o.answers as f64 / p.secs,
                            o.errors
                        )
                    } else {
                        format!(
                            "{}{} / {} / {} / {}{}",
                            o.opened,
                            if o.open_secs > 0.0 {
                                format!(" (in {:.1} s)", o.open_secs)
                            } else {
                                String::new()
                            },
                            o.closed,
                            o.reset,
                            o.held,
                            if o.connect_failed > 0 {
                                format!(" ({} connects failed)", o.connect_failed)
                            } else {
                                String::new()
                            }
                        )
                    }
                },
            );
            let _ = writeln!(
                out,
                "| {name} | {} | {:.0} | {:.1} / {:.1} | {} | {} | {:.1} ({:.0} %) | {flood} | {} / {} | {:.1} / {:.1} / {:.1} | {} / {}, {:.1} |",
                p.name,
                p.secs,
                mb(p.peak.rss_kib),
                mb(p.end.rss_kib),
                p.peak.fds,
                p.peak.threads,
                p.cpu_secs,
                p.cpu_secs / p.secs * 100.0,
                p.probes.new_ok.len(),
                p.probes.new_failed,
                percentile(&new, 0.5),
                percentile(&new, 0.99),
                percentile(&new, 1.0),
                p.probes.held_ok.len(),
                p.probes.held_failed,
                held_max,
            );
        }
        let _ = writeln!(
            out,
            "| {name} | settled after | | {:.1} | {} | {} | | | | | |",
            mb(f.after.rss_kib),
            f.after.fds,
            f.after.threads
        );
    }
    if let Some((base, bf)) = results.first()
        && results.len() > 1
    {
        let _ = writeln!(out);
        let _ = writeln!(out, "Ratios to `{base}` (same run):");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| build | RSS peak, idle flood | RSS peak, slow handshakes | gateway CPU per metadata answer | settled RSS after / before |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        let peak = |f: &Figures, phase: &str| {
            f.phases
                .iter()
                .find(|p| p.name == phase)
                .map_or(f64::NAN, |p| p.peak.rss_kib as f64)
        };
        let per_answer = |f: &Figures| {
            f.phases
                .iter()
                .find(|p| p.name == "metadata flood")
                .and_then(|p| Some(p.cpu_secs / p.flood?.answers as f64))
                .unwrap_or(f64::NAN)
        };
        for (name, f) in results {
            let _ = writeln!(
                out,
                "| {name} | {:.2}× | {:.2}× | {:.3}× ({:.0} µs) | {:.2} |",
                peak(f, "idle flood") / peak(bf, "idle flood"),
                peak(f, "slow handshakes") / peak(bf, "slow handshakes"),
                per_answer(f) / per_answer(bf),
                per_answer(f) * 1e6,
                f.after.rss_kib as f64 / f.before.rss_kib as f64,
            );
        }
    }
    for (name, f) in results {
        for p in &f.phases {
            if let Some(e) = &p.probes.first_failure {
                let _ = writeln!(out, "\n{name}, {}: first failed new stream: {e}", p.name);
            }
        }
    }
    out
}
