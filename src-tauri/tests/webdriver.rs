//! The real app end to end, as a user drives it, under Xvfb on a private D-Bus session: the
//! window process `k8s-tunnels-window`, driven over W3C WebDriver by `tauri-driver` (in front of
//! WebKitGTK's `WebKitWebDriver`), starts the tray process `k8s-tunnels-desktop` that owns the
//! tunnels. With nothing configured that runs on the demo lab: the window lists the clusters
//! grouped by cloud; a click on a cluster's switch brings its tunnel up and the real `kubectl`
//! reaches the cluster through it; switching it off closes it. Closing the window ends the
//! window process and its WebKit processes (their memory goes back) while the tray process keeps
//! the tunnels; the tray's "Open window" starts a window again, and Quit ends both.
//!
//! The test also takes the README's screenshot of the window (two favourites starred, three
//! tunnels up): into `docs/screenshot-window.png` when `DESKTOP_SCREENSHOT=1`, else a temp file.
//!
//! Needs `tauri-driver` (cargo install tauri-driver), `WebKitWebDriver` (webkit2gtk-driver),
//! Xvfb, dbus-daemon and kubectl: `scripts/install-desktop-deps`. Fails loudly without them.

#[path = "../../desktop/tests/support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use support::desktop::{
    Desktop, Reaped, Tray, close_app_window, descendants, describe, exe_name, require,
    serve_watcher, viewable_windows, wait_until,
};

/// Generous: a debug build on a loaded two-core machine starts the demo lab (key generation
/// included) and WebKit's processes before the first page shows.
const START: Duration = Duration::from_secs(120);
/// How long a state change in the UI or the tray may take to show.
const CHANGE: Duration = Duration::from_secs(45);
/// The window's size for the screenshot.
const WINDOW: (u32, u32) = (1180, 860);
const WINDOW_BINARY: &str = env!("CARGO_BIN_EXE_k8s-tunnels-window");

/// The tray binary the window process starts, from its own folder. It is built by the root
/// workspace into the same target folder (`cargo build -p k8s-tunnels-desktop`, which
/// `scripts/test` runs first); a missing one fails here, not as a window that never fills.
fn require_tray_binary() {
    let tray = Path::new(WINDOW_BINARY).with_file_name(format!(
        "{}{}",
        k8s_tunnels_desktop::TRAY_BIN,
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        tray.is_file(),
        "no tray binary at {}: build it first with `cargo build -p k8s-tunnels-desktop` from the \
         repository's root",
        tray.display()
    );
}

/// Kills a process the test did not spawn itself (the tray process, started by the window in a
/// session of its own) if the test ends before it does.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// One row of the window, read from the DOM.
#[derive(Clone, Debug, Deserialize)]
struct Row {
    name: String,
    /// `off`, `connecting`, `up`, `down`, …
    state: String,
    /// `127.0.0.1:<port>` while a tunnel is open.
    port: Option<String>,
    /// Region and kubectl context, ` · ` separated.
    meta: String,
    /// The group's heading (`AWS`, `Favourites`, …).
    group: String,
    favourite: bool,
    /// The "Down" figure as shown (`0 B`, `5.5 KB`, …), while a tunnel is open.
    down: Option<String>,
}

impl Row {
    fn port(&self) -> Option<u16> {
        self.port
            .as_deref()?
            .strip_prefix("127.0.0.1:")?
            .parse()
            .ok()
    }

    fn context(&self) -> &str {
        self.meta.rsplit(" · ").next().unwrap_or_default()
    }
}

/// Every row of the window, in order; a starred row shows under Favourites (first) instead of
/// its group.
const ROWS_JS: &str = r#"
return Array.from(document.querySelectorAll("li.row")).map((li) => ({
  name: li.querySelector(".name")?.textContent ?? "",
  state: li.dataset.state ?? "",
  port: li.querySelector(".port")?.textContent ?? null,
  meta: li.querySelector(".meta")?.textContent ?? "",
  group: li.closest("section.group-2")?.querySelector("h2 .group-title")?.textContent ?? "",
  favourite: li.querySelector("button.star")?.getAttribute("aria-pressed") === "true",
  down: li.querySelector(".fig-down")?.textContent ?? null,
}));
"#;

async fn rows(client: &Client) -> Vec<Row> {
    let value = client.execute(ROWS_JS, vec![]).await.expect("read rows");
    serde_json::from_value(value).expect("rows")
}

/// The right edge of each figure (port, open, up, down, latency) of every row with a tunnel.
const FIGURE_COLUMNS_JS: &str = r#"
return Array.from(document.querySelectorAll("li.row dl.figures")).map((dl) =>
  Array.from(dl.querySelectorAll("dd")).map((dd) => Math.round(dd.getBoundingClientRect().right)));
"#;

/// Where the first row is on the page (not in the viewport, which a click may scroll).
async fn page_top_of_first_row(client: &Client) -> f64 {
    let top = client
        .execute(
            r#"const li = document.querySelector("li.row"); return li.getBoundingClientRect().top + window.scrollY;"#,
            vec![],
        )
        .await
        .expect("the first row's place");
    top.as_f64().expect("a number")
}

/// The X clipboard's text on `display`, as a terminal would paste it (xclip); `None` while it
/// holds nothing.
fn clipboard(display: &str) -> Option<String> {
    let out = Command::new("xclip")
        .args(["-o", "-selection", "clipboard", "-display", display])
        .output()
        .expect("run xclip (Debian: xclip, scripts/install-desktop-deps)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until the row `name` satisfies `ok`; a timeout shows the row as last seen and any
/// message the window showed.
async fn wait_row(client: &Client, name: &str, what: &str, ok: impl Fn(&Row) -> bool) -> Row {
    let deadline = std::time::Instant::now() + CHANGE;
    loop {
        let rows = rows(client).await;
        let row = rows.into_iter().find(|r| r.name == name);
        if let Some(row) = row.as_ref().filter(|r| ok(r)) {
            return row.clone();
        }
        if std::time::Instant::now() > deadline {
            let notices = client
                .execute(
                    r#"return Array.from(document.querySelectorAll(".notice, [role=alert], .problems")).map((e) => e.textContent)"#,
                    vec![],
                )
                .await;
            panic!(
                "timed out after {CHANGE:?} waiting for {name}: {what}; row {row:?}; messages {notices:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

/// A click on the cluster's switch.
async fn toggle(client: &Client, name: &str) {
    click(
        client,
        &format!(r#"button[role="switch"][aria-label="Tunnel to {name}"]"#),
    )
    .await;
}

/// Runs the real kubectl through the tunnel; returns its output or why it failed.
async fn kubectl(kubeconfig: &Path, context: &str) -> Result<String, String> {
    let run = tokio::process::Command::new("kubectl")
        .args([
            "--context",
            context,
            "--request-timeout=20s",
            "get",
            "namespaces",
        ])
        .env("KUBECONFIG", kubeconfig)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| "kubectl hung".to_string())?
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn listening(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A window's PNG of fewer bytes than this is blank or near blank.
const PAINTED_PNG_BYTES: usize = 40_000;

/// Checks the PNG is a real picture of a window: its size, and more bytes than a blank or
/// near-blank page compresses to.
fn check_screenshot(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().expect("4 bytes"));
    let (w, h) = (be(16), be(20));
    assert!(w >= 900 && h >= 600, "screenshot only {w}×{h}");
    assert!(
        png.len() > PAINTED_PNG_BYTES,
        "screenshot of {w}×{h} is only {} bytes: blank?",
        png.len()
    );
    (w, h)
}

/// Starts tauri-driver on `desktop` and opens a WebDriver session with the window binary; the
/// app's files under `dir/home`, its kubeconfig `dir/kubeconfig`, `env` added for the window.
async fn open_session(dir: &Path, desktop: &Desktop, env: &[(&str, &str)]) -> (Reaped, Client) {
    let home = dir.join("home");
    let kubeconfig = dir.join("kubeconfig");
    let (port, native_port) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("tauri-driver.log")).expect("log");
    let driver = Reaped(
        Command::new("tauri-driver")
            .args(["--port", &port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .env("DISPLAY", &desktop.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &desktop.bus)
            .env("K8S_TUNNELS_HOME", &home)
            .env("KUBECONFIG", &kubeconfig)
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env_remove("K8S_TUNNELS_CONFIG")
            .env_remove("K8S_TUNNELS_INVENTORY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tauri-driver"),
    );
    // tauri-driver listens at once; WebKitWebDriver, which it starts, a moment later.
    wait_until(
        "tauri-driver and WebKitWebDriver to listen",
        START,
        || async { (listening(port) && listening(native_port)).then_some(()) },
    )
    .await;

    let mut caps = serde_json::Map::new();
    caps.insert(
        "tauri:options".into(),
        serde_json::json!({ "application": WINDOW_BINARY }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.join("tauri-driver.log"));
            panic!("no WebDriver session with the app: {e}\n{log:?}")
        });
    (driver, client)
}

/// Takes a README screenshot of the window scrolled to the top, checks it is a real picture,
/// and writes it to `docs/<name>` when `DESKTOP_SCREENSHOT=1`, else into `dir`.
async fn take_screenshot(client: &Client, dir: &Path, name: &str) {
    client
        .execute(
            "document.activeElement?.blur(); document.scrollingElement.scrollTop = 0; \
             return document.scrollingElement.scrollTop",
            vec![],
        )
        .await
        .expect("scroll to the top");
    // Right after a change (rows switching state, a theme's first paint) WebKit may not have
    // painted the page yet, and under load a picture can come out blank: wait for two frames
    // and take it again until it shows the page, for a bound; then the check below fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let png = loop {
        client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 requestAnimationFrame(() => requestAnimationFrame(() => done(true)))",
                vec![],
            )
            .await
            .expect("wait for the page to paint");
        let png = client.screenshot().await.expect("screenshot");
        if png.len() > PAINTED_PNG_BYTES || std::time::Instant::now() > deadline {
            break png;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (w, h) = check_screenshot(&png);
    let shot = if std::env::var_os("DESKTOP_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name)
    } else {
        dir.join(name)
    };
    std::fs::write(&shot, &png).expect("write the screenshot");
    eprintln!("screenshot {w}×{h}: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_switches_a_tunnel_kubectl_uses_it_and_the_tray_keeps_it() {
    require(
        "tauri-driver",
        "tauri-driver (cargo install --locked tauri-driver)",
    );
    require("WebKitWebDriver", "webkit2gtk-driver");
    require("kubectl", "kubectl");
    require("xclip", "xclip");
    require_tray_binary();
    let tmp = tempfile::tempdir().expect("tmp");
    let desktop = Desktop::start(1600, 1200);
    let (conn, watcher) = serve_watcher(&desktop.bus).await;

    // Nothing configured: the app runs on its demo lab, with its files under `home` and its
    // kubeconfig entries in a kubeconfig of its own.
    let kubeconfig = tmp.path().join("kubeconfig");
    let (driver, client) = open_session(tmp.path(), &desktop, &[]).await;
    let named = |root: u32, name: &'static str| {
        descendants(root)
            .into_iter()
            .find(move |&p| exe_name(p).as_deref() == Some(name))
    };
    let window_pid = wait_until("the window's process", START, || async {
        named(driver.pid(), "k8s-tunnels-window")
    })
    .await;
    let tray_pid = wait_until("the tray process the window started", START, || async {
        named(window_pid, "k8s-tunnels-desktop")
    })
    .await;
    let _tray_guard = KillOnDrop(tray_pid);
    client
        .set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("size the window");

    // The window lists the demo clusters grouped by cloud.
    let listed = wait_until("the demo clusters in the window", START, || async {
        let rows = rows(&client).await;
        (rows.len() == 8).then_some(rows)
    })
    .await;
    let in_group = |group: &str| {
        let mut names: Vec<&str> = listed
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.name.as_str())
            .collect();
        names.sort_unstable();
        names
    };
    assert_eq!(
        in_group("AWS"),
        ["prod-eu", "prod-us", "staging-eu"],
        "{listed:#?}"
    );
    assert_eq!(
        in_group("Google Cloud"),
        ["analytics-prod", "ml-staging", "sandbox"],
        "{listed:#?}"
    );
    assert_eq!(
        in_group("On-premises"),
        ["factory-dc1", "lab-dev"],
        "{listed:#?}"
    );
    assert!(listed.iter().all(|r| r.state == "off" && r.port.is_none()));
    // The window says these are the demo lab's, and where the user's own clusters would go.
    let demo = client
        .execute(
            r#"return document.querySelector('section[aria-label="Demo lab"]')?.textContent ?? null"#,
            vec![],
        )
        .await
        .expect("read the demo banner");
    let demo = demo.as_str().unwrap_or_default();
    assert!(
        demo.contains("These are demo clusters")
            && demo.contains("inventory.yaml")
            && demo.contains("config.yaml"),
        "{demo:?}"
    );

    // Two stars: both rows move to Favourites, first.
    for name in ["prod-us", "sandbox"] {
        click(
            &client,
            &format!(r#"button.star[aria-label="Favourite {name}"]"#),
        )
        .await;
        wait_row(&client, name, "starred", |r| r.favourite).await;
    }
    let favourites = wait_until("two favourites first", CHANGE, || async {
        let rows = rows(&client).await;
        let first: Vec<String> = rows
            .iter()
            .take_while(|r| r.group == "Favourites")
            .map(|r| r.name.clone())
            .collect();
        (first.len() == 2).then_some(first)
    })
    .await;
    assert_eq!(favourites, ["prod-us", "sandbox"]);

    // Switch prod-eu on: its row goes up with a local port, and kubectl reaches the cluster.
    toggle(&client, "prod-eu").await;
    let row = wait_row(&client, "prod-eu", "up with a port", |r| {
        r.state == "up" && r.port().is_some()
    })
    .await;
    let context = row.context().to_string();
    assert!(
        context.contains("prod-eu"),
        "context {context:?} in {row:?}"
    );
    let namespaces = kubectl(&kubeconfig, &context)
        .await
        .unwrap_or_else(|e| panic!("kubectl through the tunnel failed: {e}"));
    assert!(namespaces.contains("default"), "{namespaces}");
    // The row's figures follow: kubectl's bytes show within a moment.
    wait_row(&client, "prod-eu", "the bytes kubectl moved", |r| {
        r.down.as_deref().is_some_and(|d| d != "0 B")
    })
    .await;

    // "Copy kubectl command" puts the command on the clipboard inside the click, and it works
    // as a user pastes it into a shell. Its notice floats over the page: nothing moves.
    let before = page_top_of_first_row(&client).await;
    click(
        &client,
        r#"button[aria-label="Copy kubectl command for prod-eu"]"#,
    )
    .await;
    let copied = wait_until("the command on the clipboard", CHANGE, || async {
        clipboard(&desktop.display).filter(|c| !c.is_empty())
    })
    .await;
    assert_eq!(
        copied,
        format!("kubectl --context '{context}' get namespaces")
    );
    let pasted = tokio::process::Command::new("sh")
        .args(["-c", &copied])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .expect("run the copied command");
    assert!(
        pasted.status.success() && String::from_utf8_lossy(&pasted.stdout).contains("default"),
        "{pasted:?}"
    );
    let notice = wait_until("the copied notice", CHANGE, || async {
        let text = client
            .execute(
                r#"return document.querySelector(".notice")?.textContent ?? null"#,
                vec![],
            )
            .await
            .ok()?;
        text.as_str().map(String::from)
    })
    .await;
    assert!(
        notice.contains("Copied") && notice.contains(&copied),
        "{notice}"
    );
    assert_eq!(
        page_top_of_first_row(&client).await,
        before,
        "a notice moved the page"
    );

    // Two more tunnels (one a favourite) for the screenshot, then the screenshot.
    for name in ["sandbox", "analytics-prod"] {
        toggle(&client, name).await;
        wait_row(&client, name, "up", |r| r.state == "up").await;
    }
    // Each figure lines up with the same figure of every other open tunnel's row.
    let columns = client
        .execute(FIGURE_COLUMNS_JS, vec![])
        .await
        .expect("read the figures' columns");
    let columns: Vec<Vec<f64>> = serde_json::from_value(columns).expect("columns");
    assert_eq!(columns.len(), 3, "{columns:?}");
    assert!(
        columns.iter().all(|c| c == &columns[0]),
        "figures out of line: {columns:?}"
    );
    take_screenshot(&client, tmp.path(), "screenshot-window.png").await;

    // Switching prod-eu off closes its tunnel: the row is off and nothing listens on the port.
    let port_eu = row.port().expect("port");
    toggle(&client, "prod-eu").await;
    wait_row(&client, "prod-eu", "off", |r| {
        r.state == "off" && r.port.is_none()
    })
    .await;
    wait_until("prod-eu's port closed", CHANGE, || async {
        (!listening(port_eu)).then_some(())
    })
    .await;

    // Closing the window (as a window manager's close button does) ends the window process and
    // its WebKit processes; the tray process keeps the tunnels up.
    let tray = Tray::wait(&conn, &watcher, START).await;
    let windows = wait_until("the window on screen", CHANGE, || async {
        let w = viewable_windows(&desktop.display, "k8s-tunnels");
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert_eq!(windows.len(), 1, "{windows:?}");
    // Input WebDriver synthesised must not be left pressed: GTK ignores a close request while
    // a widget holds a grab.
    client.release_actions().await.expect("release actions");
    let webkit: Vec<u32> = descendants(window_pid)
        .into_iter()
        .filter(|&p| exe_name(p).is_some_and(|n| n.starts_with("WebKit")))
        .collect();
    assert!(!webkit.is_empty(), "the window runs no WebKit process?");
    let requests = close_app_window(&desktop.display, "k8s-tunnels", CHANGE).await;
    eprintln!("the window closed after {requests} close request(s)");
    wait_until(
        "the window process and its WebKit processes to end",
        CHANGE,
        || async { (!alive(window_pid) && webkit.iter().all(|&p| !alive(p))).then_some(()) },
    )
    .await;
    assert!(
        alive(tray_pid),
        "the tray process exited when the window closed"
    );
    let sandbox = rows_context(&listed, "sandbox");
    let namespaces = kubectl(&kubeconfig, &sandbox)
        .await
        .unwrap_or_else(|e| panic!("kubectl after the window closed: {e}"));
    assert!(namespaces.contains("default"), "{namespaces}");
    let top = describe(&tray.built_layout(CHANGE).await.children);
    assert!(top.contains(&"[x] sandbox".to_string()), "{top:?}");
    assert!(top.contains(&"2 tunnels up".to_string()), "{top:?}");

    // "Open window" in the tray starts a window process again, showing the open tunnels.
    tray.click_label("Open window").await;
    let reopened = wait_until("a new window process", START, || async {
        named(tray_pid, "k8s-tunnels-window")
    })
    .await;
    wait_until("the window back on screen", START, || async {
        (viewable_windows(&desktop.display, "k8s-tunnels").len() == 1).then_some(())
    })
    .await;

    // Quit ends the tray process, and the window with it; then the session.
    tray.quit().await;
    wait_until("the app to exit", CHANGE, || async {
        (!alive(tray_pid) && !alive(reopened)).then_some(())
    })
    .await;
    let _ = client.close().await;
}

/// The kubectl context of cluster `name`, as its row showed it.
fn rows_context(rows: &[Row], name: &str) -> String {
    rows.iter()
        .find(|r| r.name == name)
        .map(|r| r.context().to_string())
        .unwrap_or_else(|| panic!("no row {name}"))
}

/// The window follows a dark desktop (GTK's dark variant, as GNOME's dark style sets it):
/// WebKit reports `prefers-color-scheme: dark` and the page is drawn dark. Also takes the
/// README's dark screenshot (`docs/screenshot-window-dark.png` when `DESKTOP_SCREENSHOT=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_follows_a_dark_desktop() {
    require(
        "tauri-driver",
        "tauri-driver (cargo install --locked tauri-driver)",
    );
    require("WebKitWebDriver", "webkit2gtk-driver");
    require_tray_binary();
    let tmp = tempfile::tempdir().expect("tmp");
    let desktop = Desktop::start(1600, 1200);
    let (conn, watcher) = serve_watcher(&desktop.bus).await;
    let (_driver, client) =
        open_session(tmp.path(), &desktop, &[("GTK_THEME", "Adwaita:dark")]).await;
    client
        .set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("size the window");
    wait_until("the demo clusters in the window", START, || async {
        (rows(&client).await.len() == 8).then_some(())
    })
    .await;
    let scheme = client
        .execute(
            r#"return [matchMedia("(prefers-color-scheme: dark)").matches, getComputedStyle(document.body).backgroundColor]"#,
            vec![],
        )
        .await
        .expect("read the colour scheme");
    assert_eq!(
        scheme[0], true,
        "WebKit does not see the dark desktop: {scheme}"
    );
    // The page's dark background (style.css: --bg in the dark scheme), not the light one.
    let background = scheme[1].as_str().unwrap_or_default();
    assert_ne!(background, "rgb(246, 247, 249)", "{scheme}");

    for name in ["prod-eu", "analytics-prod"] {
        toggle(&client, name).await;
        wait_row(&client, name, "up", |r| r.state == "up").await;
    }
    take_screenshot(&client, tmp.path(), "screenshot-window-dark.png").await;

    let tray = Tray::wait(&conn, &watcher, START).await;
    tray.quit().await;
    let _ = client.close().await;
}
