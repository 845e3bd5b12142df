//! The HTTP side of the gateway: route by `Host`, check Access credentials, dial the origin,
//! upgrade to a WebSocket and pipe; plus `GET /cdn-cgi/access/certs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::auth::{self, Refusal, Subject};
use super::config::{Application, Origin, ResolvedConfig};
use super::origin;
use super::serve::{Lifecycle, PeerAddr};
use crate::tunnel::ws_stream::{WsByteStream, websocket_config};

/// Copy buffer per direction. cloudflared uses 16 KiB; larger buffers cut syscalls on bulk
/// transfers while staying well below the WebSocket message limit.
const COPY_BUFFER: usize = 64 * 1024;

/// Shared state of the request handlers.
#[derive(Clone)]
pub(crate) struct GatewayState {
    pub(crate) config: Arc<ResolvedConfig>,
    pub(crate) life: Lifecycle,
}

/// The gateway's routes.
pub(crate) fn router(state: GatewayState) -> axum::Router {
    axum::Router::new()
        .route("/cdn-cgi/access/certs", axum::routing::get(certs))
        .fallback(tunnel)
        .with_state(state)
}

/// The request's host name without port, lower-case.
fn request_host(req: &Request) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().host().map(str::to_owned))?;
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        raw.split(':').next().unwrap_or_default()
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn app_for(state: &GatewayState, req: &Request) -> Option<(String, Arc<Application>)> {
    let host = request_host(req)?;
    let app = state.config.applications.get(&host)?.clone();
    Some((host, app))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn certs(State(state): State<GatewayState>, req: Request) -> Response {
    let Some((_, app)) = app_for(&state, &req) else {
        return plain(StatusCode::NOT_FOUND, "no application for this host\n");
    };
    match &app.jwks {
        Some(keys) => (
            [(header::CONTENT_TYPE, "application/json")],
            keys.json.clone(),
        )
            .into_response(),
        None => plain(StatusCode::NOT_FOUND, "this application has no key set\n"),
    }
}

/// What one stream did, logged as one line when it ends.
struct StreamLog<'a> {
    peer: Option<std::net::SocketAddr>,
    host: &'a str,
    mode: &'static str,
    subject: Option<&'a Subject>,
    destination: Option<&'a str>,
    started: Instant,
}

impl StreamLog<'_> {
    fn finish(&self, outcome: &str, up: u64, down: u64) {
        // Only names, addresses and counters: header values (tokens, secrets, cookies) never
        // reach this line.
        tracing::info!(
            peer = %self.peer.map_or_else(|| String::from("-"), |p| p.to_string()),
            host = self.host,
            mode = self.mode,
            subject = %self.subject.map_or_else(|| String::from("-"), ToString::to_string),
            destination = self.destination.unwrap_or("-"),
            bytes_up = up,
            bytes_down = down,
            duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            outcome,
            "stream"
        );
    }
}

fn mode_of(app: &Application) -> &'static str {
    match (&app.origin, app.socks) {
        (Origin::Bastion, _) => "bastion",
        (Origin::Tcp { .. }, true) => "socks",
        (Origin::Tcp { .. }, false) => "tcp",
    }
}

/// Whether the request is a valid WebSocket upgrade; returns its `Sec-WebSocket-Key`.
fn websocket_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    (has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && version_ok)
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY))
        .flatten()
}

async fn tunnel(State(state): State<GatewayState>, mut req: Request) -> Response {
    let started = Instant::now();
    let Some((host, app)) = app_for(&state, &req) else {
        return plain(StatusCode::NOT_FOUND, "no application for this host\n");
    };
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let mut log = StreamLog {
        peer,
        host: &host,
        mode: mode_of(&app),
        subject: None,
        destination: None,
        started,
    };
    let subject = match auth::authorize(&app, req.headers()) {
        Ok(subject) => subject,
        Err(refusal) => {
            log.finish(refusal.as_str(), 0, 0);
            return refusal_response(refusal, &host, &app.aud);
        }
    };
    log.subject = Some(&subject);
    let Some(key) = websocket_key(req.headers()).cloned() else {
        log.finish("refused: not a WebSocket upgrade", 0, 0);
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint carries TCP over WebSocket only\n",
        );
    };
    let (dest_host, dest_port) = match origin::destination(&app, req.headers()) {
        Ok(dest) => dest,
        Err(e) => {
            log.finish(&format!("refused: {e}"), 0, 0);
            let status = match e {
                origin::DestinationError::Missing => StatusCode::BAD_REQUEST,
                origin::DestinationError::NotAllowed(_) => StatusCode::FORBIDDEN,
            };
            return (status, format!("{e}\n")).into_response();
        }
    };
    let destination = origin::host_port(&dest_host, dest_port);
    log.destination = Some(&destination);
    // Dial before answering 101, so "origin down" (502) is distinct from "edge down".
    let timeout = state.config.connect_timeout;
    let dialled = if matches!(app.origin, Origin::Bastion) && app.allow.is_none() {
        origin::dial_external(&dest_host, dest_port, timeout).await
    } else {
        origin::dial(&dest_host, dest_port, timeout).await
    };
    let upstream = match dialled {
        Ok(stream) => stream,
        Err(e @ origin::DialError::Internal { .. }) => {
            log.finish(&format!("refused: {e}"), 0, 0);
            return (StatusCode::FORBIDDEN, format!("{e}\n")).into_response();
        }
        Err(e) => {
            log.finish(&format!("origin unreachable: {e}"), 0, 0);
            return plain(StatusCode::BAD_GATEWAY, "origin unreachable\n");
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let socks = app.socks;
    let ping = state.config.ping_interval;
    let cancel = state.life.cancel.clone();
    let (host, mode) = (host.clone(), log.mode);
    state.life.tracker.spawn(async move {
        let log = StreamLog {
            peer,
            host: &host,
            mode,
            subject: Some(&subject),
            destination: Some(&destination),
            started,
        };
        tokio::select! {
            () = cancel.cancelled() => log.finish("closed: gateway shutting down", 0, 0),
            () = pipe(on_upgrade, upstream, socks, ping, &log) => {}
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response error\n"))
}

fn refusal_response(refusal: Refusal, host: &str, aud: &str) -> Response {
    match refusal {
        Refusal::Missing | Refusal::Invalid => {
            let location = auth::login_location(host, aud);
            Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .body(Body::empty())
                .unwrap_or_else(|_| plain(StatusCode::FOUND, ""))
        }
        Refusal::ServiceTokenRejected => plain(StatusCode::FORBIDDEN, "Forbidden\n"),
    }
}

async fn pipe(
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut upstream: tokio::net::TcpStream,
    socks: bool,
    ping: Duration,
    log: &StreamLog<'_>,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            log.finish(&format!("upgrade failed: {e}"), 0, 0);
            return;
        }
    };
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(websocket_config()),
    )
    .await;
    let mut stream = WsByteStream::new(ws).with_ping_interval(ping);
    if socks {
        let bound = upstream
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        stream = match origin::socks_in_stream(stream, bound).await {
            Ok(stream) => stream,
            Err(e) => {
                log.finish(&format!("refused: {e}"), 0, 0);
                return;
            }
        };
    }
    match tokio::io::copy_bidirectional_with_sizes(
        &mut stream,
        &mut upstream,
        COPY_BUFFER,
        COPY_BUFFER,
    )
    .await
    {
        Ok((up, down)) => log.finish("closed", up, down),
        Err(e) => log.finish(&format!("closed with error: {e}"), 0, 0),
    }
}
