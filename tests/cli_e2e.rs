//! End to end through the real CLI and the real kubectl: the lab's gateway (TLS, Access JWTs
//! and service tokens) in front of fake Kubernetes API servers with their own CA.
#![allow(clippy::unwrap_used)]

mod support;

use k8s_tunnels::inventory::OriginMode::{Bastion, Socks, Tcp};
use support::{CliWorld, LabWorld, text};

fn namespaces_of(name: &str) -> Vec<String> {
    ["default", "kube-system", "kube-public"]
        .iter()
        .map(|n| format!("namespace/{n}"))
        .chain(std::iter::once(format!("namespace/{name}-apps")))
        .collect()
}

fn sorted_lines(out: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = text(out).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn kubectl_reaches_every_origin_mode_with_tunnels_up_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(
        &tmp.path().join("lab"),
        &[("alpha", Socks), ("bravo", Tcp), ("charlie", Bastion)],
    );
    let cli = CliWorld::new(tmp.path(), world.lab.inventory_path());
    let names = ["alpha", "bravo", "charlie"];
    let connect = cli.spawn_connect(&names);
    let status = cli.wait_for_state(&names, "up");

    let mut ports: Vec<u64> = status.iter().map(|t| t["port"].as_u64().unwrap()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each tunnel has its own port: {status:#?}");

    for name in names {
        let context = format!("k8s-tunnels/{name}");
        let out = cli.kubectl(&["--context", &context, "get", "namespaces", "-o", "name"]);
        assert!(
            out.status.success(),
            "kubectl via {name}: {}",
            text(&out.stderr)
        );
        let mut expected = namespaces_of(name);
        expected.sort();
        assert_eq!(sorted_lines(&out.stdout), expected, "namespaces of {name}");
    }

    // exec: an upgraded, long-lived stream (WebSocket v5.channel.k8s.io) through each tunnel.
    for name in names {
        let context = format!("k8s-tunnels/{name}");
        let out = cli.kubectl(&[
            "--context",
            &context,
            "exec",
            "shell",
            "-n",
            "default",
            "--",
            "echo",
            "through",
            name,
        ]);
        assert!(
            out.status.success(),
            "exec via {name}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), format!("through {name}\n"));
    }
    let out = cli.kubectl(&[
        "--context",
        "k8s-tunnels/alpha",
        "exec",
        "shell",
        "--",
        "false",
    ]);
    assert_eq!(out.status.code(), Some(127), "exit code crosses the tunnel");

    // Table output (kubectl asks for a server-side Table) and the version endpoint, too.
    let out = cli.kubectl(&["--context", "k8s-tunnels/alpha", "get", "namespaces"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("alpha-apps"));
    let out = cli.kubectl(&["--context", "k8s-tunnels/bravo", "version", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        version["serverVersion"]["gitVersion"].is_string(),
        "{version:#}"
    );

    // `use` switches kubectl's current context: plain kubectl now reaches bravo.
    let out = cli.run(&["use", "bravo"]);
    assert!(out.status.success(), "use: {}", text(&out.stderr));
    let out = cli.kubectl(&["get", "namespaces", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("namespace/bravo-apps"));
    let out = cli.kubectl(&["config", "current-context"]);
    assert_eq!(text(&out.stdout).trim(), "k8s-tunnels/bravo");

    let listed = cli.run(&["list", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "up")
    );

    let secret = cli
        .socks_secret("bravo")
        .expect("an open tunnel's entry holds its secret");
    let (exit, log) = connect.interrupt();
    assert!(exit.success(), "Ctrl-C exits cleanly: {exit:?}\n{log}");
    assert!(cli.status().is_empty(), "no tunnels reported after exit");
    assert_eq!(
        cli.socks_secret("bravo"),
        None,
        "closed: the entry holds no secret"
    );

    // Nothing the user can read or that a log collects holds the SOCKS secret or a token.
    let token = std::fs::read_to_string(world.lab.token_path()).unwrap();
    let status_text = text(&cli.run(&["status", "--json"]).stdout);
    let list_text = text(&cli.run(&["list", "--json"]).stdout);
    for (what, output) in [
        ("log", &log),
        ("status", &status_text),
        ("list", &list_text),
    ] {
        assert!(!output.contains(&secret), "{what} leaks the SOCKS secret");
        assert!(
            !output.contains(token.trim()),
            "{what} leaks the Access token"
        );
    }
}

#[test]
fn use_before_connect_writes_the_entry_and_unknown_names_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("delta", Tcp)]);
    let cli = CliWorld::new(tmp.path(), world.lab.inventory_path());

    let out = cli.run(&["use", "delta"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli.kubectl(&["config", "current-context"]);
    assert_eq!(text(&out.stdout).trim(), "k8s-tunnels/delta");

    let out = cli.run(&["connect", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "unknown cluster is an inventory error"
    );
    assert!(text(&out.stderr).contains("no cluster named \"nope\""));
    assert!(
        text(&out.stderr).contains("delta"),
        "lists the known clusters"
    );

    let missing = CliWorld::new(tmp.path(), &tmp.path().join("missing.yaml"));
    let out = missing.run(&["list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("missing.yaml"));
}

/// Without a keychain (no session bus to reach one), the CLI says so once, in plain words, and
/// what it writes to a stderr that is not a terminal (a pipe here, a CI log, a file) carries no
/// colour codes; nor with `NO_COLOR` set.
#[test]
fn a_missing_keychain_is_said_once_and_logs_to_a_pipe_are_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(&tmp.path().join("lab"), &[("echo", Tcp)]);
    let cli = CliWorld::new(tmp.path(), world.lab.inventory_path());
    for no_color in [None, Some("1")] {
        let mut command = cli.command(&["auth", "status"]);
        command
            .env_remove("K8S_TUNNELS_KEYCHAIN")
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", tmp.path().join("no-bus").display()),
            )
            .env("K8S_TUNNELS_LOG", "debug");
        match no_color {
            Some(v) => command.env("NO_COLOR", v),
            None => command.env_remove("NO_COLOR"),
        };
        let out = command.output().unwrap();
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(err.matches("no OS keychain").count(), 1, "{err}");
        assert!(err.contains("DEBUG"), "debug lines were asked for: {err}");
        assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
    }
}

/// The clusters of [`every_origin_mode_up`], one per origin mode.
const MODES: [&str; 3] = ["alpha", "bravo", "charlie"];

/// A lab with a cluster per origin mode (alpha socks, bravo tcp, charlie bastion) and the real
/// CLI's tunnels to all three up.
fn every_origin_mode_up() -> (
    tempfile::TempDir,
    LabWorld,
    CliWorld,
    support::ConnectProcess,
) {
    let tmp = tempfile::tempdir().unwrap();
    let world = LabWorld::start(
        &tmp.path().join("lab"),
        &[("alpha", Socks), ("bravo", Tcp), ("charlie", Bastion)],
    );
    let cli = CliWorld::new(tmp.path(), world.lab.inventory_path());
    let connect = cli.spawn_connect(&MODES);
    cli.wait_for_state(&MODES, "up");
    (tmp, world, cli, connect)
}

/// Waits for `child` to exit within `limit`, killing it and failing the test otherwise.
fn wait_exit(child: &mut std::process::Child, limit: std::time::Duration, what: &str) -> i32 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not end within {limit:?}");
        }
        k8s_tunnels::sync::pause_blocking(std::time::Duration::from_millis(50));
    }
}

/// The long-lived and interactive streams users run through such tunnels, with the real
/// kubectl through each origin mode: `logs -f` gets each line as the container writes it and
/// ends with the log, and `exec -it` runs a shell on a TTY (kubectl inside a pseudo-terminal
/// that `script` gives it), typed lines going up and their output coming back.
#[test]
fn kubectl_logs_follow_and_exec_with_a_tty_cross_every_origin_mode() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let (_tmp, world, cli, _connect) = every_origin_mode_up();
    let kubectl = support::kubectl_path();

    // `status` says what each cluster's API server answered through its tunnel.
    let (major, minor) = k8s_tunnels::lab::apiserver::FAKE_VERSION;
    let version = format!("v{major}.{minor}.0");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cli
        .status()
        .iter()
        .all(|t| t["kubernetes_version"] == version.as_str() && t["api_ms"].is_u64())
    {
        assert!(std::time::Instant::now() < deadline, "{:#?}", cli.status());
        k8s_tunnels::sync::pause_blocking(std::time::Duration::from_millis(200));
    }
    let table = text(&cli.run(&["status"]).stdout);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains(" API "), "{table}");
    for name in MODES {
        let row = table.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(row.contains(&format!("{version} · ")), "{table}");
    }

    for (i, name) in MODES.iter().enumerate() {
        let context = format!("k8s-tunnels/{name}");
        let api = world.lab.api_server(i).unwrap();
        let mut logs = cli
            .kubectl_command(&["--context", &context, "logs", "-f", "web"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(logs.stdout.take().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "web: started\n", "{name}");
        // kubectl is following now: each new line reaches it while the stream stays open.
        for n in 1..=3 {
            assert_eq!(
                api.log_line(&format!("line {n} via {name}")),
                1,
                "one follower"
            );
            line.clear();
            lines.read_line(&mut line).unwrap();
            assert_eq!(line, format!("line {n} via {name}\n"));
        }
        api.end_logs();
        let code = wait_exit(&mut logs, std::time::Duration::from_secs(20), "logs -f");
        assert_eq!(code, 0, "logs -f via {name} ends with the log");

        let mut shell = Command::new("script")
            .args(["-q", "-e", "-c"])
            .arg(format!(
                "{} --context {context} exec -it web -- sh",
                kubectl.display()
            ))
            .arg("/dev/null")
            .env("KUBECONFIG", &cli.kubeconfig)
            .env("HOME", &cli.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs kubectl in a pseudo-terminal");
        let mut typed = shell.stdin.take().unwrap();
        typed
            .write_all(format!("tty\recho typed via {name}\rexit\r").as_bytes())
            .unwrap();
        let code = wait_exit(&mut shell, std::time::Duration::from_secs(30), "exec -it");
        drop(typed);
        let mut screen = String::new();
        std::io::Read::read_to_string(&mut shell.stdout.take().unwrap(), &mut screen).unwrap();
        assert_eq!(code, 0, "exec -it via {name}: {screen}");
        assert!(
            screen.contains("/dev/pts/0"),
            "a TTY via {name}: {screen:?}"
        );
        // The command's output on a line of its own, as a terminal shows it (CR LF).
        assert!(
            screen.contains(&format!("\r\ntyped via {name}\r\n")),
            "{screen:?}"
        );

        // Without -t the same shell has no terminal: nothing echoed, plain newlines.
        let mut piped = cli
            .kubectl_command(&["--context", &context, "exec", "-i", "web", "--", "sh"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        piped
            .stdin
            .take()
            .unwrap()
            .write_all(b"tty\nexit\n")
            .unwrap();
        let out = piped.wait_with_output().unwrap();
        assert!(out.status.success(), "exec -i via {name}");
        assert_eq!(text(&out.stdout), "$ not a tty\n$ ");
    }
}

/// `kubectl port-forward` through each origin mode, as kubectl ≥ 1.31 speaks it (SPDY in a
/// WebSocket): bytes both ways, two connections in turn over one forward, and a port nothing
/// listens on refused with the pod's reason. (kubernetes#105632: port-forward behind
/// cloudflared broke on the upgrade.)
#[test]
fn kubectl_port_forward_carries_bytes_both_ways_through_every_origin_mode() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    let (_tmp, _world, cli, _connect) = every_origin_mode_up();
    let forward = |context: &str, port: &str| {
        let mut child = cli
            .kubectl_command(&["--context", context, "port-forward", "pod/web"])
            .arg(format!(":{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        // kubectl says "Handling connection for 80" on each one: its stdout must stay open (a
        // closed pipe ends it with SIGPIPE), so the rest is read away.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        // "Forwarding from 127.0.0.1:40123 -> 80"
        let local: u16 = line
            .split_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no local port in {line:?}"));
        (child, local)
    };
    let talk = |port: u16, said: &str| -> String {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        conn.write_all(format!("{said}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(&conn).read_line(&mut answer).unwrap();
        answer
    };
    for name in MODES {
        let context = format!("k8s-tunnels/{name}");
        let (mut child, local) = forward(&context, "80");
        assert_eq!(
            talk(local, &format!("hello via {name}")),
            format!("web:80 hello via {name}\n")
        );
        assert_eq!(
            talk(local, "and again"),
            "web:80 and again\n",
            "{name}: a second connection"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    // A port nothing listens on: the connection closes and kubectl says why.
    let (mut child, local) = forward("k8s-tunnels/bravo", "81");
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let _ = conn.write_all(b"anyone?\n");
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let _ = child.kill();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    assert!(err.contains("connection refused"), "{err}");
}
