//! Pods and `exec` for the fake API server: enough for `kubectl exec <pod> -- echo …` over the
//! WebSocket exec protocol kubectl ≥ 1.30 uses (`v5.channel.k8s.io`), so the tests prove that
//! upgraded, long-lived streams cross the tunnel, not only plain requests.
//!
//! Every pod exists (one container, `main`, running) in every namespace the fake lists. The
//! "container" runs two commands: `echo ARGS…` and `hostname`; anything else exits 127.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use http::{StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{AppState, FakeState, json_body, status_response};

/// Channel numbers of the Kubernetes stream protocols.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
/// Subprotocols we speak, best first (both frame the same way for our needs).
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The API server's answer for a pod in a namespace that does not exist.
fn missing_namespace(state: &FakeState, namespace: &str) -> Option<Response> {
    (!state.namespaces.iter().any(|n| n == namespace)).then(|| {
        status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("namespaces \"{namespace}\" not found"),
        )
    })
}

pub(super) async fn get_pod(
    State(state): AppState,
    Path((namespace, pod)): Path<(String, String)>,
) -> Response {
    if let Some(missing) = missing_namespace(&state, &namespace) {
        return missing;
    }
    json_body(&pod_json(&state, &namespace, &pod)).into_response()
}

fn pod_json(state: &FakeState, namespace: &str, pod: &str) -> serde_json::Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "uid": super::uid_for(&state.cluster_name, &format!("{namespace}/{pod}")),
            "resourceVersion": "1",
            "creationTimestamp": humantime::format_rfc3339_seconds(state.created).to_string(),
        },
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0,
                "image": "busybox:1.36", "imageID": "", "started": true,
                "state": {"running": {"startedAt": humantime::format_rfc3339_seconds(state.created).to_string()}}}],
        },
    })
}

pub(super) async fn exec(
    State(state): AppState,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    mut req: Request,
) -> Response {
    if let Some(missing) = missing_namespace(&state, &namespace) {
        return missing;
    }
    let headers = req.headers();
    let is_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let protocol = PROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .copied();
    let (Some(key), Some(protocol), true) = (key, protocol, is_websocket) else {
        // Only the WebSocket protocols are spoken here; SPDY clients get a clear refusal.
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "this fake API server supports exec over WebSocket (v5/v4.channel.k8s.io) only",
        );
    };
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let command: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let stdout = params.iter().any(|(k, v)| k == "stdout" && v == "true");
    let on_upgrade = hyper::upgrade::on(&mut req);
    let state: Arc<FakeState> = state.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (out, err, status) = run(&state, &pod, &command);
        if stdout && !out.is_empty() {
            let _ = ws.send(frame(STDOUT, out.as_bytes())).await;
        }
        if !err.is_empty() {
            let _ = ws.send(frame(STDERR, err.as_bytes())).await;
        }
        let _ = ws.send(frame(ERROR, status.to_string().as_bytes())).await;
        // A close without a status code reads as an error to kubectl; the API server closes
        // normally.
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(Bytes::from(bytes))
}

/// Runs the pretend container's command: (stdout, stderr, final status).
fn run(_state: &FakeState, pod: &str, command: &[String]) -> (String, String, serde_json::Value) {
    let success = json!({"metadata": {}, "status": "Success"});
    match command.split_first() {
        Some((program, args)) if program == "echo" => {
            (format!("{}\n", args.join(" ")), String::new(), success)
        }
        Some((program, _)) if program == "hostname" => (format!("{pod}\n"), String::new(), success),
        other => {
            let program = other.map(|(p, _)| p.as_str()).unwrap_or("");
            (
                String::new(),
                format!("fake: {program}: command not found\n"),
                json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": "command terminated with non-zero exit code: exit status 127",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": "127"}]},
                }),
            )
        }
    }
}
