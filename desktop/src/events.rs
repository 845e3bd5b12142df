//! Typed events to the web UI, declared once below ([`UiEvent`], with their names and the UI's
//! TypeScript generated from the declaration), and the mapping of engine events onto them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_tunnels::engine::{Engine, Event, TunnelStatus};
use k8s_tunnels::inventory::ClusterId;
use k8s_tunnels::tunnel::health::TunnelState;
use serde::{Deserialize, Serialize};

/// Expands the declaration below into [`UiEvent`], [`EventName`] and the events' TypeScript.
/// An event is `name: Variant(Payload);` (`name: Variant;` without a payload: the UI gets `{}`).
macro_rules! declare_events {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $variant:ident $(($payload:ty))?;
    )*) => {
        /// Every event the shell sends to the UI. On the control socket an event is
        /// `{"name": …, "payload": …}`; the webview hears `payload` under `name`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", content = "payload", rename_all = "snake_case")]
        pub enum UiEvent {
            $( $(#[doc = $doc])* $variant $(($payload))?, )*
        }

        /// Event names, as the UI listens to them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventName {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl EventName {
            /// Every event, in the order of the declaration.
            pub const ALL: &'static [EventName] = &[$(EventName::$variant),*];

            /// The name the UI listens to.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( EventName::$variant => stringify!($name), )*
                }
            }
        }

        impl UiEvent {
            /// The event's name.
            pub fn name(&self) -> EventName {
                match self {
                    $( UiEvent::$variant { .. } => EventName::$variant, )*
                }
            }
        }

        /// Describes every event to the TypeScript generator, in the order of the declaration.
        pub(crate) fn describe_events(ts: &mut crate::ipc::typescript::Generator) {
            $(
                let payload = None $(.or(Some(ts.type_name::<$payload>())))?;
                ts.event(stringify!($name), &[$($doc),*], payload);
            )*
        }
    };
}

declare_events! {
    /// A tunnel changed state (or its figures changed: sent at most once a second per tunnel).
    tunnel: Tunnel(TunnelStatus);
    /// A tunnel was closed.
    tunnel_closed: TunnelClosed(TunnelClosed);
    /// Discovery progress: `running` with done/total while it runs, then `finished`.
    discovery: Discovery(DiscoveryPhase);
    /// The catalog or the favourites changed (discovery finished, a favourite changed): fetch
    /// `clusters` again.
    clusters_changed: ClustersChanged;
    /// A new activity log line.
    activity: Activity(Activity);
    /// Login state of an Access application.
    login: Login(LoginNotice);
}

impl UiEvent {
    /// The payload as the webview hears it (`{}` for an event without one).
    pub fn payload(&self) -> serde_json::Value {
        // The payload is what serde writes under `payload`: one encoding for the socket and
        // the webview. These types serialise infallibly (no maps with non-string keys, no
        // custom impls).
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut event)) => event
                .remove("payload")
                .unwrap_or_else(|| serde_json::json!({})),
            _ => serde_json::Value::Null,
        }
    }
}

/// The result of one discovery source in the last refresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct SourceOutcome {
    /// Source name.
    pub source: String,
    /// Clusters found.
    pub clusters: usize,
    /// One line per failed scope.
    pub errors: Vec<String>,
    /// Rejected entries, one line each.
    pub rejected: Vec<String>,
}

impl SourceOutcome {
    /// The outcome of one source's report.
    pub fn from_report(report: &k8s_tunnels::discovery::SourceReport) -> Self {
        Self {
            source: report.source.clone(),
            clusters: report.found.len(),
            errors: report
                .failed
                .iter()
                .map(|f| format!("{}: {}", f.scope, f.message))
                .collect(),
            rejected: report
                .rejected
                .iter()
                .map(|r| format!("{} ({}): {}", r.name, r.scope, r.reason))
                .collect(),
        }
    }
}

/// Discovery progress (the `discovery` event's payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum DiscoveryPhase {
    /// A source made progress.
    Running {
        /// Source name.
        source: String,
        /// Scopes done.
        done: usize,
        /// Scopes to scan.
        total: usize,
    },
    /// The refresh finished.
    Finished {
        /// Per-source outcome.
        outcomes: Vec<SourceOutcome>,
    },
}

/// Login state of an Access application (the `login` event's payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoginNotice {
    /// The login ends soon.
    Expiring {
        /// The Access application (hostname).
        application: String,
        /// Seconds until it ends.
        seconds_left: u64,
    },
    /// A (new) login is needed.
    Required {
        /// The Access application (hostname).
        application: String,
    },
    /// A browser login runs: sign in at `url` (a browser was opened there when
    /// `browser_opened`; the window shows the URL in case none was).
    SignIn {
        /// The Access application (hostname).
        application: String,
        /// Where to sign in (carries only a one-time public key).
        url: String,
        /// Whether a browser was opened at it.
        browser_opened: bool,
        /// The code of the login's key, which the sign-in page must show too.
        code: String,
    },
}

/// How serious an activity line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Normal operation.
    Info,
    /// Something the user may want to look at.
    Warning,
    /// Something failed.
    Error,
}

/// One line of the activity log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct Activity {
    /// RFC 3339.
    pub at: String,
    /// Level.
    pub level: Level,
    /// Cluster display name, when the entry is about one.
    pub cluster: Option<String>,
    /// What happened.
    pub message: String,
}

impl Activity {
    /// A line stamped now.
    pub fn now(level: Level, cluster: Option<String>, message: impl Into<String>) -> Self {
        Self {
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            level,
            cluster,
            message: message.into(),
        }
    }
}

/// `tunnel_closed` payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
pub struct TunnelClosed {
    /// Cluster id.
    pub cluster: ClusterId,
    /// Cluster display name.
    pub name: String,
}

/// Maps one engine event to UI events and, for state changes, an activity line.
pub fn from_engine(event: &Event, engine: &Engine) -> Vec<UiEvent> {
    match event {
        Event::TunnelState {
            cluster,
            name,
            state,
            reason,
        } => {
            let mut out = Vec::new();
            // The engine's status carries the figures; the event's own state wins, since the
            // tunnel may have moved on (the next event will say so).
            if let Some(mut status) = engine.status_of(cluster) {
                status.state = *state;
                status.reason = reason.clone();
                out.push(UiEvent::Tunnel(status));
            }
            let (level, message) = match (state, reason) {
                (TunnelState::Connecting, _) => (Level::Info, "connecting".to_string()),
                (TunnelState::Checking, Some(reason)) => {
                    (Level::Warning, format!("checking again: {reason}"))
                }
                (TunnelState::Checking, None) => (Level::Warning, "checking again".to_string()),
                (TunnelState::Up, _) => (Level::Info, "up".to_string()),
                (TunnelState::Down, Some(reason)) => (Level::Error, format!("down: {reason}")),
                (TunnelState::Down, None) => (Level::Error, "down".to_string()),
                (TunnelState::ApiDown, Some(reason)) => (
                    Level::Error,
                    format!("the edge is up, the API server is not answering: {reason}"),
                ),
                (TunnelState::ApiDown, None) => {
                    (Level::Error, "the API server is not answering".into())
                }
                (TunnelState::LoginRequired, Some(reason)) => {
                    (Level::Warning, format!("login required: {reason}"))
                }
                (TunnelState::LoginRequired, None) => (Level::Warning, "login required".into()),
            };
            out.push(UiEvent::Activity(Activity::now(
                level,
                Some(name.clone()),
                message,
            )));
            out
        }
        Event::TunnelClosed { cluster, name } => vec![
            UiEvent::TunnelClosed(TunnelClosed {
                cluster: cluster.clone(),
                name: name.clone(),
            }),
            UiEvent::Activity(Activity::now(Level::Info, Some(name.clone()), "closed")),
        ],
        Event::LoginExpiring {
            application,
            seconds_left,
        } => vec![
            UiEvent::Login(LoginNotice::Expiring {
                application: application.clone(),
                seconds_left: *seconds_left,
            }),
            UiEvent::Activity(Activity::now(
                Level::Warning,
                None,
                format!(
                    "the Access login of {application} ends in {}",
                    humantime::format_duration(Duration::from_secs(*seconds_left))
                ),
            )),
        ],
        Event::LoginRequired { application } => vec![
            UiEvent::Login(LoginNotice::Required {
                application: application.clone(),
            }),
            UiEvent::Activity(Activity::now(
                Level::Warning,
                None,
                format!("{application} needs a new Access login"),
            )),
        ],
        Event::SignInStarted {
            application,
            url,
            browser_opened,
            code,
        } => vec![
            UiEvent::Login(LoginNotice::SignIn {
                application: application.clone(),
                url: url.clone(),
                browser_opened: *browser_opened,
                code: code.clone(),
            }),
            UiEvent::Activity(Activity::now(
                Level::Info,
                None,
                if *browser_opened {
                    format!("signing in to {application} in the browser")
                } else {
                    format!(
                        "sign in to {application}: no browser could be opened; the link is in the banner"
                    )
                },
            )),
        ],
    }
}

/// Figures (bytes, connections, latency, the API's answer) change all the time; the UI hears them at most once a
/// second per tunnel, and only when they changed. State changes always go through at once.
#[derive(Debug)]
pub struct FigureThrottle {
    every: Duration,
    last: HashMap<ClusterId, (Instant, Figures)>,
}

/// The parts of a status that change without a state change.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Figures {
    open: u64,
    total: u64,
    refused: u64,
    up: u64,
    down: u64,
    latency: Option<u64>,
    api: Option<u64>,
    version: Option<String>,
    last_error: Option<String>,
}

impl Figures {
    fn of(s: &TunnelStatus) -> Self {
        Self {
            open: s.open_connections,
            total: s.total_connections,
            refused: s.refused_connections,
            up: s.bytes_up,
            down: s.bytes_down,
            latency: s.latency_ms,
            api: s.api_ms,
            version: s.kubernetes_version.clone(),
            last_error: s.last_error.clone(),
        }
    }
}

impl FigureThrottle {
    /// At most one figures update per tunnel per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: HashMap::new(),
        }
    }

    /// Records a status the UI was sent (a state change).
    pub fn sent(&mut self, status: &TunnelStatus, now: Instant) {
        self.last
            .insert(status.cluster.clone(), (now, Figures::of(status)));
    }

    /// Whether this status should be sent as a figures update now; records it if so.
    pub fn due(&mut self, status: &TunnelStatus, now: Instant) -> bool {
        let figures = Figures::of(status);
        let due = match self.last.get(&status.cluster) {
            None => true,
            Some((at, seen)) => *seen != figures && now.duration_since(*at) >= self.every,
        };
        if due {
            self.last.insert(status.cluster.clone(), (now, figures));
        }
        due
    }

    /// Forgets a closed tunnel.
    pub fn forget(&mut self, id: &ClusterId) {
        self.last.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(bytes: u64) -> TunnelStatus {
        TunnelStatus {
            cluster: ClusterId("file:a".into()),
            name: "a".into(),
            context: "k8s-tunnels/a".into(),
            state: TunnelState::Up,
            reason: None,
            since: "2026-01-01T00:00:00Z".into(),
            port: 20001,
            open_connections: 0,
            total_connections: 0,
            refused_connections: 0,
            bytes_up: bytes,
            bytes_down: 0,
            latency_ms: Some(3),
            api_ms: Some(4),
            kubernetes_version: Some("v1.32.0".into()),
            last_error: None,
        }
    }

    #[test]
    fn figures_go_out_at_most_once_a_second_and_only_when_changed() {
        let mut throttle = FigureThrottle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        throttle.sent(&status(0), t0);
        assert!(!throttle.due(&status(0), t0 + Duration::from_secs(5)));
        assert!(!throttle.due(&status(10), t0 + Duration::from_millis(500)));
        assert!(throttle.due(&status(10), t0 + Duration::from_millis(1000)));
        assert!(!throttle.due(&status(20), t0 + Duration::from_millis(1500)));
        assert!(throttle.due(&status(20), t0 + Duration::from_millis(2000)));
        throttle.forget(&status(0).cluster);
        assert!(throttle.due(&status(20), t0 + Duration::from_millis(2001)));
    }

    #[test]
    fn payloads_have_the_ipc_ts_shapes() {
        let running = UiEvent::Discovery(DiscoveryPhase::Running {
            source: "eks".into(),
            done: 1,
            total: 3,
        });
        assert_eq!(
            running.payload(),
            serde_json::json!({"phase": "running", "source": "eks", "done": 1, "total": 3})
        );
        assert_eq!(UiEvent::ClustersChanged.payload(), serde_json::json!({}));
        let login = UiEvent::Login(LoginNotice::Expiring {
            application: "a.example".into(),
            seconds_left: 60,
        });
        assert_eq!(
            login.payload(),
            serde_json::json!({"kind": "expiring", "application": "a.example", "seconds_left": 60})
        );
        let tunnel = UiEvent::Tunnel(status(5)).payload();
        for key in [
            "cluster",
            "name",
            "context",
            "state",
            "reason",
            "since",
            "port",
            "open_connections",
            "total_connections",
            "refused_connections",
            "bytes_up",
            "bytes_down",
            "latency_ms",
            "api_ms",
            "kubernetes_version",
            "last_error",
        ] {
            assert!(tunnel.get(key).is_some(), "tunnel payload lacks {key}");
        }
        let activity = UiEvent::Activity(Activity::now(Level::Warning, None, "x")).payload();
        assert_eq!(activity["level"], "warning");
        assert!(activity["cluster"].is_null());
    }

    #[test]
    fn events_cross_the_socket_under_their_names() {
        let events = [
            UiEvent::Tunnel(status(5)),
            UiEvent::TunnelClosed(TunnelClosed {
                cluster: ClusterId("file:a".into()),
                name: "a".into(),
            }),
            UiEvent::Discovery(DiscoveryPhase::Finished {
                outcomes: Vec::new(),
            }),
            UiEvent::ClustersChanged,
            UiEvent::Activity(Activity::now(Level::Info, Some("a".into()), "up")),
            UiEvent::Login(LoginNotice::Required {
                application: "a.example".into(),
            }),
        ];
        assert_eq!(events.len(), EventName::ALL.len(), "one of each");
        for event in events {
            let wire = serde_json::to_value(&event).expect("encode");
            assert_eq!(wire["name"], event.name().as_str(), "{wire}");
            let back: UiEvent = serde_json::from_value(wire).expect("decode");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn event_names_are_the_variants_in_snake_case() {
        for name in EventName::ALL {
            let mut snake = String::new();
            for (i, c) in format!("{name:?}").chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            assert_eq!(name.as_str(), snake);
        }
    }
}
