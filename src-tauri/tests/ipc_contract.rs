//! The Rust side of the IPC matches `ui/src/ipc.ts` exactly: command and event names, and the
//! window's capability grants every command (and only commands that exist).

use k8s_tunnels_desktop::events::EventName;
use k8s_tunnels_desktop::ipc::CommandName;

const IPC_TS: &str = include_str!("../../ui/src/ipc.ts");
const CAPABILITY: &str = include_str!("../capabilities/main-window.json");

/// The string literals of `export const <name> ... = [ ... ]` in ipc.ts.
fn ts_array(name: &str) -> Vec<String> {
    let start = IPC_TS
        .find(&format!("export const {name}"))
        .unwrap_or_else(|| panic!("ipc.ts has no {name}"));
    let rest = &IPC_TS[start..];
    let open = rest.find("= [").expect("array start") + 3;
    let close = rest[open..].find(']').expect("array end") + open;
    rest[open..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

#[test]
fn command_names_match_ipc_ts() {
    let rust: Vec<&str> = CommandName::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(ts_array("COMMAND_NAMES"), rust);
    // Each also appears as a key of the `Commands` interface.
    for name in &rust {
        assert!(
            IPC_TS.contains(&format!("  {name}: [")),
            "Commands lacks {name}"
        );
    }
}

#[test]
fn event_names_match_ipc_ts() {
    let rust: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(ts_array("EVENT_NAMES"), rust);
}

#[test]
fn the_window_capability_grants_exactly_the_commands() {
    let capability: serde_json::Value = serde_json::from_str(CAPABILITY).expect("capability json");
    let granted: Vec<String> = capability["permissions"]
        .as_array()
        .expect("permissions")
        .iter()
        .filter_map(|p| p.as_str())
        .filter_map(|p| p.strip_prefix("allow-"))
        .map(|p| p.replace('-', "_"))
        .collect();
    let rust: Vec<String> = CommandName::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(granted, rust);
    assert_eq!(capability["windows"], serde_json::json!(["main"]));
}
