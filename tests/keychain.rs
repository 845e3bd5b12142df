//! The keychain against a real Secret Service: gnome-keyring on a private D-Bus session, with
//! its keyring files in a temp folder, so the user's keychain is never touched.
//!
//! The keychain library binds to the session bus once per process, so each step runs in a
//! child process (this test binary again, filtered to `child_step`) inside `dbus-run-session`.
//! Needs `dbus-run-session` and `gnome-keyring-daemon` (Debian `dbus`, `gnome-keyring`); fails
//! loudly without them.
#![allow(clippy::unwrap_used)]

#[path = "support/signals.rs"]
mod signals;

use std::path::Path;
use std::process::Command;

use k8s_tunnels::keychain::{Keychain, KeychainStatus};
use k8s_tunnels::secret::Secret;

const STEP_ENV: &str = "K8S_TUNNELS_KEYCHAIN_TEST_STEP";
const SERVICE: &str = "k8s-tunnels-test";

fn run_steps(home: &Path, script_steps: &str) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    // The daemon creates and unlocks a `login` keyring (password on stdin), which becomes the
    // default collection; then the steps run against it, one process each.
    let script = format!(
        "printf test-password | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 90\n{script_steps}"
    );
    Command::new("dbus-run-session")
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .arg(exe)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("K8S_TUNNELS_HOME", home.join("app"))
        .env_remove("K8S_TUNNELS_KEYCHAIN")
        .output()
        .expect("dbus-run-session must be installed (Debian package dbus)")
}

fn step(name: &str) -> String {
    format!("{STEP_ENV}={name} \"$0\" --exact child_step --include-ignored --nocapture || exit 1\n")
}

#[test]
fn secrets_survive_across_processes_in_a_real_secret_service() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("run")).unwrap();
    let out = run_steps(
        home.path(),
        &format!("{}{}{}", step("write"), step("read"), step("delete")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "steps failed ({:?}); is gnome-keyring installed?\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for name in ["write", "read", "delete"] {
        assert!(stdout.contains(&format!("step {name} done")), "{stdout}");
    }
}

/// A Secret Service that stops answering (SIGSTOP) after the app started: one call waits its
/// deadline, the next ones fail at once, no thread is started per call, and when the daemon
/// answers again the keychain works again.
#[test]
fn a_hung_secret_service_costs_one_deadline_and_no_threads() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("run")).unwrap();
    let out = run_steps(home.path(), &step("hang"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "steps failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("step hang done"), "{stdout}");
}

/// The gnome-keyring daemon serving this process's session bus.
fn keyring_daemon_of_this_session() -> u32 {
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").expect("a session bus");
    let wanted = format!("DBUS_SESSION_BUS_ADDRESS={bus}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            comm.starts_with("gnome-keyring")
                && environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
        })
        .expect("the session's gnome-keyring-daemon")
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn no_session_bus_is_unavailable_quickly() {
    let exe = std::env::current_exe().unwrap();
    let home = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let out = Command::new(exe)
        .args(["--exact", "child_step", "--include-ignored", "--nocapture"])
        .env(STEP_ENV, "nobus")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", home.path().join("no-bus").display()),
        )
        .env("K8S_TUNNELS_HOME", home.path().join("app"))
        .env_remove("K8S_TUNNELS_KEYCHAIN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("step nobus done"), "{stdout}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn off_disables_without_probing() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "child_step", "--include-ignored", "--nocapture"])
        .env(STEP_ENV, "off")
        .env("K8S_TUNNELS_KEYCHAIN", "off")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("step off done"), "{stdout}");
}

/// One step, run only as a child of the tests above (it needs its own environment).
#[test]
#[ignore = "a child step of the keychain tests; runs inside their private D-Bus session"]
fn child_step() {
    let step = std::env::var(STEP_ENV).expect("run by the keychain tests");
    match step.as_str() {
        "write" => {
            let keychain = Keychain::open(SERVICE);
            assert_eq!(keychain.status(), &KeychainStatus::Durable);
            assert_eq!(keychain.get("missing").unwrap(), None);
            keychain
                .set("token", &Secret::new("value-written-by-step-1"))
                .unwrap();
        }
        "read" => {
            let keychain = Keychain::open(SERVICE);
            assert_eq!(keychain.status(), &KeychainStatus::Durable);
            assert_eq!(
                keychain.get("token").unwrap().unwrap().expose(),
                "value-written-by-step-1"
            );
        }
        "delete" => {
            let keychain = Keychain::open(SERVICE);
            keychain.delete("token").unwrap();
            keychain.delete("token").unwrap();
            assert_eq!(keychain.get("token").unwrap(), None);
        }
        "nobus" => {
            let keychain = Keychain::open(SERVICE);
            let KeychainStatus::Unavailable { reason } = keychain.status() else {
                panic!("a missing session bus must not count as durable");
            };
            assert!(!reason.is_empty());
        }
        "hang" => {
            use std::time::{Duration, Instant};
            let keychain = Keychain::open(SERVICE).with_call_timeout(Duration::from_secs(2));
            assert_eq!(keychain.status(), &KeychainStatus::Durable);
            keychain
                .set("token", &Secret::new("before-the-hang"))
                .unwrap();
            let daemon = keyring_daemon_of_this_session();
            signals::stop(daemon);
            let threads_before = threads();
            let start = Instant::now();
            let err = keychain.get("token").unwrap_err();
            let first = start.elapsed();
            assert!(err.to_string().contains("did not answer"), "{err}");
            assert!(first < Duration::from_secs(4), "first call took {first:?}");
            let start = Instant::now();
            for _ in 0..50 {
                assert!(keychain.get("token").is_err());
            }
            let rest = start.elapsed();
            assert!(rest < Duration::from_millis(500), "50 calls took {rest:?}");
            assert_eq!(threads(), threads_before, "no thread per call");
            signals::resume(daemon);
            let deadline = Instant::now() + Duration::from_secs(15);
            let value = loop {
                match keychain.get("token") {
                    Ok(Some(v)) => break v,
                    other => {
                        assert!(Instant::now() < deadline, "no recovery: {other:?}");
                        k8s_tunnels::sync::pause_blocking(Duration::from_millis(200));
                    }
                }
            };
            assert_eq!(value.expose(), "before-the-hang");
            keychain.delete("token").unwrap();
        }
        "off" => {
            let keychain = Keychain::open(SERVICE);
            assert_eq!(
                keychain.status(),
                &KeychainStatus::Unavailable {
                    reason: "disabled by K8S_TUNNELS_KEYCHAIN=off".into()
                }
            );
        }
        other => panic!("unknown step {other}"),
    }
    println!("step {step} done");
}
