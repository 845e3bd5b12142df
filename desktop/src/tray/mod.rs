//! The tray icon: it renders the menu model ([`crate::menu`]), shows the state in the icon and
//! tooltip, rebuilds when the shell's state changes, and hands clicks to the app as
//! [`MenuAction`]s. This module follows the shell; `backend.rs` draws, through `tray-icon` on
//! every system: an NSStatusItem in the macOS menu bar (a template icon, the menu on a click),
//! a Shell_NotifyIcon in the Windows notification area (colour icon, tooltip, left click opens
//! the window, right click the menu), and on Linux a StatusNotifierItem with its dbusmenu over
//! D-Bus (tray-icon's `ksni` backend: no GTK; left click opens the window, right click the
//! menu). The menu is built by [`muda_menu`]; the icon lives on the thread that
//! [`crate::main_thread`] runs (on macOS and Windows the main thread, in its event loop).

pub(crate) mod backend;
#[cfg(all(unix, not(target_os = "macos")))]
mod host;
pub mod icons;
pub mod muda_menu;

use backend::Backend;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use self::icons::IconError;
use crate::events::UiEvent;
use crate::menu::{MenuAction, MenuState};
use crate::shell::Shell;

/// The thread the tray icon lives on ([`crate::main_thread`]), as the tray's commands reach
/// it. Build it with [`tray_thread`].
pub(crate) type TrayThread = crate::main_thread::MainThread<backend::Command>;

/// What the tray's thread runs: a handler of the tray's commands that owns the icon.
pub(crate) fn tray_thread() -> impl FnMut(backend::Command) {
    let mut slot = backend::TraySlot::default();
    move |command| slot.handle(command)
}

/// The item's id, stable across starts (a tray host may remember its place by it).
pub const TRAY_ID: &str = "k8s-tunnels";

/// Bursts of events (a whole edge going away) land within this; the menu is rebuilt once.
const COALESCE: Duration = Duration::from_millis(100);

/// The tooltip's figures (each cluster's API answer) change without an event: re-read this
/// often.
const FIGURES_REFRESH: Duration = Duration::from_secs(10);

/// What a click does: the app's handler of menu actions. Called on the tokio runtime.
pub type OnAction = Arc<dyn Fn(MenuAction) + Send + Sync>;

/// The tray while it runs; dropping it stops following the shell and takes the icon away.
pub struct Tray {
    stop: CancellationToken,
}

impl Drop for Tray {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Shows the tray icon and keeps it following `shell`; clicks go to `on_action`. Returns once
/// the icon is up (on Linux: served, and registered when a tray host is there). Where no tray
/// can be shown (no session bus, no notification area) the app runs on without one, logged;
/// a decoding error of the built-in icons is a bug and returned. Must run inside the runtime.
pub(crate) async fn start(
    shell: &Arc<Shell>,
    main: &TrayThread,
    on_action: OnAction,
) -> Result<Tray, IconError> {
    // Subscribed before the state is read, so that no change between the two is missed.
    let events = shell.subscribe();
    let state = shell.menu_state();
    let (clicks, clicked) = mpsc::unbounded_channel();
    let backend = Backend::start(main, &state, clicks).await?;
    let stop = CancellationToken::new();
    // Backends report clicks from their own threads; the app acts on them here, in the runtime.
    tokio::spawn(deliver(clicked, on_action, stop.clone()));
    if let Some(backend) = backend {
        tokio::spawn(follow(
            backend,
            events,
            Arc::downgrade(shell),
            state,
            stop.clone(),
        ));
    }
    Ok(Tray { stop })
}

/// `tooltip` cut to at most `units` UTF-16 code units (how Windows counts a tooltip's length),
/// ending in "…" when cut.
pub fn fit_tooltip(tooltip: &str, units: usize) -> String {
    if tooltip.encode_utf16().count() <= units {
        return tooltip.to_string();
    }
    let mut fitted = String::new();
    let mut used = '…'.len_utf16();
    for c in tooltip.chars() {
        used += c.len_utf16();
        if used > units {
            break;
        }
        fitted.push(c);
    }
    fitted.push('…');
    fitted
}

async fn deliver(
    mut clicked: mpsc::UnboundedReceiver<MenuAction>,
    on_action: OnAction,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            action = clicked.recv() => match action {
                Some(action) => on_action(action),
                None => return,
            },
        }
    }
}

async fn follow(
    backend: Backend,
    mut events: broadcast::Receiver<UiEvent>,
    shell: Weak<Shell>,
    mut shown: MenuState,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.recv() => {
                // A lagged receiver missed events: the state is re-read below all the same.
                if let Err(broadcast::error::RecvError::Closed) = event {
                    break;
                }
            }
            _ = tokio::time::sleep(FIGURES_REFRESH) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(COALESCE) => {}
        }
        while events.try_recv().is_ok() {}
        let Some(shell) = shell.upgrade() else { break };
        let state = shell.menu_state();
        drop(shell);
        if state == shown {
            continue;
        }
        shown = state.clone();
        if !backend.show(state).await {
            // The tray is gone (its bus connection or its event loop): nothing left to update.
            return;
        }
    }
    backend.stop().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tooltips_fit_in_utf16_units_and_say_when_cut() {
        assert_eq!(
            fit_tooltip("k8s-tunnels: 3 tunnels up", 127),
            "k8s-tunnels: 3 tunnels up"
        );
        let long = format!(
            "k8s-tunnels: 1 tunnel up, 9 failing ({})",
            "prod-eu, ".repeat(20)
        );
        let fitted = fit_tooltip(&long, 127);
        assert_eq!(fitted.encode_utf16().count(), 127);
        assert!(fitted.ends_with('…') && long.starts_with(fitted.trim_end_matches('…')));
        // A character outside the BMP takes two units and is never split.
        let fitted = fit_tooltip("ab\u{1F600}cd", 4);
        assert_eq!(fitted, "ab…");
        assert_eq!(fit_tooltip("ab\u{1F600}", 4), "ab\u{1F600}");
    }
}
