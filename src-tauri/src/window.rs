//! The window process: Tauri and the webview, relaying the UI's commands to the tray process
//! and its events to the webview. It starts the tray process if none is running, and ends when
//! its window closes, taking the webview's memory with it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_tunnels::dirs::AppDirs;
use tauri::{Emitter as _, Manager as _, Runtime, WebviewUrl, WebviewWindowBuilder};
use tokio::sync::broadcast;

use k8s_tunnels_desktop::control::{self, Client, Pushed};
use k8s_tunnels_desktop::{HIDDEN_ARG, TRAY_BIN, init_logging, runtime_or_exit, sibling_binary};

/// The window's label.
pub const WINDOW: &str = "main";
/// How long a tray process started by the window may take to listen.
const TRAY_START: Duration = Duration::from_secs(20);

/// Connects to the tray process at `socket`, starting it (`k8s-tunnels-desktop --hidden`, in a
/// session of its own so that it outlives this window and the terminal) if none answers.
pub async fn connect_or_start_tray(socket: &Path) -> anyhow::Result<Client> {
    if let Ok(client) = Client::connect(socket).await {
        return Ok(client);
    }
    let tray = sibling_binary(TRAY_BIN).context("cannot find the app's binary")?;
    let mut command = std::process::Command::new(&tray);
    command
        .arg(HIDDEN_ARG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    #[cfg(windows)]
    {
        // No console and a process group of its own: a Ctrl-C or a closed terminal that
        // started this window does not reach the tray process.
        use std::os::windows::process::CommandExt as _;
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        command.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", tray.display()))?;
    let deadline = tokio::time::Instant::now() + TRAY_START;
    loop {
        if let Ok(client) = Client::connect(socket).await {
            // It lives on after this process; nothing to wait for.
            drop(child);
            return Ok(client);
        }
        if let Some(status) = child.try_wait().context("cannot watch the tray process")? {
            // Another tray process may have won the race for the socket; it answers now.
            return Client::connect(socket).await.with_context(|| {
                format!(
                    "the tray process exited ({status}) without listening on {}",
                    socket.display()
                )
            });
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the tray process did not listen on {} within {TRAY_START:?}",
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shows the window, creating it (and its webview) if needed.
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

/// Runs the window until it is closed (or the tray process goes away).
pub fn run() {
    init_logging();
    let runtime = runtime_or_exit("k8s-tunnels-window");
    // Tauri's async tasks and the relay share this one runtime.
    tauri::async_runtime::set(runtime.handle().clone());
    let entered = runtime.enter();
    let connected = AppDirs::from_env()
        .context("cannot find the app's folders")
        .and_then(|dirs| {
            dirs.ensure().context("cannot create the app's folders")?;
            let socket = control::socket_path(&dirs);
            runtime.block_on(async {
                let client = connect_or_start_tray(&socket).await?;
                let pushed = client
                    .subscribe()
                    .await
                    .context("the tray process did not accept the window")?;
                anyhow::Ok((client, pushed))
            })
        });
    let (client, pushed) = match connected {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("error: {e:#}");
            #[expect(
                clippy::disallowed_methods,
                reason = "the window's entry point, before its window exists: nothing to clean up"
            )]
            std::process::exit(1);
        }
    };

    let builder = tauri::Builder::default().manage(client).setup(move |app| {
        app.manage(Relay::start(app.handle().clone(), pushed));
        open_window(app.handle());
        Ok(())
    });
    // Tauri's generated context exits by itself when its embedded assets are unusable, as this
    // entry point does below when the window cannot start: before any window exists, with
    // nothing to clean up.
    #[expect(
        clippy::disallowed_methods,
        reason = "the window's entry point, before its window exists: nothing to clean up"
    )]
    let app = match crate::commands::register(builder).build(tauri::generate_context!()) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: cannot start the window: {e}");
            std::process::exit(1);
        }
    };
    // The window closing ends this process; the tunnels live on in the tray process.
    app.run(|_app, _event| {});
    drop(entered);
    drop(runtime);
}

/// Re-emits what the tray process pushes to the webview; dropping it stops that.
pub struct Relay {
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Relay {
    /// Follows `pushed`: events go to the webview, "focus" brings the window to the front, and
    /// the tray process going away ends the window.
    pub fn start<R: Runtime>(
        app: tauri::AppHandle<R>,
        mut pushed: broadcast::Receiver<Pushed>,
    ) -> Arc<Self> {
        let stop = tokio_util::sync::CancellationToken::new();
        let cancel = stop.clone();
        tauri::async_runtime::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = cancel.cancelled() => return,
                    message = pushed.recv() => message,
                };
                match message {
                    Ok(Pushed::Event(event)) => {
                        if let Err(e) = app.emit(event.name().as_str(), event.payload()) {
                            tracing::debug!(error = %e, "cannot emit an event");
                        }
                    }
                    Ok(Pushed::Focus) => open_window(&app),
                    Ok(Pushed::Closed) | Err(broadcast::error::RecvError::Closed) => {
                        tracing::warn!("the tray process went away; closing the window");
                        app.exit(0);
                        return;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                }
            }
        });
        Arc::new(Self { stop })
    }
}
