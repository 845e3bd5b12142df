//! The desktop app's core, without Tauri: the app facade, the engine, the catalog as the
//! window and the tray see it, the activity log, and one stream of typed UI events that the
//! window, the tray and the notifier all follow. Commands are one-line adapters over it.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_tunnels::app::{App, AppError, SourceInfo};
use k8s_tunnels::discovery::catalog::Entry;
use k8s_tunnels::discovery::{Progress, ProgressSink};
use k8s_tunnels::engine::{ConnectOptions, Engine, EngineError, TunnelStatus};
use k8s_tunnels::inventory::{Cloud, ClusterId};
use k8s_tunnels::keychain::KeychainStatus;
use k8s_tunnels::lab::Lab;
use k8s_tunnels::listing::{self, Order, Row};
use k8s_tunnels::state::{AppState, Settings};
use k8s_tunnels::tunnel::health::TunnelState;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::{
    Activity, DiscoveryPhase, FigureThrottle, Level, SourceOutcome, UiEvent, from_engine,
};
use crate::ipc::{ErrorCode, IpcError, WindowCommands};
use crate::menu::{MenuCluster, MenuState};
use k8s_tunnels::sync::lock;

/// How long closing one tunnel may take.
const DISCONNECT_LIMIT: Duration = Duration::from_secs(5);
/// The activity log keeps this many lines.
const ACTIVITY_LINES: usize = 200;

/// One cluster of the catalog, with its tunnel when one is open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct ClusterRow {
    /// Cluster id.
    pub id: ClusterId,
    /// Display name.
    pub name: String,
    /// Cloud.
    pub cloud: Cloud,
    /// Environment.
    pub environment: String,
    /// Where its environment goes in every list: its place among the catalog's environments in
    /// the library's order ([`k8s_tunnels::inventory::compare_environments`]), which the window
    /// follows rather than sorting names itself.
    pub environment_order: u32,
    /// Region or project.
    pub region: Option<String>,
    /// Source that found it.
    pub source: String,
    /// Why it may be out of date.
    pub stale: Option<String>,
    /// Pinned at the top.
    pub favourite: bool,
    /// The kubectl context that reaches it.
    pub context: String,
    /// What "Copy kubectl command" copies ([`kubectl_line`]): in the row, so that the window
    /// writes the clipboard inside the click itself, which a webview only allows there.
    pub kubectl: String,
    /// Its open tunnel.
    pub tunnel: Option<TunnelStatus>,
}

type AutostartHook = Box<dyn Fn(bool) -> Result<(), String> + Send + Sync>;

/// The desktop app's state, shared by commands, the tray and the notifier.
pub struct Shell {
    app: App,
    engine: Engine,
    /// The demo lab, when the app runs on it; dropping it stops the lab.
    lab: Mutex<Option<Lab>>,
    catalog: Mutex<Arc<Vec<Entry>>>,
    activity: Mutex<VecDeque<Activity>>,
    refreshing: AtomicBool,
    /// Windows that show tunnel figures; with none, figures are not sent at all.
    figure_watchers: AtomicUsize,
    events: broadcast::Sender<UiEvent>,
    autostart: Mutex<Option<AutostartHook>>,
    run: RunInfo,
    stop: CancellationToken,
}

/// How the app runs, beyond its configuration: what a first run explains in the window.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Whether sign-ins survive a restart.
    pub keychain: KeychainStatus,
    /// The inventory file the user edits. On the demo lab the app reads the lab's own
    /// inventory instead; this is where the user's clusters would go.
    pub inventory_file: PathBuf,
}

/// Where the app's files are and how it runs, for the window (`about`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct AboutInfo {
    /// The version the app was built as (the workspace's; `k8s-tunnels --version` says the same).
    pub version: String,
    /// config.yaml: discovery sources and Access settings (it may not exist yet).
    pub config_file: PathBuf,
    /// Whether it exists.
    pub config_exists: bool,
    /// The inventory file of clusters listed by hand ([`RunInfo::inventory_file`]).
    pub inventory_file: PathBuf,
    /// The kubeconfig files the app writes its entries into; empty if kubectl's own setting
    /// (`KUBECONFIG`, the home folder) cannot be read.
    pub kubeconfig_files: Vec<PathBuf>,
    /// Nothing is configured: the clusters are the built-in demo lab's.
    pub demo_lab: bool,
    /// Why sign-ins last only until the app quits (no usable keychain); `None` when kept.
    pub keychain_unavailable: Option<String>,
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shell {
    /// Builds the shell over an app and its engine, loads the catalog and starts following the
    /// engine's events. Must run inside a tokio runtime.
    pub fn start(app: App, engine: Engine, lab: Option<Lab>, run: RunInfo) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        let shell = Arc::new(Self {
            app,
            engine,
            lab: Mutex::new(lab),
            catalog: Mutex::new(Arc::new(Vec::new())),
            activity: Mutex::new(VecDeque::new()),
            refreshing: AtomicBool::new(false),
            figure_watchers: AtomicUsize::new(0),
            events,
            autostart: Mutex::new(None),
            run,
            stop: CancellationToken::new(),
        });
        if let Err(e) = shell.reload_catalog() {
            shell.log(Level::Error, None, error_text(&e));
        }
        tokio::spawn(pump(Arc::downgrade(&shell), shell.stop.clone()));
        shell
    }

    /// Every UI event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<UiEvent> {
        self.events.subscribe()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The app facade.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Runs `f` on the demo lab, when the app runs on one.
    pub fn with_lab<R>(&self, f: impl FnOnce(&mut Lab) -> R) -> Option<R> {
        lock(&self.lab).as_mut().map(f)
    }

    /// Sets what applies the start-at-login setting (see `autostart`).
    pub fn set_autostart_hook(&self, hook: AutostartHook) {
        *lock(&self.autostart) = Some(hook);
    }

    fn publish(&self, event: UiEvent) {
        // No receiver (no window, tests) is fine.
        let _ = self.events.send(event);
    }

    fn log(&self, level: Level, cluster: Option<String>, message: impl Into<String>) {
        self.record(Activity::now(level, cluster, message));
    }

    fn record(&self, line: Activity) {
        {
            let mut log = lock(&self.activity);
            if log.len() == ACTIVITY_LINES {
                log.pop_front();
            }
            log.push_back(line.clone());
        }
        self.publish(UiEvent::Activity(line));
    }

    /// Re-reads the inventory and the discovery cache.
    pub fn reload_catalog(&self) -> Result<(), IpcError> {
        let entries = self.app.catalog().map_err(IpcError::from_app)?;
        *lock(&self.catalog) = Arc::new(entries);
        Ok(())
    }

    fn catalog(&self) -> Arc<Vec<Entry>> {
        lock(&self.catalog).clone()
    }

    fn entry(&self, id: &str) -> Result<Entry, IpcError> {
        self.catalog()
            .iter()
            .find(|e| e.cluster.id.0 == id)
            .cloned()
            .ok_or_else(|| IpcError::new(ErrorCode::NotFound, format!("no cluster with id {id:?}")))
    }

    /// The persisted app state (favourites, remembered ports) the listings show.
    fn app_state(&self) -> Result<AppState, AppError> {
        self.app.state().load().map_err(AppError::State)
    }

    /// The catalog in the library's listing, with the engine's kubeconfig prefix (the one its
    /// entries are written with until the next start).
    fn listing<'a>(&self, catalog: &'a [Entry], state: &AppState, order: Order) -> Vec<Row<'a>> {
        listing::rows(catalog, state, self.engine.kubeconfig_prefix(), order)
    }

    /// Every cluster with its tunnel, in the library's order with favourites first.
    pub fn clusters(&self) -> Result<Vec<ClusterRow>, IpcError> {
        let state = self.app_state().map_err(IpcError::from_app)?;
        let catalog = self.catalog();
        Ok(self
            .listing(&catalog, &state, Order::FavouritesFirst)
            .into_iter()
            .map(|row| {
                let cluster = row.cluster();
                ClusterRow {
                    id: cluster.id.clone(),
                    name: cluster.name.clone(),
                    cloud: cluster.cloud,
                    environment: cluster.environment.clone(),
                    environment_order: row.environment_order,
                    region: cluster.region.clone(),
                    source: row.source().to_string(),
                    stale: row.stale().map(str::to_string),
                    favourite: row.favourite,
                    kubectl: kubectl_line(&row.context),
                    tunnel: self.engine.status_of(&cluster.id),
                    context: row.context,
                }
            })
            .collect())
    }

    /// What the tray menu shows: the catalog in the library's order, which the menu groups.
    pub fn menu_state(&self) -> MenuState {
        let state = self.app_state().unwrap_or_else(|e| {
            tracing::warn!(error = %error_text(&e), "cannot read favourites");
            AppState::default()
        });
        let catalog = self.catalog();
        MenuState {
            clusters: self
                .listing(&catalog, &state, Order::Catalog)
                .into_iter()
                .map(|row| {
                    let cluster = row.cluster();
                    let status = self.engine.status_of(&cluster.id);
                    MenuCluster {
                        id: cluster.id.clone(),
                        name: cluster.name.clone(),
                        cloud: cluster.cloud,
                        environment: cluster.environment.clone(),
                        favourite: row.favourite,
                        tunnel: status.as_ref().map(|s| s.state),
                        api: status.as_ref().and_then(TunnelStatus::api_summary),
                    }
                })
                .collect(),
            refreshing: self.refreshing.load(Ordering::SeqCst),
        }
    }

    /// Opens a cluster's tunnel (switching kubectl's context when the settings say so).
    pub async fn connect(&self, id: &str) -> Result<TunnelStatus, IpcError> {
        let entry = self.entry(id)?;
        let settings = self.app.settings().map_err(IpcError::from_app)?;
        let options = ConnectOptions {
            use_context: settings.switch_context_on_connect,
        };
        let status = self
            .engine
            .connect(&entry.cluster, options)
            .await
            .map_err(IpcError::from_engine)
            .inspect_err(|e| {
                self.log(Level::Error, Some(entry.cluster.name.clone()), &e.message)
            })?;
        let cluster = entry.cluster.id.clone();
        self.remember_open(move |open| {
            open.insert(cluster);
        })
        .await;
        Ok(status)
    }

    /// Records a change of the tunnels the user has on, for the next start. A failure to save
    /// is logged: the tunnel itself is fine.
    async fn remember_open(&self, change: impl FnOnce(&mut BTreeSet<ClusterId>) + Send) {
        if let Err(e) = self
            .engine
            .update_state(move |state| change(&mut state.reconnect))
            .await
        {
            self.log(
                Level::Warning,
                None,
                format!(
                    "cannot remember the open tunnels for the next start: {}",
                    k8s_tunnels::error_chain(&e)
                ),
            );
        }
    }

    /// Reopens the tunnels that were on when the app last quit, if the user wants that
    /// ([`Settings::reconnect_at_start`]); clusters no longer in the catalog are left out.
    /// Returns how many it asked to open; each that fails is logged. Opening a tunnel binds its
    /// port, writes its kubeconfig entry and starts it, waiting for no edge, so the app does
    /// this before it takes any command: a command served meanwhile (a switch-off right at
    /// start) could be undone by a reopen that read the list before it.
    pub async fn reconnect_at_start(&self) -> usize {
        let state = match self.app.state().load() {
            Ok(state) => state,
            Err(e) => {
                self.log(
                    Level::Warning,
                    None,
                    format!(
                        "cannot read which tunnels to reopen: {}",
                        k8s_tunnels::error_chain(&e)
                    ),
                );
                return 0;
            }
        };
        if !state.settings.reconnect_at_start {
            return 0;
        }
        let known: Vec<ClusterId> = state
            .reconnect
            .into_iter()
            .filter(|id| self.entry(&id.0).is_ok())
            .collect();
        if !known.is_empty() {
            self.log(
                Level::Info,
                None,
                format!(
                    "reopening {} tunnel{} that {} on at the last quit",
                    known.len(),
                    if known.len() == 1 { "" } else { "s" },
                    if known.len() == 1 { "was" } else { "were" }
                ),
            );
        }
        // Errors are logged by connect.
        futures_util::future::join_all(known.iter().map(|id| self.connect(&id.0))).await;
        known.len()
    }

    /// Closes a cluster's tunnel; closing one that is not open is not an error.
    pub async fn disconnect(&self, id: &str) -> Result<(), IpcError> {
        let entry = self.entry(id)?;
        match self
            .engine
            .disconnect(&entry.cluster.id, DISCONNECT_LIMIT)
            .await
        {
            Ok(()) | Err(EngineError::NotConnected(_)) => {
                let cluster = entry.cluster.id.clone();
                self.remember_open(move |open| {
                    open.remove(&cluster);
                })
                .await;
                Ok(())
            }
            Err(e) => Err(IpcError::from_engine(e)),
        }
    }

    /// Opens the tunnel when it is closed, closes it otherwise (the tray's checkboxes).
    pub async fn toggle(&self, id: &ClusterId) -> Result<(), IpcError> {
        if self.engine.status_of(id).is_some() {
            self.disconnect(&id.0).await
        } else {
            self.connect(&id.0).await.map(|_| ())
        }
    }

    /// Checks one tunnel now instead of after its back-off (the tray's *Retry now*).
    pub fn retry(&self, id: &ClusterId) {
        if self.engine.retry(id) {
            let name = self.engine.status_of(id).map(|s| s.name);
            self.log(Level::Info, name, "retrying now");
        }
    }

    /// Checks every tunnel that is down or whose API does not answer now (a click on a
    /// "tunnels dropped" or "API not answering" notification).
    pub fn retry_down(&self) {
        for status in self.engine.status() {
            if status.state.is_failing() {
                self.retry(&status.cluster);
            }
        }
    }

    /// Signs in for every tunnel that waits for a login (a click on a "Login required"
    /// notification); the browser login opens as for a connect. Failures go to the log.
    pub async fn sign_in_required(&self) {
        for status in self.engine.status() {
            if status.state != TunnelState::LoginRequired {
                continue;
            }
            self.log(Level::Info, Some(status.name.clone()), "signing in");
            if let Err(e) = self.engine.sign_in(&status.cluster).await {
                self.log(
                    Level::Warning,
                    Some(status.name.clone()),
                    format!("sign-in failed: {}", k8s_tunnels::error_chain(&e)),
                );
            }
        }
    }

    /// Closes every tunnel.
    pub async fn disconnect_all(&self) {
        self.engine.shutdown(DISCONNECT_LIMIT).await;
        self.remember_open(BTreeSet::clear).await;
    }

    /// Pins or unpins a cluster.
    pub async fn set_favourite(&self, id: &str, favourite: bool) -> Result<(), IpcError> {
        let entry = self.entry(id)?;
        let cluster = entry.cluster.id.clone();
        self.engine
            .update_state(move |state| {
                if favourite {
                    state.favourites.insert(cluster);
                } else {
                    state.favourites.remove(&cluster);
                }
            })
            .await
            .map_err(IpcError::from_engine)?;
        self.publish(UiEvent::ClustersChanged);
        Ok(())
    }

    /// Makes the cluster's context kubectl's current context.
    pub async fn use_context(&self, id: &str) -> Result<String, IpcError> {
        let entry = self.entry(id)?;
        let context = self
            .engine
            .use_context(&entry.cluster)
            .await
            .map_err(IpcError::from_engine)?;
        self.log(
            Level::Info,
            Some(entry.cluster.name.clone()),
            format!("kubectl context switched to {context}"),
        );
        Ok(context)
    }

    /// The cluster's [`kubectl_line`].
    pub fn kubectl_command(&self, id: &str) -> Result<String, IpcError> {
        let entry = self.entry(id)?;
        Ok(kubectl_line(&self.engine.context_name(&entry.cluster)))
    }

    /// Runs discovery now, with progress as `discovery` events; one run at a time.
    pub async fn refresh_discovery(&self) -> Result<Vec<SourceOutcome>, IpcError> {
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return Err(IpcError::new(
                ErrorCode::Discovery,
                "discovery is already running",
            ));
        }
        // Announce "refreshing" (the tray shows it) before the sources start.
        self.publish(UiEvent::Discovery(DiscoveryPhase::Running {
            source: String::new(),
            done: 0,
            total: 0,
        }));
        let sender = self.events.clone();
        let progress: ProgressSink = Arc::new(move |p: Progress| {
            let _ = sender.send(UiEvent::Discovery(DiscoveryPhase::Running {
                source: p.source,
                done: p.done,
                total: p.total,
            }));
        });
        let result = self.app.discover(&[], progress).await;
        self.refreshing.store(false, Ordering::SeqCst);
        let outcomes: Vec<SourceOutcome> = match result {
            Ok((_, reports)) => reports.iter().map(SourceOutcome::from_report).collect(),
            Err(e) => {
                let err = IpcError::from_app(e);
                self.log(
                    Level::Error,
                    None,
                    format!("discovery failed: {}", err.message),
                );
                self.publish(UiEvent::Discovery(DiscoveryPhase::Finished {
                    outcomes: Vec::new(),
                }));
                return Err(err);
            }
        };
        if let Err(e) = self.reload_catalog() {
            self.log(Level::Error, None, e.message);
        }
        let errors: usize = outcomes.iter().map(|o| o.errors.len()).sum();
        let found: usize = outcomes.iter().map(|o| o.clusters).sum();
        if errors > 0 {
            self.log(
                Level::Warning,
                None,
                format!("discovery finished: {found} cluster(s), {errors} error(s)"),
            );
        } else {
            self.log(
                Level::Info,
                None,
                format!("discovery finished: {found} cluster(s)"),
            );
        }
        self.publish(UiEvent::Discovery(DiscoveryPhase::Finished {
            outcomes: outcomes.clone(),
        }));
        self.publish(UiEvent::ClustersChanged);
        Ok(outcomes)
    }

    /// Whether a discovery refresh runs.
    pub fn refreshing(&self) -> bool {
        self.refreshing.load(Ordering::SeqCst)
    }

    /// The settings.
    pub fn settings(&self) -> Result<Settings, IpcError> {
        self.app.settings().map_err(IpcError::from_app)
    }

    /// Validates and saves the settings; returns them as saved. The kubeconfig file and prefix
    /// apply to tunnels opened after the next start (open tunnels keep their entries).
    pub async fn save_settings(&self, settings: Settings) -> Result<Settings, IpcError> {
        validate_settings(&settings)?;
        let new = settings.clone();
        let old = self
            .engine
            .update_state(move |state| std::mem::replace(&mut state.settings, new))
            .await
            .map_err(IpcError::from_engine)?;
        if old.start_at_login != settings.start_at_login
            && let Some(hook) = lock(&self.autostart).as_ref()
            && let Err(e) = hook(settings.start_at_login)
        {
            self.log(
                Level::Error,
                None,
                format!("cannot change start at login: {e}"),
            );
        }
        if old.kubeconfig_prefix != settings.kubeconfig_prefix
            || old.kubeconfig_path != settings.kubeconfig_path
        {
            self.log(
                Level::Info,
                None,
                "kubeconfig settings saved; they apply from the next start of the app",
            );
        }
        Ok(settings)
    }

    /// The discovery sources, for the settings page.
    pub fn sources(&self) -> Vec<SourceInfo> {
        self.app.source_infos()
    }

    /// Where the app's files are and how it runs.
    pub fn about(&self) -> AboutInfo {
        let config_file = self.app.config_path().to_path_buf();
        let kubeconfig_files = self
            .app
            .settings()
            .and_then(|settings| self.app.kubeconfig(&settings))
            .map(|k| k.paths().to_vec())
            .unwrap_or_default();
        AboutInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_exists: config_file.exists(),
            config_file,
            inventory_file: self.run.inventory_file.clone(),
            kubeconfig_files,
            demo_lab: lock(&self.lab).is_some(),
            keychain_unavailable: match &self.run.keychain {
                KeychainStatus::Durable => None,
                KeychainStatus::Unavailable { reason } => Some(reason.clone()),
            },
        }
    }

    /// Starts sending the figures (connections, bytes) of open tunnels once a second while they
    /// change, until the returned guard is dropped. Only a window shows them, so the idle tray
    /// process does no figure work.
    pub fn watch_figures(self: &Arc<Self>) -> FigureWatch {
        self.figure_watchers.fetch_add(1, Ordering::Relaxed);
        FigureWatch {
            shell: Arc::clone(self),
        }
    }

    /// The most recent activity, newest last.
    pub fn activity(&self) -> Vec<Activity> {
        lock(&self.activity).iter().cloned().collect()
    }

    /// Closes every tunnel (Quit) and stops the lab.
    pub async fn shutdown(&self) {
        self.engine.shutdown(DISCONNECT_LIMIT).await;
        self.stop.cancel();
        let lab = lock(&self.lab).take();
        if let Some(mut lab) = lab {
            lab.stop_gateway().await;
        }
    }
}

/// The window's commands (declared in `ipc/commands.rs`), over the methods above, which the tray
/// and the tests call directly. `Shell::name(self, …)` is the inherent method, not this trait's.
impl WindowCommands for Shell {
    async fn clusters(&self) -> Result<Vec<ClusterRow>, IpcError> {
        Shell::clusters(self)
    }

    async fn connect(&self, id: String) -> Result<TunnelStatus, IpcError> {
        Shell::connect(self, &id).await
    }

    async fn disconnect(&self, id: String) -> Result<(), IpcError> {
        Shell::disconnect(self, &id).await
    }

    async fn disconnect_all(&self) -> Result<(), IpcError> {
        Shell::disconnect_all(self).await;
        Ok(())
    }

    async fn set_favourite(&self, id: String, favourite: bool) -> Result<(), IpcError> {
        Shell::set_favourite(self, &id, favourite).await
    }

    async fn use_context(&self, id: String) -> Result<String, IpcError> {
        Shell::use_context(self, &id).await
    }

    async fn kubectl_command(&self, id: String) -> Result<String, IpcError> {
        Shell::kubectl_command(self, &id)
    }

    async fn refresh_discovery(&self) -> Result<Vec<SourceOutcome>, IpcError> {
        Shell::refresh_discovery(self).await
    }

    async fn settings(&self) -> Result<Settings, IpcError> {
        Shell::settings(self)
    }

    async fn save_settings(&self, settings: Settings) -> Result<Settings, IpcError> {
        Shell::save_settings(self, settings).await
    }

    async fn sources(&self) -> Result<Vec<SourceInfo>, IpcError> {
        Ok(Shell::sources(self))
    }

    async fn about(&self) -> Result<AboutInfo, IpcError> {
        Ok(Shell::about(self))
    }

    async fn activity(&self) -> Result<Vec<Activity>, IpcError> {
        Ok(Shell::activity(self))
    }
}

/// A window's interest in tunnel figures; see [`Shell::watch_figures`].
pub struct FigureWatch {
    shell: Arc<Shell>,
}

impl Drop for FigureWatch {
    fn drop(&mut self) {
        self.shell.figure_watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

fn validate_settings(settings: &Settings) -> Result<(), IpcError> {
    let prefix = &settings.kubeconfig_prefix;
    if prefix.is_empty()
        || prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\'' || c == '"')
    {
        return Err(IpcError::new(
            ErrorCode::Invalid,
            format!(
                "kubeconfig prefix {prefix:?} must be non-empty, without spaces or quotes (e.g. k8s-tunnels/)"
            ),
        ));
    }
    if let Some(path) = &settings.kubeconfig_path
        && !path.is_absolute()
    {
        return Err(IpcError::new(
            ErrorCode::Invalid,
            format!(
                "kubeconfig file {} must be an absolute path",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// `kubectl --context '<context>' get namespaces`, quoted for a POSIX shell: the command that
/// shows a cluster is reached through its tunnel.
pub fn kubectl_line(context: &str) -> String {
    format!("kubectl --context {} get namespaces", shell_quote(context))
}

/// Quotes a word for a POSIX shell: single quotes, an embedded `'` as `'\''`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Follows the engine: maps its events to UI events (with activity lines), and once a second
/// sends the figures of tunnels whose figures changed.
async fn pump(shell: std::sync::Weak<Shell>, stop: CancellationToken) {
    let Some(mut events) = shell.upgrade().map(|s| s.engine.subscribe()) else {
        return;
    };
    let mut throttle = FigureThrottle::new(Duration::from_secs(1));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => {
                let Some(shell) = shell.upgrade() else { return };
                let event = match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "UI fell behind the engine's events");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for ui in from_engine(&event, &shell.engine) {
                    match &ui {
                        UiEvent::Tunnel(status) => throttle.sent(status, Instant::now()),
                        UiEvent::TunnelClosed(closed) => throttle.forget(&closed.cluster),
                        _ => {}
                    }
                    match ui {
                        UiEvent::Activity(line) => shell.record(line),
                        other => shell.publish(other),
                    }
                }
            }
            _ = tick.tick() => {
                let Some(shell) = shell.upgrade() else { return };
                if shell.figure_watchers.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let now = Instant::now();
                for status in shell.engine.status() {
                    if throttle.due(&status, now) {
                        shell.publish(UiEvent::Tunnel(status));
                    }
                }
            }
        }
    }
}

fn error_text(e: &dyn std::error::Error) -> String {
    k8s_tunnels::error_chain(e)
}

impl IpcError {
    /// The IPC error for an app facade error.
    pub fn from_app(e: AppError) -> Self {
        let code = match &e {
            AppError::UnknownCluster { .. } => ErrorCode::NotFound,
            AppError::Config(_) | AppError::Inventory { .. } => ErrorCode::Invalid,
            AppError::Cache(_) => ErrorCode::Discovery,
            AppError::Kubeconfig(_) => ErrorCode::Kubeconfig,
            AppError::Dirs(_) | AppError::State(_) => ErrorCode::State,
        };
        Self::new(code, error_text(&e))
    }

    /// The IPC error for an engine error.
    pub fn from_engine(e: EngineError) -> Self {
        let code = match &e {
            EngineError::NotConnected(_) => ErrorCode::NotFound,
            EngineError::Kubeconfig(_) => ErrorCode::Kubeconfig,
            EngineError::State(_) => ErrorCode::State,
            EngineError::NoFreePort { .. }
            | EngineError::Bind { .. }
            | EngineError::Edge { .. } => ErrorCode::Tunnel,
            EngineError::Internal(_) => ErrorCode::Internal,
        };
        Self::new(code, error_text(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_names() {
        assert_eq!(shell_quote("k8s-tunnels/a"), "'k8s-tunnels/a'");
        assert_eq!(shell_quote("a'b; rm -rf ~"), r"'a'\''b; rm -rf ~'");
    }

    #[test]
    fn settings_are_validated() {
        let ok = Settings::default();
        assert!(validate_settings(&ok).is_ok());
        let mut bad = ok.clone();
        bad.kubeconfig_prefix = "a b".into();
        assert_eq!(
            validate_settings(&bad).unwrap_err().code,
            ErrorCode::Invalid
        );
        let mut bad = ok;
        bad.kubeconfig_path = Some("relative/config".into());
        assert_eq!(
            validate_settings(&bad).unwrap_err().code,
            ErrorCode::Invalid
        );
    }
}
