//! The installed app, as a user gets it: the `.deb` that `scripts/package` builds is installed
//! with `dpkg -i`, and everything below runs the installed programs from `/usr/bin`, not the
//! build tree's. The desktop entry's `Exec` starts the tray app under Xvfb on a private D-Bus
//! session: its item registers with the tray host (this test), its window is the installed
//! window binary (at start, and again from the tray's "Open window"), a demo-lab tunnel switched
//! on in the tray menu carries the real `kubectl get ns`, "Start at login" writes an autostart
//! entry that starts the installed binary, and Quit ends the tray and the window. `dpkg -r`
//! then removes the programs and leaves the user's kubeconfig valid (their own context kept)
//! and the app's state in place.
//!
//! It changes the machine (it installs a package), so it runs only when asked:
//! `scripts/test-package` builds the `.deb` and runs it with `K8S_TUNNELS_DEB` set (as root, or
//! with passwordless sudo); `scripts/test` does that. Without the variable it fails, naming it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_tunnels::state::Settings;
use k8s_tunnels_desktop::control::Client;
use k8s_tunnels_desktop::ipc::WindowCommands;
use support::desktop::{
    Desktop, Reaped, Tray, close_app_window, descendants, describe, require, serve_watcher,
    viewable_windows, wait_until,
};

/// The package's name (the bundler's kebab-case of the product name).
const PACKAGE: &str = "k8s-tunnels";
/// A release build starts quickly, but the demo lab generates keys first.
const START: Duration = Duration::from_secs(90);
const CHANGE: Duration = Duration::from_secs(45);

/// The user's own kubeconfig entry, there before the app: it must survive install and removal.
const USER_KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: my-own
  cluster:
    server: https://my-own.example.com:6443
contexts:
- name: my-own
  context:
    cluster: my-own
    user: me
users:
- name: me
  user:
    token: not-a-real-token
current-context: my-own
";

/// Runs a command, failing the test with its output when it cannot start or fails.
fn run(command: &mut Command) -> Output {
    let what = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `dpkg` itself, or through `sudo -n` when the test is not root.
fn dpkg(args: &[&str]) -> Command {
    let root = run(Command::new("id").arg("-u")).stdout == b"0\n";
    let mut command = if root {
        Command::new("dpkg")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "dpkg"]);
        c
    };
    command.args(args);
    command
}

/// Removes the package if the test ends before it does (a failed assertion), so a failed run
/// does not leave it on the machine.
struct Installed {
    removed: bool,
}

impl Installed {
    fn remove(&mut self) {
        run(&mut dpkg(&["-r", PACKAGE]));
        self.removed = true;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.removed {
            let _ = dpkg(&["-r", PACKAGE]).output();
        }
    }
}

/// The value of `key` in a desktop entry's `[Desktop Entry]` group.
fn entry_value<'a>(entry: &'a str, key: &str) -> Option<&'a str> {
    entry
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// The program a desktop entry's `Exec` names, found as a launcher finds it (on PATH), with its
/// arguments.
fn resolve_exec(exec: &str) -> (PathBuf, Vec<String>) {
    let mut words = exec.split_whitespace().map(String::from);
    let program = words.next().expect("an empty Exec");
    let path = if program.starts_with('/') {
        PathBuf::from(&program)
    } else {
        ["/usr/local/bin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(&program))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("Exec names {program}, which is not on PATH"))
    };
    // Field codes (%u, %F …) are the launcher's to fill in; none are expected here.
    (path, words.filter(|w| !w.starts_with('%')).collect())
}

/// The program process `pid` runs, as the kernel has it.
fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Running (a zombie, ended but not yet reaped by its parent, counts as ended).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The window process below `root` running the installed window binary.
fn installed_window(root: u32) -> Option<u32> {
    descendants(root)
        .into_iter()
        .find(|&p| exe(p).as_deref() == Some(Path::new("/usr/bin/k8s-tunnels-window")))
}

async fn kubectl(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("kubectl")
        .args(args)
        .arg("--request-timeout=20s")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "installs a package: scripts/test-package builds the .deb and runs this"]
async fn the_installed_deb_runs_as_a_user_gets_it_and_removes_cleanly() {
    let deb = std::env::var_os("K8S_TUNNELS_DEB").map(PathBuf::from).expect(
        "K8S_TUNNELS_DEB must name the .deb to install (scripts/test-package builds it and runs \
         this test)",
    );
    assert!(deb.is_file(), "no package at {}", deb.display());
    require("dpkg", "dpkg");
    require("kubectl", "kubectl");
    require("desktop-file-validate", "desktop-file-utils");

    // Install it, as a user does.
    run(&mut dpkg(&["-i", deb.to_str().expect("a UTF-8 path")]));
    let mut installed = Installed { removed: false };

    // What the package put where: the three programs side by side, the menu entry, the icons.
    let files = String::from_utf8(run(&mut dpkg(&["-L", PACKAGE])).stdout).expect("UTF-8");
    for program in [
        "/usr/bin/k8s-tunnels",
        "/usr/bin/k8s-tunnels-desktop",
        "/usr/bin/k8s-tunnels-window",
    ] {
        assert!(
            files.lines().any(|l| l == program),
            "{program} not in the package:\n{files}"
        );
    }
    let desktop_file = "/usr/share/applications/k8s-tunnels.desktop";
    assert!(files.lines().any(|l| l == desktop_file), "{files}");

    // One version everywhere: the CLI on the PATH says the version this tree builds.
    let version = run(Command::new("k8s-tunnels").arg("--version")).stdout;
    assert_eq!(
        String::from_utf8_lossy(&version).trim(),
        format!("k8s-tunnels {}", env!("CARGO_PKG_VERSION"))
    );

    // The menu entry is valid, starts the tray app, and its icon is installed in hicolor.
    run(Command::new("desktop-file-validate").arg(desktop_file));
    let entry = std::fs::read_to_string(desktop_file).expect("the desktop entry");
    let (program, args) = resolve_exec(entry_value(&entry, "Exec").expect("Exec"));
    assert_eq!(program, Path::new("/usr/bin/k8s-tunnels-desktop"));
    let icon = entry_value(&entry, "Icon").expect("Icon");
    let icons: Vec<&str> = files
        .lines()
        .filter(|l| {
            l.starts_with("/usr/share/icons/hicolor/") && l.ends_with(&format!("/apps/{icon}.png"))
        })
        .collect();
    for size in ["32x32", "128x128", "256x256", "512x512"] {
        assert!(
            icons.iter().any(|l| l.contains(&format!("/{size}/"))),
            "no {size} icon named {icon}: {icons:?}"
        );
    }

    // A user's session: a display, a session bus with a tray host, their own kubeconfig.
    let tmp = tempfile::tempdir().expect("tmp");
    let user_home = tmp.path().join("user");
    let config_home = user_home.join(".config");
    std::fs::create_dir_all(&config_home).expect("config home");
    let app_home = tmp.path().join("app");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, USER_KUBECONFIG).expect("the user's kubeconfig");
    let kubeconfig_arg = format!("--kubeconfig={}", kubeconfig.display());
    let desktop = Desktop::start(1280, 900);
    let (conn, watcher) = serve_watcher(&desktop.bus).await;

    // Started as the menu entry starts it.
    let app = Reaped(
        Command::new(&program)
            .args(&args)
            .env("DISPLAY", &desktop.display)
            .env_remove("WAYLAND_DISPLAY")
            .env("DBUS_SESSION_BUS_ADDRESS", &desktop.bus)
            .env("HOME", &user_home)
            .env("XDG_CONFIG_HOME", &config_home)
            .env("K8S_TUNNELS_HOME", &app_home)
            .env("KUBECONFIG", &kubeconfig)
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env_remove("K8S_TUNNELS_CONFIG")
            .env_remove("K8S_TUNNELS_INVENTORY")
            .env_remove("K8S_TUNNELS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("stderr")).expect("stderr"))
            .spawn()
            .expect("start the installed app"),
    );
    let tray_pid = app.pid();
    assert_eq!(exe(tray_pid).as_deref(), Some(program.as_path()));

    // The tray registers, with its menu and the version in it.
    let tray = Tray::wait(&conn, &watcher, START).await;
    assert_eq!(tray.item_string("Id").await, "k8s-tunnels");
    let top = describe(&tray.built_layout(START).await.children);
    let about = k8s_tunnels_desktop::menu::VERSION_LINE;
    assert!(
        top.iter().any(|l| l == about),
        "no {about:?} in the menu: {top:?}"
    );

    // Started without --hidden, the app opens its window: the installed window binary.
    let first = wait_until("the installed window at start", START, || async {
        installed_window(tray_pid)
    })
    .await;
    wait_until("the window on screen", START, || async {
        (viewable_windows(&desktop.display, "k8s-tunnels").len() == 1).then_some(())
    })
    .await;
    close_app_window(&desktop.display, "k8s-tunnels", START).await;
    wait_until("the first window's process to end", CHANGE, || async {
        (!alive(first)).then_some(())
    })
    .await;

    // "Open window" in the tray starts the installed window binary again.
    tray.click_label("Open window").await;
    let window = wait_until("the installed window from Open window", START, || async {
        installed_window(tray_pid)
    })
    .await;

    // A demo-lab tunnel switched on in the tray menu carries kubectl.
    let sandbox = tray
        .built_layout(CHANGE)
        .await
        .find("sandbox")
        .expect("a sandbox item")
        .id;
    tray.click(sandbox).await;
    wait_until("one tunnel up in the tray", CHANGE, || async {
        describe(&tray.layout().await.children)
            .contains(&"1 tunnel up".to_string())
            .then_some(())
    })
    .await;
    let contexts = kubectl(&[&kubeconfig_arg, "config", "get-contexts", "-o", "name"])
        .await
        .expect("the kubeconfig parses");
    let context = contexts
        .lines()
        .find(|c| c.contains("sandbox"))
        .unwrap_or_else(|| panic!("no sandbox context in {contexts}"))
        .to_string();
    let context_arg = format!("--context={context}");
    let namespaces = wait_until("kubectl get ns through the tunnel", CHANGE, || async {
        kubectl(&[&kubeconfig_arg, &context_arg, "get", "ns"])
            .await
            .ok()
    })
    .await;
    assert!(namespaces.contains("default"), "{namespaces}");
    eprintln!("kubectl --context {context} get ns, through the installed app:\n{namespaces}");

    // "Start at login" (set as the window's Settings page does) writes an autostart entry
    // that starts the installed tray app, hidden.
    let client = Client::connect(&app_home.join("run/desktop.sock"))
        .await
        .expect("the control socket");
    let current = client.settings().await.expect("settings");
    client
        .save_settings(Settings {
            start_at_login: true,
            ..current
        })
        .await
        .expect("save the settings");
    let autostart = std::fs::read_to_string(config_home.join("autostart/k8s-tunnels.desktop"))
        .expect("the autostart entry");
    let (login_program, login_args) =
        resolve_exec(entry_value(&autostart, "Exec").expect("autostart Exec"));
    assert_eq!(login_program, program, "{autostart}");
    assert_eq!(login_args, [k8s_tunnels_desktop::HIDDEN_ARG], "{autostart}");
    drop(client);

    // Quit ends the tray app and its window.
    tray.quit().await;
    wait_until("the tray and the window to exit", CHANGE, || async {
        (!alive(tray_pid) && !alive(window)).then_some(())
    })
    .await;
    drop(app);

    // Removal takes the programs and leaves the user's files: the kubeconfig still parses and
    // keeps their own context (and their current one), the app's state stays where it was.
    installed.remove();
    for program in ["k8s-tunnels", "k8s-tunnels-desktop", "k8s-tunnels-window"] {
        assert!(
            !Path::new("/usr/bin").join(program).exists(),
            "{program} left behind"
        );
    }
    let contexts = kubectl(&[&kubeconfig_arg, "config", "get-contexts", "-o", "name"])
        .await
        .expect("the kubeconfig parses after removal");
    assert!(contexts.lines().any(|c| c == "my-own"), "{contexts}");
    let current = kubectl(&[&kubeconfig_arg, "config", "current-context"])
        .await
        .expect("current context");
    assert_eq!(current.trim(), "my-own");
    let state = app_home.join("state/state.json");
    assert!(state.is_file(), "no state left at {}", state.display());
}
