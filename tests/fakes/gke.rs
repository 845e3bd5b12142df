//! A fake of the Kubernetes Engine API v1 `projects.locations.clusters.list`
//! (`GET /v1/projects/{project}/locations/-/clusters`), answering with the JSON the API
//! reference documents: a `ListClustersResponse` (`clusters`, `missingZones`), or a Google
//! error body `{"error":{"code","message","status"}}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Served, serve};

/// What the fake answers for one project.
#[derive(Clone, Debug)]
pub enum Project {
    /// A `ListClustersResponse`.
    Clusters {
        /// Cluster resources (see [`cluster`]).
        clusters: Vec<Value>,
        /// Zones that could not be reached.
        missing_zones: Vec<String>,
    },
    /// 403 PERMISSION_DENIED, as for a project the caller may not list.
    Forbidden,
    /// 404 NOT_FOUND.
    NotFound,
}

/// The fake's state: projects, and the request paths it has seen.
#[derive(Default)]
pub struct Gke {
    /// Answers per project id.
    pub projects: BTreeMap<String, Project>,
    /// Every request, `METHOD path?query`.
    pub requests: Mutex<Vec<String>>,
}

/// Starts the fake.
pub async fn start(projects: BTreeMap<String, Project>) -> (Served, Arc<Gke>) {
    let state = Arc::new(Gke {
        projects,
        requests: Mutex::default(),
    });
    let router = Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&state));
    (serve(router).await, state)
}

fn google_error(code: StatusCode, status: &str, message: String) -> Response {
    (
        code,
        [("content-type", "application/json; charset=UTF-8")],
        json!({"error": {"code": code.as_u16(), "message": message, "status": status}}).to_string(),
    )
        .into_response()
}

async fn handle(State(state): State<Arc<Gke>>, method: Method, uri: Uri) -> Response {
    k8s_tunnels::sync::lock(&state.requests).push(format!("{method} {uri}"));
    let path = uri.path();
    let project = path
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/locations/-/clusters"));
    let (Some(project), true) = (project, method == Method::GET) else {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("The requested URL {path} was not found on this server."),
        );
    };
    match state.projects.get(project) {
        Some(Project::Clusters {
            clusters,
            missing_zones,
        }) => {
            let mut body = json!({ "clusters": clusters });
            // The API omits empty repeated fields.
            if !missing_zones.is_empty() {
                body["missingZones"] = json!(missing_zones);
            }
            (
                [("content-type", "application/json; charset=UTF-8")],
                body.to_string(),
            )
                .into_response()
        }
        Some(Project::Forbidden) => google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "Permission 'container.clusters.list' denied on resource '//container.googleapis.com/projects/{project}/locations/-' (or it may not exist)."
            ),
        ),
        Some(Project::NotFound) | None => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Project \"{project}\" not found or deleted."),
        ),
    }
}

/// A cluster resource as the API returns it (a realistic subset of its fields).
pub fn cluster(
    project: &str,
    location: &str,
    name: &str,
    endpoint: &str,
    ca_pem: &str,
    labels: &[(&str, &str)],
) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    json!({
        "name": name,
        "nodeConfig": {"machineType": "e2-medium", "diskSizeGb": 100},
        "masterAuth": {
            "clusterCaCertificate": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        },
        "loggingService": "logging.googleapis.com/kubernetes",
        "monitoringService": "monitoring.googleapis.com/kubernetes",
        "network": "default",
        "clusterIpv4Cidr": "10.8.0.0/14",
        "subnetwork": "default",
        "locations": [format!("{location}-b")],
        "resourceLabels": labels,
        "labelFingerprint": "a9dc16a7",
        "selfLink": format!("https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{name}"),
        "zone": location,
        "endpoint": endpoint,
        "initialClusterVersion": "1.30.5-gke.1014001",
        "currentMasterVersion": "1.30.5-gke.1014001",
        "currentNodeVersion": "1.30.5-gke.1014001",
        "createTime": "2024-11-04T10:15:30+00:00",
        "status": "RUNNING",
        "servicesIpv4Cidr": "34.118.224.0/20",
        "currentNodeCount": 3,
        "location": location,
        "id": "0a1b2c3d4e5f40718293a4b5c6d7e8f90a1b2c3d4e5f40718293a4b5c6d7e8f9",
        "etag": "d4f1c9a2-7d2e-4e0b-9b2a-3f5e6c7d8e9f",
    })
}
