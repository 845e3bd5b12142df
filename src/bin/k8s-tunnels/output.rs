//! `list` and `status`: tables for people, JSON for scripts. Neither ever prints a secret.

use k8s_tunnels::engine::TunnelStatus;
use k8s_tunnels::inventory::{ClusterId, group};
use k8s_tunnels::state::{StateStore, port_candidates};
use serde::Serialize;

use crate::runfiles::live_tunnels;
use crate::{Context, Failure};

#[derive(Serialize)]
struct ListedCluster<'a> {
    id: &'a ClusterId,
    name: &'a str,
    cloud: String,
    environment: &'a str,
    region: Option<&'a str>,
    api_server: &'a str,
    access_hostname: &'a str,
    origin: String,
    context: String,
    port: Option<u16>,
    state: Option<String>,
}

pub fn list(ctx: &Context, json: bool) -> Result<(), Failure> {
    let clusters = ctx.clusters()?;
    let state = StateStore::new(&ctx.dirs)
        .load()
        .map_err(anyhow::Error::new)?;
    let live = live_tunnels(&ctx.dirs);
    let prefix = &state.settings.kubeconfig_prefix;
    let groups = group(&clusters);
    let mut rows = Vec::new();
    for (cloud, envs) in &groups {
        for (env, list) in envs {
            for c in list {
                let tunnel = live.iter().find(|t| t.cluster == c.id);
                rows.push(ListedCluster {
                    id: &c.id,
                    name: &c.name,
                    cloud: cloud.to_string(),
                    environment: env,
                    region: c.region.as_deref(),
                    api_server: c.api.url.as_str(),
                    access_hostname: &c.access.hostname,
                    origin: c.access.origin.to_string(),
                    context: format!("{prefix}{}", c.name),
                    port: tunnel
                        .map(|t| t.port)
                        .or_else(|| port_candidates(&c.id, state.ports.get(&c.id).copied()).next()),
                    state: tunnel.map(|t| t.state.to_string()),
                });
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(anyhow::Error::new)?
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("No clusters in {}.", ctx.inventory_path.display());
        return Ok(());
    }
    let mut table = vec![vec![
        "CLOUD".to_string(),
        "ENV".into(),
        "NAME".into(),
        "REGION".into(),
        "ORIGIN".into(),
        "PORT".into(),
        "STATE".into(),
        "CONTEXT".into(),
    ]];
    for r in &rows {
        table.push(vec![
            r.cloud.clone(),
            r.environment.to_string(),
            r.name.to_string(),
            r.region.unwrap_or("-").to_string(),
            r.origin.clone(),
            r.port.map_or("-".into(), |p| p.to_string()),
            r.state.clone().unwrap_or_else(|| "off".into()),
            r.context.clone(),
        ]);
    }
    print_table(&table);
    Ok(())
}

pub fn status(ctx: &Context, json: bool) -> Result<(), Failure> {
    let tunnels = live_tunnels(&ctx.dirs);
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
