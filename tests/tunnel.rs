//! The tunnel engine against the lab's gateway, in process: what the local port refuses, how
//! the tunnel reports login and edge failures, and that it recovers and shuts down cleanly.
#![allow(clippy::unwrap_used)]

#[path = "log_support/mod.rs"]
mod log_support;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::discovery::file::load;
use k8s_tunnels::engine::{ConnectOptions, Engine, EngineConfig, Event, TunnelStatus};
use k8s_tunnels::inventory::{Cluster, OriginMode, OriginMode::Tcp};
use k8s_tunnels::kubeconfig::Kubeconfig;
use k8s_tunnels::state::StateStore;
use k8s_tunnels::tunnel::health::{ProbeSchedule, TunnelState};
use k8s_tunnels::tunnel::warm::WarmSettings;
use support::{CountingRelay, LabWorld, redirect_inventory};

fn quick_schedule() -> ProbeSchedule {
    ProbeSchedule {
        healthy: Duration::from_secs(1),
        down_min: Duration::from_millis(100),
        down_max: Duration::from_millis(400),
        timeout: Duration::from_secs(2),
        api: true,
    }
}

struct Setup {
    engine: Engine,
}

fn engine_in(root: &std::path::Path, schedule: ProbeSchedule) -> Setup {
    engine_with_kubeconfig(root, schedule, None)
}

fn engine_with_kubeconfig(
    root: &std::path::Path,
    schedule: ProbeSchedule,
    kubeconfig: Option<Kubeconfig>,
) -> Setup {
    engine_with(root, schedule, kubeconfig, WarmSettings::default())
}

fn engine_with(
    root: &std::path::Path,
    schedule: ProbeSchedule,
    kubeconfig: Option<Kubeconfig>,
    warm: WarmSettings,
) -> Setup {
    let dirs = AppDirs::at(&root.join("home"));
    dirs.ensure().unwrap();
    let engine = Engine::new(EngineConfig {
        kubeconfig,
        prefix: "k8s-tunnels/".into(),
        state: StateStore::new(&dirs),
        schedule,
        keepalive: k8s_tunnels::tunnel::keepalive::Keepalive::default(),
        warm,
        wake: None,
        kubeconfig_refresh: Duration::from_millis(200),
    });
    Setup { engine }
}

/// Opens the cluster's tunnel on the lab's runtime.
fn connect(world: &LabWorld, engine: &Engine, cluster: &Cluster) -> TunnelStatus {
    world
        .rt
        .block_on(engine.connect(cluster, ConnectOptions::default()))
        .unwrap()
}

fn wait_for_last_error(engine: &Engine, cluster: &Cluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(error) = engine.status_of(&cluster.id).and_then(|s| s.last_error) {
            return error;
        }
        assert!(Instant::now() < deadline, "no last error recorded");
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(20));
    }
}

fn wait_state(engine: &Engine, cluster: &Cluster, state: TunnelState) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = engine.status_of(&cluster.id).expect("tunnel open");
        if status.state == state {
            return status.reason;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became {state}; now {status:#?}",
            cluster.name
        );
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(50));
    }
}

/// A raw SOCKS5 client, byte by byte, so every refusal is seen exactly as a client sees it.
struct Socks {
    stream: TcpStream,
}

impl Socks {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn recv(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Reads until the server closes; panics on a timeout (the server must close at once).
    fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }

    fn login(&mut self, user: &str, pass: &str) -> u8 {
        self.send(&[5, 1, 2]);
        assert_eq!(self.recv(2), [5, 2], "server picks username/password");
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user.as_bytes());
        auth.push(pass.len() as u8);
        auth.extend_from_slice(pass.as_bytes());
        self.send(&auth);
        let reply = self.recv(2);
        assert_eq!(reply[0], 1);
        reply[1]
    }

    /// CONNECT to a domain; returns the reply code.
    fn connect_domain(&mut self, host: &str, port: u16) -> u8 {
        let mut req = vec![5, 1, 0, 3, host.len() as u8];
        req.extend_from_slice(host.as_bytes());
        req.extend_from_slice(&port.to_be_bytes());
        self.send(&req);
        let head = self.recv(4);
        assert_eq!(head[0], 5);
        // Consume the bound address (IPv4 in our replies).
        let _ = self.recv(if head[3] == 1 { 6 } else { 18 });
        head[1]
    }
}

fn api_host(cluster: &Cluster) -> (String, u16) {
    (cluster.api.host.clone(), cluster.api.port)
}

#[test]
fn the_local_port_refuses_strangers_before_dialling_the_edge() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("echo", Tcp)]);
    let relay = world
        .rt
        .block_on(CountingRelay::start(world.lab.gateway_addr()));
    let clusters = load(&redirect_inventory(&world.lab, relay.addr)).unwrap();
    let cluster = &clusters[0];
    let Setup { engine } = engine_in(tmp.path(), ProbeSchedule::default());
    let status = connect(&world, &engine, cluster);
    let socks = engine.socks_login(&cluster.id).unwrap();
    wait_state(&engine, cluster, TunnelState::Up);
    let port = status.port;
    let edge_connections = relay.count();
    let (host, api_port) = api_host(cluster);
    let user = socks.username.as_str();
    let pass = socks.password.expose();

    // A browser's HTTP request (DNS rebinding) is cut at the first bytes.
    let mut http = Socks::connect(port);
    http.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    http.expect_closed();

    // A client offering no authentication gets "no acceptable method".
    let mut anonymous = Socks::connect(port);
    anonymous.send(&[5, 1, 0]);
    assert_eq!(anonymous.recv(2), [5, 0xff]);
    anonymous.expect_closed();

    // A wrong password is refused.
    let mut wrong = Socks::connect(port);
    assert_ne!(wrong.login(user, "not-the-secret"), 0);
    wrong.expect_closed();

    // The right password, but a CONNECT elsewhere: "not allowed by ruleset".
    let mut elsewhere = Socks::connect(port);
    assert_eq!(elsewhere.login(user, pass), 0);
    assert_eq!(elsewhere.connect_domain("metadata.internal", 80), 2);
    let mut other_port = Socks::connect(port);
    assert_eq!(other_port.login(user, pass), 0);
    assert_eq!(other_port.connect_domain(&host, api_port + 1), 2);

    assert_eq!(
        relay.count(),
        edge_connections,
        "no refused client caused a connection to the edge"
    );
    // The count follows the refusal reply; give the last one a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.status_of(&cluster.id).unwrap().refused_connections < 5 {
        assert!(Instant::now() < deadline, "refusals not counted");
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(20));
    }
    assert_eq!(
        engine.status_of(&cluster.id).unwrap().refused_connections,
        5
    );

    // The rightful client goes through: its own connection to the edge, and (a first use of
    // the tunnel) the warm connections made for the next clients.
    let mut good = Socks::connect(port);
    assert_eq!(good.login(user, pass), 0);
    assert_eq!(good.connect_domain(&host.to_uppercase(), api_port), 0);
    let warm = WarmSettings::default().connections as u64;
    wait_count(&relay, edge_connections + 1 + warm);
}

/// Waits until `relay` has accepted `n` connections, then checks that no more come.
fn wait_count(relay: &CountingRelay, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.count() < n {
        assert!(
            Instant::now() < deadline,
            "{} connections, expected {n}",
            relay.count()
        );
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(10));
    }
    k8s_tunnels::sync::pause_blocking(Duration::from_millis(200));
    assert_eq!(relay.count(), n);
}

/// A tunnel probed once, at start (so only the test's connections reach the relay after it).
fn warm_world(
    tmp: &std::path::Path,
    warm: WarmSettings,
) -> (LabWorld, CountingRelay, Setup, Cluster) {
    let world = LabWorld::start(&tmp.join("lab"), &[("warm", Tcp)]);
    let relay = world
        .rt
        .block_on(CountingRelay::start(world.lab.gateway_addr()));
    let cluster = load(&redirect_inventory(&world.lab, relay.addr)).unwrap()[0].clone();
    let schedule = ProbeSchedule {
        healthy: Duration::from_secs(3600),
        ..ProbeSchedule::default()
    };
    let setup = engine_with(tmp, schedule, None, warm);
    connect(&world, &setup.engine, &cluster);
    wait_state(&setup.engine, &cluster, TunnelState::Up);
    (world, relay, setup, cluster)
}

/// A SOCKS CONNECT to the cluster's API through the tunnel; 0 when the edge stream opened.
fn open_through(engine: &Engine, cluster: &Cluster) -> (Socks, u8) {
    let status = engine.status_of(&cluster.id).unwrap();
    let socks = engine.socks_login(&cluster.id).unwrap();
    let mut s = Socks::connect(status.port);
    assert_eq!(s.login(&socks.username, socks.password.expose()), 0);
    let (host, port) = api_host(cluster);
    let reply = s.connect_domain(&host, port);
    (s, reply)
}

#[test]
fn a_tunnel_in_use_carries_new_connections_on_warm_connections_the_edge_already_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let (_world, relay, Setup { engine }, cluster) =
        warm_world(tmp.path(), WarmSettings::default());
    let base = relay.count();
    let warm = WarmSettings::default().connections as u64;
    // The first connection dials; its use warms the pool.
    let (_first, reply) = open_through(&engine, &cluster);
    assert_eq!(reply, 0);
    wait_count(&relay, base + 1 + warm);
    // The edge now answers no new connection: the next ones go through all the same, on the
    // connections made ahead (the upgrade, with the token, is sent only now).
    relay.hold_new_connections(true);
    let mut kept = Vec::new();
    for i in 0..warm {
        let (s, reply) = open_through(&engine, &cluster);
        assert_eq!(reply, 0, "connection {i} on a warm connection");
        kept.push(s);
    }
    let status = engine.status_of(&cluster.id).unwrap();
    assert_eq!(status.open_connections, 1 + warm);
    assert_eq!(status.state, TunnelState::Up);
}

#[test]
fn warm_connections_the_edge_closed_are_skipped_and_a_pool_turned_off_dials_each_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (_world, relay, Setup { engine }, cluster) =
        warm_world(tmp.path(), WarmSettings::default());
    let base = relay.count();
    let (first, reply) = open_through(&engine, &cluster);
    assert_eq!(reply, 0);
    drop(first);
    wait_count(&relay, base + 3);
    // The edge lets every connection go (the warm ones too): a new client still gets through,
    // on a connection dialled for it, and no failure is reported.
    relay.close_all();
    k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
    let (_again, reply) = open_through(&engine, &cluster);
    assert_eq!(reply, 0);
    let status = engine.status_of(&cluster.id).unwrap();
    assert_eq!(status.state, TunnelState::Up);
    assert_eq!(status.last_error, None);
    drop(engine);

    let tmp = tempfile::tempdir().unwrap();
    let (_world, relay, Setup { engine }, cluster) = warm_world(tmp.path(), WarmSettings::OFF);
    let base = relay.count();
    for _ in 0..2 {
        let (_s, reply) = open_through(&engine, &cluster);
        assert_eq!(reply, 0);
    }
    wait_count(&relay, base + 2);
}

#[test]
fn bad_or_expired_tokens_are_login_required_and_a_new_token_brings_the_tunnel_up() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("locked", Tcp)]);
    let lab = &world.lab;
    let clusters = load(lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let token_file = lab.token_path();
    let expired = lab.mint_token(Duration::from_secs(600), true).unwrap();
    std::fs::write(&token_file, expired.expose()).unwrap();

    let Setup { engine } = engine_in(tmp.path(), quick_schedule());
    let mut events = engine.subscribe();
    let status = connect(&world, &engine, cluster);
    let socks = engine.socks_login(&cluster.id).unwrap();
    let reason = wait_state(&engine, cluster, TunnelState::LoginRequired).unwrap();
    assert!(reason.contains("login required"), "{reason}");
    assert!(
        !reason.contains(expired.expose()),
        "the reason holds no token"
    );

    // A client is told "not allowed" rather than hanging.
    let (host, api_port) = api_host(cluster);
    let mut client = Socks::connect(status.port);
    assert_eq!(client.login(&socks.username, socks.password.expose()), 0);
    assert_eq!(client.connect_domain(&host, api_port), 2);

    // Garbage is no better than an expired token.
    std::fs::write(&token_file, "not.a.jwt").unwrap();
    let mut client = Socks::connect(status.port);
    assert_eq!(client.login(&socks.username, socks.password.expose()), 0);
    assert_eq!(client.connect_domain(&host, api_port), 2);

    // A fresh token: the next connection goes through and the tunnel is up.
    let fresh = lab.mint_token(Duration::from_secs(600), false).unwrap();
    std::fs::write(&token_file, fresh.expose()).unwrap();
    let mut client = Socks::connect(status.port);
    assert_eq!(client.login(&socks.username, socks.password.expose()), 0);
    assert_eq!(client.connect_domain(&host, api_port), 0);
    wait_state(&engine, cluster, TunnelState::Up);

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::TunnelState { state, .. } = event {
            seen.push(state);
        }
    }
    assert_eq!(seen.first(), Some(&TunnelState::Connecting), "{seen:?}");
    assert!(seen.contains(&TunnelState::LoginRequired), "{seen:?}");
    assert_eq!(seen.last(), Some(&TunnelState::Up), "{seen:?}");
}

#[test]
fn a_dead_edge_takes_the_tunnel_down_and_it_comes_back_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let mut world = LabWorld::start(&tmp.path().join("lab"), &[("flaky", Tcp)]);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let Setup { engine } = engine_in(tmp.path(), quick_schedule());
    let mut events = engine.subscribe();
    let status = connect(&world, &engine, cluster);
    let socks = engine.socks_login(&cluster.id).unwrap();
    wait_state(&engine, cluster, TunnelState::Up);
    let up = engine.status_of(&cluster.id).expect("open");
    assert!(
        up.latency_ms.is_some(),
        "a successful probe has a round trip"
    );
    assert_eq!(up.last_error, None);

    world.rt.block_on(world.lab.stop_gateway());
    let reason = wait_state(&engine, cluster, TunnelState::Down).unwrap();
    assert!(reason.contains("unreachable"), "{reason}");
    assert_eq!(
        engine.status_of(&cluster.id).unwrap().latency_ms,
        None,
        "a tunnel that is down shows no round trip"
    );

    // The listener stays up: clients still get a SOCKS answer (a failure, not a hang).
    let (host, api_port) = api_host(cluster);
    let mut client = Socks::connect(status.port);
    assert_eq!(client.login(&socks.username, socks.password.expose()), 0);
    assert_eq!(
        client.connect_domain(&host, api_port),
        4,
        "host unreachable"
    );
    // That connection's error is the tunnel's last error, free of secrets.
    let last_error = wait_for_last_error(&engine, cluster);
    assert!(last_error.contains("unreachable"), "{last_error}");
    assert!(!last_error.contains(socks.password.expose()));

    world.rt.block_on(world.lab.start_gateway()).unwrap();
    wait_state(&engine, cluster, TunnelState::Up);
    let mut client = Socks::connect(status.port);
    assert_eq!(client.login(&socks.username, socks.password.expose()), 0);
    assert_eq!(client.connect_domain(&host, api_port), 0);

    let mut seen = Vec::new();
    while let Ok(Event::TunnelState { state, .. }) = events.try_recv() {
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
    assert_eq!(
        seen,
        [
            TunnelState::Connecting,
            TunnelState::Up,
            TunnelState::Down,
            TunnelState::Up
        ]
    );
}

#[test]
fn disconnect_closes_the_port_and_open_connections_in_bounded_time() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("brief", Tcp)]);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let Setup { engine } = engine_in(tmp.path(), ProbeSchedule::default());
    let status = connect(&world, &engine, cluster);
    let socks = engine.socks_login(&cluster.id).unwrap();
    wait_state(&engine, cluster, TunnelState::Up);
    let (host, api_port) = api_host(cluster);
    let mut open = Socks::connect(status.port);
    assert_eq!(open.login(&socks.username, socks.password.expose()), 0);
    assert_eq!(open.connect_domain(&host, api_port), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.status_of(&cluster.id).unwrap().open_connections != 1 {
        assert!(
            Instant::now() < deadline,
            "connection never counted as open"
        );
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(20));
    }

    let started = Instant::now();
    world
        .rt
        .block_on(engine.disconnect(&cluster.id, Duration::from_secs(3)))
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    open.expect_closed();
    assert!(
        TcpStream::connect(("127.0.0.1", status.port)).is_err(),
        "the port is closed"
    );
    assert!(engine.status_of(&cluster.id).is_none());

    // Reconnecting gets the same port back: kubeconfig entries stay valid.
    let again = connect(&world, &engine, cluster);
    assert_eq!(again.port, status.port);
}

#[test]
fn debug_output_and_events_hold_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("quiet", Tcp)]);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let token = std::fs::read_to_string(world.lab.token_path()).unwrap();
    let Setup { engine } = engine_in(tmp.path(), ProbeSchedule::default());
    let mut events = engine.subscribe();
    connect(&world, &engine, cluster);
    let socks = engine.socks_login(&cluster.id).unwrap();
    wait_state(&engine, cluster, TunnelState::Up);
    let credential = k8s_tunnels::access::credential_for(cluster, &[]).unwrap();
    let mut texts = vec![
        format!("{cluster:?}"),
        format!("{socks:?}"),
        format!("{credential:?}"),
        format!("{:?}", engine.status()),
        serde_json::to_string(&engine.status()).unwrap(),
    ];
    while let Ok(event) = events.try_recv() {
        texts.push(format!("{event:?}"));
        texts.push(serde_json::to_string(&event).unwrap());
    }
    for text in &texts {
        assert!(!text.contains(socks.password.expose()), "leak in {text}");
        assert!(!text.contains(token.trim()), "leak in {text}");
    }
}

#[test]
fn entries_removed_by_another_kubeconfig_writer_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("sticky", Tcp)]);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let kubeconfig_path = tmp.path().join("kubeconfig");
    let kubeconfig = Kubeconfig::with_paths(vec![kubeconfig_path.clone()]);
    let Setup { engine, .. } =
        engine_with_kubeconfig(tmp.path(), ProbeSchedule::default(), Some(kubeconfig));
    connect(&world, &engine, cluster);

    let kubectl = |args: &[&str]| {
        std::process::Command::new(support::kubectl_path())
            .env("KUBECONFIG", &kubeconfig_path)
            .args(args)
            .output()
            .unwrap()
    };
    // What kubectl's read-before-lock race does to a concurrent writer's entry.
    let out = kubectl(&["config", "delete-context", "k8s-tunnels/sticky"]);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = kubectl(&["config", "get-contexts", "-o", "name"]);
        if support::text(&out.stdout)
            .lines()
            .any(|l| l == "k8s-tunnels/sticky")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the context was never restored");
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
    }
}

#[test]
fn an_untrusted_edge_certificate_is_a_tls_error_not_a_login() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("strange", Tcp)]);
    // The same inventory without the lab CA for the edge: the gateway's certificate is then
    // signed by an unknown authority.
    let text = std::fs::read_to_string(world.lab.inventory_path()).unwrap();
    let mut inventory: serde_json::Value = serde_norway::from_str(&text).unwrap();
    for cluster in inventory["clusters"].as_array_mut().unwrap() {
        cluster["access"].as_object_mut().unwrap().remove("ca_file");
    }
    let path = tmp.path().join("untrusted.yaml");
    std::fs::write(&path, serde_norway::to_string(&inventory).unwrap()).unwrap();
    let clusters = load(&path).unwrap();
    let cluster = &clusters[0];
    let Setup { engine, .. } = engine_in(tmp.path(), quick_schedule());
    connect(&world, &engine, cluster);
    let reason = wait_state(&engine, cluster, TunnelState::Down).unwrap();
    assert!(reason.contains("TLS handshake with edge"), "{reason}");
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
}

#[test]
fn a_taken_port_is_re_picked_once_and_remembered() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("crowded", Tcp)]);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let preferred = k8s_tunnels::state::port_candidates(&cluster.id, None)
        .next()
        .unwrap();
    // Another program holds the cluster's preferred port.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", preferred)).unwrap();

    let Setup { engine, .. } = engine_in(tmp.path(), ProbeSchedule::default());
    let first = connect(&world, &engine, cluster);
    assert_ne!(first.port, preferred, "the taken port is skipped");
    world
        .rt
        .block_on(engine.disconnect(&cluster.id, Duration::from_secs(3)))
        .unwrap();
    drop(squatter);

    // Even with the preferred port free again, the remembered one is kept: kubeconfig
    // entries written with it stay valid.
    let Setup { engine, .. } = engine_in(tmp.path(), ProbeSchedule::default());
    let again = connect(&world, &engine, cluster);
    assert_eq!(again.port, first.port);
}

#[test]
fn a_cluster_that_cannot_work_leaves_no_kubeconfig_entry_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("broken", Tcp)]);
    let mut cluster = load(world.lab.inventory_path()).unwrap().remove(0);
    cluster.access.edge_ca_pem = Some("-----BEGIN CERTIFICATE-----\nnot base64\n".into());
    let kubeconfig_path = tmp.path().join("kubeconfig");
    let Setup { engine, .. } = engine_with_kubeconfig(
        tmp.path(),
        ProbeSchedule::default(),
        Some(Kubeconfig::with_paths(vec![kubeconfig_path.clone()])),
    );
    let err = world
        .rt
        .block_on(engine.connect(&cluster, ConnectOptions { use_context: true }))
        .unwrap_err();
    assert!(k8s_tunnels::error_chain(&err).contains("edge CA"), "{err}");
    assert!(
        !kubeconfig_path.exists(),
        "nothing written for a tunnel that never started"
    );
    assert!(engine.status().is_empty());
}

/// The probe is one stream per period, and a whole one at a `socks` origin: its SOCKS request
/// for the API server, then TLS and `/version` through it. At a `proxyType: socks` origin a
/// stream closed before its SOCKS request reads as a failed handshake (a scan), every period.
#[test]
fn a_socks_origins_probe_is_a_whole_stream_to_the_api_server() {
    let log = log_support::CapturedLog::start_global();
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(
        &tmp.path().join("lab"),
        &[("behind-socks", OriginMode::Socks)],
    );
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let Setup { engine } = engine_in(tmp.path(), quick_schedule());
    connect(&world, &engine, cluster);
    wait_state(&engine, cluster, TunnelState::Up);
    // A few periods of probes (1 s each here): each a stream that carried bytes both ways.
    let probes = |text: &str| {
        text.lines()
            .filter(|l| {
                l.contains(" stream ")
                    && l.contains("mode=\"socks\"")
                    && !l.contains("bytes_up=0")
                    && !l.contains("bytes_down=0")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while probes(&log.text()) < 3 {
        assert!(Instant::now() < deadline, "no probes seen:\n{}", log.text());
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
    }
    let text = log.text();
    assert!(
        !text.contains("before its SOCKS request") && !text.contains("refused"),
        "a probe that stopped short of the API server:\n{text}"
    );
    let status = engine.status_of(&cluster.id).unwrap();
    assert_eq!(status.total_connections, 0, "probes are not connections");
    assert!(status.kubernetes_version.is_some(), "{status:#?}");
    world.rt.block_on(engine.shutdown(Duration::from_secs(3)));
}

/// The version the lab's API servers report, as `/version` spells it.
fn lab_version() -> String {
    let (major, minor) = k8s_tunnels::lab::apiserver::FAKE_VERSION;
    format!("v{major}.{minor}.")
}

#[test]
fn the_probe_asks_the_api_server_through_the_tunnel_in_every_origin_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let modes = [
        ("plain", OriginMode::Tcp),
        ("socks", OriginMode::Socks),
        ("bastion", OriginMode::Bastion),
    ];
    let mut world = LabWorld::start(&tmp.path().join("lab"), &modes);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let Setup { engine } = engine_in(tmp.path(), quick_schedule());
    for (i, cluster) in clusters.iter().enumerate() {
        connect(&world, &engine, cluster);
        wait_state(&engine, cluster, TunnelState::Up);
        let asked = world.lab.api_server(i).unwrap().requests();
        // The first probe may have found the edge before the API: wait for its answer.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status = engine.status_of(&cluster.id).unwrap();
            if status.api_ms.is_some() || Instant::now() > deadline {
                break status;
            }
            k8s_tunnels::sync::pause_blocking(Duration::from_millis(50));
        };
        let version = status.kubernetes_version.clone().unwrap_or_default();
        assert!(
            version.starts_with(&lab_version()),
            "{}: {status:#?}",
            cluster.name
        );
        let summary = status.api_summary().unwrap();
        assert!(
            summary.starts_with(&format!("{version} · ")) && summary.ends_with(" ms"),
            "{summary}"
        );
        assert!(status.latency_ms.is_some());
        assert_eq!(
            status.total_connections, 0,
            "the probe is no client connection"
        );
        // The answer came from this cluster's own API server, through the tunnel.
        let deadline = Instant::now() + Duration::from_secs(10);
        while world.lab.api_server(i).unwrap().requests() == asked {
            assert!(
                Instant::now() < deadline,
                "{}: /version never asked",
                cluster.name
            );
            k8s_tunnels::sync::pause_blocking(Duration::from_millis(50));
        }
    }

    // Each cluster's API server goes away while its edge stays: the distinct state, with the
    // edge's round trip still there and no API figure; the others stay up.
    for (i, cluster) in clusters.iter().enumerate() {
        world.rt.block_on(world.lab.stop_api_server(i));
        let reason = wait_state(&engine, cluster, TunnelState::ApiDown).unwrap();
        assert!(
            reason.contains("502") || reason.contains("origin"),
            "{}: {reason}",
            cluster.name
        );
        let status = engine.status_of(&cluster.id).unwrap();
        assert_eq!(status.api_ms, None, "{status:#?}");
        assert!(
            status.latency_ms.is_some(),
            "the edge answered: {status:#?}"
        );
        for (j, other) in clusters.iter().enumerate() {
            if j != i {
                assert_eq!(engine.status_of(&other.id).unwrap().state, TunnelState::Up);
            }
        }
        world.rt.block_on(world.lab.start_api_server(i)).unwrap();
        wait_state(&engine, cluster, TunnelState::Up);
    }
    world.rt.block_on(engine.shutdown(Duration::from_secs(3)));
}

#[test]
fn an_api_certificate_from_another_ca_is_the_reason_the_api_is_not_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("stranger", Tcp)]);
    let mut cluster = load(world.lab.inventory_path()).unwrap().remove(0);
    // The edge is trusted; the API server's certificate is checked against another CA.
    let other = k8s_tunnels::lab::pki::LabCa::new("another CA").unwrap();
    cluster.api.ca_pem = Some(other.cert_pem().to_string());
    let Setup { engine } = engine_in(tmp.path(), quick_schedule());
    connect(&world, &engine, &cluster);
    let reason = wait_state(&engine, &cluster, TunnelState::ApiDown).unwrap();
    assert!(reason.contains("certificate"), "{reason}");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    let status = engine.status_of(&cluster.id).unwrap();
    assert!(
        status.latency_ms.is_some(),
        "the edge answered: {status:#?}"
    );
    assert_eq!(status.kubernetes_version, None);
    world.rt.block_on(engine.shutdown(Duration::from_secs(3)));
}

/// kubectl's current context, read by kubectl itself.
fn kubectl_current_context(kubeconfig: &std::path::Path, home: &std::path::Path) -> String {
    let out = std::process::Command::new("/usr/bin/kubectl")
        .args(["config", "current-context"])
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .output()
        .expect("the real kubectl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A tunnel opened with "use context" switches kubectl to it; when every tunnel closes (Quit,
/// Disconnect all, Ctrl-C) the context the user had is put back, unless they chose another one
/// meanwhile, which stays.
#[test]
fn the_users_context_is_put_back_when_the_tunnels_close_unless_they_chose_another() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("switched", Tcp)]);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: corp\n  cluster: {server: 'https://corp.example:6443'}\n\
         contexts:\n- name: corp\n  context: {cluster: corp, user: corp}\n- name: other\n  context: {cluster: corp, user: corp}\n\
         users:\n- name: corp\n  user: {token: t}\ncurrent-context: corp\n",
    )
    .unwrap();
    let home = tmp.path().join("kubectl-home");
    std::fs::create_dir_all(&home).unwrap();

    for user_switches in [false, true] {
        let Setup { engine } = engine_with_kubeconfig(
            tmp.path(),
            quick_schedule(),
            Some(Kubeconfig::with_paths(vec![kubeconfig.clone()])),
        );
        world
            .rt
            .block_on(engine.connect(cluster, ConnectOptions { use_context: true }))
            .unwrap();
        assert_eq!(
            kubectl_current_context(&kubeconfig, &home),
            "k8s-tunnels/switched"
        );
        if user_switches {
            let status = std::process::Command::new("/usr/bin/kubectl")
                .args(["config", "use-context", "other"])
                .env("KUBECONFIG", &kubeconfig)
                .env("HOME", &home)
                .status()
                .unwrap();
            assert!(status.success());
        }
        world.rt.block_on(engine.shutdown(Duration::from_secs(3)));
        let expected = if user_switches { "other" } else { "corp" };
        assert_eq!(kubectl_current_context(&kubeconfig, &home), expected);
        // Back to the start for the next round.
        Kubeconfig::with_paths(vec![kubeconfig.clone()])
            .use_context("corp")
            .unwrap();
    }
}

/// A connection that fails through an up tunnel makes it "checking" at once (not "up" until the
/// next probe, which could be many seconds away), then the probe it wakes decides: down here.
#[test]
fn a_failed_connection_shows_checking_at_once_then_the_probe_decides() {
    let tmp = tempfile::tempdir().unwrap();
    let mut world = LabWorld::start(&tmp.path().join("lab"), &[("checked", Tcp)]);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let cluster = &clusters[0];
    // Probes far apart while up: only the failed connection can start the check.
    let schedule = ProbeSchedule {
        healthy: Duration::from_secs(300),
        ..quick_schedule()
    };
    let Setup { engine } = engine_in(tmp.path(), schedule);
    let mut events = engine.subscribe();
    let status = connect(&world, &engine, cluster);
    let socks = engine.socks_login(&cluster.id).unwrap();
    wait_state(&engine, cluster, TunnelState::Up);

    world.rt.block_on(world.lab.stop_gateway());
    let (host, api_port) = api_host(cluster);
    let mut client = Socks::connect(status.port);
    assert_eq!(client.login(&socks.username, socks.password.expose()), 0);
    assert_eq!(
        client.connect_domain(&host, api_port),
        4,
        "host unreachable"
    );
    wait_state(&engine, cluster, TunnelState::Down);

    let mut seen = Vec::new();
    while let Ok(Event::TunnelState { state, reason, .. }) = events.try_recv() {
        if state == TunnelState::Checking {
            assert!(
                reason.is_some_and(|r| r.contains("unreachable")),
                "the reason says why"
            );
        }
        seen.push(state);
    }
    seen.dedup();
    assert_eq!(
        seen,
        [
            TunnelState::Connecting,
            TunnelState::Up,
            TunnelState::Checking,
            TunnelState::Down
        ]
    );
}

/// kube-rs reads the kubeconfig the app wrote, beside kubectl: our context resolves to the
/// cluster's API URL, its CA, its TLS server name and the tunnel's SOCKS port. Its own client
/// then reaches the cluster through that port once it is handed the proxy's credentials; from
/// the `proxy-url` alone it cannot (kube 5 drops the URL's user and password for `socks5://`,
/// so our port, which wants them, refuses it): the README's client table says so.
#[test]
fn kube_rs_reads_our_context_and_reaches_the_cluster_through_the_socks_port() {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::connect::proxy::SocksV5;
    use kube::client::ConfigExt;
    use kube::config::{KubeConfigOptions, Kubeconfig as KubeFile};

    let tmp = tempfile::tempdir().unwrap();
    let modes = [("kube-plain", Tcp), ("kube-bastion", OriginMode::Bastion)];
    let world = LabWorld::start(&tmp.path().join("lab"), &modes);
    let clusters = load(world.lab.inventory_path()).unwrap();
    let path = tmp.path().join("kubeconfig");
    let Setup { engine } = engine_with_kubeconfig(
        tmp.path(),
        quick_schedule(),
        Some(Kubeconfig::with_paths(vec![path.clone()])),
    );
    let lab_ca: Vec<Vec<u8>> = k8s_tunnels::tls::certs_from_pem(world.lab.ca_pem().as_bytes())
        .unwrap()
        .into_iter()
        .map(|c| c.to_vec())
        .collect();
    // kube's client spawns its buffer task where it is built.
    let _runtime = world.rt.enter();
    for cluster in &clusters {
        let status = connect(&world, &engine, cluster);
        wait_state(&engine, cluster, TunnelState::Up);
        let socks = engine.socks_login(&cluster.id).unwrap();
        let file = KubeFile::read_from(&path).unwrap();
        let options = KubeConfigOptions {
            context: Some(status.context.clone()),
            ..Default::default()
        };
        let config = world
            .rt
            .block_on(kube::Config::from_custom_kubeconfig(file, &options))
            .unwrap();
        assert_eq!(
            config.cluster_url.to_string().trim_end_matches('/'),
            cluster.api.url.as_str().trim_end_matches('/')
        );
        assert_eq!(config.root_cert.as_ref(), Some(&lab_ca), "{}", cluster.name);
        assert_eq!(config.tls_server_name, cluster.api.tls_server_name);
        let proxy = config.proxy_url.clone().expect("a proxy-url");
        assert_eq!(proxy.scheme_str(), Some("socks5"));
        assert_eq!(proxy.host(), Some("127.0.0.1"));
        assert_eq!(proxy.port_u16(), Some(status.port));
        assert_eq!(
            proxy
                .authority()
                .unwrap()
                .as_str()
                .split_once('@')
                .unwrap()
                .0,
            format!("{}:{}", socks.username, socks.password.expose()),
            "the credentials are in the URL kubectl reads"
        );

        // kube's own stack from the proxy-url: the SOCKS port refuses it (no credentials).
        let refused_before = engine.status_of(&cluster.id).unwrap().refused_connections;
        let client = kube::Client::try_from(config.clone()).unwrap();
        let err = world
            .rt
            .block_on(client.apiserver_version())
            .expect_err("kube 5 sends no SOCKS credentials");
        assert!(
            k8s_tunnels::error_chain(&err).contains("auth"),
            "{}",
            k8s_tunnels::error_chain(&err)
        );
        assert!(engine.status_of(&cluster.id).unwrap().refused_connections > refused_before);

        // The same configuration with the proxy's credentials handed over: the cluster answers.
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let socks_connector = SocksV5::new(proxy, http)
            .with_auth(socks.username.clone(), socks.password.expose().to_string());
        let https = config
            .rustls_https_connector_with_connector(socks_connector)
            .unwrap();
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer().unwrap())
            .map_err(tower::BoxError::from)
            .service(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build::<_, kube::client::Body>(https),
            );
        let client = kube::Client::new(service, config.default_namespace.clone());
        let namespaces = world.rt.block_on(async {
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
            api.list(&Default::default()).await
        });
        let names: Vec<String> = namespaces
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.contains(&"kube-system".to_string()), "{names:?}");
    }
    world.rt.block_on(engine.shutdown(Duration::from_secs(3)));
}
