//! The tray on macOS and Windows: `tray-icon` (NSStatusItem / Shell_NotifyIcon) with the menu
//! as a `muda` menu ([`super::muda_menu`]). Both systems want the icon created, changed and
//! clicked on the main thread, inside its event loop: this module's [`NativeTray`] lives there
//! ([`crate::main_thread`] runs the loop and hands it the [`Command`]s), and [`Backend`] is
//! the runtime's side, sending those commands.

use tokio::sync::{mpsc, oneshot};
use tray_icon::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};

use super::icons::{IconError, Icons, Style};
use super::muda_menu;
use super::{TRAY_ID, fit_tooltip};
use crate::main_thread::MainThread;
use crate::menu::{MenuAction, MenuState, TrayLook, model, tray_look};

/// What differs between the two systems, in one place.
struct Platform {
    /// The icon drawing: a template image on macOS, which the menu bar tints for light and
    /// dark bars; colour in the notification area.
    style: Style,
    /// Windows: a left click opens the window and the right button opens the menu. macOS: any
    /// click opens the menu, as on every menu-bar app.
    left_click_opens_window: bool,
}

const PLATFORM: Platform = if cfg!(target_os = "macos") {
    Platform {
        style: Style::Template,
        left_click_opens_window: false,
    }
} else {
    Platform {
        style: Style::Colour,
        left_click_opens_window: true,
    }
};

/// The longest tooltip Windows shows: 128 UTF-16 units including the terminating NUL
/// (`NOTIFYICONDATAW::szTip`); tray-icon cuts longer ones without keeping the NUL.
const TOOLTIP_UNITS: usize = 127;

/// Why the icon could not be shown or changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NativeError {
    /// The system refused the icon.
    #[error("the system refused the tray icon")]
    Tray(#[from] tray_icon::Error),
    /// The menu could not be built.
    #[error("cannot build the tray menu")]
    Menu(#[from] muda::Error),
    /// An icon's pixels do not fit its size.
    #[error("a tray icon is malformed")]
    Icon(#[from] tray_icon::BadIcon),
}

/// What the runtime asks of the tray on the main thread.
pub(crate) enum Command {
    /// Create the icon showing `state`; clicks go to `clicks`; `done` hears whether it worked.
    Create {
        /// The state to show.
        state: MenuState,
        /// The decoded icons.
        icons: Icons,
        /// Where clicks go.
        clicks: mpsc::UnboundedSender<MenuAction>,
        /// The main thread's loop, for the click handler to ask for a redraw.
        main: MainThread,
        /// Whether the icon is up.
        done: oneshot::Sender<Result<(), NativeError>>,
    },
    /// Show `state`.
    Show(MenuState),
    /// Draw the shown state again: a checkbox that was clicked ticked itself, but only the
    /// tunnel's state may tick it.
    Redraw,
    /// Remove the icon.
    Remove,
}

/// The icon, on the main thread.
pub(crate) struct NativeTray {
    icon: TrayIcon,
    icons: Icons,
    shown: MenuState,
    look: TrayLook,
}

impl NativeTray {
    fn create(state: MenuState, icons: Icons) -> Result<Self, NativeError> {
        let (look, tooltip) = tray_look(&state);
        let icon = TrayIconBuilder::new()
            .with_id(TRAY_ID)
            .with_icon(native_icon(&icons, look)?)
            .with_icon_as_template(PLATFORM.style == Style::Template)
            .with_tooltip(fit_tooltip(&tooltip, TOOLTIP_UNITS))
            .with_menu(Box::new(muda_menu::build(&model(&state))?))
            .with_menu_on_left_click(!PLATFORM.left_click_opens_window)
            .build()?;
        Ok(Self {
            icon,
            icons,
            shown: state,
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
        self.icon
            .set_tooltip(Some(fit_tooltip(&tooltip, TOOLTIP_UNITS)))?;
        self.icon
            .set_menu(Some(Box::new(muda_menu::build(&model(&state))?)));
        self.shown = state;
        Ok(())
    }
}

/// Does `command` on the main thread, where `slot` holds the icon once created.
pub(crate) fn handle(slot: &mut Option<NativeTray>, command: Command) {
    let outcome = match command {
        Command::Create {
            state,
            icons,
            clicks,
            main,
            done,
        } => {
            let created = NativeTray::create(state, icons);
            let outcome = match created {
                Ok(tray) => {
                    *slot = Some(tray);
                    listen(clicks, main);
                    Ok(())
                }
                Err(e) => Err(e),
            };
            let _ = done.send(outcome);
            return;
        }
        Command::Show(state) => slot.as_mut().map(|tray| tray.show(state)),
        Command::Redraw => slot.as_mut().map(|tray| tray.show(tray.shown.clone())),
        Command::Remove => {
            *slot = None;
            None
        }
    };
    if let Some(Err(e)) = outcome {
        tracing::warn!(error = %e, "cannot update the tray icon");
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

/// The runtime's side of the tray: commands to the main thread.
pub(super) struct Backend {
    main: MainThread,
}

impl Backend {
    /// Creates the icon on the main thread showing `state`; clicks go to `clicks`. `None` when
    /// the system has no place for it (logged): the app runs on without a tray icon.
    pub(super) async fn start(
        main: &MainThread,
        state: &MenuState,
        clicks: mpsc::UnboundedSender<MenuAction>,
    ) -> Result<Option<Self>, IconError> {
        let icons = Icons::decode(PLATFORM.style)?;
        let (done, created) = oneshot::channel();
        let sent = main.send(Command::Create {
            state: state.clone(),
            icons,
            clicks,
            main: main.clone(),
            done,
        });
        let outcome = if sent { created.await.ok() } else { None };
        match outcome {
            Some(Ok(())) => Ok(Some(Self { main: main.clone() })),
            Some(Err(e)) => {
                tracing::warn!(
                    error = %e,
                    "cannot show the tray icon: running without one; a second start of the \
                     app opens the window"
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Shows `state`; false once the main thread's loop has ended.
    pub(super) async fn show(&self, state: MenuState) -> bool {
        self.main.send(Command::Show(state))
    }

    /// Removes the icon.
    pub(super) async fn stop(self) {
        self.main.send(Command::Remove);
    }
}
