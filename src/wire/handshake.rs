//! The WebSocket upgrade (RFC 6455 §4) over HTTP/1.1 through hyper, on both ends; after it the
//! connection is a [`WsStream`].
//!
//! tungstenite provides the key and its accept value; hyper the HTTP exchange, so a refused
//! upgrade comes back as a real response (status, headers, a bounded body) for the caller to
//! sort into "log in", "wrong service token" or "refused".

use std::future::poll_fn;
use std::pin::pin;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::Role;
use super::stream::WsStream;

/// An upgraded connection, whatever it runs on (TCP, TLS).
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// The byte stream of an upgraded WebSocket.
pub type UpgradedStream = WsStream<Upgraded>;

/// At most this much of a refusal's body is read: enough for an error page's text.
const MAX_REFUSAL_BODY: usize = 16 * 1024;

/// Why an upgrade did not give a WebSocket. Messages hold no header values.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The HTTP exchange failed (connection closed, malformed answer, ...).
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    /// The server closed the connection without answering.
    #[error("the server closed the connection without answering the upgrade")]
    Closed,
    /// The server answered with another status than 101.
    #[error("the server answered {} to the upgrade", .0.status)]
    Refused(Box<Refusal>),
    /// A 101 without `Upgrade: websocket`, or with a `Sec-WebSocket-Accept` that does not match
    /// our key: not a WebSocket server (or a confused proxy).
    #[error("the server's 101 answer is not a WebSocket upgrade ({0})")]
    NotWebSocket(&'static str),
    /// The request cannot be made from the URL given.
    #[error("invalid upgrade request: {0}")]
    Request(&'static str),
}

/// A refused upgrade: what the server answered instead of 101.
pub struct Refusal {
    /// The status.
    pub status: StatusCode,
    /// The headers (`Location` for a redirect to the login).
    pub headers: HeaderMap,
    /// The start of the body (at most 16 KiB).
    pub body: Bytes,
}

impl std::fmt::Debug for Refusal {
    // Headers may carry cookies; only the status and where a redirect leads are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusal")
            .field("status", &self.status)
            .field("location", &self.headers.get(header::LOCATION))
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// A `GET` for `url` (`ws://` or `wss://`) in origin form with its `Host` header, ready for
/// the caller's own headers and [`client_upgrade`].
pub fn client_request(url: &url::Url) -> Result<Request<()>, UpgradeError> {
    let host = url.host_str().ok_or(UpgradeError::Request("no host"))?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let mut target = url.path().to_owned();
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    Request::get(target)
        .header(header::HOST, authority)
        .body(())
        .map_err(|_| UpgradeError::Request("not a valid request target"))
}

/// Sends `request` on `io` as a WebSocket upgrade and, on 101 with the right accept key,
/// returns the WebSocket. Any other answer is [`UpgradeError::Refused`].
pub async fn client_upgrade<S>(
    io: S,
    mut request: Request<()>,
) -> Result<UpgradedStream, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let headers = request.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).map_err(|_| UpgradeError::Request("key"))?,
    );
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(UpgradeError::Http)?;
    let mut conn = pin!(conn.with_upgrades());
    let request = request.map(|()| http_body_util::Empty::new());
    let mut send = pin!(sender.send_request(request));
    // The connection may finish first (it hands a 101's connection over, or ends after an
    // answer it cannot reuse); the answer is then already in hand.
    let mut conn_done = false;
    let response = tokio::select! {
        biased;
        response = send.as_mut() => response,
        ended = conn.as_mut() => {
            ended.map_err(UpgradeError::Http)?;
            conn_done = true;
            send.await
        }
    }
    .map_err(|e| {
        if e.is_canceled() || e.is_incomplete_message() {
            UpgradeError::Closed
        } else {
            UpgradeError::Http(e)
        }
    })?;
    drop(sender);
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        // The connection is driven until the body is read (it ends there: no more requests).
        let body = if conn_done {
            read_bounded(body).await
        } else {
            tokio::join!(read_bounded(body), conn).0
        };
        return Err(UpgradeError::Refused(Box::new(Refusal {
            status: parts.status,
            headers: parts.headers,
            body,
        })));
    }
    let upgrade_ok = response
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade_ok {
        return Err(UpgradeError::NotWebSocket("no Upgrade: websocket"));
    }
    let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept_ok = response
        .headers()
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !accept_ok {
        return Err(UpgradeError::NotWebSocket("wrong Sec-WebSocket-Accept"));
    }
    let upgraded = if conn_done {
        hyper::upgrade::on(response).await
    } else {
        tokio::try_join!(hyper::upgrade::on(response), conn.as_mut()).map(|(upgraded, ())| upgraded)
    }
    .map_err(UpgradeError::Http)?;
    Ok(WsStream::new(TokioIo::new(upgraded), Role::Client))
}

/// The `Sec-WebSocket-Accept` value that answers a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
}

/// The server's WebSocket on a connection hyper upgraded after our 101.
pub fn server_stream(upgraded: hyper::upgrade::Upgraded) -> UpgradedStream {
    WsStream::new(TokioIo::new(upgraded), Role::Server)
}

/// The first [`MAX_REFUSAL_BODY`] bytes of `body` (less if it fails midway).
async fn read_bounded(mut body: hyper::body::Incoming) -> Bytes {
    use hyper::body::Body as _;
    let mut out = BytesMut::new();
    while out.len() < MAX_REFUSAL_BODY {
        let frame = poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_REFUSAL_BODY - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn requests_are_in_origin_form_with_the_host() {
        let url = url::Url::parse("wss://app.example.com/tunnel?x=1").unwrap();
        let req = client_request(&url).unwrap();
        assert_eq!(req.uri(), "/tunnel?x=1");
        assert_eq!(req.headers()[header::HOST], "app.example.com");
        let url = url::Url::parse("ws://[::1]:8080/").unwrap();
        let req = client_request(&url).unwrap();
        assert_eq!(req.headers()[header::HOST], "[::1]:8080");
    }

    /// Our client handshake and framing against tokio-tungstenite's server.
    // The callback's error type is tungstenite's.
    #[allow(clippy::result_large_err)]
    #[tokio::test]
    async fn upgrades_against_tungstenite_and_carries_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_hdr_async(
                tcp,
                |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    assert_eq!(req.headers()["user-agent"], "test-agent");
                    Ok(resp)
                },
            )
            .await
            .unwrap();
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_binary() {
                    ws.send(msg).await.unwrap();
                }
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let url = url::Url::parse(&format!("ws://{addr}/")).unwrap();
        let mut req = client_request(&url).unwrap();
        req.headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static("test-agent"));
        let mut ws = client_upgrade(tcp, req).await.unwrap();
        ws.write_all(b"through tungstenite").await.unwrap();
        let mut back = [0u8; 19];
        ws.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"through tungstenite");
        ws.shutdown().await.unwrap();
        server.await.unwrap();
    }

    /// A server that answers anything but a proper 101: its answer comes back whole (status,
    /// `Location`, body) or as "not a WebSocket".
    async fn answer_with(raw: &'static str) -> UpgradeError {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            tcp.write_all(raw.as_bytes()).await.unwrap();
            let _ = tcp.read(&mut buf).await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let url = url::Url::parse(&format!("ws://{addr}/")).unwrap();
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client_upgrade(tcp, client_request(&url).unwrap()),
        )
        .await
        .expect("the handshake ends");
        match result {
            Ok(_) => panic!("upgraded though the server refused"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn refusals_come_back_with_status_location_and_body() {
        let err = answer_with(
            "HTTP/1.1 302 Found\r\nLocation: /cdn-cgi/access/login/app\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let UpgradeError::Refused(refusal) = err else {
            panic!("{err:?}")
        };
        assert_eq!(refusal.status, 302);
        assert_eq!(
            refusal.headers[header::LOCATION],
            "/cdn-cgi/access/login/app"
        );

        let err = answer_with(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 23\r\n\r\nservice token rejected\n",
        )
        .await;
        let UpgradeError::Refused(refusal) = err else {
            panic!("{err:?}")
        };
        assert_eq!(refusal.status, 403);
        assert_eq!(&refusal.body[..], b"service token rejected\n");

        let err = answer_with(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
        )
        .await;
        assert!(matches!(err, UpgradeError::NotWebSocket(_)), "{err:?}");
    }
}
