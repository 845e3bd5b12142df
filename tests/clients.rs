//! The client matrix: each Kubernetes client that runs on this machine, through a tunnel the
//! real CLI opened, reading the kubeconfig the app wrote, as an app built on it would. Each
//! test states what that client does, working or not; the README's "Which clients work" table
//! is these results. (kubectl has its own tests everywhere else; kube-rs is in tunnel.rs.)
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use k8s_tunnels::inventory::OriginMode::Tcp;
use support::{CliWorld, LabWorld, text};

/// Where the scripts and the JavaScript client's package live.
fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}

/// Runs a client program with `kubeconfig`, as a user's shell would.
fn run(cli: &CliWorld, kubeconfig: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(clients_dir())
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", &cli.home)
        .output()
        .unwrap_or_else(|e| panic!("{program} is required for this test ({e})"))
}

/// A copy of the app's kubeconfig with `socks5h://` proxies (the proxy resolves the name).
fn socks5h_copy(cli: &CliWorld) -> std::path::PathBuf {
    let config = std::fs::read_to_string(&cli.kubeconfig).unwrap();
    assert!(config.contains("proxy-url: \"socks5://"), "{config}");
    let edited = cli.kubeconfig.with_file_name("config-socks5h");
    std::fs::write(&edited, config.replace("socks5://", "socks5h://")).unwrap();
    edited
}

const NAMESPACES: &str = "default\nkube-public\nkube-system\nmatrix-apps\n";

/// A lab cluster with its tunnel up through the real CLI: (tmp, lab, cli, connect process).
fn tunnel_up() -> (
    tempfile::TempDir,
    LabWorld,
    CliWorld,
    support::ConnectProcess,
) {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("matrix", Tcp)]);
    let cli = CliWorld::new(tmp.path(), world.lab.inventory_path());
    let connect = cli.spawn_connect(&["matrix"]);
    cli.wait_for_state(&["matrix"], "up");
    (tmp, world, cli, connect)
}

/// The Python client (PyPI `kubernetes`, with PySocks) reads `proxy-url` and goes through
/// urllib3's SOCKS proxy manager. `socks5://` there means "resolve the name here" (only
/// `socks5h://` hands it to the proxy, as kubectl does with `socks5://`), and the API host of
/// a cluster behind Access is not in the laptop's DNS: it fails with the name unresolved. With
/// the one-letter change in its own configuration it works.
#[test]
fn python_kubernetes_resolves_the_api_host_itself_unless_told_socks5h() {
    let (_tmp, _world, cli, _connect) = tunnel_up();
    let script = ["list_namespaces.py", "k8s-tunnels/matrix"];
    let out = run(&cli, &cli.kubeconfig, "python3", &script);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("matrix.k8s.lab") && err.contains("Name or service not known"),
        "{err}"
    );

    let edited = socks5h_copy(&cli);
    let out = run(&cli, &edited, "python3", &script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), NAMESPACES);

    // Why the app writes socks5:// all the same: kubectl, the client everyone has, refuses
    // socks5h:// outright.
    let kubectl = run(
        &cli,
        &edited,
        support::kubectl_path().to_str().unwrap(),
        &["--context", "k8s-tunnels/matrix", "get", "namespaces"],
    );
    assert!(!kubectl.status.success());
    assert!(
        text(&kubectl.stderr).contains("unsupported scheme \"socks5h\""),
        "{}",
        text(&kubectl.stderr)
    );
}

/// The JavaScript client (npm `@kubernetes/client-node` 1.x; 2.x needs Node 22) reads
/// `proxy-url` and dials through its SOCKS agent with the URL's credentials; like Python's,
/// that agent resolves the name itself for `socks5://` and hands it to the proxy for
/// `socks5h://` only. Its user stanza is read its own way: see below.
#[test]
fn javascript_client_node_resolves_the_api_host_itself_unless_told_socks5h() {
    assert!(
        clients_dir()
            .join("node_modules/@kubernetes/client-node")
            .is_dir(),
        "the JavaScript client is not installed (scripts/install-test-deps runs npm ci in tests/clients)"
    );
    let (_tmp, _world, cli, _connect) = tunnel_up();
    let script = ["list-namespaces.mjs", "k8s-tunnels/matrix"];
    let out = run(&cli, &cli.kubeconfig, "node", &script);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("ENOTFOUND matrix.k8s.lab"), "{err}");

    // With socks5h:// the request reaches the API server through the tunnel, which answers
    // 401: client-node reads a user's token file from `token-file`, not from client-go's
    // `tokenFile`, so it sends none.
    let edited = socks5h_copy(&cli);
    let out = run(&cli, &edited, "node", &script);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("HTTP-Code: 401"), "{err}");

    // And with the token inline, it lists them.
    let mut config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&edited).unwrap()).unwrap();
    for user in config["users"].as_sequence_mut().unwrap() {
        let stanza = user["user"].as_mapping_mut().unwrap();
        if let Some(file) = stanza.remove("tokenFile") {
            let token = std::fs::read_to_string(file.as_str().unwrap()).unwrap();
            stanza.insert("token".into(), token.trim().into());
        }
    }
    std::fs::write(&edited, serde_norway::to_string(&config).unwrap()).unwrap();
    let out = run(&cli, &edited, "node", &script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), NAMESPACES);
}
