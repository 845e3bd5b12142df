//! The tunnel: a local SOCKS5 listener per cluster ([`listener`]), one WebSocket to the Access
//! edge per accepted connection ([`carrier`]) with the origin mode's handshake, dialled with
//! the right credential by the [`dialer`], and the tunnel's [`health`], probed through the
//! same dialer with the cluster's API server asked `/version` over the probe's stream
//! ([`api`]). While a tunnel is in use its edge keeps a few [`warm`] connections, so a new
//! connection waits for the upgrade only.

pub mod api;
pub mod carrier;
pub mod dialer;
pub mod health;
pub mod listener;
pub mod warm;

// Shared with the gateway; kept here under their old names for the tunnel's users.
pub use crate::wire::{counted, keepalive};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::AccessClient;
use crate::inventory::Cluster;
use crate::secret::Secret;
use api::ApiProbe;
use carrier::Edge;
use dialer::Dialer;
use health::{Health, HealthFigures, HealthState, ProbeSchedule};
use keepalive::{Keepalive, Liveness};
use listener::{ListenerContext, TunnelStats};

/// Everything needed to start one tunnel.
pub struct TunnelSpec {
    /// The cluster.
    pub cluster: Cluster,
    /// The bound local listener (127.0.0.1).
    pub listener: TcpListener,
    /// The per-install SOCKS username.
    pub username: String,
    /// The per-install SOCKS password.
    pub password: Secret,
    /// Probe schedule.
    pub schedule: ProbeSchedule,
    /// How every stream through the tunnel pings and notices a dead edge.
    pub keepalive: Keepalive,
    /// The Access login, for clusters that configure no credential of their own; `None`
    /// reads credentials from the configuration and the environment only.
    pub access: Option<AccessClient>,
    /// Gives memory back after connections close; one for all tunnels of a process.
    pub reclaim: crate::memory::Reclaim,
}

/// An open tunnel. Dropping it closes the listener and every connection; [`TunnelHandle::shutdown`]
/// does the same and waits, with a time limit, for the tasks to end.
pub struct TunnelHandle {
    cluster: Cluster,
    local_addr: SocketAddr,
    stats: Arc<TunnelStats>,
    health: Arc<Health>,
    liveness: Liveness,
    /// Shared with the listener and the prober; the edge's warm connections live in it and
    /// close when the last of the three lets go.
    ctx: Arc<ListenerContext>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl TunnelHandle {
    /// Starts serving `spec.listener` through `edge` (see [`Edge::for_cluster`]); `on_change`
    /// hears every health change.
    pub fn start(
        spec: TunnelSpec,
        edge: Edge,
        on_change: impl Fn(&HealthState) + Send + Sync + 'static,
    ) -> Self {
        // A bound listener always has an address; the fallback only keeps this infallible.
        let local_addr = spec
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let stats = Arc::new(TunnelStats::default());
        let health = Arc::new(Health::new(on_change));
        let liveness = Liveness::default();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ctx = Arc::new(ListenerContext {
            dialer: Dialer::new(spec.cluster.clone(), edge, spec.access),
            username: spec.username,
            password: spec.password,
            stats: stats.clone(),
            health: health.clone(),
            keepalive: spec.keepalive,
            liveness: liveness.clone(),
            reclaim: spec.reclaim,
        });
        // A cluster whose API settings cannot make a client (a CA that is not PEM) is still
        // probed at the edge; the reason is said once, and the kubeconfig check says it too.
        let api = match spec.schedule.api {
            false => None,
            true => match ApiProbe::for_cluster(&spec.cluster) {
                Ok(api) => Some(api),
                Err(e) => {
                    tracing::warn!(cluster = %spec.cluster.id, error = %crate::error_chain(&e), "the API server will not be asked");
                    None
                }
            },
        };
        tracker.spawn({
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            async move {
                let schedule = spec.schedule;
                health::run_probes(&ctx.dialer, api.as_ref(), &ctx.health, schedule, cancel).await
            }
        });
        tracker.spawn(listener::serve(
            spec.listener,
            ctx.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        Self {
            cluster: spec.cluster,
            local_addr,
            stats,
            health,
            liveness,
            ctx,
            cancel,
            tracker,
        }
    }

    /// Checks the tunnel now rather than on schedule: probes the edge at once, and every open
    /// stream pings its peer and closes if it does not answer in time. For a wake-up from
    /// sleep or a network change, after which streams may be dead without a word.
    pub fn check_now(&self) {
        self.ctx.dialer.clear_warm();
        self.liveness.check_now();
        self.health.probe_now();
    }

    /// The cluster served.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The local SOCKS5 address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Live counters.
    pub fn stats(&self) -> &TunnelStats {
        &self.stats
    }

    /// Current health.
    pub fn health(&self) -> HealthState {
        self.health.current()
    }

    /// Latest probe latency and connection error.
    pub fn figures(&self) -> HealthFigures {
        self.health.figures()
    }

    /// Closes the listener and all connections, waiting at most `limit` for them to end.
    /// Returns false when tasks were still running at the limit (they are cancelled anyway and
    /// end at their next await).
    pub async fn shutdown(self, limit: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
