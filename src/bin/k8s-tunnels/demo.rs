//! `demo`: the built-in lab — a gateway and fake Kubernetes API servers on loopback — with
//! tunnels to every lab cluster, so a newcomer can run kubectl through real tunnels at once.

use anyhow::Context as _;
use k8s_tunnels::lab::{Lab, LabConfig};

use crate::{Context, Failure};

pub async fn run(ctx: Context) -> Result<(), Failure> {
    let dir = ctx.dirs().cache.join("demo-lab");
    let lab = Lab::start(LabConfig::demo(&dir))
        .await
        .context("cannot start the demo lab")?;
    eprintln!(
        "Demo lab: gateway on {}, {} clusters; inventory {}",
        lab.gateway_addr(),
        lab.clusters().len(),
        lab.inventory_path().display()
    );
    let ctx = ctx.with_inventory(lab.inventory_path().to_path_buf());
    // Only the lab's clusters, whatever else the catalog holds.
    let clusters = ctx.inventory()?;
    if let Some(first) = clusters.first() {
        eprintln!(
            "Try: kubectl --context k8s-tunnels/{} get namespaces   (Ctrl-C stops the demo)",
            first.name
        );
    }
    let chosen: Vec<_> = clusters.iter().collect();
    let result = crate::connect::hold_open(&ctx, &chosen, false).await;
    drop(lab);
    result
}
