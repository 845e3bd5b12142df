//! The menu model as a `muda` menu, the menu `tray-icon` shows on every system (on Linux it
//! reads the menu as a snapshot and serves it as a dbusmenu): an actionable item's muda id is
//! its [`MenuAction::to_id`], so a click maps straight back to the action.

use muda::{CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu};

use crate::menu::{MenuAction, MenuNode};

/// Builds the menu for `nodes`.
pub fn build(nodes: &[MenuNode]) -> Result<Menu, muda::Error> {
    let menu = Menu::new();
    for node in nodes {
        menu.append(item(node)?.as_ref())?;
    }
    Ok(menu)
}

/// The action a click on an item built by [`build`] asks for; `None` for ids that are not
/// actions.
pub fn action_of(event: &MenuEvent) -> Option<MenuAction> {
    MenuAction::from_id(event.id().as_ref())
}

fn item(node: &MenuNode) -> Result<Box<dyn IsMenuItem>, muda::Error> {
    Ok(match node {
        MenuNode::Check {
            action,
            label,
            checked,
        } => Box::new(CheckMenuItem::with_id(
            action.to_id(),
            escape(label),
            true,
            *checked,
            None,
        )),
        MenuNode::Item {
            action: Some(action),
            label,
            enabled,
        } => Box::new(MenuItem::with_id(
            action.to_id(),
            escape(label),
            *enabled,
            None,
        )),
        // A line of text: muda gives it an id of its own, which is no action.
        MenuNode::Item {
            action: None,
            label,
            enabled,
        } => Box::new(MenuItem::new(escape(label), *enabled, None)),
        MenuNode::Submenu { label, children } => {
            let submenu = Submenu::new(escape(label), true);
            for child in children {
                submenu.append(item(child)?.as_ref())?;
            }
            Box::new(submenu)
        }
        MenuNode::Separator => Box::new(PredefinedMenuItem::separator()),
    })
}

/// muda labels take `&` as the access-key marker (on every system); a cluster's ampersands
/// are doubled to show as they are.
fn escape(label: &str) -> String {
    label.replace('&', "&&")
}

#[cfg(test)]
mod tests {
    use k8s_tunnels::inventory::{Cloud, ClusterId};
    use k8s_tunnels::tunnel::health::TunnelState;
    use muda::MenuItemKind;

    use super::*;
    use crate::menu::{MenuCluster, MenuState, model};

    fn state() -> MenuState {
        let cluster = |name: &str, cloud, favourite, tunnel| MenuCluster {
            id: ClusterId(format!("file:{name}")),
            name: name.into(),
            cloud,
            environment: "prod".into(),
            favourite,
            tunnel,
            api: None,
        };
        MenuState {
            clusters: vec![
                cluster("R&D", Cloud::Aws, true, Some(TunnelState::Up)),
                cluster("prod-us", Cloud::Aws, false, None),
                cluster("analytics", Cloud::Gcp, false, Some(TunnelState::Down)),
            ],
            refreshing: false,
        }
    }

    /// How the items read, as the menu tests of `menu.rs` write them, with the muda id of
    /// actionable ones.
    fn describe(items: &[MenuItemKind]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                MenuItemKind::Check(c) => format!(
                    "[{}] {} #{}",
                    if c.is_checked() { "x" } else { " " },
                    c.text(),
                    c.id().as_ref()
                ),
                MenuItemKind::MenuItem(i) if MenuAction::from_id(i.id().as_ref()).is_some() => {
                    format!(
                        "{}{} #{}",
                        i.text(),
                        if i.is_enabled() { "" } else { " (disabled)" },
                        i.id().as_ref()
                    )
                }
                MenuItemKind::MenuItem(i) => format!("{} (text)", i.text()),
                MenuItemKind::Submenu(s) => format!("{} >", s.text()),
                MenuItemKind::Predefined(_) => "---".into(),
                MenuItemKind::Icon(i) => format!("icon {}", i.text()),
            })
            .collect()
    }

    #[test]
    fn the_model_becomes_a_muda_menu_whose_ids_are_the_actions() {
        let menu = build(&model(&state())).expect("menu");
        let items = menu.items();
        let version = format!("{} (text)", crate::menu::VERSION_LINE);
        assert_eq!(
            describe(&items),
            [
                "[x] R&&D #fav:file:R&D",
                "---",
                "[x] analytics (down) #open:file:analytics",
                "    Retry analytics now #retry:file:analytics",
                "---",
                "AWS (1 up) >",
                "Google Cloud (1 failing) >",
                "---",
                "1 tunnel up, 1 failing (text)",
                "Disconnect all #disconnect_all",
                "Refresh discovery #refresh_discovery",
                "---",
                "Open window #open_window",
                version.as_str(),
                "Quit #quit",
            ]
        );
        let MenuItemKind::Submenu(aws) = &items[5] else {
            panic!("not a submenu")
        };
        let prod = aws.items();
        assert_eq!(describe(&prod), ["prod (1 up) >"]);
        let MenuItemKind::Submenu(prod) = &prod[0] else {
            panic!("not a submenu")
        };
        assert_eq!(
            describe(&prod.items()),
            [
                "[x] R&&D #cluster:file:R&D",
                "[ ] prod-us #cluster:file:prod-us"
            ]
        );
        let MenuItemKind::Submenu(gcp) = &items[6] else {
            panic!("not a submenu")
        };
        let MenuItemKind::Submenu(gcp_prod) = &gcp.items()[0] else {
            panic!("not a submenu")
        };
        assert_eq!(
            describe(&gcp_prod.items()),
            ["[x] analytics (down) #cluster:file:analytics"]
        );
    }

    #[test]
    fn a_click_maps_back_to_its_action_and_text_lines_to_none() {
        let menu = build(&model(&state())).expect("menu");
        let items = menu.items();
        let event = |item: &MenuItemKind| MenuEvent {
            id: item.id().clone(),
        };
        assert_eq!(
            action_of(&event(&items[0])),
            Some(MenuAction::Favourite(ClusterId("file:R&D".into())))
        );
        assert_eq!(
            action_of(&event(&items[3])),
            Some(MenuAction::Retry(ClusterId("file:analytics".into())))
        );
        assert_eq!(action_of(&event(&items[14])), Some(MenuAction::Quit));
        // The status line, the version line and the submenus are no actions.
        assert_eq!(action_of(&event(&items[8])), None);
        assert_eq!(action_of(&event(&items[13])), None);
        assert_eq!(action_of(&event(&items[5])), None);
    }
}
