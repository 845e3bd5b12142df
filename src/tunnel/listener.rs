//! The local SOCKS5 listener of one tunnel: authenticates the client with the per-install
//! secret, accepts a CONNECT to the cluster's API endpoint only, then hands the connection to
//! the carrier.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::inventory::Cluster;
use crate::secret::Secret;
use crate::tunnel::carrier::CarrierError;
use crate::tunnel::counted::Counted;
use crate::tunnel::dialer::Dialer;
use crate::tunnel::health::Health;
use crate::tunnel::keepalive::{Keepalive, Liveness};

/// A client must finish the SOCKS handshake within this time.
const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Live counters of one tunnel, shared with status readers.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Connections currently piping.
    pub open: AtomicU64,
    /// Connections accepted through the SOCKS handshake and the carrier, ever.
    pub total: AtomicU64,
    /// Local clients refused (bad greeting, bad password, forbidden destination).
    pub refused: AtomicU64,
    /// Bytes from local clients to the cluster.
    pub bytes_up: AtomicU64,
    /// Bytes from the cluster to local clients.
    pub bytes_down: AtomicU64,
}

/// What the listener needs to serve one cluster.
pub struct ListenerContext {
    /// Dials the cluster served, through its edge.
    pub dialer: Dialer,
    /// The per-install SOCKS username.
    pub username: String,
    /// The per-install SOCKS password.
    pub password: Secret,
    /// Counters.
    pub stats: Arc<TunnelStats>,
    /// The tunnel's health, told about every carrier success and failure.
    pub health: Arc<Health>,
    /// How each stream pings and notices a dead edge.
    pub keepalive: Keepalive,
    /// Asks every open stream to check its edge now.
    pub liveness: Liveness,
    /// Told when a connection ends, to give its memory back.
    pub reclaim: crate::memory::Reclaim,
}

/// Accepts connections until `cancel` fires; each connection task is tracked by `tracker` and
/// stops when `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ListenerContext>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(cluster = %ctx.dialer.cluster().name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = handle(stream, peer, &ctx) => {}
            }
            ctx.reclaim.connection_closed();
        });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, ctx: &ListenerContext) {
    let _ = stream.set_nodelay(true);
    let name = &ctx.dialer.cluster().name;
    let accepted = tokio::time::timeout(SOCKS_HANDSHAKE_TIMEOUT, accept_socks(stream, ctx)).await;
    let proto = match accepted {
        Ok(Ok(proto)) => proto,
        Ok(Err(reason)) => {
            ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(cluster = %name, %peer, %reason, "local client refused");
            return;
        }
        Err(_) => {
            ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(cluster = %name, %peer, "local client refused: SOCKS handshake timed out");
            return;
        }
    };

    // A new connection may start the browser login: kubectl waits while the user signs in.
    let edge_stream = match ctx.dialer.open().await {
        Ok(s) => s,
        Err(err) => {
            let reply = socks_reply(&err);
            tracing::warn!(cluster = %name, error = %crate::error_chain(&err), "tunnel connection failed");
            ctx.health.report_failure(&err);
            let _ = proto.reply_error(&reply).await;
            return;
        }
    };
    ctx.health.report_success();
    // Counted open before the client hears so: a status read right after the reply includes it.
    ctx.stats.total.fetch_add(1, Ordering::Relaxed);
    ctx.stats.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&ctx.stats.open);
    let local = match proto
        .reply_success(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0))
        .await
    {
        Ok(s) => s,
        Err(_) => return,
    };

    let mut local = Counted {
        inner: local,
        read: &ctx.stats.bytes_up,
        written: &ctx.stats.bytes_down,
    };
    let mut edge_stream = edge_stream.with_keepalive(ctx.keepalive, Some(ctx.liveness.clone()));
    // Either side ending ends the pipe. An error may be the edge going away (reset, or silent
    // past the keepalive's timeout): the prober checks the edge now rather than at its next
    // period, so the tunnel's state says so at once.
    if let Err(e) = crate::wire::copy::copy_bidirectional(&mut local, &mut edge_stream).await {
        tracing::info!(cluster = %name, error = %e, "connection closed with an error");
        ctx.health.probe_now();
    }
}

/// The SOCKS reply that says what went wrong, which kubectl shows as it is ("host
/// unreachable", "connection refused", ...). The full reason goes to the tunnel's status.
fn socks_reply(err: &CarrierError) -> ReplyError {
    match err {
        // The edge answered but will not let this client through.
        CarrierError::LoginRequired { .. }
        | CarrierError::ServiceTokenRejected { .. }
        | CarrierError::Credential(_) => ReplyError::ConnectionNotAllowed,
        // The edge answered, but the cluster behind it did not (502, 503, ...).
        CarrierError::Refused { .. } => ReplyError::ConnectionRefused,
        // No answer from the edge at all: not "TTL expired", which is what the SOCKS
        // timeout code reads as.
        CarrierError::Unreachable { .. } | CarrierError::Timeout(_) => ReplyError::HostUnreachable,
        CarrierError::Tls { .. }
        | CarrierError::Handshake(_)
        | CarrierError::OriginSocks(_)
        | CarrierError::Config(_) => ReplyError::GeneralFailure,
    }
}

/// Runs the SOCKS5 server side up to the command, refusing anything but an authenticated
/// CONNECT to the cluster's API endpoint. Returns a printable reason on refusal.
async fn accept_socks(
    stream: TcpStream,
    ctx: &ListenerContext,
) -> Result<Socks5ServerProtocol<TcpStream, fast_socks5::server::states::CommandRead>, String> {
    // fast-socks5 reads the 2-byte greeting and rejects any version but 5 before writing a
    // byte: an HTTP request from a browser ("GE") is dropped at once.
    let (proto, _) = Socks5ServerProtocol::accept_password_auth(stream, |user, pass| {
        user == ctx.username && constant_time_eq(pass.as_bytes(), ctx.password.expose().as_bytes())
    })
    .await
    .map_err(|e| match e {
        fast_socks5::server::SocksServerError::AuthenticationRejected => {
            "wrong SOCKS username or password".to_string()
        }
        fast_socks5::server::SocksServerError::AuthMethodUnacceptable(_) => {
            "client offered no username/password authentication".to_string()
        }
        other => other.to_string(),
    })?;
    let (proto, command, target) = proto.read_command().await.map_err(|e| e.to_string())?;
    if command != Socks5Command::TCPConnect {
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return Err(format!("SOCKS command {command:?} not supported"));
    }
    if !target_allowed(&target, ctx.dialer.cluster()) {
        let _ = proto.reply_error(&ReplyError::ConnectionNotAllowed).await;
        return Err(format!(
            "CONNECT to {target} refused: this port only reaches {}",
            ctx.dialer.cluster().api.host_port()
        ));
    }
    Ok(proto)
}

fn target_allowed(target: &TargetAddr, cluster: &Cluster) -> bool {
    let api = &cluster.api;
    match target {
        TargetAddr::Domain(host, port) => *port == api.port && host.eq_ignore_ascii_case(&api.host),
        TargetAddr::Ip(addr) => {
            addr.port() == api.port && api.host.parse::<IpAddr>().is_ok_and(|ip| ip == addr.ip())
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use aws_lc_rs::constant_time::verify_slices_are_equal;
    verify_slices_are_equal(a, b).is_ok()
}

struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> std::io::Error {
        std::io::Error::other("x")
    }

    #[test]
    fn each_failure_gets_the_socks_reply_that_means_it() {
        let cases = [
            (
                CarrierError::Timeout("connecting to the edge"),
                ReplyError::HostUnreachable,
            ),
            (
                CarrierError::Unreachable {
                    edge: "e:443".into(),
                    source: io_error(),
                },
                ReplyError::HostUnreachable,
            ),
            (
                CarrierError::Refused { status: 502 },
                ReplyError::ConnectionRefused,
            ),
            (
                CarrierError::LoginRequired { status: 302 },
                ReplyError::ConnectionNotAllowed,
            ),
            (
                CarrierError::Tls {
                    edge: "e:443".into(),
                    source: io_error(),
                },
                ReplyError::GeneralFailure,
            ),
        ];
        for (err, reply) in cases {
            let got = socks_reply(&err);
            assert_eq!(got.as_u8(), reply.as_u8(), "{err}");
        }
        // Never "TTL expired", which is what the SOCKS timeout code reads as.
        assert_ne!(
            socks_reply(&CarrierError::Timeout("x")).as_u8(),
            ReplyError::ConnectionTimeout.as_u8()
        );
    }
}
