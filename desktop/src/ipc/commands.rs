// The window's commands, declared once. Everything else about them is generated from this list:
// the control socket's `Request` and its dispatch to the tray process's `Shell`
// (`control.rs`), the typed client the window relays through (`control.rs`), the window's Tauri
// commands and their registration (`src-tauri/src/commands.rs`), the capability that lets the
// webview call them and Tauri's command manifest (`src-tauri/build.rs`), and the UI's
// TypeScript (`ui/src/generated/ipc.ts`, through `ipc::typescript`).
//
// A command is `name: Variant { arguments } -> reply;`: `name` is what the UI invokes, `Variant`
// the control socket's request (in PascalCase; a test checks the two agree), the arguments its
// named fields (no braces: none), and the reply what the command returns when it succeeds (every
// command may fail with an `IpcError`). The doc comments become the generated code's docs and the
// TypeScript's JSDoc. The tray process answers each through `ipc::WindowCommands` (implemented by
// `Shell`).
//
// This file holds nothing but the macro: `src-tauri/build.rs` `include!`s it to read the names,
// with none of this crate's types in scope, so every type is named through `$crate`.

/// Calls `$callback! { … }` with every command the web UI can invoke, in the grammar described
/// in `desktop/src/ipc/commands.rs`: the one declaration of the window's commands, which the
/// control socket, the window's Tauri commands and capability, and the UI's TypeScript are
/// generated from.
#[macro_export]
macro_rules! window_commands {
    ($callback:ident) => {
        $callback! {
            /// Every cluster with its tunnel, favourites first, then by cloud, environment and
            /// name.
            clusters: Clusters -> Vec<$crate::ipc::ClusterRow>;
            /// Opens a cluster's tunnel (switching kubectl's context when the settings say so).
            connect: Connect {
                /// Cluster id.
                id: String,
            } -> $crate::ipc::TunnelStatus;
            /// Closes a cluster's tunnel; closing one that is not open is not an error.
            disconnect: Disconnect {
                /// Cluster id.
                id: String,
            } -> ();
            /// Closes every tunnel.
            disconnect_all: DisconnectAll -> ();
            /// Pins or unpins a cluster.
            set_favourite: SetFavourite {
                /// Cluster id.
                id: String,
                /// Pinned or not.
                favourite: bool,
            } -> ();
            /// Switches kubectl's current context to the cluster's; returns the context name.
            use_context: UseContext {
                /// Cluster id.
                id: String,
            } -> String;
            /// `kubectl --context '<context>' get namespaces`, quoted for a POSIX shell.
            kubectl_command: KubectlCommand {
                /// Cluster id.
                id: String,
            } -> String;
            /// Runs discovery now; progress and the outcome come as `discovery` events too.
            refresh_discovery: RefreshDiscovery -> Vec<$crate::ipc::SourceOutcome>;
            /// The settings.
            settings: Settings -> $crate::ipc::Settings;
            /// Validates and saves the settings; returns them as saved.
            save_settings: SaveSettings {
                /// The new settings.
                settings: $crate::ipc::Settings,
            } -> $crate::ipc::Settings;
            /// The discovery sources, for the settings page (read-only: edited in config.yaml).
            sources: Sources -> Vec<$crate::ipc::SourceInfo>;
            /// Where the app's files are and how it runs: what a first run explains.
            about: About -> $crate::ipc::AboutInfo;
            /// The most recent activity, newest last (at most 200 lines).
            activity: Activity -> Vec<$crate::ipc::Activity>;
        }
    };
}
