//! The accept loop shared by the gateway and the lab's fake API server: TCP_NODELAY and
//! keepalive on every socket, an optional TLS handshake with a time limit, HTTP/1.1 with upgrades, and a
//! [`Lifecycle`] that stops the loop and every connection together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time a client has to finish the TLS handshake.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Binds `listen` and serves `router` on it until `life` is cancelled. Returns the bound address.
pub(crate) async fn bind_and_serve(
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    life: Lifecycle,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let tracker = life.tracker.clone();
    tracker.spawn(accept_loop(listener, acceptor, router, life));
    Ok(local_addr)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    life: Lifecycle,
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
        // No Nagle, TCP keepalive, a bound on unacknowledged data: a client that vanished is
        // noticed by the kernel too.
        crate::wire::keepalive::tune_socket(&tcp);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let cancel = life.cancel.clone();
        let reclaim = life.reclaim.clone();
        life.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_connection(tcp, peer, acceptor, router) => {}
            }
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
) {
    match acceptor {
        Some(acceptor) => {
            // rustls reads the socket 4 KiB at a time; read-ahead turns an upload's many small
            // `recv`s into one per 64 KiB, with a buffer that exists only while data flows.
            let tcp = crate::wire::read_ahead::ReadAhead::new(tcp);
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_http(TokioIo::new(tls), peer, router).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => serve_http(TokioIo::new(tcp), peer, router).await,
    }
}

async fn serve_http<I>(io: I, peer: SocketAddr, router: axum::Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let router = router.layer(axum::Extension(PeerAddr(peer)));
    let service = TowerToHyperService::new(router);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
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
