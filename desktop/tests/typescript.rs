//! The UI's TypeScript (`ui/src/generated/ipc.ts`, committed so that the UI builds without
//! Rust) is exactly what the Rust declarations generate: a command, an event or a field that
//! changes on the Rust side fails here until the file is regenerated, and then fails `tsc` in
//! `ui/` wherever the UI relies on the old shape.
//!
//! `UPDATE_TS=1 cargo nextest run -p k8s-tunnels-desktop --test typescript` rewrites the file.

use std::path::Path;

use k8s_tunnels_desktop::ipc::typescript::GENERATED_PATH;
use k8s_tunnels_desktop::typescript as generate;

#[test]
fn the_generated_typescript_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(GENERATED_PATH);
    let generated = generate();
    if std::env::var_os("UPDATE_TS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("create the folder");
        std::fs::write(&path, &generated).expect("write the generated TypeScript");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // Git may check the file out with CRLF line ends on Windows.
    let committed = committed.replace("\r\n", "\n");
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{GENERATED_PATH} differs from what the Rust side generates (first at line {}):\n\
             committed: {:?}\ngenerated: {:?}\n\
             Regenerate it with `UPDATE_TS=1 cargo nextest run -p k8s-tunnels-desktop --test \
             typescript` and commit it.",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            generated.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn every_command_and_event_is_in_the_typescript() {
    let generated = generate();
    for name in k8s_tunnels_desktop::ipc::CommandName::ALL {
        assert!(
            generated.contains(&format!("  {}: [", name.as_str())),
            "Commands lacks {}",
            name.as_str()
        );
    }
    for name in k8s_tunnels_desktop::events::EventName::ALL {
        assert!(
            generated.contains(&format!("  {}: ", name.as_str())),
            "Events lacks {}",
            name.as_str()
        );
    }
}
