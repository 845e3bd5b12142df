//! The engine: owns one [`TunnelHandle`] per connected cluster, writes the kubeconfig entries
//! that point kubectl at them, and publishes every state change as a typed [`Event`].
//!
//! Front ends (the CLI, the desktop shell) call its async methods and read its event stream;
//! the engine knows nothing about them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::inventory::{Cluster, ClusterId};
use crate::kubeconfig::{ClusterEntry, FilesStamp, Kubeconfig, KubeconfigError};
use crate::secret::Secret;
use crate::state::{AppState, StateError, StateStore, port_candidates};
use crate::sync::lock;
use crate::timestamp::rfc3339;
use crate::tunnel::carrier::{CarrierError, Edge};
use crate::tunnel::health::{HealthState, ProbeSchedule, TunnelState};
use crate::tunnel::keepalive::Keepalive;
use crate::tunnel::{TunnelHandle, TunnelSpec};

/// How many port candidates are tried before giving up.
const PORT_ATTEMPTS: usize = 64;
/// How often open tunnels' kubeconfig entries are re-asserted by default.
pub const KUBECONFIG_KEEPER_PERIOD: Duration = Duration::from_secs(15);
/// The keeper skips reading unchanged files at most this many ticks in a row.
const KUBECONFIG_KEEPER_FULL_EVERY: u32 = 8;

/// The SOCKS username every tunnel's listener asks for; the password is what is secret.
pub const SOCKS_USERNAME: &str = "k8s-tunnels";
/// Length of a tunnel's SOCKS secret.
const SOCKS_SECRET_LEN: usize = 32;

/// What a local client presents to one open tunnel's listener (RFC 1929). The secret is made
/// when the tunnel opens, lives only in this process and in the kubeconfig entry, and is
/// worthless once the tunnel closes: while a tunnel is down its entry holds no secret, so
/// whoever binds the freed port (another local user) collects nothing a running tunnel
/// accepts — not from the next kubectl, nor from a long-running client that still holds an
/// old entry.
#[derive(Clone, Debug)]
pub struct SocksLogin {
    /// Always [`SOCKS_USERNAME`].
    pub username: String,
    /// The tunnel's secret.
    pub password: Secret,
}

impl SocksLogin {
    fn fresh() -> Self {
        Self {
            username: SOCKS_USERNAME.to_string(),
            password: Secret::random(SOCKS_SECRET_LEN),
        }
    }
}

/// What the engine is built from.
pub struct EngineConfig {
    /// The kubeconfig files to keep up to date; `None` leaves kubeconfig alone.
    pub kubeconfig: Option<Kubeconfig>,
    /// Prefix of the kubeconfig entries the app owns, e.g. `k8s-tunnels/`.
    pub prefix: String,
    /// Where ports are persisted.
    pub state: StateStore,
    /// How often tunnels probe their edge.
    pub schedule: ProbeSchedule,
    /// How streams ping and notice a dead edge.
    pub keepalive: Keepalive,
    /// Warm connections to each tunnel's edge.
    pub warm: crate::tunnel::warm::WarmSettings,
    /// Watch for wake-ups and network changes, and check every tunnel at once after one
    /// (`None`: no watch, for tests).
    pub wake: Option<crate::wake::WakeSettings>,
    /// How often open tunnels' kubeconfig entries are re-asserted
    /// ([`KUBECONFIG_KEEPER_PERIOD`] by default). kubectl's own writers read the file before
    /// taking the lock and drop stanzas they did not see, so an entry written in that window
    /// can vanish; re-asserting writes nothing while the entries are intact.
    pub kubeconfig_refresh: Duration,
}

/// Options of one connect.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectOptions {
    /// Also make the cluster's context kubectl's current context.
    pub use_context: bool,
}

/// Something that happened, for front ends. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A tunnel changed state.
    TunnelState {
        /// Cluster id.
        cluster: ClusterId,
        /// Cluster display name.
        name: String,
        /// The new state.
        state: TunnelState,
        /// Why, for down and login required.
        reason: Option<String>,
    },
    /// A tunnel was closed (disconnect or shutdown).
    TunnelClosed {
        /// Cluster id.
        cluster: ClusterId,
        /// Cluster display name.
        name: String,
    },
    /// An Access login runs out soon and cannot be renewed silently beyond that.
    LoginExpiring {
        /// The Access application's hostname.
        application: String,
        /// Seconds left.
        seconds_left: u64,
    },
    /// An Access application needs the user to sign in again.
    LoginRequired {
        /// The Access application's hostname.
        application: String,
    },
    /// A browser login started: the user signs in at `url` (opened in a browser when
    /// `browser_opened`).
    SignInStarted {
        /// The Access application's hostname.
        application: String,
        /// Where to sign in (carries only a one-time public key).
        url: String,
        /// Whether a browser was opened at it.
        browser_opened: bool,
        /// The code of the login's key, which the sign-in page shows too.
        code: String,
    },
}

impl From<crate::access::AccessEvent> for Event {
    fn from(event: crate::access::AccessEvent) -> Self {
        use crate::access::AccessEvent;
        match event {
            AccessEvent::LoginExpiring {
                application,
                seconds_left,
            } => Event::LoginExpiring {
                application,
                seconds_left,
            },
            AccessEvent::LoginRequired { application } => Event::LoginRequired { application },
            AccessEvent::SignInStarted {
                application,
                url,
                browser_opened,
                code,
            } => Event::SignInStarted {
                application,
                url,
                browser_opened,
                code,
            },
        }
    }
}

/// The status of one open tunnel.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct TunnelStatus {
    /// Cluster id.
    pub cluster: ClusterId,
    /// Cluster display name.
    pub name: String,
    /// kubectl context that reaches it.
    pub context: String,
    /// State.
    pub state: TunnelState,
    /// Why, for down and login required.
    pub reason: Option<String>,
    /// Since when (RFC 3339).
    pub since: String,
    /// Local SOCKS5 port on 127.0.0.1.
    pub port: u16,
    /// Connections piping now.
    pub open_connections: u64,
    /// Connections carried since the tunnel opened.
    pub total_connections: u64,
    /// Local clients refused.
    pub refused_connections: u64,
    /// Bytes sent to the cluster.
    pub bytes_up: u64,
    /// Bytes received from the cluster.
    pub bytes_down: u64,
    /// Round trip of the last successful health probe to the edge, in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Round trip of the last `/version` the cluster's API server answered through the tunnel,
    /// in milliseconds; `None` while it does not answer.
    #[serde(default)]
    pub api_ms: Option<u64>,
    /// The Kubernetes version the API server reported (`v1.31.4`).
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    /// The last error a connection through this tunnel met, if any.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl TunnelStatus {
    /// What the cluster's API server said, as the CLI, the tray and the window show it:
    /// "v1.31.4 · 42 ms", "42 ms" when it would not tell its version, `None` while it does not
    /// answer or was not asked yet.
    pub fn api_summary(&self) -> Option<String> {
        let ms = self.api_ms?;
        Some(match &self.kubernetes_version {
            Some(version) => format!("{version} · {ms} ms"),
            None => format!("{ms} ms"),
        })
    }
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No local port could be bound.
    #[error("no free local port for {cluster} (tried {tried} ports)")]
    NoFreePort {
        /// Cluster name.
        cluster: String,
        /// Ports tried.
        tried: usize,
    },
    /// Binding the listener failed for another reason than the port being taken.
    #[error("cannot listen on 127.0.0.1:{port}")]
    Bind {
        /// The port asked for (0: any).
        port: u16,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The cluster's edge settings are unusable.
    #[error("cannot set up the tunnel to {cluster}")]
    Edge {
        /// Cluster name.
        cluster: String,
        /// What the edge, or the way to it, did.
        #[source]
        source: CarrierError,
    },
    /// The kubeconfig could not be updated.
    #[error("cannot update kubeconfig")]
    Kubeconfig(#[source] KubeconfigError),
    /// App state could not be read or written.
    #[error("cannot read or write app state")]
    State(#[source] StateError),
    /// The cluster has no open tunnel.
    #[error("{0} is not connected")]
    NotConnected(String),
    /// A blocking task panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The tunnel engine. Cheap to clone; all clones share the tunnels.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    /// The Access login shared by every tunnel, if any (see [`Engine::with_access`]).
    access: Option<crate::access::AccessClient>,
    tunnels: Mutex<BTreeMap<ClusterId, Open>>,
    events: broadcast::Sender<Event>,
    /// Serialises read-modify-write of the state file between concurrent connects.
    state_lock: tokio::sync::Mutex<()>,
    /// Serialises connects.
    connect_lock: tokio::sync::Mutex<()>,
    /// Serialises the keeper's re-assertion with closing tunnels' rewrites: a keeper that saw a
    /// tunnel open must not put its secret back after the close took it out.
    entry_writes: tokio::sync::Mutex<()>,
    /// Stops the kubeconfig keeper when the last engine clone is dropped.
    keeper: tokio_util::sync::CancellationToken,
    keeper_started: std::sync::Once,
    /// The wake-up and network watch, started with the first tunnel.
    wake: std::sync::OnceLock<crate::wake::WakeWatch>,
    /// kubectl's current context before this engine first switched it (`Some(None)`: there was
    /// none), put back when every tunnel closes if the context is still one of the app's.
    context_before: Mutex<Option<Option<String>>>,
    /// Gives memory back after connections of any tunnel close.
    reclaim: crate::memory::Reclaim,
    /// The tunnels' TLS configurations to their edges, shared with the Access client's.
    tls: crate::tls::ClientConfigs,
}

/// An open tunnel and the login its listener takes.
struct Open {
    handle: TunnelHandle,
    login: SocksLogin,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.keeper.cancel();
    }
}

impl Engine {
    /// Builds an engine; nothing is opened until [`Engine::connect`].
    pub fn new(config: EngineConfig) -> Self {
        Self::build(config, None)
    }

    /// An engine whose tunnels get credentials from `access` (the Access login) for clusters
    /// that configure none; its login events join the engine's events. Call inside a Tokio
    /// runtime.
    pub fn with_access(config: EngineConfig, access: crate::access::AccessClient) -> Self {
        let engine = Self::build(config, Some(access.clone()));
        let mut from_access = access.subscribe();
        let events = engine.inner.events.clone();
        let stop = engine.inner.keeper.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = from_access.recv() => event,
                };
                match event {
                    Ok(event) => {
                        let _ = events.send(event.into());
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        engine
    }

    fn build(config: EngineConfig, access: Option<crate::access::AccessClient>) -> Self {
        let (events, _) = broadcast::channel(256);
        let tls = access
            .as_ref()
            .map(|a| a.client_configs().clone())
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                config,
                access,
                tunnels: Mutex::new(BTreeMap::new()),
                events,
                state_lock: tokio::sync::Mutex::new(()),
                connect_lock: tokio::sync::Mutex::new(()),
                entry_writes: tokio::sync::Mutex::new(()),
                keeper: tokio_util::sync::CancellationToken::new(),
                keeper_started: std::sync::Once::new(),
                wake: std::sync::OnceLock::new(),
                context_before: Mutex::new(None),
                reclaim: crate::memory::Reclaim::default(),
                tls,
            }),
        }
    }

    /// The Access login, when the engine has one.
    pub fn access(&self) -> Option<&crate::access::AccessClient> {
        self.inner.access.as_ref()
    }

    /// A stream of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The kubectl context name of a cluster ([`crate::kubeconfig::context_name`] with this
    /// engine's prefix).
    pub fn context_name(&self, cluster: &Cluster) -> String {
        crate::kubeconfig::context_name(&self.inner.config.prefix, &cluster.name)
    }

    /// The prefix of the kubeconfig entries this engine writes: the one it was built with,
    /// which a saved change of the setting does not alter until the next start.
    pub fn kubeconfig_prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    /// Opens the cluster's tunnel (or returns the open one's status): binds its local port,
    /// writes its kubeconfig entries, starts listening and probing the edge.
    pub async fn connect(
        &self,
        cluster: &Cluster,
        options: ConnectOptions,
    ) -> Result<TunnelStatus, EngineError> {
        if let Some(status) = self.status_of(&cluster.id) {
            if options.use_context {
                self.use_context(cluster).await?;
            }
            return Ok(status);
        }
        // One connect at a time: two concurrent connects of one cluster (a double click) would
        // otherwise bind two ports and race on the kubeconfig entry.
        let _connecting = self.inner.connect_lock.lock().await;
        if let Some(status) = self.status_of(&cluster.id) {
            return Ok(status);
        }
        self.start_kubeconfig_keeper();
        self.start_wake_watch();
        // Validate the edge settings before anything is bound or written, so a cluster that
        // cannot work leaves no kubeconfig entry pointing at a dead port.
        let edge = Edge::for_cluster(cluster, &self.inner.tls)
            .map_err(|source| EngineError::Edge {
                cluster: cluster.name.clone(),
                source,
            })?
            .with_warm(self.inner.config.warm);
        let listener = self.bind(cluster).await?;
        let port = listener
            .local_addr()
            .map_err(|source| EngineError::Bind { port: 0, source })?
            .port();
        let login = SocksLogin::fresh();
        self.write_kubeconfig(cluster, port, Some(&login), options.use_context)
            .await?;

        let events = self.inner.events.clone();
        let (id, name) = (cluster.id.clone(), cluster.name.clone());
        let on_change = move |h: &HealthState| {
            let _ = events.send(Event::TunnelState {
                cluster: id.clone(),
                name: name.clone(),
                state: h.state,
                reason: h.reason.clone(),
            });
        };
        let spec = TunnelSpec {
            cluster: cluster.clone(),
            listener,
            username: login.username.clone(),
            password: login.password.clone(),
            schedule: self.inner.config.schedule,
            keepalive: self.inner.config.keepalive,
            access: self.inner.access.clone(),
            reclaim: self.inner.reclaim.clone(),
        };
        let handle = TunnelHandle::start(spec, edge, on_change);
        let mut tunnels = lock(&self.inner.tunnels);
        let open = tunnels
            .entry(cluster.id.clone())
            .or_insert(Open { handle, login });
        Ok(self.describe(&open.handle))
    }

    /// The login an open tunnel's listener takes (what its kubeconfig entry carries), for
    /// front ends that hand it to a client themselves.
    pub fn socks_login(&self, id: &ClusterId) -> Option<SocksLogin> {
        lock(&self.inner.tunnels).get(id).map(|o| o.login.clone())
    }

    /// Makes the cluster's context kubectl's current context, writing its entries first so
    /// that it works even before the tunnel is up.
    pub async fn use_context(&self, cluster: &Cluster) -> Result<String, EngineError> {
        let open = lock(&self.inner.tunnels)
            .get(&cluster.id)
            .map(|o| (o.handle.local_addr().port(), o.login.clone()));
        if let Some((port, login)) = open {
            self.write_kubeconfig(cluster, port, Some(&login), true)
                .await?;
            return Ok(self.context_name(cluster));
        }
        // Not open here. An entry that exists may be another process's open tunnel (a
        // `connect` beside the desktop app): switch to it as it is. Else write one without a
        // secret: kubectl is refused at once ("connection refused") until the tunnel is on,
        // and gives nothing to whoever holds the port meanwhile.
        let Some(kubeconfig) = self.inner.config.kubeconfig.clone() else {
            return Ok(self.context_name(cluster));
        };
        let port = self.planned_port(cluster).await?;
        let entry = self.kubeconfig_entry(cluster, port, None);
        tokio::task::spawn_blocking(move || match kubeconfig.use_context(&entry.name) {
            Err(KubeconfigError::ContextNotFound { .. }) => {
                kubeconfig.upsert(&entry)?;
                kubeconfig.use_context(&entry.name)
            }
            other => other,
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .map_err(EngineError::Kubeconfig)?;
        Ok(self.context_name(cluster))
    }

    /// Closes a cluster's tunnel, waiting up to `limit` for its connections to end. Its
    /// kubeconfig entry loses its secret first, so the freed port is never offered one.
    pub async fn disconnect(&self, id: &ClusterId, limit: Duration) -> Result<(), EngineError> {
        let open = lock(&self.inner.tunnels).remove(id);
        let Some(open) = open else {
            return Err(EngineError::NotConnected(id.to_string()));
        };
        let cluster = open.handle.cluster().clone();
        let port = open.handle.local_addr().port();
        self.close_entries(&[(cluster.clone(), port)]).await;
        open.handle.shutdown(limit).await;
        let _ = self.inner.events.send(Event::TunnelClosed {
            cluster: id.clone(),
            name: cluster.name,
        });
        Ok(())
    }

    /// Closes every tunnel, in parallel, within `limit` overall; their kubeconfig entries lose
    /// their secrets first, in one write.
    pub async fn shutdown(&self, limit: Duration) {
        let open: Vec<Open> = std::mem::take(&mut *lock(&self.inner.tunnels))
            .into_values()
            .collect();
        let entries: Vec<(Cluster, u16)> = open
            .iter()
            .map(|o| (o.handle.cluster().clone(), o.handle.local_addr().port()))
            .collect();
        self.close_entries(&entries).await;
        self.restore_context().await;
        let events = self.inner.events.clone();
        let all = open.into_iter().map(|o| {
            let events = events.clone();
            async move {
                let cluster = o.handle.cluster().clone();
                o.handle.shutdown(limit).await;
                let _ = events.send(Event::TunnelClosed {
                    cluster: cluster.id,
                    name: cluster.name,
                });
            }
        });
        let _ = tokio::time::timeout(limit, futures_util::future::join_all(all)).await;
    }

    /// Puts kubectl's current context back to what it was before this engine switched it,
    /// if it is still one of the app's (a context the user chose since is theirs to keep).
    /// Failures are reported, not fatal: closing goes on.
    async fn restore_context(&self) {
        let Some(kubeconfig) = self.inner.config.kubeconfig.clone() else {
            return;
        };
        let Some(Some(before)) = lock(&self.inner.context_before).take() else {
            return;
        };
        let prefix = self.inner.config.prefix.clone();
        let restored = tokio::task::spawn_blocking(move || {
            let ours = |current: Option<&str>| current.is_some_and(|c| c.starts_with(&prefix));
            kubeconfig
                .use_context_if(&before, ours)
                .map(|set| (set, before))
        })
        .await;
        match restored {
            Ok(Ok((true, before))) => {
                tracing::info!(context = %before, "kubectl's current context is back to what it was")
            }
            Ok(Ok((false, _))) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot put kubectl's current context back")
            }
            Err(e) => tracing::warn!(error = %e, "kubeconfig update task failed"),
        }
    }

    /// Rewrites the entries of tunnels that are closing without their secret. A kubeconfig
    /// that cannot be written is reported, not fatal: closing must go on, and the secret it
    /// still holds dies with the listener.
    async fn close_entries(&self, closing: &[(Cluster, u16)]) {
        let Some(kubeconfig) = self.inner.config.kubeconfig.clone() else {
            return;
        };
        if closing.is_empty() {
            return;
        }
        let entries: Vec<ClusterEntry> = closing
            .iter()
            .map(|(cluster, port)| self.kubeconfig_entry(cluster, *port, None))
            .collect();
        let _writing = self.inner.entry_writes.lock().await;
        let written = tokio::task::spawn_blocking(move || kubeconfig.upsert_all(&entries)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot take the secret out of closed tunnels' kubeconfig entries");
            }
            Err(e) => tracing::warn!(error = %e, "kubeconfig update task failed"),
        }
    }

    /// Status of every open tunnel, sorted by cluster id.
    pub fn status(&self) -> Vec<TunnelStatus> {
        lock(&self.inner.tunnels)
            .values()
            .map(|o| self.describe(&o.handle))
            .collect()
    }

    /// Status of one open tunnel.
    pub fn status_of(&self, id: &ClusterId) -> Option<TunnelStatus> {
        lock(&self.inner.tunnels)
            .get(id)
            .map(|o| self.describe(&o.handle))
    }

    fn describe(&self, handle: &TunnelHandle) -> TunnelStatus {
        let health = handle.health();
        let stats = handle.stats();
        let figures = handle.figures();
        let cluster = handle.cluster();
        TunnelStatus {
            cluster: cluster.id.clone(),
            name: cluster.name.clone(),
            context: self.context_name(cluster),
            state: health.state,
            reason: health.reason,
            since: rfc3339(health.since),
            port: handle.local_addr().port(),
            open_connections: stats.open.load(Ordering::Relaxed),
            total_connections: stats.total.load(Ordering::Relaxed),
            refused_connections: stats.refused.load(Ordering::Relaxed),
            bytes_up: stats.bytes_up.load(Ordering::Relaxed),
            bytes_down: stats.bytes_down.load(Ordering::Relaxed),
            latency_ms: figures.latency_ms,
            api_ms: figures.api_ms,
            kubernetes_version: figures.kubernetes_version,
            last_error: figures.last_error,
        }
    }

    /// Reads, changes and saves the app state (favourites, settings), serialised with the
    /// engine's own port writes so that neither loses the other's change.
    pub async fn update_state<R>(
        &self,
        change: impl FnOnce(&mut AppState) -> R,
    ) -> Result<R, EngineError> {
        let _guard = self.inner.state_lock.lock().await;
        let store = &self.inner.config.state;
        let mut state = store.load().map_err(EngineError::State)?;
        let result = change(&mut state);
        store.save(&state).map_err(EngineError::State)?;
        Ok(result)
    }

    /// Binds the cluster's listener on its persisted port, else the first free candidate, and
    /// persists the port it got so that kubeconfig stays valid across restarts.
    async fn bind(&self, cluster: &Cluster) -> Result<TcpListener, EngineError> {
        let _guard = self.inner.state_lock.lock().await;
        let store = &self.inner.config.state;
        let mut state = store.load().map_err(EngineError::State)?;
        let persisted = state.ports.get(&cluster.id).copied();
        for port in port_candidates(&cluster.id, persisted).take(PORT_ATTEMPTS) {
            if self.port_taken_by_other_tunnel(port, &cluster.id) {
                continue;
            }
            match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
                Ok(listener) => {
                    if persisted != Some(port) {
                        state.ports.insert(cluster.id.clone(), port);
                        store.save(&state).map_err(EngineError::State)?;
                    }
                    return Ok(listener);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(source) => return Err(EngineError::Bind { port, source }),
            }
        }
        Err(EngineError::NoFreePort {
            cluster: cluster.name.clone(),
            tried: PORT_ATTEMPTS,
        })
    }

    /// The port a cluster will use when it connects, if it is free
    /// ([`crate::state::planned_port`]).
    async fn planned_port(&self, cluster: &Cluster) -> Result<u16, EngineError> {
        let _guard = self.inner.state_lock.lock().await;
        let state = self.inner.config.state.load().map_err(EngineError::State)?;
        Ok(state.planned_port(&cluster.id))
    }

    fn port_taken_by_other_tunnel(&self, port: u16, id: &ClusterId) -> bool {
        lock(&self.inner.tunnels)
            .iter()
            .any(|(other, o)| other != id && o.handle.local_addr().port() == port)
    }

    /// Checks every open tunnel now: each probes its edge at once, and each open stream pings
    /// its peer and closes if it does not answer within the keepalive's timeout. Called after a
    /// wake-up or a network change (see [`crate::wake`]).
    pub fn check_now(&self) {
        for open in lock(&self.inner.tunnels).values() {
            open.handle.check_now();
        }
    }

    /// Checks one open tunnel now (the tray's and window's "Retry now"): its probe runs at once
    /// instead of after the back-off. Returns whether that tunnel is open here.
    pub fn retry(&self, id: &ClusterId) -> bool {
        match lock(&self.inner.tunnels).get(id) {
            Some(open) => {
                open.handle.check_now();
                true
            }
            None => false,
        }
    }

    /// Signs in to an open tunnel's Access application because the user asked to (a click on a
    /// "Login required" notification): the browser login may open at once, then the tunnel is
    /// checked. `Ok(false)` when that tunnel is not open here or uses no Access login.
    pub async fn sign_in(&self, id: &ClusterId) -> Result<bool, crate::access::AccessError> {
        let cluster = match lock(&self.inner.tunnels).get(id) {
            Some(open) => open.handle.cluster().clone(),
            None => return Ok(false),
        };
        let Some(access) = self.access().filter(|a| a.manages(&cluster)) else {
            return Ok(false);
        };
        access
            .credential(&cluster, crate::access::Interaction::Explicit)
            .await?;
        self.retry(id);
        Ok(true)
    }

    /// Starts (once) the wake-up and network watch. It holds only a weak reference, so it never
    /// keeps the engine alive.
    fn start_wake_watch(&self) {
        let Some(settings) = self.inner.config.wake else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        self.inner.wake.get_or_init(|| {
            crate::wake::WakeWatch::start(
                settings,
                Arc::new(crate::wake::SystemClock),
                move |wake| {
                    if let Some(inner) = weak.upgrade() {
                        tracing::info!(?wake, "checking every tunnel");
                        Engine { inner }.check_now();
                    }
                },
            )
        });
    }

    /// Starts (once) the task that keeps open tunnels' kubeconfig entries in place. It holds
    /// only a weak reference, so it never keeps the engine alive.
    fn start_kubeconfig_keeper(&self) {
        if self.inner.config.kubeconfig.is_none() {
            return;
        }
        self.inner.keeper_started.call_once(|| {
            let weak = Arc::downgrade(&self.inner);
            let cancel = self.inner.keeper.clone();
            let period = self.inner.config.kubeconfig_refresh;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                // What the files looked like when every open tunnel's entry was last found in
                // place, and for which tunnels: while neither changes, a tick costs one `stat`
                // per file instead of locking, reading and parsing them.
                let mut verified: Option<(FilesStamp, Vec<(ClusterId, u16)>)> = None;
                let mut skipped = 0u32;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    let engine = Engine { inner };
                    let _writing = engine.inner.entry_writes.lock().await;
                    let open: Vec<(Cluster, u16, SocksLogin)> = lock(&engine.inner.tunnels)
                        .values()
                        .map(|o| (o.handle.cluster().clone(), o.handle.local_addr().port(), o.login.clone()))
                        .collect();
                    // The map is ordered by cluster id, so the key is too.
                    let key: Vec<(ClusterId, u16)> =
                        open.iter().map(|(c, p, _)| (c.id.clone(), *p)).collect();
                    let Some(kubeconfig) = engine.inner.config.kubeconfig.clone() else {
                        return;
                    };
                    let unchanged = verified
                        .as_ref()
                        .is_some_and(|(stamp, tunnels)| *tunnels == key && *stamp == kubeconfig.stamp());
                    // Now and then read anyway: a same-size rewrite on a filesystem with coarse
                    // timestamps would look unchanged.
                    if unchanged && skipped < KUBECONFIG_KEEPER_FULL_EVERY {
                        skipped += 1;
                        continue;
                    }
                    skipped = 0;
                    verified = match engine.reassert_kubeconfig(kubeconfig, &open).await {
                        Ok(stamp) => Some((stamp, key)),
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), "cannot re-assert the kubeconfig entries");
                            None
                        }
                    };
                }
            });
        });
    }

    /// Puts every open tunnel's kubeconfig entry back where kubectl's own writers may have
    /// dropped it, in one locked read-modify-write; returns the files' stamp under the lock.
    async fn reassert_kubeconfig(
        &self,
        kubeconfig: Kubeconfig,
        open: &[(Cluster, u16, SocksLogin)],
    ) -> Result<FilesStamp, EngineError> {
        let entries: Vec<ClusterEntry> = open
            .iter()
            .map(|(cluster, port, login)| self.kubeconfig_entry(cluster, *port, Some(login)))
            .collect();
        tokio::task::spawn_blocking(move || {
            let (changed, stamp) = kubeconfig.upsert_all(&entries)?;
            if changed {
                tracing::info!(entries = entries.len(), "kubeconfig entries restored");
            }
            Ok::<_, KubeconfigError>(stamp)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .map_err(EngineError::Kubeconfig)
    }

    /// The cluster's kubeconfig entry: its proxy-url carries `login` while the tunnel is open,
    /// nothing secret otherwise.
    fn kubeconfig_entry(
        &self,
        cluster: &Cluster,
        port: u16,
        login: Option<&SocksLogin>,
    ) -> ClusterEntry {
        ClusterEntry {
            name: self.context_name(cluster),
            server: cluster.api.url.to_string(),
            certificate_authority_pem: cluster.api.ca_pem.clone(),
            tls_server_name: cluster.api.tls_server_name.clone(),
            proxy_url: match login {
                Some(login) => proxy_url(&login.username, &login.password, port),
                None => closed_proxy_url(port),
            },
            user: cluster.user.clone(),
        }
    }

    async fn write_kubeconfig(
        &self,
        cluster: &Cluster,
        port: u16,
        login: Option<&SocksLogin>,
        use_context: bool,
    ) -> Result<(), EngineError> {
        let Some(kubeconfig) = self.inner.config.kubeconfig.clone() else {
            return Ok(());
        };
        let entry = self.kubeconfig_entry(cluster, port, login);
        let inner = Arc::clone(&self.inner);
        // File locking may wait on another writer (kubectl); keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            if kubeconfig.upsert(&entry)? {
                tracing::info!(entry = %entry.name, "kubeconfig entry written");
            }
            if use_context {
                let before = kubeconfig.current_context()?;
                kubeconfig.use_context(&entry.name)?;
                lock(&inner.context_before).get_or_insert(before);
            }
            Ok::<_, KubeconfigError>(())
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .map_err(EngineError::Kubeconfig)
    }
}

/// `socks5://<user>:<secret>@127.0.0.1:<port>` — `socks5`, not `socks5h`, which client-go
/// rejects; the API hostname is still sent unresolved in the CONNECT.
pub fn proxy_url(username: &str, password: &Secret, port: u16) -> Secret {
    Secret::new(format!(
        "socks5://{}:{}@127.0.0.1:{port}",
        urlencode(username),
        urlencode(password.expose())
    ))
}

/// `socks5://127.0.0.1:<port>`: the entry of a tunnel that is not open. Nothing listens (kubectl
/// fails at once), and a stranger who binds the port is offered no secret.
pub fn closed_proxy_url(port: u16) -> Secret {
    Secret::new(format!("socks5://127.0.0.1:{port}"))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
