//! Start at login, end to end: the window's settings reach the real tray process over its
//! control socket, and switching "start at login" on writes an XDG autostart entry that starts
//! this very binary with `--hidden`; switching it off removes the entry. The app runs as a
//! child with its own `HOME` and `XDG_CONFIG_HOME`, so this test's environment is untouched.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_tunnels::state::Settings;
use k8s_tunnels_desktop::control::Client;
use k8s_tunnels_desktop::ipc::WindowCommands;
use support::desktop::{Bus, Reaped, wait_until};

#[test]
fn start_at_login_writes_and_removes_the_autostart_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let user_home = tmp.path().join("user");
    let config_home = user_home.join(".config");
    std::fs::create_dir_all(&config_home).expect("config home");
    let bus = Bus::start();
    let binary = env!("CARGO_BIN_EXE_k8s-tunnels-desktop");
    let app = Reaped(
        Command::new(binary)
            .arg(k8s_tunnels_desktop::HIDDEN_ARG)
            .env("HOME", &user_home)
            .env("XDG_CONFIG_HOME", &config_home)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("K8S_TUNNELS_HOME", tmp.path().join("home"))
            .env("KUBECONFIG", tmp.path().join("kubeconfig"))
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env_remove("DISPLAY")
            .env_remove("K8S_TUNNELS_CONFIG")
            .env_remove("K8S_TUNNELS_INVENTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the app"),
    );
    let entry = config_home.join("autostart/k8s-tunnels.desktop");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let socket = tmp.path().join("home/run/desktop.sock");
    let client = rt.block_on(wait_until(
        "the control socket",
        Duration::from_secs(60),
        || async { Client::connect(&socket).await.ok() },
    ));
    let save = |start_at_login: bool| {
        let current = rt.block_on(client.settings()).expect("settings");
        let settings = Settings {
            start_at_login,
            ..current
        };
        rt.block_on(client.save_settings(settings))
            .expect("save the settings");
    };
    assert!(!entry.exists(), "an entry before any setting");

    save(true);
    let text = std::fs::read_to_string(&entry).expect("the autostart entry is written");
    let exec: Vec<&str> = text.lines().filter(|l| l.starts_with("Exec=")).collect();
    assert_eq!(
        exec,
        [format!("Exec={binary} {}", k8s_tunnels_desktop::HIDDEN_ARG)],
        "{text}"
    );
    assert!(text.starts_with("[Desktop Entry]\n"), "{text}");
    assert!(text.contains("\nType=Application\n"), "{text}");

    save(false);
    assert!(
        !entry.exists(),
        "the entry is still there after switching it off"
    );
    drop(app);
}
