//! The tray menu as a desktop shell sees it: the real app, under Xvfb on a private D-Bus
//! session where this test is the `org.kde.StatusNotifierWatcher`, registers a
//! StatusNotifierItem whose dbusmenu layout lists the favourites first (checkboxes), then a
//! submenu per cloud, the status line and the actions.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::{OwnedObjectPath, OwnedVariant as OwnedValue, Variant as Value};

/// Kills and reaps a process we started when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_with_first_line(mut command: Command, what: &str) -> (Reaped, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} (scripts/install-desktop-deps): {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let child = Reaped(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("cannot read from {what}: {e}"));
    assert!(!line.trim().is_empty(), "{what} printed nothing");
    (child, line.trim().to_string())
}

/// The items registered with the watcher: (bus name, object path).
#[derive(Clone, Default)]
struct Watcher {
    items: Arc<Mutex<Vec<(String, String)>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(
        &self,
        service: &str,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        // Items register either a bus name (path /StatusNotifierItem) or an object path on
        // their own connection (libappindicator does the latter).
        let item = if service.starts_with('/') {
            (sender, service.to_string())
        } else {
            (service.to_string(), "/StatusNotifierItem".to_string())
        };
        self.items.lock().expect("items").push(item);
    }

    fn register_status_notifier_host(&self, _service: &str) {}

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items
            .lock()
            .expect("items")
            .iter()
            .map(|(name, path)| format!("{name}{path}"))
            .collect()
    }

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// The dbusmenu calls the test makes.
enum MenuCall {
    /// `GetLayout` of the whole tree.
    Layout,
    /// `Event(id, "clicked", …)`.
    Click(i32),
}

/// `GetLayout`'s reply: revision, (id, properties, children).
type Layout = (u32, (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>));

/// One dbusmenu node: label, properties of interest, children.
#[derive(Debug)]
struct Node {
    id: i32,
    label: String,
    kind: String,
    checkmark: bool,
    checked: bool,
    children: Vec<Node>,
}

fn node(value: &Value<'_>) -> Node {
    let value = match value {
        Value::Variant(inner) => inner.as_ref(),
        other => other,
    };
    let Value::Structure(s) = value else {
        panic!("not a layout node: {value:?}")
    };
    let fields = s.fields();
    let props: HashMap<String, OwnedValue> = match &fields[1] {
        Value::Dict(d) => d.try_clone().expect("clone").try_into().expect("a{sv}"),
        other => panic!("not a property map: {other:?}"),
    };
    let text = |key: &str| {
        props
            .get(key)
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default()
    };
    let children = match &fields[2] {
        Value::Array(a) => a.iter().map(node).collect(),
        other => panic!("not a child list: {other:?}"),
    };
    Node {
        id: match &fields[0] {
            Value::I32(id) => *id,
            other => panic!("not an item id: {other:?}"),
        },
        label: text("label").replace('_', ""),
        kind: text("type"),
        checkmark: text("toggle-type") == "checkmark",
        checked: props
            .get("toggle-state")
            .and_then(|v| i32::try_from(v.try_clone().ok()?).ok())
            == Some(1),
        children,
    }
}

fn describe(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| {
            if n.kind == "separator" {
                "---".to_string()
            } else if n.checkmark {
                format!("[{}] {}", if n.checked { "x" } else { " " }, n.label)
            } else if !n.children.is_empty() {
                format!("{} >", n.label)
            } else {
                n.label.clone()
            }
        })
        .collect()
}

#[test]
fn the_tray_is_a_status_notifier_item_with_favourites_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut xvfb = Command::new("Xvfb");
    xvfb.args([
        "-displayfd",
        "1",
        "-nolisten",
        "tcp",
        "-screen",
        "0",
        "1024x768x24",
    ]);
    let (_xvfb, display) = start_with_first_line(xvfb, "Xvfb");
    let mut dbus = Command::new("dbus-daemon");
    dbus.args(["--session", "--nofork", "--print-address=1"]);
    let (_dbus, bus) = start_with_first_line(dbus, "dbus-daemon");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let watcher = Watcher::default();
    let conn = rt
        .block_on(async {
            zbus::connection::Builder::address(bus.as_str())
                .name("org.kde.StatusNotifierWatcher")
                .serve_at("/StatusNotifierWatcher", watcher.clone())
                .build()
                .await
        })
        .expect("serve the watcher");

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
            .env("DISPLAY", format!(":{display}"))
            .env("DBUS_SESSION_BUS_ADDRESS", &bus)
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

    let deadline = Instant::now() + Duration::from_secs(60);
    let (service, path) = loop {
        if let Some(item) = watcher.items.lock().expect("items").first().cloned() {
            break item;
        }
        assert!(Instant::now() < deadline, "the app registered no tray item");
        std::thread::sleep(Duration::from_millis(100));
    };

    let get = |iface: &'static str, prop: &'static str| {
        rt.block_on(async {
            let reply = conn
                .call_method(
                    Some(service.as_str()),
                    path.as_str(),
                    Some("org.freedesktop.DBus.Properties"),
                    "Get",
                    &(iface, prop),
                )
                .await?;
            reply.body().deserialize::<OwnedValue>()
        })
    };
    let id = get("org.kde.StatusNotifierItem", "Id").expect("Id");
    assert!(String::try_from(id).is_ok());
    let menu = get("org.kde.StatusNotifierItem", "Menu").expect("Menu");
    let menu = OwnedObjectPath::try_from(menu).expect("menu path");
    let dbusmenu = |method: &'static str, body: MenuCall| match body {
        MenuCall::Layout => rt.block_on(conn.call_method(
            Some(service.as_str()),
            menu.as_str(),
            Some("com.canonical.dbusmenu"),
            method,
            &(0i32, -1i32, Vec::<String>::new()),
        )),
        MenuCall::Click(id) => rt.block_on(conn.call_method(
            Some(service.as_str()),
            menu.as_str(),
            Some("com.canonical.dbusmenu"),
            method,
            &(id, "clicked", Value::from(0i32), 0u32),
        )),
    };
    let fetch = || {
        let reply = dbusmenu("GetLayout", MenuCall::Layout).expect("GetLayout");
        let body = reply.body();
        let (_revision, (_id, _props, children)): Layout = body.deserialize().expect("layout");
        Node {
            id: 0,
            label: String::new(),
            kind: String::new(),
            checkmark: false,
            checked: false,
            children: children.iter().map(|c| node(c)).collect(),
        }
    };
    // The menu is built as the app starts; wait until it has its items.
    let layout = support::wait_for("the tray menu", || {
        let layout = fetch();
        (layout.children.len() > 5).then_some(layout)
    });

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
    let favourite = layout.children[0].id;
    dbusmenu("Event", MenuCall::Click(favourite)).expect("click");
    support::wait_for("prod-us checked in the tray", || {
        let top = describe(&fetch().children);
        (top[0] == "[x] prod-us" && top.contains(&"1 tunnel up".to_string())).then_some(())
    });

    // Quit closes the tunnel and ends the app.
    let quit = fetch().children.last().map(|n| n.id).expect("quit item");
    dbusmenu("Event", MenuCall::Click(quit)).expect("click quit");
    let status = support::wait_for("the app to exit", || app.0.try_wait().expect("wait"));
    assert!(status.success(), "{status}");
}
