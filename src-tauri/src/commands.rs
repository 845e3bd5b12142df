//! The commands the web UI invokes, mirrored in `ui/src/ipc.ts` (`Commands`, `COMMAND_NAMES`):
//! one-line adapters over [`Shell`]. Every error crosses as one `{code, message}` type.

use std::sync::Arc;

use k8s_tunnels::app::SourceInfo;
use k8s_tunnels::engine::TunnelStatus;
use k8s_tunnels::state::Settings;
use serde::Serialize;
use tauri::State;

use crate::events::{Activity, SourceOutcome};
use crate::shell::{ClusterRow, Shell};

/// What kind of error (`ErrorCode` in ipc.ts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such cluster.
    NotFound,
    /// The request or the configuration is invalid.
    Invalid,
    /// A tunnel could not be opened.
    Tunnel,
    /// The kubeconfig could not be updated.
    Kubeconfig,
    /// Discovery failed or is already running.
    Discovery,
    /// A login is needed.
    LoginRequired,
    /// App state could not be read or written.
    State,
    /// A bug.
    Internal,
}

/// Every error that crosses the IPC boundary. Never holds a secret: messages come from the
/// library's errors, which never carry one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct IpcError {
    /// What kind of error.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl IpcError {
    /// An error of this kind.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Command names, exactly as `ui/src/ipc.ts` spells them (and as `generate_handler!` registers
/// the functions below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandName {
    /// `clusters`
    Clusters,
    /// `connect`
    Connect,
    /// `disconnect`
    Disconnect,
    /// `disconnect_all`
    DisconnectAll,
    /// `set_favourite`
    SetFavourite,
    /// `use_context`
    UseContext,
    /// `kubectl_command`
    KubectlCommand,
    /// `refresh_discovery`
    RefreshDiscovery,
    /// `settings`
    Settings,
    /// `save_settings`
    SaveSettings,
    /// `sources`
    Sources,
    /// `activity`
    Activity,
}

impl CommandName {
    /// Every command, in `COMMAND_NAMES` order.
    pub const ALL: [CommandName; 12] = [
        CommandName::Clusters,
        CommandName::Connect,
        CommandName::Disconnect,
        CommandName::DisconnectAll,
        CommandName::SetFavourite,
        CommandName::UseContext,
        CommandName::KubectlCommand,
        CommandName::RefreshDiscovery,
        CommandName::Settings,
        CommandName::SaveSettings,
        CommandName::Sources,
        CommandName::Activity,
    ];

    /// The name the UI invokes.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Clusters => "clusters",
            CommandName::Connect => "connect",
            CommandName::Disconnect => "disconnect",
            CommandName::DisconnectAll => "disconnect_all",
            CommandName::SetFavourite => "set_favourite",
            CommandName::UseContext => "use_context",
            CommandName::KubectlCommand => "kubectl_command",
            CommandName::RefreshDiscovery => "refresh_discovery",
            CommandName::Settings => "settings",
            CommandName::SaveSettings => "save_settings",
            CommandName::Sources => "sources",
            CommandName::Activity => "activity",
        }
    }
}

type Shared<'a> = State<'a, Arc<Shell>>;

/// Every cluster with its tunnel.
#[tauri::command(rename_all = "snake_case")]
pub fn clusters(shell: Shared<'_>) -> Result<Vec<ClusterRow>, IpcError> {
    shell.clusters()
}

/// Opens a cluster's tunnel.
#[tauri::command(rename_all = "snake_case")]
pub async fn connect(shell: Shared<'_>, id: String) -> Result<TunnelStatus, IpcError> {
    shell.connect(&id).await
}

/// Closes a cluster's tunnel.
#[tauri::command(rename_all = "snake_case")]
pub async fn disconnect(shell: Shared<'_>, id: String) -> Result<(), IpcError> {
    shell.disconnect(&id).await
}

/// Closes every tunnel.
#[tauri::command(rename_all = "snake_case")]
pub async fn disconnect_all(shell: Shared<'_>) -> Result<(), IpcError> {
    shell.disconnect_all().await;
    Ok(())
}

/// Pins or unpins a cluster.
#[tauri::command(rename_all = "snake_case")]
pub async fn set_favourite(shell: Shared<'_>, id: String, favourite: bool) -> Result<(), IpcError> {
    shell.set_favourite(&id, favourite).await
}

/// Switches kubectl's current context to the cluster's.
#[tauri::command(rename_all = "snake_case")]
pub async fn use_context(shell: Shared<'_>, id: String) -> Result<String, IpcError> {
    shell.use_context(&id).await
}

/// The kubectl command that reaches the cluster, quoted for a POSIX shell.
#[tauri::command(rename_all = "snake_case")]
pub fn kubectl_command(shell: Shared<'_>, id: String) -> Result<String, IpcError> {
    shell.kubectl_command(&id)
}

/// Runs discovery now.
#[tauri::command(rename_all = "snake_case")]
pub async fn refresh_discovery(shell: Shared<'_>) -> Result<Vec<SourceOutcome>, IpcError> {
    shell.refresh_discovery().await
}

/// The settings.
#[tauri::command(rename_all = "snake_case")]
pub fn settings(shell: Shared<'_>) -> Result<Settings, IpcError> {
    shell.settings()
}

/// Saves the settings.
#[tauri::command(rename_all = "snake_case")]
pub async fn save_settings(shell: Shared<'_>, settings: Settings) -> Result<Settings, IpcError> {
    shell.save_settings(settings).await
}

/// The discovery sources.
#[tauri::command(rename_all = "snake_case")]
pub fn sources(shell: Shared<'_>) -> Result<Vec<SourceInfo>, IpcError> {
    Ok(shell.sources())
}

/// The activity log, newest last.
#[tauri::command(rename_all = "snake_case")]
pub fn activity(shell: Shared<'_>) -> Result<Vec<Activity>, IpcError> {
    Ok(shell.activity())
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
        activity,
    ])
}
