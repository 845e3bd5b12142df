//! The WebSocket upgrades the fake API server answers (exec, port-forward): which offered
//! subprotocol it takes, and its 101.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The client's key and the first of `ours` it offers, when the request is a WebSocket
/// upgrade offering one of them.
pub(super) fn offer(
    headers: &HeaderMap,
    ours: &[&'static str],
) -> Option<(HeaderValue, &'static str)> {
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .collect();
    let protocol = ours.iter().find(|p| offered.contains(p)).copied()?;
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?.clone();
    websocket.then_some((key, protocol))
}

/// The 101 that accepts `key` with `protocol`.
pub(super) fn switching_protocols(key: &HeaderValue, protocol: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            crate::wire::handshake::accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
