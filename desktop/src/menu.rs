//! The tray menu as a pure model: app state in, a tree of typed items out. `tray.rs` serves it
//! over D-Bus (dbusmenu); tests check it without a display.

use k8s_tunnels::inventory::{Cloud, ClusterId};
use k8s_tunnels::tunnel::health::TunnelState;

/// One cluster as the menu sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MenuCluster {
    /// Cluster id.
    pub id: ClusterId,
    /// Display name.
    pub name: String,
    /// Cloud.
    pub cloud: Cloud,
    /// Environment.
    pub environment: String,
    /// Pinned at the top.
    pub favourite: bool,
    /// Its tunnel's state, when a tunnel is open.
    pub tunnel: Option<TunnelState>,
    /// What its API server last said through the tunnel ("v1.31.4 · 42 ms"), for the tooltip;
    /// the menu itself does not show it, so that a new round trip does not rebuild the menu.
    pub api: Option<String>,
}

impl MenuCluster {
    /// Whether its tunnel is open and not working: down, the API not answering, or waiting for
    /// a login.
    fn failing(&self) -> bool {
        self.tunnel.is_some_and(TunnelState::is_troubled)
    }
}

/// What the menu is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MenuState {
    /// Every cluster of the catalog, in the library's listing order
    /// ([`k8s_tunnels::listing::Order::Catalog`]): the menu groups consecutive clusters, so a
    /// cloud's clusters, and an environment's within it, must be next to each other.
    pub clusters: Vec<MenuCluster>,
    /// A discovery refresh is running.
    pub refreshing: bool,
}

/// What a click on a menu item does; the id of every actionable item.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MenuAction {
    /// Toggle a cluster's tunnel from the favourites section.
    Favourite(ClusterId),
    /// Toggle a cluster's tunnel from its cloud/environment submenu.
    Cluster(ClusterId),
    /// Toggle (close) an open tunnel from the open tunnels' section.
    Open(ClusterId),
    /// Check a tunnel that is down now instead of after its back-off.
    Retry(ClusterId),
    /// Close every tunnel.
    DisconnectAll,
    /// Run discovery now.
    RefreshDiscovery,
    /// Show the window.
    OpenWindow,
    /// Close every tunnel and exit.
    Quit,
}

impl MenuAction {
    /// The menu id string (`fav:<id>`, `cluster:<id>`, `disconnect_all`, ...).
    pub fn to_id(&self) -> String {
        match self {
            MenuAction::Favourite(id) => format!("fav:{id}"),
            MenuAction::Cluster(id) => format!("cluster:{id}"),
            MenuAction::Open(id) => format!("open:{id}"),
            MenuAction::Retry(id) => format!("retry:{id}"),
            MenuAction::DisconnectAll => "disconnect_all".into(),
            MenuAction::RefreshDiscovery => "refresh_discovery".into(),
            MenuAction::OpenWindow => "open_window".into(),
            MenuAction::Quit => "quit".into(),
        }
    }

    /// Parses an id made by [`MenuAction::to_id`]; `None` for ids that are not actions
    /// (submenus, the status line).
    pub fn from_id(id: &str) -> Option<Self> {
        if let Some(cluster) = id.strip_prefix("fav:") {
            return Some(MenuAction::Favourite(ClusterId(cluster.to_string())));
        }
        if let Some(cluster) = id.strip_prefix("cluster:") {
            return Some(MenuAction::Cluster(ClusterId(cluster.to_string())));
        }
        if let Some(cluster) = id.strip_prefix("open:") {
            return Some(MenuAction::Open(ClusterId(cluster.to_string())));
        }
        if let Some(cluster) = id.strip_prefix("retry:") {
            return Some(MenuAction::Retry(ClusterId(cluster.to_string())));
        }
        match id {
            "disconnect_all" => Some(MenuAction::DisconnectAll),
            "refresh_discovery" => Some(MenuAction::RefreshDiscovery),
            "open_window" => Some(MenuAction::OpenWindow),
            "quit" => Some(MenuAction::Quit),
            _ => None,
        }
    }

    /// The cluster a toggle or a retry is about.
    pub fn cluster(&self) -> Option<&ClusterId> {
        match self {
            MenuAction::Favourite(id)
            | MenuAction::Cluster(id)
            | MenuAction::Open(id)
            | MenuAction::Retry(id) => Some(id),
            _ => None,
        }
    }
}

/// One node of the menu tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MenuNode {
    /// A checkbox: a cluster's tunnel, checked while it is open (whatever its health).
    Check {
        /// What a click does.
        action: MenuAction,
        /// Label.
        label: String,
        /// Checked.
        checked: bool,
    },
    /// A plain item; without an action it is a disabled line of text.
    Item {
        /// What a click does; `None` for text.
        action: Option<MenuAction>,
        /// Label.
        label: String,
        /// Clickable.
        enabled: bool,
    },
    /// A submenu.
    Submenu {
        /// Label.
        label: String,
        /// Children.
        children: Vec<MenuNode>,
    },
    /// A separator line.
    Separator,
}

/// The label of a cloud's submenu.
pub fn cloud_label(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "AWS",
        Cloud::Gcp => "Google Cloud",
        Cloud::Azure => "Azure",
        Cloud::Onprem => "On-premises",
        Cloud::Other => "Other",
    }
}

/// A cluster's label: its name, with the state when its tunnel is open but not up (the
/// checkmark says open or closed).
fn cluster_label(c: &MenuCluster) -> String {
    match c.tunnel {
        Some(TunnelState::Connecting) => format!("{} (connecting…)", c.name),
        Some(TunnelState::Checking) => format!("{} (checking…)", c.name),
        Some(TunnelState::Down) => format!("{} (down)", c.name),
        Some(TunnelState::ApiDown) => format!("{} (API not answering)", c.name),
        Some(TunnelState::LoginRequired) => format!("{} (login required)", c.name),
        Some(TunnelState::Up) | None => c.name.clone(),
    }
}

/// The menu's about line, the version the app was built as: the same version
/// `k8s-tunnels --version`, the window's Settings page and the packages show.
pub const VERSION_LINE: &str = concat!("k8s-tunnels ", env!("CARGO_PKG_VERSION"));

/// The status line: "3 tunnels up", with the failing ones counted.
pub fn status_line(state: &MenuState) -> String {
    let count = |s: TunnelState| {
        state
            .clusters
            .iter()
            .filter(|c| c.tunnel == Some(s))
            .count()
    };
    let up = count(TunnelState::Up);
    let failing = state.clusters.iter().filter(|c| c.failing()).count();
    let mut line = match up {
        0 => "No tunnels up".to_string(),
        1 => "1 tunnel up".to_string(),
        n => format!("{n} tunnels up"),
    };
    if failing > 0 {
        line.push_str(&format!(", {failing} failing"));
    }
    line
}

/// Builds the menu. At the top what users reach for: the favourites, then every other open
/// tunnel (up, connecting or failing), each a checkbox that is checked while its tunnel is
/// open, whatever its health (the label says how it is), with "Retry now" under a tunnel that
/// is down. Then a submenu per cloud, holding one per environment with a checkbox per cluster,
/// both labelled with their counts ("AWS (2 up)"); then the status line and the actions.
pub fn model(state: &MenuState) -> Vec<MenuNode> {
    let mut nodes = Vec::new();
    // The top sections are short flat lists across clouds, read by name.
    let by_name =
        |a: &&MenuCluster, b: &&MenuCluster| a.name.cmp(&b.name).then(a.id.0.cmp(&b.id.0));
    let mut favourites: Vec<&MenuCluster> = state.clusters.iter().filter(|c| c.favourite).collect();
    favourites.sort_by(by_name);
    let mut open: Vec<&MenuCluster> = state
        .clusters
        .iter()
        .filter(|c| !c.favourite && c.tunnel.is_some())
        .collect();
    open.sort_by(by_name);
    for (section, action) in [
        (
            &favourites,
            MenuAction::Favourite as fn(ClusterId) -> MenuAction,
        ),
        (&open, MenuAction::Open),
    ] {
        for c in section.iter() {
            nodes.push(MenuNode::Check {
                action: action(c.id.clone()),
                label: cluster_label(c),
                checked: c.tunnel.is_some(),
            });
            if c.tunnel.is_some_and(TunnelState::is_failing) {
                nodes.push(MenuNode::Item {
                    action: Some(MenuAction::Retry(c.id.clone())),
                    label: format!("    Retry {} now", c.name),
                    enabled: true,
                });
            }
        }
        if !section.is_empty() {
            nodes.push(MenuNode::Separator);
        }
    }

    for in_cloud in state.clusters.chunk_by(|a, b| a.cloud == b.cloud) {
        let children = in_cloud
            .chunk_by(|a, b| a.environment == b.environment)
            .map(|clusters| MenuNode::Submenu {
                label: with_counts(&clusters[0].environment, clusters),
                children: clusters
                    .iter()
                    .map(|c| MenuNode::Check {
                        action: MenuAction::Cluster(c.id.clone()),
                        label: cluster_label(c),
                        checked: c.tunnel.is_some(),
                    })
                    .collect(),
            })
            .collect();
        nodes.push(MenuNode::Submenu {
            label: with_counts(cloud_label(in_cloud[0].cloud), in_cloud),
            children,
        });
    }
    if state.clusters.is_empty() {
        nodes.push(MenuNode::Item {
            action: None,
            label: "No clusters: configure discovery or an inventory".into(),
            enabled: false,
        });
    }

    nodes.push(MenuNode::Separator);
    nodes.push(MenuNode::Item {
        action: None,
        label: status_line(state),
        enabled: false,
    });
    let any_open = state.clusters.iter().any(|c| c.tunnel.is_some());
    nodes.push(MenuNode::Item {
        action: Some(MenuAction::DisconnectAll),
        label: "Disconnect all".into(),
        enabled: any_open,
    });
    nodes.push(MenuNode::Item {
        action: Some(MenuAction::RefreshDiscovery),
        label: if state.refreshing {
            "Refreshing…".into()
        } else {
            "Refresh discovery".into()
        },
        enabled: !state.refreshing,
    });
    nodes.push(MenuNode::Separator);
    nodes.push(MenuNode::Item {
        action: Some(MenuAction::OpenWindow),
        label: "Open window".into(),
        enabled: true,
    });
    nodes.push(MenuNode::Item {
        action: None,
        label: VERSION_LINE.into(),
        enabled: false,
    });
    nodes.push(MenuNode::Item {
        action: Some(MenuAction::Quit),
        label: "Quit".into(),
        enabled: true,
    });
    nodes
}

/// A submenu's label with how many of its tunnels are up and failing: "AWS (2 up, 1 failing)",
/// or the bare name when none is open.
fn with_counts(name: &str, clusters: &[MenuCluster]) -> String {
    let up = clusters
        .iter()
        .filter(|c| c.tunnel == Some(TunnelState::Up))
        .count();
    let failing = clusters.iter().filter(|c| c.failing()).count();
    match (up, failing) {
        (0, 0) => name.to_string(),
        (up, 0) => format!("{name} ({up} up)"),
        (0, failing) => format!("{name} ({failing} failing)"),
        (up, failing) => format!("{name} ({up} up, {failing} failing)"),
    }
}

/// How the tray icon looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrayLook {
    /// No tunnel up.
    Idle,
    /// Tunnels up, none failing.
    Up,
    /// At least one tunnel down or waiting for a login.
    Failing,
}

/// The tray icon and its tooltip for this state.
pub fn tray_look(state: &MenuState) -> (TrayLook, String) {
    let failing: Vec<&str> = state
        .clusters
        .iter()
        .filter(|c| c.failing())
        .map(|c| c.name.as_str())
        .collect();
    let up = state
        .clusters
        .iter()
        .any(|c| c.tunnel == Some(TunnelState::Up));
    let look = if !failing.is_empty() {
        TrayLook::Failing
    } else if up {
        TrayLook::Up
    } else {
        TrayLook::Idle
    };
    let mut tooltip = format!("k8s-tunnels: {}", status_line(state));
    if !failing.is_empty() {
        tooltip.push_str(&format!(" ({})", failing.join(", ")));
    }
    // What each up tunnel's cluster said, favourites first, as far as the tooltip has room.
    let mut answered: Vec<&MenuCluster> = state
        .clusters
        .iter()
        .filter(|c| c.tunnel == Some(TunnelState::Up) && c.api.is_some())
        .collect();
    answered.sort_by(|a, b| b.favourite.cmp(&a.favourite).then(a.name.cmp(&b.name)));
    let details: Vec<String> = answered
        .iter()
        .filter_map(|c| Some(format!("{} {}", c.name, c.api.as_deref()?)))
        .collect();
    if !details.is_empty() {
        tooltip.push_str(&format!(" — {}", details.join("; ")));
    }
    (look, tooltip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(
        name: &str,
        cloud: Cloud,
        env: &str,
        favourite: bool,
        tunnel: Option<TunnelState>,
    ) -> MenuCluster {
        MenuCluster {
            id: ClusterId(format!("file:{name}")),
            name: name.into(),
            cloud,
            environment: env.into(),
            favourite,
            tunnel,
            api: None,
        }
    }

    fn demo() -> MenuState {
        use Cloud::*;
        use TunnelState::*;
        MenuState {
            clusters: vec![
                cluster("prod-eu", Aws, "prod", true, Some(Up)),
                cluster("prod-us", Aws, "prod", false, Some(Up)),
                cluster("staging-eu", Aws, "staging", false, None),
                cluster("analytics-prod", Gcp, "prod", true, None),
                cluster("sandbox", Gcp, "dev", false, Some(Down)),
                cluster("factory-dc1", Onprem, "prod", false, Some(Connecting)),
            ],
            refreshing: false,
        }
    }

    fn labels(nodes: &[MenuNode]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| match n {
                MenuNode::Check { label, checked, .. } => {
                    format!("[{}] {label}", if *checked { "x" } else { " " })
                }
                MenuNode::Item { label, .. } => label.clone(),
                MenuNode::Submenu { label, .. } => format!("{label} >"),
                MenuNode::Separator => "---".into(),
            })
            .collect()
    }

    fn submenu<'a>(nodes: &'a [MenuNode], wanted: &str) -> &'a [MenuNode] {
        nodes
            .iter()
            .find_map(|n| match n {
                MenuNode::Submenu { label, children } if label == wanted => {
                    Some(children.as_slice())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no submenu {wanted}"))
    }

    #[test]
    fn favourites_then_the_other_open_tunnels_then_clouds_with_counts() {
        let nodes = model(&demo());
        assert_eq!(
            labels(&nodes),
            [
                "[ ] analytics-prod",
                "[x] prod-eu",
                "---",
                "[x] factory-dc1 (connecting…)",
                "[x] prod-us",
                "[x] sandbox (down)",
                "    Retry sandbox now",
                "---",
                "AWS (2 up) >",
                "Google Cloud (1 failing) >",
                "On-premises >",
                "---",
                "2 tunnels up, 1 failing",
                "Disconnect all",
                "Refresh discovery",
                "---",
                "Open window",
                VERSION_LINE,
                "Quit",
            ]
        );
        let retry = nodes
            .iter()
            .find_map(|n| match n {
                MenuNode::Item {
                    action: Some(a @ MenuAction::Retry(_)),
                    ..
                } => Some(a.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(retry, MenuAction::Retry(ClusterId("file:sandbox".into())));
    }

    #[test]
    fn a_failing_tunnel_stays_checked_with_its_state_in_the_label() {
        let mut state = demo();
        state.clusters[0].tunnel = Some(TunnelState::Down);
        state.clusters[3].tunnel = Some(TunnelState::LoginRequired);
        let nodes = model(&state);
        let top = labels(&nodes);
        assert_eq!(top[0], "[x] analytics-prod (login required)");
        assert_eq!(top[1], "[x] prod-eu (down)");
        assert_eq!(top[2], "    Retry prod-eu now");
        let aws = submenu(&nodes, "AWS (1 up, 1 failing)");
        assert_eq!(
            labels(submenu(aws, "prod (1 up, 1 failing)")),
            ["[x] prod-eu (down)", "[x] prod-us"]
        );
    }

    #[test]
    fn groups_hold_environments_in_the_librarys_order_with_every_cluster() {
        let nodes = model(&demo());
        let aws = submenu(&nodes, "AWS (2 up)");
        assert_eq!(labels(aws), ["prod (2 up) >", "staging >"]);
        // A favourite is also listed in its group.
        assert_eq!(
            labels(submenu(aws, "prod (2 up)")),
            ["[x] prod-eu", "[x] prod-us"]
        );
        assert_eq!(labels(submenu(aws, "staging")), ["[ ] staging-eu"]);
        // Production before development, as in the window and the CLI.
        let gcp = submenu(&nodes, "Google Cloud (1 failing)");
        assert_eq!(labels(gcp), ["prod >", "dev (1 failing) >"]);
        assert_eq!(
            labels(submenu(gcp, "dev (1 failing)")),
            ["[x] sandbox (down)"]
        );
        let onprem = submenu(&nodes, "On-premises");
        assert_eq!(
            labels(submenu(onprem, "prod")),
            ["[x] factory-dc1 (connecting…)"]
        );
        // The entries of one cluster have distinct ids that all toggle it.
        let MenuNode::Check { action, .. } = &submenu(aws, "prod (2 up)")[0] else {
            panic!("not a check")
        };
        assert_eq!(
            action,
            &MenuAction::Cluster(ClusterId("file:prod-eu".into()))
        );
        let MenuNode::Check { action: fav, .. } = &nodes[1] else {
            panic!("not a check")
        };
        assert_eq!(
            fav,
            &MenuAction::Favourite(ClusterId("file:prod-eu".into()))
        );
        assert_ne!(fav.to_id(), action.to_id());
        assert_eq!(fav.cluster(), action.cluster());
    }

    #[test]
    fn refresh_label_and_status_line_follow_the_state() {
        let mut state = demo();
        state.refreshing = true;
        let nodes = model(&state);
        assert!(nodes.contains(&MenuNode::Item {
            action: Some(MenuAction::RefreshDiscovery),
            label: "Refreshing…".into(),
            enabled: false,
        }));
        for c in &mut state.clusters {
            c.tunnel = None;
        }
        let nodes = model(&state);
        assert!(labels(&nodes).contains(&"No tunnels up".to_string()));
        assert!(nodes.contains(&MenuNode::Item {
            action: Some(MenuAction::DisconnectAll),
            label: "Disconnect all".into(),
            enabled: false,
        }));
        state.clusters[2].tunnel = Some(TunnelState::Up);
        assert!(labels(&model(&state)).contains(&"1 tunnel up".to_string()));
        assert_eq!(tray_look(&state).0, TrayLook::Up);
        state.clusters[2].tunnel = Some(TunnelState::LoginRequired);
        let (look, tooltip) = tray_look(&state);
        assert_eq!(look, TrayLook::Failing);
        assert!(tooltip.contains("staging-eu"), "{tooltip}");
        state.clusters.clear();
        assert_eq!(tray_look(&state).0, TrayLook::Idle);
        assert!(labels(&model(&state))[0].starts_with("No clusters"));
    }

    #[test]
    fn an_api_not_answering_is_failing_with_a_retry_and_answers_show_in_the_tooltip() {
        let mut state = demo();
        for c in &mut state.clusters {
            c.tunnel = None;
        }
        state.clusters[0].tunnel = Some(TunnelState::Up);
        state.clusters[0].api = Some("v1.32.0 · 3 ms".into());
        state.clusters[1].tunnel = Some(TunnelState::ApiDown);
        let (first, second) = (state.clusters[0].clone(), state.clusters[1].clone());
        let nodes = model(&state);
        let all = labels(&nodes);
        assert!(
            all.contains(&format!("[x] {} (API not answering)", second.name)),
            "{all:?}"
        );
        assert!(
            all.contains(&format!("    Retry {} now", second.name)),
            "{all:?}"
        );
        assert!(
            all.contains(&"1 tunnel up, 1 failing".to_string()),
            "{all:?}"
        );
        // The answer is the tooltip's, never a label's: a new round trip must not rebuild the menu.
        assert!(!all.iter().any(|l| l.contains("v1.32.0")), "{all:?}");
        let (look, tooltip) = tray_look(&state);
        assert_eq!(look, TrayLook::Failing);
        assert!(
            tooltip.ends_with(&format!("— {} v1.32.0 · 3 ms", first.name)),
            "{tooltip}"
        );
        assert!(tooltip.contains(&second.name), "{tooltip}");
        let mut faster = state.clone();
        faster.clusters[0].api = Some("v1.32.0 · 2 ms".into());
        assert_eq!(model(&faster), nodes);
    }

    #[test]
    fn ids_round_trip() {
        for action in [
            MenuAction::Favourite(ClusterId("eks:1:eu-west-1:a".into())),
            MenuAction::Cluster(ClusterId("file:b".into())),
            MenuAction::Open(ClusterId("file:c".into())),
            MenuAction::Retry(ClusterId("file:d".into())),
            MenuAction::DisconnectAll,
            MenuAction::RefreshDiscovery,
            MenuAction::OpenWindow,
            MenuAction::Quit,
        ] {
            assert_eq!(MenuAction::from_id(&action.to_id()), Some(action));
        }
        assert_eq!(MenuAction::from_id("status"), None);
    }
}
