//! The contract between the web UI and the app: the window's commands, declared once in
//! [`window_commands!`](crate::window_commands) (`ipc/commands.rs`), the events
//! ([`crate::events::UiEvent`]) and the one error type. The window relays each command to the
//! tray process over [`crate::control`], where [`WindowCommands`] (implemented by
//! [`crate::shell::Shell`]) answers it; every error crosses both hops as `{code, message}`.
//! The UI's TypeScript (`ui/src/generated/ipc.ts`) is generated from these types
//! ([`typescript`]).

mod commands;
pub mod typescript;

use std::future::Future;

use serde::{Deserialize, Serialize};

// The types the commands and events carry, under one path for the declaration (which names
// them through `$crate::ipc`, wherever it is expanded).
pub use crate::events::{Activity, SourceOutcome};
pub use crate::shell::{AboutInfo, ClusterRow};
pub use k8s_tunnels::app::SourceInfo;
pub use k8s_tunnels::engine::TunnelStatus;
pub use k8s_tunnels::state::Settings;

/// What kind of error (`ErrorCode` in the UI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, ts_rs::TS)]
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

/// Expands the declaration into the command names and the [`WindowCommands`] trait.
macro_rules! declare_commands {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $variant:ident $({ $(
            $(#[doc = $arg_doc:literal])*
            $arg:ident : $arg_ty:ty
        ),* $(,)? })? -> $reply:ty;
    )*) => {
        /// The window's commands by name, as the UI invokes them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum CommandName {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl CommandName {
            /// Every command, in the order of the declaration.
            pub const ALL: &'static [CommandName] = &[$(CommandName::$variant),*];

            /// The name the UI invokes.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( CommandName::$variant => stringify!($name), )*
                }
            }
        }

        /// The window's commands, each with its typed reply: the tray process answers them
        /// (implemented by [`crate::shell::Shell`]) and the window asks them (implemented by
        /// [`crate::control::Client`], over the control socket).
        pub trait WindowCommands {
            $(
                $(#[doc = $doc])*
                fn $name(&self $($(, $arg: $arg_ty)*)?)
                    -> impl Future<Output = Result<$reply, IpcError>> + Send;
            )*
        }

        /// Describes every command to the TypeScript generator, in the order of the declaration.
        fn describe_commands(ts: &mut typescript::Generator) {
            $(
                let arguments = vec![$($(
                    ts.field::<$arg_ty>(stringify!($arg), &[$($arg_doc),*]),
                )*)?];
                let reply = ts.type_name::<$reply>();
                ts.command(stringify!($name), &[$($doc),*], arguments, reply);
            )*
        }
    };
}

crate::window_commands!(declare_commands);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for name in CommandName::ALL {
            let name = name.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not snake_case"
            );
        }
    }
}
