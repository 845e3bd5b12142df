//! The tray icon: renders the menu model ([`crate::menu`]) with Tauri's menu API, rebuilds it on
//! every state change, shows the state in the icon and the tooltip, and turns clicks into shell
//! actions.

use std::sync::Arc;
use std::time::Duration;

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, MenuItemKind, PredefinedMenuItem, Submenu};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::menu::{MenuAction, MenuNode, MenuState, TrayLook, model, tray_look};
use crate::shell::Shell;

/// The tray icon's id.
pub const TRAY_ID: &str = "main";

const ICON_IDLE: &[u8] = include_bytes!("../../icons/tray-idle.png");
const ICON_UP: &[u8] = include_bytes!("../../icons/tray-up.png");
const ICON_FAILING: &[u8] = include_bytes!("../../icons/tray-failing.png");

fn icon(look: TrayLook) -> tauri::Result<Image<'static>> {
    Image::from_bytes(match look {
        TrayLook::Idle => ICON_IDLE,
        TrayLook::Up => ICON_UP,
        TrayLook::Failing => ICON_FAILING,
    })
}

/// Builds Tauri menu items for `nodes`; items without an action get ids of their own
/// (`text:<n>`, `submenu:<n>`) that [`MenuAction::from_id`] ignores.
fn render<R: Runtime>(
    app: &AppHandle<R>,
    nodes: &[MenuNode],
) -> tauri::Result<Vec<MenuItemKind<R>>> {
    let mut counter = 0usize;
    render_into(app, nodes, &mut counter)
}

fn render_into<R: Runtime>(
    app: &AppHandle<R>,
    nodes: &[MenuNode],
    counter: &mut usize,
) -> tauri::Result<Vec<MenuItemKind<R>>> {
    let mut items = Vec::with_capacity(nodes.len());
    for node in nodes {
        *counter += 1;
        let item = match node {
            MenuNode::Check {
                action,
                label,
                checked,
            } => MenuItemKind::Check(CheckMenuItem::with_id(
                app,
                action.to_id(),
                label,
                true,
                *checked,
                None::<&str>,
            )?),
            MenuNode::Item {
                action,
                label,
                enabled,
            } => {
                let id = action
                    .as_ref()
                    .map_or_else(|| format!("text:{counter}"), MenuAction::to_id);
                MenuItemKind::MenuItem(MenuItem::with_id(app, id, label, *enabled, None::<&str>)?)
            }
            MenuNode::Submenu { label, children } => {
                let children = render_into(app, children, counter)?;
                let refs: Vec<&dyn tauri::menu::IsMenuItem<R>> = children
                    .iter()
                    .map(|c| c as &dyn tauri::menu::IsMenuItem<R>)
                    .collect();
                MenuItemKind::Submenu(Submenu::with_id_and_items(
                    app,
                    format!("submenu:{counter}"),
                    label,
                    true,
                    &refs,
                )?)
            }
            MenuNode::Separator => MenuItemKind::Predefined(PredefinedMenuItem::separator(app)?),
        };
        items.push(item);
    }
    Ok(items)
}

fn build_menu<R: Runtime>(app: &AppHandle<R>, state: &MenuState) -> tauri::Result<Menu<R>> {
    let items = render(app, &model(state))?;
    let refs: Vec<&dyn tauri::menu::IsMenuItem<R>> = items
        .iter()
        .map(|c| c as &dyn tauri::menu::IsMenuItem<R>)
        .collect();
    Menu::with_items(app, &refs)
}

/// Creates the tray icon and keeps it following the shell. Dropping the returned handle stops
/// the updates (the icon goes with the app).
pub fn install<R: Runtime>(app: &AppHandle<R>, shell: &Arc<Shell>) -> tauri::Result<TrayFollower> {
    let state = shell.menu_state();
    let (look, tooltip) = tray_look(&state);
    let menu = build_menu(app, &state)?;
    let tray = TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(look)?)
        .tooltip(&tooltip)
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| {
            if let Some(action) = MenuAction::from_id(event.id().as_ref()) {
                on_action(app, action);
            }
        })
        .build(app)?;
    let stop = CancellationToken::new();
    tauri::async_runtime::spawn(follow(
        app.clone(),
        tray,
        shell.subscribe(),
        Arc::downgrade(shell),
        state,
        stop.clone(),
    ));
    Ok(TrayFollower { stop })
}

/// Keeps the tray following the shell; dropping it stops that.
pub struct TrayFollower {
    stop: CancellationToken,
}

impl Drop for TrayFollower {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn follow<R: Runtime>(
    app: AppHandle<R>,
    tray: TrayIcon<R>,
    mut events: broadcast::Receiver<crate::events::UiEvent>,
    shell: std::sync::Weak<Shell>,
    mut shown: MenuState,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = event {
                    return;
                }
            }
        }
        // Events come in bursts (a whole edge going away); let the burst land, then rebuild once.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while events.try_recv().is_ok() {}
        let Some(shell) = shell.upgrade() else { return };
        let state = shell.menu_state();
        drop(shell);
        if state == shown {
            continue;
        }
        let (look, tooltip) = tray_look(&state);
        let result = build_menu(&app, &state).and_then(|menu| {
            tray.set_menu(Some(menu))?;
            tray.set_icon(Some(icon(look)?))?;
            tray.set_tooltip(Some(&tooltip))
        });
        match result {
            Ok(()) => shown = state,
            Err(e) => tracing::warn!(error = %e, "cannot update the tray"),
        }
    }
}

/// Does what a menu click asks.
pub fn on_action<R: Runtime>(app: &AppHandle<R>, action: MenuAction) {
    let Some(shell) = app.try_state::<Arc<Shell>>().map(|s| s.inner().clone()) else {
        return;
    };
    match action {
        MenuAction::Favourite(id) | MenuAction::Cluster(id) => {
            tauri::async_runtime::spawn(async move {
                // Failures are in the activity log and the tunnel's state.
                let _ = shell.toggle(&id).await;
            });
        }
        MenuAction::DisconnectAll => {
            tauri::async_runtime::spawn(async move { shell.disconnect_all().await });
        }
        MenuAction::RefreshDiscovery => {
            tauri::async_runtime::spawn(async move {
                let _ = shell.refresh_discovery().await;
            });
        }
        MenuAction::OpenWindow => crate::open_window(app),
        MenuAction::Quit => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                shell.shutdown().await;
                app.exit(0);
            });
        }
    }
}
