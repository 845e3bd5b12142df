//! A fake Kubernetes API server over HTTPS, answering what `kubectl version`,
//! `kubectl get namespaces` (table, `-o name`, `-o json`) and `kubectl api-resources` need,
//! in the published REST shapes, plus pods and `exec` over WebSocket (`pods.rs`). It stands in
//! for a real cluster behind the tunnel.
//!
//! Discovery is served in the legacy form only: kubectl ≥ 1.30 first asks `/api` and `/apis`
//! for aggregated discovery (`as=APIGroupDiscoveryList`) and, on a plain `application/json`
//! answer, falls back to `/api/v1` as an API server without aggregation would make it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

mod pods;
mod portforward;
mod upgrade;

use crate::gateway::serve::{Lifecycle, ServeLimits, bind_and_serve};
use crate::lab::pki::CertifiedPem;
use crate::secret::Secret;

/// The Kubernetes version the fake reports (same minor as the kubectl on the test machines,
/// so kubectl prints no version-skew warning).
pub const FAKE_VERSION: (&str, &str) = ("1", "32");

/// Errors starting the fake API server.
#[derive(Debug, thiserror::Error)]
pub enum FakeApiError {
    /// The certificate or key was unusable.
    #[error("fake API server TLS setup failed")]
    Tls(#[source] crate::tls::TlsError),
    /// The address could not be bound.
    #[error("fake API server cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
}

/// What the fake serves.
#[derive(Debug, Clone)]
pub struct FakeApiConfig {
    /// Address to listen on (`127.0.0.1:0` for any free port).
    pub listen: SocketAddr,
    /// The server certificate (from [`crate::lab::pki::LabCa`]).
    pub tls: CertifiedPem,
    /// Reported as the server's `platform` suffix and in logs, to tell fakes apart.
    pub cluster_name: String,
    /// The namespaces it lists.
    pub namespaces: Vec<String>,
    /// When set, every API request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
}

/// The fake API server.
pub struct FakeApiServer;

struct FakeState {
    cluster_name: String,
    namespaces: Vec<String>,
    bearer_token: Option<Secret>,
    created: SystemTime,
    requests: AtomicU64,
    /// Lines for every `logs -f` following now; `None` ends their logs.
    logs: tokio::sync::broadcast::Sender<Option<String>>,
}

impl FakeApiServer {
    /// Starts serving `config` in the background.
    pub async fn start(config: FakeApiConfig) -> Result<FakeApiHandle, FakeApiError> {
        let tls = crate::tls::server_config(
            config.tls.cert_pem.as_bytes(),
            config.tls.key_pem.as_bytes(),
        )
        .map_err(FakeApiError::Tls)?;
        let state = Arc::new(FakeState {
            cluster_name: config.cluster_name,
            namespaces: config.namespaces,
            bearer_token: config.bearer_token,
            // A fixed age makes table output stable and plausible.
            created: SystemTime::now() - Duration::from_secs(3 * 86_400),
            requests: AtomicU64::new(0),
            logs: tokio::sync::broadcast::channel(64).0,
        });
        let router = axum::Router::new()
            .route("/version", axum::routing::get(version))
            .route("/healthz", axum::routing::get(ok))
            .route("/livez", axum::routing::get(ok))
            .route("/readyz", axum::routing::get(ok))
            .route("/api", axum::routing::get(api_versions))
            .route("/apis", axum::routing::get(api_groups))
            .route("/api/v1", axum::routing::get(api_v1_resources))
            .route("/api/v1/namespaces", axum::routing::get(list_namespaces))
            .route(
                "/api/v1/namespaces/{name}",
                axum::routing::get(get_namespace),
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods/{pod}",
                axum::routing::get(pods::get_pod),
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods/{pod}/log",
                axum::routing::get(pods::logs),
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods/{pod}/portforward",
                axum::routing::get(portforward::portforward).post(portforward::portforward),
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods/{pod}/exec",
                axum::routing::get(pods::exec).post(pods::exec),
            )
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                count_and_authenticate,
            ))
            .with_state(state.clone());
        let life = Lifecycle::default();
        let local_addr = bind_and_serve(
            config.listen,
            Some(tls),
            router,
            life.clone(),
            ServeLimits::without_eviction(),
        )
        .await
        .map_err(|source| FakeApiError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(FakeApiHandle {
            local_addr,
            state,
            life,
        })
    }
}

/// A running fake. Dropping it stops it.
pub struct FakeApiHandle {
    local_addr: SocketAddr,
    state: Arc<FakeState>,
    life: Lifecycle,
}

impl FakeApiHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://127.0.0.1:<port>` (or the bound address), for a kubeconfig `server:`.
    pub fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// How many HTTP requests it has received (refused ones included).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Sends `line` to every `logs -f` following a pod now; returns how many follow.
    pub fn log_line(&self, line: &str) -> usize {
        self.state.logs.send(Some(line.to_string())).unwrap_or(0)
    }

    /// Ends the log of every `logs -f` following now (the container stopped).
    pub fn end_logs(&self) {
        let _ = self.state.logs.send(None);
    }

    /// Stops it and waits up to `bound` for its connections to close.
    pub async fn shutdown(self, bound: Duration) -> bool {
        self.life.shutdown(bound).await
    }
}

impl Drop for FakeApiHandle {
    fn drop(&mut self) {
        self.life.cancel.cancel();
    }
}

type AppState = State<Arc<FakeState>>;

/// Paths a real API server serves to anonymous clients (`system:public-info-viewer`).
fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
}

async fn count_and_authenticate(State(state): AppState, req: Request, next: Next) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(expected) = &state.bearer_token
        && !is_public(req.uri().path())
    {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = presented.is_some_and(|token| {
            let a = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let b =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, expected.expose().as_bytes());
            #[allow(deprecated)]
            aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
        });
        if !ok {
            return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    }
    next.run(req).await
}

/// A `meta/v1` `Status` failure, as the API server sends for errors.
fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, json_body(&body)).into_response()
}

fn json_body(value: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

async fn ok() -> &'static str {
    "ok"
}

async fn not_found(req: Request) -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({})",
            req.uri().path()
        ),
    )
}

async fn version(State(state): AppState) -> impl IntoResponse {
    let (major, minor) = FAKE_VERSION;
    json_body(&json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": format!("linux/amd64 (k8s-tunnels fake: {})", state.cluster_name),
    }))
}

async fn api_versions(req: Request) -> impl IntoResponse {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    json_body(&json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }))
}

async fn api_groups() -> impl IntoResponse {
    json_body(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
}

async fn api_v1_resources() -> impl IntoResponse {
    json_body(&json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": false,
                "kind": "Namespace",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": ["ns"],
                "storageVersionHash": "Q3oi5N2YM8M="
            },
            {
                "name": "namespaces/status",
                "singularName": "",
                "namespaced": false,
                "kind": "Namespace",
                "verbs": ["get", "patch", "update"]
            },
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": ["po"],
                "categories": ["all"],
                "storageVersionHash": "xPOwRZ+Yhw8="
            },
            {
                "name": "pods/exec",
                "singularName": "",
                "namespaced": true,
                "kind": "PodExecOptions",
                "verbs": ["create", "get"]
            }
        ]
    }))
}

impl FakeState {
    fn namespace(&self, name: &str) -> Value {
        json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": self.metadata(name),
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        })
    }

    fn metadata(&self, name: &str) -> Value {
        json!({
            "name": name,
            "uid": uid_for(&self.cluster_name, name),
            "resourceVersion": "1",
            "creationTimestamp": humantime::format_rfc3339_seconds(self.created).to_string(),
            "labels": {"kubernetes.io/metadata.name": name},
        })
    }

    fn age(&self) -> String {
        let secs = self.created.elapsed().unwrap_or_default().as_secs();
        match secs {
            s if s < 120 => format!("{s}s"),
            s if s < 7_200 => format!("{}m", s / 60),
            s if s < 172_800 => format!("{}h", s / 3_600),
            s => format!("{}d", s / 86_400),
        }
    }
}

/// A stable UUID-shaped id per cluster and namespace.
fn uid_for(cluster: &str, name: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{cluster}/{name}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether the client asked for a `meta.k8s.io/v1` Table (kubectl's default output does).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"as=Table")
                && params.contains(&"g=meta.k8s.io")
                && params.contains(&"v=v1")
        })
}

impl FakeState {
    /// A `meta.k8s.io/v1` Table of `names`, with the columns the real server prints.
    fn table(&self, names: &[&str]) -> Response {
        let state = self;
        let rows: Vec<Value> = names
            .iter()
            .map(|name| {
                json!({
                    "cells": [name, "Active", state.age()],
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": state.metadata(name),
                    },
                })
            })
            .collect();
        let table = json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "1"},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
                {"name": "Status", "type": "string", "format": "", "description": "The status of the namespace", "priority": 0},
                {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
            ],
            "rows": rows,
        });
        (
            [(
                header::CONTENT_TYPE,
                "application/json;as=Table;v=v1;g=meta.k8s.io",
            )],
            table.to_string(),
        )
            .into_response()
    }
}

async fn list_namespaces(State(state): AppState, headers: HeaderMap) -> Response {
    if wants_table(&headers) {
        let names: Vec<&str> = state.namespaces.iter().map(String::as_str).collect();
        return state.table(&names);
    }
    let items: Vec<Value> = state
        .namespaces
        .iter()
        .map(|name| state.namespace(name))
        .collect();
    json_body(&json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .into_response()
}

async fn get_namespace(
    State(state): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.namespaces.contains(&name) {
        if wants_table(&headers) {
            return state.table(&[name.as_str()]);
        }
        json_body(&state.namespace(&name)).into_response()
    } else {
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("namespaces \"{name}\" not found"),
            "reason": "NotFound",
            "details": {"name": name, "kind": "namespaces"},
            "code": 404,
        });
        (StatusCode::NOT_FOUND, json_body(&body)).into_response()
    }
}
