//! The tray menu as a desktop shell sees it: the real tray process (`--hidden`, no display at
//! all), on a private D-Bus session where this test is the `org.kde.StatusNotifierWatcher`,
//! registers a StatusNotifierItem whose dbusmenu layout lists the favourites first
//! (checkboxes), then a submenu per cloud, the status line and the actions. The process never
//! maps GTK or WebKit. Without a tray host it runs on, and shows its item when one comes.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_tunnels::tunnel::health::TunnelState;
use k8s_tunnels_desktop::control::Client;
use k8s_tunnels_desktop::ipc::{ClusterRow, WindowCommands};
use support::desktop::{
    Bus, Reaped, Tray, describe, mapped_libraries, poll_until, serve_watcher, wait_until,
};

/// What the tray process must never load: the window's toolkit and webview, and the GPU
/// stack that comes with them.
const WINDOW_LIBRARIES: [&str; 4] = ["libgtk", "libwebkit2gtk", "libjavascriptcoregtk", "libLLVM"];

/// Starts the tray process on `bus`, its files under `dir`, on the demo lab (nothing
/// configured); stderr goes to `dir/stderr`.
fn start_app(bus: &Bus, dir: &Path) -> Reaped {
    let home = dir.join("home");
    let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    Reaped(
        Command::new(env!("CARGO_BIN_EXE_k8s-tunnels-desktop"))
            .arg(k8s_tunnels_desktop::HIDDEN_ARG)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("K8S_TUNNELS_HOME", &home)
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env_remove("K8S_TUNNELS_CONFIG")
            .env_remove("K8S_TUNNELS_INVENTORY")
            .env_remove("K8S_TUNNELS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the app"),
    )
}

#[test]
fn the_tray_is_a_status_notifier_item_with_favourites_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bus = Bus::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (conn, watcher) = rt.block_on(serve_watcher(&bus.address));

    // Two favourites in the app state; nothing configured, so the app runs on the demo lab.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("state")).expect("state dir");
    std::fs::write(
        home.join("state/state.json"),
        r#"{"version": 1, "favourites": ["file:sandbox", "file:prod-us"]}"#,
    )
    .expect("state");
    let mut app = start_app(&bus, tmp.path());

    let tray = rt.block_on(Tray::wait(&conn, &watcher, Duration::from_secs(60)));
    assert_eq!(rt.block_on(tray.item_string("Id")), "k8s-tunnels");
    assert_eq!(
        rt.block_on(tray.item_string("Category")),
        "ApplicationStatus"
    );
    // The menu is built as the app starts; wait until it has its items.
    let layout = rt.block_on(tray.built_layout(Duration::from_secs(30)));

    let top = describe(&layout.children);
    assert_eq!(
        top,
        [
            "[ ] prod-us",
            "[ ] sandbox",
            "---",
            "AWS >",
            "Google Cloud >",
            "On-premises >",
            "---",
            "No tunnels up",
            "Disconnect all",
            "Refresh discovery",
            "---",
            "Open window",
            k8s_tunnels_desktop::menu::VERSION_LINE,
            "Quit",
        ],
        "{layout:#?}"
    );
    let aws = &layout.children[3];
    assert_eq!(describe(&aws.children), ["prod >", "staging >"]);
    assert_eq!(
        describe(&aws.children[0].children),
        ["[ ] prod-eu", "[ ] prod-us"]
    );
    // Environments in the library's one order, production first, as in the window.
    assert_eq!(
        describe(&layout.children[4].children),
        ["prod >", "staging >", "dev >"]
    );

    // A click on a favourite connects it; the menu follows: checked, and the status line.
    rt.block_on(tray.click(layout.children[0].id));
    rt.block_on(wait_until(
        "prod-us checked in the tray",
        Duration::from_secs(30),
        || async {
            let top = describe(&tray.layout().await.children);
            (top[0] == "[x] prod-us"
                && top.contains(&"AWS (1 up) >".to_string())
                && top.contains(&"1 tunnel up".to_string()))
            .then_some(())
        },
    ));

    // The title says the state, then what the cluster's API server answered through the
    // tunnel (within a probe period of the tunnel coming up).
    let title = rt.block_on(wait_until(
        "the API's answer in the title",
        Duration::from_secs(30),
        || async {
            let title = tray.item_string("Title").await;
            title.contains(" — prod-us v1.").then_some(title)
        },
    ));
    assert!(
        title.starts_with("k8s-tunnels: 1 tunnel up — prod-us v1."),
        "{title}"
    );
    assert!(title.ends_with(" ms"), "{title}");

    // The design's invariant: the process that runs all day never loads the window's
    // libraries. Read from its memory map, which lists every shared object it has loaded.
    let pid = app.pid();
    assert!(
        !mapped_libraries(pid, &["libc.so", "libc-"]).is_empty(),
        "the memory map of {pid} lists no libc: the check below would prove nothing"
    );
    let loaded = mapped_libraries(pid, &WINDOW_LIBRARIES);
    assert!(
        loaded.is_empty(),
        "the tray process maps the window's libraries: {loaded:#?}"
    );

    // Quit closes the tunnel and ends the app.
    rt.block_on(tray.quit());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = app.0.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the app did not exit");
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn without_a_tray_host_the_app_runs_on_and_shows_its_item_when_one_comes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bus = Bus::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut app = start_app(&bus, tmp.path());
    let stderr = || std::fs::read_to_string(tmp.path().join("stderr")).unwrap_or_default();
    let warning = "no tray host on this desktop";

    // It says so once, and serves the window's control socket all the same.
    rt.block_on(wait_until(
        "the no-tray-host warning",
        Duration::from_secs(60),
        || async { stderr().contains(warning).then_some(()) },
    ));
    let socket = tmp.path().join("home/run/desktop.sock");
    let client = rt.block_on(wait_until(
        "the control socket",
        Duration::from_secs(30),
        || async { Client::connect(&socket).await.ok() },
    ));
    let clusters = rt.block_on(client.clusters()).expect("clusters");
    assert_eq!(clusters.len(), 8, "{clusters:?}");
    assert!(app.0.try_wait().expect("wait").is_none(), "the app exited");

    // A tray host starts: the item registers, with its menu.
    let (conn, watcher) = rt.block_on(serve_watcher(&bus.address));
    let tray = rt.block_on(Tray::wait(&conn, &watcher, Duration::from_secs(30)));
    let layout = rt.block_on(tray.built_layout(Duration::from_secs(30)));
    assert!(layout.find("Quit").is_some(), "{layout:#?}");
    assert_eq!(
        stderr().matches(warning).count(),
        1,
        "one warning, not one per attempt:\n{}",
        stderr()
    );
    rt.block_on(tray.quit());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.0.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "the app did not exit");
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
    }
}

/// The tunnel state of cluster `id` in a `clusters` reply, `None` while it has no tunnel.
fn tunnel_state(clusters: &[ClusterRow], id: &str) -> Option<TunnelState> {
    clusters
        .iter()
        .find(|row| row.id.0 == id)?
        .tunnel
        .as_ref()
        .map(|tunnel| tunnel.state)
}

/// Waits until the app started in `dir` has ended by itself (after Quit); says what it
/// logged when it does not.
fn wait_exit(app: &mut Reaped, dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.0.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let log = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
            panic!("the app did not exit within 30 s of Quit; its log:\n{log}");
        }
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
    }
}

#[test]
fn tunnels_on_at_quit_come_back_at_the_next_start_unless_that_is_switched_off() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bus = Bus::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (conn, watcher) = rt.block_on(serve_watcher(&bus.address));
    let socket = tmp.path().join("home/run/desktop.sock");
    let connect = || {
        rt.block_on(wait_until(
            "the control socket",
            Duration::from_secs(60),
            || async { Client::connect(&socket).await.ok() },
        ))
    };

    // First run: prod-us and sandbox switched on, sandbox off again; then Quit from the tray.
    let mut app = start_app(&bus, tmp.path());
    let client = connect();
    for id in ["file:prod-us", "file:sandbox"] {
        rt.block_on(WindowCommands::connect(&client, id.into()))
            .unwrap_or_else(|e| panic!("connect {id}: {e:?}"));
    }
    rt.block_on(client.disconnect("file:sandbox".into()))
        .expect("disconnect sandbox");
    let tray = rt.block_on(Tray::wait_nth(&conn, &watcher, 0, Duration::from_secs(60)));
    let shown = rt.block_on(poll_until(Duration::from_secs(30), || async {
        describe(&tray.layout().await.children)
            .contains(&"1 tunnel up".to_string())
            .then_some(())
    }));
    if shown.is_none() {
        let menu = describe(&rt.block_on(tray.layout()).children);
        let clusters = rt.block_on(client.clusters());
        let log = std::fs::read_to_string(tmp.path().join("stderr")).unwrap_or_default();
        panic!(
            "timed out after 30 s waiting for the tray showing prod-us up\n\
             menu: {menu:?}\nclusters: {clusters:?}\nthe app's log:\n{log}"
        );
    }
    rt.block_on(tray.quit());
    wait_exit(&mut app, tmp.path());
    drop(client);

    // Second run: prod-us comes back by itself; sandbox, switched off, does not.
    let mut app = start_app(&bus, tmp.path());
    let client = connect();
    let clusters = rt.block_on(wait_until(
        "prod-us reopened and up",
        Duration::from_secs(60),
        || async {
            let clusters = client.clusters().await.ok()?;
            (tunnel_state(&clusters, "file:prod-us") == Some(TunnelState::Up)).then_some(clusters)
        },
    ));
    assert_eq!(
        tunnel_state(&clusters, "file:sandbox"),
        None,
        "{clusters:?}"
    );

    // The user switches "Reconnect at start" off: the next start opens nothing.
    let mut settings = rt.block_on(client.settings()).expect("settings");
    assert!(settings.reconnect_at_start, "on by default");
    settings.reconnect_at_start = false;
    rt.block_on(client.save_settings(settings))
        .expect("save the settings");
    let tray = rt.block_on(Tray::wait_nth(&conn, &watcher, 1, Duration::from_secs(60)));
    rt.block_on(tray.quit());
    wait_exit(&mut app, tmp.path());
    drop(client);

    let mut app = start_app(&bus, tmp.path());
    let client = connect();
    let tray = rt.block_on(Tray::wait_nth(&conn, &watcher, 2, Duration::from_secs(60)));
    rt.block_on(tray.built_layout(Duration::from_secs(30)));
    // Reopening is done before the control socket answers; the pause gives a reopen that came
    // later all the same (the race this order closes) time to show.
    k8s_tunnels::sync::pause_blocking(Duration::from_secs(2));
    let clusters = rt.block_on(client.clusters()).expect("clusters");
    assert_eq!(
        tunnel_state(&clusters, "file:prod-us"),
        None,
        "{clusters:?}"
    );
    rt.block_on(tray.quit());
    wait_exit(&mut app, tmp.path());
}
