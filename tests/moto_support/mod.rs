//! A real AWS API peer for tests and benchmarks: moto server (PyPI `moto[server]`), started on
//! a free loopback port and killed on drop, plus a small HTTP proxy in front of it that injects
//! the faults moto never produces (per-region AccessDenied and throttling), serves the Account
//! API's `ListRegions` (moto has no Account API), and gives clusters a real CA (moto invents
//! random `certificateAuthority.data` that is not PEM).
//!
//! `scripts/install-test-deps` installs moto. Without it, starting fails loudly.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_eks::config::{BehaviorVersion, Credentials, Region};
use axum::body::Body;
use base64::Engine as _;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The account moto answers for with any unknown access key.
pub const DEFAULT_ACCOUNT: &str = "123456789012";

/// A running moto server; killed on drop.
pub struct MotoServer {
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

impl MotoServer {
    /// Starts moto on a free port and waits until it answers. Panics (the test fails) if moto
    /// is not installed or does not come up.
    pub fn start() -> Self {
        let port = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind a probe port")
            .local_addr()
            .expect("probe port address")
            .port();
        let spawn = |program: &str, pre: &[&str]| {
            Command::new(program)
                .args(pre)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect(
                "moto is not installed: run scripts/install-test-deps (pip install 'moto[server]')",
            );
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().expect("poll moto") {
                panic!(
                    "moto server exited at start ({status}): is moto[server] installed? run scripts/install-test-deps"
                );
            }
            if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "moto server did not answer on port {port} within 30 s"
            );
            k8s_tunnels::sync::pause_blocking(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An EKS client straight to moto with static credentials (for creating test data).
pub fn eks_client(endpoint: &str, region: &str, creds: Credentials) -> aws_sdk_eks::Client {
    let config = aws_sdk_eks::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(creds)
        .build();
    aws_sdk_eks::Client::from_conf(config)
}

/// Static test credentials (moto maps unknown keys to [`DEFAULT_ACCOUNT`]).
pub fn static_creds(key: &str) -> Credentials {
    Credentials::new(key, "testing-secret", None, None, "test")
}

/// Credentials in another moto account: moto maps an assumed role's keys to the role's account.
pub async fn creds_in_account(endpoint: &str, account: &str) -> Credentials {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(static_creds("AKIASETUP"))
        .build();
    let out = aws_sdk_sts::Client::from_conf(config)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/discovery"))
        .role_session_name("tests")
        .send()
        .await
        .expect("moto STS AssumeRole");
    let c = out.credentials.expect("assumed credentials");
    Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        None,
        "assumed",
    )
}

/// Creates one cluster with tags, the way a user would (real SDK `CreateCluster`).
pub async fn create_cluster(
    client: &aws_sdk_eks::Client,
    name: &str,
    tags: &[(&str, &str)],
) -> Result<(), String> {
    let vpc = aws_sdk_eks::types::VpcConfigRequest::builder()
        .subnet_ids("subnet-1")
        .build();
    let mut req = client
        .create_cluster()
        .name(name)
        .role_arn("arn:aws:iam::123456789012:role/eks")
        .resources_vpc_config(vpc);
    for (k, v) in tags {
        req = req.tags(*k, *v);
    }
    req.send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{}", aws_sdk_eks::error::DisplayErrorContext(e)))
}

/// What the proxy does besides forwarding.
#[derive(Default)]
pub struct Faults {
    /// EKS requests signed for these regions get `AccessDeniedException` (HTTP 403).
    pub deny: BTreeSet<String>,
    /// EKS requests signed for these regions get `ThrottlingException` (HTTP 400), always.
    pub throttle: BTreeSet<String>,
    /// Requests to these services (SigV4 service name, e.g. `account`) get
    /// `AccessDeniedException` (HTTP 403), in every region.
    pub deny_services: BTreeSet<String>,
    /// Regions (name, `RegionOptStatus`) the Account API's `ListRegions` returns.
    pub account_regions: Vec<(String, String)>,
    /// The CA (PEM) put into `DescribeCluster` answers, unless the cluster is tagged
    /// `test/moto-ca` (keep moto's non-PEM data).
    pub ca_pem: Option<String>,
    /// Added before each forwarded request: a network round trip to a real AWS region
    /// (moto on loopback answers in a few milliseconds of CPU).
    pub latency: std::time::Duration,
}

/// Counts of what the proxy saw, per region of the SigV4 credential scope.
#[derive(Default, Debug)]
pub struct Seen {
    /// Faulted (denied or throttled) requests per region.
    pub faulted: BTreeMap<String, usize>,
    /// Forwarded requests per region.
    pub forwarded: BTreeMap<String, usize>,
}

/// A proxy in front of moto; stops when dropped.
pub struct FaultProxy {
    /// Its address.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts the proxy on a free loopback port.
    pub async fn start(moto_port: u16, faults: Faults) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = Arc::new((faults, seen.clone(), moto_port));
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let state = state.clone();
            async move { handle(&state.0, &state.1, state.2, req).await }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy serves");
        });
        Self { addr, seen, task }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Region and service from `Authorization: AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, ...`.
fn credential_scope(req: &Request<Body>) -> Option<(String, String)> {
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?.split(',').next()?;
    let parts: Vec<&str> = cred.split('/').collect();
    Some((parts.get(2)?.to_string(), parts.get(3)?.to_string()))
}

/// An AWS REST-JSON error: the code in `x-amzn-errortype`, `{"message": ...}` in the body.
fn aws_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-errortype", code)
        .header("x-amzn-requestid", "00000000-0000-0000-0000-000000000000")
        .body(Body::from(
            serde_json::json!({ "message": message }).to_string(),
        ))
        .expect("error response")
}

async fn handle(
    faults: &Faults,
    seen: &Mutex<Seen>,
    moto_port: u16,
    req: Request<Body>,
) -> Response<Body> {
    let (region, service) = credential_scope(&req).unwrap_or_default();
    if (service == "eks" && faults.deny.contains(&region))
        || faults.deny_services.contains(&service)
    {
        *k8s_tunnels::sync::lock(seen)
            .faulted
            .entry(region.clone())
            .or_default() += 1;
        return aws_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            &format!(
                "User: arn:aws:iam::{DEFAULT_ACCOUNT}:user/tests is not authorized to perform: eks:ListClusters on resource: arn:aws:eks:{region}:{DEFAULT_ACCOUNT}:cluster/*"
            ),
        );
    }
    if service == "eks" && faults.throttle.contains(&region) {
        *k8s_tunnels::sync::lock(seen)
            .faulted
            .entry(region.clone())
            .or_default() += 1;
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        );
    }
    if service == "account" && req.uri().path() == "/listRegions" {
        // Account API `ListRegions` (REST-JSON), as published: {"Regions": [{"RegionName",
        // "RegionOptStatus"}], "NextToken"}. One page; the filter in the request is honoured.
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let asked: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let wanted: Vec<&str> = asked["RegionOptStatusContains"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let regions: Vec<serde_json::Value> = faults
            .account_regions
            .iter()
            .filter(|(_, status)| wanted.is_empty() || wanted.contains(&status.as_str()))
            .map(
                |(name, status)| serde_json::json!({"RegionName": name, "RegionOptStatus": status}),
            )
            .collect();
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::json!({ "Regions": regions }).to_string(),
            ))
            .expect("regions response");
    }
    *k8s_tunnels::sync::lock(seen)
        .forwarded
        .entry(region)
        .or_default() += 1;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let is_describe = req.method() == http::Method::GET
        && req.uri().path().starts_with("/clusters/")
        && req.uri().path()[10..].find('/').is_none();
    let response = match forward(moto_port, req).await {
        Ok(r) => r,
        Err(e) => {
            return aws_error(StatusCode::BAD_GATEWAY, "ProxyError", &e);
        }
    };
    match (
        &faults.ca_pem,
        is_describe && response.status() == StatusCode::OK,
    ) {
        (Some(ca), true) => with_ca(response, ca).await,
        _ => response,
    }
}

async fn forward(moto_port: u16, req: Request<Body>) -> Result<Response<Body>, String> {
    let stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, moto_port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .map_err(|e| e.to_string())?;
    let req = Request::from_parts(parts, Body::from(body));
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(Body::new(body), 64 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Replaces `cluster.certificateAuthority.data` with base64 of `ca`.
async fn with_ca(response: Response<Body>, ca: &str) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Response::from_parts(parts, Body::from(body));
    };
    if json["cluster"]["tags"].get("test/moto-ca").is_none() {
        json["cluster"]["certificateAuthority"] = serde_json::json!({
            "data": base64::engine::general_purpose::STANDARD.encode(ca),
        });
    }
    let body = json.to_string();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A test CA certificate (PEM), real enough for `metadata::build` and kubectl.
pub fn test_ca_pem() -> String {
    k8s_tunnels::lab::pki::LabCa::new("moto test CA")
        .expect("create a CA")
        .cert_pem()
        .to_string()
}
