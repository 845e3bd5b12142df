//! What the app's lists (the CLI's `list`, the window, the tray menu) show of discovered
//! clusters: the discovery tests check their grouping through the one listing every front end
//! uses ([`k8s_tunnels::listing::rows`]), not through a grouping of their own.

use k8s_tunnels::discovery::catalog::Entry;
use k8s_tunnels::inventory::{Cloud, Cluster};
use k8s_tunnels::listing::{Order, rows};
use k8s_tunnels::state::AppState;

/// One cloud's clusters as listed: its environments in the listing's order, each with its
/// clusters' names in order.
pub fn listed(clusters: &[Cluster], cloud: Cloud) -> Vec<(String, Vec<String>)> {
    let entries: Vec<Entry> = clusters
        .iter()
        .map(|cluster| Entry {
            cluster: cluster.clone(),
            source: "test".into(),
            stale: None,
        })
        .collect();
    let all = rows(
        &entries,
        &AppState::default(),
        "k8s-tunnels/",
        Order::Catalog,
    );
    let in_cloud: Vec<_> = all
        .iter()
        .filter(|row| row.cluster().cloud == cloud)
        .collect();
    // As the tray menu groups: consecutive rows of one environment place.
    in_cloud
        .chunk_by(|a, b| a.environment_order == b.environment_order)
        .map(|group| {
            let names = group.iter().map(|row| row.cluster().name.clone()).collect();
            (group[0].cluster().environment.clone(), names)
        })
        .collect()
}

/// `listed`'s answer spelled with string literals, for comparing.
pub fn groups(expected: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    expected
        .iter()
        .map(|(environment, names)| {
            let names = names.iter().map(|name| name.to_string()).collect();
            (environment.to_string(), names)
        })
        .collect()
}
