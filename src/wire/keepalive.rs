//! Keeping streams alive and noticing dead peers, on both ends of the tunnel.
//!
//! After a laptop sleeps or changes network, a connection's peer can be gone without a word:
//! no FIN, no RST, nothing to read. An idle `kubectl get -w` would then wait forever, holding its
//! file descriptor and its place in `open_connections`. Three layers prevent that:
//!
//! - **WebSocket pings** ([`Keepalive`], applied by [`super::stream::WsStream`]): a
//!   stream that heard nothing for [`Keepalive::idle`] pings; if the peer then stays silent for
//!   [`Keepalive::timeout`], the stream fails and the connection closes. Busy streams never ping.
//! - **A check on demand** ([`Liveness`]): on a wake-up or a network change every stream pings at
//!   once, so the dead ones are closed within one timeout instead of one idle period.
//! - **TCP keepalive and user timeout** ([`tune_socket`]): the kernel's own probes, and a bound
//!   on how long sent data may stay unacknowledged, for what the WebSocket layer cannot see.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How a stream keeps itself alive and decides its peer is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Ping after hearing nothing (no frame, no accepted write) for this long.
    pub idle: Duration,
    /// After a ping, the peer must be heard from within this; else the stream fails.
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// The client's: ping an idle stream after 15 s (well inside the 100 s after which
    /// Cloudflare closes idle WebSockets), give up 10 s later. An idle stream through a dead
    /// edge is closed within 25 s, and within 10 s of a wake-up or network change.
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A shared "check your peer now" signal for a group of streams (one tunnel's).
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    notify: Arc<Notify>,
}

impl Liveness {
    /// Every stream of the group that is being read pings its peer now and fails if it does
    /// not hear back within its [`Keepalive::timeout`].
    pub fn check_now(&self) {
        self.notify.notify_waiters();
    }

    /// A future that completes at the next [`Liveness::check_now`].
    pub(crate) fn checked(&self) -> tokio::sync::futures::OwnedNotified {
        self.notify.clone().notified_owned()
    }
}

/// TCP keepalive: first probe after this much silence.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Between TCP keepalive probes.
const TCP_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered TCP keepalive probes before the kernel drops the connection.
#[cfg(not(windows))]
const TCP_PROBES: u32 = 3;
/// Longest that sent data may stay unacknowledged before the kernel drops the connection
/// (Linux): a peer that vanished while we were sending is noticed in a minute, not in the
/// ~15 minutes of retransmissions the default allows.
#[cfg(any(target_os = "linux", target_os = "android"))]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// Sets TCP_NODELAY (interactive traffic writes small frames; Nagle would hold them ~40 ms),
/// TCP keepalive and, where the system has it, the TCP user timeout. Failures are logged, not
/// fatal: the WebSocket keepalive still works.
pub fn tune_socket(stream: &tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_IDLE)
        .with_interval(TCP_INTERVAL);
    #[cfg(not(windows))]
    let keepalive = keepalive.with_retries(TCP_PROBES);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set the TCP user timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tuned_sockets_keep_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tune_socket(&client);
        let socket = socket2::SockRef::from(&client);
        assert!(socket.keepalive().unwrap());
        assert!(client.nodelay().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(socket.tcp_keepalive_time().unwrap(), TCP_IDLE);
            assert_eq!(socket.tcp_user_timeout().unwrap(), Some(TCP_USER_TIMEOUT));
        }
    }
}
