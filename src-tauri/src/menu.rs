//! The tray menu as a pure model: app state in, a tree of typed items out. `tray.rs` serves it
//! over D-Bus (dbusmenu); tests check it without a display.

use std::collections::BTreeMap;

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
}

/// What the menu is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MenuState {
    /// Every cluster of the catalog.
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
        match id {
            "disconnect_all" => Some(MenuAction::DisconnectAll),
            "refresh_discovery" => Some(MenuAction::RefreshDiscovery),
            "open_window" => Some(MenuAction::OpenWindow),
            "quit" => Some(MenuAction::Quit),
            _ => None,
        }
    }

    /// The cluster a toggle is about.
    pub fn cluster(&self) -> Option<&ClusterId> {
        match self {
            MenuAction::Favourite(id) | MenuAction::Cluster(id) => Some(id),
            _ => None,
        }
    }
}

/// One node of the menu tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MenuNode {
    /// A checkbox: a cluster's tunnel, checked when up.
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

/// A cluster's label: its name, with the state when that is neither up nor closed (the
/// checkmark says those).
fn cluster_label(c: &MenuCluster) -> String {
    match c.tunnel {
        Some(TunnelState::Connecting) => format!("{} (connecting…)", c.name),
        Some(TunnelState::Down) => format!("{} (down)", c.name),
        Some(TunnelState::LoginRequired) => format!("{} (login required)", c.name),
        Some(TunnelState::Up) | None => c.name.clone(),
    }
}

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
    let failing = count(TunnelState::Down) + count(TunnelState::LoginRequired);
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

/// Builds the menu: favourites first (checkboxes, checked = up), then a submenu per cloud
/// holding one per environment with a checkbox per cluster, the status line, and the actions.
pub fn model(state: &MenuState) -> Vec<MenuNode> {
    let mut nodes = Vec::new();
    let mut favourites: Vec<&MenuCluster> = state.clusters.iter().filter(|c| c.favourite).collect();
    favourites.sort_by(|a, b| a.name.cmp(&b.name));
    for c in &favourites {
        nodes.push(MenuNode::Check {
            action: MenuAction::Favourite(c.id.clone()),
            label: cluster_label(c),
            checked: c.tunnel == Some(TunnelState::Up),
        });
    }
    if !favourites.is_empty() {
        nodes.push(MenuNode::Separator);
    }

    let mut groups: BTreeMap<Cloud, BTreeMap<&str, Vec<&MenuCluster>>> = BTreeMap::new();
    for c in &state.clusters {
        groups
            .entry(c.cloud)
            .or_default()
            .entry(c.environment.as_str())
            .or_default()
            .push(c);
    }
    for (cloud, environments) in groups {
        let children = environments
            .into_iter()
            .map(|(environment, mut clusters)| {
                clusters.sort_by(|a, b| a.name.cmp(&b.name));
                MenuNode::Submenu {
                    label: environment.to_string(),
                    children: clusters
                        .into_iter()
                        .map(|c| MenuNode::Check {
                            action: MenuAction::Cluster(c.id.clone()),
                            label: cluster_label(c),
                            checked: c.tunnel == Some(TunnelState::Up),
                        })
                        .collect(),
                }
            })
            .collect();
        nodes.push(MenuNode::Submenu {
            label: cloud_label(cloud).to_string(),
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
        action: Some(MenuAction::Quit),
        label: "Quit".into(),
        enabled: true,
    });
    nodes
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
        .filter(|c| {
            matches!(
                c.tunnel,
                Some(TunnelState::Down | TunnelState::LoginRequired)
            )
        })
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
    fn favourites_first_then_clouds_then_status_and_actions() {
        let nodes = model(&demo());
        assert_eq!(
            labels(&nodes),
            [
                "[ ] analytics-prod",
                "[x] prod-eu",
                "---",
                "AWS >",
                "Google Cloud >",
                "On-premises >",
                "---",
                "2 tunnels up, 1 failing",
                "Disconnect all",
                "Refresh discovery",
                "---",
                "Open window",
                "Quit",
            ]
        );
    }

    #[test]
    fn groups_hold_environments_holding_every_cluster_checked_when_up() {
        let nodes = model(&demo());
        let aws = submenu(&nodes, "AWS");
        assert_eq!(labels(aws), ["prod >", "staging >"]);
        // A favourite is also listed in its group.
        assert_eq!(labels(submenu(aws, "prod")), ["[x] prod-eu", "[x] prod-us"]);
        assert_eq!(labels(submenu(aws, "staging")), ["[ ] staging-eu"]);
        let gcp = submenu(&nodes, "Google Cloud");
        assert_eq!(labels(gcp), ["dev >", "prod >"]);
        assert_eq!(labels(submenu(gcp, "dev")), ["[ ] sandbox (down)"]);
        let onprem = submenu(&nodes, "On-premises");
        assert_eq!(
            labels(submenu(onprem, "prod")),
            ["[ ] factory-dc1 (connecting…)"]
        );
        // The two entries of a favourite have distinct ids that both toggle it.
        let MenuNode::Check { action, .. } = &submenu(aws, "prod")[0] else {
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
    fn ids_round_trip() {
        for action in [
            MenuAction::Favourite(ClusterId("eks:1:eu-west-1:a".into())),
            MenuAction::Cluster(ClusterId("file:b".into())),
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
