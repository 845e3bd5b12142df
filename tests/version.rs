//! One version for the whole project. The root crate and the tray app take theirs from the
//! workspace (`[workspace.package] version`); the window crate (a workspace of its own, so it
//! cannot inherit it), the web UI and the changelog must say the same, or a package would carry
//! two versions. This test is what keeps them in step.

use std::path::Path;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_window_crate_the_ui_and_the_changelog_carry_the_workspace_version() {
    let window: toml::Table = read("src-tauri/Cargo.toml")
        .parse()
        .expect("src-tauri/Cargo.toml");
    assert_eq!(
        window["package"]["version"].as_str(),
        Some(VERSION),
        "src-tauri/Cargo.toml's version is not the workspace's"
    );
    let ui: serde_json::Value =
        serde_json::from_str(&read("ui/package.json")).expect("package.json");
    assert_eq!(
        ui["version"], VERSION,
        "ui/package.json's version is not the workspace's"
    );
    // The bundler takes the version from the window crate when tauri.conf.json names none: a
    // version there would be a fourth copy.
    let conf: serde_json::Value =
        serde_json::from_str(&read("src-tauri/tauri.conf.json")).expect("tauri.conf.json");
    assert_eq!(
        conf.get("version"),
        None,
        "tauri.conf.json must not set a version of its own"
    );
    let changelog = read("CHANGELOG.md");
    assert!(
        changelog
            .lines()
            .any(|l| l.starts_with(&format!("## [{VERSION}]"))),
        "CHANGELOG.md has no section for {VERSION}"
    );
}
