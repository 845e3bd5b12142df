//! A tunnel's health: the state users see (connecting, up, down, login required) with its
//! reason, kept current by probing the edge periodically and at once when a connection fails.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;
use crate::tunnel::carrier::CarrierError;

/// The state of a tunnel as users see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
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
            TunnelState::LoginRequired => "login required",
        })
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
    /// nothing).
    pub timeout: Duration,
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
    /// Round trip of the last successful probe of the edge, in milliseconds.
    pub latency_ms: Option<u64>,
    /// The last error a connection through the tunnel met (free of secrets).
    pub last_error: Option<String>,
}

/// The shared health of one tunnel.
pub struct Health {
    current: Mutex<HealthState>,
    figures: Mutex<HealthFigures>,
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

    /// A connection went through: the tunnel is up.
    pub fn report_success(&self) {
        self.set(TunnelState::Up, None);
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
    fn set_when(
        &self,
        when: impl FnOnce(TunnelState) -> bool,
        state: TunnelState,
        reason: Option<String>,
    ) {
        let mut current = lock(&self.current);
        if !when(current.state) || (current.state == state && current.reason == reason) {
            return;
        }
        if current.state != state {
            current.since = SystemTime::now();
        }
        current.state = state;
        current.reason = reason;
        // Announced under the lock, so that listeners hear changes in the order they happened
        // (`on_change` only queues an event).
        (self.on_change)(&current);
    }

    fn record_probe(&self, result: Result<(), CarrierError>, took: Duration) {
        match result {
            Ok(()) => {
                let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                lock(&self.figures).latency_ms = Some(ms);
                self.set(TunnelState::Up, None)
            }
            // A failing tunnel has no round trip: the last one would be read as current.
            Err(err) if err.is_login_required() => {
                lock(&self.figures).latency_ms = None;
                self.set(TunnelState::LoginRequired, Some(crate::error_chain(&err)))
            }
            Err(err) => {
                lock(&self.figures).latency_ms = None;
                self.set(TunnelState::Down, Some(crate::error_chain(&err)))
            }
        }
    }
}

/// Probes the edge until `cancel` fires: at once, then on the schedule, and whenever a
/// connection failure wakes it.
pub async fn run_probes(
    dialer: &crate::tunnel::dialer::Dialer,
    health: &Health,
    schedule: ProbeSchedule,
    cancel: CancellationToken,
) {
    let mut down_wait = schedule.down_min;
    loop {
        // Probes never open a browser: they use stored tokens and the silent exchange only.
        let probe = dialer.probe();
        // A probe to a black-holed or stalled edge would take many seconds: it is cut at the
        // schedule's timeout. A closed tunnel must not report its result afterwards.
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            result = tokio::time::timeout(schedule.timeout, probe) => result
                .unwrap_or(Err(CarrierError::Timeout("waiting for the edge to answer the probe"))),
        };
        health.record_probe(result, started.elapsed());
        let wait = if health.current().state == TunnelState::Down {
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
