//! Stopping and continuing a peer process (a relay, a keyring daemon) the way a frozen network
//! or a hung daemon looks to the app. Linux: the signals go through kill(1), the stop is read
//! back from `/proc`.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// SIGSTOP to `pid`, returning once every thread of it has stopped. kill(2) only queues the
/// signal: one thread takes it and stops the others, and on a loaded machine a thread that is
/// already running can still answer (a ping, a D-Bus call) after kill(1) has returned.
pub fn stop(pid: u32) {
    send(pid, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_threads_stopped(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} did not stop within 10 s"
        );
        k8s_tunnels::sync::pause_blocking(Duration::from_millis(1));
    }
}

/// SIGCONT to `pid`: it carries on where it stopped (every thread is woken by the sending).
pub fn resume(pid: u32) {
    send(pid, "-CONT");
}

fn send(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill {which} {pid} failed");
}

/// Whether every thread of process `pid` is in the stopped state (`T` in
/// `/proc/<pid>/task/<tid>/stat`, the field after the command name's closing parenthesis).
fn all_threads_stopped(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks.into_iter().all(|task| {
        let stat = std::fs::read_to_string(task.expect("a thread").path().join("stat"))
            .unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        state.is_some_and(|rest| rest.starts_with('T'))
    })
}
