//! Desktop app benchmark (run by `scripts/bench-desktop`, on a release build):
//!
//! The app is the tray process (`k8s-tunnels-desktop --hidden`, as autostart starts it): it
//! owns the tunnels and needs no display; the window is another process, started on demand.
//!
//! 1. start to tray: from spawning the tray process to its StatusNotifierItem registering with
//!    the watcher on a private session bus (what a desktop shell shows), and to its menu being
//!    built; median of `BENCH_RUNS` (5) fresh starts, each on its own bus.
//! 2. idle: the tray process with `BENCH_TUNNELS` (20) tunnels up, switched on from the tray
//!    menu, no window: resident memory (VmRSS, Pss) of the process and of every process below
//!    it, and CPU (utime + stime) over `BENCH_IDLE_SECS` (60) s.
//!
//! The clusters are a lab (gateway + fake API servers) run by this harness, outside the app, so
//! that the figures are the app's alone. Usage: `bench_idle <k8s-tunnels-desktop>...`: with
//! several binaries (a build before a change and after it), each is measured in turn against
//! the same lab in the same run.

#[path = "../tests/support/desktop.rs"]
mod desktop;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use desktop::{
    Bus, Reaped, Tray, descendants, describe, exe_name, mapped_libraries, proc_kib, serve_watcher,
    wait_until,
};
use k8s_tunnels::inventory::{Cloud, OriginMode};
use k8s_tunnels::lab::{Lab, LabClusterSpec, LabConfig};

const WAIT: Duration = Duration::from_secs(120);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` clusters across the three clouds and environments, every origin mode but bastion.
fn specs(n: usize) -> Vec<LabClusterSpec> {
    let clouds = [Cloud::Aws, Cloud::Gcp, Cloud::Onprem];
    let envs = ["prod", "staging", "dev"];
    (0..n)
        .map(|i| {
            let origin = if i % 2 == 0 {
                OriginMode::Socks
            } else {
                OriginMode::Tcp
            };
            LabClusterSpec::new(
                &format!("bench-{i:02}"),
                clouds[i % 3],
                envs[(i / 3) % 3],
                origin,
            )
        })
        .collect()
}

/// Starts the tray process (`--hidden`: no window) on `bus` with its files in `home` and the
/// lab's inventory. It gets no display: it must not need one.
fn start_app(binary: &Path, bus: &Bus, home: &Path, inventory: &Path) -> Reaped {
    Reaped(
        Command::new(binary)
            .arg("--hidden")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("K8S_TUNNELS_HOME", home)
            .env("K8S_TUNNELS_INVENTORY", inventory)
            .env("KUBECONFIG", home.join("kubeconfig"))
            .env("K8S_TUNNELS_KEYCHAIN", "off")
            .env_remove("K8S_TUNNELS_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the app"),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = after.split(' ').collect();
    f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The app and every process below it (WebKit's web and network processes), with names.
fn tree(pid: u32) -> Vec<(u32, String)> {
    std::iter::once(pid)
        .chain(descendants(pid))
        .map(|p| (p, exe_name(p).unwrap_or_else(|| "?".into())))
        .collect()
}

fn memory_report(pid: u32, label: &str) -> (u64, u64) {
    let mut rss_total = 0;
    let mut pss_total = 0;
    println!("  memory, {label}:");
    for (p, name) in tree(pid) {
        let rss = proc_kib(p, "status", "VmRSS").unwrap_or(0);
        let pss = proc_kib(p, "smaps_rollup", "Pss").unwrap_or(0);
        println!(
            "    {name:<28} pid {p:<7} VmRSS {:>7.1} MB  Pss {:>7.1} MB",
            rss as f64 / 1024.0,
            pss as f64 / 1024.0
        );
        rss_total += rss;
        pss_total += pss;
    }
    println!(
        "    total                                  VmRSS {:>7.1} MB  Pss {:>7.1} MB",
        rss_total as f64 / 1024.0,
        pss_total as f64 / 1024.0
    );
    (rss_total, pss_total)
}

/// The largest mappings of `pid` by Rss (what the memory is), from /proc/<pid>/smaps.
fn smaps_top(pid: u32, n: usize) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut by_name: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut current = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            current = line
                .split_whitespace()
                .nth(5)
                .unwrap_or("[anonymous]")
                .to_string();
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            by_name.entry(current.clone()).or_default().0 += kib;
        } else if let Some(v) = line.strip_prefix("Private_Dirty:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            by_name.entry(current.clone()).or_default().1 += kib;
        }
    }
    let mut rows: Vec<_> = by_name.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
    println!("  largest mappings of the app by Rss (Rss / Private_Dirty):");
    for (name, (rss, dirty)) in rows.into_iter().take(n) {
        println!(
            "    {:>7.1} MB {:>7.1} MB  {name}",
            rss as f64 / 1024.0,
            dirty as f64 / 1024.0
        );
    }
}

async fn start_to_tray(binary: &Path, inventory: &Path, runs: u64) {
    let mut registered = Vec::new();
    let mut built = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir().expect("tmp");
        let bus = Bus::start();
        let (conn, watcher) = serve_watcher(&bus.address).await;
        let start = Instant::now();
        let app = start_app(binary, &bus, dir.path(), inventory);
        // Polled every millisecond: Tray::wait polls every 100 ms, too coarse for this figure.
        while watcher.first_item().is_none() {
            assert!(start.elapsed() < WAIT, "the tray never registered");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let shown = start.elapsed();
        let tray = Tray::wait(&conn, &watcher, WAIT).await;
        tray.built_layout(WAIT).await;
        let menu = start.elapsed();
        println!(
            "  run {}: tray registered after {} ms, menu built after {} ms",
            run + 1,
            shown.as_millis(),
            menu.as_millis()
        );
        registered.push(shown);
        built.push(menu);
        drop(app);
    }
    println!(
        "start to tray: median {} ms (menu built: median {} ms) over {runs} runs",
        median(registered).as_millis(),
        median(built).as_millis()
    );
}

async fn idle(binary: &Path, inventory: &Path, tunnels: usize, secs: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path();
    // Every cluster a favourite, so that each is one click at the top of the tray menu.
    let favourites: Vec<String> = specs(tunnels)
        .iter()
        .map(|s| format!("file:{}", s.name))
        .collect();
    std::fs::create_dir_all(home.join("state")).expect("state dir");
    std::fs::write(
        home.join("state/state.json"),
        serde_json::json!({"version": 1, "favourites": favourites}).to_string(),
    )
    .expect("state.json");

    let bus = Bus::start();
    let (conn, watcher) = serve_watcher(&bus.address).await;
    let app = start_app(binary, &bus, home, inventory);
    let pid = app.pid();
    let tray = Tray::wait(&conn, &watcher, WAIT).await;
    let layout = tray.built_layout(WAIT).await;
    let favourites: Vec<i32> = layout
        .children
        .iter()
        .take_while(|n| n.checkmark)
        .map(|n| n.id)
        .collect();
    assert_eq!(
        favourites.len(),
        tunnels,
        "{:?}",
        describe(&layout.children)
    );
    for id in favourites {
        tray.click(id).await;
    }
    let status = format!("{tunnels} tunnels up");
    wait_until(&status, WAIT, || async {
        let layout = tray.layout().await;
        let top = describe(&layout.children);
        let all = layout
            .children
            .iter()
            .take_while(|n| n.checkmark)
            .all(|n| n.checked);
        (all && top.contains(&status)).then_some(())
    })
    .await;
    println!("idle: {status} (all {tunnels} favourites checked in the tray)");

    // Let the connects' work (handshakes, kubeconfig writes) end and the allocator settle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let window_libraries = mapped_libraries(
        pid,
        &["libgtk", "libwebkit2gtk", "libjavascriptcoregtk", "libLLVM"],
    );
    println!(
        "  GTK/WebKit/LLVM libraries mapped: {}",
        if window_libraries.is_empty() {
            "none".to_string()
        } else {
            window_libraries.join(", ")
        }
    );

    let hz = clock_ticks_per_second();
    let procs: Vec<u32> = tree(pid).into_iter().map(|(p, _)| p).collect();
    let before: u64 = procs.iter().map(|&p| cpu_ticks(p)).sum();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after: u64 = procs.iter().map(|&p| cpu_ticks(p)).sum();
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_s = (after - before) as f64 / hz as f64;
    let (rss, pss) = memory_report(pid, "idle, no window");
    if std::env::var_os("BENCH_SMAPS").is_some() {
        smaps_top(pid, 15);
    }
    let layout = tray.layout().await;
    assert!(
        describe(&layout.children).contains(&status),
        "tunnels went down while idle"
    );
    println!(
        "idle with {tunnels} tunnels up, no window: VmRSS {:.1} MB, Pss {:.1} MB; \
         CPU {:.2} s over {:.0} s = {:.2} % of one core ({} ticks at {hz} Hz)",
        rss as f64 / 1024.0,
        pss as f64 / 1024.0,
        cpu_s,
        elapsed,
        100.0 * cpu_s / elapsed,
        after - before
    );
    tray.quit().await;
    drop(app);
}

fn main() {
    let binaries: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    assert!(
        !binaries.is_empty(),
        "usage: bench_idle <path of k8s-tunnels-desktop>..."
    );
    for binary in &binaries {
        assert!(binary.is_file(), "no app binary at {}", binary.display());
    }
    let runs = env_num("BENCH_RUNS", 5);
    let tunnels = env_num("BENCH_TUNNELS", 20) as usize;
    let secs = env_num("BENCH_IDLE_SECS", 60);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let lab = rt
        .block_on(Lab::start(LabConfig::new(
            &dir.path().join("lab"),
            specs(tunnels),
        )))
        .expect("start the lab");
    let inventory = lab.inventory_path().to_path_buf();
    println!(
        "lab: {tunnels} clusters behind a gateway at {}",
        lab.gateway_addr()
    );
    rt.block_on(async {
        for binary in &binaries {
            println!("== {}", binary.display());
            start_to_tray(binary, &inventory, runs).await;
            idle(binary, &inventory, tunnels, secs).await;
        }
    });
    drop(lab);
}
