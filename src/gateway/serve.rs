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
use crate::wire::read_ahead::ReadAhead;

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

impl ServeLimits {
    /// The gateway's default counts and times, for the lab's fake API servers: no per-client
    /// limit below the overall one (their clients all come from loopback), and nothing closed
    /// to make room, because their connections never become a gateway stream (nothing marks
    /// them [authenticated](Ticket::authenticated)) and some of them live long: watches, logs
    /// followed, port-forwards. (With the unauthenticated pool as large as the whole, a full
    /// pool means a full server, which refuses at accept before anything would be closed.)
    #[cfg(feature = "lab")]
    pub(crate) fn without_eviction() -> Self {
        let limits = super::config::LimitsConfig::default();
        Self {
            tls_handshake_timeout: limits.tls_handshake_timeout,
            request_timeout: limits.request_timeout,
            admission: Admission::new(super::admission::ConnectionLimits {
                max_connections: limits.max_connections,
                per_client: limits.max_connections,
                unauthenticated: limits.max_connections,
            }),
        }
    }
}

/// The most a client may send as one request's start line and headers, and so the most the
/// HTTP server buffers for a connection that has not authenticated (hyper's default, about
/// 400 KiB, times `max_unauthenticated` trickling connections would be 400 MiB). Past it the
/// request is answered 431 and the connection closed. Access tokens and cookies are a few
/// KiB. The number of headers keeps hyper's default, 100 (also 431 past it): setting it
/// would move hyper's header array from the stack to the heap on every request.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

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
        Some(acceptor) => match tls_handshake(&acceptor, tcp, limits.tls_handshake_timeout).await {
            Ok(tls) => serve_http(TokioIo::new(tls), peer, router, limits).await,
            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        },
        None => serve_http(TokioIo::new(tcp), peer, router, limits).await,
    }
}

/// The server side of a TLS handshake on `io` within `timeout` (past it, an error of kind
/// `TimedOut`), with read-ahead under it started only once the handshake is done.
async fn tls_handshake<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: S,
    timeout: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<ReadAhead<S>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // rustls reads the socket 4 KiB at a time; read-ahead turns an upload's many small
    // `recv`s into one per 64 KiB, with a buffer that exists only while data flows. It
    // starts after the handshake: a handshake is a few small records, and a client
    // trickling one byte at a time must not make the gateway allocate 64 KiB per read.
    let accepted = tokio::time::timeout(timeout, acceptor.accept(ReadAhead::deferred(io))).await;
    let mut tls = accepted.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
    })??;
    tls.get_mut().0.start();
    Ok(tls)
}

async fn serve_http<I>(io: I, peer: SocketAddr, router: axum::Router, limits: &ServeLimits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
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

#[cfg(all(test, feature = "lab"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

    use super::*;
    use crate::wire::read_ahead::READ_AHEAD;

    /// A stream that remembers the largest read asked of it.
    struct Recording<S> {
        inner: S,
        largest: Arc<AtomicUsize>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.largest.fetch_max(buf.remaining(), Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Through a real handshake the socket is read without read-ahead (no read asks for
    /// more than rustls does, and no buffer is held), and read-ahead is on for what follows.
    #[tokio::test]
    async fn read_ahead_starts_only_after_the_tls_handshake() {
        let ca = crate::lab::pki::LabCa::new("serve test CA").unwrap();
        let leaf = ca.issue(&["gw.test"]).unwrap();
        let server =
            crate::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let client = crate::tls::client_config(Some(ca.cert_pem().as_bytes())).unwrap();
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let (handshaken, go) = tokio::sync::oneshot::channel::<()>();
        let client = tokio::spawn(async move {
            let name = rustls::pki_types::ServerName::try_from("gw.test").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, client_io)
                .await
                .unwrap();
            // Written once the server is done, so the handshake's reads cannot take it in.
            go.await.unwrap();
            tls.write_all(b"after the handshake").await.unwrap();
            tls.flush().await.unwrap();
            // Kept open until the server has read.
            let mut byte = [0u8; 1];
            let _ = tls.read(&mut byte).await;
        });
        let largest = Arc::new(AtomicUsize::new(0));
        let recording = Recording {
            inner: server_io,
            largest: largest.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let mut tls = tls_handshake(&acceptor, recording, Duration::from_secs(5))
            .await
            .unwrap();
        let during = largest.load(Ordering::Relaxed);
        assert!(during > 0 && during < READ_AHEAD, "{during}");
        assert_eq!(tls.get_ref().0.buffer_capacity(), 0);
        handshaken.send(()).unwrap();
        let mut text = [0u8; 19];
        tls.read_exact(&mut text).await.unwrap();
        assert_eq!(&text, b"after the handshake");
        assert!(largest.load(Ordering::Relaxed) >= READ_AHEAD);
        drop(tls);
        client.await.unwrap();
    }
}
