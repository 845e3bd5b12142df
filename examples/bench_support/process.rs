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

/// Memory and descriptors of one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    pub rss_kib: u64,
    /// The anonymous part of the RSS (heap, stacks): the rest is file pages, mostly the
    /// binary's own code, which the kernel may drop and read again at will.
    pub anon_kib: u64,
    pub fds: usize,
    pub threads: usize,
}

/// What /proc says of process `pid` now.
pub fn read_process(pid: u32) -> anyhow::Result<Reading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key}"))
    };
    let (rss_kib, anon_kib) = (kib("VmRSS:")?, kib("RssAnon:")?);
    // Threads, because each one's stack counts in RSS: tokio's blocking pool (name lookups)
    // grows under a burst and lets its threads go after 10 s idle.
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Threads")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Reading {
        rss_kib,
        anon_kib,
        fds,
        threads,
    })
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
