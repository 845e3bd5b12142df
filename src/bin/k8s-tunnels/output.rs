//! `list` and `status`: tables for people, JSON for scripts. Neither ever prints a secret.

use k8s_tunnels::engine::TunnelStatus;
use k8s_tunnels::inventory::ClusterId;
use k8s_tunnels::listing::{self, Order};
use k8s_tunnels::state::StateStore;
use serde::Serialize;

use crate::runfiles::live_tunnels;
use crate::{Context, Failure};

#[derive(Serialize)]
struct ListedCluster<'a> {
    id: &'a ClusterId,
    name: &'a str,
    source: &'a str,
    cloud: String,
    environment: &'a str,
    region: Option<&'a str>,
    api_server: &'a str,
    access_hostname: &'a str,
    origin: String,
    context: &'a str,
    /// The open tunnel's port, else the one it is planned on.
    port: u16,
    state: Option<String>,
    /// Why the latest discovery could not confirm it, when it could not.
    stale: Option<&'a str>,
}

pub fn list(ctx: &Context, json: bool) -> Result<(), Failure> {
    let entries = ctx.catalog()?;
    let state = StateStore::new(ctx.dirs())
        .load()
        .map_err(anyhow::Error::new)?;
    let live = live_tunnels(ctx.dirs());
    let listed = listing::rows(
        &entries,
        &state,
        &state.settings.kubeconfig_prefix,
        Order::Catalog,
    );
    let rows: Vec<ListedCluster<'_>> = listed
        .iter()
        .map(|row| {
            let c = row.cluster();
            let tunnel = live.iter().find(|t| t.cluster == c.id);
            ListedCluster {
                id: &c.id,
                name: &c.name,
                source: row.source(),
                cloud: c.cloud.to_string(),
                environment: &c.environment,
                region: c.region.as_deref(),
                api_server: c.api.url.as_str(),
                access_hostname: &c.access.hostname,
                origin: c.access.origin.to_string(),
                context: &row.context,
                port: tunnel.map_or(row.planned_port, |t| t.port),
                state: tunnel.map(|t| t.state.to_string()),
                stale: row.stale(),
            }
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(anyhow::Error::new)?
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "No clusters yet. Try the built-in lab with `k8s-tunnels demo`, write an inventory at {},\n\
             or configure discovery sources in {} and run `k8s-tunnels discover`.",
            ctx.inventory_path().display(),
            ctx.config_path().display()
        );
        return Ok(());
    }
    let mut table = vec![vec![
        "CLOUD".to_string(),
        "ENV".into(),
        "NAME".into(),
        "REGION".into(),
        "SOURCE".into(),
        "ORIGIN".into(),
        "PORT".into(),
        "STATE".into(),
        "CONTEXT".into(),
    ]];
    let mut stale = 0;
    for r in &rows {
        let state = r.state.clone().unwrap_or_else(|| "off".into());
        table.push(vec![
            r.cloud.clone(),
            r.environment.to_string(),
            r.name.to_string(),
            r.region.unwrap_or("-").to_string(),
            r.source.to_string(),
            r.origin.clone(),
            r.port.to_string(),
            if r.stale.is_some() {
                stale += 1;
                format!("{state} (stale)")
            } else {
                state
            },
            r.context.to_string(),
        ]);
    }
    print_table(&table);
    if stale > 0 {
        println!(
            "\n{stale} cluster(s) could not be confirmed by the latest discovery (see `k8s-tunnels list --json` for why)."
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct ConfigReport<'a> {
    config_file: &'a std::path::Path,
    config_file_exists: bool,
    inventory: &'a std::path::Path,
    inventory_exists: bool,
    cache: std::path::PathBuf,
    cached_clusters: usize,
    state: std::path::PathBuf,
    cache_ttl: Option<String>,
    sources: Vec<&'static str>,
}

pub fn config(ctx: &Context, json: bool) -> Result<(), Failure> {
    let cache_path = k8s_tunnels::discovery::cache::cache_path(&ctx.dirs().cache);
    let cached = k8s_tunnels::discovery::cache::load(&cache_path)
        .map_err(anyhow::Error::new)?
        .clusters
        .len();
    let report = ConfigReport {
        config_file: ctx.config_path(),
        config_file_exists: ctx.config_path().exists(),
        inventory: ctx.inventory_path(),
        inventory_exists: ctx.inventory_path().exists(),
        cache: cache_path,
        cached_clusters: cached,
        state: StateStore::new(ctx.dirs()).path().to_path_buf(),
        cache_ttl: ctx
            .config()
            .cache_ttl
            .map(|d| humantime::format_duration(d).to_string()),
        sources: ctx.configured_sources(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::new)?
        );
        return Ok(());
    }
    let exists = |e: bool| if e { "" } else { " (not there)" };
    println!(
        "config file  {}{}",
        report.config_file.display(),
        exists(report.config_file_exists)
    );
    println!(
        "inventory    {}{}",
        report.inventory.display(),
        exists(report.inventory_exists)
    );
    println!(
        "cache        {} ({} clusters)",
        report.cache.display(),
        report.cached_clusters
    );
    println!("state        {}", report.state.display());
    println!(
        "sources      {}",
        if report.sources.is_empty() {
            "none configured (inventory only)".to_string()
        } else {
            report.sources.join(", ")
        }
    );
    println!(
        "cache ttl    {}",
        report
            .cache_ttl
            .as_deref()
            .unwrap_or("none (refresh with `k8s-tunnels discover`)")
    );
    Ok(())
}

pub fn status(ctx: &Context, json: bool) -> Result<(), Failure> {
    let tunnels = live_tunnels(ctx.dirs());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&tunnels).map_err(anyhow::Error::new)?
        );
        return Ok(());
    }
    if tunnels.is_empty() {
        println!("No tunnels open. Start one with: k8s-tunnels connect <cluster>");
        return Ok(());
    }
    let mut table = vec![vec![
        "NAME".to_string(),
        "STATE".into(),
        "API".into(),
        "PORT".into(),
        "CONN".into(),
        "UP".into(),
        "DOWN".into(),
        "SINCE".into(),
        "LAST ERROR".into(),
    ]];
    for t in &tunnels {
        table.push(status_row(t));
    }
    print_table(&table);
    Ok(())
}

fn status_row(t: &TunnelStatus) -> Vec<String> {
    vec![
        t.name.clone(),
        t.state.to_string(),
        t.api_summary().unwrap_or_else(|| "-".into()),
        t.port.to_string(),
        t.open_connections.to_string(),
        human_bytes(t.bytes_up),
        human_bytes(t.bytes_down),
        t.since.clone(),
        t.reason.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// `1.5 MiB` style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
