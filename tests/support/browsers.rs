//! Browser openers for the login tests: an HTTP client that follows the opened URL and signs
//! in on the form, and headless Chromium driven over the DevTools protocol. Both count what
//! they do, so a test can tell how many logins happened.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use k8s_tunnels::access::transfer::{BrowserOpener, OpenError};

/// What an opener did.
#[derive(Debug, Default)]
pub struct Counts {
    /// URLs it was asked to open.
    pub opened: AtomicU64,
    /// Sign-in forms it submitted.
    pub signed_in: AtomicU64,
    /// "Signed in; you can close this tab" pages it reached.
    pub done: AtomicU64,
    /// Failures, as text (no secrets: the form's password is the test's own).
    pub errors: Mutex<Vec<String>>,
    /// The key codes the consent pages showed.
    pub codes: Mutex<Vec<String>>,
}

impl Counts {
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::SeqCst)
    }
    pub fn signed_in(&self) -> u64 {
        self.signed_in.load(Ordering::SeqCst)
    }
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }
    pub fn errors(&self) -> Vec<String> {
        k8s_tunnels::sync::lock(&self.errors).clone()
    }
    pub fn codes(&self) -> Vec<String> {
        k8s_tunnels::sync::lock(&self.codes).clone()
    }
}

/// The key code a consent page shows (`<code id="code">…</code>`).
pub fn shown_code(html: &str) -> Option<String> {
    let start = html.find("<code id=\"code\">")? + "<code id=\"code\">".len();
    let end = html[start..].find("</code>")?;
    Some(html[start..start + end].to_string())
}

/// An HTTP client playing the user's browser: follows redirects itself, keeps cookies per
/// host, fills the sign-in form.
pub struct HttpBrowser {
    client: reqwest::Client,
    email: String,
    password: String,
    /// Whether the user ticks "keep this client signed in to the team's other applications"
    /// on the consent page (hands over the org token).
    keep_session: bool,
    pub counts: Arc<Counts>,
}

impl HttpBrowser {
    /// Resolves every name in `resolve` to its address and trusts `ca_pem`.
    pub fn new(resolve: &[(&str, SocketAddr)], ca_pem: &[u8], email: &str, password: &str) -> Self {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(ca_pem).expect("lab CA"));
        for (name, addr) in resolve {
            builder = builder.resolve(name, *addr);
        }
        Self {
            client: builder.build().expect("HTTP browser"),
            email: email.to_string(),
            password: password.to_string(),
            keep_session: true,
            counts: Arc::default(),
        }
    }

    /// The user leaves "keep this client signed in…" unticked.
    pub fn without_session(mut self) -> Self {
        self.keep_session = false;
        self
    }

    /// Follows `url` to the done page, signing in on the way; waits for it.
    pub async fn sign_in(&self, url: url::Url) -> Result<(), String> {
        Self::sign_in_with(
            self.client.clone(),
            url,
            self.email.clone(),
            self.password.clone(),
            self.keep_session,
            self.counts.clone(),
        )
        .await
    }

    async fn sign_in_with(
        client: reqwest::Client,
        start: url::Url,
        email: String,
        password: String,
        keep_session: bool,
        counts: Arc<Counts>,
    ) -> Result<(), String> {
        let mut jar: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut url = start;
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let host = url.host_str().unwrap_or_default().to_string();
            let cookies = jar
                .get(&host)
                .map(|c| {
                    c.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            let mut request = match form.take() {
                Some(fields) => client.post(url.clone()).form(&fields),
                None => client.get(url.clone()),
            };
            if !cookies.is_empty() {
                request = request.header("cookie", cookies);
            }
            let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
            for cookie in response.headers().get_all("set-cookie") {
                if let Some((name, value)) = cookie
                    .to_str()
                    .ok()
                    .and_then(|c| c.split(';').next())
                    .and_then(|p| p.split_once('='))
                {
                    jar.entry(host.clone())
                        .or_default()
                        .insert(name.trim().to_string(), value.trim().to_string());
                }
            }
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or("redirect without Location")?;
                url = url.join(location).map_err(|e| e.to_string())?;
                continue;
            }
            let body = response.text().await.map_err(|e| e.to_string())?;
            if body.contains("id=\"done\"") {
                counts.done.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            let Some(action) = form_action(&body) else {
                return Err(format!(
                    "{url} answered {status} with neither a form nor the done page"
                ));
            };
            url = url.join(&action).map_err(|e| e.to_string())?;
            if body.contains("id=\"allow\"") {
                // The edge asks whether to hand tokens to the command-line client: yes, and
                // the team session too if this user would.
                if let Some(code) = shown_code(&body) {
                    k8s_tunnels::sync::lock(&counts.codes).push(code);
                }
                let offers_session = body.contains("name=\"send_org_token\"");
                form = Some(if keep_session && offers_session {
                    vec![("send_org_token".to_string(), "true".to_string())]
                } else {
                    Vec::new()
                });
                continue;
            }
            counts.signed_in.fetch_add(1, Ordering::SeqCst);
            // As a browser does: the form's hidden fields too (the sign-in form's token).
            let mut fields = hidden_inputs(&body);
            fields.push(("email".to_string(), email.clone()));
            fields.push(("password".to_string(), password.clone()));
            form = Some(fields);
        }
        Err("too many hops".into())
    }
}

/// The `name` and `value` of every `<input type="hidden">` of the page.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let marker = format!("{name}=\"");
        let at = tag.find(&marker)? + marker.len();
        let end = tag[at..].find('"')?;
        Some(
            tag[at..at + end]
                .replace("&amp;", "&")
                .replace("&quot;", "\""),
        )
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect()
}

/// The `action` of the page's form, HTML entities undone.
fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let rest = &html[start..];
    let at = rest.find("action=\"")? + "action=\"".len();
    let end = rest[at..].find('"')?;
    Some(
        rest[at..at + end]
            .replace("&amp;", "&")
            .replace("&#x2F;", "/")
            .replace("&#47;", "/")
            .replace("&quot;", "\"")
            .replace("&#39;", "'"),
    )
}

impl BrowserOpener for HttpBrowser {
    fn open(&self, url: &url::Url) -> Result<bool, OpenError> {
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        let (client, url, email, password, keep, counts) = (
            self.client.clone(),
            url.clone(),
            self.email.clone(),
            self.password.clone(),
            self.keep_session,
            self.counts.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) =
                Self::sign_in_with(client, url, email, password, keep, counts.clone()).await
            {
                k8s_tunnels::sync::lock(&counts.errors).push(e);
            }
        });
        Ok(true)
    }
}

/// Headless Chromium (Debian `chromium`) with a DevTools endpoint; every name of the lab maps to
/// the gateway. Killed on drop.
pub struct Chromium {
    child: Child,
    devtools: String,
    _profile: tempfile::TempDir,
    email: String,
    password: String,
    pub counts: Arc<Counts>,
}

impl Chromium {
    pub fn start(names: &[&str], gateway: SocketAddr, email: &str, password: &str) -> Self {
        let profile = tempfile::tempdir().expect("chromium profile dir");
        let rules = names
            .iter()
            .map(|n| format!("MAP {n} {gateway}"))
            .collect::<Vec<_>>()
            .join(", ");
        let binary = chromium_path();
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--host-resolver-rules={rules}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (apt-get install chromium)",
                    binary.display()
                )
            });
        // Chromium announces its DevTools endpoint on stderr.
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                    sent = true;
                }
            }
        });
        let devtools = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium printed its DevTools endpoint");
        Self {
            child,
            devtools,
            _profile: profile,
            email: email.to_string(),
            password: password.to_string(),
            counts: Arc::default(),
        }
    }

    async fn drive(
        devtools: String,
        url: url::Url,
        email: String,
        password: String,
        counts: Arc<Counts>,
    ) -> Result<(), String> {
        let (ws, _) = tokio_tungstenite::connect_async(devtools.as_str())
            .await
            .map_err(|e| format!("DevTools: {e}"))?;
        let mut cdp = Cdp {
            ws,
            next_id: 0,
            session: None,
        };
        let target = cdp
            .call(
                "Target.createTarget",
                serde_json::json!({"url": url.as_str()}),
            )
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or("no targetId")?
            .to_string();
        let attached = cdp
            .call(
                "Target.attachToTarget",
                serde_json::json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        cdp.session = Some(
            attached["sessionId"]
                .as_str()
                .ok_or("no sessionId")?
                .to_string(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut submitted = false;
        let mut allowed = false;
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err("Chromium did not reach the done page in 60 s".into());
            }
            // Between pages an evaluation may fail (the context is gone): just look again.
            let state = cdp
                .eval("document.querySelector('#done') ? 'done' : document.querySelector('#allow') ? 'allow' : (document.querySelector('#email') ? 'form' : 'wait')")
                .await
                .unwrap_or(serde_json::Value::Null);
            match state.as_str() {
                Some("done") => {
                    counts.done.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Some("form") if !submitted => {
                    let fill = format!(
                        "document.querySelector('#email').value = {}; document.querySelector('#password').value = {}; document.querySelector('form').submit(); true",
                        serde_json::json!(email),
                        serde_json::json!(password)
                    );
                    cdp.eval(&fill).await?;
                    counts.signed_in.fetch_add(1, Ordering::SeqCst);
                    submitted = true;
                }
                // The edge asks whether to hand tokens to the command-line client: a click.
                Some("allow") if !allowed => {
                    cdp.eval("(() => { const keep = document.querySelector('#send_org_token'); if (keep) keep.checked = true; document.querySelector('#allow').click(); return true; })()")
                        .await?;
                    allowed = true;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

type DevToolsSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol connection (browser endpoint, flat sessions).
struct Cdp {
    ws: DevToolsSocket,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    async fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = serde_json::json!(s);
        }
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                msg.to_string(),
            ))
            .await
            .map_err(|e| e.to_string())?;
        while let Some(frame) = self.ws.next().await {
            let frame = frame.map_err(|e| e.to_string())?;
            let Ok(text) = frame.to_text() else { continue };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
                continue;
            };
            if value["id"] == id {
                if let Some(err) = value.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(value["result"].clone());
            }
        }
        Err("DevTools closed".into())
    }

    async fn eval(&mut self, expression: &str) -> Result<serde_json::Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expression, "returnByValue": true}),
            )
            .await?;
        Ok(r["result"]["value"].clone())
    }
}

impl BrowserOpener for Chromium {
    fn open(&self, url: &url::Url) -> Result<bool, OpenError> {
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        let (devtools, url, email, password, counts) = (
            self.devtools.clone(),
            url.clone(),
            self.email.clone(),
            self.password.clone(),
            self.counts.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = Self::drive(devtools, url, email, password, counts.clone()).await {
                k8s_tunnels::sync::lock(&counts.errors).push(e);
            }
        });
        Ok(true)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chromium_path() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!("Chromium is required (Debian: apt-get install chromium)");
}
