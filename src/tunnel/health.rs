//! A tunnel's health: the state users see (connecting, up, down, API not answering, login
//! required) with its reason, kept current by probing periodically and at once when a
//! connection fails. A probe is one stream through the tunnel to the API server, asked
//! `/version` ([`api`](crate::tunnel::api)): the edge's answer and the cluster's in one upgrade.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;
use crate::tunnel::api::{ApiAnswer, ApiProbe};
use crate::tunnel::carrier::CarrierError;

/// The state of a tunnel as users see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// The listener is up; the edge has not answered yet.
    Connecting,
    /// The edge accepts our credential: connections go through.
    Up,
    /// It was up, and a connection through it just failed: the edge is being checked now, and
    /// the tunnel is up or down again within the probe's timeout.
    Checking,
    /// The edge (or the origin behind it) cannot be reached; the listener stays up and the
    /// tunnel comes back by itself.
    Down,
    /// The edge lets the tunnel through, but the cluster's API server does not answer on the
    /// other end (origin down, a certificate from another CA, no answer in time).
    ApiDown,
    /// The edge wants a (new) login before it lets connections through.
    LoginRequired,
}

impl std::fmt::Display for TunnelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TunnelState::Connecting => "connecting",
            TunnelState::Up => "up",
            TunnelState::Checking => "checking",
            TunnelState::Down => "down",
            TunnelState::ApiDown => "API not answering",
            TunnelState::LoginRequired => "login required",
        })
    }
}

impl TunnelState {
    /// Whether connections through the tunnel fail now and it retries by itself (down, or the
    /// API not answering); a login is the user's to give.
    pub fn is_failing(self) -> bool {
        matches!(self, TunnelState::Down | TunnelState::ApiDown)
    }

    /// Whether an open tunnel is not working, whoever must act: failing, or waiting for a
    /// login (what the tray and the window count as "failing").
    pub fn is_troubled(self) -> bool {
        self.is_failing() || self == TunnelState::LoginRequired
    }
}

/// A state with its reason and when it began.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthState {
    /// The state.
    pub state: TunnelState,
    /// Why (for down and login required), free of secrets.
    pub reason: Option<String>,
    /// When the tunnel entered this state.
    pub since: SystemTime,
}

/// How often the edge is probed. Every wait is jittered by ±20 %, so that tunnels sharing an
/// edge do not probe in lock step, and a down tunnel never retries faster than `down_min`.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSchedule {
    /// Between probes while the tunnel is up or waiting for a login.
    pub healthy: Duration,
    /// First retry after the tunnel went down; doubles up to `down_max`.
    pub down_min: Duration,
    /// Longest wait between probes while down.
    pub down_max: Duration,
    /// A probe that takes longer fails (a stalled edge accepts connections and then says
    /// nothing). The edge's upgrade and the API server's answer each have this long.
    pub timeout: Duration,
    /// Whether a probe asks the API server for `/version` through the stream (on for clusters;
    /// off where the origin is not an API server, as in benchmarks over an echo origin).
    pub api: bool,
}

impl Default for ProbeSchedule {
    /// A stalled edge is noticed within `healthy + timeout` (9 s + 4 s, ≤ 14.8 s with the
    /// jitter), and a tunnel is back up within `down_max` (≤ 1.8 s with the jitter) of its edge
    /// answering again.
    fn default() -> Self {
        Self {
            healthy: Duration::from_secs(9),
            down_min: Duration::from_millis(250),
            down_max: Duration::from_millis(1500),
            timeout: Duration::from_secs(4),
            api: true,
        }
    }
}

/// `wait` ± 20 %.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::random_range(0.8..1.2))
}

type OnChange = Box<dyn Fn(&HealthState) + Send + Sync>;

/// Figures that change without changing the state: not announced, read with the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthFigures {
    /// Round trip of the last successful probe of the edge (the upgrade, and the origin's
    /// SOCKS handshake for a `socks` origin), in milliseconds.
    pub latency_ms: Option<u64>,
    /// Round trip of the last `/version` the API server answered through the tunnel (TLS with
    /// the API server and the request), in milliseconds.
    pub api_ms: Option<u64>,
    /// The Kubernetes version the API server reported (`gitVersion`), when it answered and
    /// told.
    pub kubernetes_version: Option<String>,
    /// The last error a connection through the tunnel met (free of secrets).
    pub last_error: Option<String>,
}

/// The shared health of one tunnel.
pub struct Health {
    current: Mutex<HealthState>,
    figures: Mutex<HealthFigures>,
    /// The last probe reached the edge and not the API server. One such probe only makes an
    /// up tunnel "checking": an edge that stalls after the upgrade looks the same, and the next
    /// probe tells the two apart.
    api_suspect: AtomicBool,
    wake: Notify,
    on_change: OnChange,
}

impl Health {
    /// A tunnel starting up; `on_change` is called on every state change.
    pub fn new(on_change: impl Fn(&HealthState) + Send + Sync + 'static) -> Self {
        let initial = HealthState {
            state: TunnelState::Connecting,
            reason: None,
            since: SystemTime::now(),
        };
        on_change(&initial);
        Self {
            current: Mutex::new(initial),
            figures: Mutex::new(HealthFigures::default()),
            api_suspect: AtomicBool::new(false),
            wake: Notify::new(),
            on_change: Box::new(on_change),
        }
    }

    /// The current state.
    pub fn current(&self) -> HealthState {
        lock(&self.current).clone()
    }

    /// The latest probe latency and connection error.
    pub fn figures(&self) -> HealthFigures {
        lock(&self.figures).clone()
    }

    /// A connection went through the edge: the tunnel is up. A tunnel whose API server did
    /// not answer stays so until a probe hears the API again: the edge letting a connection
    /// through says nothing about the cluster, so the prober asks now.
    pub fn report_success(&self) {
        // Every connection passes here: one lock, no copy of the state.
        if self.set_when(|now| now != TunnelState::ApiDown, TunnelState::Up, None)
            == TunnelState::ApiDown
        {
            self.wake.notify_one();
        }
    }

    /// A connection failed. "Login required" is certain at once; anything else may be one
    /// connection's bad luck, so the prober checks the edge now and decides, and an up tunnel
    /// says "checking" meanwhile rather than "up".
    pub fn report_failure(&self, err: &CarrierError) {
        lock(&self.figures).last_error = Some(crate::error_chain(err));
        if err.is_login_required() {
            self.set(TunnelState::LoginRequired, Some(crate::error_chain(err)));
        } else {
            self.set_when(
                |now| now == TunnelState::Up,
                TunnelState::Checking,
                Some(crate::error_chain(err)),
            );
        }
        self.wake.notify_one();
    }

    /// Probes the edge now instead of at the next period.
    pub fn probe_now(&self) {
        self.wake.notify_one();
    }

    fn set(&self, state: TunnelState, reason: Option<String>) {
        self.set_when(|_| true, state, reason);
    }

    /// Moves to `state` if the current state satisfies `when`, judged under the same lock.
    /// Returns the state it is in afterwards.
    fn set_when(
        &self,
        when: impl FnOnce(TunnelState) -> bool,
        state: TunnelState,
        reason: Option<String>,
    ) -> TunnelState {
        let mut current = lock(&self.current);
        if !when(current.state) || (current.state == state && current.reason == reason) {
            return current.state;
        }
        if current.state != state {
            current.since = SystemTime::now();
        }
        current.state = state;
        current.reason = reason;
        // Announced under the lock, so that listeners hear changes in the order they happened
        // (`on_change` only queues an event).
        (self.on_change)(&current);
        state
    }

    fn record_probe(&self, outcome: ProbeOutcome) {
        let api_down = matches!(outcome, ProbeOutcome::ApiDown { .. });
        let confirmed = self.api_suspect.swap(api_down, Ordering::Relaxed);
        // A failing tunnel has no round trip: the last one would be read as current.
        match outcome {
            ProbeOutcome::Up { edge, api } => {
                {
                    let mut figures = lock(&self.figures);
                    figures.latency_ms = Some(millis(edge));
                    if let Some((answer, took)) = api {
                        figures.api_ms = Some(millis(took));
                        // A server that wants credentials for /version told nothing new.
                        if answer.version.is_some() {
                            figures.kubernetes_version = answer.version;
                        }
                    }
                }
                self.set(TunnelState::Up, None)
            }
            ProbeOutcome::ApiDown { edge, reason } => {
                {
                    let mut figures = lock(&self.figures);
                    figures.latency_ms = Some(millis(edge));
                    figures.api_ms = None;
                }
                if confirmed || self.current().state == TunnelState::ApiDown {
                    self.set(TunnelState::ApiDown, Some(reason))
                } else {
                    self.set_when(
                        |now| now == TunnelState::Up,
                        TunnelState::Checking,
                        Some(reason),
                    );
                }
            }
            ProbeOutcome::Edge(err) => {
                {
                    let mut figures = lock(&self.figures);
                    figures.latency_ms = None;
                    figures.api_ms = None;
                }
                if err.is_login_required() {
                    self.set(TunnelState::LoginRequired, Some(crate::error_chain(&err)))
                } else {
                    self.set(TunnelState::Down, Some(crate::error_chain(&err)))
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What one probe found.
enum ProbeOutcome {
    /// The edge let the stream through in `edge`; the API server answered in the second
    /// figure (`None` when the schedule does not ask it).
    Up {
        edge: Duration,
        api: Option<(ApiAnswer, Duration)>,
    },
    /// The edge let the stream through in `edge`, and the API server did not answer.
    ApiDown { edge: Duration, reason: String },
    /// The edge did not let the stream through.
    Edge(CarrierError),
}

/// One probe: a stream through the dialer, then (when asked) `/version` over it, each step
/// cut at the schedule's timeout (a stalled edge or API server accepts and then says nothing).
async fn probe_once(
    dialer: &crate::tunnel::dialer::Dialer,
    api: Option<&ApiProbe>,
    schedule: &ProbeSchedule,
) -> ProbeOutcome {
    use tokio::io::AsyncWriteExt;
    let started = tokio::time::Instant::now();
    let stream = match tokio::time::timeout(schedule.timeout, dialer.probe()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return edge_or_origin(err, started.elapsed()),
        Err(_) => {
            return ProbeOutcome::Edge(CarrierError::Timeout(
                "waiting for the edge to answer the probe",
            ));
        }
    };
    let edge = started.elapsed();
    let Some(api) = api else {
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
        return ProbeOutcome::Up { edge, api: None };
    };
    let asked = tokio::time::Instant::now();
    match tokio::time::timeout(schedule.timeout, api.version(stream)).await {
        Ok(Ok(answer)) => ProbeOutcome::Up {
            edge,
            api: Some((answer, asked.elapsed())),
        },
        Ok(Err(err)) => ProbeOutcome::ApiDown {
            edge,
            reason: crate::error_chain(&err),
        },
        Err(_) => ProbeOutcome::ApiDown {
            edge,
            reason: format!(
                "the API server did not answer /version within {}",
                humantime::format_duration(schedule.timeout)
            ),
        },
    }
}

/// The edge answering "I cannot reach the origin" (a 502, or a `socks` origin refusing the
/// API server) means the edge is up and the cluster is not: the API is down, not the tunnel.
fn edge_or_origin(err: CarrierError, edge: Duration) -> ProbeOutcome {
    if err.origin_unreachable() {
        ProbeOutcome::ApiDown {
            edge,
            reason: crate::error_chain(&err),
        }
    } else {
        ProbeOutcome::Edge(err)
    }
}

/// Probes until `cancel` fires: at once, then on the schedule, and whenever a connection
/// failure wakes it. `api` asks the API server over each probe's stream.
pub async fn run_probes(
    dialer: &crate::tunnel::dialer::Dialer,
    api: Option<&ApiProbe>,
    health: &Health,
    schedule: ProbeSchedule,
    cancel: CancellationToken,
) {
    let mut down_wait = schedule.down_min;
    loop {
        // Probes never open a browser: they use stored tokens and the silent exchange only.
        // A closed tunnel must not report its result afterwards.
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = probe_once(dialer, api, &schedule) => outcome,
        };
        health.record_probe(outcome);
        let state = health.current().state;
        // A suspect API (or a "checking" tunnel) is asked again soon, as a failing one is.
        let suspect = health.api_suspect.load(Ordering::Relaxed);
        if state.is_failing() {
            // Warm connections to an edge that fails its probe may be as dead as the probe's;
            // a new connection dials (and fails fast) instead of waiting on one of them.
            dialer.clear_warm();
        }
        let wait = if state.is_failing() || suspect {
            let wait = down_wait;
            down_wait = (down_wait * 2).min(schedule.down_max);
            jittered(wait)
        } else {
            down_wait = schedule.down_min;
            jittered(schedule.healthy)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = health.wake.notified() => {}
        }
    }
}
