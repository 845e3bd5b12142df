//! What the benchmarks that drive the release binaries from outside read of a process
//! (`/proc`), and the child handle they keep it by. Included by path (`#[path]`) from
//! `bench_scale` and `bench_gateway_load`, which need only this of `bench_support`.

use std::net::SocketAddr;
use std::process::{Child, Command};

use anyhow::Context as _;

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_secs(pid: u32, ticks_per_sec: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // The command name, in parentheses, may hold spaces: fields count from after it, where
    // the third is field 3 (state), so utime (14) and stime (15) are the 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .context("no ')' in /proc/<pid>/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/<pid>/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<_, _>>()?;
    Ok(ticks as f64 / ticks_per_sec)
}

/// The kernel's clock ticks per second, in which /proc reports CPU time.
pub fn ticks_per_sec() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// A loopback address nothing listens on (yet).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Megabytes of a figure /proc gives in KiB.
pub fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
