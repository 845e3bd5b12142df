//! `login`, `logout` and `auth status`: the Access login from the command line.

use anyhow::Context as _;
use k8s_tunnels::access::{AccessClient, AccessEvent, LoginStatus};
use k8s_tunnels::app::KEYCHAIN_SERVICE;
use k8s_tunnels::discovery::catalog::Entry;
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::secret::Secret;
use serde::Serialize;

use crate::{Context, Failure};

/// The Access login every command shares, warning when tokens cannot outlive the process.
fn client(ctx: &Context) -> AccessClient {
    let access = ctx.access_client(&Keychain::open(KEYCHAIN_SERVICE));
    if let Some(warning) = access.store().warning() {
        eprintln!("warning: {warning}");
    }
    access
}

/// `k8s-tunnels login <cluster>`.
pub async fn login(ctx: &Context, wanted: &str) -> Result<(), Failure> {
    let entries = ctx.catalog()?;
    let cluster = &Context::find(&entries, wanted)?.cluster;
    let access = client(ctx);
    if !access.manages(cluster) {
        eprintln!(
            "{}: uses a configured credential (token or service token); no login needed",
            cluster.name
        );
        return Ok(());
    }
    // The sign-in URL goes to the terminal, in case no browser opens.
    let mut events = access.subscribe();
    let show = |event: AccessEvent| {
        if let AccessEvent::SignInStarted {
            application,
            url,
            browser_opened,
            code,
        } = event
        {
            eprintln!(
                "{}",
                crate::connect::sign_in_text(&application, &url, browser_opened, &code)
            );
        }
    };
    let login = access.login(cluster);
    tokio::pin!(login);
    let status = loop {
        tokio::select! {
            status = &mut login => break status,
            Ok(event) = events.recv() => show(event),
        }
    };
    while let Ok(event) = events.try_recv() {
        show(event);
    }
    let status = status.with_context(|| format!("cannot log in to {}", cluster.name))?;
    println!(
        "Logged in to {} as {} (until {})",
        status.application,
        status.email.as_deref().unwrap_or("an unnamed user"),
        status.expires_at.as_deref().unwrap_or("unknown")
    );
    Ok(())
}

/// `k8s-tunnels logout [<cluster>]`: one application, or every one and the sessions.
pub async fn logout(ctx: &Context, wanted: Option<&str>) -> Result<(), Failure> {
    let entries = ctx.catalog()?;
    let access = client(ctx);
    let chosen: Vec<&Entry> = match wanted {
        Some(name) => vec![Context::find(&entries, name)?],
        None => entries.iter().collect(),
    };
    for entry in chosen {
        if access.manages(&entry.cluster) {
            access.logout(&entry.cluster, wanted.is_none()).await;
        }
    }
    match wanted {
        Some(name) => println!("Logged out of {name}."),
        None => println!("Logged out of every Access application."),
    }
    Ok(())
}

/// `k8s-tunnels auth service-token <cluster> --client-id ID` (secret on stdin) or `--remove`.
pub async fn service_token(
    ctx: &Context,
    wanted: &str,
    client_id: Option<&str>,
    remove: bool,
) -> Result<(), Failure> {
    let entries = ctx.catalog()?;
    let cluster = &Context::find(&entries, wanted)?.cluster;
    let access = client(ctx);
    if !access.manages(cluster) {
        eprintln!(
            "{}: its inventory entry or the environment already names a credential, which wins",
            cluster.name
        );
    }
    if remove {
        if access.remove_service_token(cluster).await {
            println!("Removed the service token of {}.", cluster.name);
        } else {
            println!("{} had no stored service token.", cluster.name);
        }
        return Ok(());
    }
    let client_id = client_id.unwrap_or_default();
    // Read from stdin, never from the command line, where other users' `ps` would see it.
    let mut secret = String::new();
    std::io::stdin()
        .read_line(&mut secret)
        .context("cannot read the client secret from standard input")?;
    let secret = Secret::new(secret.trim());
    access
        .set_service_token(cluster, client_id, &secret)
        .await
        .with_context(|| format!("cannot store the service token of {}", cluster.name))?;
    let place = if access.store().is_durable() {
        "the OS keychain"
    } else {
        "memory, for this process only"
    };
    println!(
        "Stored the service token {client_id} for {} in {place}.",
        cluster.name
    );
    Ok(())
}

#[derive(Serialize)]
struct StatusRow {
    cluster: String,
    logged_in: bool,
    #[serde(flatten)]
    login: Option<LoginStatus>,
}

#[derive(Serialize)]
struct StatusReport {
    /// `keychain` or `memory`.
    store: &'static str,
    logins: Vec<StatusRow>,
}

/// `k8s-tunnels auth status [--json]`: who is logged in where, until when. No network.
pub async fn status(ctx: &Context, json: bool) -> Result<(), Failure> {
    let entries = ctx.catalog()?;
    let access = client(ctx);
    let mut rows = Vec::new();
    for entry in &entries {
        if !access.manages(&entry.cluster) {
            continue;
        }
        let login = access.status(&entry.cluster).await;
        rows.push(StatusRow {
            cluster: entry.cluster.name.clone(),
            logged_in: login.as_ref().is_some_and(|l| l.valid),
            login,
        });
    }
    let report = StatusReport {
        store: if access.store().is_durable() {
            "keychain"
        } else {
            "memory"
        },
        logins: rows,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot write JSON")?
        );
        return Ok(());
    }
    if report.logins.is_empty() {
        println!("No cluster uses the Access login.");
    }
    for row in &report.logins {
        match &row.login {
            Some(l) => println!(
                "{}\t{}\t{}\t{} {}",
                row.cluster,
                l.application,
                l.email.as_deref().unwrap_or("-"),
                if l.valid { "expires" } else { "expired" },
                l.expires_at.as_deref().unwrap_or("-"),
            ),
            None => println!("{}\tnot logged in", row.cluster),
        }
    }
    Ok(())
}
