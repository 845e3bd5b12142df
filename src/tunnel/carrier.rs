//! The carrier: one WebSocket to the Access edge per accepted local connection, as
//! `cloudflared access tcp` opens them, followed by the origin mode's own handshake.

use std::sync::Arc;
use std::time::Duration;

use fast_socks5::Socks5Command;
use fast_socks5::client::{Config as SocksClientConfig, Socks5Stream};
use fast_socks5::util::target_addr::TargetAddr;
use http::HeaderValue;
use rustls_pki_types::ServerName;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::access::Credential;
use crate::inventory::{Cluster, OriginMode};
use crate::tls::ClientConfigs;
use crate::tunnel::warm::{Connect, WarmPool, WarmSettings};
use crate::wire::handshake::{self, Refusal, UpgradeError, UpgradedStream};
use crate::wire::read_ahead::ReadAhead;

/// The byte stream a carrier hands back: a WebSocket to the edge, ready for the client's bytes.
pub type EdgeStream = UpgradedStream;

use crate::wire::USER_AGENT;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a stream to the edge could not be opened. Messages never hold a credential.
#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    /// DNS or TCP failed: the edge cannot be reached.
    #[error("edge {edge} unreachable")]
    Unreachable {
        /// `host:port` dialled.
        edge: String,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake with the edge failed (certificate not trusted, wrong name, ...).
    #[error("TLS handshake with edge {edge} failed")]
    Tls {
        /// `host:port` dialled.
        edge: String,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The edge wants a (new) login: it redirected to `/cdn-cgi/access/login`, or answered
    /// 401/403.
    #[error("login required: the edge answered {status} to the upgrade")]
    LoginRequired {
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The edge refused the configured service token (403). Not a login matter: no browser
    /// can fix it; the token's id or secret must be corrected.
    #[error("the edge rejected the service token (HTTP {status}): check its client id and secret")]
    ServiceTokenRejected {
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The edge answered the upgrade with another HTTP status (502: origin unreachable, ...).
    #[error("edge refused the tunnel with HTTP {status}{}", origin_hint(*.status))]
    Refused {
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The WebSocket handshake failed for another reason.
    #[error("WebSocket handshake with edge failed")]
    Handshake(#[source] UpgradeError),
    /// The SOCKS5 handshake with the origin-side proxy failed.
    #[error("origin SOCKS5 handshake failed")]
    OriginSocks(#[source] fast_socks5::SocksError),
    /// A step did not finish in time.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// The cluster's edge settings are unusable.
    #[error("invalid edge settings: {0}")]
    Config(String),
    /// The configured Access credential could not be read (a missing token file, an unset
    /// environment variable).
    #[error("no usable Access credential")]
    Credential(#[source] crate::access::AccessError),
}

fn origin_hint(status: u16) -> &'static str {
    match status {
        502 | 503 | 504 | 530 => " (the edge cannot reach the cluster's origin)",
        404 => " (no Access application for this hostname)",
        _ => "",
    }
}

impl CarrierError {
    /// Whether the edge closed the connection before answering the upgrade: for a warm
    /// connection, one the edge let go while it waited.
    fn is_closed_before_answer(&self) -> bool {
        matches!(
            self,
            CarrierError::Handshake(UpgradeError::Closed | UpgradeError::Http(_))
        )
    }

    /// Whether the user must log in again (as opposed to a network or server fault).
    pub fn is_login_required(&self) -> bool {
        match self {
            CarrierError::LoginRequired { .. } => true,
            CarrierError::Credential(e) => e.is_login_required(),
            _ => false,
        }
    }

    /// Whether the edge refused the token we sent (so a new one may help): a redirect to the
    /// login or a 401 — never a 5xx, which says nothing about the token.
    pub fn token_refused(&self) -> bool {
        matches!(self, CarrierError::LoginRequired { .. })
    }

    /// Whether the edge let us in and said it cannot reach the cluster's origin (502, 503,
    /// 504, 530), or a `socks` origin refused the API server: the edge is up, the cluster is
    /// not.
    pub fn origin_unreachable(&self) -> bool {
        match self {
            CarrierError::Refused { status } => matches!(status, 502 | 503 | 504 | 530),
            CarrierError::OriginSocks(_) => true,
            _ => false,
        }
    }
}

/// How to reach one cluster's Access application; built once per tunnel.
pub struct Edge {
    request_url: url::Url,
    host: String,
    dial: Arc<EdgeDial>,
    warm: Option<WarmPool<EdgeDial>>,
    origin: OriginMode,
    destination_host: String,
    destination_port: u16,
    jump_destination: HeaderValue,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("url", &self.request_url.as_str())
            .field("dial", &self.dial.address)
            .field("origin", &self.origin)
            .field("warm", &self.warm.is_some())
            .finish_non_exhaustive()
    }
}

/// Where the edge is dialled and how its TLS is checked: what a connection needs before the
/// upgrade request.
struct EdgeDial {
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A connection to the edge, ready for the upgrade request.
pub(crate) enum EdgeConn {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`. Boxed: the TLS state is large and a pool holds several.
    Tls(Box<tokio_rustls::client::TlsStream<ReadAhead<TcpStream>>>),
}

impl EdgeDial {
    async fn connect(&self) -> Result<EdgeConn, CarrierError> {
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| CarrierError::Timeout("connecting to the edge"))?
            .map_err(|source| CarrierError::Unreachable {
                edge: self.address.clone(),
                source,
            })?;
        // No Nagle (kubectl writes small frames), TCP keepalive, a bound on unacknowledged data.
        crate::tunnel::keepalive::tune_socket(&tcp);
        let Some((connector, name)) = &self.tls else {
            return Ok(EdgeConn::Plain(tcp));
        };
        // Read-ahead under TLS: rustls reads 4 KiB at a time; the buffer exists only while
        // data flows.
        let tls = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            connector.connect(name.clone(), ReadAhead::new(tcp)),
        )
        .await
        .map_err(|_| CarrierError::Timeout("in the TLS handshake with the edge"))?
        .map_err(|source| CarrierError::Tls {
            edge: self.address.clone(),
            source,
        })?;
        Ok(EdgeConn::Tls(Box::new(tls)))
    }
}

impl Connect for EdgeDial {
    type Conn = EdgeConn;
    type Error = String;

    async fn connect(&self) -> Result<EdgeConn, String> {
        EdgeDial::connect(self)
            .await
            .map_err(|e| crate::error_chain(&e))
    }

    fn still_open(conn: &mut EdgeConn) -> bool {
        // Nothing is due before the request: a read that would block means the edge still
        // holds the connection. Under TLS the read also takes in what the edge may send
        // unasked after the handshake (session tickets), which yields no bytes.
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = match conn {
            EdgeConn::Plain(tcp) => std::pin::Pin::new(tcp).poll_read(&mut cx, &mut buf),
            EdgeConn::Tls(tls) => std::pin::Pin::new(tls.as_mut()).poll_read(&mut cx, &mut buf),
        };
        polled.is_pending()
    }
}

impl Edge {
    /// Prepares the edge of `cluster`: URL, address to dial, TLS settings (from `tls`, shared
    /// with the other tunnels that trust the same roots).
    pub fn for_cluster(cluster: &Cluster, tls: &ClientConfigs) -> Result<Self, CarrierError> {
        let url = cluster.access.url.clone();
        let host = url
            .host_str()
            .ok_or_else(|| CarrierError::Config(format!("{url} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| CarrierError::Config(format!("{url} has no port")))?;
        let address = match &cluster.access.connect_to {
            Some(addr) => addr.clone(),
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        };
        let tls = match url.scheme() {
            "wss" => {
                let config = tls
                    .get(cluster.access.edge_ca_pem.as_deref().map(str::as_bytes))
                    .map_err(|e| CarrierError::Config(format!("edge CA: {e}")))?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| CarrierError::Config(format!("{host} is not a valid TLS name")))?;
                Some((TlsConnector::from(config), name))
            }
            "ws" => None,
            other => {
                return Err(CarrierError::Config(format!(
                    "unsupported scheme {other}:// for the edge"
                )));
            }
        };
        let jump_destination = HeaderValue::from_str(&cluster.api.host_port())
            .map_err(|_| CarrierError::Config("API host is not a valid header value".into()))?;
        Ok(Self {
            request_url: url,
            host,
            dial: Arc::new(EdgeDial { address, tls }),
            warm: None,
            origin: cluster.access.origin,
            destination_host: cluster.api.host.clone(),
            destination_port: cluster.api.port,
            jump_destination,
        })
    }

    /// The hostname of the Access application.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Keeps warm connections for this edge (see [`crate::tunnel::warm`]); `connections: 0`
    /// keeps none.
    pub fn with_warm(mut self, settings: WarmSettings) -> Self {
        self.warm = (settings.connections > 0).then(|| WarmPool::new(settings, self.dial.clone()));
        self
    }

    /// Closes the warm connections (after a wake-up or a network change they may be dead).
    pub fn clear_warm(&self) {
        if let Some(warm) = &self.warm {
            warm.clear();
        }
    }

    /// Opens one stream through the edge to the cluster's API server for a local connection:
    /// a warm connection if one is ready (else dial and TLS), the WebSocket upgrade with the
    /// credential, then the origin mode's handshake.
    pub async fn open(&self, credential: &Credential) -> Result<EdgeStream, CarrierError> {
        let ws = match self.warm.as_ref().and_then(WarmPool::take) {
            Some(conn) => match self.upgrade_on(conn, credential).await {
                // The edge closed it between the check and the request: dial as if none
                // had been warm. A refusal is the edge's answer and is not asked twice.
                Err(e) if e.is_closed_before_answer() => {
                    tracing::debug!(edge = %self.dial.address, "a warm connection was closed by the edge; dialling");
                    self.upgrade_on(self.dial.connect().await?, credential)
                        .await?
                }
                other => other?,
            },
            None => {
                self.upgrade_on(self.dial.connect().await?, credential)
                    .await?
            }
        };
        self.after_upgrade(ws).await
    }

    /// Opens one stream as [`open`](Self::open) does, always on a new connection: for the
    /// health probe, which measures the whole path and is no use of the tunnel.
    pub async fn open_fresh(&self, credential: &Credential) -> Result<EdgeStream, CarrierError> {
        let ws = self
            .upgrade_on(self.dial.connect().await?, credential)
            .await?;
        self.after_upgrade(ws).await
    }

    async fn after_upgrade(&self, ws: EdgeStream) -> Result<EdgeStream, CarrierError> {
        match self.origin {
            OriginMode::Tcp | OriginMode::Bastion => Ok(ws),
            OriginMode::Socks => self.origin_socks_handshake(ws).await,
        }
    }

    async fn upgrade_on(
        &self,
        conn: EdgeConn,
        credential: &Credential,
    ) -> Result<EdgeStream, CarrierError> {
        let request = self.request(credential)?;
        let upgrade = async {
            match conn {
                EdgeConn::Plain(tcp) => handshake::client_upgrade(tcp, request).await,
                EdgeConn::Tls(tls) => handshake::client_upgrade(*tls, request).await,
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade)
            .await
            .map_err(|_| CarrierError::Timeout("in the WebSocket upgrade"))?
            .map_err(|e| match e {
                UpgradeError::Refused(refusal) => classify_refusal(&refusal, credential),
                other => CarrierError::Handshake(other),
            })
    }

    fn request(&self, credential: &Credential) -> Result<http::Request<()>, CarrierError> {
        let mut request =
            handshake::client_request(&self.request_url).map_err(CarrierError::Handshake)?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        if self.origin == OriginMode::Bastion {
            headers.insert(
                crate::wire::access::JUMP_DESTINATION_HEADER,
                self.jump_destination.clone(),
            );
        }
        credential
            .apply(headers)
            .map_err(|e| CarrierError::Config(e.to_string()))?;
        Ok(request)
    }

    async fn origin_socks_handshake(&self, ws: EdgeStream) -> Result<EdgeStream, CarrierError> {
        let handshake = async {
            let mut socks =
                Socks5Stream::use_stream(ws, None, SocksClientConfig::default()).await?;
            let target = match self.destination_host.parse::<std::net::IpAddr>() {
                Ok(ip) => TargetAddr::Ip((ip, self.destination_port).into()),
                Err(_) => TargetAddr::Domain(self.destination_host.clone(), self.destination_port),
            };
            socks.request(Socks5Command::TCPConnect, target).await?;
            Ok::<_, fast_socks5::SocksError>(socks.get_socket())
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| CarrierError::Timeout("in the origin SOCKS5 handshake"))?
            .map_err(CarrierError::OriginSocks)
    }
}

/// Sorts a refused upgrade into what the user can act on. The edge signals "log in" with a
/// redirect to `/cdn-cgi/access/login` (cloudflared's check), or 401/403.
fn classify_refusal(refusal: &Refusal, credential: &Credential) -> CarrierError {
    let status = refusal.status.as_u16();
    // A refused service token is the operator's problem, not a login: a browser cannot fix it
    // (cloudflared#1673 opened one per connection).
    let says_service_token = String::from_utf8_lossy(&refusal.body)
        .to_ascii_lowercase()
        .contains("service token");
    if (status == 401 || status == 403)
        && (says_service_token || matches!(credential, Credential::ServiceToken { .. }))
    {
        return CarrierError::ServiceTokenRejected { status };
    }
    let to_login = refusal.status.is_redirection()
        && refusal
            .headers
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .is_some_and(is_login_location);
    if to_login || status == 401 || status == 403 {
        CarrierError::LoginRequired { status }
    } else {
        CarrierError::Refused { status }
    }
}

/// Whether a redirect (absolute or relative) leads to the Access login page.
fn is_login_location(location: &str) -> bool {
    let path = match url::Url::parse(location) {
        Ok(url) => url.path().to_string(),
        Err(_) => location.to_string(),
    };
    crate::wire::access::is_login_path(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_redirects_are_recognised_absolute_or_relative() {
        assert!(is_login_location(
            "https://team.cloudflareaccess.com/cdn-cgi/access/login/app.example.com?kid=abc"
        ));
        assert!(is_login_location("/cdn-cgi/access/login/app.example.com"));
        assert!(!is_login_location("https://app.example.com/somewhere-else"));
        assert!(!is_login_location("/login"));
    }

    fn answer(status: u16, location: Option<&str>, body: &str) -> Refusal {
        let mut headers = http::HeaderMap::new();
        if let Some(l) = location {
            headers.insert(http::header::LOCATION, l.parse().expect("a header value"));
        }
        Refusal {
            status: http::StatusCode::from_u16(status).expect("a status"),
            headers,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn a_rejected_service_token_is_not_a_login_and_5xx_refuses_no_token() {
        let service = Credential::ServiceToken {
            client_id: "id.access".into(),
            client_secret: crate::secret::Secret::new("s"),
        };
        let token = Credential::Token(crate::secret::Secret::new("t"));
        let err = classify_refusal(
            &answer(403, None, "forbidden: service token rejected"),
            &service,
        );
        assert!(matches!(
            err,
            CarrierError::ServiceTokenRejected { status: 403 }
        ));
        assert!(!err.is_login_required() && !err.token_refused());
        // The body alone says so, whatever was sent.
        let err = classify_refusal(
            &answer(403, None, "forbidden: service token rejected"),
            &Credential::None,
        );
        assert!(matches!(err, CarrierError::ServiceTokenRejected { .. }));
        let err = classify_refusal(
            &answer(
                302,
                Some("https://t.cloudflareaccess.com/cdn-cgi/access/login/a?kid=x"),
                "",
            ),
            &token,
        );
        assert!(err.is_login_required() && err.token_refused());
        let err = classify_refusal(&answer(401, None, "unauthorized"), &token);
        assert!(err.token_refused());
        for status in [500, 502, 503] {
            let err = classify_refusal(&answer(status, None, ""), &token);
            assert!(!err.token_refused() && !err.is_login_required(), "{status}");
        }
    }

    #[test]
    fn only_an_edge_that_cannot_reach_the_origin_says_the_origin_is_unreachable() {
        let token = Credential::Token(crate::secret::Secret::new("t"));
        for status in [502, 503, 504, 530] {
            assert!(
                classify_refusal(&answer(status, None, ""), &token).origin_unreachable(),
                "{status}"
            );
        }
        for status in [401, 404, 500] {
            assert!(
                !classify_refusal(&answer(status, None, ""), &token).origin_unreachable(),
                "{status}"
            );
        }
        assert!(!CarrierError::Timeout("x").origin_unreachable());
    }
}
