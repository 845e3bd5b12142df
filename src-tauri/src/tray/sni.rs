//! The tray on Linux (and the BSDs): a freedesktop StatusNotifierItem with its dbusmenu over
//! D-Bus, served by the `ksni` crate (pure Rust over zbus), so the tray process loads no GTK.
//!
//! A desktop without a tray host (no `org.kde.StatusNotifierWatcher` on the bus) is not an
//! error: the app runs on without an icon (the window and notifications still work), says so
//! once in the log, and registers its item when a watcher appears later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ksni::TrayMethods as _;
use ksni::menu::{CheckmarkItem, StandardItem, SubMenu};
use tokio::sync::mpsc;

use super::TRAY_ID;
use super::icons::{IconError, Icons, Rgba, Style};
use crate::main_thread::MainThread;
use crate::menu::{MenuAction, MenuNode, MenuState, TrayLook, model, tray_look};

/// The three icons as StatusNotifierItem pixmaps.
#[derive(Debug)]
struct Pixmaps {
    idle: ksni::Icon,
    up: ksni::Icon,
    failing: ksni::Icon,
}

impl Pixmaps {
    fn get(&self, look: TrayLook) -> &ksni::Icon {
        match look {
            TrayLook::Idle => &self.idle,
            TrayLook::Up => &self.up,
            TrayLook::Failing => &self.failing,
        }
    }
}

/// The StatusNotifierItem pixmap format: ARGB32 in network byte order.
fn argb(icon: &Rgba) -> ksni::Icon {
    ksni::Icon {
        width: i32::try_from(icon.width).unwrap_or(i32::MAX),
        height: i32::try_from(icon.height).unwrap_or(i32::MAX),
        data: icon
            .pixels
            .chunks_exact(4)
            .flat_map(|p| [p[3], p[0], p[1], p[2]])
            .collect(),
    }
}

/// The StatusNotifierItem: what ksni serves. Holds the state it shows; the follower swaps it.
struct Item {
    state: MenuState,
    icons: Arc<Pixmaps>,
    clicks: mpsc::UnboundedSender<MenuAction>,
    /// The "no tray host" warning was logged and the host has not come back since: warn once.
    offline: AtomicBool,
}

impl Item {
    fn clicked(&self, action: MenuAction) {
        // Closed only while the app ends: the click has nothing left to act on.
        let _ = self.clicks.send(action);
    }
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
        self.clicked(MenuAction::OpenWindow);
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
                activate: on_click(action.clone()),
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
                    Some(action) => on_click(action.clone()),
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

fn on_click(action: MenuAction) -> Box<dyn Fn(&mut Item) + Send> {
    Box::new(move |item: &mut Item| item.clicked(action.clone()))
}

fn escape(label: &str) -> String {
    label.replace('_', "__")
}

/// The served item.
pub(super) struct Backend {
    handle: ksni::Handle<Item>,
}

impl Backend {
    /// Puts the item on the session bus showing `state`; clicks go to `clicks`. Returns once
    /// it is served (and registered, when a tray host is there). `None` without a session bus
    /// (logged: a second start still opens the window). Linux needs no main-thread loop.
    pub(super) async fn start(
        _main: &MainThread,
        state: &MenuState,
        clicks: mpsc::UnboundedSender<MenuAction>,
    ) -> Result<Option<Self>, IconError> {
        let icons = Icons::decode(Style::Colour)?;
        let item = Item {
            state: state.clone(),
            icons: Arc::new(Pixmaps {
                idle: argb(icons.get(TrayLook::Idle)),
                up: argb(icons.get(TrayLook::Up)),
                failing: argb(icons.get(TrayLook::Failing)),
            }),
            clicks,
            offline: AtomicBool::new(false),
        };
        // With no watcher, ksni would fail the spawn; assumed available, it serves the item
        // anyway and registers it when a watcher appears (watcher_offline above logs the
        // absence).
        match item.assume_sni_available(true).spawn().await {
            Ok(handle) => Ok(Some(Self { handle })),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot put the tray icon on the session bus: running without a tray \
                     icon; a second start of the app opens the window"
                );
                Ok(None)
            }
        }
    }

    /// Shows `state`; false once the service has ended (its connection closed).
    pub(super) async fn show(&self, state: MenuState) -> bool {
        self.handle
            .update(move |item| item.state = state)
            .await
            .is_some()
    }

    /// Takes the item off the bus.
    pub(super) async fn stop(self) {
        self.handle.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixmaps_are_argb_with_the_pngs_alpha_first() {
        let icons = Icons::decode(Style::Colour).expect("decode");
        let rgba = icons.get(TrayLook::Up);
        let pixmap = argb(rgba);
        assert_eq!((pixmap.width, pixmap.height), (64, 64));
        assert_eq!(pixmap.data.len(), 64 * 64 * 4);
        // An opaque coloured pixel, rotated right by one byte.
        let i = rgba
            .pixels
            .chunks_exact(4)
            .position(|p| p[3] == 0xff && p[0] != p[1])
            .expect("an opaque coloured pixel")
            * 4;
        let p = &rgba.pixels[i..i + 4];
        assert_eq!(pixmap.data[i..i + 4], [p[3], p[0], p[1], p[2]]);
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
