//! Tauri's build step: embeds tauri.conf.json, the icons and the capabilities, and declares the
//! app's own commands so that only those the capability grants are callable from the webview.
//!
//! The commands come from their one declaration (`desktop/src/ipc/commands.rs`, read here with
//! `include!`): Tauri's command manifest lists them, and the window's capability
//! (`capabilities/main-window.json`, which holds the grants that are not commands) is written to
//! `OUT_DIR` with an `allow-<command>` for each, so that a new command is granted where it is
//! declared.

use std::path::{Path, PathBuf};

// Defines `window_commands!`. Its types are never resolved here: `command_names!` keeps the
// names only.
include!("../desktop/src/ipc/commands.rs");

/// The names of the declared commands, as the UI invokes them.
macro_rules! command_names {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $variant:ident $({ $(
            $(#[doc = $arg_doc:literal])*
            $arg:ident : $arg_ty:ty
        ),* $(,)? })? -> $reply:ty;
    )*) => {
        &[$(stringify!($name)),*]
    };
}

/// Every command of the window.
const COMMANDS: &[&str] = window_commands!(command_names);

/// Where the web UI's build lands (`frontendDist` in tauri.conf.json).
const UI_DIST: &str = "../ui/dist";
/// The window's capability as written by hand: what it is granted besides the commands.
const CAPABILITY: &str = "capabilities/main-window.json";

fn main() {
    // The webview's files are embedded at compile time and must exist. A checkout where the UI
    // has not been built yet (`npm run build` in ui/) still builds, with a page that says so.
    let index = Path::new(UI_DIST).join("index.html");
    if !index.exists() {
        std::fs::create_dir_all(UI_DIST).expect("create ui/dist");
        std::fs::write(
            &index,
            "<!doctype html><meta charset=\"utf-8\"><title>k8s-tunnels</title>\n\
             <p>The window's UI is not built yet: run <code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>, then rebuild the app.</p>\n",
        )
        .expect("write the placeholder ui/dist/index.html");
    }
    let capabilities = write_capability();
    // The tests read the capability the window is built with.
    println!(
        "cargo:rustc-env=WINDOW_CAPABILITY={}",
        capabilities.join("main-window.json").display()
    );
    // Tauri keeps the pattern for the whole build; one small string per build script run.
    let pattern: &'static str =
        Box::leak(format!("{}/*.json", capabilities.display()).into_boxed_str());
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .capabilities_path_pattern(pattern)
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri build step");
}

/// Writes the window's capability, granted every command, into `$OUT_DIR/capabilities`;
/// returns that folder.
fn write_capability() -> PathBuf {
    println!("cargo:rerun-if-changed={CAPABILITY}");
    let text = std::fs::read_to_string(CAPABILITY).expect("read capabilities/main-window.json");
    let mut capability: serde_json::Value =
        serde_json::from_str(&text).expect("capabilities/main-window.json is JSON");
    // The schema's path is relative to the hand-written file, not to the copy.
    if let Some(fields) = capability.as_object_mut() {
        fields.remove("$schema");
    }
    let permissions = capability["permissions"]
        .as_array_mut()
        .expect("capabilities/main-window.json has a permissions list");
    // Tauri names a command's permission after the command, in kebab-case.
    permissions.extend(
        COMMANDS
            .iter()
            .map(|name| format!("allow-{}", name.replace('_', "-")).into()),
    );
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("capabilities");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/capabilities");
    let json = serde_json::to_string_pretty(&capability).expect("encode the capability");
    std::fs::write(dir.join("main-window.json"), json).expect("write the capability");
    dir
}
