//! `connect` (foreground tunnels with a live status line) and `use`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context as _;
use k8s_tunnels::access::Interaction;
use k8s_tunnels::app::KEYCHAIN_SERVICE;
use k8s_tunnels::engine::{ConnectOptions, Engine, Event, TunnelStatus};
use k8s_tunnels::inventory::Cluster;
use k8s_tunnels::keychain::Keychain;
use k8s_tunnels::tunnel::health::{ProbeSchedule, TunnelState};

use crate::output::human_bytes;
use crate::runfiles::RunFile;
use crate::{Context, Failure};

/// How long a clean shutdown may take before the process exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Builds the engine the way every front end does: persisted ports, the kubeconfig in force,
/// the Access login.
pub fn engine(ctx: &Context) -> Result<Engine, Failure> {
    engine_and_settings(ctx).map(|(engine, _)| engine)
}

/// The engine and whether the user asked connect to switch kubectl's context.
fn engine_and_settings(ctx: &Context) -> Result<(Engine, bool), Failure> {
    let keychain = Keychain::open(KEYCHAIN_SERVICE);
    let (engine, settings) = ctx.engine(&keychain, ProbeSchedule::default())?;
    if let Some(warning) = engine.access().and_then(|a| a.store().warning()) {
        eprintln!("warning: {warning}");
    }
    Ok((engine, settings.switch_context_on_connect))
}

pub async fn use_context(ctx: &Context, wanted: &str) -> Result<(), Failure> {
    let entries = ctx.catalog()?;
    let cluster = &Context::find(&entries, wanted)?.cluster;
    let engine = engine(ctx)?;
    let context = engine
        .use_context(cluster)
        .await
        .map_err(anyhow::Error::new)?;
    println!("Switched to context \"{context}\".");
    Ok(())
}

pub async fn run(ctx: &Context, wanted: &[String], use_first: bool) -> Result<(), Failure> {
    let entries = ctx.catalog()?;
    let mut chosen: Vec<&Cluster> = Vec::new();
    for name in wanted {
        let cluster = &Context::find(&entries, name)?.cluster;
        if !chosen.iter().any(|c| c.id == cluster.id) {
            chosen.push(cluster);
        }
    }
    hold_open(ctx, &chosen, use_first).await
}

/// Opens tunnels to `chosen` and keeps them open, with a live status line, until Ctrl-C or
/// SIGTERM; then closes them cleanly.
pub async fn hold_open(ctx: &Context, chosen: &[&Cluster], use_first: bool) -> Result<(), Failure> {
    let (engine, switch_on_connect) = engine_and_settings(ctx)?;
    let use_first = use_first || switch_on_connect;
    let mut events = engine.subscribe();
    for (i, cluster) in chosen.iter().enumerate() {
        let options = ConnectOptions {
            use_context: use_first && i == 0,
        };
        let status = match engine.connect(cluster, options).await {
            Ok(status) => status,
            Err(e) => {
                engine.shutdown(SHUTDOWN_LIMIT).await;
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot connect {}", cluster.name))
                    .into());
            }
        };
        eprintln!(
            "{}: listening on 127.0.0.1:{} — kubectl --context {}",
            status.name, status.port, status.context
        );
        // A user-initiated connect may sign in at once rather than on kubectl's first
        // connection; one login per application however many tunnels share it.
        if let Some(access) = engine.access().filter(|a| a.manages(cluster)).cloned() {
            let cluster = (*cluster).clone();
            tokio::spawn(async move {
                if let Err(e) = access.credential(&cluster, Interaction::Explicit).await {
                    tracing::warn!(cluster = %cluster.name, error = %k8s_tunnels::error_chain(&e), "Access login failed");
                }
            });
        }
    }
    if use_first && let Some(first) = chosen.first() {
        eprintln!("Switched to context \"{}\".", engine.context_name(first));
    }

    let run_file = RunFile::create(ctx.dirs()).context("cannot write the status file")?;
    let _refresher = crate::discover::background_refresh(ctx);
    let mut live = LiveLine::new(std::io::stderr().is_terminal());
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let shutdown = k8s_tunnels::signals::shutdown_requested();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = events.recv() => {
                if let Ok(event) = event {
                    // State changes scroll above the live line, so they stay readable.
                    live.clear();
                    print_event(&event);
                    live.draw(&status_line(&engine.status()));
                }
            }
            _ = ticker.tick() => {
                let status = engine.status();
                if let Err(e) = run_file.write(&status) {
                    tracing::warn!(error = %e, "cannot update the status file");
                }
                live.draw(&status_line(&status));
            }
        }
    }
    live.clear();
    eprintln!("Disconnecting…");
    engine.shutdown(SHUTDOWN_LIMIT).await;
    drop(run_file);
    Ok(())
}

fn print_event(event: &Event) {
    match event {
        // "listening on …" already said so.
        Event::TunnelState {
            state: TunnelState::Connecting,
            ..
        } => {}
        Event::TunnelState {
            name,
            state,
            reason,
            ..
        } => match reason {
            Some(reason) => eprintln!("{name}: {state} ({reason})"),
            None => eprintln!("{name}: {state}"),
        },
        Event::TunnelClosed { name, .. } => eprintln!("{name}: closed"),
        Event::LoginExpiring {
            application,
            seconds_left,
        } => eprintln!(
            "{application}: Access login expires in {} — run `k8s-tunnels login` to renew it",
            humantime::format_duration(Duration::from_secs(*seconds_left))
        ),
        Event::LoginRequired { application } => {
            eprintln!("{application}: Access login required")
        }
        Event::SignInStarted {
            application,
            url,
            browser_opened,
            code,
        } => eprintln!("{}", sign_in_text(application, url, *browser_opened, code)),
    }
}

/// What a terminal shows when a browser login starts: where, and the code the page must show
/// (a page showing another code would hand the tokens to someone else's client).
pub fn sign_in_text(application: &str, url: &str, browser_opened: bool, code: &str) -> String {
    let confirm =
        format!("Allow it only if the page names {application} and shows the code {code}.");
    if browser_opened {
        format!(
            "{application}: a browser window should have opened to sign in to Access. If it did not, open this URL:\n{url}\n{confirm}"
        )
    } else {
        format!(
            "{application}: to sign in to Access, open this URL in a browser:\n{url}\n{confirm}"
        )
    }
}

/// The one line redrawn in place on a terminal; nothing when stderr is not a terminal.
struct LiveLine {
    enabled: bool,
    shown: bool,
}

impl LiveLine {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            shown: false,
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.shown = false;
        }
    }

    fn draw(&mut self, line: &str) {
        if !self.enabled {
            return;
        }
        // A line wider than the terminal would wrap and break the in-place redraw.
        let width = terminal_size::terminal_size_of(std::io::stderr())
            .map_or(80, |(w, _)| usize::from(w.0));
        eprint!("\r\x1b[2K{}", fit(line, width.saturating_sub(1)));
        let _ = std::io::stderr().flush();
        self.shown = true;
    }
}

fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Every tunnel in detail when there are one or two; a summary naming the troubled ones when
/// there are more.
fn status_line(status: &[TunnelStatus]) -> String {
    let mark = |state| match state {
        TunnelState::Up => "▲",
        TunnelState::Connecting | TunnelState::Checking => "…",
        TunnelState::Down | TunnelState::ApiDown => "▼",
        TunnelState::LoginRequired => "⚠",
    };
    if status.len() <= 2 {
        return status
            .iter()
            .map(|t| {
                let api = t
                    .api_summary()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default();
                format!(
                    "{} {} {}{api} :{} {} conn ↑{} ↓{}",
                    mark(t.state),
                    t.name,
                    t.state,
                    t.port,
                    t.open_connections,
                    human_bytes(t.bytes_up),
                    human_bytes(t.bytes_down)
                )
            })
            .collect::<Vec<_>>()
            .join("  |  ");
    }
    let mut parts = Vec::new();
    for state in [
        TunnelState::Up,
        TunnelState::Connecting,
        TunnelState::Checking,
        TunnelState::Down,
        TunnelState::ApiDown,
        TunnelState::LoginRequired,
    ] {
        let names: Vec<&str> = status
            .iter()
            .filter(|t| t.state == state)
            .map(|t| t.name.as_str())
            .collect();
        match (state, names.len()) {
            (_, 0) => {}
            (TunnelState::Up, n) => parts.push(format!("{} {n} up", mark(state))),
            (_, _) => parts.push(format!("{} {state}: {}", mark(state), names.join(", "))),
        }
    }
    let open: u64 = status.iter().map(|t| t.open_connections).sum();
    let up: u64 = status.iter().map(|t| t.bytes_up).sum();
    let down: u64 = status.iter().map(|t| t.bytes_down).sum();
    format!(
        "{}  · {open} conn ↑{} ↓{}",
        parts.join("  "),
        human_bytes(up),
        human_bytes(down)
    )
}
