//! Tauri's build step: embeds tauri.conf.json, the icons and the capabilities, and declares the
//! app's own commands so that only those the capability grants are callable from the webview.

fn main() {
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
            "activity",
        ]),
    ))
    .expect("tauri build step");
}
