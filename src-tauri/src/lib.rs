//! The k8s-tunnels desktop app: a thin Tauri shell over the `k8s_tunnels` library.
//!
//! [`shell::Shell`] holds the app's state (the engine, the catalog, the activity log) and one
//! stream of typed UI events; [`commands`] are one-line adapters over it, [`events`] the events
//! the window hears, [`menu`] the tray menu as a pure model that [`tray`] renders, and
//! [`notify`] the desktop notifications. One tokio runtime runs the engine and Tauri's async
//! tasks. Closing the window frees the webview and keeps the app in the tray; Quit closes every
//! tunnel and exits.

pub mod commands;
pub mod events;
pub mod menu;
pub mod notify;
pub mod shell;
pub mod tray;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_tunnels::app::{App, AppOptions, KEYCHAIN_SERVICE};
use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::lab::{Lab, LabConfig};
use k8s_tunnels::tunnel::health::ProbeSchedule;
use tauri::{Manager, Runtime, WebviewUrl, WebviewWindowBuilder};

use crate::shell::Shell;

/// The window's label.
pub const WINDOW: &str = "main";
/// The argument autostart launches the app with: start in the tray, without the window.
pub const HIDDEN_ARG: &str = "--hidden";

/// Loads the configuration and builds the shell, the SOCKS secret in `keychain`. With no cloud
/// source configured and no inventory, starts the built-in demo lab and uses its clusters.
pub async fn open_shell(
    dirs: AppDirs,
    options: AppOptions,
    keychain: Keychain,
    schedule: ProbeSchedule,
) -> anyhow::Result<Arc<Shell>> {
    let mut app = App::load(dirs, options).context("cannot load the configuration")?;
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
    Ok(Shell::start(app, engine, lab))
}

/// Shows the window, creating it (and its webview) if it was closed.
pub fn open_window<R: Runtime>(app: &tauri::AppHandle<R>) {
    if let Some(window) = app.get_webview_window(WINDOW) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
        return;
    }
    let built = WebviewWindowBuilder::new(app, WINDOW, WebviewUrl::App("index.html".into()))
        .title("k8s-tunnels")
        .inner_size(1000.0, 700.0)
        .min_inner_size(600.0, 400.0)
        .build();
    if let Err(e) = built {
        tracing::error!(error = %e, "cannot open the window");
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("K8S_TUNNELS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The app's inputs from the environment, named as for the CLI.
fn options_from_env() -> AppOptions {
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

/// Runs the desktop app until Quit.
pub fn run() {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("k8s-tunnels")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    // Tauri's async tasks and the engine share this one runtime.
    tauri::async_runtime::set(runtime.handle().clone());
    // Setup code on the main thread (tray, notifier) spawns onto it too.
    let entered = runtime.enter();
    let shell = match AppDirs::from_env()
        .context("cannot find the app's folders")
        .and_then(|dirs| {
            // The keychain probe talks D-Bus and may block for a moment; nothing else runs yet.
            let keychain = Keychain::open(KEYCHAIN_SERVICE);
            runtime.block_on(open_shell(
                dirs,
                options_from_env(),
                keychain,
                ProbeSchedule::default(),
            ))
        }) {
        Ok(shell) => shell,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    let hidden = std::env::args().any(|a| a == HIDDEN_ARG);

    let builder = tauri::Builder::default()
        // First: a second launch must reach the running instance before anything else starts.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            open_window(app)
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec![HIDDEN_ARG]),
        ))
        .manage(shell.clone())
        .setup(move |app| {
            let handle = app.handle().clone();
            shell.set_autostart_hook(Box::new(move |enable| {
                use tauri_plugin_autostart::ManagerExt as _;
                let launcher = handle.autolaunch();
                let result = if enable {
                    launcher.enable()
                } else {
                    launcher.disable()
                };
                result.map_err(|e| e.to_string())
            }));
            let follower = tray::install(app.handle(), &shell)?;
            app.manage(follower);
            app.manage(notify::Notifier::start(&shell));
            app.manage(forward_events(app.handle().clone(), &shell));
            if !hidden {
                open_window(app.handle());
            }
            Ok(())
        });
    let app = match commands::register(builder).build(tauri::generate_context!()) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: cannot start the desktop app: {e}");
            std::process::exit(1);
        }
    };
    app.run(|_app, event| {
        // The last window closing must not end the app: it lives on in the tray. Only Quit
        // (which exits with a code) ends it.
        if let tauri::RunEvent::ExitRequested {
            code: None, api, ..
        } = event
        {
            api.prevent_exit();
        }
    });
    drop(entered);
    drop(runtime);
}

/// Sends every UI event to the window. Dropping the handle stops it.
pub fn forward_events<R: Runtime>(app: tauri::AppHandle<R>, shell: &Arc<Shell>) -> EventForwarder {
    use tauri::Emitter as _;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut events = shell.subscribe();
    let cancel = stop.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => {
                    if let Err(e) = app.emit(event.name().as_str(), event.payload()) {
                        tracing::debug!(error = %e, "cannot emit an event");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    EventForwarder { stop }
}

/// Keeps UI events flowing to the window; dropping it stops that.
pub struct EventForwarder {
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for EventForwarder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
