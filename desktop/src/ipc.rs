//! The names and the one error type of the commands the web UI invokes, mirrored in
//! `ui/src/ipc.ts` (`Commands`, `COMMAND_NAMES`, `IpcError`). The window relays each command to
//! the tray process over [`crate::control`]; every error crosses both hops as `{code, message}`.

use serde::{Deserialize, Serialize};

/// What kind of error (`ErrorCode` in ipc.ts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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
    /// `about`
    About,
    /// `activity`
    Activity,
}

impl CommandName {
    /// Every command, in `COMMAND_NAMES` order.
    pub const ALL: [CommandName; 13] = [
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
        CommandName::About,
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
            CommandName::About => "about",
            CommandName::Activity => "activity",
        }
    }
}
