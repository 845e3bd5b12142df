//! Wake-ups and network changes: the moments after which connections may be dead without a
//! word, and every tunnel should check itself now instead of at its next period.
//!
//! Two signals, on every system:
//! - **a wall-clock jump**: the monotonic clock stops while the machine sleeps and the wall
//!   clock does not, so a tick that finds the wall clock far ahead of the monotonic one has
//!   slept through (a user setting the clock counts too; it costs one probe per tunnel);
//! - **address changes** of the network interfaces (a new Wi-Fi, a VPN, a cable), from the
//!   platform's own notifications through `if-watch` (netlink on Linux, the System
//!   Configuration framework on macOS, the IP Helper API on Windows).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// Why the tunnels should check themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The wall clock moved this much more than the monotonic clock: the machine slept.
    ClockJump(Duration),
    /// An interface address appeared or went away.
    NetworkChanged,
}

/// The wall clock, replaceable in tests.
pub trait WallClock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// How the watch runs.
#[derive(Clone, Copy, Debug)]
pub struct WakeSettings {
    /// How often the clocks are compared.
    pub tick: Duration,
    /// A wall-clock lead over the monotonic clock beyond this (per tick) is a wake-up.
    pub jump: Duration,
    /// Watch the network interfaces too.
    pub network: bool,
}

impl Default for WakeSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(2),
            jump: Duration::from_secs(3),
            network: true,
        }
    }
}

/// After a change, further changes within this are the same change (an interface brings
/// several addresses up at once).
const NETWORK_SETTLE: Duration = Duration::from_millis(500);

/// The running watch; dropping it stops it.
#[derive(Debug)]
pub struct WakeWatch {
    cancel: CancellationToken,
}

impl Drop for WakeWatch {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl WakeWatch {
    /// Starts watching on the current runtime; `on_wake` is called for each wake-up and
    /// network change.
    pub fn start(
        settings: WakeSettings,
        clock: Arc<dyn WallClock>,
        on_wake: impl Fn(Wake) + Send + Sync + 'static,
    ) -> Self {
        let cancel = CancellationToken::new();
        let on_wake = Arc::new(on_wake);
        tokio::spawn(watch_clock(
            settings,
            clock,
            on_wake.clone(),
            cancel.clone(),
        ));
        if settings.network {
            tokio::spawn(watch_network(on_wake, cancel.clone()));
        }
        Self { cancel }
    }
}

async fn watch_clock(
    settings: WakeSettings,
    clock: Arc<dyn WallClock>,
    on_wake: Arc<dyn Fn(Wake) + Send + Sync>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (clock.now(), tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (clock.now(), tokio::time::Instant::now());
        if let Some(lead) = wall_lead(last, now)
            && lead > settings.jump
        {
            tracing::info!(lead = ?lead, "the wall clock jumped: waking every tunnel");
            on_wake(Wake::ClockJump(lead));
        }
        last = now;
    }
}

/// How much further the wall clock moved than the monotonic one between two readings, if it
/// did (a clock set back is no sleep).
fn wall_lead(
    (wall_then, mono_then): (SystemTime, tokio::time::Instant),
    (wall_now, mono_now): (SystemTime, tokio::time::Instant),
) -> Option<Duration> {
    let wall = wall_now.duration_since(wall_then).ok()?;
    wall.checked_sub(mono_now.duration_since(mono_then))
}

async fn watch_network(on_wake: Arc<dyn Fn(Wake) + Send + Sync>, cancel: CancellationToken) {
    let mut watcher = match if_watch::tokio::IfWatcher::new() {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch network changes; tunnels still notice them by their keepalive");
            return;
        }
    };
    // The watcher first reports every address there is; those are not changes.
    let mut known: HashSet<if_watch::IpNet> = watcher.iter().copied().collect();
    let started = tokio::time::Instant::now();
    let mut pending = false;
    loop {
        let settle = tokio::time::sleep(NETWORK_SETTLE);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = settle, if pending => {
                pending = false;
                tracing::info!("the network changed: waking every tunnel");
                on_wake(Wake::NetworkChanged);
            }
            event = watcher.select_next_some() => match event {
                Ok(if_watch::IfEvent::Up(net)) => {
                    let new = known.insert(net);
                    pending |= new && started.elapsed() > NETWORK_SETTLE;
                }
                Ok(if_watch::IfEvent::Down(net)) => {
                    known.remove(&net);
                    pending = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "network watch failed; tunnels still notice changes by their keepalive");
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A wall clock that moves with the (paused) monotonic clock, plus whatever a test adds.
    struct FakeClock {
        base: SystemTime,
        start: tokio::time::Instant,
        slept: Mutex<Duration>,
    }

    impl WallClock for FakeClock {
        fn now(&self) -> SystemTime {
            self.base + self.start.elapsed() + *crate::sync::lock(&self.slept)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_jump_is_a_wake_up_and_steady_time_is_not() {
        let clock = Arc::new(FakeClock {
            base: SystemTime::now(),
            start: tokio::time::Instant::now(),
            slept: Mutex::new(Duration::ZERO),
        });
        let wakes = Arc::new(Mutex::new(Vec::new()));
        let seen = wakes.clone();
        let settings = WakeSettings {
            network: false,
            ..WakeSettings::default()
        };
        let _watch = WakeWatch::start(settings, clock.clone(), move |w| {
            crate::sync::lock(&seen).push(w);
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            crate::sync::lock(&wakes).is_empty(),
            "a minute awake is no wake-up"
        );
        // The laptop sleeps for an hour: the wall clock moves, the monotonic one does not.
        *crate::sync::lock(&clock.slept) = Duration::from_secs(3600);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let wakes = crate::sync::lock(&wakes).clone();
        assert_eq!(wakes.len(), 1, "{wakes:?}");
        assert!(
            matches!(wakes[0], Wake::ClockJump(lead) if lead >= Duration::from_secs(3599)),
            "{wakes:?}"
        );
    }

    #[test]
    fn a_clock_set_back_is_no_wake_up() {
        let mono = tokio::time::Instant::now();
        let wall = SystemTime::now();
        assert_eq!(
            wall_lead(
                (wall, mono),
                (
                    wall - Duration::from_secs(60),
                    mono + Duration::from_secs(2)
                )
            ),
            None
        );
        assert_eq!(
            wall_lead(
                (wall, mono),
                (wall + Duration::from_secs(2), mono + Duration::from_secs(2))
            ),
            Some(Duration::ZERO)
        );
    }
}
