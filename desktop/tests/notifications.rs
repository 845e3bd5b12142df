//! Desktop notifications reach a real notification server: dunst on a private D-Bus session
//! (under Xvfb, which dunst needs). Killing the lab gateway with three tunnels up yields exactly
//! one "tunnels dropped" notification, read back from dunst's history; restarting it exactly one
//! "tunnels back". The same when the edge stalls instead (a relay process in front of it
//! stopped with SIGSTOP, as after a sleep or on a frozen network) and then resumes. A cluster
//! behind the lab's Access login with no token shows "Login required", and a click on it
//! (dunst's default action) opens the sign-in in the browser.
//!
//! notify-rust finds the bus through `DBUS_SESSION_BUS_ADDRESS`, which a test must not change
//! in its own process; so the test starts the peers, then runs the scenario in a child process
//! (this test binary, the ignored test below) with the private bus in its environment.

#[path = "../../tests/support/fault_proxy.rs"]
mod fault_proxy;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_tunnels::app::{App, AppOptions};
use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::inventory::{Cloud, OriginMode};
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::lab::{Lab, LabAccess, LabClusterSpec, LabConfig};
use k8s_tunnels::tunnel::health::TunnelState;
use k8s_tunnels_desktop::notify::{APP_NAME, Notifier};
use k8s_tunnels_desktop::shell::{RunInfo, Shell};
use support::desktop::{Desktop, Reaped, require};
use support::{World, wait_for};

const CHILD_ENV: &str = "K8S_TUNNELS_NOTIFY_TEST_CHILD";

/// How the edge goes away in a scenario (the value of [`CHILD_ENV`]).
const KILLED: &str = "killed";
const STALLED: &str = "stalled";
/// Not an edge fault: a tunnel whose Access login is required.
const LOGIN: &str = "login";

#[test]
fn a_dropped_edge_is_one_notification_and_its_return_another() {
    run_with_dunst(KILLED);
}

#[test]
fn a_stalled_edge_is_one_notification_and_its_resumption_another() {
    run_with_dunst(STALLED);
}

#[test]
fn a_click_on_login_required_opens_the_sign_in() {
    run_with_dunst(LOGIN);
}

/// Not a test of its own: the relay process of the stalled scenario (see `fault_proxy.rs`).
#[test]
#[ignore = "run by the stalled scenario as its relay process"]
fn fault_proxy_child() {
    fault_proxy::child_main();
}

/// Starts Xvfb, a private bus and dunst, runs the scenario in a child process on that bus and
/// checks it passed.
fn run_with_dunst(fault: &str) {
    for (program, package) in [
        ("dbus-daemon", "dbus-daemon"),
        ("dunst", "dunst"),
        ("dunstctl", "dunst"),
        ("Xvfb", "xvfb"),
    ] {
        require(program, package);
    }
    let tmp = tempfile::tempdir().expect("tmp");

    // A virtual display for dunst and a private session bus, both stopped on drop.
    let desktop = Desktop::start(800, 600);
    let (display, bus) = (&desktop.display, &desktop.bus);

    let dunstrc = tmp.path().join("dunstrc");
    std::fs::write(
        &dunstrc,
        "[global]\n    history_length = 100\n    sticky_history = yes\n    idle_threshold = 0\n",
    )
    .expect("dunstrc");
    let _dunst = Reaped(
        Command::new("dunst")
            .arg("-config")
            .arg(&dunstrc)
            .env("DISPLAY", display)
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dunst"),
    );
    wait_for("dunst on the private bus", || {
        dunstctl(bus, &["count", "history"]).ok()
    });

    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "scenario_in_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, fault)
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .env_remove("DISPLAY")
        .output()
        .expect("run the scenario");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(child.status.success(), "scenario failed:\n{output}");
    assert!(
        output.contains("1 passed"),
        "the scenario did not run:\n{output}"
    );
}

/// A cluster behind the lab's Access login, with no token yet: its tunnel says "login
/// required", the notification says so, and a click on it opens the sign-in in the browser
/// (here a script that records the URL it is given, as `access.browser` allows).
fn login_scenario(bus: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let lab = rt
        .block_on(Lab::start(
            LabConfig::new(
                &tmp.path().join("lab"),
                vec![LabClusterSpec::new(
                    "alpha",
                    Cloud::Aws,
                    "test",
                    OriginMode::Tcp,
                )],
            )
            .with_access(LabAccess::default()),
        ))
        .expect("start the lab");
    let opened = tmp.path().join("opened");
    let browser = tmp.path().join("browser");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", opened.display()),
    )
    .expect("write the browser");
    // (The dunst scenarios run on Linux only; elsewhere this file only has to build.)
    #[cfg(unix)]
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the browser");
    let resolve: Vec<String> = lab
        .host_names()
        .iter()
        .map(|host| format!("\"{host}\": \"{}\"", lab.gateway_addr()))
        .collect();
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "access:\n  resolve: {{ {} }}\n  ca_file: \"{}\"\n  browser: \"{}\"\n",
            resolve.join(", "),
            lab.ca_path().display(),
            browser.display()
        ),
    )
    .expect("write config.yaml");
    let home = AppDirs::at(&tmp.path().join("home"));
    let app = App::load(
        home,
        AppOptions {
            config: Some(config),
            inventory: Some(lab.inventory_path().to_path_buf()),
            kubeconfig: Some(tmp.path().join("kubeconfig")),
        },
    )
    .expect("load the app");
    let keychain = Keychain::disabled("k8s-tunnels-test", "tests keep secrets in files");
    let (engine, _) = app
        .engine(&keychain, support::quick_schedule())
        .expect("engine");
    let run = RunInfo {
        keychain: keychain.status().clone(),
        inventory_file: app.inventory_path().to_path_buf(),
    };
    let shell = Shell::start(app, engine, None, run);
    let _notifier = Notifier::with_timing(&shell, Duration::from_secs(1), Duration::from_secs(5));

    rt.block_on(shell.connect("file:alpha")).expect("connect");
    wait_for("alpha's login required", || {
        let status = shell.engine().status();
        status
            .iter()
            .any(|s| s.state == TunnelState::LoginRequired)
            .then_some(())
    });
    settled_displayed(bus, 1);
    assert!(!opened.exists(), "a browser opened before the click");

    // The user clicks the notification (its default action).
    dunstctl(bus, &["action", "0"]).expect("dunstctl action");
    let url = wait_for("the sign-in opened in the browser", || {
        std::fs::read_to_string(&opened).ok()
    });
    let url = url::Url::parse(url.trim()).expect("a URL");
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.host_str(), Some(lab.access_hostname("alpha").as_str()));
    assert_eq!(url.path(), "/cdn-cgi/access/cli", "{url}");
    let shown = history(bus);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].0, "Login required");
    rt.block_on(shell.shutdown());
}

fn dunstctl(bus: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("dunstctl")
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every notification of the app dunst has shown, oldest first: (summary, body). Closing the
/// shown ones first moves them into the history. In dunst's order (newest first, reversed), not
/// by id: a notification that takes the place of a closed one may keep its id.
fn history(bus: &str) -> Vec<(String, String)> {
    dunstctl(bus, &["close-all"]).expect("dunstctl close-all");
    k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
    let json = dunstctl(bus, &["history"]).expect("dunstctl history");
    let value: serde_json::Value = serde_json::from_str(&json).expect("history is JSON");
    let text =
        |n: &serde_json::Value, key: &str| n[key]["data"].as_str().unwrap_or_default().to_string();
    value["data"][0]
        .as_array()
        .expect("history list")
        .iter()
        .rev()
        .filter(|n| n["appname"]["data"] == APP_NAME)
        .map(|n| (text(n, "summary"), text(n, "body")))
        .collect()
}

/// Waits until dunst shows notifications, then long enough that another of the same burst
/// would have come too, and checks that exactly `n` are on screen (none closed to look).
fn settled_displayed(bus: &str, n: usize) {
    let displayed = || {
        dunstctl(bus, &["count", "displayed"])
            .expect("dunstctl count")
            .trim()
            .parse::<usize>()
            .expect("a count")
    };
    wait_for("a notification on screen", || {
        (displayed() > 0).then_some(())
    });
    k8s_tunnels::sync::pause_blocking(Duration::from_secs(4));
    assert_eq!(displayed(), n, "notifications on screen");
}

fn wait_all(world: &World, state: TunnelState) {
    wait_for(&format!("every tunnel {state}"), || {
        let status = world.shell.engine().status();
        (status.len() == 3 && status.iter().all(|s| s.state == state)).then_some(())
    });
}

#[test]
#[ignore = "run in a child process by the scenarios above"]
fn scenario_in_child_process() {
    let fault = std::env::var(CHILD_ENV)
        .expect("run by a_dropped_edge_is_one_notification_and_its_return_another, not alone");
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").expect("private bus");
    if fault == LOGIN {
        return login_scenario(&bus);
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut relay = None;
    let mut world = World::start_via(tmp.path(), |gateway| {
        (fault == STALLED).then(|| relay.insert(fault_proxy::FaultProxy::start(gateway)).addr())
    });
    let _notifier = {
        let _guard = world.rt.enter();
        Notifier::with_timing(&world.shell, Duration::from_secs(1), Duration::from_secs(5))
    };
    for name in ["alpha", "beta", "gamma"] {
        let id = world.id(name);
        world
            .rt
            .block_on(world.shell.connect(&id))
            .expect("connect");
    }
    wait_all(&world, TunnelState::Up);
    k8s_tunnels::sync::pause_blocking(Duration::from_secs(3));
    assert_eq!(history(&bus), [], "connecting is not news");

    match &relay {
        Some(relay) => relay.stall(),
        None => world.rt.block_on(world.lab.stop_gateway()),
    }
    wait_all(&world, TunnelState::Down);
    settled_displayed(&bus, 1);

    if fault == STALLED {
        // A click on the drop notification (its default action) retries the tunnels now.
        dunstctl(&bus, &["action", "0"]).expect("dunstctl action");
        wait_for("a retry of every dropped tunnel", || {
            let retried: Vec<String> = world
                .shell
                .activity()
                .into_iter()
                .filter(|a| a.message == "retrying now")
                .filter_map(|a| a.cluster)
                .collect();
            ["alpha", "beta", "gamma"]
                .iter()
                .all(|n| retried.iter().any(|r| r == n))
                .then_some(())
        });
        let shown = history(&bus);
        assert_eq!(shown.len(), 1, "one notification per burst: {shown:?}");
        assert_eq!(shown[0].0, "3 tunnels dropped");
        for name in ["alpha", "beta", "gamma"] {
            assert!(shown[0].1.contains(&format!("{name}: ")), "{shown:?}");
        }
    }

    match &relay {
        Some(relay) => relay.resume(),
        None => world
            .rt
            .block_on(world.lab.start_gateway())
            .expect("restart the gateway"),
    }
    wait_all(&world, TunnelState::Up);
    // The news that they are back takes the place of the drop, which would otherwise stay on
    // screen (it is critical) above it.
    settled_displayed(&bus, 1);
    let shown = history(&bus);
    let back = (
        "3 tunnels back".to_string(),
        "alpha, beta, gamma are up again.".to_string(),
    );
    if fault == STALLED {
        assert_eq!(shown.len(), 2, "one more notification: {shown:?}");
        assert_eq!(shown[1], back);
    } else {
        assert_eq!(shown, [back], "the drop notification was replaced");
    }

    world.rt.block_on(world.shell.shutdown());
}
