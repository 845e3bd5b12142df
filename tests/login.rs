//! The Access login end to end: the real CLI and AccessClient against the gateway playing
//! Cloudflare's edge (metadata, auth domain, sign-in page, token transfer), with the browser
//! played by an HTTP client or by headless Chromium.
#![allow(clippy::unwrap_used)]

#[path = "support/browsers.rs"]
mod browsers;
mod support;

use std::process::Command;

use support::{CliWorld, text};

/// No D-Bus session at all: the CLI says tokens stay in memory, and carries on.
#[test]
fn without_dbus_the_cli_warns_and_works() {
    let root = tempfile::tempdir().unwrap();
    let inventory = root.path().join("inventory.yaml");
    std::fs::write(&inventory, "clusters: []\n").unwrap();
    let world = CliWorld::new(root.path(), &inventory);
    let out = no_dbus(world.command(&["auth", "status", "--json"]))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: no OS keychain"), "{stderr}");
    assert!(stderr.contains("in memory"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["store"], "memory");
}

/// The command without a keychain switch and with a session bus address that leads nowhere.
fn no_dbus(mut cmd: Command) -> Command {
    cmd.env_remove("K8S_TUNNELS_KEYCHAIN")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/k8s-tunnels-test-bus",
        )
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}
