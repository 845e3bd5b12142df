//! The commands the web UI invokes, mirrored in `ui/src/ipc.ts` (`Commands`, `COMMAND_NAMES`):
//! one-line adapters that relay each to the tray process, which owns the engine
//! ([`k8s_tunnels_desktop::control`]). What they return is the JSON the tray process's [`k8s_tunnels_desktop::shell::Shell`]
//! answers (`ClusterRow[]`, `TunnelStatus`, …); every error crosses as `{code, message}`.

use serde_json::Value;
use tauri::State;

use k8s_tunnels_desktop::control::{Client, Request};
use k8s_tunnels_desktop::ipc::IpcError;

type Tray<'a> = State<'a, Client>;
type Answer = Result<Value, IpcError>;

/// Every cluster with its tunnel.
#[tauri::command(rename_all = "snake_case")]
pub async fn clusters(tray: Tray<'_>) -> Answer {
    tray.call(Request::Clusters).await
}

/// Opens a cluster's tunnel.
#[tauri::command(rename_all = "snake_case")]
pub async fn connect(tray: Tray<'_>, id: String) -> Answer {
    tray.call(Request::Connect { id }).await
}

/// Closes a cluster's tunnel.
#[tauri::command(rename_all = "snake_case")]
pub async fn disconnect(tray: Tray<'_>, id: String) -> Answer {
    tray.call(Request::Disconnect { id }).await
}

/// Closes every tunnel.
#[tauri::command(rename_all = "snake_case")]
pub async fn disconnect_all(tray: Tray<'_>) -> Answer {
    tray.call(Request::DisconnectAll).await
}

/// Pins or unpins a cluster.
#[tauri::command(rename_all = "snake_case")]
pub async fn set_favourite(tray: Tray<'_>, id: String, favourite: bool) -> Answer {
    tray.call(Request::SetFavourite { id, favourite }).await
}

/// Switches kubectl's current context to the cluster's.
#[tauri::command(rename_all = "snake_case")]
pub async fn use_context(tray: Tray<'_>, id: String) -> Answer {
    tray.call(Request::UseContext { id }).await
}

/// The kubectl command that reaches the cluster, quoted for a POSIX shell.
#[tauri::command(rename_all = "snake_case")]
pub async fn kubectl_command(tray: Tray<'_>, id: String) -> Answer {
    tray.call(Request::KubectlCommand { id }).await
}

/// Runs discovery now.
#[tauri::command(rename_all = "snake_case")]
pub async fn refresh_discovery(tray: Tray<'_>) -> Answer {
    tray.call(Request::RefreshDiscovery).await
}

/// The settings.
#[tauri::command(rename_all = "snake_case")]
pub async fn settings(tray: Tray<'_>) -> Answer {
    tray.call(Request::Settings).await
}

/// Saves the settings.
#[tauri::command(rename_all = "snake_case")]
pub async fn save_settings(tray: Tray<'_>, settings: k8s_tunnels::state::Settings) -> Answer {
    tray.call(Request::SaveSettings { settings }).await
}

/// The discovery sources.
#[tauri::command(rename_all = "snake_case")]
pub async fn sources(tray: Tray<'_>) -> Answer {
    tray.call(Request::Sources).await
}

/// Where the app's files are and how it runs (demo lab, keychain).
#[tauri::command(rename_all = "snake_case")]
pub async fn about(tray: Tray<'_>) -> Answer {
    tray.call(Request::About).await
}

/// The activity log, newest last.
#[tauri::command(rename_all = "snake_case")]
pub async fn activity(tray: Tray<'_>) -> Answer {
    tray.call(Request::Activity).await
}

/// Registers every command above with a Tauri builder.
pub fn register<R: tauri::Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder.invoke_handler(tauri::generate_handler![
        clusters,
        connect,
        disconnect,
        disconnect_all,
        set_favourite,
        use_context,
        kubectl_command,
        refresh_discovery,
        settings,
        save_settings,
        sources,
        about,
        activity,
    ])
}
