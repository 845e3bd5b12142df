//! Credentials go only where they belong, through the real CLI: the environment's service
//! token and app token reach the user's own (inventory) clusters and never a discovered
//! cluster's edge; a tunnel that is down gives nothing away on its port.
#![allow(clippy::unwrap_used)]

mod fakes;
#[path = "support/recording_edge.rs"]
mod recording_edge;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_tunnels::inventory::OriginMode::Tcp;
use k8s_tunnels::lab::pki::LabCa;
use recording_edge::{Answer, RecordingEdge};
use serde_json::json;
use support::{CliWorld, LabWorld, text};

const VAULT_TOKEN: &str = "hvs.CAESIJ-credentials-test-token";
const ENV_ID: &str = "env-id.access";
const ENV_SECRET: &str = "env-service-secret-must-stay-home";
const ENV_TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJlbnYiOiJ0b2tlbiJ9.env-app-token";

/// An edge for `host` certified by `ca`, answering every request with Access's login redirect
/// for itself (an open door for whatever credential it is offered).
async fn edge(ca: &LabCa, host: &str) -> RecordingEdge {
    let leaf = ca.issue(&[host]).unwrap();
    let tls =
        k8s_tunnels::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    RecordingEdge::start(
        Some(tls),
        Answer {
            location: format!(
                "https://team.cloudflareaccess.com/cdn-cgi/access/login/{host}?kid=aud-x&redirect_url=%2F"
            ),
            domain: Some(host.to_string()),
        },
    )
    .await
}

/// Waits until `edge` saw an upgrade request (a `GET` asking for a WebSocket) or `limit` passed.
async fn wait_for_upgrade(edge: &RecordingEdge, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let upgraded = edge.seen().iter().any(|s| {
            s.method == "GET"
                && s.headers
                    .iter()
                    .any(|(k, v)| k == "upgrade" && v.eq_ignore_ascii_case("websocket"))
        });
        if upgraded {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `TUNNEL_SERVICE_TOKEN_*` and `K8S_TUNNELS_ACCESS_TOKEN` in the environment of `connect`: the
/// inventory's cluster presents them; a cluster found in Vault, whose Access hostname points at
/// a recording edge, gets none of them — unless `access.env_credential_hosts` lists its host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_credentials_reach_inventory_clusters_and_never_a_discovered_edge() {
    let ca = LabCa::new("credentials test CA").unwrap();
    let discovered_edge = edge(&ca, "localhost").await;
    let own_edge = edge(&ca, "mine.example.test").await;
    let listed_edge = edge(&ca, "127.0.0.1").await;
    let secrets: BTreeMap<String, serde_json::Value> = [
        (
            "k8s-tunnels/found",
            json!({"server": "https://10.9.9.9:6443", "environment": "dev", "origin": "tcp",
                   "hostname": format!("localhost:{}", discovered_edge.addr().port())}),
        ),
        (
            "k8s-tunnels/listed",
            json!({"server": "https://10.9.9.8:6443", "environment": "dev", "origin": "tcp",
                   "hostname": format!("127.0.0.1:{}", listed_edge.addr().port())}),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (vault, _state) = fakes::vault::start(fakes::vault::Vault {
        token: VAULT_TOKEN.into(),
        mount: "kv".into(),
        secrets,
        ..fakes::vault::Vault::default()
    })
    .await;

    let root = tempfile::tempdir().unwrap();
    let ca_path = root.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let inventory = root.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "clusters:\n- name: mine\n  cloud: onprem\n  environment: dev\n  server: https://10.9.9.7:6443\n  user: {{ token: x }}\n  access:\n    hostname: mine.example.test\n    origin: tcp\n    connect_to: \"{}\"\n    ca_file: {}\n",
            own_edge.addr(),
            ca_path.display()
        ),
    )
    .unwrap();
    let cli = CliWorld::new(root.path(), &inventory);
    let config_dir = cli.home.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.yaml"),
        format!(
            "sources:\n  vault:\n    address: {}\n    mount: kv\n    prefix: k8s-tunnels\naccess:\n  browser: none\n  env_credential_hosts: [\"127.0.0.1\"]\n",
            vault.url()
        ),
    )
    .unwrap();
    let discover = {
        let mut cmd = cli.command(&["discover"]);
        cmd.env("VAULT_TOKEN", VAULT_TOKEN);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    assert!(
        discover.status.success(),
        "{}{}",
        text(&discover.stdout),
        text(&discover.stderr)
    );

    let ca_env = ca_path.to_string_lossy().into_owned();
    let env = [
        ("TUNNEL_SERVICE_TOKEN_ID", ENV_ID),
        ("TUNNEL_SERVICE_TOKEN_SECRET", ENV_SECRET),
        ("K8S_TUNNELS_ACCESS_TOKEN", ENV_TOKEN),
        // The discovered edge has no CA of its own: trust the test CA as a system root would.
        ("SSL_CERT_FILE", ca_env.as_str()),
    ];
    let connect = cli.spawn_connect_with(&["mine", "found", "listed"], &env);
    // The health probes dial every edge at once; the inventory's and the listed one present
    // the environment's service token.
    assert!(
        wait_for_upgrade(&own_edge, Duration::from_secs(20)).await,
        "the inventory cluster's edge was never dialled: {}",
        connect.log()
    );
    assert!(
        wait_for_upgrade(&listed_edge, Duration::from_secs(20)).await,
        "the listed cluster's edge was never dialled: {}",
        connect.log()
    );
    // The discovered edge is asked which application it is (a HEAD) and dialled without a
    // credential, or not at all; give it the same time.
    wait_for_upgrade(&discovered_edge, Duration::from_secs(3)).await;
    let (_, log) = connect.interrupt();

    let presented = |edge: &RecordingEdge| {
        edge.seen().iter().any(|s| {
            s.headers
                .iter()
                .any(|(k, v)| k == "cf-access-client-secret" && v == ENV_SECRET)
        })
    };
    assert!(presented(&own_edge), "inventory cluster: {log}");
    assert!(presented(&listed_edge), "listed host: {log}");
    let seen = discovered_edge.seen();
    assert!(
        !seen.is_empty(),
        "the discovered edge was never contacted: {log}"
    );
    for request in &seen {
        let shown = request.text();
        assert!(
            !shown.contains(ENV_SECRET) && !shown.contains(ENV_ID) && !shown.contains(ENV_TOKEN),
            "a discovered cluster's edge received the environment's credential: {shown}\n{log}"
        );
    }
}

/// What a stranger's SOCKS server on a freed port was offered: the auth methods of each
/// greeting and every username/password pair (RFC 1929).
#[derive(Default)]
struct Offered {
    methods: Vec<Vec<u8>>,
    passwords: Vec<String>,
}

/// What ends [`squat`].
const STOP: [u8; 2] = [0xff, 0xff];

/// A stranger's SOCKS5 server on `port` (another local user who bound a port the app let go):
/// it takes whatever a client offers, records it, and fails the CONNECT.
fn squat(port: u16) -> (Arc<Mutex<Offered>>, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .expect("the closed tunnel's port is free for anyone to bind");
    let offered: Arc<Mutex<Offered>> = Arc::default();
    let log = offered.clone();
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut head = [0u8; 2];
            if s.read_exact(&mut head).is_err() {
                continue;
            }
            if head == STOP {
                return;
            }
            if head[0] != 5 {
                continue;
            }
            let mut methods = vec![0u8; usize::from(head[1])];
            let _ = s.read_exact(&mut methods);
            k8s_tunnels::sync::lock(&log).methods.push(methods.clone());
            if methods.contains(&2) {
                let _ = s.write_all(&[5, 2]);
                let mut ver_len = [0u8; 2];
                let _ = s.read_exact(&mut ver_len);
                let mut user = vec![0u8; usize::from(ver_len[1])];
                let _ = s.read_exact(&mut user);
                let mut plen = [0u8; 1];
                let _ = s.read_exact(&mut plen);
                let mut pass = vec![0u8; usize::from(plen[0])];
                let _ = s.read_exact(&mut pass);
                k8s_tunnels::sync::lock(&log)
                    .passwords
                    .push(String::from_utf8_lossy(&pass).into_owned());
                let _ = s.write_all(&[1, 0]);
            } else {
                let _ = s.write_all(&[5, 0]);
            }
            // Whatever it asks for: "connection refused".
            let mut request = [0u8; 64];
            let _ = s.read(&mut request);
            let _ = s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
        }
    });
    (offered, thread)
}

/// Whether `password` opens a SOCKS session on `port` (as `k8s-tunnels`).
fn accepted_at(port: u16, password: &str) -> bool {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[5, 1, 2]).unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).unwrap();
    assert_eq!(choice, [5, 2], "the tunnel asks for username/password");
    let user = b"k8s-tunnels";
    let mut auth = vec![1, user.len() as u8];
    auth.extend_from_slice(user);
    auth.push(password.len() as u8);
    auth.extend_from_slice(password.as_bytes());
    s.write_all(&auth).unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).is_ok() && reply == [1, 0]
}

/// While a tunnel is down its port is anyone's. A stranger who binds it is offered no secret
/// by the next kubectl, and what a long-running client still holding the old entry offers is
/// worthless: every open tunnel has a secret of its own, made when it opened.
#[test]
fn a_stranger_on_a_down_tunnels_port_collects_no_secret_the_app_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("xray", Tcp), ("yank", Tcp)]);
    let cli = CliWorld::new(tmp.path(), world.lab.inventory_path());
    let yank = cli.spawn_connect(&["yank"]);
    let xray = cli.spawn_connect(&["xray"]);
    let status = cli.wait_for_state(&["xray", "yank"], "up");
    let port_of = |name: &str| {
        let t = status.iter().find(|t| t["name"] == name).unwrap();
        u16::try_from(t["port"].as_u64().unwrap()).unwrap()
    };
    let (xray_port, yank_port) = (port_of("xray"), port_of("yank"));
    // What a long-running client (k9s, an IDE) loaded while xray was up.
    let held = cli
        .socks_secret("xray")
        .expect("an open tunnel's entry holds its secret");
    let yank_secret = cli.socks_secret("yank").unwrap();
    assert_ne!(held, yank_secret, "each tunnel has its own secret");
    assert!(accepted_at(xray_port, &held) && accepted_at(yank_port, &yank_secret));
    assert!(
        !accepted_at(yank_port, &held),
        "xray's secret does not open yank"
    );

    // xray goes down (its app quits); yank stays up in the other process.
    let (exit, log) = xray.interrupt();
    assert!(exit.success(), "{log}");
    assert_eq!(
        cli.socks_secret("xray"),
        None,
        "the down tunnel's entry holds no secret"
    );

    let (offered, stranger) = squat(xray_port);
    // The next kubectl offers the stranger nothing to collect; it fails at once.
    let out = cli.kubectl(&["--context", "k8s-tunnels/xray", "get", "namespaces"]);
    assert!(
        !out.status.success(),
        "the stranger's port does not reach the cluster"
    );
    // A long-running client offers what it still holds.
    let _ = accepted_at(xray_port, &held);
    {
        use std::io::Write;
        let mut stop = std::net::TcpStream::connect(("127.0.0.1", xray_port)).unwrap();
        stop.write_all(&STOP).unwrap();
    }
    stranger.join().unwrap();
    let offered = k8s_tunnels::sync::lock(&offered);
    let (from_kubectl, from_held) = offered.methods.split_at(offered.methods.len() - 1);
    assert!(!from_kubectl.is_empty(), "kubectl reached the stranger");
    assert!(
        from_kubectl.iter().all(|m| m.as_slice() == [0]),
        "kubectl offered no username/password: {from_kubectl:?}"
    );
    assert_eq!(from_held, [vec![2]]);
    assert_eq!(offered.passwords, std::slice::from_ref(&held));

    // Nothing collected opens a running tunnel: not yank, nor xray once it is back.
    for password in &offered.passwords {
        assert!(
            !accepted_at(yank_port, password),
            "yank accepts a collected secret"
        );
    }
    let xray = cli.spawn_connect(&["xray"]);
    let status = cli.wait_for_state(&["xray"], "up");
    let back = status.iter().find(|t| t["name"] == "xray").unwrap();
    let back_port = u16::try_from(back["port"].as_u64().unwrap()).unwrap();
    for password in &offered.passwords {
        assert!(
            !accepted_at(back_port, password),
            "xray accepts a collected secret"
        );
    }
    let fresh = cli.socks_secret("xray").unwrap();
    assert_ne!(fresh, held);
    let out = cli.kubectl(&["--context", "k8s-tunnels/xray", "get", "namespaces"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop((xray, yank));
}
