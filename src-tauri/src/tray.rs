//! The tray icon, served over D-Bus as a freedesktop StatusNotifierItem with a dbusmenu (the
//! `ksni` crate: pure Rust over zbus, so the tray process loads no GTK). It renders the menu
//! model ([`crate::menu`]), shows the state in the icon, title and tooltip, rebuilds when the
//! shell's state changes, and hands clicks to the app as [`MenuAction`]s.
//!
//! A desktop without a tray host (no `org.kde.StatusNotifierWatcher` on the bus) is not an
//! error: the app runs on without an icon (the window and notifications still work), says so
//! once in the log, and registers its item when a watcher appears later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ksni::TrayMethods as _;
use ksni::menu::{CheckmarkItem, StandardItem, SubMenu};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::UiEvent;
use crate::menu::{MenuAction, MenuNode, MenuState, TrayLook, model, tray_look};
use crate::shell::Shell;

/// The item's id, stable across starts (a tray host may remember its place by it).
pub const TRAY_ID: &str = "k8s-tunnels";

/// Bursts of events (a whole edge going away) land within this; the menu is rebuilt once.
const COALESCE: Duration = Duration::from_millis(100);

const ICON_IDLE: &[u8] = include_bytes!("../../icons/tray-idle.png");
const ICON_UP: &[u8] = include_bytes!("../../icons/tray-up.png");
const ICON_FAILING: &[u8] = include_bytes!("../../icons/tray-failing.png");

/// Why the tray icons could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IconError {
    /// The PNG did not decode.
    #[error("cannot decode the {look:?} tray icon")]
    Decode {
        /// Which icon.
        look: TrayLook,
        /// Why.
        #[source]
        source: png::DecodingError,
    },
    /// The PNG decoded to something other than 8-bit RGB(A) or grey(+alpha).
    #[error("the {look:?} tray icon has an unsupported colour type {color:?}")]
    Format {
        /// Which icon.
        look: TrayLook,
        /// What it decoded to.
        color: png::ColorType,
    },
}

/// The three tray icons as ARGB32 pixmaps, decoded once at start.
#[derive(Clone, Debug)]
pub struct Icons {
    idle: ksni::Icon,
    up: ksni::Icon,
    failing: ksni::Icon,
}

impl Icons {
    /// Decodes the icons built into the binary.
    pub fn decode() -> Result<Self, IconError> {
        Ok(Self {
            idle: argb_icon(ICON_IDLE, TrayLook::Idle)?,
            up: argb_icon(ICON_UP, TrayLook::Up)?,
            failing: argb_icon(ICON_FAILING, TrayLook::Failing)?,
        })
    }

    /// The icon for `look`.
    pub fn get(&self, look: TrayLook) -> &ksni::Icon {
        match look {
            TrayLook::Idle => &self.idle,
            TrayLook::Up => &self.up,
            TrayLook::Failing => &self.failing,
        }
    }
}

/// Decodes a PNG into the StatusNotifierItem pixmap format: ARGB32 in network byte order.
fn argb_icon(bytes: &[u8], look: TrayLook) -> Result<ksni::Icon, IconError> {
    let decode = |source| IconError::Decode { look, source };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palette and low bit depths become 8-bit channels, 16-bit ones are cut to 8, and a tRNS
    // chunk becomes an alpha channel: what is left is one of four 8-bit layouts.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(decode)?;
    let size = reader.output_buffer_size().ok_or(IconError::Format {
        look,
        color: reader.output_color_type().0,
    })?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(decode)?;
    buf.truncate(frame.buffer_size());
    let data: Vec<u8> = match frame.color_type {
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[3], p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [0xff, p[0], p[1], p[2]])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[1], p[0], p[0], p[0]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [0xff, g, g, g]).collect(),
        color => return Err(IconError::Format { look, color }),
    };
    Ok(ksni::Icon {
        width: i32::try_from(frame.width).unwrap_or(i32::MAX),
        height: i32::try_from(frame.height).unwrap_or(i32::MAX),
        data,
    })
}

/// What a click does: the app's handler of menu actions.
pub type OnAction = Arc<dyn Fn(MenuAction) + Send + Sync>;

/// The StatusNotifierItem: what ksni serves. Holds the state it shows; the follower swaps it.
struct Item {
    state: MenuState,
    icons: Arc<Icons>,
    on_action: OnAction,
    /// The "no tray host" warning was logged and the host has not come back since: warn once.
    offline: AtomicBool,
}

impl ksni::Tray for Item {
    fn id(&self) -> String {
        TRAY_ID.to_string()
    }

    fn title(&self) -> String {
        tray_look(&self.state).1
    }

    fn category(&self) -> ksni::Category {
        ksni::Category::ApplicationStatus
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        vec![self.icons.get(tray_look(&self.state).0).clone()]
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: tray_look(&self.state).1,
            ..Default::default()
        }
    }

    /// A left click opens the window; the menu is on the right button.
    fn activate(&mut self, _x: i32, _y: i32) {
        (self.on_action)(MenuAction::OpenWindow);
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        render(&model(&self.state))
    }

    fn watcher_online(&self) {
        if self.offline.swap(false, Ordering::Relaxed) {
            tracing::info!("a tray host appeared: the tray icon is shown");
        }
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        if !self.offline.swap(true, Ordering::Relaxed) {
            let why = match &reason {
                ksni::OfflineReason::Error(e) => e.to_string(),
                _ => "the StatusNotifierWatcher left the bus".to_string(),
            };
            tracing::warn!(
                reason = %why,
                "no tray host on this desktop (no StatusNotifierWatcher): running without a \
                 tray icon; the window and notifications still work, and the icon appears \
                 when a tray host starts"
            );
        }
        // Keep serving: ksni registers the item again when a watcher comes.
        true
    }
}

/// The item's menu for `nodes`. dbusmenu labels take `_` as the access-key marker, so a
/// cluster's underscores are doubled to show as they are.
fn render(nodes: &[MenuNode]) -> Vec<ksni::MenuItem<Item>> {
    nodes
        .iter()
        .map(|node| match node {
            MenuNode::Check {
                action,
                label,
                checked,
            } => CheckmarkItem {
                label: escape(label),
                checked: *checked,
                activate: clicked(action.clone()),
                ..Default::default()
            }
            .into(),
            MenuNode::Item {
                action,
                label,
                enabled,
            } => StandardItem {
                label: escape(label),
                enabled: *enabled,
                activate: match action {
                    Some(action) => clicked(action.clone()),
                    None => Box::new(|_: &mut Item| {}),
                },
                ..Default::default()
            }
            .into(),
            MenuNode::Submenu { label, children } => SubMenu {
                label: escape(label),
                submenu: render(children),
                ..Default::default()
            }
            .into(),
            MenuNode::Separator => ksni::MenuItem::Separator,
        })
        .collect()
}

fn clicked(action: MenuAction) -> Box<dyn Fn(&mut Item) + Send> {
    Box::new(move |item: &mut Item| (item.on_action)(action.clone()))
}

fn escape(label: &str) -> String {
    label.replace('_', "__")
}

/// The tray while it runs; dropping it stops following the shell and takes the icon off the
/// bus.
pub struct Tray {
    stop: CancellationToken,
}

impl Drop for Tray {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Puts the tray icon on the session bus and keeps it following `shell`; clicks go to
/// `on_action`. Returns once the item is served (and registered, when a tray host is there).
/// Without a session bus the app runs on without a tray (logged: a second start still opens
/// the window); a decoding error of the built-in icons is a bug and returned.
pub async fn start(shell: &Arc<Shell>, on_action: OnAction) -> Result<Tray, IconError> {
    let icons = Arc::new(Icons::decode()?);
    // Subscribed before the state is read, so that no change between the two is missed.
    let events = shell.subscribe();
    let state = shell.menu_state();
    let item = Item {
        state: state.clone(),
        icons,
        on_action,
        offline: AtomicBool::new(false),
    };
    let stop = CancellationToken::new();
    // With no watcher, ksni would fail the spawn; assumed available, it serves the item anyway
    // and registers it when a watcher appears (watcher_offline above logs the absence).
    match item.assume_sni_available(true).spawn().await {
        Ok(handle) => {
            tokio::spawn(follow(
                handle,
                events,
                Arc::downgrade(shell),
                state,
                stop.clone(),
            ));
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot put the tray icon on the session bus: running without a tray icon; a \
             second start of the app opens the window"
        ),
    }
    Ok(Tray { stop })
}

async fn follow(
    handle: ksni::Handle<Item>,
    mut events: broadcast::Receiver<UiEvent>,
    shell: std::sync::Weak<Shell>,
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
        if handle
            .update(move |item| item.state = state)
            .await
            .is_none()
        {
            // The service ended (its connection closed): nothing left to update.
            return;
        }
    }
    handle.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icons_decode_to_argb_with_the_pngs_alpha_first() {
        let icons = Icons::decode().expect("decode");
        for look in [TrayLook::Idle, TrayLook::Up, TrayLook::Failing] {
            let icon = icons.get(look);
            assert_eq!((icon.width, icon.height), (64, 64));
            assert_eq!(icon.data.len(), 64 * 64 * 4);
        }
        // Compare with an independent RGBA decode: each pixel rotated right by one byte.
        let mut decoder = png::Decoder::new(std::io::Cursor::new(ICON_UP));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("info");
        let mut rgba = vec![0; reader.output_buffer_size().expect("size")];
        reader.next_frame(&mut rgba).expect("frame");
        let argb = &icons.get(TrayLook::Up).data;
        let opaque = rgba
            .chunks_exact(4)
            .position(|p| p[3] == 0xff && p[0] != p[1]);
        let i = opaque.expect("an opaque coloured pixel") * 4;
        assert_eq!(
            argb[i..i + 4],
            [rgba[i + 3], rgba[i], rgba[i + 1], rgba[i + 2]]
        );
        // The three looks differ.
        assert_ne!(icons.get(TrayLook::Idle).data, icons.get(TrayLook::Up).data);
        assert_ne!(
            icons.get(TrayLook::Up).data,
            icons.get(TrayLook::Failing).data
        );
    }

    #[test]
    fn labels_keep_their_underscores() {
        assert_eq!(escape("prod_eu"), "prod__eu");
        let nodes = render(&[MenuNode::Submenu {
            label: "a_b".into(),
            children: vec![MenuNode::Separator],
        }]);
        let ksni::MenuItem::SubMenu(sub) = &nodes[0] else {
            panic!("not a submenu")
        };
        assert_eq!(sub.label, "a__b");
        assert!(matches!(sub.submenu[0], ksni::MenuItem::Separator));
    }
}
