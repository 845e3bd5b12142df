//! `discover`: runs the configured discovery sources, shows their progress, and refreshes the
//! cache every other command starts from.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use k8s_tunnels::discovery::{Progress, ProgressSink, SourceReport, runner};
use serde::Serialize;

use crate::{Context, Failure};

/// Keeps the discovery cache fresh in the background when the configuration sets a TTL and
/// names sources; `None` otherwise. Dropping it stops it.
pub fn background_refresh(ctx: &Context) -> Option<runner::Refresher> {
    ctx.background_refresh(|cache| {
        tracing::info!(clusters = cache.clusters.len(), "discovery cache refreshed")
    })
}

#[derive(Serialize)]
struct Summary<'a> {
    source: &'a str,
    clusters: usize,
    failed: &'a [k8s_tunnels::discovery::ScopeError],
    rejected: &'a [k8s_tunnels::discovery::Rejected],
}

pub async fn run(ctx: &Context, only: &[String], json: bool) -> Result<(), Failure> {
    if ctx.sources(only).is_empty() {
        return Err(Failure::inventory(anyhow::anyhow!(
            "no discovery sources {}in {} (the inventory file needs no discovery; see the README's \"Discovery\" section)",
            if only.is_empty() {
                "configured "
            } else {
                "of those named are configured "
            },
            ctx.config_path().display()
        )));
    }
    let bars = Bars::new(!json && std::io::stderr().is_terminal());
    let sink: ProgressSink = {
        let bars = bars.clone();
        Arc::new(move |p: Progress| bars.update(&p))
    };
    let (cache, reports) = ctx.discover(only, sink).await?;
    bars.finish();

    let summaries: Vec<Summary<'_>> = reports.iter().map(summary).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summaries).map_err(anyhow::Error::new)?
        );
        return Ok(());
    }
    for s in &summaries {
        println!("{}: {} cluster(s)", s.source, s.clusters);
        for failed in s.failed {
            println!("  ✗ {}: {}", failed.scope, failed.message);
        }
        for rejected in s.rejected {
            println!(
                "  – {} ({}): {}",
                rejected.name, rejected.scope, rejected.reason
            );
        }
    }
    let stale = cache.clusters.iter().filter(|c| c.stale.is_some()).count();
    println!(
        "{} cluster(s) cached{}; `k8s-tunnels list` shows them.",
        cache.clusters.len(),
        if stale > 0 {
            format!(", {stale} kept from earlier runs where a scope failed (stale)")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn summary(report: &SourceReport) -> Summary<'_> {
    Summary {
        source: &report.source,
        clusters: report.found.len(),
        failed: &report.failed,
        rejected: &report.rejected,
    }
}

/// One progress bar per source, on a terminal only.
#[derive(Clone)]
struct Bars {
    multi: Option<MultiProgress>,
    bars: Arc<Mutex<BTreeMap<String, ProgressBar>>>,
}

impl Bars {
    fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(MultiProgress::new),
            bars: Arc::default(),
        }
    }

    fn update(&self, p: &Progress) {
        let Some(multi) = &self.multi else { return };
        let mut bars = k8s_tunnels::sync::lock(&self.bars);
        let bar = bars.entry(p.source.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(p.total as u64));
            if let Ok(style) =
                ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} scopes")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(p.source.clone());
            bar
        });
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    }

    fn finish(&self) {
        for bar in k8s_tunnels::sync::lock(&self.bars).values() {
            bar.finish();
        }
    }
}
