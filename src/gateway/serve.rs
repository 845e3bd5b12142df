//! The accept loop shared by the gateway and the lab's fake API server: admission (the
//! connection limits, [`super::admission`]), TCP_NODELAY and keepalive on every socket, an
//! optional TLS handshake with a time limit, HTTP/1.1 with upgrades and a time limit on each
//! request's headers, and a [`Lifecycle`] that stops the loop and every connection together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{Admission, Ticket};

/// What a server allows its connections: how many (see [`Admission`]) and how long they may
/// take before they have said what they want.
#[derive(Clone)]
pub(crate) struct ServeLimits {
    /// Time a client has to finish the TLS handshake.
    pub(crate) tls_handshake_timeout: Duration,
    /// Time a client has to send a request's headers, counted from the end of the handshake
    /// or the previous response (an idle keep-alive connection is closed after it too).
    pub(crate) request_timeout: Duration,
    /// The connection counts.
    pub(crate) admission: Arc<Admission>,
}

/// The cancellation signal and the task set of one server: every task it spawns (accept loop,
/// connections, upgraded streams) is tracked so shutdown can wait for them with a bound.
#[derive(Clone, Default)]
pub(crate) struct Lifecycle {
    /// Cancelled when the server stops.
    pub(crate) cancel: CancellationToken,
    /// Every task of the server.
    pub(crate) tracker: TaskTracker,
    /// Told when a connection or stream ends, to give its memory back.
    pub(crate) reclaim: crate::memory::Reclaim,
}

impl Lifecycle {
    /// Stops everything and waits up to `bound` for the tasks to end; `false` when some did not.
    pub(crate) async fn shutdown(&self, bound: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(bound, self.tracker.wait())
            .await
            .is_ok()
    }
}

impl Default for ServeLimits {
    /// The gateway's default limits, without a per-client limit below the overall one: for
    /// the lab's servers, whose clients all come from one address.
    fn default() -> Self {
        let limits = super::config::LimitsConfig::default();
        Self {
            tls_handshake_timeout: limits.tls_handshake_timeout,
            request_timeout: limits.request_timeout,
            admission: Admission::new(super::admission::ConnectionLimits {
                max_connections: limits.max_connections,
                per_client: limits.max_connections,
                unauthenticated: limits.max_unauthenticated,
            }),
        }
    }
}

/// Binds `listen` and serves `router` on it until `life` is cancelled. Returns the bound address.
pub(crate) async fn bind_and_serve(
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    life: Lifecycle,
    limits: ServeLimits,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let tracker = life.tracker.clone();
    tracker.spawn(accept_loop(listener, acceptor, router, life, limits));
    Ok(local_addr)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    life: Lifecycle,
    limits: ServeLimits,
) {
    loop {
        let accepted = tokio::select! {
            () = life.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ticket = match limits.admission.admit(peer.ip()) {
            Ok(ticket) => Arc::new(ticket),
            Err(refused) => {
                tracing::debug!(%peer, ?refused, "connection refused: limit reached");
                // A reset, not a FIN: no TIME_WAIT left behind for each refusal of a flood.
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                continue;
            }
        };
        // No Nagle, TCP keepalive, a bound on unacknowledged data: a client that vanished is
        // noticed by the kernel too.
        crate::wire::keepalive::tune_socket(&tcp);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let cancel = life.cancel.clone();
        let reclaim = life.reclaim.clone();
        let limits = limits.clone();
        life.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = ticket.evicted() => {
                    tracing::debug!(%peer, "unauthenticated connection closed to make room");
                }
                () = serve_connection(tcp, peer, acceptor, router, &limits, ticket.clone()) => {}
            }
            drop(ticket);
            reclaim.connection_closed();
        });
    }
    // Dropping the listener here closes the port.
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: &ServeLimits,
    ticket: Arc<Ticket>,
) {
    let router = router
        .layer(axum::Extension(PeerAddr(peer)))
        .layer(axum::Extension(Admitted(ticket)));
    match acceptor {
        Some(acceptor) => {
            // rustls reads the socket 4 KiB at a time; read-ahead turns an upload's many small
            // `recv`s into one per 64 KiB, with a buffer that exists only while data flows. It
            // starts after the handshake: a handshake is a few small records, and a client
            // trickling one byte at a time must not make the gateway allocate 64 KiB per read.
            let tcp = crate::wire::read_ahead::ReadAhead::deferred(tcp);
            match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(mut tls)) => {
                    tls.get_mut().0.start();
                    serve_http(TokioIo::new(tls), peer, router, limits).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => serve_http(TokioIo::new(tcp), peer, router, limits).await,
    }
}

async fn serve_http<I>(io: I, peer: SocketAddr, router: axum::Router, limits: &ServeLimits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// The client's address, available to handlers as an extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// The connection's place in the limits, available to handlers as an extension: a stream
/// keeps it for its life and marks it authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Admitted(pub(crate) Arc<Ticket>);
