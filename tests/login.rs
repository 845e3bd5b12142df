//! The Access login end to end: the real CLI and the library's AccessClient against the
//! gateway playing Cloudflare's edge (signed metadata, auth domain with its sign-in page and
//! org cookie, /authorized, /cli and the token transfer), with the browser played by an HTTP
//! client that follows the opened URL and signs in, or by headless Chromium.
#![allow(clippy::unwrap_used)]

#[path = "support/browsers.rs"]
mod browsers;
#[path = "support/echo.rs"]
mod echo;
#[path = "support/login_world.rs"]
mod login_world;
#[path = "support/recording_edge.rs"]
mod recording_edge;
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use browsers::{Chromium, HttpBrowser};
use fast_socks5::client::{Config as SocksConfig, Socks5Stream};
use k8s_tunnels::access::{AccessClient, AccessEvent, Interaction};
use k8s_tunnels::secret::Secret;
use k8s_tunnels::tunnel::carrier::Edge;
use k8s_tunnels::tunnel::health::ProbeSchedule;
use k8s_tunnels::tunnel::keepalive::Keepalive;
use k8s_tunnels::tunnel::{TunnelHandle, TunnelSpec};
use login_world::*;
use support::{CliWorld, text};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SOCKS_USER: &str = "k8s-tunnels";
const SOCKS_PASSWORD: &str = "socks-password-for-tests";

/// Opens a tunnel for the world's cluster through `access`.
async fn tunnel(world: &World, access: &AccessClient, schedule: ProbeSchedule) -> TunnelHandle {
    let cluster = world.cluster();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = Edge::for_cluster(&cluster, &Default::default()).unwrap();
    TunnelHandle::start(
        TunnelSpec {
            cluster,
            listener,
            username: SOCKS_USER.into(),
            password: Secret::new(SOCKS_PASSWORD),
            schedule,
            keepalive: Keepalive::default(),
            access: Some(access.clone()),
            reclaim: Default::default(),
        },
        edge,
        |_| {},
    )
}

/// Probes rarely, so that only connections drive the login in these tests.
fn lazy_probes() -> ProbeSchedule {
    ProbeSchedule {
        healthy: Duration::from_secs(3600),
        down_min: Duration::from_secs(3600),
        down_max: Duration::from_secs(3600),
        timeout: Duration::from_secs(30),
        // The origins here are echo servers, not API servers.
        api: false,
    }
}

/// A SOCKS5 connection through the tunnel to the API host.
async fn socks(addr: SocketAddr) -> Result<Socks5Stream<tokio::net::TcpStream>, String> {
    Socks5Stream::connect_with_password(
        addr,
        API_HOST.to_string(),
        6443,
        SOCKS_USER.into(),
        SOCKS_PASSWORD.into(),
        SocksConfig::default(),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Sends `payload` and reads it back from the echo origin.
async fn echo(
    stream: &mut Socks5Stream<tokio::net::TcpStream>,
    payload: &[u8],
) -> Result<(), String> {
    stream.write_all(payload).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut back))
        .await
        .map_err(|_| "echo timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if back != payload {
        return Err("echo differs".into());
    }
    Ok(())
}

async fn connect_and_echo(addr: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let mut stream = socks(addr).await?;
    echo(&mut stream, payload).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_with_an_http_client_as_the_browser() {
    let world = World::start(Lifetimes::default()).await;
    let browser = signing_in_browser(&world);
    let access = world.client(browser.clone(), test_timings());
    let mut events = access.subscribe();
    let handle = tunnel(&world, &access, lazy_probes()).await;
    connect_and_echo(handle.local_addr(), b"hello through a fresh login")
        .await
        .unwrap_or_else(|e| panic!("{e}; browser errors: {:?}", browser.counts.errors()));
    assert_eq!(browser.counts.opened(), 1);
    // Front ends hear where to sign in (a terminal prints it, the window shows it).
    let mut sign_ins = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let AccessEvent::SignInStarted {
            application,
            url,
            browser_opened,
            code,
        } = event
        {
            sign_ins.push((application, url, browser_opened, code));
        }
    }
    assert_eq!(sign_ins.len(), 1, "{sign_ins:?}");
    // The sign-in page showed the code the client announced: the user can tell it is theirs.
    assert_eq!(browser.counts.codes(), [sign_ins[0].3.clone()]);
    assert_eq!(sign_ins[0].0, APP);
    assert!(
        sign_ins[0]
            .1
            .starts_with(&format!("https://{APP}/cdn-cgi/access/cli?")),
        "{sign_ins:?}"
    );
    assert_eq!(
        browser.counts.signed_in(),
        1,
        "{:?}",
        browser.counts.errors()
    );
    assert_eq!(browser.counts.done(), 1);
    // The next connection reuses the token: no browser.
    connect_and_echo(handle.local_addr(), b"again")
        .await
        .unwrap();
    assert_eq!(browser.counts.opened(), 1);
    let status = access.status(&world.cluster()).await.unwrap();
    assert_eq!(status.email.as_deref(), Some(EMAIL));
    assert_eq!(status.aud, [AUD]);
    assert!(status.valid && status.session_expires_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_in_headless_chromium() {
    let world = World::start(Lifetimes::default()).await;
    let names: Vec<&str> = world.names().iter().map(|(n, _)| *n).collect();
    let chromium = Arc::new(Chromium::start(&names, world.addr(), EMAIL, PASSWORD));
    let access = world.client(chromium.clone(), test_timings());
    let handle = tunnel(&world, &access, lazy_probes()).await;
    connect_and_echo(handle.local_addr(), b"signed in by chromium")
        .await
        .unwrap_or_else(|e| panic!("{e}; chromium errors: {:?}", chromium.counts.errors()));
    assert_eq!(chromium.counts.opened(), 1);
    assert_eq!(
        chromium.counts.signed_in(),
        1,
        "{:?}",
        chromium.counts.errors()
    );
    assert_eq!(access.counters().browser(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_connections_needing_a_login_make_exactly_one() {
    let world = World::start(Lifetimes::default()).await;
    let browser = signing_in_browser(&world);
    let access = world.client(browser.clone(), test_timings());
    let handle = tunnel(&world, &access, lazy_probes()).await;
    let addr = handle.local_addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        tasks.spawn(
            async move { connect_and_echo(addr, format!("connection {i}").as_bytes()).await },
        );
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result.unwrap() {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(browser.counts.opened(), 1, "one browser tab");
    assert_eq!(browser.counts.signed_in(), 1, "one sign-in at the gateway");
    assert_eq!(access.counters().browser(), 1);
    assert_eq!(
        handle
            .stats()
            .total
            .load(std::sync::atomic::Ordering::SeqCst),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_app_token_is_renewed_silently_once_and_open_connections_keep_running() {
    let world = World::start(Lifetimes {
        app: Duration::from_secs(4),
        org: Duration::from_secs(3600),
    })
    .await;
    let browser = signing_in_browser(&world);
    let access = world.client(browser.clone(), test_timings());
    let handle = tunnel(&world, &access, lazy_probes()).await;
    let mut long_lived = socks(handle.local_addr()).await.unwrap();
    echo(&mut long_lived, b"before expiry").await.unwrap();
    assert_eq!(browser.counts.opened(), 1);
    assert_eq!(access.counters().exchanges(), 0);
    // The app token (4 s, 1 s margin) runs out.
    tokio::time::sleep(Duration::from_secs(5)).await;
    echo(&mut long_lived, b"the open connection keeps running")
        .await
        .unwrap();
    // New connections: one silent exchange through the org token, no browser.
    let addr = handle.local_addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        tasks.spawn(
            async move { connect_and_echo(addr, format!("after expiry {i}").as_bytes()).await },
        );
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(access.counters().exchanges(), 1);
    assert_eq!(browser.counts.opened(), 1, "no new browser login");
    echo(&mut long_lived, b"still running").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_org_token_expired_too_login_required_is_announced_once() {
    let world = World::start(Lifetimes {
        app: Duration::from_secs(3),
        org: Duration::from_secs(3),
    })
    .await;
    let browser = signing_in_browser(&world);
    let access = world.client(browser.clone(), test_timings());
    // Frequent probes: they must not multiply the announcement, nor open a browser.
    let handle = tunnel(
        &world,
        &access,
        ProbeSchedule {
            healthy: Duration::from_millis(200),
            down_min: Duration::from_millis(100),
            down_max: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            api: false,
        },
    )
    .await;
    connect_and_echo(handle.local_addr(), b"signed in")
        .await
        .unwrap();
    assert_eq!(browser.counts.opened(), 1);
    // From the first login on (which itself was announced as required).
    let mut events = access.subscribe();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(browser.counts.opened(), 1, "probes never open a browser");
    let cluster = world.cluster();
    for _ in 0..3 {
        let err = access
            .credential(&cluster, Interaction::Silent)
            .await
            .unwrap_err();
        assert!(err.is_login_required(), "{err}");
    }
    let mut required = 0;
    let mut expiring = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            AccessEvent::LoginRequired { application } => {
                assert_eq!(application, APP);
                required += 1;
            }
            AccessEvent::LoginExpiring { application, .. } => {
                assert_eq!(application, APP);
                expiring += 1;
            }
            AccessEvent::SignInStarted { .. } => panic!("a probe started a browser login"),
        }
    }
    assert_eq!(required, 1, "one login required");
    assert!(expiring <= 1, "expiring announced at most once per login");
    assert_eq!(
        handle.health().state,
        k8s_tunnels::tunnel::health::TunnelState::LoginRequired
    );
    // A new connection may sign in again: one more browser login, and the tunnel is back.
    connect_and_echo(handle.local_addr(), b"signed in again")
        .await
        .unwrap();
    assert_eq!(browser.counts.opened(), 2);
}

/// A user who closes the sign-in tab the first time: that opening is abandoned, later ones
/// sign in.
struct AbandonsFirstTab {
    browser: Arc<HttpBrowser>,
    opened: std::sync::atomic::AtomicU64,
}

impl k8s_tunnels::access::transfer::BrowserOpener for AbandonsFirstTab {
    fn open(&self, url: &url::Url) -> Result<bool, k8s_tunnels::access::transfer::OpenError> {
        use std::sync::atomic::Ordering;
        if self.opened.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(true);
        }
        self.browser.open(url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_browser_login_opens_no_tab_per_connection_until_the_user_asks() {
    use std::sync::atomic::Ordering;
    let world = World::start(Lifetimes::default()).await;
    let browser = signing_in_browser(&world);
    let opener = Arc::new(AbandonsFirstTab {
        browser: browser.clone(),
        opened: Default::default(),
    });
    let mut timings = test_timings();
    // The login gives up after two seconds without the browser's answer.
    timings.poll = k8s_tunnels::access::transfer::PollSettings {
        request_timeout: Duration::from_secs(1),
        total: Duration::from_secs(2),
    };
    let access = world.client(opener.clone(), timings);
    let handle = tunnel(&world, &access, lazy_probes()).await;

    // The first connection opens a tab, which the user closes: the connection fails.
    assert!(connect_and_echo(handle.local_addr(), b"x").await.is_err());
    assert_eq!(opener.opened.load(Ordering::SeqCst), 1);
    // kubectl retrying, or five more commands right after: no tab for any of them.
    for _ in 0..5 {
        assert!(connect_and_echo(handle.local_addr(), b"x").await.is_err());
    }
    assert_eq!(
        opener.opened.load(Ordering::SeqCst),
        1,
        "a tab per connection"
    );

    // The user asks to sign in: one tab, signed in, and connections work again.
    access.login(&world.cluster()).await.unwrap();
    assert_eq!(opener.opened.load(Ordering::SeqCst), 2);
    assert_eq!(
        browser.counts.signed_in(),
        1,
        "{:?}",
        browser.counts.errors()
    );
    connect_and_echo(handle.local_addr(), b"after the login")
        .await
        .unwrap();
    assert_eq!(opener.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudflared_token_file_is_picked_up() {
    let world = World::start(Lifetimes::default()).await;
    let token = world.mint_app_token(Duration::from_secs(3600));
    std::fs::create_dir_all(world.cloudflared_dir()).unwrap();
    // cloudflared's naming: <app_host>-<AUD>-token.
    std::fs::write(
        world.cloudflared_dir().join(format!("{APP}-{AUD}-token")),
        token.expose(),
    )
    .unwrap();
    let browser = signing_in_browser(&world);
    let access = world.client(browser.clone(), test_timings());
    let handle = tunnel(&world, &access, lazy_probes()).await;
    connect_and_echo(handle.local_addr(), b"with cloudflared's token")
        .await
        .unwrap();
    assert_eq!(
        browser.counts.opened(),
        0,
        "no browser: cloudflared's login was reused"
    );
    assert_eq!(access.counters().exchanges(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_written_back_for_cloudflared_when_asked() {
    let world = World::start(Lifetimes::default()).await;
    let browser = signing_in_browser(&world);
    let mut settings = world.settings();
    settings.write_cloudflared_files = true;
    let access = AccessClient::with_timings(
        settings,
        k8s_tunnels::access::TokenStore::memory_only("tests"),
        browser.clone(),
        test_timings(),
    );
    access
        .credential(&world.cluster(), Interaction::Interactive)
        .await
        .unwrap();
    let app_file = world.cloudflared_dir().join(format!("{APP}-{AUD}-token"));
    let org_file = world
        .cloudflared_dir()
        .join(format!("{AUTH_DOMAIN}-org-token"));
    for path in [&app_file, &org_file, &world.cloudflared_dir()] {
        assert!(
            k8s_tunnels::private_file::is_private(path).unwrap(),
            "{}: {}",
            path.display(),
            k8s_tunnels::private_file::describe_access(path)
        );
    }
}

// ---- The CLI: the keychain, restarts, no D-Bus, and secrets kept out of every output ----

const STEP_ENV: &str = "K8S_TUNNELS_LOGIN_TEST_BROWSER";

/// Not a test of its own: the CLI's `browser` command in these tests. It runs this binary
/// again, filtered to this function, with the URL to open as the last argument, and signs in
/// with the HTTP client browser.
#[test]
#[ignore = "run by the CLI as its browser, not on its own"]
fn child_browser() {
    let Ok(spec) = std::env::var(STEP_ENV) else {
        return;
    };
    let url = std::env::args().next_back().unwrap();
    let (addr, ca) = spec.split_once('|').unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let ca_pem = std::fs::read(ca).unwrap();
    let names = [
        (APP, addr),
        (APP_B, addr),
        (AUTH_DOMAIN, addr),
        (TRANSFER_HOST, addr),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let browser = HttpBrowser::new(&names, &ca_pem, EMAIL, PASSWORD);
        browser
            .sign_in(url::Url::parse(&url).unwrap())
            .await
            .unwrap();
    });
}

/// A browser (an HTTP client following the opened URL) that signs in as the test user.
fn signing_in_browser(world: &World) -> Arc<HttpBrowser> {
    Arc::new(HttpBrowser::new(
        &world.names(),
        world.ca_pem.as_bytes(),
        EMAIL,
        PASSWORD,
    ))
}

/// A CLI sandbox whose config points at the world and whose browser is [`child_browser`].
fn cli(world: &World, root: &std::path::Path, extra: &str) -> CliWorld {
    let cli = CliWorld::new(root, &world.inventory);
    let exe = std::env::current_exe().unwrap();
    let browser = format!(
        "{} --exact child_browser --include-ignored --nocapture",
        exe.display()
    );
    std::fs::write(root.join("config.yaml"), world.config_yaml(&browser, extra)).unwrap();
    cli
}

fn cli_command(cli: &CliWorld, world: &World, root: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = cli.command(args);
    cmd.env("K8S_TUNNELS_CONFIG", root.join("config.yaml")).env(
        STEP_ENV,
        format!("{}|{}", world.addr(), world.ca_path.display()),
    );
    cmd
}

fn no_dbus(mut cmd: Command) -> Command {
    cmd.env_remove("K8S_TUNNELS_KEYCHAIN")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/k8s-tunnels-test-bus",
        )
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

/// Runs a blocking closure off the test's runtime (the gateway must keep serving).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dbus_the_cli_warns_and_the_login_works_for_the_session() {
    let world = World::start(Lifetimes::default()).await;
    let root = tempfile::tempdir().unwrap();
    let sandbox = cli(&world, root.path(), "");
    let cmd = no_dbus(cli_command(&sandbox, &world, root.path(), &["login", "c1"]));
    let out = blocking(move || {
        let mut cmd = cmd;
        cmd.output().unwrap()
    })
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("warning: no OS keychain"), "{stderr}");
    assert!(
        stdout.contains(&format!("Logged in to {APP} as {EMAIL}")),
        "{stdout}"
    );
    let cmd = no_dbus(cli_command(
        &sandbox,
        &world,
        root.path(),
        &["auth", "status", "--json"],
    ));
    let out = blocking(move || {
        let mut cmd = cmd;
        cmd.output().unwrap()
    })
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["store"], "memory");
    assert_eq!(
        report["logins"][0]["logged_in"], false,
        "memory only: gone with the process"
    );
}

/// The login in one CLI process, `auth status` in another, against gnome-keyring on a private
/// D-Bus session (its files in a temp folder).
/// A command as one line of `sh`, every word single-quoted.
fn shell_line(cmd: &Command) -> String {
    let mut words = vec![format!("'{}'", cmd.get_program().to_string_lossy())];
    words.extend(cmd.get_args().map(|a| format!("'{}'", a.to_string_lossy())));
    words.join(" ")
}

/// Runs `steps` (lines of `sh`, in `root`) in a private D-Bus session with a real, unlocked
/// gnome-keyring: the environment of `env_of` without the keychain switch, the keyring's files
/// under `root/home`.
async fn in_keyring_session(
    root: &std::path::Path,
    env_of: &Command,
    steps: &str,
) -> std::process::Output {
    let home = root.join("home");
    std::fs::create_dir_all(home.join("run")).unwrap();
    let script = format!(
        "printf test-password | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 90\n{steps}"
    );
    let mut run = Command::new("dbus-run-session");
    run.arg("--")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .current_dir(root);
    for (k, v) in env_of.get_envs() {
        match v {
            Some(v) => run.env(k, v),
            None => run.env_remove(k),
        };
    }
    run.env_remove("K8S_TUNNELS_KEYCHAIN")
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", home.join("run"));
    blocking(move || {
        run.output()
            .expect("dbus-run-session (Debian dbus) is required")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_kept_in_a_real_secret_service_survives_a_cli_restart() {
    let world = World::start(Lifetimes::default()).await;
    let root = tempfile::tempdir().unwrap();
    let sandbox = cli(&world, root.path(), "");
    let login = cli_command(&sandbox, &world, root.path(), &["login", "c1"]);
    let status = cli_command(&sandbox, &world, root.path(), &["auth", "status", "--json"]);
    let steps = format!(
        "{} > login.out 2> login.err || exit 91\n{} > status.out 2> status.err || exit 92\n",
        shell_line(&login),
        shell_line(&status)
    );
    let out = in_keyring_session(root.path(), &login, &steps).await;
    let file = |n: &str| std::fs::read_to_string(root.path().join(n)).unwrap_or_default();
    assert!(
        out.status.success(),
        "{:?}\nlogin: {}{}\nstatus: {}{}\n{}",
        out.status,
        file("login.out"),
        file("login.err"),
        file("status.out"),
        file("status.err"),
        text(&out.stderr)
    );
    assert!(
        !file("login.err").contains("warning: no OS keychain"),
        "{}",
        file("login.err")
    );
    let report: serde_json::Value = serde_json::from_str(&file("status.out")).unwrap();
    assert_eq!(report["store"], "keychain");
    let login = &report["logins"][0];
    assert_eq!(login["logged_in"], true, "{report:#}");
    assert_eq!(login["email"], EMAIL);
    assert_eq!(login["application"], APP);
}

/// `auth service-token` keeps the secret in the real Secret Service: a second CLI process finds
/// it (and removes it), a third finds none; the secret is read from stdin and shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_token_stored_in_a_real_secret_service_is_found_by_the_next_process() {
    const SERVICE_SECRET: &str = "service-secret-for-the-keyring-test";
    let world = World::start(Lifetimes::default()).await;
    let root = tempfile::tempdir().unwrap();
    let sandbox = cli(&world, root.path(), "");
    let store = cli_command(
        &sandbox,
        &world,
        root.path(),
        &["auth", "service-token", "c1", "--client-id", "id.access"],
    );
    let remove = cli_command(
        &sandbox,
        &world,
        root.path(),
        &["auth", "service-token", "c1", "--remove"],
    );
    let steps = format!(
        "printf '{SERVICE_SECRET}' | {} > store.out 2> store.err || exit 91\n\
         {} > remove.out 2> remove.err || exit 92\n\
         {} > again.out 2> again.err || exit 93\n",
        shell_line(&store),
        shell_line(&remove),
        shell_line(&remove),
    );
    let out = in_keyring_session(root.path(), &store, &steps).await;
    let file = |n: &str| std::fs::read_to_string(root.path().join(n)).unwrap_or_default();
    let all = ["store", "remove", "again"]
        .iter()
        .map(|n| {
            format!(
                "{n}: {}{}",
                file(&format!("{n}.out")),
                file(&format!("{n}.err"))
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "{:?}\n{all}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(file("store.out").contains("id.access"), "{all}");
    assert!(
        !file("store.err").contains("warning: no OS keychain"),
        "{all}"
    );
    // The second process found it in the keychain; the third finds it gone.
    assert!(
        file("remove.out").contains("Removed the service token of c1"),
        "{all}"
    );
    assert!(
        file("again.out").contains("had no stored service token"),
        "{all}"
    );
    assert!(
        !all.contains(SERVICE_SECRET),
        "the secret was shown:\n{all}"
    );
}

/// Tokens never show in logs (debug level), stdout, events, or errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_in_logs_output_events_or_errors() {
    let world = World::start(Lifetimes::default()).await;
    let root = tempfile::tempdir().unwrap();
    // The tokens are written for cloudflared too, so that this test knows what to look for.
    let sandbox = cli(&world, root.path(), "  write_cloudflared_files: true\n");
    let mut outputs = String::new();
    for args in [
        &["-vv", "login", "c1"][..],
        &["-vv", "auth", "status", "--json"],
        &["-vv", "auth", "status"],
    ] {
        let cmd = no_dbus(cli_command(&sandbox, &world, root.path(), args));
        let out = blocking(move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        })
        .await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        outputs.push_str(&text(&out.stdout));
        outputs.push_str(&text(&out.stderr));
    }
    let app_token = read(&world.cloudflared_dir().join(format!("{APP}-{AUD}-token")));
    let org_token = read(
        &world
            .cloudflared_dir()
            .join(format!("{AUTH_DOMAIN}-org-token")),
    );
    assert!(app_token.len() > 100 && org_token.len() > 100);
    // In process: events, Debug and errors of a client that holds tokens.
    let browser = signing_in_browser(&world);
    let access = world.client(browser.clone(), test_timings());
    let mut events = access.subscribe();
    let cluster = world.cluster();
    let credential = access
        .credential(&cluster, Interaction::Interactive)
        .await
        .unwrap();
    let k8s_tunnels::access::Credential::Token(token) = &credential else {
        panic!("a login token");
    };
    outputs.push_str(&format!("{credential:?} {access:?}"));
    assert!(access.reject(&cluster, &credential).await);
    while let Ok(e) = events.try_recv() {
        outputs.push_str(&serde_json::to_string(&e).unwrap());
    }
    for secret in [app_token.trim(), org_token.trim(), token.expose(), PASSWORD] {
        // Any distinctive part of a JWT would do; the signature is the most secret.
        let needle = secret.rsplit('.').next().unwrap();
        assert!(
            !outputs.contains(needle),
            "a secret leaked into:\n{outputs}"
        );
    }
    assert!(
        outputs.contains("Logged in to"),
        "the outputs were captured: {outputs}"
    );
}

// ---- Credentials go only to the host they were issued for ----

/// A hostile edge that names application `named` (A, whose token cloudflared's file holds, or
/// B, which the org token can be exchanged for) in an unsigned redirect, and records what it is
/// sent. After `login c1` (A, tokens also written for cloudflared) in one CLI process,
/// `connect` to the hostile edge in another must hand it no token at all: not from the file,
/// not from the silent exchange, not from the health probe.
async fn a_hostile_edge_naming(named: &str, aud: &str) {
    let world = World::start(Lifetimes::default()).await;
    let login_location = format!(
        "https://{AUTH_DOMAIN}:{port}/cdn-cgi/access/login/{named}?kid={aud}&redirect_url=https%3A%2F%2F{named}%2F",
        port = world.addr().port()
    );
    let hostile = recording_edge::RecordingEdge::start(
        Some(world.tls_for(&[HOSTILE])),
        recording_edge::Answer {
            location: login_location,
            domain: Some(named.to_string()),
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let inventory = root.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "{}- name: hostile\n  cloud: onprem\n  environment: test\n  server: https://{API_HOST}:6443\n  user: {{ token: x }}\n  access:\n    hostname: {HOSTILE}\n    origin: tcp\n    connect_to: \"{}\"\n    ca_file: {}\n",
            std::fs::read_to_string(&world.inventory).unwrap(),
            hostile.addr(),
            world.ca_path.display()
        ),
    )
    .unwrap();
    let mut sandbox = cli(&world, root.path(), "  write_cloudflared_files: true\n");
    sandbox.inventory = inventory;
    let login = cli_command(&sandbox, &world, root.path(), &["login", "c1"]);
    let out = blocking(move || {
        let mut login = login;
        login.output().unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let app_file = world.cloudflared_dir().join(format!("{APP}-{AUD}-token"));
    let org_file = world
        .cloudflared_dir()
        .join(format!("{AUTH_DOMAIN}-org-token"));
    assert!(
        app_file.exists() && org_file.exists(),
        "login A wrote cloudflared's files"
    );

    let config = root.path().join("config.yaml");
    let connect = sandbox.spawn_connect_with(
        &["hostile"],
        &[("K8S_TUNNELS_CONFIG", config.to_str().unwrap())],
    );
    // `connect` signs in at once (explicitly) and the first health probe follows; wait for
    // the client to give up on the hostile edge, or for a token to arrive there.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leaked = hostile
            .seen()
            .iter()
            .any(recording_edge::Seen::carries_credential);
        if leaked || connect.log().contains("Access login failed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connect did not finish its login attempt: {}",
            connect.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The health probe ran too (it is silent: the file and the exchange only).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, log) = connect.interrupt();
    let seen = hostile.seen();
    assert!(
        !seen.is_empty(),
        "the client never contacted the hostile edge:\n{log}"
    );
    let app_token = std::fs::read_to_string(&app_file).unwrap();
    let org_token = std::fs::read_to_string(&org_file).unwrap();
    for request in &seen {
        let text = request.text();
        assert!(
            !request.carries_credential()
                && !text.contains(app_token.trim())
                && !text.contains(org_token.trim()),
            "the hostile edge received a credential: {text}\n{log}"
        );
    }
    assert!(
        log.contains("names the Access application"),
        "the user is told why: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_edge_naming_another_application_gets_no_token_from_the_exchange() {
    a_hostile_edge_naming(APP_B, AUD_B).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_edge_naming_a_signed_in_application_gets_no_token_from_its_file() {
    a_hostile_edge_naming(APP, AUD).await;
}

/// The cluster's own edge CA (its inventory `access.ca_file`) vouches for its edge host only:
/// an auth domain whose certificate only that CA signed is not trusted, so it never gets to
/// see the org cookie nor to hand out keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_edge_ca_is_not_trusted_for_the_auth_domain() {
    let world = World::start(Lifetimes::default()).await;
    let browser = signing_in_browser(&world);
    // Nothing but the cluster's access.ca_file names the lab CA.
    let mut settings = world.settings();
    settings.ca_file = None;
    let access = AccessClient::with_timings(
        settings,
        k8s_tunnels::access::TokenStore::memory_only("tests"),
        browser.clone(),
        test_timings(),
    );
    let err = access
        .credential(&world.cluster(), Interaction::Explicit)
        .await
        .unwrap_err();
    let chain = k8s_tunnels::error_chain(&err);
    assert!(
        chain.contains(&format!("cannot fetch the key set of {AUTH_DOMAIN}")),
        "{chain}"
    );
    assert_eq!(
        browser.counts.opened(),
        0,
        "no login against an untrusted auth domain"
    );
    // With the auth domain's CA configured for Access itself, the same login works.
    let access = world.client(browser.clone(), test_timings());
    access
        .credential(&world.cluster(), Interaction::Explicit)
        .await
        .unwrap();
}
