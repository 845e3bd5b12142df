//! The catalog as every list of the app shows it — the CLI's `list`, the window's rows, the tray
//! menu: one order, and beside each cluster what those lists say about it.
//!
//! The order is cloud ([`Cloud`](crate::inventory::Cloud)'s order), environment
//! ([`compare_environments`](crate::inventory::compare_environments)), name, id;
//! with [`Order::FavouritesFirst`] the favourites come before all of that. Each [`Row`] carries
//! the cluster's kubectl context ([`crate::kubeconfig::context_name`]), its environment's place
//! among the catalog's environments, the port its tunnel is planned on
//! ([`crate::state::planned_port`]) and whether it is a favourite; the engine names contexts
//! and binds ports through the same two functions, so a list never promises what a connect
//! does not do.

use std::collections::{BTreeSet, HashMap};

use crate::discovery::catalog::Entry;
use crate::inventory::{Cluster, EnvironmentKey};
use crate::state::AppState;

/// Where favourites go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Cloud, environment, name, id: the catalog's groups, favourites among the others.
    Catalog,
    /// The favourites first (in the catalog order among themselves), then the others.
    FavouritesFirst,
}

/// One cluster of the listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Row<'a> {
    /// The catalog's entry: the cluster, its source and why it may be stale.
    pub entry: &'a Entry,
    /// The kubectl context that reaches it.
    pub context: String,
    /// Its environment's place among the catalog's environments in
    /// [`compare_environments`](crate::inventory::compare_environments)'s
    /// order, from 0: equal for equal names, so front ends that group by environment follow it
    /// rather than sorting names themselves.
    pub environment_order: u32,
    /// The local port its tunnel listens on when it connects and the port is free: the
    /// remembered one, else the one derived from its id.
    pub planned_port: u16,
    /// Pinned by the user.
    pub favourite: bool,
}

impl<'a> Row<'a> {
    /// The cluster.
    pub fn cluster(&self) -> &'a Cluster {
        &self.entry.cluster
    }

    /// The source that found it (`file`, `eks`, `gke`, `vault`).
    pub fn source(&self) -> &'a str {
        &self.entry.source
    }

    /// Why the latest discovery could not confirm it, when it could not.
    pub fn stale(&self) -> Option<&'a str> {
        self.entry.stale.as_deref()
    }
}

/// The rows of `entries` in `order`, with the favourites and remembered ports of `state`, and
/// contexts named with `prefix`: the kubeconfig prefix in force, which is the engine's
/// ([`crate::engine::Engine::kubeconfig_prefix`]) where one runs, since a saved change of the
/// setting applies only from the next start.
pub fn rows<'a>(
    entries: &'a [Entry],
    state: &AppState,
    prefix: &str,
    order: Order,
) -> Vec<Row<'a>> {
    let environments: BTreeSet<EnvironmentKey<'_>> = entries
        .iter()
        .map(|e| EnvironmentKey(&e.cluster.environment))
        .collect();
    let places: HashMap<&str, u32> = environments.iter().map(|e| e.0).zip(0..).collect();
    let mut rows: Vec<Row<'a>> = entries
        .iter()
        .map(|entry| {
            let cluster = &entry.cluster;
            Row {
                entry,
                context: crate::kubeconfig::context_name(prefix, &cluster.name),
                // `places` was built from these very entries.
                environment_order: places[cluster.environment.as_str()],
                planned_port: state.planned_port(&cluster.id),
                favourite: state.favourites.contains(&cluster.id),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let first = match order {
            Order::Catalog => std::cmp::Ordering::Equal,
            Order::FavouritesFirst => b.favourite.cmp(&a.favourite),
        };
        let (x, y) = (a.cluster(), b.cluster());
        // `environment_order` is `compare_environments`'s order, computed once per name
        // above; comparing names again would lowercase both on every comparison.
        first
            .then_with(|| x.cloud.cmp(&y.cloud))
            .then_with(|| a.environment_order.cmp(&b.environment_order))
            .then_with(|| x.name.cmp(&y.name))
            .then_with(|| x.id.cmp(&y.id))
    });
    rows
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dirs::AppDirs;
    use crate::engine::{ConnectOptions, Engine, EngineConfig};
    use crate::inventory::{Cloud, ClusterId};
    use crate::state::StateStore;

    /// A catalog entry; `id` distinct from `file:<name>` where a test needs two of one name.
    fn entry(id: &str, name: &str, cloud: Cloud, environment: &str) -> Entry {
        let yaml = format!(
            "clusters:\n- name: {name}\n  cloud: aws\n  environment: {environment}\n  server: https://api.{name}.example:6443\n  user: {{ token: x }}\n  access:\n    hostname: {name}.example.com\n    origin: tcp\n    connect_to: 127.0.0.1:9\n"
        );
        let mut cluster =
            crate::discovery::file::parse(&yaml, std::path::Path::new("inventory.yaml"))
                .unwrap()
                .remove(0);
        cluster.id = ClusterId(id.into());
        cluster.cloud = cloud;
        Entry {
            cluster,
            source: "file".into(),
            stale: None,
        }
    }

    /// Scrambled on purpose: the listing, not the catalog, decides the order.
    fn catalog() -> Vec<Entry> {
        vec![
            entry("file:sandbox", "sandbox", Cloud::Gcp, "dev"),
            entry("file:staging-eu", "staging-eu", Cloud::Aws, "staging"),
            entry("eks:b", "prod-us", Cloud::Aws, "prod"),
            entry("file:factory", "factory", Cloud::Onprem, "Analytics"),
            entry("eks:a", "prod-us", Cloud::Aws, "prod"),
            entry("file:prod-eu", "prod-eu", Cloud::Aws, "prod"),
            entry("file:analytics", "analytics", Cloud::Gcp, "prod"),
        ]
    }

    fn ids<'a>(rows: &[Row<'a>]) -> Vec<&'a str> {
        rows.iter().map(|r| r.cluster().id.0.as_str()).collect()
    }

    #[test]
    fn rows_go_by_cloud_then_environment_then_name_then_id() {
        let entries = catalog();
        let rows = rows(
            &entries,
            &AppState::default(),
            "k8s-tunnels/",
            Order::Catalog,
        );
        assert_eq!(
            ids(&rows),
            [
                "file:prod-eu",
                "eks:a",
                "eks:b",
                "file:staging-eu",
                "file:analytics",
                "file:sandbox",
                "file:factory",
            ]
        );
        // Places in the library's order of every environment of the catalog, whatever the cloud.
        let places: Vec<(&str, u32)> = rows
            .iter()
            .map(|r| (r.cluster().environment.as_str(), r.environment_order))
            .collect();
        assert_eq!(
            places,
            [
                ("prod", 0),
                ("prod", 0),
                ("prod", 0),
                ("staging", 1),
                ("prod", 0),
                ("dev", 2),
                ("Analytics", 3),
            ]
        );
        assert!(rows.iter().all(|r| !r.favourite && r.source() == "file"));
    }

    #[test]
    fn favourites_come_first_only_when_asked_and_are_flagged_either_way() {
        let entries = catalog();
        let mut state = AppState::default();
        state.favourites.insert(ClusterId("file:sandbox".into()));
        state.favourites.insert(ClusterId("file:factory".into()));
        state.favourites.insert(ClusterId("eks:b".into()));
        let first = rows(&entries, &state, "k8s-tunnels/", Order::FavouritesFirst);
        assert_eq!(
            ids(&first),
            [
                "eks:b",
                "file:sandbox",
                "file:factory",
                "file:prod-eu",
                "eks:a",
                "file:staging-eu",
                "file:analytics",
            ]
        );
        let flagged: Vec<bool> = first.iter().map(|r| r.favourite).collect();
        assert_eq!(flagged, [true, true, true, false, false, false, false]);
        let catalog_order = rows(&entries, &state, "k8s-tunnels/", Order::Catalog);
        assert_eq!(ids(&catalog_order)[..3], ["file:prod-eu", "eks:a", "eks:b"]);
        assert!(catalog_order[2].favourite);
    }

    #[test]
    fn contexts_carry_the_prefix_as_the_engine_names_them() {
        let entries = catalog();
        let root = tempfile::tempdir().unwrap();
        let engine = engine_in(root.path(), "kt/");
        let rows = rows(
            &entries,
            &AppState::default(),
            engine.kubeconfig_prefix(),
            Order::Catalog,
        );
        assert_eq!(rows[0].context, "kt/prod-eu");
        for row in &rows {
            assert_eq!(row.context, engine.context_name(row.cluster()));
        }
    }

    #[tokio::test]
    async fn the_planned_port_is_the_one_the_engine_binds_when_it_is_free() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine_in(root.path(), "k8s-tunnels/");
        let store = StateStore::new(&AppDirs::at(root.path()));

        // A cluster whose derived port nothing holds (another program may hold some).
        let derived = (0..)
            .map(|i| {
                entry(
                    &format!("file:free-{i}"),
                    &format!("free-{i}"),
                    Cloud::Aws,
                    "dev",
                )
            })
            .find(|e| {
                let port = AppState::default().planned_port(&e.cluster.id);
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            })
            .unwrap();
        // And one with a remembered port, outside the derived range.
        let remembered = entry("file:remembered", "remembered", Cloud::Aws, "dev");
        let free = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut state = AppState::default();
        state.ports.insert(remembered.cluster.id.clone(), free);
        store.save(&state).unwrap();

        let entries = [derived, remembered];
        let listed = rows(
            &entries,
            &store.load().unwrap(),
            "k8s-tunnels/",
            Order::Catalog,
        );
        assert_eq!(listed[1].planned_port, free);
        for row in &listed {
            let status = engine
                .connect(row.cluster(), ConnectOptions::default())
                .await
                .unwrap();
            assert_eq!(status.port, row.planned_port, "{}", row.cluster().name);
            assert_eq!(status.context, row.context);
        }
        engine.shutdown(Duration::from_secs(3)).await;
    }

    fn engine_in(root: &std::path::Path, prefix: &str) -> Engine {
        Engine::new(EngineConfig {
            kubeconfig: None,
            prefix: prefix.into(),
            state: StateStore::new(&AppDirs::at(root)),
            schedule: crate::tunnel::health::ProbeSchedule::default(),
            keepalive: crate::tunnel::keepalive::Keepalive::default(),
            warm: crate::tunnel::warm::WarmSettings::OFF,
            wake: None,
            kubeconfig_refresh: crate::engine::KUBECONFIG_KEEPER_PERIOD,
        })
    }
}
