//! The k8s-tunnels desktop app: a thin shell over the `k8s_tunnels` library, in two processes.
//!
//! - **The tray process** (`k8s-tunnels-desktop`, this crate, [`agent`]) is the app: it owns
//!   the engine and the tunnels, the tray menu and the notifications, and never loads GTK or
//!   WebKit, so it stays small while it runs all day. [`shell::Shell`] holds its state (the
//!   engine, the catalog, the activity log) and one stream of typed UI events ([`events`]);
//!   [`menu`] is the tray menu as a pure model that [`tray`] shows through `tray-icon` (on the
//!   thread [`main_thread`] runs it on); [`notify`] the notifications.
//! - **The window process** (`k8s-tunnels-window`, the `src-tauri` crate) is Tauri and the
//!   webview, started when the window is opened and gone when it is closed, so the webview's
//!   memory goes with it. It relays the UI's commands ([`ipc`]) to this process over the
//!   [`control`] socket, and re-emits the events it hears there to the webview.
//!
//! The window's crate is a Cargo workspace of its own, so that nothing of Tauri (which builds
//! `muda` with GTK) is ever part of this crate's build; a test checks the tray process's
//! memory map for GTK and WebKit.

pub mod agent;
pub mod autostart;
pub mod control;
pub mod events;
pub mod ipc;
pub mod main_thread;
pub mod menu;
pub mod notify;
pub mod shell;
pub mod tray;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_tunnels::app::{App, AppOptions};
use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::lab::{Lab, LabConfig};
use k8s_tunnels::tunnel::health::ProbeSchedule;

use crate::shell::{RunInfo, Shell};

/// The argument autostart launches the app with: start in the tray, without the window.
pub const HIDDEN_ARG: &str = "--hidden";
/// The tray process's binary (the app).
pub const TRAY_BIN: &str = "k8s-tunnels-desktop";
/// The window process's binary, installed next to the tray's.
pub const WINDOW_BIN: &str = "k8s-tunnels-window";

/// The web UI's TypeScript (`ui/src/generated/ipc.ts`): the types every window command and
/// event carries, from their one declaration each (`ipc/commands.rs`, `events.rs`).
pub fn typescript() -> String {
    ipc::typescript::generate(events::describe_events)
}

/// The path of a sibling binary of this program (`TRAY_BIN`, `WINDOW_BIN`; `.exe` added on
/// Windows): both are built and installed into the same folder.
pub fn sibling_binary(name: &str) -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// Loads the configuration and builds the shell, the SOCKS secret in `keychain`. With no cloud
/// source configured and no inventory, starts the built-in demo lab and uses its clusters.
pub async fn open_shell(
    dirs: AppDirs,
    options: AppOptions,
    keychain: Keychain,
    schedule: ProbeSchedule,
) -> anyhow::Result<Arc<Shell>> {
    let mut app = App::load(dirs, options).context("cannot load the configuration")?;
    let run = RunInfo {
        keychain: keychain.status().clone(),
        inventory_file: app.inventory_path().to_path_buf(),
    };
    let lab = if app.is_unconfigured() {
        let lab = Lab::start(LabConfig::demo(&app.dirs().cache.join("demo-lab")))
            .await
            .context("cannot start the demo lab")?;
        tracing::info!(
            gateway = %lab.gateway_addr(),
            clusters = lab.clusters().len(),
            "no cloud source or inventory configured: running on the demo lab"
        );
        app = app.with_inventory(lab.inventory_path().to_path_buf());
        Some(lab)
    } else {
        None
    };
    let (engine, _) = app
        .engine(&keychain, schedule)
        .context("cannot set up the tunnel engine")?;
    Ok(Shell::start(app, engine, lab, run))
}

/// The process's tokio runtime (two workers: the app idles most of the time), or exits with a
/// message: nothing works without it.
pub fn runtime_or_exit(thread_name: &str) -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(thread_name)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            #[expect(
                clippy::disallowed_methods,
                reason = "an entry point's first step: nothing is open yet"
            )]
            std::process::exit(1);
        }
    }
}

/// Logs to stderr, filtered by `K8S_TUNNELS_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("K8S_TUNNELS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(k8s_tunnels::terminal::colour(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The app's inputs from the environment, named as for the CLI.
pub fn options_from_env() -> AppOptions {
    let path = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    AppOptions {
        config: path("K8S_TUNNELS_CONFIG"),
        inventory: path("K8S_TUNNELS_INVENTORY"),
        kubeconfig: None,
    }
}
