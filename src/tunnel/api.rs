//! The cluster's own answer: `GET /version` from its API server, asked with kube's client
//! through a stream the dialer opened, with the cluster's CA and TLS server name. The edge
//! being up says the tunnel can carry bytes; this says the cluster is on the other end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::client::ConfigExt;

use crate::inventory::Cluster;
use crate::sync::lock;
use crate::tunnel::carrier::EdgeStream;

/// Why the API server gave no answer through a stream that reached it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The cluster's API settings cannot make a client (a CA that is not PEM, a bad name).
    #[error("cannot ask the API server: {0}")]
    Config(String),
    /// The API server did not answer over the stream: TLS failed (wrong CA, wrong name) or the
    /// connection closed.
    #[error("the API server did not answer")]
    Unanswered(#[source] kube::Error),
    /// The API server answered `/version` with an error other than "who are you".
    #[error("the API server answered /version with HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API server's message (a `Status` object's message, or the body's text).
        message: String,
    },
}

/// What the API server said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiAnswer {
    /// `gitVersion` of `/version` (e.g. `v1.31.4`); `None` when the server wants credentials
    /// even for `/version` (401/403): it answered, which is what the probe asks.
    pub version: Option<String>,
}

/// A kube client for one cluster's API server that connects through whatever stream it is
/// handed: built once per tunnel, used once per probe.
pub struct ApiProbe {
    client: kube::Client,
    slot: StreamSlot,
}

impl std::fmt::Debug for ApiProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiProbe").finish_non_exhaustive()
    }
}

impl ApiProbe {
    /// A client for `cluster`'s API server: its URL, CA bundle (system roots when none) and TLS
    /// server name, as kubectl uses them from the kubeconfig we write.
    pub fn for_cluster(cluster: &Cluster) -> Result<Self, ApiError> {
        let url: http::Uri = cluster
            .api
            .url
            .as_str()
            .parse()
            .map_err(|e| ApiError::Config(format!("API URL {}: {e}", cluster.api.url)))?;
        let mut config = kube::Config::new(url);
        if let Some(pem) = &cluster.api.ca_pem {
            let certs = crate::tls::certs_from_pem(pem.as_bytes())
                .map_err(|e| ApiError::Config(format!("API CA: {e}")))?;
            config.root_cert = Some(certs.into_iter().map(|c| c.to_vec()).collect());
        }
        config.tls_server_name = cluster.api.tls_server_name.clone();
        let slot = StreamSlot::default();
        let https = config
            .rustls_https_connector_with_connector(slot.clone())
            .map_err(|e| ApiError::Config(crate::error_chain(&e)))?;
        // Nothing is pooled: every probe is one new stream, closed when its answer is read.
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build::<_, kube::client::Body>(https);
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .service(http);
        Ok(Self {
            client: kube::Client::new(service, config.default_namespace),
            slot,
        })
    }

    /// Asks `/version` over `stream`, a stream to the API server's TLS port (the carrier's,
    /// after the origin mode's handshake). The stream is closed when this returns.
    pub async fn version(&self, stream: EdgeStream) -> Result<ApiAnswer, ApiError> {
        *lock(&self.slot.0) = Some(stream);
        let answer = self.client.apiserver_version().await;
        // A stream the client never took (an error before connecting) is dropped here.
        lock(&self.slot.0).take();
        match answer {
            Ok(info) => Ok(ApiAnswer {
                version: Some(info.git_version),
            }),
            Err(kube::Error::Api(status)) if matches!(status.code, 401 | 403) => {
                Ok(ApiAnswer { version: None })
            }
            Err(kube::Error::Api(status)) => Err(ApiError::Status {
                status: status.code,
                message: status.message.chars().take(200).collect(),
            }),
            Err(e) => Err(ApiError::Unanswered(e)),
        }
    }
}

/// The connector kube's HTTPS layer dials through: it hands over the one stream put in it.
#[derive(Clone, Default)]
struct StreamSlot(Arc<Mutex<Option<EdgeStream>>>);

impl tower::Service<http::Uri> for StreamSlot {
    type Response = CarrierIo;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<CarrierIo, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        std::future::ready(
            lock(&self.0)
                .take()
                .map(|stream| CarrierIo(TokioIo::new(stream)))
                .ok_or_else(|| std::io::Error::other("the probe's stream was already used")),
        )
    }
}

/// A carrier stream as hyper's client wants a connection.
struct CarrierIo(TokioIo<EdgeStream>);

impl Connection for CarrierIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for CarrierIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CarrierIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
