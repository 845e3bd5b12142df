//! Pods, `exec` and `logs` for the fake API server: enough for `kubectl exec <pod> -- echo …`
//! and `kubectl exec -it <pod> -- sh` over the WebSocket exec protocol kubectl ≥ 1.30 uses
//! (`v5.channel.k8s.io`), and `kubectl logs -f`, so the tests prove that upgraded, interactive
//! and long-lived streams cross the tunnel, not only plain requests.
//!
//! Every pod exists (one container, `main`, running) in every namespace the fake lists. The
//! "container" runs `echo ARGS…`, `hostname`, `tty`, and `sh`, an interactive shell of those
//! (with a TTY it echoes what is typed, as a terminal does); anything else exits 127. Its log is
//! one line, then whatever the test sends through the handle until it ends the log.

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
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{AppState, FakeState, json_body, status_response};

/// Channel numbers of the Kubernetes stream protocols.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const STDIN: u8 = 0;
const RESIZE: u8 = 4;
/// v5: the client closed its stdin.
const CLOSE: u8 = 255;
/// Subprotocols we speak, best first (both frame the same way for our needs).
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// How long the pretend container takes to start the command after the upgrade. A real API
/// server first opens its own streams to the kubelet, which then starts a process: tens of
/// milliseconds at least. It matters because client-go starts reading the connection before
/// it has created its streams, and discards what arrives for a stream it does not have yet: a
/// server that answered at once lost `echo`'s output now and then on a loaded machine, and
/// kubectl failed with "Unknown stream id 1 … closed all streams".
const PROCESS_START: std::time::Duration = std::time::Duration::from_millis(100);

/// The API server's answer for a pod in a namespace that does not exist.
pub(super) fn missing_namespace(state: &FakeState, namespace: &str) -> Option<Response> {
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

/// `GET …/pods/{pod}/log`: one line, and with `follow=true` every line the test sends until
/// it ends the log, streamed as they come (chunked), as the kubelet's log stream is.
pub(super) async fn logs(
    State(state): AppState,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    use futures_util::StreamExt;
    if let Some(missing) = missing_namespace(&state, &namespace) {
        return missing;
    }
    let follow = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "follow" && v == "true");
    let first = Bytes::from(format!("{pod}: started\n"));
    let body = if follow {
        // Subscribed before the answer goes out: a line sent once the first is read arrives.
        let lines = state.logs.subscribe();
        let rest = futures_util::stream::unfold(lines, |mut lines| async move {
            match lines.recv().await {
                Ok(Some(line)) => Some((Bytes::from(format!("{line}\n")), lines)),
                _ => None,
            }
        });
        let all = futures_util::stream::once(std::future::ready(first)).chain(rest);
        axum::body::Body::from_stream(all.map(Ok::<_, std::convert::Infallible>))
    } else {
        axum::body::Body::from(first)
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
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
    let Some((key, protocol)) = super::upgrade::offer(req.headers(), &PROTOCOLS) else {
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
    let flag = |name: &str| params.iter().any(|(k, v)| k == name && v == "true");
    let (stdout, stdin, tty) = (flag("stdout"), flag("stdin"), flag("tty"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let state: Arc<FakeState> = state.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tokio::time::sleep(PROCESS_START).await;
        let status = if stdin && command.first().is_some_and(|c| c == "sh") {
            shell(&mut ws, &state, &pod, tty).await
        } else {
            let (out, err, status) = run(&state, &pod, &command, tty);
            if stdout && !out.is_empty() {
                let _ = ws.send(frame(STDOUT, out.as_bytes())).await;
            }
            if !err.is_empty() {
                let _ = ws.send(frame(STDERR, err.as_bytes())).await;
            }
            status
        };
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
    super::upgrade::switching_protocols(&key, protocol)
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(Bytes::from(bytes))
}

/// The interactive `sh`: a prompt, the typed line run as one command, until `exit` or the end
/// of stdin. With a TTY, what is typed is echoed back and lines end in CR LF, as a terminal's
/// line discipline does; without one, output is plain. Returns the final status.
async fn shell<S>(
    ws: &mut WebSocketStream<S>,
    state: &FakeState,
    pod: &str,
    tty: bool,
) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let success = json!({"metadata": {}, "status": "Success"});
    let newline = if tty { "\r\n" } else { "\n" };
    let _ = ws.send(frame(STDOUT, b"$ ")).await;
    let mut line = Vec::new();
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(data) = message else {
            continue;
        };
        let Some((&channel, input)) = data.split_first() else {
            continue;
        };
        match channel {
            STDIN => {}
            // A terminal's size (JSON {"Width":…,"Height":…}): nothing draws here.
            RESIZE => continue,
            CLOSE => return success,
            _ => continue,
        }
        // What the terminal shows: the typed bytes (with a TTY), then each line's output.
        let mut echo = Vec::new();
        for &byte in input {
            if byte != b'\r' && byte != b'\n' {
                line.push(byte);
                if tty {
                    echo.push(byte);
                }
                continue;
            }
            if tty {
                echo.extend_from_slice(newline.as_bytes());
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            if words.first().is_some_and(|w| w == "exit") {
                let _ = ws.send(frame(STDOUT, &echo)).await;
                return success;
            }
            if !words.is_empty() {
                let (out, err, _) = run(state, pod, &words, tty);
                // With a TTY stderr goes to the terminal too.
                echo.extend_from_slice(format!("{out}{err}").replace('\n', newline).as_bytes());
            }
            echo.extend_from_slice(b"$ ");
        }
        if ws.send(frame(STDOUT, &echo)).await.is_err() {
            break;
        }
    }
    success
}

/// Runs the pretend container's command: (stdout, stderr, final status).
fn run(
    _state: &FakeState,
    pod: &str,
    command: &[String],
    tty: bool,
) -> (String, String, serde_json::Value) {
    let success = json!({"metadata": {}, "status": "Success"});
    match command.split_first() {
        Some((program, _)) if program == "tty" => {
            let answer = if tty { "/dev/pts/0\n" } else { "not a tty\n" };
            (answer.into(), String::new(), success)
        }
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
