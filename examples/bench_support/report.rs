//! Statistics and the markdown report.

use std::time::Duration;

use super::world::RowKind;

/// Nearest-rank percentile of sorted samples (`q` in 0..=1).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of a few values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Latency of one run of sequential new connections.
#[derive(Clone, Copy, Debug)]
pub struct LatencyRun {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl LatencyRun {
    /// Summarises one run's samples.
    pub fn from_samples(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self {
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// The figures of one row: per-run values, summarised as medians.
#[derive(Clone, Debug, Default)]
pub struct RowFigures {
    /// Download MiB/s per run.
    pub download: Vec<f64>,
    /// Upload MiB/s per run.
    pub upload: Vec<f64>,
    /// Latency per run.
    pub latency: Vec<LatencyRun>,
}

impl RowFigures {
    fn download(&self) -> f64 {
        median(&self.download)
    }
    fn upload(&self) -> f64 {
        median(&self.upload)
    }
    fn lat(&self, f: impl Fn(&LatencyRun) -> Duration) -> f64 {
        let ms: Vec<f64> = self
            .latency
            .iter()
            .map(|l| f(l).as_secs_f64() * 1e3)
            .collect();
        median(&ms)
    }
    /// Median over runs of the per-run p50, in ms.
    pub fn p50_ms(&self) -> f64 {
        self.lat(|l| l.p50)
    }
}

/// How the figures were taken, printed above the table.
pub struct Context {
    /// RFC 3339 time of the run.
    pub date: String,
    /// CPU model.
    pub cpu: String,
    /// `nproc`.
    pub nproc: usize,
    /// Kernel release.
    pub kernel: String,
    /// `release` or `debug`.
    pub profile: &'static str,
    /// The command that produced it.
    pub command: String,
    /// Bytes each way per run.
    pub bytes: u64,
    /// New connections per run.
    pub connections: usize,
    /// Runs per measurement.
    pub runs: usize,
}

fn ratio(x: f64, base: f64) -> String {
    if base > 0.0 && x.is_finite() {
        format!("{:.2}×", x / base)
    } else {
        "–".into()
    }
}

/// The markdown report: context, table with ratios to the relay, and the targets.
pub fn markdown(ctx: &Context, rows: &[(RowKind, RowFigures)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "- command: `{}`\n- date: {}\n- machine: {} ({} CPUs per `nproc`), Linux {}\n\
         - build profile: {}\n- workload: {:.2} GiB each way per run; {} sequential new \
         connections per run; every figure is the median of {} runs\n\n",
        ctx.command,
        ctx.date,
        ctx.cpu,
        ctx.nproc,
        ctx.kernel,
        ctx.profile,
        ctx.bytes as f64 / (1u64 << 30) as f64,
        ctx.connections,
        ctx.runs,
    ));
    out.push_str(
        "| path | download MiB/s | vs relay | upload MiB/s | vs relay | new conn p50 ms | p99 ms | max ms | p50 vs relay |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let base = rows
        .iter()
        .find(|(k, _)| *k == RowKind::Relay)
        .map(|(_, f)| f);
    let (bd, bu, bl) = base.map_or((0.0, 0.0, 0.0), |b| (b.download(), b.upload(), b.p50_ms()));
    for (kind, f) in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {} |\n",
            kind.label(),
            f.download(),
            ratio(f.download(), bd),
            f.upload(),
            ratio(f.upload(), bu),
            f.p50_ms(),
            f.lat(|l| l.p99),
            f.lat(|l| l.max),
            ratio(f.p50_ms(), bl),
        ));
    }
    // Issue 2's targets: download at least half the relay's (shown for both transports, as
    // the issue does not restrict it to ws), and a new connection over ws within 2 ms.
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut targets = Vec::new();
    for (kind, f) in rows {
        if matches!(kind, RowKind::Ws | RowKind::Wss) {
            let r = f.download() / bd;
            targets.push(format!(
                "{} download ≥ 0.5× relay: {r:.2}× — {}",
                kind.label(),
                verdict(r >= 0.5)
            ));
        }
        if *kind == RowKind::Ws {
            targets.push(format!(
                "{} new connection p50 ≤ 2 ms: {:.3} ms — {}",
                kind.label(),
                f.p50_ms(),
                verdict(f.p50_ms() <= 2.0)
            ));
        }
    }
    // Issue 12's: plain-ws download at least websocat's, upload kept ahead, in the same run.
    let websocat = rows.iter().find(|(k, _)| *k == RowKind::Websocat);
    let ws = rows.iter().find(|(k, _)| *k == RowKind::Ws);
    if let (Some((_, w)), Some((_, t))) = (websocat, ws) {
        let (down, up) = (t.download() / w.download(), t.upload() / w.upload());
        targets.push(format!(
            "ws, tcp origin download ≥ 1.0× websocat (issue 12): {down:.2}× — {}; upload {up:.2}× websocat",
            verdict(down >= 1.0)
        ));
    }
    if !targets.is_empty() {
        out.push_str("\nTargets (issues 2 and 12):\n\n");
        for t in targets {
            out.push_str(&format!("- {t}\n"));
        }
    }
    out
}
