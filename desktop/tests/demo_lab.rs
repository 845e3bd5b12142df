//! With nothing configured (no cloud source, no inventory), the app runs on the built-in demo
//! lab: about eight clusters across three clouds and three environments, which connect.

mod support;

use std::collections::BTreeSet;

use k8s_tunnels::app::AppOptions;
use k8s_tunnels::dirs::AppDirs;
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::tunnel::health::TunnelState;
use support::{quick_schedule, wait_for};

#[test]
fn an_unconfigured_app_runs_on_the_demo_lab() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let home = AppDirs::at(&tmp.path().join("home"));
    let options = AppOptions {
        kubeconfig: Some(tmp.path().join("kubeconfig")),
        ..AppOptions::default()
    };
    let keychain = Keychain::disabled("k8s-tunnels-test", "tests keep secrets in files");
    let shell = rt
        .block_on(k8s_tunnels_desktop::open_shell(
            home.clone(),
            options.clone(),
            keychain,
            quick_schedule(),
        ))
        .expect("open the shell");

    let rows = shell.clusters().expect("clusters");
    assert_eq!(rows.len(), 8, "{rows:?}");
    let clouds: BTreeSet<String> = rows.iter().map(|r| r.cloud.to_string()).collect();
    let environments: BTreeSet<&str> = rows.iter().map(|r| r.environment.as_str()).collect();
    assert_eq!(clouds.len(), 3, "{clouds:?}");
    assert_eq!(environments, BTreeSet::from(["dev", "prod", "staging"]));
    let menu = shell.menu_state();
    assert_eq!(menu.clusters.len(), 8);

    // The window can say so, and where the user's own clusters would go: the inventory file
    // of the config folder (not the lab's), config.yaml not written yet, the kubeconfig chosen.
    let about = shell.about();
    assert!(about.demo_lab, "{about:?}");
    assert_eq!(about.inventory_file, home.config.join("inventory.yaml"));
    assert_eq!(about.config_file, home.config.join("config.yaml"));
    assert!(!about.config_exists);
    assert_eq!(about.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(about.kubeconfig_files, [tmp.path().join("kubeconfig")]);
    assert_eq!(
        about.keychain_unavailable.as_deref(),
        Some("tests keep secrets in files")
    );
    // Each row carries the command "Copy kubectl command" copies, quoted for a shell.
    assert_eq!(
        rows[0].kubectl,
        format!("kubectl --context '{}' get namespaces", rows[0].context)
    );

    // Every origin mode of the demo connects.
    for row in &rows {
        rt.block_on(shell.connect(&row.id.0)).expect("connect");
    }
    wait_for("every demo tunnel up", || {
        let status = shell.engine().status();
        (status.len() == 8 && status.iter().all(|s| s.state == TunnelState::Up)).then_some(())
    });
    rt.block_on(shell.shutdown());
    drop(shell);

    // Once an inventory exists, the lab is not started.
    std::fs::write(home.default_inventory(), "clusters: []\n").expect("inventory");
    let keychain = Keychain::disabled("k8s-tunnels-test", "tests keep secrets in files");
    let shell = rt
        .block_on(k8s_tunnels_desktop::open_shell(
            home,
            options,
            keychain,
            quick_schedule(),
        ))
        .expect("open the shell");
    assert!(shell.clusters().expect("clusters").is_empty());
    assert!(shell.with_lab(|_| ()).is_none());
}
