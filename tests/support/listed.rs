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
    let mut listed: Vec<(u32, String, Vec<String>)> = Vec::new();
    let all = rows(
        &entries,
        &AppState::default(),
        "k8s-tunnels/",
        Order::Catalog,
    );
    for row in all.iter().filter(|row| row.cluster().cloud == cloud) {
        let cluster = row.cluster();
        match listed.last_mut() {
            Some((place, _, names)) if *place == row.environment_order => {
                names.push(cluster.name.clone())
            }
            _ => listed.push((
                row.environment_order,
                cluster.environment.clone(),
                vec![cluster.name.clone()],
            )),
        }
    }
    listed
        .into_iter()
        .map(|(_, environment, names)| (environment, names))
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
