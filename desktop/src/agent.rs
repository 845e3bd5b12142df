//! The tray process: the app itself. It owns the engine and the tunnels, serves the tray menu,
//! shows notifications and answers the window process over the control socket. It never loads
//! GTK or WebKit: the window is a separate process (`k8s-tunnels-window`, the `src-tauri`
//! crate) started on demand.

use std::sync::Arc;

use anyhow::Context as _;
use k8s_tunnels::app::KEYCHAIN_SERVICE;
use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::tunnel::health::ProbeSchedule;
use tokio_util::sync::CancellationToken;

use crate::control::{self, BindError, Client, Listener, Windows};
use crate::menu::MenuAction;
use crate::shell::Shell;
use crate::tray::TrayThread;
use crate::{HIDDEN_ARG, WINDOW_BIN, init_logging, open_shell, options_from_env, sibling_binary};

/// What the tray menu and the control socket act on: the shell, the connected windows, and the
/// app's end.
pub struct Agent {
    /// The app's state.
    pub shell: Arc<Shell>,
    /// The connected windows.
    pub windows: Arc<Windows>,
    quit: CancellationToken,
}

impl Agent {
    /// Brings a connected window to the front, or starts the window process.
    pub fn open_window(&self) {
        if self.windows.focus() {
            return;
        }
        start_window();
    }

    /// Ends the app: every tunnel closes, then the process exits.
    pub fn quit(&self) {
        self.quit.cancel();
    }

    /// Does what a tray menu click asks. Must run inside the runtime: the slow actions run as
    /// tasks, so that the tray answers the click at once.
    pub fn on_menu(&self, action: MenuAction) {
        let shell = Arc::clone(&self.shell);
        match action {
            MenuAction::Retry(id) => shell.retry(&id),
            MenuAction::Favourite(id) | MenuAction::Cluster(id) | MenuAction::Open(id) => {
                tokio::spawn(async move {
                    // Failures are in the activity log and the tunnel's state.
                    let _ = shell.toggle(&id).await;
                });
            }
            MenuAction::DisconnectAll => {
                tokio::spawn(async move { shell.disconnect_all().await });
            }
            MenuAction::RefreshDiscovery => {
                tokio::spawn(async move {
                    // Failures are in the activity log.
                    let _ = shell.refresh_discovery().await;
                });
            }
            MenuAction::OpenWindow => self.open_window(),
            MenuAction::Quit => self.quit(),
        }
    }
}

/// Starts the window process; it connects back over the control socket.
fn start_window() {
    let spawned = sibling_binary(WINDOW_BIN).and_then(|path| {
        tokio::process::Command::new(path)
            .stdin(std::process::Stdio::null())
            .spawn()
    });
    match spawned {
        // Reaped when it exits, so no zombie is left per window opened.
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(e) => tracing::error!(error = %e, "cannot start the window"),
    }
}

/// Runs the app until Quit or a termination signal: the engine on a tokio runtime, the tray
/// with the main thread's loop where the system needs one ([`crate::main_thread`]).
pub fn run() {
    init_logging();
    let hidden = std::env::args().any(|a| a == HIDDEN_ARG);
    let code = crate::main_thread::run(crate::tray::tray_thread, move |main| {
        let runtime = crate::runtime_or_exit("k8s-tunnels");
        match runtime.block_on(serve(hidden, &main)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    if code != 0 {
        #[expect(
            clippy::disallowed_methods,
            reason = "the tray's entry point, after the runtime and every handle have ended"
        )]
        std::process::exit(code);
    }
}

async fn serve(hidden: bool, main: &TrayThread) -> anyhow::Result<()> {
    let dirs = AppDirs::from_env().context("cannot find the app's folders")?;
    dirs.ensure().context("cannot create the app's folders")?;
    let socket = control::socket_path(&dirs);
    let listener = match Listener::bind(&socket) {
        Ok(listener) => listener,
        Err(BindError::AlreadyRunning { .. }) => {
            // A second launch: the running app shows its window.
            if !hidden {
                let client = Client::connect(&socket)
                    .await
                    .context("k8s-tunnels is already running but does not answer")?;
                client
                    .open_window()
                    .await
                    .context("k8s-tunnels is already running but did not open its window")?;
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // The keychain probe talks D-Bus and may block for a moment; nothing else runs yet.
    let keychain = tokio::task::spawn_blocking(|| Keychain::open(KEYCHAIN_SERVICE))
        .await
        .context("the keychain probe panicked")?;
    let shell = open_shell(dirs, options_from_env(), keychain, ProbeSchedule::default()).await?;
    let agent = Arc::new(Agent {
        shell: Arc::clone(&shell),
        windows: Arc::default(),
        quit: CancellationToken::new(),
    });
    match std::env::current_exe() {
        Ok(program) => shell.set_autostart_hook(Box::new(move |enabled| {
            crate::autostart::set(&program, enabled).map_err(|e| k8s_tunnels::error_chain(&e))
        })),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program: start at login is unavailable")
        }
    }
    // The tunnels that were on at the last Quit, as the user left them: before any command
    // is taken, so that none races the reopening.
    shell.reconnect_at_start().await;
    let _control = control::serve(
        listener,
        Arc::clone(&shell),
        Arc::clone(&agent.windows),
        // The control socket has already looked for a connected window to bring forward.
        Arc::new(start_window),
    )
    .context("cannot serve the control socket")?;
    let _notifier = crate::notify::Notifier::start(&shell);
    // The tray is on the bus before the window opens (a tray host shows the item first).
    let clicks = Arc::clone(&agent);
    let _tray = crate::tray::start(&shell, main, Arc::new(move |action| clicks.on_menu(action)))
        .await
        .context("cannot show the tray icon")?;
    if !hidden {
        agent.open_window();
    }
    tokio::select! {
        _ = agent.quit.cancelled() => {}
        _ = k8s_tunnels::signals::shutdown_requested() => {}
    }
    shell.shutdown().await;
    Ok(())
}
