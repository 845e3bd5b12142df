//! The tray on every system, through `tray-icon`: an NSStatusItem in the macOS menu bar, a
//! Shell_NotifyIcon in the Windows notification area, and on Linux a StatusNotifierItem with
//! its dbusmenu over D-Bus (tray-icon's GTK-free `ksni` backend); the menu is a `muda` menu
//! ([`super::muda_menu`]). A `tray-icon` icon and its menu belong to the thread that made them
//! (macOS and Windows also want that to be the main thread, inside its event loop): this
//! module's [`TraySlot`] lives on that thread ([`super::tray_thread`], which
//! [`crate::main_thread`] runs, hands it the [`Command`]s), and [`Backend`] is the runtime's side, sending those commands.

use tokio::sync::{mpsc, oneshot};
use tray_icon::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};

use super::TrayThread as MainThread;
use super::icons::{IconError, Icons, Style};
use super::muda_menu;
use super::{TRAY_ID, fit_tooltip};
use crate::menu::{MenuAction, MenuNode, MenuState, TrayLook, model, tray_look};

/// What differs between the systems, in one place.
struct Platform {
    /// The icon drawing: a template image on macOS, which the menu bar tints for light and
    /// dark bars; colour in the notification area and in a Linux panel.
    style: Style,
    /// Windows and Linux: a left click (a StatusNotifierItem's Activate) opens the window and
    /// the right button the menu. macOS: any click opens the menu, as on every menu-bar app.
    left_click_opens_window: bool,
    /// Linux: the item's title says the state too (a StatusNotifierItem's Title, which panels
    /// show as its name and tooltip heading). On macOS a title would be text in the menu bar.
    state_as_title: bool,
}

const PLATFORM: Platform = if cfg!(target_os = "macos") {
    Platform {
        style: Style::Template,
        left_click_opens_window: false,
        state_as_title: false,
    }
} else {
    Platform {
        style: Style::Colour,
        left_click_opens_window: true,
        state_as_title: !cfg!(windows),
    }
};

/// The longest tooltip Windows shows: 128 UTF-16 units including the terminating NUL
/// (`NOTIFYICONDATAW::szTip`); tray-icon cuts longer ones without keeping the NUL. Elsewhere
/// a tooltip that long is no better.
const TOOLTIP_UNITS: usize = 127;

/// Why the icon could not be shown or changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NativeError {
    /// The system refused the icon (on Linux: no tray host took it).
    #[error("the system refused the tray icon")]
    Tray(#[from] tray_icon::Error),
    /// The menu could not be built.
    #[error("cannot build the tray menu")]
    Menu(#[from] muda::Error),
    /// An icon's pixels do not fit its size.
    #[error("a tray icon is malformed")]
    Icon(#[from] tray_icon::BadIcon),
}

/// What the runtime asks of the tray on its thread.
pub(crate) enum Command {
    /// Create the icon showing the latest state; clicks go to `clicks`; `done` hears whether
    /// it worked.
    Create {
        /// The decoded icons.
        icons: Icons,
        /// Where clicks go.
        clicks: mpsc::UnboundedSender<MenuAction>,
        /// The tray's thread, for the click handler to ask for a redraw.
        main: MainThread,
        /// Whether the icon is up.
        done: oneshot::Sender<Result<(), NativeError>>,
    },
    /// Show `state` (and remember it, for an icon created later).
    Show(MenuState),
    /// Draw the shown state again: a checkbox that was clicked ticked itself, but only the
    /// tunnel's state may tick it.
    Redraw,
    /// Remove the icon.
    Remove,
}

/// The tray's side of the tray thread: the state to show and, once created, the icon.
#[derive(Default)]
pub(crate) struct TraySlot {
    latest: MenuState,
    icon: Option<NativeTray>,
}

impl TraySlot {
    /// Does `command` on the tray's thread.
    pub(crate) fn handle(&mut self, command: Command) {
        let outcome = match command {
            Command::Create {
                icons,
                clicks,
                main,
                done,
            } => {
                // The handlers first: the icon is on the bus as soon as it is built, and a click
                // that came before them would be lost (muda queues it where nobody reads).
                listen(clicks, main);
                let created = NativeTray::create(self.latest.clone(), icons).map(|tray| {
                    self.icon = Some(tray);
                });
                let _ = done.send(created);
                return;
            }
            Command::Show(state) => {
                self.latest = state.clone();
                self.icon.as_mut().map(|tray| tray.show(state))
            }
            Command::Redraw => self.icon.as_mut().map(NativeTray::redraw),
            Command::Remove => {
                self.icon = None;
                None
            }
        };
        if let Some(Err(e)) = outcome {
            tracing::warn!(error = %e, "cannot update the tray icon");
        }
    }
}

/// The icon, on the tray's thread.
struct NativeTray {
    icon: TrayIcon,
    icons: Icons,
    /// The menu drawn now.
    menu: Vec<MenuNode>,
    look: TrayLook,
}

impl NativeTray {
    fn create(state: MenuState, icons: Icons) -> Result<Self, NativeError> {
        let (look, tooltip) = tray_look(&state);
        let menu = model(&state);
        let tooltip = fit_tooltip(&tooltip, TOOLTIP_UNITS);
        let mut builder = TrayIconBuilder::new()
            .with_id(TRAY_ID)
            .with_icon(native_icon(&icons, look)?)
            .with_icon_as_template(PLATFORM.style == Style::Template)
            .with_menu(Box::new(muda_menu::build(&menu)?))
            .with_menu_on_left_click(!PLATFORM.left_click_opens_window);
        if PLATFORM.state_as_title {
            builder = builder.with_title(&tooltip);
        }
        let icon = builder.with_tooltip(tooltip).build()?;
        Ok(Self {
            icon,
            icons,
            menu,
            look,
        })
    }

    fn show(&mut self, state: MenuState) -> Result<(), NativeError> {
        let (look, tooltip) = tray_look(&state);
        if look != self.look {
            self.icon.set_icon_with_as_template(
                Some(native_icon(&self.icons, look)?),
                PLATFORM.style == Style::Template,
            )?;
            self.look = look;
        }
        let tooltip = fit_tooltip(&tooltip, TOOLTIP_UNITS);
        if PLATFORM.state_as_title {
            self.icon.set_title(Some(&tooltip));
        }
        self.icon.set_tooltip(Some(tooltip))?;
        // A new round trip changes the tooltip only; rebuilding an open menu would close it.
        let menu = model(&state);
        if menu != self.menu {
            self.menu = menu;
            self.redraw()?;
        }
        Ok(())
    }

    /// Builds the menu drawn now again: also after a click, since a checkbox that was clicked
    /// ticked itself, and only the tunnel's state may tick it.
    fn redraw(&mut self) -> Result<(), NativeError> {
        self.icon
            .set_menu(Some(Box::new(muda_menu::build(&self.menu)?)));
        Ok(())
    }
}

/// Sends the menu's and the icon's clicks to `clicks`. The two handlers are process-wide and
/// set once: there is one tray icon per process.
fn listen(clicks: mpsc::UnboundedSender<MenuAction>, main: MainThread) {
    let menu_clicks = clicks.clone();
    muda::MenuEvent::set_event_handler(Some(move |event: muda::MenuEvent| {
        if let Some(action) = muda_menu::action_of(&event) {
            if action.cluster().is_some() {
                main.send(Command::Redraw);
            }
            let _ = menu_clicks.send(action);
        }
    }));
    if PLATFORM.left_click_opens_window {
        TrayIconEvent::set_event_handler(Some(move |event: TrayIconEvent| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                let _ = clicks.send(MenuAction::OpenWindow);
            }
        }));
    }
}

fn native_icon(icons: &Icons, look: TrayLook) -> Result<tray_icon::Icon, tray_icon::BadIcon> {
    let icon = icons.get(look);
    tray_icon::Icon::from_rgba(icon.pixels.clone(), icon.width, icon.height)
}

/// The runtime's side of the tray: commands to the tray's thread.
pub(super) struct Backend {
    main: MainThread,
}

impl Backend {
    /// Shows the icon showing `state`; clicks go to `clicks`. Where the system has a place for
    /// it, returns once it is up. On Linux with no tray host yet, returns at once and the icon
    /// appears when a host does ([`super::host`]). `None` when the icon cannot be shown at all
    /// (logged): the app runs on without a tray icon.
    pub(super) async fn start(
        main: &MainThread,
        state: &MenuState,
        clicks: mpsc::UnboundedSender<MenuAction>,
    ) -> Result<Option<Self>, IconError> {
        let icons = Icons::decode(PLATFORM.style)?;
        if !main.send(Command::Show(state.clone())) {
            return Ok(None);
        }
        let create = Create {
            main: main.clone(),
            icons,
            clicks,
        };
        #[cfg(all(unix, not(target_os = "macos")))]
        match super::host::Watch::open().await {
            Ok(watch) if watch.present() => {}
            Ok(watch) => {
                tracing::warn!(
                    "no tray host on this desktop (no StatusNotifierWatcher): running without a \
                     tray icon; the window and notifications still work, and the icon appears \
                     when a tray host starts"
                );
                tokio::spawn(async move {
                    if watch.appeared().await {
                        tracing::info!("a tray host appeared: showing the tray icon");
                        create.run().await;
                    }
                });
                return Ok(Some(Self { main: main.clone() }));
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot reach the session bus for the tray icon: running without one; a \
                     second start of the app opens the window"
                );
                return Ok(None);
            }
        }
        Ok(create.run().await.then(|| Self { main: main.clone() }))
    }

    /// Shows `state`; false once the tray's thread has ended.
    pub(super) async fn show(&self, state: MenuState) -> bool {
        self.main.send(Command::Show(state))
    }

    /// Removes the icon.
    pub(super) async fn stop(self) {
        self.main.send(Command::Remove);
    }
}

/// What creating the icon takes, ready to be sent (at once, or when a tray host appears).
struct Create {
    main: MainThread,
    icons: Icons,
    clicks: mpsc::UnboundedSender<MenuAction>,
}

impl Create {
    /// Creates the icon on the tray's thread; true once it is up, false (logged) if the
    /// system refused it or the thread has ended.
    async fn run(self) -> bool {
        let (done, created) = oneshot::channel();
        let sent = self.main.send(Command::Create {
            icons: self.icons,
            clicks: self.clicks,
            main: self.main.clone(),
            done,
        });
        let outcome = if sent { created.await.ok() } else { None };
        match outcome {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::warn!(
                    error = %e,
                    "cannot show the tray icon: running without one; a second start of the \
                     app opens the window"
                );
                false
            }
            None => false,
        }
    }
}
