//! The catalog: every cluster the user may reach — the inventory file's and the discovery
//! cache's — each with a display name unique across sources. It is the one list the CLI, the
//! engine and the app read; building it needs no network.

use std::collections::BTreeSet;

use super::cache::{CachedCluster, DiscoveryCache};
use super::metadata::safe_name;
use crate::inventory::Cluster;

/// Source name of the inventory file's clusters.
pub const FILE_SOURCE: &str = "file";

/// One cluster of the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The cluster, its `name` unique in the catalog.
    pub cluster: Cluster,
    /// Source that found it (`file`, `eks`, `gke`, `vault`).
    pub source: String,
    /// Set when the latest discovery could not confirm it (its scope failed): why.
    pub stale: Option<String>,
}

/// Puts the inventory's clusters (their names are the user's own and win) and the cached ones
/// together. A cached cluster whose name is taken is renamed `<name>-<cloud>-<region>`, then
/// `-2`, `-3`, … — deterministically, since the cache is sorted by id.
pub fn assemble(inventory: Vec<Cluster>, cache: &DiscoveryCache) -> Vec<Entry> {
    let mut taken: BTreeSet<String> = inventory.iter().map(|c| c.name.clone()).collect();
    let mut entries: Vec<Entry> = inventory
        .into_iter()
        .map(|cluster| Entry {
            cluster,
            source: FILE_SOURCE.to_string(),
            stale: None,
        })
        .collect();
    for CachedCluster {
        cluster,
        source,
        stale,
        ..
    } in &cache.clusters
    {
        let mut cluster = cluster.clone();
        cluster.name = unique_name(&cluster, &mut taken);
        entries.push(Entry {
            cluster,
            source: source.clone(),
            stale: stale.clone(),
        });
    }
    entries
}

fn unique_name(cluster: &Cluster, taken: &mut BTreeSet<String>) -> String {
    let mut name = cluster.name.clone();
    if taken.contains(&name) {
        let qualified = match &cluster.region {
            Some(region) => format!("{}-{}-{region}", cluster.name, cluster.cloud),
            None => format!("{}-{}", cluster.name, cluster.cloud),
        };
        name = safe_name(&qualified);
        let base = name.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = safe_name(&format!("{base}-{n}"));
            n += 1;
        }
    }
    taken.insert(name.clone());
    name
}

/// Finds a cluster by display name or id.
pub fn find<'a>(entries: &'a [Entry], wanted: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|e| e.cluster.name == wanted || e.cluster.id.0 == wanted)
}
