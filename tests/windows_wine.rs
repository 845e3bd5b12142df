//! The Windows CLI at run time, under Wine: `k8s-tunnels.exe connect` opens tunnels to the
//! lab's gateway on the Linux side, the real Linux kubectl reaches the lab's API servers
//! through the Windows process's SOCKS ports with the kubeconfig the Windows process wrote,
//! `k8s-tunnels.exe status` sees the tunnels, and Ctrl-C closes them cleanly.
//!
//! It needs the Windows build and Wine, which `scripts/test-windows` provides: it builds
//! `k8s-tunnels.exe` for x86_64-pc-windows-gnu (with the `bcryptprimitives.dll` stand-in
//! beside it), prepares a Wine prefix, and runs these tests with `--run-ignored only`, passing
//! `K8S_TUNNELS_WINDOWS_CLI` (the .exe) and `WINEPREFIX`. In the plain test run they are
//! listed as ignored, with that reason; given the environment they fail loudly without Wine.
//!
//! Paths cross the two systems through Wine's drive `Z:`, which is the Linux root: the Windows
//! process gets `Z:\…` paths (its inventory is the lab's, rewritten so), and writes `Z:\…` into
//! the kubeconfig (the cluster's `tokenFile`), which this test maps back for the Linux kubectl.
// The Linux side of the run (the lab, kubectl, Wine itself): nothing to build on Windows.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_tunnels::inventory::OriginMode::{Socks, Tcp};
use serde_norway::Value;
use support::{ConnectProcess, LabWorld, kubectl_path, text};

/// How long Wine may take to start a process and the tunnels to come up (a cold prefix, two
/// busy cores).
const WINE_PATIENCE: Duration = Duration::from_secs(120);

/// The Windows build of the CLI.
fn windows_cli() -> PathBuf {
    let exe = std::env::var_os("K8S_TUNNELS_WINDOWS_CLI")
        .map(PathBuf::from)
        .expect(
            "K8S_TUNNELS_WINDOWS_CLI must name k8s-tunnels.exe built for x86_64-pc-windows-gnu \
         (scripts/test-windows builds it)",
        );
    assert!(exe.is_file(), "{} is not a file", exe.display());
    let stub = exe.with_file_name("bcryptprimitives.dll");
    assert!(
        stub.is_file(),
        "{} is missing: Wine 8 cannot start a Rust program without it (scripts/test-windows builds it)",
        stub.display()
    );
    exe
}

/// `wine` on PATH; the test fails loudly without it.
fn wine() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("wine"))
                .find(|p| p.is_file())
        })
        .expect("wine is required on PATH (Debian's `wine`; scripts/test-windows installs it)")
}

/// A Linux path as the Windows process sees it: Wine's drive `Z:` is the root.
fn to_windows(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// A `Z:\…` path as Linux sees it.
fn from_windows(text: &str) -> Option<String> {
    text.strip_prefix("Z:\\")
        .or_else(|| text.strip_prefix("Z:/"))
        .map(|rest| format!("/{}", rest.replace('\\', "/")))
}

/// Rewrites every string in `value` that `map` maps.
fn map_strings(value: &mut Value, map: &impl Fn(&str) -> Option<String>) {
    match value {
        Value::String(s) => {
            if let Some(mapped) = map(s) {
                *s = mapped;
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| map_strings(v, map)),
        Value::Mapping(entries) => entries.values_mut().for_each(|v| map_strings(v, map)),
        Value::Tagged(tagged) => map_strings(&mut tagged.value, map),
        _ => {}
    }
}

fn read_yaml(path: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The lab's inventory as a Windows user would have it: its file paths in `Z:\…` form.
fn windows_inventory(lab_dir: &Path, inventory: &Path) -> PathBuf {
    let mut doc = read_yaml(inventory);
    let prefix = lab_dir.to_string_lossy().into_owned();
    map_strings(&mut doc, &|s| {
        s.starts_with(&prefix).then(|| to_windows(Path::new(s)))
    });
    let path = inventory.with_file_name("inventory-windows.yaml");
    std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
    path
}

/// The SOCKS port of each `k8s-tunnels/<name>` cluster in a kubeconfig, once all are there.
fn ports_in(kubeconfig: &Path, names: &[&str]) -> Option<Vec<u16>> {
    let doc: Value = serde_norway::from_str(&std::fs::read_to_string(kubeconfig).ok()?).ok()?;
    let clusters = doc.get("clusters")?.as_sequence()?;
    names
        .iter()
        .map(|name| {
            let entry = clusters
                .iter()
                .find(|c| c["name"].as_str() == Some(&format!("k8s-tunnels/{name}")))?;
            let url = url::Url::parse(entry["cluster"]["proxy-url"].as_str()?).ok()?;
            url.port()
        })
        .collect()
}

/// A command running the Windows CLI under Wine with its own app home and kubeconfig.
struct WindowsCli {
    exe: PathBuf,
    root: PathBuf,
    inventory: String,
}

impl WindowsCli {
    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.root.join("kube").join("config")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(wine());
        cmd.arg(&self.exe)
            .current_dir(&self.root)
            .env("WINEDEBUG", "-all")
            .env("K8S_TUNNELS_HOME", to_windows(&self.home()))
            .env("KUBECONFIG", to_windows(&self.kubeconfig()))
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env_remove("K8S_TUNNELS_ACCESS_TOKEN")
            .env_remove("TUNNEL_SERVICE_TOKEN_ID")
            .env_remove("TUNNEL_SERVICE_TOKEN_SECRET")
            .env_remove("K8S_TUNNELS_CONFIG")
            .arg("--inventory")
            .arg(&self.inventory)
            .args(args);
        cmd
    }
}

#[test]
#[ignore = "needs k8s-tunnels.exe and Wine: run by scripts/test-windows"]
fn the_windows_cli_under_wine_serves_the_linux_kubectl() {
    let tmp = tempfile::tempdir().unwrap();
    let lab_dir = tmp.path().join("lab");
    let world = LabWorld::start(&lab_dir, &[("alpha", Socks), ("bravo", Tcp)]);
    let cli = WindowsCli {
        exe: windows_cli(),
        root: tmp.path().to_path_buf(),
        inventory: to_windows(&windows_inventory(&lab_dir, world.lab.inventory_path())),
    };
    let names = ["alpha", "bravo"];
    let mut connect = ConnectProcess::spawn(cli.command(&["-v", "connect", "alpha", "bravo"]));

    // The Windows process writes the kubeconfig, then listens on each entry's port.
    let deadline = Instant::now() + WINE_PATIENCE;
    let ports = loop {
        if let Some(status) = connect.try_wait() {
            panic!(
                "k8s-tunnels.exe exited early ({status}):\n{}",
                connect.log()
            );
        }
        if let Some(ports) = ports_in(&cli.kubeconfig(), &names)
            && ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            break ports;
        }
        assert!(
            Instant::now() < deadline,
            "no tunnels within {WINE_PATIENCE:?}:\n{}",
            connect.log()
        );
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(250));
    };
    assert_ne!(ports[0], ports[1], "a port per tunnel");

    // The kubeconfig is the Windows process's: Windows paths, and created with the user-only
    // descriptor. Wine keeps no Windows ACL on disk, only a Unix mode derived from it: a
    // user-only DACL becomes 0750 there (Wine gives the group the owner's read and execute
    // bits), where a file created without a descriptor gets 0666 less the umask. So what can
    // be seen from here is that nobody else has any access.
    let written = read_yaml(&cli.kubeconfig());
    let users = written["users"].as_sequence().unwrap();
    let alpha = users
        .iter()
        .find(|u| u["name"] == "k8s-tunnels/alpha")
        .unwrap();
    let token_file = alpha["user"]["tokenFile"].as_str().unwrap();
    let secrets = proxy_secrets(&written);
    assert_eq!(
        secrets.len(),
        names.len(),
        "each open tunnel's entry holds its secret"
    );
    assert!(token_file.starts_with("Z:\\"), "{token_file}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(cli.kubeconfig())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0, "kubeconfig mode {:o}", mode & 0o777);
    }

    // The real Linux kubectl, through the Windows process's SOCKS ports, with that kubeconfig
    // (its Windows paths mapped back to Linux ones: this is the one translation).
    let mut for_linux = written.clone();
    map_strings(&mut for_linux, &from_windows);
    let linux_kubeconfig = tmp.path().join("kube").join("config-linux");
    std::fs::write(
        &linux_kubeconfig,
        serde_norway::to_string(&for_linux).unwrap(),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        Command::new(kubectl_path())
            .env("KUBECONFIG", &linux_kubeconfig)
            .env("HOME", tmp.path())
            .args(args)
            .output()
            .unwrap()
    };
    for name in names {
        let context = format!("k8s-tunnels/{name}");
        let out = kubectl(&["--context", &context, "get", "namespaces", "-o", "name"]);
        assert!(
            out.status.success(),
            "kubectl via {name}: {}\n{}",
            text(&out.stderr),
            connect.log()
        );
        assert!(
            text(&out.stdout).contains(&format!("namespace/{name}-apps")),
            "{}",
            text(&out.stdout)
        );
    }
    // exec: a long-lived upgraded stream (WebSocket) through the Windows process.
    let out = kubectl(&[
        "--context",
        "k8s-tunnels/alpha",
        "exec",
        "shell",
        "--",
        "echo",
        "through",
        "wine",
    ]);
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through wine\n");

    // A second Windows process sees the tunnels through the first one's status file (rewritten
    // every second; a tunnel is "up" once its first health probe passed).
    let deadline = Instant::now() + WINE_PATIENCE;
    loop {
        let out = cli.command(&["status", "--json"]).output().unwrap();
        assert!(out.status.success(), "status: {}", text(&out.stderr));
        let status: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let up = |name: &str| {
            status
                .iter()
                .any(|t| t["name"] == name && t["state"] == "up")
        };
        if names.iter().all(|n| up(n)) {
            break;
        }
        assert!(Instant::now() < deadline, "not up in time: {status:#?}");
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(500));
    }

    // Ctrl-C (Wine turns SIGINT into the console's CTRL_C_EVENT): tunnels close, exit 0.
    let (exit, log) = connect.interrupt();
    assert!(exit.success(), "exit {exit}:\n{log}");
    assert!(log.contains("Disconnecting"), "{log}");
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open after Ctrl-C"
        );
    }
    let run_files = std::fs::read_dir(cli.home().join("state").join("run"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(run_files, 0, "the status file is removed on exit");
    // No secret in what the Windows process printed, and none left in the kubeconfig once its
    // tunnels closed.
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a SOCKS secret leaked:\n{log}"
        );
    }
    assert!(
        proxy_secrets(&read_yaml(&cli.kubeconfig())).is_empty(),
        "closed tunnels' entries still hold their secrets"
    );
}

/// The SOCKS secrets in a kubeconfig's proxy-urls.
fn proxy_secrets(kubeconfig: &serde_norway::Value) -> Vec<String> {
    kubeconfig["clusters"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"]["proxy-url"].as_str())
        .filter_map(|u| url::Url::parse(u).ok()?.password().map(str::to_owned))
        .collect()
}
