//! The tunnel benchmark: bulk throughput each way and new-connection latency over loopback,
//! through the real tunnel (local SOCKS5 listener → WebSocket carrier → gateway → origin) over
//! plain ws and over wss, with a direct loopback TCP relay measured in the same run as the
//! baseline. Prints a markdown table; `--write BENCHMARKS.md` also replaces the generated
//! section of that file.
//!
//! ```text
//! cargo run --release --example bench_tunnel -- [--bytes 1GiB] [--connections 1000] [--runs 3]
//! ```
//!
//! Every measurement runs `--runs` times, interleaved across the rows so that noise on a shared
//! machine spreads evenly, and the median is reported.

mod bench_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;

use bench_support::client;
use bench_support::report::{self, Context, LatencyRun, RowFigures};
use bench_support::world::{RowKind, World};

/// Markers delimiting the generated section of the file given to `--write`.
const BEGIN: &str = "<!-- bench_tunnel:begin -->";
const END: &str = "<!-- bench_tunnel:end -->";

#[derive(Parser, Debug)]
#[command(about = "Benchmark the tunnel against a direct loopback relay")]
struct Args {
    /// Bytes moved each way per run (suffixes KiB, MiB, GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    bytes: u64,
    /// Sequential new connections per run.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rows to measure (the relay baseline is always included).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "relay,ws,wss,ws-socks,wss-socks,websocat"
    )]
    rows: Vec<RowKind>,
    /// Also write the report into this markdown file, between the bench_tunnel markers.
    #[arg(long)]
    write: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 1GiB or 512MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(args.connections > 0, "--connections must be at least 1");
    args.rows.retain(|k| *k != RowKind::Relay);
    args.rows.sort();
    args.rows.dedup();
    args.rows.insert(0, RowKind::Relay);

    let dir = tempfile::tempdir().context("making a temporary directory")?;
    let world = World::start(dir.path(), &args.rows).await?;
    let mut figures: Vec<(RowKind, RowFigures)> = args
        .rows
        .iter()
        .map(|k| (*k, RowFigures::default()))
        .collect();
    let mib = args.bytes as f64 / (1u64 << 20) as f64;

    // Warm-up: one short transfer and a few connections per row, so first-use costs (page
    // faults of fresh buffers, TLS session setup paths) are not in run 1.
    for route in &world.routes {
        client::download(route, 16 << 20).await?;
        client::upload(route, 16 << 20).await?;
        for _ in 0..20 {
            client::new_connection(route).await?;
        }
    }

    for run in 1..=args.runs {
        for (route, (_, f)) in world.routes.iter().zip(figures.iter_mut()) {
            let t = client::download(route, args.bytes)
                .await
                .with_context(|| format!("download over {}", route.kind.label()))?;
            f.download.push(mib / t.as_secs_f64());
            eprintln!(
                "run {run}: {:<18} download {:>7.0} MiB/s",
                route.kind.label(),
                mib / t.as_secs_f64()
            );
        }
        for (route, (_, f)) in world.routes.iter().zip(figures.iter_mut()) {
            let t = client::upload(route, args.bytes)
                .await
                .with_context(|| format!("upload over {}", route.kind.label()))?;
            f.upload.push(mib / t.as_secs_f64());
            eprintln!(
                "run {run}: {:<18} upload   {:>7.0} MiB/s",
                route.kind.label(),
                mib / t.as_secs_f64()
            );
        }
        for (route, (_, f)) in world.routes.iter().zip(figures.iter_mut()) {
            let mut samples = Vec::with_capacity(args.connections);
            for _ in 0..args.connections {
                samples.push(
                    client::new_connection(route)
                        .await
                        .with_context(|| format!("new connection over {}", route.kind.label()))?,
                );
            }
            let lat = LatencyRun::from_samples(samples);
            eprintln!(
                "run {run}: {:<18} new conn p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
                route.kind.label(),
                ms(lat.p50),
                ms(lat.p99),
                ms(lat.max)
            );
            f.latency.push(lat);
        }
    }

    // The tunnels' own counters prove the bytes went through them, not around them.
    let runs = args.runs as u64;
    for (kind, handle) in &world.tunnels {
        let stats = handle.stats();
        let down = stats.bytes_down.load(Ordering::Relaxed);
        let up = stats.bytes_up.load(Ordering::Relaxed);
        let total = stats.total.load(Ordering::Relaxed);
        ensure!(
            down >= runs * args.bytes && up >= runs * args.bytes,
            "{}: the tunnel counted {down} bytes down and {up} up, expected at least {} each",
            kind.label(),
            runs * args.bytes
        );
        ensure!(
            total >= runs * (args.connections as u64 + 2),
            "{}: the tunnel carried only {total} connections",
            kind.label()
        );
    }

    let ctx = Context {
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        cpu: cpu_model(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        command: command_line(),
        bytes: args.bytes,
        connections: args.connections,
        runs: args.runs,
    };
    let table = report::markdown(&ctx, &figures);
    print!("{table}");
    if let Some(path) = &args.write {
        write_section(path, &table)?;
        eprintln!("wrote the figures into {}", path.display());
    }
    drop(world);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = String::from(if cfg!(debug_assertions) {
        "cargo run --example bench_tunnel"
    } else {
        "cargo run --release --example bench_tunnel"
    });
    if !args.is_empty() {
        cmd.push_str(" -- ");
        cmd.push_str(&args.join(" "));
    }
    cmd
}

/// Replaces the text between the markers in `path`, writing a temporary file next to it and
/// renaming it over, so the document is never half-written.
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!(
            "{} has no `{BEGIN}` … `{END}` section to replace",
            path.display()
        );
    };
    ensure!(
        begin < end,
        "{}: `{END}` comes before `{BEGIN}`",
        path.display()
    );
    let new = format!("{}{BEGIN}\n{section}{}", &text[..begin], &text[end..]);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, new.as_bytes()).context("writing the report")?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}
