//! Tauri's build step: embeds tauri.conf.json, the icons and the capabilities, and declares the
//! app's own commands so that only those the capability grants are callable from the webview.

use std::path::Path;

/// Where the web UI's build lands (`frontendDist` in tauri.conf.json).
const UI_DIST: &str = "../ui/dist";

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
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(
        tauri_build::AppManifest::new().commands(&[
            "clusters",
            "connect",
            "disconnect",
            "disconnect_all",
            "set_favourite",
            "use_context",
            "kubectl_command",
            "refresh_discovery",
            "settings",
            "save_settings",
            "sources",
            "about",
            "activity",
        ]),
    ))
    .expect("tauri build step");
}
