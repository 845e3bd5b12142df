//! The gateway driven over real TLS WebSockets by a plain tokio-tungstenite client, and the
//! fake Kubernetes API server driven by the real `kubectl`.
#![allow(clippy::unwrap_used)]

mod log_support;
mod ws_peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_tunnels::gateway::{
    ApplicationConfig, Claims, Gateway, GatewayConfig, GatewayHandle, Origin, SecretSource,
    ServiceTokenConfig, TextSource, TlsConfig, TokenIssuer,
};
use k8s_tunnels::lab::pki::LabCa;
use k8s_tunnels::secret::Secret;
use log_support::CapturedLog;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use ws_peer::{PeerBytes, peer_config};

const AUD: &str = "aud-0123456789abcdef";
const SERVICE_ID: &str = "robot.access";
const SERVICE_SECRET: &str = "s3rvice-secret-never-logged";

/// A TCP echo server that counts the connections it accepted.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Echo { addr, accepted }
}

/// The gateway under test with its CA and token issuer.
struct Lab {
    ca: LabCa,
    issuer: TokenIssuer,
    gateway: GatewayHandle,
}

fn tcp_origin(addr: SocketAddr) -> Origin {
    Origin::Tcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

async fn start_lab(apps: Vec<ApplicationConfig>, ping: Option<Duration>) -> Lab {
    start_lab_with(apps, |config| {
        if let Some(ping) = ping {
            config.ping_interval = ping;
        }
    })
    .await
}

/// The lab with `adjust` applied to the gateway's configuration last.
async fn start_lab_with(
    apps: Vec<ApplicationConfig>,
    adjust: impl FnOnce(&mut GatewayConfig),
) -> Lab {
    let ca = LabCa::new("gateway test CA").unwrap();
    let leaf = ca
        .issue(&[
            "tcp.lab.test",
            "socks.lab.test",
            "bastion.lab.test",
            "localhost",
        ])
        .unwrap();
    let issuer = TokenIssuer::generate().unwrap();
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
    config.tls = Some(TlsConfig {
        cert: TextSource::Inline(leaf.cert_pem.clone()),
        key: SecretSource::Value(Secret::new(leaf.key_pem.clone())),
    });
    config.jwks = Some(TextSource::Inline(issuer.jwks_json()));
    config.connect_timeout = Duration::from_secs(2);
    config.applications = apps;
    adjust(&mut config);
    let gateway = Gateway::start(config).await.unwrap();
    Lab {
        ca,
        issuer,
        gateway,
    }
}

fn app(host: &str, origin: Origin) -> ApplicationConfig {
    let mut app = ApplicationConfig::new(host, AUD, origin);
    app.service_tokens.push(ServiceTokenConfig {
        client_id: SERVICE_ID.into(),
        client_secret: SecretSource::Value(Secret::new(SERVICE_SECRET)),
    });
    app
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Lab {
    fn token(&self) -> Secret {
        self.issuer
            .mint(&Claims::for_user(
                AUD,
                "ada@example.com",
                Duration::from_secs(300),
            ))
            .unwrap()
    }

    /// Opens `wss://<host>/` on the gateway with the given extra headers.
    async fn dial(&self, host: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
        let port = self.gateway.local_addr().port();
        let mut request = format!("wss://{host}:{port}/")
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let tcp = TcpStream::connect(self.gateway.local_addr()).await.unwrap();
        let tls = k8s_tunnels::tls::client_config(Some(self.ca.cert_pem().as_bytes())).unwrap();
        tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            Some(peer_config()),
            Some(Connector::Rustls(tls)),
        )
        .await
        .map(|(ws, _)| ws)
    }

    async fn dial_with_token(&self, host: &str) -> Ws {
        let token = self.token();
        self.dial(host, &[("Cf-Access-Token", token.expose())])
            .await
            .expect("an authorised upgrade succeeds")
    }
}

fn refusal(result: Result<Ws, WsError>) -> http::Response<Option<Vec<u8>>> {
    match result {
        Err(WsError::Http(response)) => *response,
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

fn assert_login_redirect(response: &http::Response<Option<Vec<u8>>>, host: &str) {
    assert_eq!(response.status(), http::StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    assert_eq!(url.host_str(), Some(host));
    assert!(
        url.path().starts_with("/cdn-cgi/access/login"),
        "Location {location}"
    );
    assert!(
        location.contains(&format!("kid={AUD}")),
        "Location {location}"
    );
}

async fn round_trip(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    stream.flush().await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(back, payload);
}

#[tokio::test]
async fn tcp_origin_round_trips_bytes_on_several_streams_at_once() {
    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let mut tasks = Vec::new();
    let lab = Arc::new(lab);
    for i in 0..8u8 {
        let lab = lab.clone();
        tasks.push(tokio::spawn(async move {
            // The Host match is case-insensitive, as DNS names are.
            let ws = lab.dial_with_token("TCP.lab.test").await;
            let mut stream = PeerBytes::new(ws);
            let payload: Vec<u8> = (0..200_000u32).map(|n| (n as u8) ^ i).collect();
            round_trip(&mut stream, &payload).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn socks_origin_runs_socks5_in_the_stream_and_ignores_the_requested_address() {
    use fast_socks5::client::{Config, Socks5Stream};
    use fast_socks5::util::target_addr::TargetAddr;
    let echo = echo_server().await;
    let mut socks_app = app("socks.lab.test", tcp_origin(echo.addr));
    socks_app.socks = true;
    let lab = start_lab(vec![socks_app], None).await;
    let started = std::time::Instant::now();
    let ws = lab.dial_with_token("socks.lab.test").await;
    // The fast-socks5 client does not flush its greeting either; without this it would wait
    // for the gateway's next ping.
    let stream = PeerBytes::new(ws);
    let mut socks = Socks5Stream::use_stream(stream, None, Config::default())
        .await
        .expect("NoAuth accepted");
    socks
        .request(
            fast_socks5::Socks5Command::TCPConnect,
            TargetAddr::Domain("kubernetes.default.svc".into(), 443),
        )
        .await
        .expect("CONNECT accepted");
    let mut stream = socks.get_socket();
    round_trip(&mut stream, b"through socks").await;
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
    // Well below the ping interval: no handshake message waited for a ping to be flushed.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bastion_picks_the_destination_and_enforces_the_allow_list() {
    let allowed = echo_server().await;
    let other = echo_server().await;
    let mut bastion = app("bastion.lab.test", Origin::Bastion);
    bastion.allow = Some(vec![format!("127.0.0.1:{}", allowed.addr.port())]);
    let lab = start_lab(vec![bastion], None).await;
    let token = lab.token();

    let dest = allowed.addr.to_string();
    let ws = lab
        .dial(
            "bastion.lab.test",
            &[
                ("Cf-Access-Token", token.expose()),
                ("Cf-Access-Jump-Destination", &dest),
            ],
        )
        .await
        .expect("allowed destination");
    round_trip(&mut PeerBytes::new(ws), b"via bastion").await;
    assert_eq!(allowed.accepted.load(Ordering::SeqCst), 1);

    let refused_dest = other.addr.to_string();
    let response = refusal(
        lab.dial(
            "bastion.lab.test",
            &[
                ("Cf-Access-Token", token.expose()),
                ("Cf-Access-Jump-Destination", &refused_dest),
            ],
        )
        .await,
    );
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(other.accepted.load(Ordering::SeqCst), 0);

    let response = refusal(
        lab.dial("bastion.lab.test", &[("Cf-Access-Token", token.expose())])
            .await,
    );
    assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_bastion_without_an_allow_list_refuses_the_gateways_own_host() {
    let local = echo_server().await;
    let lab = start_lab(vec![app("bastion.lab.test", Origin::Bastion)], None).await;
    let token = lab.token();
    for dest in [
        local.addr.to_string(),
        format!("localhost:{}", local.addr.port()),
        format!("[::ffff:127.0.0.1]:{}", local.addr.port()),
        "169.254.169.254:80".to_string(),
    ] {
        let response = refusal(
            lab.dial(
                "bastion.lab.test",
                &[
                    ("Cf-Access-Token", token.expose()),
                    ("Cf-Access-Jump-Destination", &dest),
                ],
            )
            .await,
        );
        assert_eq!(response.status(), http::StatusCode::FORBIDDEN, "{dest}");
    }
    assert_eq!(local.accepted.load(Ordering::SeqCst), 0);
}

/// A TCP echo server on every interface (0.0.0.0), as the services a bastion must not reach
/// through the gateway host's own addresses.
async fn echo_on_every_interface() -> Echo {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Echo { addr, accepted }
}

/// A non-loopback address of this machine: the source address the kernel picks for a route
/// out (a UDP `connect` sends nothing). Fails loudly on a machine without one.
fn own_interface_address() -> std::net::IpAddr {
    for target in ["192.0.2.1:9", "198.51.100.1:9", "8.8.8.8:53"] {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        if socket.connect(target).is_ok()
            && let Ok(local) = socket.local_addr()
            && !local.ip().is_loopback()
        {
            return local.ip();
        }
    }
    panic!("this test needs a non-loopback interface address and an IPv4 route out");
}

impl Lab {
    /// The status of a bastion upgrade to `dest` with a valid token.
    async fn bastion_status(&self, dest: &str) -> http::StatusCode {
        let token = self.token();
        match self
            .dial(
                "bastion.lab.test",
                &[
                    ("Cf-Access-Token", token.expose()),
                    ("Cf-Access-Jump-Destination", dest),
                ],
            )
            .await
        {
            Ok(_) => http::StatusCode::SWITCHING_PROTOCOLS,
            Err(WsError::Http(response)) => response.status(),
            Err(e) => panic!("{dest}: {e}"),
        }
    }
}

/// Issue 16: what the review found a bastion without an allow-list still reached — the
/// gateway host's own interface address (a service bound to 0.0.0.0), AWS metadata over
/// IPv6, Alibaba's metadata address, loopback as IPv4-compatible IPv6 and through NAT64 — is
/// refused with 403 before anything is dialled.
#[tokio::test]
async fn a_bastion_refuses_the_hosts_own_addresses_and_every_metadata_endpoint() {
    let service = echo_on_every_interface().await;
    let port = service.addr.port();
    let own = own_interface_address();
    let lab = start_lab(vec![app("bastion.lab.test", Origin::Bastion)], None).await;
    for dest in [
        format!("{own}:{port}"),
        format!("[::ffff:{own}]:{port}"),
        format!("[::7f00:1]:{port}"),
        format!("[64:ff9b::7f00:1]:{port}"),
        format!("[::ffff:0:127.0.0.1]:{port}"),
        "[fd00:ec2::254]:80".to_string(),
        "[fd20:ce::254]:80".to_string(),
        "[fd00:c1::a9fe:a9fe]:80".to_string(),
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:80".to_string(),
        "100.100.100.200:80".to_string(),
        format!("0.0.0.0:{port}"),
    ] {
        assert_eq!(
            lab.bastion_status(&dest).await,
            http::StatusCode::FORBIDDEN,
            "{dest}"
        );
    }
    assert_eq!(service.accepted.load(Ordering::SeqCst), 0);
}

/// With an allow-list, a host entry or a `*.suffix` pattern admits a name, but what the name
/// resolves to is checked like any other bastion destination. So is what an exact
/// `host:port` entry naming a host resolves to (issue 16's review: `api.internal:6443` must
/// not be dialled at whatever its DNS answers, 127.0.0.1 here) unless the application opts
/// in with `allow_internal`; an entry that is an IP address reaches that address.
#[tokio::test]
async fn an_allow_list_checks_the_addresses_its_names_resolve_to() {
    let service = echo_server().await;
    let port = service.addr.port();
    let bastion_allowing = |allow: Vec<String>, allow_internal: bool| {
        let mut bastion = app("bastion.lab.test", Origin::Bastion);
        bastion.allow = Some(allow);
        bastion.allow_internal = allow_internal;
        bastion
    };
    let lab = start_lab(
        vec![bastion_allowing(
            vec!["localhost".into(), "*.lab.test".into()],
            false,
        )],
        None,
    )
    .await;
    assert_eq!(
        lab.bastion_status(&format!("localhost:{port}")).await,
        http::StatusCode::FORBIDDEN
    );

    // An exact name, without the opt-in: the name resolves to loopback, which is refused
    // (this was a 101 before the review).
    let lab = start_lab(
        vec![bastion_allowing(vec![format!("localhost:{port}")], false)],
        None,
    )
    .await;
    assert_eq!(
        lab.bastion_status(&format!("localhost:{port}")).await,
        http::StatusCode::FORBIDDEN
    );
    assert_eq!(service.accepted.load(Ordering::SeqCst), 0);

    // The same with the opt-in, and an IP address entry without it, reach the service.
    let lab = start_lab(
        vec![bastion_allowing(vec![format!("localhost:{port}")], true)],
        None,
    )
    .await;
    assert_eq!(
        lab.bastion_status(&format!("localhost:{port}")).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );
    let lab = start_lab(
        vec![bastion_allowing(vec![format!("127.0.0.1:{port}")], false)],
        None,
    )
    .await;
    assert_eq!(
        lab.bastion_status(&format!("127.0.0.1:{port}")).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );
}

/// A `socks` stream whose client never sends its SOCKS5 greeting is closed, and its origin
/// connection with it, once `limits.socks_timeout` has passed.
#[tokio::test]
async fn a_socks_stream_without_its_request_is_closed_after_the_socks_timeout() {
    let (origin_addr, origin_closed) = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 16];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(n);
        });
        (addr, rx)
    };
    let mut socks_app = app("socks.lab.test", tcp_origin(origin_addr));
    socks_app.socks = true;
    let lab = start_lab_with(vec![socks_app], |config| {
        config.limits.socks_timeout = Duration::from_secs(1);
    })
    .await;
    let mut ws = lab.dial_with_token("socks.lab.test").await;
    let started = std::time::Instant::now();
    // The client answers pings (tungstenite does) but says nothing else.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream was still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let n = tokio::time::timeout(Duration::from_secs(2), origin_closed)
        .await
        .expect("the origin connection closed too")
        .unwrap();
    assert_eq!(n, 0, "the origin received bytes");
}

/// A token whose `nbf` is in the future (beyond the clock-skew leeway) is not good yet.
#[tokio::test]
async fn a_token_before_its_not_before_time_is_refused() {
    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let now = jsonwebtoken::get_current_timestamp();
    let token = |nbf: u64| {
        lab.issuer
            .sign(&serde_json::json!({
                "aud": [AUD], "email": "ada@example.com", "sub": "ada",
                "iat": now, "nbf": nbf, "exp": now + 3600,
            }))
            .unwrap()
    };
    let early = token(now + 600);
    assert_login_redirect(
        &refusal(
            lab.dial("tcp.lab.test", &[("Cf-Access-Token", early.expose())])
                .await,
        ),
        "tcp.lab.test",
    );
    let valid = token(now - 5);
    let ws = lab
        .dial("tcp.lab.test", &[("Cf-Access-Token", valid.expose())])
        .await
        .expect("a token past its nbf");
    round_trip(&mut PeerBytes::new(ws), b"nbf").await;
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

/// The status of an upgrade to `tcp.lab.test` with `token`.
async fn token_status(lab: &Lab, token: &Secret) -> http::StatusCode {
    match lab
        .dial("tcp.lab.test", &[("Cf-Access-Token", token.expose())])
        .await
    {
        Ok(_) => http::StatusCode::SWITCHING_PROTOCOLS,
        Err(WsError::Http(response)) => response.status(),
        Err(e) => panic!("{e}"),
    }
}

fn mint(issuer: &TokenIssuer) -> Secret {
    issuer
        .mint(&Claims::for_user(
            AUD,
            "ada@example.com",
            Duration::from_secs(300),
        ))
        .unwrap()
}

/// Key rotation without a restart, step 1: a key added to the JWKS file opens the door with
/// its first token, long before the next periodic read (an unknown `kid` makes the gateway
/// read the file again).
#[tokio::test]
async fn a_key_added_to_the_jwks_file_opens_with_its_first_token() {
    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (old, new) = (
        TokenIssuer::generate().unwrap(),
        TokenIssuer::generate().unwrap(),
    );
    std::fs::write(&jwks, old.jwks_json()).unwrap();
    let lab = start_lab_with(vec![app("tcp.lab.test", tcp_origin(echo.addr))], |config| {
        config.jwks = Some(TextSource::File(jwks.clone()));
        config.jwks_refresh = Duration::from_secs(3600);
    })
    .await;
    let (old_token, new_token) = (mint(&old), mint(&new));
    assert_eq!(
        token_status(&lab, &old_token).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );
    assert_eq!(
        token_status(&lab, &new_token).await,
        http::StatusCode::FOUND
    );

    let both = serde_json::json!({"keys": [old.jwk_set().keys[0], new.jwk_set().keys[0]]});
    std::fs::write(&jwks, both.to_string()).unwrap();
    // An unknown kid has the file read at most once a second: the refusal above was one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        token_status(&lab, &new_token).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );
    assert_eq!(
        token_status(&lab, &old_token).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );
}

/// Key rotation without a restart, step 2: a key withdrawn from the JWKS file stops opening
/// by the next `jwks_refresh`; a file that no longer parses keeps the last good set.
#[tokio::test]
async fn a_key_withdrawn_from_the_jwks_file_stops_opening_at_the_next_refresh() {
    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (old, new) = (
        TokenIssuer::generate().unwrap(),
        TokenIssuer::generate().unwrap(),
    );
    let both = serde_json::json!({"keys": [old.jwk_set().keys[0], new.jwk_set().keys[0]]});
    std::fs::write(&jwks, both.to_string()).unwrap();
    let lab = start_lab_with(vec![app("tcp.lab.test", tcp_origin(echo.addr))], |config| {
        config.jwks = Some(TextSource::File(jwks.clone()));
        config.jwks_refresh = Duration::from_secs(1);
    })
    .await;
    let (old_token, new_token) = (mint(&old), mint(&new));
    assert_eq!(
        token_status(&lab, &old_token).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );

    std::fs::write(&jwks, new.jwks_json()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        token_status(&lab, &old_token).await,
        http::StatusCode::FOUND
    );
    assert_eq!(
        token_status(&lab, &new_token).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );

    std::fs::write(&jwks, "not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        token_status(&lab, &new_token).await,
        http::StatusCode::SWITCHING_PROTOCOLS
    );
}

/// An idle TCP connection from `source` (a loopback address of its own, so the limits count
/// it as its own client) to `to`; `None` when the gateway reset it before `connect` returned
/// (a refusal at accept, on a fast loopback).
async fn idle_from(source: &str, to: SocketAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    match socket.connect(to).await {
        Ok(stream) => Some(stream),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect from {source}: {e}"),
    }
}

/// Whether the gateway closed `stream` within `within` (EOF or a reset, also before
/// `connect` returned).
async fn closed_within(stream: &mut Option<TcpStream>, within: Duration) -> bool {
    let Some(stream) = stream else {
        return true;
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("the gateway sent bytes unasked"),
        Err(_) => false,
    }
}

/// How many of `streams` the gateway closed within `within`.
async fn count_closed(streams: &mut [Option<TcpStream>], within: Duration) -> usize {
    let checks = streams.iter_mut().map(|s| closed_within(s, within));
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .filter(|c| *c)
        .count()
}

/// Issue 16: the overall and per-client connection limits hold — a connection past either
/// is closed at once — and free their places when connections close.
#[tokio::test]
async fn connections_past_the_overall_or_per_client_limit_are_closed_at_once() {
    let echo = echo_server().await;
    let lab = start_lab_with(vec![app("tcp.lab.test", tcp_origin(echo.addr))], |config| {
        config.limits.max_connections = 10;
        config.limits.max_connections_per_client = 4;
        config.limits.max_unauthenticated = 10;
    })
    .await;
    let addr = lab.gateway.local_addr();
    let short = Duration::from_millis(300);
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(idle_from("127.0.0.2", addr).await);
    }
    let mut fifth = idle_from("127.0.0.2", addr).await;
    assert!(
        closed_within(&mut fifth, Duration::from_secs(2)).await,
        "per-client limit"
    );
    assert_eq!(count_closed(&mut first, short).await, 0);
    let mut others = Vec::new();
    for source in [
        "127.0.0.3",
        "127.0.0.3",
        "127.0.0.3",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.4",
    ] {
        others.push(idle_from(source, addr).await);
    }
    let mut eleventh = idle_from("127.0.0.5", addr).await;
    assert!(
        closed_within(&mut eleventh, Duration::from_secs(2)).await,
        "overall limit"
    );
    assert_eq!(count_closed(&mut others, short).await, 0);
    // A stream cannot get in either while the gateway is full...
    let token = lab.token();
    assert!(
        lab.dial("tcp.lab.test", &[("Cf-Access-Token", token.expose())])
            .await
            .is_err()
    );
    // ...and gets in once connections close.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ws = lab.dial_with_token("tcp.lab.test").await;
    round_trip(&mut PeerBytes::new(ws), b"after").await;
}

/// Issue 16: a flood of idle connections from many addresses fills only the unauthenticated
/// pool, whose oldest are closed to make room, so a client's stream still opens during it, and
/// open streams are never closed for room.
#[tokio::test]
async fn a_flood_of_idle_connections_leaves_room_for_streams() {
    let echo = echo_server().await;
    let lab = start_lab_with(vec![app("tcp.lab.test", tcp_origin(echo.addr))], |config| {
        config.limits.max_connections = 200;
        config.limits.max_connections_per_client = 200;
        config.limits.max_unauthenticated = 8;
    })
    .await;
    let addr = lab.gateway.local_addr();
    let mut flood = Vec::new();
    for i in 0..40 {
        flood.push(idle_from(&format!("127.0.1.{}", i % 5 + 1), addr).await);
    }
    // The pool holds 8: the other 32 were closed to make room.
    assert_eq!(count_closed(&mut flood, Duration::from_secs(2)).await, 32);
    let mut open = lab.dial_with_token("tcp.lab.test").await;
    let mut stream = PeerBytes::new(open);
    round_trip(&mut stream, b"during the flood").await;
    let mut more = Vec::new();
    for i in 0..40 {
        more.push(idle_from(&format!("127.0.2.{}", i % 5 + 1), addr).await);
    }
    assert!(count_closed(&mut more, Duration::from_secs(2)).await >= 32);
    // The stream opened during the flood is untouched, and another one opens.
    round_trip(&mut stream, b"still open").await;
    open = lab.dial_with_token("tcp.lab.test").await;
    round_trip(&mut PeerBytes::new(open), b"a second one").await;
}

/// A client that stalls in the TLS handshake, or sends no request after it, is closed at
/// `limits.tls_handshake_timeout` and `limits.request_timeout`.
#[tokio::test]
async fn a_slow_handshake_and_a_missing_request_are_cut_at_their_time_limits() {
    let echo = echo_server().await;
    let lab = start_lab_with(vec![app("tcp.lab.test", tcp_origin(echo.addr))], |config| {
        config.limits.tls_handshake_timeout = Duration::from_secs(1);
        config.limits.request_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = lab.gateway.local_addr();
    // Half a ClientHello record header, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&[0x16, 0x03]).await.unwrap();
    let mut slow = Some(slow);
    let started = std::time::Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(4)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = k8s_tunnels::tls::client_config(Some(lab.ca.cert_pem().as_bytes())).unwrap();
    let name = rustls_pki_types::ServerName::try_from("tcp.lab.test").unwrap();
    let mut silent = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(6), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "still open 6 s after the handshake"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

/// Sends `head` (a request's start line and headers) over a fresh TLS connection and returns
/// the response's status line; `None` when the gateway closed or reset the connection
/// without one.
async fn status_line_for(lab: &Lab, head: &str) -> Option<String> {
    let tcp = TcpStream::connect(lab.gateway.local_addr()).await.unwrap();
    let tls = k8s_tunnels::tls::client_config(Some(lab.ca.cert_pem().as_bytes())).unwrap();
    let name = rustls_pki_types::ServerName::try_from("tcp.lab.test").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    // A gateway that stops reading may reset the connection while it is written to.
    if stream.write_all(head.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return None;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer and no close within 5 s");
    let text = String::from_utf8_lossy(&answer);
    text.split("\r\n")
        .next()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
}

/// Issue 16 review: a request's headers are buffered up to 16 KiB (hyper's default, about
/// 400 KiB, let each unauthenticated connection hold that much for `request_timeout`), and
/// up to 100 of them: past either the request is refused (431, or the connection closed);
/// an ordinary request with a large cookie still passes.
#[tokio::test]
async fn an_oversized_header_block_is_refused_and_a_normal_one_passes() {
    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let request = |headers: &str| {
        format!("GET /cdn-cgi/access/certs HTTP/1.1\r\nHost: tcp.lab.test\r\n{headers}\r\n")
    };
    let cookie = format!("Cookie: CF_Authorization={}\r\n", "a".repeat(8 * 1024));
    assert_eq!(
        status_line_for(&lab, &request(&cookie)).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let large = format!("X-Fill: {}\r\n", "a".repeat(20 * 1024));
    let many: String = (0..150).map(|i| format!("X-Many-{i}: {i}\r\n")).collect();
    for (what, headers) in [("20 KiB of headers", large), ("150 headers", many)] {
        let status = status_line_for(&lab, &request(&headers)).await;
        assert!(
            status
                .as_deref()
                .is_none_or(|s| s.starts_with("HTTP/1.1 431")),
            "{what}: {status:?}"
        );
    }
}

#[tokio::test]
async fn refused_credentials_never_reach_the_origin() {
    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let host = "tcp.lab.test";

    // No token at all.
    assert_login_redirect(&refusal(lab.dial(host, &[]).await), host);

    // Expired well beyond the leeway.
    let now = jsonwebtoken::get_current_timestamp();
    let mut expired = Claims::for_user(AUD, "ada@example.com", Duration::from_secs(0));
    expired.iat = now - 7200;
    expired.exp = now - 3600;
    let token = lab.issuer.mint(&expired).unwrap();
    assert_login_redirect(
        &refusal(lab.dial(host, &[("Cf-Access-Token", token.expose())]).await),
        host,
    );

    // Another application's audience.
    let wrong_aud = Claims::for_user(
        "some-other-app",
        "ada@example.com",
        Duration::from_secs(300),
    );
    let token = lab.issuer.mint(&wrong_aud).unwrap();
    assert_login_redirect(
        &refusal(lab.dial(host, &[("Cf-Access-Token", token.expose())]).await),
        host,
    );

    // Signed by a key the gateway does not trust (even with a plausible kid).
    let stranger = TokenIssuer::generate().unwrap();
    let token = stranger
        .mint(&Claims::for_user(
            AUD,
            "mallory@example.com",
            Duration::from_secs(300),
        ))
        .unwrap();
    assert_login_redirect(
        &refusal(lab.dial(host, &[("Cf-Access-Token", token.expose())]).await),
        host,
    );

    // Garbage in the cookie.
    assert_login_redirect(
        &refusal(
            lab.dial(host, &[("Cookie", "CF_Authorization=not.a.jwt")])
                .await,
        ),
        host,
    );

    // A wrong service-token secret, and an unknown client id: 403.
    let response = refusal(
        lab.dial(
            host,
            &[
                ("Cf-Access-Client-Id", SERVICE_ID),
                ("Cf-Access-Client-Secret", "wrong"),
            ],
        )
        .await,
    );
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    // The body says why, so a client tells "service token rejected" from "login required".
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("service token rejected"), "{body}");
    assert!(!body.contains("wrong"), "{body}");
    let response = refusal(
        lab.dial(
            host,
            &[
                ("Cf-Access-Client-Id", "someone-else"),
                ("Cf-Access-Client-Secret", SERVICE_SECRET),
            ],
        )
        .await,
    );
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);

    // Unknown host.
    let response = refusal(lab.dial("localhost", &[]).await);
    assert_eq!(response.status(), http::StatusCode::NOT_FOUND);

    assert_eq!(
        echo.accepted.load(Ordering::SeqCst),
        0,
        "a refused request reached the origin"
    );

    // The same gateway lets valid credentials through: a JWT in the header, in the cookie,
    // and the service token.
    let token = lab.token();
    let ws = lab.dial(host, &[("Cf-Access-Token", token.expose())]).await;
    round_trip(&mut PeerBytes::new(ws.expect("valid JWT")), b"jwt").await;
    let cookie = format!("theme=dark; CF_Authorization={}", token.expose());
    let ws = lab.dial(host, &[("Cookie", &cookie)]).await;
    round_trip(&mut PeerBytes::new(ws.expect("valid cookie")), b"cookie").await;
    let ws = lab
        .dial(
            host,
            &[
                ("Cf-Access-Client-Id", SERVICE_ID),
                ("Cf-Access-Client-Secret", SERVICE_SECRET),
            ],
        )
        .await;
    round_trip(
        &mut PeerBytes::new(ws.expect("valid service token")),
        b"svc",
    )
    .await;
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn certs_endpoint_serves_the_public_key_set() {
    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let tcp = TcpStream::connect(lab.gateway.local_addr()).await.unwrap();
    let tls = k8s_tunnels::tls::client_config(Some(lab.ca.cert_pem().as_bytes())).unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls_pki_types::ServerName::try_from("tcp.lab.test").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET /cdn-cgi/access/certs HTTP/1.1\r\nHost: tcp.lab.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(body).unwrap();
    assert!(set.find(lab.issuer.kid()).is_some());
}

#[tokio::test]
async fn an_unreachable_origin_is_a_502() {
    // A port that was just free: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(dead))], None).await;
    let token = lab.token();
    let response = refusal(
        lab.dial("tcp.lab.test", &[("Cf-Access-Token", token.expose())])
            .await,
    );
    assert_eq!(response.status(), http::StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn idle_streams_receive_pings() {
    let echo = echo_server().await;
    let lab = start_lab(
        vec![app("tcp.lab.test", tcp_origin(echo.addr))],
        Some(Duration::from_secs(1)),
    )
    .await;
    let mut ws = lab.dial_with_token("tcp.lab.test").await;
    let started = std::time::Instant::now();
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame within 5 s")
        .unwrap()
        .unwrap();
    assert!(matches!(message, Message::Ping(_)), "got {message:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn dropping_the_handle_closes_streams_and_the_port() {
    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let addr = lab.gateway.local_addr();
    let ws = lab.dial_with_token("tcp.lab.test").await;
    let mut stream = PeerBytes::new(ws);
    round_trip(&mut stream, b"before").await;

    let Lab { gateway, .. } = lab;
    drop(gateway);

    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest))
        .await
        .expect("the open stream ends within 3 s of the drop");
    // Either a clean close or a reset: the stream must be over.
    if let Ok(n) = read {
        assert_eq!(n, 0);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) if std::time::Instant::now() > deadline => {
                panic!("the port still accepts 3 s after the drop")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn shutdown_is_bounded_with_open_streams() {
    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let ws = lab.dial_with_token("tcp.lab.test").await;
    let mut stream = PeerBytes::new(ws);
    round_trip(&mut stream, b"open").await;
    let Lab { gateway, .. } = lab;
    assert!(
        gateway.shutdown(Duration::from_secs(3)).await,
        "tasks outlived the bound"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn log_lines_name_the_subject_but_never_a_token_or_secret() {
    let (captured, _guard) = CapturedLog::start();

    let echo = echo_server().await;
    let lab = start_lab(vec![app("tcp.lab.test", tcp_origin(echo.addr))], None).await;
    let token = lab.token();
    let ws = lab
        .dial("tcp.lab.test", &[("Cf-Access-Token", token.expose())])
        .await
        .unwrap();
    let mut stream = PeerBytes::new(ws);
    round_trip(&mut stream, b"logged").await;
    stream.shutdown().await.unwrap();
    drop(stream);
    let ws = lab
        .dial(
            "tcp.lab.test",
            &[
                ("Cf-Access-Client-Id", SERVICE_ID),
                ("Cf-Access-Client-Secret", SERVICE_SECRET),
            ],
        )
        .await
        .unwrap();
    drop(ws);
    let _ = refusal(
        lab.dial(
            "tcp.lab.test",
            &[
                ("Cf-Access-Client-Id", SERVICE_ID),
                ("Cf-Access-Client-Secret", "a-wrong-secret-value"),
            ],
        )
        .await,
    );
    let _ = refusal(
        lab.dial(
            "tcp.lab.test",
            &[("Cookie", "CF_Authorization=cookie-garbage-value")],
        )
        .await,
    );
    // Let the stream tasks finish and log.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = captured.text();
        if text.matches("outcome").count() >= 4 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Lab { gateway, .. } = lab;
    gateway.shutdown(Duration::from_secs(3)).await;

    let text = captured.text();
    assert!(
        text.contains("ada@example.com"),
        "no subject logged:\n{text}"
    );
    assert!(text.contains(SERVICE_ID), "no client id logged:\n{text}");
    assert!(text.contains("bytes_up=6"), "byte counts missing:\n{text}");
    assert!(text.contains("forbidden"), "refusal not logged:\n{text}");
    for secret in [
        token.expose(),
        SERVICE_SECRET,
        "a-wrong-secret-value",
        "cookie-garbage-value",
    ] {
        assert!(!text.contains(secret), "a secret reached the log:\n{text}");
    }
    // The JWT's signature alone must not appear either (e.g. a truncated token).
    let signature = token.expose().rsplit('.').next().unwrap();
    assert!(!text.contains(signature));
}

/// Each stream's log line tells what it really carried and how it ended, also when the client
/// just drops the connection (no close frame: what a killed kubectl does), and a stream opened
/// and closed before a word (the health probe of a `socks` app) is no "refused" line.
#[tokio::test(flavor = "current_thread")]
async fn stream_lines_tell_real_bytes_and_outcomes_and_probes_are_quiet() {
    let (captured, _guard) = CapturedLog::start();
    let echo = echo_server().await;
    let mut socks_app = app("socks.lab.test", tcp_origin(echo.addr));
    socks_app.socks = true;
    let lab = start_lab(
        vec![app("tcp.lab.test", tcp_origin(echo.addr)), socks_app],
        None,
    )
    .await;
    let mut stream = PeerBytes::new(lab.dial_with_token("tcp.lab.test").await);
    round_trip(&mut stream, b"twelve bytes").await;
    // Dropped, not closed: the TCP connection just ends.
    drop(stream);
    // A probe of the socks app: upgrade, then close before any byte.
    let mut probe = PeerBytes::new(lab.dial_with_token("socks.lab.test").await);
    probe.shutdown().await.unwrap();
    drop(probe);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !captured.text().contains("bytes_up=12") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = captured.text();
    let line = text
        .lines()
        .find(|l| l.contains("host=\"tcp.lab.test\"") && l.contains("outcome"))
        .unwrap_or_else(|| panic!("no stream line:\n{text}"));
    assert!(
        line.contains("bytes_up=12") && line.contains("bytes_down=12"),
        "{line}"
    );
    assert!(line.contains("outcome=\"disconnected"), "{line}");
    assert!(
        !text.contains("refused"),
        "a probe logged as refused:\n{text}"
    );
    let Lab { gateway, .. } = lab;
    gateway.shutdown(Duration::from_secs(3)).await;
}

mod fake_apiserver {
    use super::*;
    use k8s_tunnels::lab::apiserver::{FakeApiConfig, FakeApiHandle, FakeApiServer};
    use std::process::Command;

    const KUBECTL: &str = "/usr/bin/kubectl";
    const TOKEN: &str = "fake-bearer-token-123";

    struct Fake {
        server: FakeApiHandle,
        dir: tempfile::TempDir,
    }

    async fn start_fake() -> Fake {
        assert!(
            std::path::Path::new(KUBECTL).exists(),
            "{KUBECTL} is required for this test (the real kubectl is the peer)"
        );
        let ca = LabCa::new("fake apiserver CA").unwrap();
        let server = FakeApiServer::start(FakeApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: ca.issue(&["127.0.0.1", "localhost"]).unwrap(),
            cluster_name: "lab-one".into(),
            namespaces: vec!["default".into(), "kube-system".into(), "team-a".into()],
            bearer_token: Some(Secret::new(TOKEN)),
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        use base64::Engine;
        let ca_data = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority-data: {ca_data}\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            server.url()
        );
        std::fs::write(dir.path().join("config"), kubeconfig).unwrap();
        Fake { server, dir }
    }

    /// Runs kubectl off the test's runtime threads; returns stdout and asserts a clean stderr.
    async fn kubectl(fake: &Fake, args: &[&str]) -> String {
        let home = fake.dir.path().to_owned();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(KUBECTL)
                .args(&args)
                .env_clear()
                .env("HOME", &home)
                .env("KUBECONFIG", home.join("config"))
                .env("PATH", "/usr/bin:/bin")
                .output()
                .expect("kubectl runs")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(output.status.success(), "kubectl failed:\n{stderr}");
        assert!(stderr.trim().is_empty(), "kubectl complained:\n{stderr}");
        stdout
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn real_kubectl_lists_namespaces_and_reads_the_version() {
        let fake = start_fake().await;

        let names = kubectl(&fake, &["get", "namespaces", "-o", "name"]).await;
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            [
                "namespace/default",
                "namespace/kube-system",
                "namespace/team-a"
            ]
        );

        let version = kubectl(&fake, &["version", "-o", "json"]).await;
        let version: serde_json::Value = serde_json::from_str(&version).unwrap();
        assert_eq!(version["serverVersion"]["gitVersion"], "v1.32.0");
        assert_eq!(version["serverVersion"]["minor"], "32");

        let table = kubectl(&fake, &["get", "namespaces"]).await;
        let mut lines = table.lines();
        let heading: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(heading, ["NAME", "STATUS", "AGE"]);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert_eq!(rows[2][..2], ["team-a", "Active"]);

        let json = kubectl(&fake, &["get", "namespaces", "-o", "json"]).await;
        let list: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(list["items"][1]["metadata"]["name"], "kube-system");

        let one = kubectl(&fake, &["get", "namespace", "team-a"]).await;
        assert!(one.contains("team-a") && one.contains("Active"), "{one}");

        let resources = kubectl(&fake, &["api-resources"]).await;
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["namespaces", "ns", "v1", "false", "Namespace"]),
            "{resources}"
        );
        assert!(fake.server.requests() >= 6);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_without_the_bearer_token_get_a_401_status() {
        let fake = start_fake().await;
        let config = std::fs::read_to_string(fake.dir.path().join("config")).unwrap();
        std::fs::write(
            fake.dir.path().join("config"),
            config.replace(TOKEN, "wrong-token"),
        )
        .unwrap();
        let home = fake.dir.path().to_owned();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(KUBECTL)
                .args(["get", "namespaces", "-o", "name"])
                .env_clear()
                .env("HOME", &home)
                .env("KUBECONFIG", home.join("config"))
                .output()
                .expect("kubectl runs")
        })
        .await
        .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("Unauthorized") || stderr.contains("provide credentials"),
            "{stderr}"
        );
        let before = fake.server.requests();
        assert!(before >= 1);
        drop(fake);
    }
}

mod binary {
    use super::*;
    use std::process::{Command, Stdio};

    const BIN: &str = env!("CARGO_BIN_EXE_k8s-tunnels-gateway");
    const SECRET_VAR: &str = "K8S_TUNNELS_GATEWAY_TEST_SECRET";

    /// Writes a config with TLS and JWKS files and a service token from the environment.
    fn write_config(dir: &std::path::Path, ca: &LabCa, issuer: &TokenIssuer, origin: SocketAddr) {
        let leaf = ca.issue(&["tcp.lab.test"]).unwrap();
        std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
        std::fs::write(dir.join("jwks.json"), issuer.jwks_json()).unwrap();
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             tls:\n  cert: {{ file: {d}/tls.crt }}\n  key: {{ file: {d}/tls.key }}\n\
             ping_interval: 54s\n\
             jwks: {{ file: {d}/jwks.json }}\n\
             applications:\n\
             - hostname: tcp.lab.test\n  aud: {AUD}\n  origin: tcp://{origin}\n\
             \x20 service_tokens:\n  - client_id: {SERVICE_ID}\n    client_secret: {{ env: {SECRET_VAR} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("gateway.yaml"), yaml).unwrap();
    }

    #[test]
    fn check_accepts_a_good_config_and_names_the_field_of_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LabCa::new("bin CA").unwrap();
        let issuer = TokenIssuer::generate().unwrap();
        write_config(dir.path(), &ca, &issuer, "127.0.0.1:9".parse().unwrap());
        let config = dir.path().join("gateway.yaml");

        let ok = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .env(SECRET_VAR, SERVICE_SECRET)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains("tcp.lab.test"));

        let missing_env = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .env_remove(SECRET_VAR)
            .output()
            .unwrap();
        assert_eq!(missing_env.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&missing_env.stderr);
        assert!(
            stderr.contains("gateway.yaml")
                && stderr.contains("applications[0].service_tokens[0].client_secret")
                && stderr.contains(SECRET_VAR),
            "{stderr}"
        );

        std::fs::write(&config, "listen: nowhere\napplications: []\n").unwrap();
        let bad = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(
            stderr.contains("listen") && stderr.contains("line 1"),
            "{stderr}"
        );
    }

    /// The gateway binary, serving.
    struct Serving {
        child: tokio::process::Child,
        stderr: tokio::io::BufReader<tokio::process::ChildStderr>,
        addr: SocketAddr,
        /// Its log up to the "gateway listening" line.
        log: String,
    }

    /// Starts the binary on the config in `dir` and waits until it listens.
    async fn serve(dir: &std::path::Path, env: &[(&str, &str)]) -> Serving {
        let mut child = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(dir.join("gateway.yaml"))
            .env(SECRET_VAR, SERVICE_SECRET)
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // The port is in the "gateway listening" line.
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        let addr: SocketAddr = loop {
            use tokio::io::AsyncBufReadExt;
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), stderr.read_line(&mut line))
                .await
                .expect("the gateway logs its address")
                .unwrap();
            assert!(n > 0, "the gateway exited early:\n{log}");
            log.push_str(&line);
            if let Some(rest) = line.split("local_addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        Serving {
            child,
            stderr,
            addr,
            log,
        }
    }

    /// The binary restarts itself once, in place, with glibc's per-thread caches off (so
    /// memory comes back after bursts of connections), keeping the user's own tunables and its
    /// arguments; a user who sized the caches keeps their size.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[tokio::test(flavor = "multi_thread")]
    async fn the_served_binary_runs_with_glibcs_thread_caches_off() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LabCa::new("bin CA").unwrap();
        let issuer = TokenIssuer::generate().unwrap();
        write_config(dir.path(), &ca, &issuer, "127.0.0.1:9".parse().unwrap());
        for (given, expected) in [
            (None, "glibc.malloc.tcache_count=0"),
            (
                Some("glibc.malloc.arena_max=4"),
                "glibc.malloc.arena_max=4:glibc.malloc.tcache_count=0",
            ),
            (
                Some("glibc.malloc.tcache_count=2"),
                "glibc.malloc.tcache_count=2",
            ),
        ] {
            let env: Vec<(&str, &str)> = given.map(|g| ("GLIBC_TUNABLES", g)).into_iter().collect();
            // Listening proves the restarted program got its arguments (--config).
            let Serving { child, log, .. } = serve(dir.path(), &env).await;
            let pid = child.id().unwrap();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
            let key = b"GLIBC_TUNABLES=";
            let at = environ
                .windows(key.len())
                .position(|w| w == key)
                .map(|i| i + key.len())
                .unwrap_or_else(|| panic!("no GLIBC_TUNABLES, given {given:?}"));
            // glibc parses the variable in place, writing a NUL over each ':' between tunables.
            let value: Vec<u8> = environ[at..]
                .iter()
                .take(expected.len())
                .map(|&b| if b == 0 { b':' } else { b })
                .collect();
            assert_eq!(
                String::from_utf8_lossy(&value),
                expected,
                "given {given:?}; log:\n{log}"
            );
            assert_eq!(
                environ.get(at + expected.len()),
                Some(&0),
                "given {given:?}"
            );
            assert!(!log.contains("restart failed"), "{log}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_binary_serves_and_its_log_holds_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LabCa::new("bin CA").unwrap();
        let issuer = TokenIssuer::generate().unwrap();
        let echo = echo_server().await;
        write_config(dir.path(), &ca, &issuer, echo.addr);
        let Serving {
            mut child,
            mut stderr,
            addr,
            mut log,
        } = serve(dir.path(), &[]).await;
        let token = issuer
            .mint(&Claims::for_user(
                AUD,
                "ada@example.com",
                Duration::from_secs(60),
            ))
            .unwrap();
        for headers in [
            vec![
                ("Cf-Access-Client-Id", SERVICE_ID),
                ("Cf-Access-Client-Secret", SERVICE_SECRET),
            ],
            vec![("Cf-Access-Token", token.expose())],
        ] {
            let mut request = format!("wss://tcp.lab.test:{}/", addr.port())
                .into_client_request()
                .unwrap();
            for (name, value) in headers {
                request.headers_mut().insert(name, value.parse().unwrap());
            }
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = k8s_tunnels::tls::client_config(Some(ca.cert_pem().as_bytes())).unwrap();
            let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
                request,
                tcp,
                Some(peer_config()),
                Some(Connector::Rustls(tls)),
            )
            .await
            .expect("upgrade through the binary");
            let mut stream = PeerBytes::new(ws);
            round_trip(&mut stream, b"binary").await;
            stream.shutdown().await.unwrap();
        }
        // SIGTERM: the gateway shuts down cleanly and flushes its log.
        let pid = child.id().unwrap().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let mut rest = String::new();
        tokio::time::timeout(Duration::from_secs(15), stderr.read_to_string(&mut rest))
            .await
            .expect("the gateway exits after SIGTERM")
            .unwrap();
        log.push_str(&rest);
        let exit = child.wait().await.unwrap();
        assert!(exit.success(), "exit {exit:?}\n{log}");
        assert!(log.contains("ada@example.com"), "{log}");
        assert!(log.contains(SERVICE_ID), "{log}");
        assert!(!log.contains(SERVICE_SECRET), "secret in the log:\n{log}");
        assert!(!log.contains(token.expose()), "token in the log:\n{log}");
        let signature = token.expose().rsplit('.').next().unwrap();
        assert!(
            !log.contains(signature),
            "token signature in the log:\n{log}"
        );
    }
}
