//! The browser login with token transfer (cloudflared's `token/transfer.go`): a fresh NaCl box
//! key pair per login, the app's `/cdn-cgi/access/cli` page opened in the user's browser, and
//! a long-poll of the transfer service until the edge deposits the tokens, encrypted to our
//! public key.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use crypto_box::aead::{Aead as _, AeadCore as _, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use serde::Deserialize;

use crate::access::metadata::AppInfo;
use crate::secret::Secret;

/// Why the URL could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the browser with {program}")]
pub struct OpenError {
    /// What was run.
    pub program: String,
    /// What the operating system answered.
    #[source]
    pub source: std::io::Error,
}

/// Opens the login URL for the user. Pluggable: the system browser, a configured command,
/// only printing it, or (in tests) an HTTP client or a headless browser.
pub trait BrowserOpener: Send + Sync + 'static {
    /// Starts showing `url` to the user and returns at once (the login waits for the
    /// transfer, not for the browser). `Ok(false)`: nothing was opened, the URL is only printed.
    fn open(&self, url: &url::Url) -> Result<bool, OpenError>;
}

/// The desktop's opener: `$BROWSER` if set, else `xdg-open` / `open` / `start`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemOpener;

/// A configured command; the URL is appended as its last argument.
#[derive(Debug, Clone)]
pub struct CommandOpener {
    program: String,
    args: Vec<String>,
}

/// Opens nothing: the URL is only printed (headless machines, `browser: none`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PrintOnly;

impl CommandOpener {
    /// From a command line split on whitespace (`firefox --new-tab`).
    pub fn from_command_line(command: &str) -> Option<Self> {
        let mut words = command.split_whitespace().map(str::to_string);
        Some(Self {
            program: words.next()?,
            args: words.collect(),
        })
    }
}

impl BrowserOpener for CommandOpener {
    fn open(&self, url: &url::Url) -> Result<bool, OpenError> {
        // Spawned, not waited for: a browser may run until the user closes it. The URL is one
        // argument, never through a shell.
        std::process::Command::new(&self.program)
            .args(&self.args)
            .arg(url.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|child| {
                // Reap it in the background so it does not linger as a zombie.
                std::thread::spawn(move || {
                    let mut child = child;
                    let _ = child.wait();
                });
                true
            })
            .map_err(|source| OpenError {
                program: self.program.clone(),
                source,
            })
    }
}

impl BrowserOpener for SystemOpener {
    fn open(&self, url: &url::Url) -> Result<bool, OpenError> {
        let command = std::env::var("BROWSER")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| {
                if cfg!(target_os = "macos") {
                    "open".into()
                } else if cfg!(windows) {
                    "explorer".into()
                } else {
                    "xdg-open".into()
                }
            });
        match CommandOpener::from_command_line(&command) {
            Some(opener) => opener.open(url),
            None => Ok(false),
        }
    }
}

impl BrowserOpener for PrintOnly {
    fn open(&self, _url: &url::Url) -> Result<bool, OpenError> {
        Ok(false)
    }
}

/// The opener for the `access.browser` setting.
pub fn opener_from_setting(setting: Option<&str>) -> Arc<dyn BrowserOpener> {
    match setting.map(str::trim) {
        None | Some("") => Arc::new(SystemOpener),
        Some(s) if s.eq_ignore_ascii_case("none") => Arc::new(PrintOnly),
        Some(command) => match CommandOpener::from_command_line(command) {
            Some(opener) => Arc::new(opener),
            None => Arc::new(PrintOnly),
        },
    }
}

/// The tokens a login hands over.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The application token.
    pub app_token: Secret,
    /// The org token (the auth domain's session), for later silent exchanges.
    pub org_token: Option<Secret>,
}

/// Long-poll limits.
#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    /// One poll's limit (the service holds a request up to 60 s).
    pub request_timeout: Duration,
    /// How long the user has to sign in.
    pub total: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        // cloudflared: 60 s polls, ten of them.
        Self {
            request_timeout: Duration::from_secs(75),
            total: Duration::from_secs(600),
        }
    }
}

/// Why the browser login failed. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The user did not sign in within the time allowed.
    #[error("no sign-in within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// Polling failed (network, TLS).
    #[error("cannot reach the token transfer service")]
    Request(#[source] reqwest::Error),
    /// The transfer service failed.
    #[error("the token transfer service answered HTTP {0}")]
    Server(u16),
    /// The deposit is not what the protocol says (bad base64, a box that does not open).
    #[error("the token transfer answer is invalid: {0}")]
    Invalid(String),
}

/// A short, readable code for a client's public key (base64url, as it travels in the sign-in
/// URL): its first 16 characters in groups of four, `AbCd-EfGh-IjKl-MnOp`. The CLI or the
/// window shows it next to the sign-in link and the sign-in page shows it beside "Allow", so a
/// link made with someone else's key (who would receive the tokens) does not look like ours.
/// 96 bits: nobody makes a key pair to match.
pub fn key_code(public_b64: &str) -> String {
    let chars: Vec<char> = public_b64
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(16)
        .collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A login in progress: its key pair and the URL to show.
pub struct Transfer {
    secret: SecretKey,
    public_b64: String,
    /// The URL the user must open.
    pub url: url::Url,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Transfer {
    /// A fresh key pair and the `/cdn-cgi/access/cli` URL for `app` (reached at `app_url`).
    pub fn new(app: &AppInfo, app_url: &url::Url) -> Self {
        let secret = SecretKey::generate(&mut OsRng);
        let public_b64 =
            base64::engine::general_purpose::URL_SAFE.encode(secret.public_key().as_bytes());
        let mut base = app_url.clone();
        base.set_query(None);
        base.set_fragment(None);
        let mut back = base.clone();
        back.query_pairs_mut()
            .append_pair("aud", &app.aud)
            .append_pair("token", &public_b64);
        let mut url = base;
        url.set_path(crate::wire::access::CLI_PATH);
        url.query_pairs_mut()
            .append_pair("aud", &app.aud)
            .append_pair("edge_token_transfer", "true")
            .append_pair("redirect_url", back.as_str())
            .append_pair("send_org_token", "true")
            .append_pair("token", &public_b64);
        Self {
            secret,
            public_b64,
            url,
        }
    }

    /// The code of this login's key ([`key_code`]): the sign-in page shows the same code, so
    /// the user can tell that the page authorises this client and no other.
    pub fn code(&self) -> String {
        key_code(&self.public_b64)
    }

    /// Long-polls `<transfer_service>/transfer/<PUB>` until the tokens arrive.
    pub async fn wait(
        &self,
        client: &reqwest::Client,
        transfer_service: &url::Url,
        poll: PollSettings,
    ) -> Result<Tokens, TransferError> {
        let mut url = transfer_service.clone();
        url.path_segments_mut()
            .map_err(|()| {
                TransferError::Invalid("the transfer service URL cannot have a path".into())
            })?
            .pop_if_empty()
            .extend(["transfer", &self.public_b64]);
        let deadline = Instant::now() + poll.total;
        loop {
            let started = Instant::now();
            if started >= deadline {
                return Err(TransferError::TimedOut(poll.total));
            }
            let response = client
                .get(url.clone())
                .timeout(
                    poll.request_timeout
                        .min(deadline - started)
                        .max(Duration::from_secs(1)),
                )
                .send()
                .await;
            match response {
                Ok(r) if r.status() == reqwest::StatusCode::OK => {
                    let service_key = r
                        .headers()
                        .get("service-public-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            TransferError::Invalid("no service-public-key header".into())
                        })?;
                    let body = r.bytes().await.map_err(TransferError::Request)?;
                    return self.open_box(&service_key, &body);
                }
                Ok(r) if r.status().is_server_error() => {
                    return Err(TransferError::Server(r.status().as_u16()));
                }
                // Below 500 and not 200: still waiting (the service timed our poll out).
                Ok(_) => {}
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(TransferError::Request(e.without_url())),
            }
            // A service that answers at once must not make this spin.
            if started.elapsed() < Duration::from_millis(500) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    fn open_box(&self, service_key: &str, body: &[u8]) -> Result<Tokens, TransferError> {
        let invalid = |what: &str| TransferError::Invalid(what.to_string());
        let key_bytes = base64::engine::general_purpose::URL_SAFE
            .decode(service_key.trim())
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(service_key.trim())
            })
            .map_err(|_| invalid("the service public key is not base64url"))?;
        let service_key = PublicKey::from_slice(&key_bytes)
            .map_err(|_| invalid("the service public key is not 32 bytes"))?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(body.trim_ascii())
            .map_err(|_| invalid("the body is not base64"))?;
        if sealed.len() <= 24 {
            return Err(invalid("the body is too short"));
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let plain = SalsaBox::new(&service_key, &self.secret)
            .decrypt(crypto_box::Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| invalid("the box does not open with our key"))?;
        #[derive(Deserialize)]
        struct Deposit {
            app_token: String,
            #[serde(default)]
            org_token: Option<String>,
        }
        // serde_json's errors name positions, never the input.
        let deposit: Deposit = serde_json::from_slice(&plain)
            .map_err(|e| TransferError::Invalid(format!("the tokens are not JSON: {e}")))?;
        if deposit.app_token.is_empty() {
            return Err(invalid("no app token"));
        }
        Ok(Tokens {
            app_token: Secret::new(deposit.app_token),
            org_token: deposit.org_token.filter(|t| !t.is_empty()).map(Secret::new),
        })
    }
}

/// Seals `tokens` for `client_public_b64` the way the edge does; for tests and the lab edge.
pub fn seal_for(
    client_public_b64: &str,
    app_token: &str,
    org_token: Option<&str>,
) -> Option<(String, String)> {
    let client = base64::engine::general_purpose::URL_SAFE
        .decode(client_public_b64)
        .ok()?;
    let client = PublicKey::from_slice(&client).ok()?;
    let service = SecretKey::generate(&mut OsRng);
    let nonce = SalsaBox::generate_nonce(&mut OsRng);
    let plain = serde_json::json!({"app_token": app_token, "org_token": org_token}).to_string();
    let sealed = SalsaBox::new(&client, &service)
        .encrypt(&nonce, plain.as_bytes())
        .ok()?;
    let mut body = nonce.to_vec();
    body.extend(sealed);
    Some((
        base64::engine::general_purpose::STANDARD.encode(body),
        base64::engine::general_purpose::URL_SAFE.encode(service.public_key().as_bytes()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn app() -> AppInfo {
        AppInfo {
            app_host: "app.example.com".into(),
            aud: "aud-1".into(),
            auth_domain: "team.cloudflareaccess.com".into(),
        }
    }

    #[test]
    fn cli_url_has_cloudflareds_shape() {
        let t = Transfer::new(
            &app(),
            &url::Url::parse("https://app.example.com/k8s?x=1").unwrap(),
        );
        assert_eq!(t.url.path(), "/cdn-cgi/access/cli");
        let q: std::collections::HashMap<_, _> = t.url.query_pairs().into_owned().collect();
        assert_eq!(q["aud"], "aud-1");
        assert_eq!(q["edge_token_transfer"], "true");
        assert_eq!(q["send_org_token"], "true");
        assert_eq!(q["token"], t.public_b64);
        assert!(t.public_b64.ends_with('='), "padded base64url");
        let back = url::Url::parse(&q["redirect_url"]).unwrap();
        assert_eq!(back.host_str(), Some("app.example.com"));
        assert_eq!(back.path(), "/k8s");
        assert!(back.query().unwrap().contains("aud=aud-1"));
    }

    #[test]
    fn a_sealed_deposit_opens_with_our_key_only() {
        let t = Transfer::new(
            &app(),
            &url::Url::parse("https://app.example.com/").unwrap(),
        );
        let (body, key) = seal_for(&t.public_b64, "app.tok.en", Some("org.tok.en")).unwrap();
        let tokens = t.open_box(&key, body.as_bytes()).unwrap();
        assert_eq!(tokens.app_token.expose(), "app.tok.en");
        assert_eq!(tokens.org_token.unwrap().expose(), "org.tok.en");
        let other = Transfer::new(
            &app(),
            &url::Url::parse("https://app.example.com/").unwrap(),
        );
        let err = other.open_box(&key, body.as_bytes()).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("tok.en"));
    }
}
