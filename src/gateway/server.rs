//! The HTTP side of the gateway: route by `Host`, check Access credentials, dial the origin,
//! upgrade to a WebSocket and pipe; plus `GET /cdn-cgi/access/certs`, and the Access login's
//! hosts and endpoints when it is configured ([`super::login`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::auth::{self, Refusal, Subject};
use super::config::{Application, Origin, ResolvedConfig};
use super::login::{self, LoginState};
use super::origin;
use super::serve::{Admitted, Lifecycle, PeerAddr};
use crate::wire::counted::Counted;
use crate::wire::handshake;

/// Shared state of the request handlers.
#[derive(Clone)]
pub(crate) struct GatewayState {
    pub(crate) config: Arc<ResolvedConfig>,
    pub(crate) life: Lifecycle,
    /// What the Access login keeps, when it is configured.
    pub(crate) login: Option<Arc<LoginState>>,
}

/// The gateway's routes: everything goes through [`dispatch`], which routes by `Host` first.
pub(crate) fn router(state: GatewayState) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

/// The request's host name (lower-case, without port) and the port it names, if any.
fn request_host(req: &Request) -> Option<(String, Option<u16>)> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            req.uri()
                .authority()
                .map(|a| a.as_str().rsplit('@').next().unwrap_or_default().to_owned())
        })?;
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').unwrap_or((rest, ""));
        (host, tail.strip_prefix(':'))
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw.as_str(), None),
        }
    };
    let port = port.and_then(|p| p.parse::<u16>().ok());
    Some((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// Routes by `Host`: the Access login's auth domain and transfer service when configured, else
/// an application (its JWKS, its login endpoints, or a tunnel).
async fn dispatch(State(state): State<GatewayState>, req: Request) -> Response {
    let Some((host, port)) = request_host(&req) else {
        return plain(StatusCode::NOT_FOUND, "no application for this host\n");
    };
    let access = state.config.access.clone().zip(state.login.clone());
    if let Some((access, login)) = &access {
        if host == access.auth_domain {
            return login::auth_domain(access, login, &state.config.applications, port, req).await;
        }
        if host == access.transfer_host {
            return login::transfer_service(access, login, req).await;
        }
    }
    let Some(app) = state.config.applications.get(&host).cloned() else {
        return plain(StatusCode::NOT_FOUND, "no application for this host\n");
    };
    let path = req.uri().path();
    if path == login::CERTS_PATH && matches!(*req.method(), Method::GET | Method::HEAD) {
        return certs(&app);
    }
    if let Some((access, login)) = &access {
        if login::wants_metadata(&req) {
            return login::metadata(access, login, &host, &app);
        }
        if path == login::AUTHORIZED_PATH {
            return login::authorized(access, &app, &req);
        }
        if path == login::CLI_PATH {
            return login::cli(access, login, &host, port, &app, req).await;
        }
    }
    tunnel(state, host, port, app, req).await
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

fn certs(app: &Application) -> Response {
    match &app.jwks {
        Some(keys) => (
            [(header::CONTENT_TYPE, "application/json")],
            keys.current().json.clone(),
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
    /// A stream closed cleanly before it carried anything: a health probe, said at debug.
    fn probe(&self, what: &'static str) {
        tracing::debug!(
            peer = %self.peer.map_or_else(|| String::from("-"), |p| p.to_string()),
            host = self.host,
            mode = self.mode,
            destination = self.destination.unwrap_or("-"),
            "{what}"
        );
    }

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

async fn tunnel(
    state: GatewayState,
    host: String,
    port: Option<u16>,
    app: Arc<Application>,
    mut req: Request,
) -> Response {
    let started = Instant::now();
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let mut log = StreamLog {
        peer,
        host: &host,
        mode: mode_of(&app),
        subject: None,
        destination: None,
        started,
    };
    let subject = match auth::authorize(&app, req.headers()).await {
        Ok(subject) => subject,
        Err(refusal) => {
            log.finish(refusal.as_str(), 0, 0);
            return match refusal {
                Refusal::Missing | Refusal::Invalid => {
                    let back = req
                        .uri()
                        .path_and_query()
                        .map_or("/", |pq| pq.as_str())
                        .to_owned();
                    login::login_redirect(state.config.access.as_deref(), &host, port, &app, &back)
                }
                // Distinct from "login required": no login can fix a wrong service token, and
                // the client must say so instead of opening a browser.
                Refusal::ServiceTokenRejected => plain(
                    StatusCode::FORBIDDEN,
                    "Forbidden: service token rejected (Cf-Access-Client-Id / Cf-Access-Client-Secret match no service token of this application)\n",
                ),
            };
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
    let dest = match origin::destination(&app, req.headers()) {
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
    let destination = origin::host_port(&dest.host, dest.port);
    log.destination = Some(&destination);
    // Dial before answering 101, so "origin down" (502) is distinct from "edge down".
    let upstream = match origin::dial_destination(&dest, state.config.connect_timeout).await {
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
    // A stream from here on: the connection leaves the pool that is closed to make room, and
    // keeps its place for as long as its stream lives. Not before: a request refused above
    // (no upgrade, a destination not allowed, an origin down) carries no stream, and its
    // connection may be kept alive for more requests.
    let admitted = req.extensions().get::<Admitted>().cloned();
    if let Some(admitted) = &admitted {
        admitted.0.authenticated();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let socks = app.socks.then_some(state.config.limits.socks_timeout);
    let keepalive = state.config.keepalive;
    let cancel = state.life.cancel.clone();
    let reclaim = state.life.reclaim.clone();
    let (host, mode) = (host.clone(), log.mode);
    state.life.tracker.spawn(async move {
        let _admitted = admitted;
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
            () = pipe(on_upgrade, upstream, socks, keepalive, &log) => {}
        }
        reclaim.connection_closed();
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            handshake::accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response error\n"))
}

/// Pipes the upgraded stream and the origin; `socks`: the time the client has for its SOCKS5
/// exchange first, for a `socks` application.
async fn pipe(
    on_upgrade: hyper::upgrade::OnUpgrade,
    upstream: tokio::net::TcpStream,
    socks: Option<std::time::Duration>,
    keepalive: crate::wire::keepalive::Keepalive,
    log: &StreamLog<'_>,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            log.finish(&format!("upgrade failed: {e}"), 0, 0);
            return;
        }
    };
    let mut stream = handshake::server_stream(upgraded).with_keepalive(keepalive, None);
    if let Some(socks_timeout) = socks {
        let bound = upstream
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        // The origin is dialled already: a client that never says its SOCKS5 words must not
        // hold that connection open.
        let exchange = tokio::time::timeout(socks_timeout, origin::socks_in_stream(stream, bound));
        let Ok(exchanged) = exchange.await else {
            log.finish(
                &format!("refused: no SOCKS5 request within {socks_timeout:?}"),
                0,
                0,
            );
            return;
        };
        stream = match exchanged {
            Ok(stream) => stream,
            // A client that opens a stream and closes it before a word is a health probe
            // (of a client older than this one, which now makes its SOCKS request), not an
            // attack: no "refused" line for it every few seconds.
            Err(e) if e.closed_before_any_data() => {
                log.probe("stream closed before its SOCKS request (a health probe)");
                return;
            }
            Err(e) => {
                log.finish(&format!("refused: {e}"), 0, 0);
                return;
            }
        };
    }
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut origin = Counted {
        inner: upstream,
        read: &down,
        written: &up,
    };
    let piped = crate::wire::copy::copy_bidirectional(&mut stream, &mut origin).await;
    let (up, down) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    match piped {
        // Opened, answered and closed without a byte either way: a client's health probe.
        Ok(_) if up == 0 && down == 0 => {
            log.probe("stream closed before any data (a health probe)")
        }
        Ok(_) => log.finish("closed", up, down),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => log.finish(
            &format!("closed: the client stopped answering ({e})"),
            up,
            down,
        ),
        // One side hung up without the closing handshake: how most streams end (a client
        // killed, a laptop closed), not a fault of the gateway's.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            log.finish(&format!("disconnected ({e})"), up, down)
        }
        Err(e) => log.finish(&format!("closed with error: {e}"), up, down),
    }
}
