//! A fake of Vault's KV v2 secrets engine API: `LIST /v1/<mount>/metadata/<path>` (as the
//! `LIST` method or `GET ?list=true`) → `{"data":{"keys":[...]}}` with folders `/`-suffixed,
//! `GET /v1/<mount>/data/<path>` → `{"data":{"data":{...},"metadata":{...}}}`, 403
//! `{"errors":["permission denied"]}` and 404 `{"errors":[]}`. It checks `X-Vault-Token`, and
//! `X-Vault-Namespace` when it is set up with a namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Served, serve};

/// The fake's content and what it has seen.
#[derive(Default)]
pub struct Vault {
    /// The one token it accepts.
    pub token: String,
    /// The namespace the mount lives in (`None`: the root namespace).
    pub namespace: Option<String>,
    /// The KV v2 mount path.
    pub mount: String,
    /// Secrets by path (under the mount), their `data`.
    pub secrets: BTreeMap<String, Value>,
    /// Paths the token's policy denies: a folder (`a/b/`, denies its LIST) or a secret (`a/c`).
    pub denied: BTreeSet<String>,
    /// Every request: method, path, and whether the token was right.
    pub requests: Mutex<Vec<(String, String, bool)>>,
}

/// Starts the fake.
pub async fn start(vault: Vault) -> (Served, Arc<Vault>) {
    let state = Arc::new(vault);
    let router = Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&state));
    (serve(router).await, state)
}

fn errors(code: StatusCode, errors: &[&str]) -> Response {
    (
        code,
        [("content-type", "application/json")],
        json!({ "errors": errors }).to_string(),
    )
        .into_response()
}

fn ok(data: Value) -> Response {
    (
        [("content-type", "application/json")],
        json!({
            "request_id": "2f9c5a4e-0c1c-4e5b-8d1e-7a3f1b2c3d4e",
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": null,
            "mount_type": "kv",
        })
        .to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<Arc<Vault>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let token_ok = headers
        .get("x-vault-token")
        .is_some_and(|t| t.as_bytes() == state.token.as_bytes());
    k8s_tunnels::sync::lock(&state.requests).push((
        method.to_string(),
        uri.path().to_string(),
        token_ok,
    ));
    let namespace = headers
        .get("x-vault-namespace")
        .and_then(|n| n.to_str().ok())
        .map(|n| n.trim_matches('/'));
    // A token is valid only in its namespace: anywhere else Vault says permission denied.
    if !token_ok || namespace != state.namespace.as_deref() {
        return errors(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    // Keys may hold any character; the client sends them percent-encoded.
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    let Some(rest) = path
        .strip_prefix("/v1/")
        .and_then(|r| r.strip_prefix(state.mount.as_str()))
    else {
        return errors(StatusCode::NOT_FOUND, &["no handler for route"]);
    };
    let list = method.as_str() == "LIST"
        || (method == Method::GET && uri.query().is_some_and(|q| q.contains("list=true")));
    if list && let Some(folder) = rest.strip_prefix("/metadata/") {
        let folder = format!("{}/", folder.trim_end_matches('/'));
        if state.denied.contains(&folder) {
            return errors(StatusCode::FORBIDDEN, &["permission denied"]);
        }
        let keys: BTreeSet<String> = state
            .secrets
            .keys()
            .filter_map(|path| path.strip_prefix(&folder))
            .map(|tail| match tail.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => tail.to_string(),
            })
            .collect();
        if keys.is_empty() {
            return errors(StatusCode::NOT_FOUND, &[]);
        }
        return ok(json!({ "keys": keys }));
    }
    if method == Method::GET
        && let Some(path) = rest.strip_prefix("/data/")
    {
        if state.denied.contains(path) {
            return errors(StatusCode::FORBIDDEN, &["permission denied"]);
        }
        return match state.secrets.get(path) {
            Some(data) => ok(json!({
                "data": data,
                "metadata": {
                    "created_time": "2024-11-04T10:15:30.123456789Z",
                    "custom_metadata": null,
                    "deletion_time": "",
                    "destroyed": false,
                    "version": 1,
                },
            })),
            None => errors(StatusCode::NOT_FOUND, &[]),
        };
    }
    errors(StatusCode::METHOD_NOT_ALLOWED, &["unsupported operation"])
}
