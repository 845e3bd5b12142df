//! A desktop for the real app: Xvfb on a free display, a private D-Bus session (alone, [`Bus`],
//! for the tray process, which needs no display) where the test is the
//! `org.kde.StatusNotifierWatcher` (what a desktop shell's tray is), and a dbusmenu client that
//! reads and clicks the app's tray menu. Shared by the tray and WebDriver tests and the
//! desktop benchmark (`examples/bench_idle.rs` includes this file).
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::{OwnedObjectPath, OwnedVariant as OwnedValue, Variant as Value};

/// Kills and reaps a process we started when dropped.
pub struct Reaped(pub Child);

impl Reaped {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails loudly when `program` is not on PATH, naming the package that provides it.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()));
    assert!(
        found,
        "{program} is required: install {package} (scripts/install-desktop-deps)"
    );
}

/// Starts `command` and returns it with the first line it prints on stdout.
pub fn start_with_first_line(mut command: Command, what: &str) -> (Reaped, String) {
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

/// A virtual display and a private session bus; both stop when dropped.
pub struct Desktop {
    /// `DISPLAY` for the app, e.g. `:99`.
    pub display: String,
    /// `DBUS_SESSION_BUS_ADDRESS` for the app.
    pub bus: String,
    _dbus: Reaped,
    _xvfb: Reaped,
}

impl Desktop {
    /// Starts Xvfb (on a display it picks itself, so parallel runs never collide) with a
    /// screen of `width`×`height`, and a private `dbus-daemon --session`.
    pub fn start(width: u32, height: u32) -> Self {
        require("Xvfb", "xvfb");
        require("dbus-daemon", "dbus-daemon");
        let mut xvfb = Command::new("Xvfb");
        // -noreset: Xvfb would otherwise reset when its last client leaves (the window
        // closing), and a test connecting just then would see its connection reset.
        xvfb.args([
            "-displayfd",
            "1",
            "-noreset",
            "-nolisten",
            "tcp",
            "-screen",
            "0",
            &format!("{width}x{height}x24"),
        ]);
        let (xvfb, display) = start_with_first_line(xvfb, "Xvfb");
        let mut dbus = Command::new("dbus-daemon");
        dbus.args(["--session", "--nofork", "--print-address=1"]);
        let (dbus, bus) = start_with_first_line(dbus, "dbus-daemon");
        Self {
            display: format!(":{display}"),
            bus,
            _dbus: dbus,
            _xvfb: xvfb,
        }
    }
}

/// A private session bus alone, for what needs no display (the tray process, dunst-free
/// tests); it stops when dropped.
pub struct Bus {
    /// `DBUS_SESSION_BUS_ADDRESS` for the app.
    pub address: String,
    _dbus: Reaped,
}

impl Bus {
    /// Starts a private `dbus-daemon --session`.
    pub fn start() -> Self {
        require("dbus-daemon", "dbus-daemon");
        let mut dbus = Command::new("dbus-daemon");
        dbus.args(["--session", "--nofork", "--print-address=1"]);
        let (dbus, address) = start_with_first_line(dbus, "dbus-daemon");
        Self {
            address,
            _dbus: dbus,
        }
    }
}

/// The shared objects mapped into process `pid` whose file name starts with one of `prefixes`
/// (from `/proc/<pid>/maps`), each once.
pub fn mapped_libraries(pid: u32, prefixes: &[&str]) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/maps: {e}"));
    let mut found: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            prefixes.iter().any(|p| name.starts_with(p))
        })
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Polls `f` every 100 ms until it returns `Some`, for up to `timeout`; panics naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(timeout, f)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` every 100 ms until it returns `Some`, for up to `timeout`; `None` when it never
/// did (for a caller that says what it saw instead).
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The items registered with the watcher: (bus name, object path).
#[derive(Clone, Default)]
pub struct Watcher {
    items: Arc<Mutex<Vec<(String, String)>>>,
}

impl Watcher {
    /// The first item registered, if any.
    pub fn first_item(&self) -> Option<(String, String)> {
        self.item(0)
    }

    /// The item registered `index`th (from 0), if any: a restarted app registers anew.
    pub fn item(&self, index: usize) -> Option<(String, String)> {
        k8s_tunnels::sync::lock(&self.items).get(index).cloned()
    }
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
        k8s_tunnels::sync::lock(&self.items).push(item);
    }

    fn register_status_notifier_host(&self, _service: &str) {}

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        k8s_tunnels::sync::lock(&self.items)
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

/// Serves a [`Watcher`] on `bus`; keep the connection alive as long as the watcher is needed.
pub async fn serve_watcher(bus: &str) -> (zbus::Connection, Watcher) {
    let watcher = Watcher::default();
    let conn = zbus::connection::Builder::address(bus)
        .name("org.kde.StatusNotifierWatcher")
        .serve_at("/StatusNotifierWatcher", watcher.clone())
        .build()
        .await
        .expect("serve the watcher");
    (conn, watcher)
}

/// `GetLayout`'s reply: revision, (id, properties, children).
type Layout = (u32, (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>));

/// One dbusmenu node: label, properties of interest, children.
#[derive(Debug)]
pub struct Node {
    /// The dbusmenu item id (what a click names).
    pub id: i32,
    /// The label without mnemonic underscores.
    pub label: String,
    /// `separator` or empty.
    pub kind: String,
    /// A checkbox item.
    pub checkmark: bool,
    /// Its box is ticked.
    pub checked: bool,
    /// Submenu items.
    pub children: Vec<Node>,
}

impl Node {
    /// The item labelled `label` anywhere below this node.
    pub fn find(&self, label: &str) -> Option<&Node> {
        self.children
            .iter()
            .find_map(|c| (c.label == label).then_some(c).or_else(|| c.find(label)))
    }

    /// Every checkbox item below this node.
    pub fn checkboxes(&self) -> Vec<&Node> {
        let mut out = Vec::new();
        for c in &self.children {
            if c.checkmark {
                out.push(c);
            }
            out.extend(c.checkboxes());
        }
        out
    }
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

/// The menu one level deep as text: `[x] name`, `Group >`, `---`, labels.
pub fn describe(nodes: &[Node]) -> Vec<String> {
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

/// The app's tray item as the shell sees it: its properties and its dbusmenu.
pub struct Tray {
    conn: zbus::Connection,
    service: String,
    path: String,
    menu: OwnedObjectPath,
}

impl Tray {
    /// Waits (up to `timeout`) for the app to register its item with `watcher`, then finds its
    /// menu.
    pub async fn wait(conn: &zbus::Connection, watcher: &Watcher, timeout: Duration) -> Self {
        Self::wait_nth(conn, watcher, 0, timeout).await
    }

    /// [`Tray::wait`] for the item registered `index`th (from 0): the one of the app's
    /// `index`th start on this bus.
    pub async fn wait_nth(
        conn: &zbus::Connection,
        watcher: &Watcher,
        index: usize,
        timeout: Duration,
    ) -> Self {
        let (service, path) = wait_until("the app's tray item", timeout, || async {
            watcher.item(index)
        })
        .await;
        let mut tray = Self {
            conn: conn.clone(),
            service,
            path,
            menu: OwnedObjectPath::try_from("/").expect("path"),
        };
        let menu = tray
            .property("org.kde.StatusNotifierItem", "Menu")
            .await
            .expect("the item's Menu");
        tray.menu = OwnedObjectPath::try_from(menu).expect("menu path");
        tray
    }

    /// A property of the item.
    pub async fn property(&self, iface: &str, prop: &str) -> zbus::Result<OwnedValue> {
        let reply = self
            .conn
            .call_method(
                Some(self.service.as_str()),
                self.path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(iface, prop),
            )
            .await?;
        reply.body().deserialize::<OwnedValue>()
    }

    /// A string property of the StatusNotifierItem (`Id`, `Category`, `Title`, …).
    pub async fn item_string(&self, prop: &str) -> String {
        let value = self
            .property("org.kde.StatusNotifierItem", prop)
            .await
            .unwrap_or_else(|e| panic!("cannot read the item's {prop}: {e}"));
        String::try_from(value).unwrap_or_else(|e| panic!("the item's {prop} is no string: {e}"))
    }

    /// The whole menu tree (`GetLayout`); its root has no label.
    pub async fn layout(&self) -> Node {
        let reply = self
            .conn
            .call_method(
                Some(self.service.as_str()),
                self.menu.as_str(),
                Some("com.canonical.dbusmenu"),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .await
            .expect("GetLayout");
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
    }

    /// Waits (up to `timeout`) until the menu has been built (more than a handful of items).
    pub async fn built_layout(&self, timeout: Duration) -> Node {
        wait_until("the tray menu", timeout, || async {
            let layout = self.layout().await;
            (layout.children.len() > 5).then_some(layout)
        })
        .await
    }

    /// Clicks item `id`, as a shell does when the user picks it.
    pub async fn click(&self, id: i32) {
        self.try_click(id).await.expect("dbusmenu Event clicked");
    }

    async fn try_click(&self, id: i32) -> zbus::Result<()> {
        self.conn
            .call_method(
                Some(self.service.as_str()),
                self.menu.as_str(),
                Some("com.canonical.dbusmenu"),
                "Event",
                &(id, "clicked", Value::from(0i32), 0u32),
            )
            .await
            .map(drop)
    }

    /// Clicks Quit. The app may leave the bus before it answers the click: that is fine. A
    /// menu rebuilt between reading it and clicking (a tunnel changed state) renumbers its
    /// items; as a tray host does on `LayoutUpdated`, the menu is read again and clicked anew.
    pub async fn quit(&self) {
        for _ in 0..20 {
            let layout = self.layout().await;
            let id = layout.find("Quit").expect("a Quit item").id;
            match self.try_click(id).await {
                Ok(()) => return,
                Err(zbus::Error::FDO(e)) if matches!(*e, zbus::fdo::Error::NoReply(_)) => return,
                Err(zbus::Error::FDO(e)) if matches!(&*e, zbus::fdo::Error::InvalidArgs(m) if m.contains("id not found")) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot click Quit: {e}"),
            }
        }
        panic!("cannot click Quit: the menu kept changing under the click");
    }

    /// Clicks the item labelled `label` (anywhere in the menu).
    pub async fn click_label(&self, label: &str) {
        let layout = self.layout().await;
        let id = layout
            .find(label)
            .unwrap_or_else(|| panic!("no tray item {label:?} in {layout:#?}"))
            .id;
        self.click(id).await;
    }
}

/// Sums `VmRSS`-style fields of `/proc/<pid>/status` and `smaps_rollup`, in KiB.
pub fn proc_kib(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The processes below `root` (children, grandchildren, …), from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses; fields restart after the last ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if let Some(ppid) = after.split(' ').nth(1).and_then(|s| s.parse().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// The program a process runs (`/proc/<pid>/exe`'s target file name).
pub fn exe_name(pid: u32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(exe.file_name()?.to_string_lossy().into_owned())
}

/// The app's top-level windows titled `title` that are on screen (viewable), on `display`.
pub fn viewable_windows(display: &str, title: &str) -> Vec<u32> {
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, MapState};
    let (x, screen) = x11rb::connect(Some(display)).expect("connect to the X display");
    let root = x.setup().roots[screen].root;
    let utf8 = x
        .intern_atom(false, b"UTF8_STRING")
        .expect("intern")
        .reply()
        .expect("atom")
        .atom;
    let net_wm_name = x
        .intern_atom(false, b"_NET_WM_NAME")
        .expect("intern")
        .reply()
        .expect("atom")
        .atom;
    let tree = x
        .query_tree(root)
        .expect("query_tree")
        .reply()
        .expect("tree");
    tree.children
        .into_iter()
        .filter(|&w| {
            let name = |prop, kind| {
                x.get_property(false, w, prop, kind, 0, 1024)
                    .ok()
                    .and_then(|c| c.reply().ok())
                    .map(|r| String::from_utf8_lossy(&r.value).into_owned())
                    .unwrap_or_default()
            };
            let titled = name(net_wm_name, utf8) == title
                || name(AtomEnum::WM_NAME.into(), AtomEnum::STRING.into()) == title;
            let viewable = x
                .get_window_attributes(w)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|a| a.map_state == MapState::VIEWABLE);
            titled && viewable
        })
        .collect()
}

/// Closes the app's window titled `title` as a user does with the window manager's close
/// button, and waits (up to `timeout`) until it is off screen. Returns how many close requests
/// it took: under Xvfb, with no window manager, GTK now and then drops the first one, so the
/// request is repeated every 5 s as a user clicks again.
pub async fn close_app_window(display: &str, title: &str, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    let mut requests = 0;
    loop {
        let windows = viewable_windows(display, title);
        let Some(&window) = windows.first() else {
            return requests;
        };
        assert!(
            Instant::now() < deadline,
            "the window did not close after {requests} requests in {timeout:?}"
        );
        close_window(display, window);
        requests += 1;
        let again = Instant::now() + Duration::from_secs(5);
        while Instant::now() < again && !viewable_windows(display, title).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Asks `window` to close the way a window manager does when its close button is clicked: a
/// `WM_DELETE_WINDOW` client message.
pub fn close_window(display: &str, window: u32) {
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{ClientMessageEvent, ConnectionExt as _, EventMask};
    let (x, _) = x11rb::connect(Some(display)).expect("connect to the X display");
    let atom = |name: &[u8]| {
        x.intern_atom(false, name)
            .expect("intern")
            .reply()
            .expect("atom")
            .atom
    };
    let protocols = atom(b"WM_PROTOCOLS");
    let delete = atom(b"WM_DELETE_WINDOW");
    let event = ClientMessageEvent::new(32, window, protocols, [delete, 0, 0, 0, 0]);
    x.send_event(false, window, EventMask::NO_EVENT, event)
        .expect("send WM_DELETE_WINDOW");
    x.flush().expect("flush");
}
