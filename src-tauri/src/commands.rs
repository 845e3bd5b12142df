//! The commands the web UI invokes: one-line adapters, generated from the one declaration
//! (`desktop/src/ipc/commands.rs`), that relay each to the tray process, which owns the engine
//! ([`k8s_tunnels_desktop::control`]). Each returns its command's typed reply
//! ([`WindowCommands`] for the [`Client`]); every error crosses as `{code, message}`.

use tauri::State;

use k8s_tunnels_desktop::control::Client;
use k8s_tunnels_desktop::ipc::{IpcError, WindowCommands};

type Tray<'a> = State<'a, Client>;

/// Expands the declaration into a Tauri command per command, and [`register`], which hands
/// them all to Tauri (`generate_handler!` wants the functions by name).
macro_rules! tauri_commands {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $variant:ident $({ $(
            $(#[doc = $arg_doc:literal])*
            $arg:ident : $arg_ty:ty
        ),* $(,)? })? -> $reply:ty;
    )*) => {
        $(
            $(#[doc = $doc])*
            #[tauri::command(rename_all = "snake_case")]
            pub async fn $name(tray: Tray<'_> $($(, $arg: $arg_ty)*)?) -> Result<$reply, IpcError> {
                WindowCommands::$name(&*tray $($(, $arg)*)?).await
            }
        )*

        /// Registers every command above with a Tauri builder.
        pub fn register<R: tauri::Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
            builder.invoke_handler(tauri::generate_handler![$($name),*])
        }
    };
}

k8s_tunnels_desktop::window_commands!(tauri_commands);
