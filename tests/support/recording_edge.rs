//! A hostile edge: a TLS (or plain) HTTP server that records every request it is sent — the
//! Access metadata request, the exchange's hops, the WebSocket upgrade — and answers each one
//! with a redirect to the Access login of an application it names (which need not be its
//! own). Tests assert which credentials reach it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as the edge saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Every header, lowercase name and value.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The request as one line of text, for assertions on what it carried.
    pub fn text(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!("{} {} | {}", self.method, self.target, headers.join(" | "))
    }

    /// Whether the request carries any Access credential: an app token header, a service
    /// token, an Access cookie, or a token in the query.
    pub fn carries_credential(&self) -> bool {
        let header = |name: &str| self.headers.iter().any(|(k, _)| k == name);
        header("cf-access-token")
            || header("cf-access-client-id")
            || header("cf-access-client-secret")
            || self
                .headers
                .iter()
                .any(|(k, v)| k == "cookie" && v.contains("CF_Authorization"))
            || self.target.contains("token=ey")
    }
}

/// What the edge answers: a 302 to `location`, with `CF-Access-Domain: <domain>` when set.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The redirect target.
    pub location: String,
    /// The `CF-Access-Domain` header.
    pub domain: Option<String>,
}

/// A running recording edge; it serves until the test's runtime ends.
pub struct RecordingEdge {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RecordingEdge {
    /// Starts the edge on loopback, over TLS with `tls` (else plain HTTP), answering every
    /// request with `answer`.
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>, answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recording edge");
        let addr = listener.local_addr().expect("recording edge address");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, answer, acceptor) = (log.clone(), answer.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let (log, answer) = (log.clone(), answer.clone());
                        async move { Ok::<_, Infallible>(record(&log, &answer, &req)) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        k8s_tunnels::sync::lock(&self.seen).clone()
    }
}

fn record<B>(log: &Mutex<Vec<Seen>>, answer: &Answer, req: &Request<B>) -> Response<Full<Bytes>> {
    let seen = Seen {
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), ToString::to_string),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    k8s_tunnels::sync::lock(log).push(seen);
    let mut response = Response::builder()
        .status(302)
        .header("location", &answer.location);
    if let Some(domain) = &answer.domain {
        response = response.header("cf-access-domain", domain);
    }
    response
        .body(Full::new(Bytes::new()))
        .expect("a valid redirect")
}
