//! Status files through which `k8s-tunnels status` sees the tunnels of running `connect`
//! processes: each process rewrites `<state>/run/<pid>.json` every second and removes it on
//! exit; a file not rewritten for a while belongs to a process that died.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_tunnels::dirs::{AppDirs, write_private};
use k8s_tunnels::engine::TunnelStatus;
use serde::{Deserialize, Serialize};

/// A status file older than this is a dead process's.
const STALE_AFTER: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct RunStatus {
    pid: u32,
    updated_unix: u64,
    tunnels: Vec<TunnelStatus>,
}

/// This process's status file; removed on drop.
pub struct RunFile {
    path: PathBuf,
}

fn run_dir(dirs: &AppDirs) -> PathBuf {
    dirs.state.join("run")
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RunFile {
    pub fn create(dirs: &AppDirs) -> std::io::Result<Self> {
        let dir = run_dir(dirs);
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            path: dir.join(format!("{}.json", std::process::id())),
        })
    }

    pub fn write(&self, tunnels: &[TunnelStatus]) -> anyhow::Result<()> {
        let status = RunStatus {
            pid: std::process::id(),
            updated_unix: now_unix(),
            tunnels: tunnels.to_vec(),
        };
        write_private(&self.path, &serde_json::to_vec_pretty(&status)?)?;
        Ok(())
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Tunnels of every live `connect` process, sorted by name.
pub fn live_tunnels(dirs: &AppDirs) -> Vec<TunnelStatus> {
    let Ok(entries) = std::fs::read_dir(run_dir(dirs)) else {
        return Vec::new();
    };
    let now = now_unix();
    let mut tunnels: Vec<TunnelStatus> = entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<RunStatus>(&bytes).ok())
        .filter(|s| now.saturating_sub(s.updated_unix) <= STALE_AFTER.as_secs())
        .flat_map(|s| s.tunnels)
        .collect();
    tunnels.sort_by(|a, b| a.name.cmp(&b.name));
    tunnels
}
