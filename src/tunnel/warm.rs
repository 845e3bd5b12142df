//! Warm connections to the edge: a few TCP (+ TLS) connections per tunnel, made ahead of need,
//! so that a new local connection over a real distance waits for the WebSocket upgrade only
//! (one round trip) instead of the TCP connect, the TLS handshake and the upgrade (three).
//!
//! What the pool holds, and for how long, follows the edge's rules and the user's privacy:
//!
//! - Only connections **before** the upgrade request: no token, no header is sent until a
//!   local client asks for a stream, so a warm connection tells the edge nothing about the user.
//!   (An upgraded stream would need the token ahead of time and an origin stream nobody uses;
//!   the edge and the origin would see connections that are not the user's.)
//! - Each lives at most [`WarmSettings::lifetime`], below the time an edge lets a connection
//!   wait for its first request (our gateway: 30 s; Cloudflare closes idle connections later
//!   than that), so a taken connection is one the edge still holds.
//! - The pool fills only while the tunnel is in use: for [`WarmSettings::keep_for`] after a
//!   local connection. A tunnel nobody uses keeps none, and the health probe does not count as
//!   use (it always dials fresh: it measures the whole path).
//! - A connection the edge closed meanwhile is noticed when it is taken (a read that does not
//!   block says so) and skipped; after a wake-up from sleep the pool is emptied.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sync::lock;

/// How many warm connections a tunnel keeps, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmSettings {
    /// Connections kept ready per tunnel in use; 0 turns warm connections off.
    pub connections: usize,
    /// A warm connection is dropped this long after it was made, taken or not.
    #[serde(deserialize_with = "crate::duration::required")]
    pub lifetime: Duration,
    /// The pool is kept full this long after the tunnel's last new connection; then emptied.
    #[serde(deserialize_with = "crate::duration::required")]
    pub keep_for: Duration,
}

impl Default for WarmSettings {
    fn default() -> Self {
        Self {
            connections: 2,
            lifetime: Duration::from_secs(20),
            keep_for: Duration::from_secs(120),
        }
    }
}

impl WarmSettings {
    /// No warm connections: every new connection dials the edge.
    pub const OFF: Self = Self {
        connections: 0,
        lifetime: Duration::ZERO,
        keep_for: Duration::ZERO,
    };
}

/// What the pool needs from the edge: a way to make a connection ready for the upgrade, and to
/// tell, without waiting, whether one is still open.
pub(crate) trait Connect: Send + Sync + 'static {
    /// A connection ready for the upgrade request.
    type Conn: Send + 'static;
    /// The error a failed connect gives.
    type Error: std::fmt::Display + Send;
    /// Makes one connection (TCP connect, and the TLS handshake for wss).
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// Whether `conn` is still open with nothing unexpected to read: a non-blocking read that
    /// would block. End of stream, an error or bytes the edge sent unasked all mean "drop it".
    fn still_open(conn: &mut Self::Conn) -> bool;
}

/// The warm connections of one tunnel. Dropping it stops its filling task and closes them.
pub(crate) struct WarmPool<C: Connect> {
    shared: Arc<Shared<C::Conn>>,
    connect: Arc<C>,
    /// Started on first use, so a pool can be made outside a runtime (and costs nothing for a
    /// tunnel never used).
    filler: OnceLock<AbortOnDrop>,
}

struct Shared<T> {
    settings: WarmSettings,
    state: Mutex<PoolState<T>>,
    /// Wakes the filler: a connection was taken or asked for.
    used: Notify,
}

struct PoolState<T> {
    /// Oldest first.
    idle: VecDeque<(Instant, T)>,
    last_use: Option<Instant>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<C: Connect> WarmPool<C> {
    /// A pool that makes its connections with `connect`.
    pub(crate) fn new(settings: WarmSettings, connect: Arc<C>) -> Self {
        Self {
            shared: Arc::new(Shared {
                settings,
                state: Mutex::new(PoolState {
                    idle: VecDeque::new(),
                    last_use: None,
                }),
                used: Notify::new(),
            }),
            connect,
            filler: OnceLock::new(),
        }
    }

    /// A warm connection for a new local connection, if one is ready and still open. Counts as
    /// use either way: the pool fills (again) for the next one.
    pub(crate) fn take(&self) -> Option<C::Conn> {
        if self.shared.settings.connections == 0 {
            return None;
        }
        self.filler.get_or_init(|| {
            let task = tokio::spawn(fill(self.shared.clone(), self.connect.clone()));
            AbortOnDrop(task.abort_handle())
        });
        let now = Instant::now();
        let taken = {
            let mut state = lock(&self.shared.state);
            state.last_use = Some(now);
            let lifetime = self.shared.settings.lifetime;
            // The newest has the most life left; older ones expire in the filler.
            let mut found = None;
            while let Some((made, mut conn)) = state.idle.pop_back() {
                if now < made + lifetime && C::still_open(&mut conn) {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        self.shared.used.notify_one();
        taken
    }

    /// Closes every warm connection (after a wake-up from sleep or a network change they may be
    /// dead without a word); the pool fills again on the next use.
    pub(crate) fn clear(&self) {
        lock(&self.shared.state).idle.clear();
    }

    /// How many connections are warm now.
    #[cfg(test)]
    fn ready(&self) -> usize {
        lock(&self.shared.state).idle.len()
    }
}

/// Keeps the pool full while the tunnel is in use; sleeps while it is not.
async fn fill<C: Connect>(shared: Arc<Shared<C::Conn>>, connect: Arc<C>) {
    let settings = shared.settings;
    loop {
        shared.used.notified().await;
        loop {
            let now = Instant::now();
            let (missing, next) = {
                let mut state = lock(&shared.state);
                state
                    .idle
                    .retain(|(made, _)| now < *made + settings.lifetime);
                let Some(last_use) = state.last_use else {
                    break;
                };
                let until = last_use + settings.keep_for;
                if now >= until {
                    // Idle: nothing is kept for a tunnel nobody uses.
                    state.idle.clear();
                    break;
                }
                let next = match state.idle.front() {
                    Some((made, _)) => (*made + settings.lifetime).min(until),
                    None => until,
                };
                (settings.connections.saturating_sub(state.idle.len()), next)
            };
            if missing > 0 {
                match connect.connect().await {
                    Ok(conn) => lock(&shared.state).idle.push_back((Instant::now(), conn)),
                    Err(e) => {
                        // An edge that cannot be reached now is not dialled again until the
                        // next use: the user's own connection reports the failure.
                        tracing::debug!(error = %e, "warm connection failed");
                        break;
                    }
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shared.used.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the connections it makes; `fail` makes the edge unreachable.
    #[derive(Default)]
    struct Counting {
        made: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    struct Conn {
        id: usize,
        open: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Connect for Counting {
        type Conn = Conn;
        type Error = &'static str;
        async fn connect(&self) -> Result<Conn, &'static str> {
            if self.fail.load(Ordering::SeqCst) {
                return Err("refused");
            }
            Ok(Conn {
                id: self.made.fetch_add(1, Ordering::SeqCst),
                open: Arc::new(true.into()),
            })
        }
        fn still_open(conn: &mut Conn) -> bool {
            conn.open.load(Ordering::SeqCst)
        }
    }

    fn settings() -> WarmSettings {
        WarmSettings {
            connections: 2,
            lifetime: Duration::from_secs(20),
            keep_for: Duration::from_secs(120),
        }
    }

    /// Lets the filler run until it waits on a timer.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fills_after_the_first_use_and_hands_out_ready_connections() {
        let counting = Arc::new(Counting::default());
        let pool = WarmPool::new(settings(), counting.clone());
        settle().await;
        assert_eq!(
            counting.made.load(Ordering::SeqCst),
            0,
            "nothing before a use"
        );
        assert!(pool.take().is_none(), "the first connection dials itself");
        settle().await;
        assert_eq!(pool.ready(), 2);
        let taken = pool.take().expect("a warm connection");
        assert_eq!(taken.id, 1, "the newest is handed out first");
        settle().await;
        assert_eq!(pool.ready(), 2, "refilled after the take");
        assert_eq!(counting.made.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_and_closed_connections_are_never_handed_out() {
        let counting = Arc::new(Counting::default());
        let pool = WarmPool::new(settings(), counting.clone());
        pool.take();
        settle().await;
        // Both warm connections are closed by the edge: take skips them and gives none.
        for (_, conn) in lock(&pool.shared.state).idle.iter() {
            conn.open.store(false, Ordering::SeqCst);
        }
        assert!(pool.take().is_none());
        settle().await;
        assert_eq!(pool.ready(), 2, "replaced");
        let before = counting.made.load(Ordering::SeqCst);
        // Past their lifetime they are replaced by the filler, not handed out.
        tokio::time::advance(Duration::from_secs(21)).await;
        settle().await;
        assert_eq!(pool.ready(), 2);
        assert_eq!(counting.made.load(Ordering::SeqCst), before + 2);
        let fresh = pool.take().expect("a fresh one");
        assert!(fresh.id >= before);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_tunnel_keeps_nothing_and_a_dead_edge_is_not_redialled() {
        let counting = Arc::new(Counting::default());
        let pool = WarmPool::new(settings(), counting.clone());
        pool.take();
        settle().await;
        assert_eq!(pool.ready(), 2);
        // No use for keep_for: emptied, and no more dials however long it stays unused.
        tokio::time::advance(Duration::from_secs(121)).await;
        settle().await;
        assert_eq!(pool.ready(), 0);
        let made = counting.made.load(Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(600)).await;
        settle().await;
        assert_eq!(counting.made.load(Ordering::SeqCst), made);

        counting.fail.store(true, Ordering::SeqCst);
        assert!(pool.take().is_none());
        tokio::time::advance(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(pool.ready(), 0);
        counting.fail.store(false, Ordering::SeqCst);
        assert_eq!(
            counting.made.load(Ordering::SeqCst),
            made,
            "a failed warm dial waits for the next use"
        );
        pool.take();
        settle().await;
        assert_eq!(pool.ready(), 2);
    }

    #[test]
    fn settings_read_from_the_configuration_with_defaults_and_located_errors() {
        let config: crate::config::AppConfig =
            serde_norway::from_str("warm:\n  connections: 0\n").expect("parse");
        assert_eq!(config.warm.connections, 0);
        assert_eq!(config.warm.lifetime, WarmSettings::default().lifetime);
        let config: crate::config::AppConfig =
            serde_norway::from_str("warm: {lifetime: 10s, keep_for: 5m}\n").expect("parse");
        assert_eq!(
            config.warm,
            WarmSettings {
                connections: 2,
                lifetime: Duration::from_secs(10),
                keep_for: Duration::from_secs(300),
            }
        );
        let config: crate::config::AppConfig = serde_norway::from_str("{}").expect("parse");
        assert_eq!(config.warm, WarmSettings::default());
        let err = serde_norway::from_str::<crate::config::AppConfig>("warm:\n  lifetime: soon\n")
            .expect_err("not a duration");
        assert!(err.to_string().contains("warm.lifetime"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn off_and_cleared_pools_hold_nothing() {
        let counting = Arc::new(Counting::default());
        let off = WarmPool::new(WarmSettings::OFF, counting.clone());
        assert!(off.take().is_none());
        settle().await;
        assert_eq!(counting.made.load(Ordering::SeqCst), 0);

        let pool = WarmPool::new(settings(), counting.clone());
        pool.take();
        settle().await;
        pool.clear();
        assert_eq!(pool.ready(), 0);
        drop(pool);
        settle().await;
        assert_eq!(
            counting.made.load(Ordering::SeqCst),
            2,
            "no filler after drop"
        );
    }
}
