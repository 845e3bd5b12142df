//! Desktop notifications: a tunnel dropped (with the reason) or came back, a login is required
//! or expiring, discovery finished with errors. Events are coalesced into bursts — one
//! notification per burst, never one per connection or per tunnel when a whole edge goes away —
//! by a pure [`Coalescer`]; [`Notifier`] feeds it from the shell's events and shows what it
//! yields with notify-rust, when the notifications setting is on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_tunnels::inventory::ClusterId;
use k8s_tunnels::tunnel::health::TunnelState;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::{DiscoveryPhase, LoginNotice, UiEvent};
use crate::shell::Shell;

/// The app name notifications carry.
pub const APP_NAME: &str = "k8s-tunnels";

/// The app's AppUserModelID on Windows: the bundle identifier (`tauri.conf.json`), which the
/// installer's shortcut carries too. Toasts name it so that Windows shows them as the app's;
/// without one, notify-rust sends them as PowerShell's.
pub const APP_USER_MODEL_ID: &str = "dev.k8s-tunnels.desktop";

/// Registers [`APP_USER_MODEL_ID`] for the current user (`HKCU\Software\Classes\AppUserModelId`,
/// display name [`APP_NAME`]), so that its toasts show even when the app runs without an
/// installer's shortcut (a portable copy, a development build). Idempotent.
#[cfg(windows)]
pub fn register_app_user_model_id() -> Result<(), String> {
    let key = windows_registry::CURRENT_USER
        .create(format!(
            r"Software\Classes\AppUserModelId\{APP_USER_MODEL_ID}"
        ))
        .map_err(|e| e.to_string())?;
    key.set_string("DisplayName", APP_NAME)
        .and_then(|()| key.set_u32("ShowInSettings", 1))
        .map_err(|e| e.to_string())
}

/// What the coalescer is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A tunnel's state (sent on every change; repeats are fine).
    Tunnel {
        /// Cluster id.
        cluster: ClusterId,
        /// Display name.
        name: String,
        /// State.
        state: TunnelState,
        /// Why, for down and login required.
        reason: Option<String>,
    },
    /// A tunnel was closed on purpose: no notification, forget it.
    Closed(ClusterId),
    /// A login notice.
    Login(LoginNotice),
    /// A discovery refresh finished; `errors` are `source: scope: message` lines.
    DiscoveryFinished {
        /// Error lines.
        errors: Vec<String>,
    },
}

/// One desktop notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Title.
    pub summary: String,
    /// Text.
    pub body: String,
    /// Shown as critical (a drop, a required login).
    pub critical: bool,
    /// The news this belongs to: a notice takes the place of the one before it in its slot.
    pub slot: Option<Slot>,
    /// What a click on it does, where the notification server supports actions.
    pub click: Option<Click>,
}

/// Kinds of news of which only the latest is shown: "3 tunnels back" takes the place of
/// "3 tunnels dropped" (which, critical, would otherwise stay on screen above it for good).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Tunnels dropped or back.
    Tunnels,
    /// A login required or running out.
    Login,
}

/// What a click on a notification does (its default action).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Click {
    /// Check every tunnel that is down now ("Retry now").
    RetryDown,
    /// Sign in for every tunnel that waits for a login.
    SignIn,
}

#[derive(Clone, Debug)]
struct Burst {
    started: Instant,
    last: Instant,
    /// Each tunnel's state before the burst (None: not seen before).
    before: BTreeMap<ClusterId, Option<TunnelState>>,
    logins: Vec<LoginNotice>,
    discovery_errors: Option<Vec<String>>,
}

/// Groups events into bursts: a burst ends when nothing happened for `quiet`, or `max` after it
/// began; then it yields at most one notification per kind (dropped, back, login, discovery),
/// from each tunnel's state before the burst to its state after. A tunnel that dropped and came
/// back within a burst yields nothing.
#[derive(Debug)]
pub struct Coalescer {
    quiet: Duration,
    max: Duration,
    /// Known tunnels: name, state, reason.
    tunnels: BTreeMap<ClusterId, (String, TunnelState, Option<String>)>,
    /// Each tunnel's last state other than connecting: what a burst compares with, so that a
    /// tunnel checked again while down (connecting, then down) is no new drop.
    settled: BTreeMap<ClusterId, TunnelState>,
    burst: Option<Burst>,
}

impl Coalescer {
    /// Bursts end after `quiet` without events, or `max` after they began.
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max,
            tunnels: BTreeMap::new(),
            settled: BTreeMap::new(),
            burst: None,
        }
    }

    fn burst(&mut self, now: Instant) -> &mut Burst {
        let burst = self.burst.get_or_insert_with(|| Burst {
            started: now,
            last: now,
            before: BTreeMap::new(),
            logins: Vec::new(),
            discovery_errors: None,
        });
        burst.last = now;
        burst
    }

    /// Takes one event.
    pub fn push(&mut self, now: Instant, input: Input) {
        match input {
            Input::Tunnel {
                cluster,
                name,
                state,
                reason,
            } => {
                let previous = self.tunnels.get(&cluster).map(|(_, s, _)| *s);
                if previous == Some(state) {
                    // Same state, maybe a new reason: keep the latest reason, no new burst.
                    self.tunnels.insert(cluster, (name, state, reason));
                    return;
                }
                let settled = self.settled.get(&cluster).copied();
                // Connecting and checking are on the way to a state, not news of their own.
                if !matches!(state, TunnelState::Connecting | TunnelState::Checking) {
                    self.settled.insert(cluster.clone(), state);
                }
                self.burst(now)
                    .before
                    .entry(cluster.clone())
                    .or_insert(settled);
                self.tunnels.insert(cluster, (name, state, reason));
            }
            Input::Closed(cluster) => {
                self.tunnels.remove(&cluster);
                self.settled.remove(&cluster);
                if let Some(burst) = &mut self.burst {
                    burst.before.remove(&cluster);
                }
            }
            Input::Login(notice) => {
                let burst = self.burst(now);
                if !burst.logins.contains(&notice) {
                    burst.logins.push(notice);
                }
            }
            Input::DiscoveryFinished { errors } => {
                if !errors.is_empty() {
                    self.burst(now)
                        .discovery_errors
                        .get_or_insert_with(Vec::new)
                        .extend(errors);
                }
            }
        }
    }

    /// When the current burst ends, if one is open. A burst with a tunnel still checking waits
    /// for its verdict (within `max`): a stalled edge takes the tunnel whose probe was midway
    /// down a probe later than the others, and it belongs to the same news.
    pub fn deadline(&self) -> Option<Instant> {
        let burst = self.burst.as_ref()?;
        let checking = burst.before.keys().any(|cluster| {
            matches!(
                self.tunnels.get(cluster),
                Some((_, TunnelState::Checking, _))
            )
        });
        let limit = burst.started + self.max;
        Some(if checking {
            limit
        } else {
            (burst.last + self.quiet).min(limit)
        })
    }

    /// The notifications of the burst if it has ended by `now`; nothing otherwise.
    pub fn flush(&mut self, now: Instant) -> Vec<Notice> {
        match self.deadline() {
            Some(deadline) if deadline <= now => {}
            _ => return Vec::new(),
        }
        let Some(burst) = self.burst.take() else {
            return Vec::new();
        };
        // (name, reason, whether the edge is up and only the API does not answer)
        let mut dropped: Vec<(String, Option<String>, bool)> = Vec::new();
        let mut back: Vec<String> = Vec::new();
        let mut login_required: Vec<String> = Vec::new();
        for (cluster, before) in &burst.before {
            let Some((name, after, reason)) = self.tunnels.get(cluster) else {
                continue;
            };
            let was_failing = before.is_some_and(TunnelState::is_troubled);
            match after {
                // Down after "API not answering" (or the other way) is news: what fails changed.
                failing if failing.is_failing() && *before != Some(*failing) => dropped.push((
                    name.clone(),
                    reason.clone(),
                    *failing == TunnelState::ApiDown,
                )),
                TunnelState::LoginRequired if *before != Some(TunnelState::LoginRequired) => {
                    login_required.push(name.clone())
                }
                TunnelState::Up if was_failing => back.push(name.clone()),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if !dropped.is_empty() {
            // "API not answering" (the edge is up, the cluster is not) is told apart from a
            // tunnel that dropped: the fix is elsewhere.
            let apis = dropped.iter().filter(|(_, _, api)| *api).count();
            let summary = match (dropped.as_slice(), apis) {
                ([(name, _, false)], _) => format!("Tunnel dropped: {name}"),
                ([(name, _, true)], _) => format!("API not answering: {name}"),
                (many, 0) => format!("{} tunnels dropped", many.len()),
                (many, apis) if apis == many.len() => {
                    format!("{} clusters' APIs not answering", many.len())
                }
                (many, _) => format!("{} tunnels failing", many.len()),
            };
            let mixed = apis > 0 && apis < dropped.len();
            let body = dropped
                .iter()
                .map(|(name, reason, api)| {
                    let what = match (mixed, api) {
                        (true, true) => " (API not answering)",
                        (true, false) => " (dropped)",
                        _ => "",
                    };
                    match reason {
                        Some(reason) => format!("{name}{what}: {reason}"),
                        None => format!("{name}{what}"),
                    }
                })
                .collect::<Vec<_>>();
            out.push(Notice {
                summary,
                body: lines(&body),
                critical: true,
                slot: Some(Slot::Tunnels),
                click: Some(Click::RetryDown),
            });
        }
        if !back.is_empty() {
            let summary = match back.as_slice() {
                [name] => format!("Tunnel back: {name}"),
                many => format!("{} tunnels back", many.len()),
            };
            out.push(Notice {
                summary,
                body: format!(
                    "{} {} up again.",
                    back.join(", "),
                    if back.len() == 1 { "is" } else { "are" }
                ),
                critical: false,
                slot: Some(Slot::Tunnels),
                click: None,
            });
        }
        let mut required: Vec<String> = login_required;
        let mut expiring: Vec<(String, u64)> = Vec::new();
        let mut unopened: Vec<(String, String, String)> = Vec::new();
        for notice in &burst.logins {
            match notice {
                LoginNotice::Required { application } => required.push(application.clone()),
                LoginNotice::Expiring {
                    application,
                    seconds_left,
                } => expiring.push((application.clone(), *seconds_left)),
                // A browser tab that opened is its own notice; one that could not open must
                // reach the user some way even with the window closed.
                LoginNotice::SignIn {
                    application,
                    url,
                    browser_opened: false,
                    code,
                } => unopened.push((application.clone(), url.clone(), code.clone())),
                LoginNotice::SignIn { .. } => {}
            }
        }
        for (application, url, code) in unopened {
            out.push(Notice {
                summary: "Sign in to Access".into(),
                body: format!(
                    "No browser could be opened. To reach {application}, open {url} and allow it if the page shows the code {code}."
                ),
                critical: true,
                slot: None,
                click: None,
            });
        }
        if !required.is_empty() {
            out.push(Notice {
                summary: "Login required".into(),
                body: format!(
                    "Log in again to reach {}. Click to sign in.",
                    required.join(", ")
                ),
                critical: true,
                slot: Some(Slot::Login),
                click: Some(Click::SignIn),
            });
        } else if !expiring.is_empty() {
            let soonest = expiring.iter().map(|(_, s)| *s).min().unwrap_or(0);
            let apps: Vec<&str> = expiring.iter().map(|(a, _)| a.as_str()).collect();
            out.push(Notice {
                summary: "Login expiring".into(),
                body: format!(
                    "Your login to {} ends in {}.",
                    apps.join(", "),
                    humantime::format_duration(Duration::from_secs(soonest))
                ),
                critical: false,
                slot: Some(Slot::Login),
                click: None,
            });
        }
        if let Some(errors) = burst.discovery_errors {
            out.push(Notice {
                summary: "Discovery finished with errors".into(),
                body: lines(&errors),
                critical: false,
                slot: None,
                click: None,
            });
        }
        out
    }
}

/// At most five lines, then "and N more".
fn lines(items: &[String]) -> String {
    const MAX: usize = 5;
    let mut text = items
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if items.len() > MAX {
        text.push_str(&format!("\n… and {} more", items.len() - MAX));
    }
    text
}

/// What the coalescer hears of a UI event.
pub fn input_of(event: &UiEvent) -> Option<Input> {
    match event {
        UiEvent::Tunnel(status) => Some(Input::Tunnel {
            cluster: status.cluster.clone(),
            name: status.name.clone(),
            state: status.state,
            reason: status.reason.clone(),
        }),
        UiEvent::TunnelClosed(closed) => Some(Input::Closed(closed.cluster.clone())),
        UiEvent::Login(notice) => Some(Input::Login(notice.clone())),
        UiEvent::Discovery(DiscoveryPhase::Finished { outcomes }) => {
            Some(Input::DiscoveryFinished {
                errors: outcomes
                    .iter()
                    .flat_map(|o| o.errors.iter().map(move |e| format!("{}: {e}", o.source)))
                    .collect(),
            })
        }
        _ => None,
    }
}

/// Where shown notifications' clicks go: the notification's id, sent by the thread that waits
/// for the server to report the click.
type ClickSender = tokio::sync::mpsc::UnboundedSender<u32>;

/// Shows a notification on the desktop's notification server (D-Bus on Linux) in place of the
/// one with id `replaces`, if any. Returns its id where the server has ids (freedesktop).
/// Where the server reports clicks (freedesktop), a notice with a [`Click`] gets a default
/// action, and a thread waits for it (one per id: a replacement keeps its id) and sends the id
/// to `clicks`.
#[cfg(not(all(target_os = "macos", not(feature = "macos-notifications"))))]
pub async fn show(
    notice: &Notice,
    replaces: Option<u32>,
    clicks: &Clicks,
) -> Result<Option<u32>, String> {
    let notice = notice.clone();
    let clicks = clicks.clone();
    tokio::task::spawn_blocking(move || {
        let mut n = notify_rust::Notification::new();
        n.appname(APP_NAME)
            .summary(&notice.summary)
            .body(&notice.body)
            .icon("network-vpn");
        #[cfg(windows)]
        n.app_id(APP_USER_MODEL_ID);
        #[cfg(all(unix, not(target_os = "macos")))]
        {
            n.urgency(if notice.critical {
                notify_rust::Urgency::Critical
            } else {
                notify_rust::Urgency::Normal
            });
            if let Some(id) = replaces {
                n.id(id);
            }
            if let Some(click) = notice.click {
                n.action("default", click.label());
            }
            let handle = n.show().map_err(|e| e.to_string())?;
            let id = handle.id();
            clicks.follow(id, notice.click, handle);
            Ok(Some(id))
        }
        #[cfg(not(all(unix, not(target_os = "macos"))))]
        {
            let _ = (replaces, clicks);
            n.show().map(|_| None).map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A macOS build without notify-rust (the `macos-notifications` feature off, as
/// `scripts/check-targets` lints it where Apple's SDK is missing) shows none, and says why.
#[cfg(all(target_os = "macos", not(feature = "macos-notifications")))]
pub async fn show(
    _notice: &Notice,
    _replaces: Option<u32>,
    _clicks: &Clicks,
) -> Result<Option<u32>, String> {
    Err("built without macOS notifications (the macos-notifications feature)".into())
}

impl Click {
    /// The default action's label, which some servers show as a button.
    pub fn label(self) -> &'static str {
        match self {
            Click::RetryDown => "Retry now",
            Click::SignIn => "Sign in",
        }
    }
}

/// The clicks of shown notifications: what a click on each id does now (a replacement changes
/// it), and which waiting thread speaks for each id.
#[derive(Clone, Default)]
pub struct Clicks {
    inner: Arc<std::sync::Mutex<ClicksInner>>,
    // Clicks are reported by freedesktop servers only; elsewhere nothing sends.
    #[cfg_attr(not(all(unix, not(target_os = "macos"))), allow(dead_code))]
    sender: Option<ClickSender>,
}

#[derive(Default)]
struct ClicksInner {
    what: std::collections::HashMap<u32, Click>,
    /// The newest waiting thread of each id (a generation). A replacement gets a thread of its
    /// own: the replaced one's may end any moment (a server that says "closed" on replacing).
    #[cfg_attr(not(all(unix, not(target_os = "macos"))), allow(dead_code))]
    waiting: std::collections::HashMap<u32, u64>,
    #[cfg_attr(not(all(unix, not(target_os = "macos"))), allow(dead_code))]
    generation: u64,
}

impl Clicks {
    fn new(sender: ClickSender) -> Self {
        Self {
            inner: Arc::default(),
            sender: Some(sender),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClicksInner> {
        k8s_tunnels::sync::lock(&self.inner)
    }

    /// What a click on `id` does now.
    fn of(&self, id: u32) -> Option<Click> {
        self.lock().what.get(&id).copied()
    }

    /// Records what a click on `id` does, and waits for clicks on it; only the newest thread of
    /// an id reports them.
    #[cfg(all(unix, not(target_os = "macos")))]
    fn follow(&self, id: u32, click: Option<Click>, handle: notify_rust::NotificationHandle) {
        let mut inner = self.lock();
        match click {
            Some(click) => inner.what.insert(id, click),
            None => inner.what.remove(&id),
        };
        let Some(sender) = self.sender.clone() else {
            return;
        };
        if click.is_none() {
            return;
        }
        inner.generation += 1;
        let generation = inner.generation;
        inner.waiting.insert(id, generation);
        drop(inner);
        let this = self.clone();
        let newest = move |this: &Clicks| this.lock().waiting.get(&id) == Some(&generation);
        // Blocks until the notification is clicked or closed.
        let spawned = std::thread::Builder::new()
            .name("notification-click".into())
            .spawn(move || {
                handle.wait_for_action(|action| {
                    if action == "default" && newest(&this) {
                        let _ = sender.send(id);
                    }
                });
                let mut inner = this.lock();
                if inner.waiting.get(&id) == Some(&generation) {
                    inner.waiting.remove(&id);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot wait for notification clicks");
        }
    }
}

/// Follows the shell's events and shows one notification per burst. Dropping it stops it.
pub struct Notifier {
    stop: CancellationToken,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Notifier {
    /// Bursts end after 1.5 s without events, or 5 s after they began.
    pub fn start(shell: &Arc<Shell>) -> Self {
        Self::with_timing(shell, Duration::from_millis(1500), Duration::from_secs(5))
    }

    /// With explicit burst timing.
    pub fn with_timing(shell: &Arc<Shell>, quiet: Duration, max: Duration) -> Self {
        #[cfg(windows)]
        if let Err(e) = register_app_user_model_id() {
            tracing::warn!(error = %e, "cannot register the app's AppUserModelID: toasts may not show");
        }
        let stop = CancellationToken::new();
        let events = shell.subscribe();
        tokio::spawn(run(
            Arc::downgrade(shell),
            events,
            Coalescer::new(quiet, max),
            stop.clone(),
        ));
        Self { stop }
    }
}

async fn run(
    shell: std::sync::Weak<Shell>,
    mut events: broadcast::Receiver<UiEvent>,
    mut coalescer: Coalescer,
    stop: CancellationToken,
) {
    let (sender, mut clicked) = tokio::sync::mpsc::unbounded_channel();
    let clicks = Clicks::new(sender);
    // The id of the notification now standing in each slot.
    let mut slots: std::collections::HashMap<Slot, u32> = std::collections::HashMap::new();
    loop {
        let deadline = coalescer.deadline();
        let wait = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(id) = clicked.recv() => {
                let Some(shell) = shell.upgrade() else { return };
                match clicks.of(id) {
                    Some(Click::RetryDown) => shell.retry_down(),
                    Some(Click::SignIn) => {
                        tokio::spawn(async move { shell.sign_in_required().await });
                    }
                    None => {}
                }
            },
            event = events.recv() => match event {
                Ok(event) => {
                    if let Some(input) = input_of(&event) {
                        coalescer.push(Instant::now(), input);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = wait => {
                let notices = coalescer.flush(Instant::now());
                let Some(shell) = shell.upgrade() else { return };
                let enabled = shell.settings().map(|s| s.notifications).unwrap_or(true);
                drop(shell);
                if !enabled {
                    continue;
                }
                for notice in notices {
                    let replaces = notice.slot.and_then(|slot| slots.get(&slot).copied());
                    match show(&notice, replaces, &clicks).await {
                        Ok(id) => {
                            if let (Some(slot), Some(id)) = (notice.slot, id) {
                                slots.insert(slot, id);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, summary = %notice.summary, "cannot show a notification");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(windows)]
    #[test]
    fn the_app_user_model_id_is_registered_for_the_user() {
        register_app_user_model_id().expect("register");
        register_app_user_model_id().expect("again: idempotent");
        let key = windows_registry::CURRENT_USER
            .open(format!(
                r"Software\Classes\AppUserModelId\{APP_USER_MODEL_ID}"
            ))
            .expect("the AppUserModelId key");
        assert_eq!(
            key.get_string("DisplayName").expect("DisplayName"),
            APP_NAME
        );
    }

    #[test]
    fn toasts_carry_the_bundle_identifier_as_app_user_model_id() {
        let conf: serde_json::Value =
            serde_json::from_str(include_str!("../../src-tauri/tauri.conf.json"))
                .expect("tauri.conf.json");
        assert_eq!(conf["identifier"], APP_USER_MODEL_ID);
    }

    const QUIET: Duration = Duration::from_millis(1500);
    const MAX: Duration = Duration::from_secs(5);

    fn tunnel(name: &str, state: TunnelState, reason: Option<&str>) -> Input {
        Input::Tunnel {
            cluster: ClusterId(format!("file:{name}")),
            name: name.into(),
            state,
            reason: reason.map(String::from),
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Three tunnels connected and up, the burst of their first connect flushed.
    fn three_up(t0: Instant) -> Coalescer {
        let mut c = Coalescer::new(QUIET, MAX);
        for name in ["a", "b", "c"] {
            c.push(t0, tunnel(name, TunnelState::Connecting, None));
            c.push(t0, tunnel(name, TunnelState::Up, None));
        }
        assert_eq!(c.flush(ms(t0, 2000)), [], "connecting is not news");
        c
    }

    #[test]
    fn an_edge_going_away_is_one_notification_naming_every_tunnel() {
        let t0 = Instant::now();
        let mut c = three_up(t0);
        c.push(
            ms(t0, 10_000),
            tunnel("a", TunnelState::Down, Some("edge unreachable")),
        );
        c.push(
            ms(t0, 10_100),
            tunnel("b", TunnelState::Down, Some("edge unreachable")),
        );
        // A new reason for a tunnel that is still down is not a new drop.
        c.push(
            ms(t0, 10_200),
            tunnel("a", TunnelState::Down, Some("connection refused")),
        );
        c.push(
            ms(t0, 10_300),
            tunnel("c", TunnelState::Down, Some("edge unreachable")),
        );
        assert_eq!(c.flush(ms(t0, 11_000)), [], "the burst is still going");
        assert_eq!(c.deadline(), Some(ms(t0, 11_800)));
        let notices = c.flush(ms(t0, 11_800));
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].summary, "3 tunnels dropped");
        assert_eq!(
            notices[0].body,
            "a: connection refused\nb: edge unreachable\nc: edge unreachable"
        );
        assert!(notices[0].critical);
        assert_eq!(c.deadline(), None);

        c.push(ms(t0, 20_000), tunnel("a", TunnelState::Up, None));
        c.push(ms(t0, 20_100), tunnel("b", TunnelState::Up, None));
        c.push(ms(t0, 20_200), tunnel("c", TunnelState::Up, None));
        let notices = c.flush(ms(t0, 22_000));
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].summary, "3 tunnels back");
        assert_eq!(notices[0].body, "a, b, c are up again.");
    }

    #[test]
    fn a_single_drop_names_the_tunnel_and_reason() {
        let t0 = Instant::now();
        let mut c = three_up(t0);
        c.push(
            ms(t0, 5000),
            tunnel("b", TunnelState::Down, Some("gateway gone")),
        );
        let n = c.flush(ms(t0, 7000));
        assert_eq!(n[0].summary, "Tunnel dropped: b");
        assert_eq!(n[0].body, "b: gateway gone");
    }

    #[test]
    fn an_api_not_answering_is_told_apart_from_a_dropped_tunnel() {
        let t0 = Instant::now();
        let mut c = three_up(t0);
        c.push(
            ms(t0, 5000),
            tunnel("b", TunnelState::ApiDown, Some("HTTP 502")),
        );
        let n = c.flush(ms(t0, 7000));
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].summary, "API not answering: b");
        assert_eq!(n[0].body, "b: HTTP 502");
        assert_eq!(n[0].click, Some(Click::RetryDown));
        // Then the edge goes too: what fails changed, and that is news.
        c.push(
            ms(t0, 8000),
            tunnel("b", TunnelState::Down, Some("edge gone")),
        );
        assert_eq!(c.flush(ms(t0, 10_000))[0].summary, "Tunnel dropped: b");
        c.push(ms(t0, 11_000), tunnel("b", TunnelState::Up, None));
        assert_eq!(c.flush(ms(t0, 13_000))[0].summary, "Tunnel back: b");

        c.push(ms(t0, 20_000), tunnel("a", TunnelState::ApiDown, Some("x")));
        c.push(ms(t0, 20_100), tunnel("b", TunnelState::ApiDown, Some("y")));
        assert_eq!(
            c.flush(ms(t0, 22_000))[0].summary,
            "2 clusters' APIs not answering"
        );
        let mut c = three_up(t0);
        c.push(ms(t0, 5000), tunnel("a", TunnelState::ApiDown, Some("x")));
        c.push(ms(t0, 5100), tunnel("c", TunnelState::Down, Some("z")));
        let n = c.flush(ms(t0, 7000));
        assert_eq!(n[0].summary, "2 tunnels failing", "{n:?}");
        assert_eq!(n[0].body, "a (API not answering): x\nc (dropped): z");
    }

    #[test]
    fn a_burst_waits_for_a_checking_tunnels_verdict() {
        let t0 = Instant::now();
        let mut c = three_up(t0);
        c.push(
            ms(t0, 1000),
            tunnel("a", TunnelState::Checking, Some("slow")),
        );
        c.push(ms(t0, 1100), tunnel("b", TunnelState::Down, Some("gone")));
        assert_eq!(c.deadline(), Some(ms(t0, 6000)), "up to max while a checks");
        assert_eq!(c.flush(ms(t0, 3000)), []);
        c.push(ms(t0, 3500), tunnel("a", TunnelState::Down, Some("gone")));
        assert_eq!(c.deadline(), Some(ms(t0, 5000)), "quiet again once decided");
        let n = c.flush(ms(t0, 5000));
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].summary, "2 tunnels dropped");
    }

    #[test]
    fn a_flap_within_a_burst_is_silent_and_closing_is_never_news() {
        let t0 = Instant::now();
        let mut c = three_up(t0);
        c.push(ms(t0, 5000), tunnel("a", TunnelState::Down, Some("blip")));
        c.push(ms(t0, 5400), tunnel("a", TunnelState::Up, None));
        assert_eq!(c.flush(ms(t0, 7000)), []);
        c.push(ms(t0, 8000), tunnel("b", TunnelState::Down, Some("x")));
        c.push(ms(t0, 8100), Input::Closed(ClusterId("file:b".into())));
        assert_eq!(c.flush(ms(t0, 10_000)), []);
    }

    #[test]
    fn a_tunnel_checked_again_while_down_is_no_new_drop() {
        let t0 = Instant::now();
        let mut c = three_up(t0);
        c.push(ms(t0, 100), tunnel("a", TunnelState::Down, Some("gone")));
        assert_eq!(c.flush(ms(t0, 10_000)).len(), 1, "the drop");
        // Retried: connecting for longer than a burst, then down again.
        c.push(ms(t0, 20_000), tunnel("a", TunnelState::Connecting, None));
        assert_eq!(c.flush(ms(t0, 30_000)), []);
        c.push(ms(t0, 40_000), tunnel("a", TunnelState::Down, Some("gone")));
        assert_eq!(c.flush(ms(t0, 50_000)), [], "still down is no news");
        c.push(ms(t0, 60_000), tunnel("a", TunnelState::Up, None));
        let back = c.flush(ms(t0, 70_000));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].summary, "Tunnel back: a");
        assert_eq!(
            back[0].slot,
            Some(Slot::Tunnels),
            "it takes the drop's place"
        );
    }

    #[test]
    fn an_endless_storm_still_yields_one_notification_per_max_window() {
        let t0 = Instant::now();
        let mut c = three_up(t0);
        let mut shown = Vec::new();
        // One tunnel flapping every second for 12 s: events never stop for `quiet`.
        for i in 0..12u64 {
            let state = if i % 2 == 0 {
                TunnelState::Down
            } else {
                TunnelState::Up
            };
            c.push(ms(t0, 10_000 + i * 1000), tunnel("a", state, Some("flaky")));
            shown.extend(c.flush(ms(t0, 10_000 + i * 1000 + 1)));
        }
        shown.extend(c.flush(ms(t0, 30_000)));
        assert!(shown.len() <= 3, "{shown:?}");
    }

    #[test]
    fn logins_and_discovery_errors() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(QUIET, MAX);
        c.push(
            t0,
            Input::Login(LoginNotice::Expiring {
                application: "a.example".into(),
                seconds_left: 300,
            }),
        );
        c.push(
            t0,
            Input::Login(LoginNotice::Expiring {
                application: "a.example".into(),
                seconds_left: 300,
            }),
        );
        let n = c.flush(ms(t0, 2000));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].summary, "Login expiring");
        assert!(n[0].body.contains("5m"), "{}", n[0].body);

        // A sign-in in a browser tab is not news; one that could not open a browser carries
        // the link.
        for browser_opened in [true, false] {
            c.push(
                ms(t0, 3000),
                Input::Login(LoginNotice::SignIn {
                    application: "b.example".into(),
                    url: "https://b.example/cdn-cgi/access/cli?token=pub".into(),
                    browser_opened,
                    code: "AbCd-EfGh-IjKl-MnOp".into(),
                }),
            );
        }
        let n = c.flush(ms(t0, 6000));
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].summary, "Sign in to Access");
        assert!(
            n[0].body
                .contains("https://b.example/cdn-cgi/access/cli?token=pub")
                && n[0].body.contains("AbCd-EfGh-IjKl-MnOp"),
            "{}",
            n[0].body
        );

        c.push(t0, Input::DiscoveryFinished { errors: vec![] });
        assert_eq!(c.deadline(), None, "a clean discovery is not news");
        let errors: Vec<String> = (0..7).map(|i| format!("eks: scope{i}: denied")).collect();
        c.push(ms(t0, 3000), Input::DiscoveryFinished { errors });
        let n = c.flush(ms(t0, 5000));
        assert_eq!(n[0].summary, "Discovery finished with errors");
        assert!(n[0].body.ends_with("… and 2 more"), "{}", n[0].body);

        c.push(ms(t0, 6000), tunnel("x", TunnelState::Up, None));
        c.push(
            ms(t0, 6000),
            tunnel("x", TunnelState::LoginRequired, Some("302")),
        );
        let n = c.flush(ms(t0, 8000));
        assert_eq!(n[0].summary, "Login required");
        assert!(n[0].body.contains('x'));
    }
}
