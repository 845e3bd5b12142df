//! The world on loopback: the origin, the baseline relay, the real gateway once plain (ws) and
//! once with TLS (wss), and real tunnels (`TunnelHandle`, the code a user's kubectl goes
//! through) whose clusters come from an inventory parsed by the real inventory parser.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_tunnels::discovery::file;
use k8s_tunnels::gateway::{
    ApplicationConfig, Claims, Gateway, GatewayConfig, GatewayHandle, Origin, SecretSource,
    TextSource, TlsConfig, TokenIssuer,
};
use k8s_tunnels::lab::pki::LabCa;
use k8s_tunnels::secret::Secret;
use k8s_tunnels::tunnel::carrier::Edge;
use k8s_tunnels::tunnel::health::{ProbeSchedule, TunnelState};
use k8s_tunnels::tunnel::{TunnelHandle, TunnelSpec};
use tokio::net::TcpListener;

use super::origin::{self, Server};

/// The API endpoint every bench cluster names; the SOCKS CONNECT goes to it (the gateway's
/// origin is fixed, so it only has to pass the listener's destination check).
const API_HOST: &str = "origin.bench";
const API_PORT: u16 = 6443;
const AUD: &str = "bench-aud";

/// One way from the client to the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum RowKind {
    /// Direct loopback TCP relay (the baseline).
    Relay,
    /// Tunnel over plain WebSocket, `tcp` origin.
    Ws,
    /// Tunnel over WebSocket + TLS, `tcp` origin.
    Wss,
    /// Tunnel over plain WebSocket, `socks` origin (SOCKS5 inside the stream).
    WsSocks,
    /// Tunnel over WebSocket + TLS, `socks` origin.
    WssSocks,
    /// websocat 1.x as both ends over plain WebSocket (client `tcp-l:` → `ws://`, server
    /// `ws-l:` → `tcp:`): the reference a ws tunnel is held against. Needs `websocat` on PATH
    /// (or `WEBSOCAT`); `scripts/bench` installs it from crates.io.
    Websocat,
}

impl RowKind {
    /// The row's label in the report.
    pub fn label(self) -> &'static str {
        match self {
            RowKind::Relay => "relay (baseline)",
            RowKind::Ws => "ws, tcp origin",
            RowKind::Wss => "wss, tcp origin",
            RowKind::WsSocks => "ws, socks origin",
            RowKind::WssSocks => "wss, socks origin",
            RowKind::Websocat => "websocat ws (reference)",
        }
    }

    fn cluster_name(self) -> &'static str {
        match self {
            RowKind::Relay => "relay",
            RowKind::Ws => "bench-ws",
            RowKind::Wss => "bench-wss",
            RowKind::WsSocks => "bench-ws-socks",
            RowKind::WssSocks => "bench-wss-socks",
            RowKind::Websocat => "websocat",
        }
    }

    fn tls(self) -> bool {
        matches!(self, RowKind::Wss | RowKind::WssSocks)
    }

    fn socks_origin(self) -> bool {
        matches!(self, RowKind::WsSocks | RowKind::WssSocks)
    }
}

/// The local SOCKS5 login and destination of a tunnel row.
#[derive(Clone, Debug)]
pub struct SocksLogin {
    /// Username.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// CONNECT host.
    pub host: String,
    /// CONNECT port.
    pub port: u16,
}

/// Where a row's client connects, and whether it speaks SOCKS5 first.
#[derive(Clone, Debug)]
pub struct Route {
    /// Which row.
    pub kind: RowKind,
    /// The relay's or the tunnel's local port.
    pub entry: SocketAddr,
    /// `Some` for tunnel rows.
    pub socks: Option<SocksLogin>,
}

/// Everything running for the benchmark; dropping it stops it all.
pub struct World {
    /// The routes, in the order asked for.
    pub routes: Vec<Route>,
    /// The tunnels, by row, to read their counters.
    pub tunnels: Vec<(RowKind, TunnelHandle)>,
    _gateways: Vec<GatewayHandle>,
    _relay: Server,
    _origin: Server,
    _websocat: Vec<Killed>,
}

impl World {
    /// Starts everything `kinds` needs under `dir` (certificates, token, inventory).
    pub async fn start(dir: &Path, kinds: &[RowKind]) -> anyhow::Result<Self> {
        let origin = origin::start_origin()
            .await
            .context("starting the origin")?;
        let relay = origin::start_relay(origin.addr())
            .await
            .context("starting the relay")?;

        let ca = LabCa::new("k8s-tunnels bench CA").context("making the bench CA")?;
        let issuer = TokenIssuer::generate().context("making the token issuer")?;
        let token = issuer
            .mint(&Claims::for_user(
                AUD,
                "bench@k8s-tunnels.lab",
                Duration::from_secs(12 * 3600),
            ))
            .context("minting the Access token")?;
        let token_file = dir.join("access-token");
        std::fs::write(&token_file, token.expose()).context("writing the token file")?;
        let ca_file = dir.join("edge-ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).context("writing the edge CA")?;

        let plain = start_gateway(&issuer, origin.addr(), None).await?;
        let cert = ca
            .issue(&["tcp.bench", "socks.bench"])
            .context("issuing the gateway certificate")?;
        let tls = start_gateway(
            &issuer,
            origin.addr(),
            Some(TlsConfig {
                cert: TextSource::Inline(cert.cert_pem),
                key: SecretSource::Value(Secret::new(cert.key_pem)),
            }),
        )
        .await?;

        let tunnel_kinds: Vec<RowKind> = kinds
            .iter()
            .copied()
            .filter(|k| !matches!(k, RowKind::Relay | RowKind::Websocat))
            .collect();
        let inventory = inventory_yaml(
            &tunnel_kinds,
            plain.local_addr(),
            tls.local_addr(),
            &token_file,
            &ca_file,
        );
        let inventory_path = dir.join("inventory.yaml");
        std::fs::write(&inventory_path, &inventory).context("writing the inventory")?;
        let clusters =
            file::parse(&inventory, &inventory_path).context("parsing the bench inventory")?;

        let username = "bench".to_string();
        let password = Secret::random(32);
        let mut tunnels = Vec::new();
        let mut routes = Vec::new();
        let mut websocat = Vec::new();
        for kind in kinds {
            if *kind == RowKind::Websocat {
                let (entry, children) = start_websocat(origin.addr()).await?;
                websocat = children;
                routes.push(Route {
                    kind: *kind,
                    entry,
                    socks: None,
                });
                continue;
            }
            if *kind == RowKind::Relay {
                routes.push(Route {
                    kind: *kind,
                    entry: relay.addr(),
                    socks: None,
                });
                continue;
            }
            let cluster = clusters
                .iter()
                .find(|c| c.name == kind.cluster_name())
                .with_context(|| format!("cluster {} missing", kind.cluster_name()))?
                .clone();
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .context("binding a tunnel port")?;
            let edge = Edge::for_cluster(&cluster, &Default::default())
                .with_context(|| format!("the {} tunnel's edge", kind.cluster_name()))?;
            let handle = TunnelHandle::start(
                TunnelSpec {
                    cluster,
                    listener,
                    username: username.clone(),
                    password: password.clone(),
                    // The origin is an echo server, not an API server.
                    schedule: ProbeSchedule {
                        api: false,
                        ..ProbeSchedule::default()
                    },
                    keepalive: k8s_tunnels::tunnel::keepalive::Keepalive::default(),
                    access: None,
                    reclaim: Default::default(),
                },
                edge,
                |_| {},
            );
            wait_up(&handle).await?;
            routes.push(Route {
                kind: *kind,
                entry: handle.local_addr(),
                socks: Some(SocksLogin {
                    username: username.clone(),
                    password: password.clone(),
                    host: API_HOST.into(),
                    port: API_PORT,
                }),
            });
            tunnels.push((*kind, handle));
        }
        Ok(Self {
            routes,
            tunnels,
            _gateways: vec![plain, tls],
            _relay: relay,
            _origin: origin,
            _websocat: websocat,
        })
    }
}

/// A child process killed on drop.
pub struct Killed(tokio::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// websocat's server (`ws-l:` → the origin) and client (`tcp-l:` → the server); returns the
/// client's local port.
async fn start_websocat(origin: SocketAddr) -> anyhow::Result<(SocketAddr, Vec<Killed>)> {
    let bin = std::env::var_os("WEBSOCAT")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|p| p.join("websocat"))
                .find(|p| p.is_file())
        })
        .context(
            "the websocat row needs websocat on PATH or in WEBSOCAT (cargo install websocat)",
        )?;
    let free = || -> anyhow::Result<SocketAddr> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    };
    let (server, client) = (free()?, free()?);
    let spawn = |args: Vec<String>| -> anyhow::Result<Killed> {
        let child = tokio::process::Command::new(&bin)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Killed(child))
    };
    let children = vec![
        spawn(vec![
            "--binary".into(),
            format!("ws-l:{server}"),
            format!("tcp:{origin}"),
        ])?,
        spawn(vec![
            "--binary".into(),
            format!("tcp-l:{client}"),
            format!("ws://{server}/"),
        ])?,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in [server, client] {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            ensure!(
                Instant::now() < deadline,
                "websocat did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok((client, children))
}

async fn start_gateway(
    issuer: &TokenIssuer,
    origin: SocketAddr,
    tls: Option<TlsConfig>,
) -> anyhow::Result<GatewayHandle> {
    let mut config = GatewayConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.jwks = Some(TextSource::Inline(issuer.jwks_json()));
    config.tls = tls;
    // Every connection of the benchmark comes from loopback: one address for all of them.
    config.limits.max_connections_per_client = config.limits.max_connections;
    let target = Origin::Tcp {
        host: origin.ip().to_string(),
        port: origin.port(),
    };
    config
        .applications
        .push(ApplicationConfig::new("tcp.bench", AUD, target.clone()));
    let mut socks = ApplicationConfig::new("socks.bench", AUD, target);
    socks.socks = true;
    config.applications.push(socks);
    Gateway::start(config).await.context("starting the gateway")
}

/// The inventory a user would write for these clusters; plain ws needs a loopback `connect_to`.
fn inventory_yaml(
    kinds: &[RowKind],
    plain: SocketAddr,
    tls: SocketAddr,
    token_file: &Path,
    ca_file: &Path,
) -> String {
    let mut text = String::from("clusters:\n");
    for kind in kinds {
        let app = if kind.socks_origin() { "socks" } else { "tcp" };
        let (hostname, gateway, edge_ca) = if kind.tls() {
            (
                format!("{app}.bench"),
                tls,
                format!("      ca_file: {}\n", ca_file.display()),
            )
        } else {
            (format!("ws://{app}.bench"), plain, String::new())
        };
        text.push_str(&format!(
            "  - name: {name}\n    cloud: onprem\n    environment: bench\n    \
             server: https://{API_HOST}:{API_PORT}\n    access:\n      hostname: {hostname}\n      \
             origin: {app}\n      connect_to: {gateway}\n{edge_ca}      token: {{ file: {token} }}\n    \
             user:\n      tokenFile: /dev/null\n",
            name = kind.cluster_name(),
            token = token_file.display(),
        ));
    }
    text
}

/// Waits for the tunnel's first probe to find the edge up, so no row is measured while the
/// health probe is still connecting.
async fn wait_up(handle: &TunnelHandle) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = handle.health();
        match health.state {
            TunnelState::Up => return Ok(()),
            TunnelState::Down | TunnelState::ApiDown | TunnelState::LoginRequired => bail!(
                "tunnel {} is {}: {}",
                handle.cluster().name,
                health.state,
                health.reason.unwrap_or_default()
            ),
            TunnelState::Connecting | TunnelState::Checking => {}
        }
        ensure!(
            Instant::now() < deadline,
            "tunnel {} still connecting after 10 s",
            handle.cluster().name
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
