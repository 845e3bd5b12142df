//! The tray menu as a desktop shell sees it: the real app, under Xvfb on a private D-Bus
//! session where this test is the `org.kde.StatusNotifierWatcher`, registers a
//! StatusNotifierItem whose dbusmenu layout lists the favourites first (checkboxes), then a
//! submenu per cloud, the status line and the actions.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::desktop::{Desktop, Reaped, Tray, describe, serve_watcher, wait_until};

#[test]
fn the_tray_is_a_status_notifier_item_with_favourites_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let desktop = Desktop::start(1024, 768);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (conn, watcher) = rt.block_on(serve_watcher(&desktop.bus));

    // Two favourites in the app state; nothing configured, so the app runs on the demo lab.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("state")).expect("state dir");
    std::fs::write(
        home.join("state/state.json"),
        r#"{"version": 1, "favourites": ["file:sandbox", "file:prod-us"]}"#,
    )
    .expect("state");
    let mut app = Reaped(
        Command::new(env!("CARGO_BIN_EXE_k8s-tunnels-desktop"))
            .arg(k8s_tunnels_desktop::HIDDEN_ARG)
            .env("DISPLAY", &desktop.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &desktop.bus)
            .env("K8S_TUNNELS_HOME", &home)
            .env("KUBECONFIG", tmp.path().join("kubeconfig"))
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env_remove("K8S_TUNNELS_CONFIG")
            .env_remove("K8S_TUNNELS_INVENTORY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the app"),
    );

    let tray = rt.block_on(Tray::wait(&conn, &watcher, Duration::from_secs(60)));
    let id = rt
        .block_on(tray.property("org.kde.StatusNotifierItem", "Id"))
        .expect("Id");
    assert!(String::try_from(id).is_ok());
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

    // A click on a favourite connects it; the menu follows: checked, and the status line.
    rt.block_on(tray.click(layout.children[0].id));
    rt.block_on(wait_until(
        "prod-us checked in the tray",
        Duration::from_secs(30),
        || async {
            let top = describe(&tray.layout().await.children);
            (top[0] == "[x] prod-us" && top.contains(&"1 tunnel up".to_string())).then_some(())
        },
    ));

    // Quit closes the tunnel and ends the app.
    rt.block_on(tray.quit());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = app.0.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the app did not exit");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}
