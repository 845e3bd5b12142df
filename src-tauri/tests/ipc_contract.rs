//! What the window is built with grants the webview every declared command and nothing more.
//! The commands, the UI's TypeScript and the capability's grants are all generated from one
//! declaration (`desktop/src/ipc/commands.rs`); that the TypeScript matches is checked by
//! `desktop/tests/typescript.rs`, that every command is registered by `tests/commands.rs`.

use k8s_tunnels_desktop::ipc::CommandName;

/// The capability build.rs wrote for this build (the hand-written one plus the commands).
const CAPABILITY: &str = include_str!(env!("WINDOW_CAPABILITY"));

#[test]
fn the_window_capability_grants_exactly_the_commands() {
    let capability: serde_json::Value = serde_json::from_str(CAPABILITY).expect("capability json");
    let permissions: Vec<&str> = capability["permissions"]
        .as_array()
        .expect("permissions")
        .iter()
        .map(|p| p.as_str().expect("a permission by name"))
        .collect();
    let granted: Vec<String> = permissions
        .iter()
        .filter_map(|p| p.strip_prefix("allow-"))
        .map(|p| p.replace('-', "_"))
        .collect();
    let rust: Vec<String> = CommandName::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(granted, rust);
    // Besides the commands, only listening to the app's events.
    let others: Vec<&str> = permissions
        .iter()
        .copied()
        .filter(|p| !p.starts_with("allow-"))
        .collect();
    assert_eq!(
        others,
        ["core:event:allow-listen", "core:event:allow-unlisten"]
    );
    assert_eq!(capability["windows"], serde_json::json!(["main"]));
    assert_eq!(capability["identifier"], "main-window");
}
