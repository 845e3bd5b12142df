//! The gateway's configuration: a typed, validated structure, read from YAML by the binary and
//! built in code by the lab and the tests.
//!
//! ```yaml
//! listen: 0.0.0.0:443
//! tls:                                   # omit for plain HTTP (loopback or behind a TLS proxy)
//!   cert: { file: /etc/k8s-tunnels-gateway/tls.crt }
//!   key: { file: /etc/k8s-tunnels-gateway/tls.key }
//! ping_interval: 54s                     # WebSocket ping on a stream idle this long (default 54s)
//! ping_timeout: 20s                      # ... and its close when the client stays silent (default 20s)
//! connect_timeout: 10s                   # dialling an origin (default 10s)
//! jwks: { file: /etc/k8s-tunnels-gateway/jwks.json }   # default key set for every application
//! jwks_refresh: 5m                       # key set files read again this often (and on an unknown kid)
//! limits:                                # see `LimitsConfig` (every key optional)
//!   max_connections: 10000
//!   max_connections_per_client: 1024
//!   max_unauthenticated: 1024
//!   tls_handshake_timeout: 10s
//!   request_timeout: 30s
//!   socks_timeout: 10s
//! applications:
//!   - hostname: prod-eu.k8s.example.com
//!     aud: 4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2
//!     origin: tcp://10.0.0.10:6443
//!     socks: true                        # a SOCKS5 server inside the stream (cloudflared proxyType: socks)
//!     issuer: https://team.cloudflareaccess.com   # optional `iss` check
//!     service_tokens:
//!       - client_id: 0123.access
//!         client_secret: { env: PROD_EU_CLIENT_SECRET }   # or { file: /path }
//!   - hostname: bastion.k8s.example.com
//!     aud: 9f2c…
//!     origin: bastion                    # destination from Cf-Access-Jump-Destination
//!     allow: ["10.0.0.10:6443", "*.internal.example.com"]   # default: any address off the internal list
//!     allow_internal: false              # true: `host:port` entries may reach this host (see docs)
//! access:                                # optional: play the Access login (auth domain, transfer service)
//!   auth_domain: team.cloudflareaccess.com
//!   signing_key: { file: /etc/k8s-tunnels-gateway/access-key.pem }   # RSA, signs app/org tokens
//!   app_token_ttl: 24h
//!   org_token_ttl: 720h
//!   transfer_host: login.cloudflareaccess.org
//!   transfer_timeout: 60s
//!   max_transfer_polls: 256
//!   max_transfer_polls_per_client: 4     # per client address (IPv6: its /64)
//!   sign_in_failures: 5                  # wrong passwords per client address and per account ...
//!   sign_in_window: 5m                   # ... in this long, then 429 until one is forgiven
//!   identities:
//!     - email: ada@example.com
//!       password: { env: ADA_PASSWORD }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::keys::{KeySet, KeyStore, KeysError};

use crate::secret::Secret;

/// The Access edge's ping interval; idle streams behind proxies survive with it.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(54);
/// How long a pinged client may stay silent before its stream is closed.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long dialling an origin may take before the client gets a 502.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of an application token minted by the login (Cloudflare's default session).
pub const DEFAULT_APP_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of the auth domain's organisation token (Cloudflare's default: 30 days).
pub const DEFAULT_ORG_TOKEN_TTL: Duration = Duration::from_secs(720 * 3600);
/// The transfer service's host name, as cloudflared knows it.
pub const DEFAULT_TRANSFER_HOST: &str = "login.cloudflareaccess.org";
/// How long `GET /transfer/<key>` waits for the login before answering 404 (cloudflared's
/// client timeout).
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// How often key set files are read again (also at once on a token naming an unknown key).
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Open connections at once, streams included.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Open connections at once from one client address (IPv6: one /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1024;
/// Connections at once that carry no stream yet (handshakes, login pages, transfer polls).
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 1024;
/// Time a client has to finish the TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers (k8s-tunnels' warm connections wait up to
/// 20 s before their first request).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a stream of a `socks` application has for its SOCKS5 greeting and request.
pub const DEFAULT_SOCKS_TIMEOUT: Duration = Duration::from_secs(10);
/// Transfer long-polls waiting at once.
pub const DEFAULT_MAX_TRANSFER_POLLS: usize = 256;
/// Transfer long-polls waiting at once from one client address (IPv6: one /64). A client
/// polls for one login at a time.
pub const DEFAULT_MAX_TRANSFER_POLLS_PER_CLIENT: usize = 4;
/// Wrong passwords allowed per client address, and per account, in [`DEFAULT_SIGN_IN_WINDOW`].
pub const DEFAULT_SIGN_IN_FAILURES: u32 = 5;
/// The window of [`DEFAULT_SIGN_IN_FAILURES`].
pub const DEFAULT_SIGN_IN_WINDOW: Duration = Duration::from_secs(300);

/// Errors loading or validating a gateway configuration. Each names the field or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{path}: cannot read gateway config")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid YAML for this format (the source names line and column).
    #[error("{path}: invalid gateway config")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with the location.
        #[source]
        source: serde_norway::Error,
    },
    /// A field holds a value the gateway cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `applications[1].hostname`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A file a field refers to could not be read.
    #[error("{field}: cannot read {path}")]
    File {
        /// Path of the field.
        field: String,
        /// The file.
        path: PathBuf,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// An environment variable a field refers to is not set (or not UTF-8).
    #[error("{field}: environment variable {var} is not set")]
    Env {
        /// Path of the field.
        field: String,
        /// The variable.
        var: String,
    },
    /// A key set could not be read or used.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The TLS certificate or key could not be used.
    #[error("{field}: unusable TLS certificate or key")]
    Tls {
        /// Path of the field.
        field: String,
        /// Which PEM block or certificate was refused.
        #[source]
        source: crate::tls::TlsError,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The YAML shape of a source: a map with exactly one of its keys (`{ file: … }`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceRepr {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    inline: Option<String>,
}

impl TryFrom<SourceRepr> for TextSource {
    type Error = String;

    fn try_from(repr: SourceRepr) -> Result<Self, Self::Error> {
        match repr {
            SourceRepr {
                file: Some(path),
                env: None,
                inline: None,
            } => Ok(Self::File(path)),
            SourceRepr {
                file: None,
                env: None,
                inline: Some(text),
            } => Ok(Self::Inline(text)),
            _ => Err("expected exactly one of `file: <path>` or `inline: <text>`".to_owned()),
        }
    }
}

impl TryFrom<SourceRepr> for SecretSource {
    type Error = String;

    fn try_from(repr: SourceRepr) -> Result<Self, Self::Error> {
        match repr {
            SourceRepr {
                file: Some(path),
                env: None,
                inline: None,
            } => Ok(Self::File(path)),
            SourceRepr {
                file: None,
                env: Some(var),
                inline: None,
            } => Ok(Self::Env(var)),
            _ => Err(
                "expected exactly one of `file: <path>` or `env: <VARIABLE>` (secrets are never inline)"
                    .to_owned(),
            ),
        }
    }
}

/// Where a piece of public text (a certificate, a key set) comes from.
/// YAML: `{ file: <path> }` or `{ inline: <text> }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SourceRepr")]
pub enum TextSource {
    /// A file path.
    File(PathBuf),
    /// The text itself.
    Inline(String),
}

/// The key set `source` names (configuration field `field`), following its file if it has one.
fn key_store(
    source: &TextSource,
    field: &str,
    extra: Option<&Arc<KeySet>>,
) -> Result<KeyStore, ConfigError> {
    let file = match source {
        TextSource::File(path) => Some(path.as_path()),
        TextSource::Inline(_) => None,
    };
    Ok(KeyStore::load(&source.load(field)?, file, field, extra)?)
}

impl TextSource {
    pub(crate) fn load(&self, field: &str) -> Result<String, ConfigError> {
        match self {
            Self::Inline(text) => Ok(text.clone()),
            Self::File(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                field: field.to_owned(),
                path: path.clone(),
                source,
            }),
        }
    }
}

/// Where a secret (a private key, a service-token secret) comes from. YAML offers only
/// `{ file: <path> }` and `{ env: <VARIABLE> }`, so secrets never sit in the config file itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SourceRepr")]
pub enum SecretSource {
    /// A file holding the secret (surrounding whitespace is trimmed for one-line secrets).
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
    /// The secret itself, for configurations built in code.
    Value(Secret),
}

impl SecretSource {
    fn load(&self, field: &str, trim: bool) -> Result<Secret, ConfigError> {
        match self {
            Self::Value(secret) => Ok(secret.clone()),
            Self::Env(var) => std::env::var(var)
                .map(|v| Secret::new(if trim { v.trim().to_owned() } else { v }))
                .map_err(|_| ConfigError::Env {
                    field: field.to_owned(),
                    var: var.clone(),
                }),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|v| Secret::new(if trim { v.trim().to_owned() } else { v }))
                .map_err(|source| ConfigError::File {
                    field: field.to_owned(),
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// The listener's certificate chain and private key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM.
    pub cert: TextSource,
    /// The private key, PEM.
    pub key: SecretSource,
}

/// Where an application's streams go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A fixed TCP service (`tcp://host:port`).
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port of the service.
        port: u16,
    },
    /// The destination named by the client's `Cf-Access-Jump-Destination` header.
    Bastion,
}

impl std::str::FromStr for Origin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "bastion" {
            return Ok(Self::Bastion);
        }
        let Some(rest) = s.strip_prefix("tcp://") else {
            return Err(format!(
                "`{s}` is not an origin: expected `tcp://host:port` or `bastion`"
            ));
        };
        let (host, port) = split_host_port(rest.trim_end_matches('/'))
            .ok_or_else(|| format!("`{s}` has no valid `host:port` after `tcp://`"))?;
        Ok(Self::Tcp { host, port })
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Self::Bastion => f.write_str("bastion"),
        }
    }
}

/// Splits `host:port` or `[v6]:port`; the host must be non-empty and the port non-zero.
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    Some((host.to_owned(), port))
}

/// A service token the application accepts (`Cf-Access-Client-Id` / `Cf-Access-Client-Secret`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTokenConfig {
    /// The client id (not secret; it is logged as the subject).
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretSource,
}

/// One Access application: a hostname, its AUD tag and its origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationConfig {
    /// The public hostname clients connect to (matched against `Host`, case-insensitively).
    pub hostname: String,
    /// The application's AUD tag: a JWT must list it in `aud`.
    pub aud: String,
    /// Where streams go.
    pub origin: Origin,
    /// Run a SOCKS5 server (NoAuth, CONNECT only, to the fixed origin) inside each stream, like
    /// cloudflared's `proxyType: socks`. Only with a `tcp://` origin.
    #[serde(default)]
    pub socks: bool,
    /// Bastion only: the destinations allowed, each an exact `host:port` or a host pattern
    /// (`host`, `*.suffix`, any port). Every destination's resolved addresses are checked
    /// against the internal list (the gateway's own host, link-local, cloud metadata; see
    /// `docs/gateway.md`), with or without this list. An entry that is an IP address (`ip`
    /// or `ip:port`) lets a destination naming that address reach the gateway's own host;
    /// a `host:port` entry naming a host does so only with [`allow_internal`](Self::allow_internal).
    /// Link-local and metadata addresses are never reached. `None` allows every destination
    /// off the internal list.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Bastion only, with `allow`: lets the `host:port` entries that name a host reach the
    /// gateway's own host (loopback, its interface addresses) whatever the name resolves to.
    /// This trusts the DNS answer for those names (a rebound record reaches the host too), so
    /// prefer an IP address entry; link-local and metadata addresses stay refused.
    #[serde(default)]
    pub allow_internal: bool,
    /// The key set for this application's JWTs; defaults to the top-level `jwks`.
    #[serde(default)]
    pub jwks: Option<TextSource>,
    /// When set, a JWT's `iss` must equal it.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Service tokens accepted in place of a JWT.
    #[serde(default)]
    pub service_tokens: Vec<ServiceTokenConfig>,
}

fn default_ping_interval() -> Duration {
    DEFAULT_PING_INTERVAL
}

fn default_ping_timeout() -> Duration {
    DEFAULT_PING_TIMEOUT
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_app_token_ttl() -> Duration {
    DEFAULT_APP_TOKEN_TTL
}

fn default_org_token_ttl() -> Duration {
    DEFAULT_ORG_TOKEN_TTL
}

fn default_transfer_host() -> String {
    DEFAULT_TRANSFER_HOST.to_owned()
}

fn default_transfer_timeout() -> Duration {
    DEFAULT_TRANSFER_TIMEOUT
}

fn default_max_transfer_polls() -> usize {
    DEFAULT_MAX_TRANSFER_POLLS
}

fn default_max_transfer_polls_per_client() -> usize {
    DEFAULT_MAX_TRANSFER_POLLS_PER_CLIENT
}

fn default_sign_in_failures() -> u32 {
    DEFAULT_SIGN_IN_FAILURES
}

fn default_sign_in_window() -> Duration {
    DEFAULT_SIGN_IN_WINDOW
}

fn default_jwks_refresh() -> Duration {
    DEFAULT_JWKS_REFRESH
}

/// The `limits:` section: what the gateway holds at once and how long a client may take, so it
/// can face the internet. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections at once, streams included; past it a new connection is reset at
    /// accept. Lowered at start to what the open-file limit allows (two descriptors a stream).
    pub max_connections: usize,
    /// Open connections at once per client address (an IPv6 client: its /64); at most
    /// `max_connections`. Raise it when many users share one address (an office's NAT).
    pub max_connections_per_client: usize,
    /// Connections at once that carry no stream yet: TLS handshakes, requests being read,
    /// login pages, transfer polls; at most `max_connections`. When full, a new connection
    /// from a client holding fewer than the busiest still gets in and the busiest client's
    /// oldest is closed; one from the busiest client itself is reset.
    pub max_unauthenticated: usize,
    /// Time a client has to finish the TLS handshake.
    #[serde(deserialize_with = "crate::duration::required")]
    pub tls_handshake_timeout: Duration,
    /// Time a client has to send a request's headers, from the handshake or the previous
    /// response on.
    #[serde(deserialize_with = "crate::duration::required")]
    pub request_timeout: Duration,
    /// Time a `socks` application's stream has for its SOCKS5 greeting and request, once
    /// its origin is dialled.
    #[serde(deserialize_with = "crate::duration::required")]
    pub socks_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            socks_timeout: DEFAULT_SOCKS_TIMEOUT,
        }
    }
}

impl LimitsConfig {
    /// The limits checked, the per-client and unauthenticated ones at most `max_connections`
    /// (so lowering that one alone is enough).
    fn resolve(&self) -> Result<Self, ConfigError> {
        for (field, count) in [
            ("limits.max_connections", self.max_connections),
            (
                "limits.max_connections_per_client",
                self.max_connections_per_client,
            ),
            ("limits.max_unauthenticated", self.max_unauthenticated),
        ] {
            if count == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        for (field, timeout) in [
            ("limits.tls_handshake_timeout", self.tls_handshake_timeout),
            ("limits.request_timeout", self.request_timeout),
            ("limits.socks_timeout", self.socks_timeout),
        ] {
            if timeout < Duration::from_secs(1) {
                return Err(invalid(field, "must be at least 1s"));
            }
        }
        Ok(Self {
            max_connections_per_client: self.max_connections_per_client.min(self.max_connections),
            max_unauthenticated: self.max_unauthenticated.min(self.max_connections),
            ..self.clone()
        })
    }
}

/// A user who can sign in on the gateway's login page (a stand-in for the identity provider).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The e-mail address: the login name and the tokens' `email` claim.
    pub email: String,
    /// The password.
    pub password: SecretSource,
}

/// The `access:` section: the gateway also plays the Access login, that is the auth domain
/// (`<team>.cloudflareaccess.com`: JWKS, sign-in page, organisation cookie), the per-application
/// endpoints (`cf-access-metadata`, `/cdn-cgi/access/authorized`, `/cdn-cgi/access/cli`) and the
/// token transfer service (`login.cloudflareaccess.org`). Each is chosen by `Host`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The auth domain's host name.
    pub auth_domain: String,
    /// The RSA private key (PEM) signing application and organisation tokens and the metadata
    /// answer; its public half is served at the auth domain's `/cdn-cgi/access/certs` and added
    /// to every application's key set.
    pub signing_key: SecretSource,
    /// Lifetime of application tokens.
    #[serde(
        default = "default_app_token_ttl",
        deserialize_with = "crate::duration::required"
    )]
    pub app_token_ttl: Duration,
    /// Lifetime of the organisation token (the auth domain's cookie, the silent exchange).
    #[serde(
        default = "default_org_token_ttl",
        deserialize_with = "crate::duration::required"
    )]
    pub org_token_ttl: Duration,
    /// The transfer service's host name.
    #[serde(default = "default_transfer_host")]
    pub transfer_host: String,
    /// How long a transfer long-poll waits before answering 404.
    #[serde(
        default = "default_transfer_timeout",
        deserialize_with = "crate::duration::required"
    )]
    pub transfer_timeout: Duration,
    /// Transfer long-polls waiting at once (each for its own client key); past it a poll is
    /// answered 429 at once.
    #[serde(default = "default_max_transfer_polls")]
    pub max_transfer_polls: usize,
    /// Transfer long-polls waiting at once from one client address (an IPv6 client: its
    /// /64), at most `max_transfer_polls`; past it that address's poll is answered 429 at
    /// once. Raise it when many users share one address (an office's NAT).
    #[serde(default = "default_max_transfer_polls_per_client")]
    pub max_transfer_polls_per_client: usize,
    /// Wrong passwords on the sign-in page allowed per client address, and per account, in
    /// `sign_in_window`; past it the page answers 429 until one is forgiven (one every
    /// `sign_in_window / sign_in_failures`).
    #[serde(default = "default_sign_in_failures")]
    pub sign_in_failures: u32,
    /// See `sign_in_failures`.
    #[serde(
        default = "default_sign_in_window",
        deserialize_with = "crate::duration::required"
    )]
    pub sign_in_window: Duration,
    /// The users who can sign in.
    #[serde(default)]
    pub identities: Vec<IdentityConfig>,
}

impl AccessConfig {
    /// An access section with default lifetimes, the default transfer host and no identities.
    pub fn new(auth_domain: impl Into<String>, signing_key: SecretSource) -> Self {
        Self {
            auth_domain: auth_domain.into(),
            signing_key,
            app_token_ttl: DEFAULT_APP_TOKEN_TTL,
            org_token_ttl: DEFAULT_ORG_TOKEN_TTL,
            transfer_host: DEFAULT_TRANSFER_HOST.to_owned(),
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            max_transfer_polls: DEFAULT_MAX_TRANSFER_POLLS,
            max_transfer_polls_per_client: DEFAULT_MAX_TRANSFER_POLLS_PER_CLIENT,
            sign_in_failures: DEFAULT_SIGN_IN_FAILURES,
            sign_in_window: DEFAULT_SIGN_IN_WINDOW,
            identities: Vec::new(),
        }
    }

    fn resolve(&self) -> Result<AccessSettings, ConfigError> {
        let auth_domain = dns_name(&self.auth_domain)
            .ok_or_else(|| invalid("access.auth_domain", "must be a DNS hostname"))?;
        let transfer_host = dns_name(&self.transfer_host)
            .ok_or_else(|| invalid("access.transfer_host", "must be a DNS hostname"))?;
        if transfer_host == auth_domain {
            return Err(invalid(
                "access.transfer_host",
                "must differ from the auth domain",
            ));
        }
        for (field, ttl) in [
            ("access.app_token_ttl", self.app_token_ttl),
            ("access.org_token_ttl", self.org_token_ttl),
            ("access.transfer_timeout", self.transfer_timeout),
            ("access.sign_in_window", self.sign_in_window),
        ] {
            if ttl < Duration::from_secs(1) {
                return Err(invalid(field, "must be at least 1s"));
            }
        }
        if self.max_transfer_polls == 0 {
            return Err(invalid("access.max_transfer_polls", "must be at least 1"));
        }
        if self.max_transfer_polls_per_client == 0 {
            return Err(invalid(
                "access.max_transfer_polls_per_client",
                "must be at least 1",
            ));
        }
        if self.sign_in_failures == 0 {
            return Err(invalid("access.sign_in_failures", "must be at least 1"));
        }
        let pem = self.signing_key.load("access.signing_key", false)?;
        let issuer = super::issuer::TokenIssuer::from_pem(&pem).map_err(|e| {
            invalid(
                "access.signing_key",
                format!("unusable signing key: {}", crate::error_chain(&e)),
            )
        })?;
        let keys = KeySet::parse(&issuer.jwks_json(), "access.signing_key")?;
        let mut identities: Vec<Identity> = Vec::new();
        for (i, identity) in self.identities.iter().enumerate() {
            let field = format!("access.identities[{i}]");
            let email = identity.email.trim().to_ascii_lowercase();
            if email.is_empty() || !email.contains('@') || email.chars().any(char::is_whitespace) {
                return Err(invalid(
                    format!("{field}.email"),
                    "must be an e-mail address",
                ));
            }
            if identities.iter().any(|known| known.email == email) {
                return Err(invalid(
                    format!("{field}.email"),
                    format!("`{email}` is listed twice"),
                ));
            }
            let password = identity.password.load(&format!("{field}.password"), true)?;
            if password.expose().is_empty() {
                return Err(invalid(format!("{field}.password"), "is empty"));
            }
            identities.push(Identity { email, password });
        }
        Ok(AccessSettings {
            auth_domain,
            transfer_host,
            issuer,
            keys: Arc::new(keys),
            app_token_ttl: self.app_token_ttl,
            org_token_ttl: self.org_token_ttl,
            transfer_timeout: self.transfer_timeout,
            max_transfer_polls: self.max_transfer_polls,
            max_transfer_polls_per_client: self
                .max_transfer_polls_per_client
                .min(self.max_transfer_polls),
            sign_in_failures: self.sign_in_failures,
            sign_in_window: self.sign_in_window,
            identities,
        })
    }
}

/// `name` lower-cased without a trailing dot, when it is a DNS host name.
fn dns_name(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then_some(name)
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// TLS certificate and key; `None` serves plain HTTP (warned about off loopback).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Interval of WebSocket pings on every stream.
    #[serde(
        default = "default_ping_interval",
        deserialize_with = "crate::duration::required"
    )]
    pub ping_interval: Duration,
    /// How long a pinged client may stay silent before its stream is closed (a client gone
    /// without a word: a laptop asleep, a network gone).
    #[serde(
        default = "default_ping_timeout",
        deserialize_with = "crate::duration::required"
    )]
    pub ping_timeout: Duration,
    /// Time limit for dialling an origin.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "crate::duration::required"
    )]
    pub connect_timeout: Duration,
    /// The default key set for applications that name none.
    #[serde(default)]
    pub jwks: Option<TextSource>,
    /// How often key set files (this one and the applications') are read again, so a rotated
    /// key is picked up without a restart. A token naming a key id the set lacks makes its file
    /// be read at once too (at most once a second).
    #[serde(
        default = "default_jwks_refresh",
        deserialize_with = "crate::duration::required"
    )]
    pub jwks_refresh: Duration,
    /// Connection limits and client time limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The applications, one per hostname.
    pub applications: Vec<ApplicationConfig>,
    /// The Access login the gateway plays, if any.
    #[serde(default)]
    pub access: Option<AccessConfig>,
}

impl GatewayConfig {
    /// A configuration listening on `listen` with no TLS, default timings and no applications.
    pub fn new(listen: std::net::SocketAddr) -> Self {
        Self {
            listen,
            tls: None,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            jwks: None,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            limits: LimitsConfig::default(),
            applications: Vec::new(),
            access: None,
        }
    }

    /// Reads a YAML configuration file (not yet validated: see [`GatewayConfig::resolve`]).
    pub fn from_yaml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Validates every field and loads what the fields refer to (files, environment variables,
    /// key sets, the TLS key), so that a started gateway cannot fail on configuration later.
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        if self.ping_interval < Duration::from_secs(1) {
            return Err(invalid("ping_interval", "must be at least 1s"));
        }
        if self.ping_timeout < Duration::from_secs(1) {
            return Err(invalid("ping_timeout", "must be at least 1s"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be more than 0s"));
        }
        if self.jwks_refresh < Duration::from_secs(1) {
            return Err(invalid("jwks_refresh", "must be at least 1s"));
        }
        let limits = self.limits.resolve()?;
        let tls = match &self.tls {
            None => None,
            Some(tls) => {
                let cert = tls.cert.load("tls.cert")?;
                let key = tls.key.load("tls.key", false)?;
                let config = crate::tls::server_config(cert.as_bytes(), key.expose().as_bytes())
                    .map_err(|source| ConfigError::Tls {
                        field: "tls".to_owned(),
                        source,
                    })?;
                Some(config)
            }
        };
        let access = match &self.access {
            None => None,
            Some(access) => Some(Arc::new(access.resolve()?)),
        };
        let access_keys = access.as_ref().map(|a| &a.keys);
        // One store for every application using the default set, so its file is read once.
        let default_jwks = match (&self.jwks, access_keys) {
            (Some(source), access_keys) => Some(Arc::new(key_store(source, "jwks", access_keys)?)),
            (None, Some(access_keys)) => Some(Arc::new(KeyStore::fixed(access_keys.clone()))),
            (None, None) => None,
        };
        if self.applications.is_empty() {
            return Err(invalid(
                "applications",
                "at least one application is needed",
            ));
        }
        let mut applications = HashMap::new();
        for (i, app) in self.applications.iter().enumerate() {
            let field = format!("applications[{i}]");
            let resolved = app.resolve(&field, default_jwks.as_ref(), access_keys)?;
            if let Some(access) = &access
                && [&access.auth_domain, &access.transfer_host].contains(&&resolved.hostname)
            {
                return Err(invalid(
                    format!("{field}.hostname"),
                    "is the access section's auth domain or transfer host",
                ));
            }
            if applications
                .insert(resolved.hostname.clone(), Arc::new(resolved))
                .is_some()
            {
                return Err(invalid(
                    format!("{field}.hostname"),
                    format!("`{}` is configured twice", app.hostname),
                ));
            }
        }
        Ok(ResolvedConfig {
            listen: self.listen,
            tls,
            keepalive: crate::wire::keepalive::Keepalive {
                idle: self.ping_interval,
                timeout: self.ping_timeout,
            },
            connect_timeout: self.connect_timeout,
            jwks_refresh: self.jwks_refresh,
            limits,
            applications,
            access,
        })
    }
}

impl ApplicationConfig {
    /// A tcp-origin application with no key set and no service tokens.
    pub fn new(hostname: impl Into<String>, aud: impl Into<String>, origin: Origin) -> Self {
        Self {
            hostname: hostname.into(),
            aud: aud.into(),
            origin,
            socks: false,
            allow: None,
            allow_internal: false,
            jwks: None,
            issuer: None,
            service_tokens: Vec::new(),
        }
    }

    fn resolve(
        &self,
        field: &str,
        default_jwks: Option<&Arc<KeyStore>>,
        access_keys: Option<&Arc<KeySet>>,
    ) -> Result<Application, ConfigError> {
        let hostname = self.hostname.trim().to_ascii_lowercase();
        let valid_host = !hostname.is_empty()
            && hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid_host {
            return Err(invalid(
                format!("{field}.hostname"),
                format!("`{}` is not a DNS hostname", self.hostname),
            ));
        }
        if self.aud.trim().is_empty() {
            return Err(invalid(format!("{field}.aud"), "must not be empty"));
        }
        if self.socks && self.origin == Origin::Bastion {
            return Err(invalid(
                format!("{field}.socks"),
                "only a tcp:// origin can run SOCKS5 inside the stream",
            ));
        }
        let allow = match (&self.allow, &self.origin) {
            (Some(_), Origin::Tcp { .. }) => {
                return Err(invalid(
                    format!("{field}.allow"),
                    "an allow-list applies to bastion origins only",
                ));
            }
            (Some(list), Origin::Bastion) => Some(
                list.iter()
                    .enumerate()
                    .map(|(j, entry)| {
                        let rule = AllowRule::parse(entry).ok_or_else(|| {
                            invalid(
                                format!("{field}.allow[{j}]"),
                                format!("`{entry}` is neither `host:port` nor a host pattern"),
                            )
                        })?;
                        // Said at start rather than refused at every connection.
                        if let Some(why) = rule
                            .address()
                            .and_then(super::internal::classify)
                            .filter(|why| why.always_refused())
                        {
                            return Err(invalid(
                                format!("{field}.allow[{j}]"),
                                format!("`{entry}` is {why}, which a bastion never reaches"),
                            ));
                        }
                        Ok(rule)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            (None, _) => None,
        };
        if self.allow_internal {
            match &allow {
                None => {
                    return Err(invalid(
                        format!("{field}.allow_internal"),
                        "applies to a bastion's `allow` list only",
                    ));
                }
                Some(rules) if !rules.iter().any(AllowRule::names_a_host_and_port) => {
                    return Err(invalid(
                        format!("{field}.allow_internal"),
                        "has no effect: no `allow` entry is a `host:port` naming a host",
                    ));
                }
                Some(_) => {}
            }
        }
        // Tokens minted by the gateway's own login must open every application, as Access
        // tokens signed by the team's key do: the access key is in every store.
        let jwks = match &self.jwks {
            Some(source) => Some(Arc::new(key_store(
                source,
                &format!("{field}.jwks"),
                access_keys,
            )?)),
            None => default_jwks.cloned(),
        };
        let mut service_tokens = Vec::new();
        for (j, token) in self.service_tokens.iter().enumerate() {
            let tfield = format!("{field}.service_tokens[{j}]");
            if token.client_id.trim().is_empty() {
                return Err(invalid(format!("{tfield}.client_id"), "must not be empty"));
            }
            let secret = token
                .client_secret
                .load(&format!("{tfield}.client_secret"), true)?;
            if secret.expose().is_empty() {
                return Err(invalid(format!("{tfield}.client_secret"), "is empty"));
            }
            service_tokens.push(ServiceToken {
                client_id: token.client_id.clone(),
                client_secret: secret,
            });
        }
        if jwks.is_none() && service_tokens.is_empty() {
            return Err(invalid(
                field,
                "no way in: give a `jwks` (here or top-level) or at least one service token",
            ));
        }
        Ok(Application {
            hostname,
            aud: self.aud.trim().to_owned(),
            origin: self.origin.clone(),
            socks: self.socks,
            allow,
            allow_internal: self.allow_internal,
            jwks,
            issuer: self.issuer.clone(),
            service_tokens,
        })
    }
}

/// A validated configuration with everything it refers to loaded.
#[derive(Debug)]
pub struct ResolvedConfig {
    pub(crate) listen: std::net::SocketAddr,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) keepalive: crate::wire::keepalive::Keepalive,
    pub(crate) connect_timeout: Duration,
    pub(crate) jwks_refresh: Duration,
    pub(crate) limits: LimitsConfig,
    /// Applications by lower-case hostname.
    pub(crate) applications: HashMap<String, Arc<Application>>,
    /// The Access login, when configured.
    pub(crate) access: Option<Arc<AccessSettings>>,
}

/// The validated `access:` section.
#[derive(Debug)]
pub(crate) struct AccessSettings {
    pub(crate) auth_domain: String,
    pub(crate) transfer_host: String,
    pub(crate) issuer: super::issuer::TokenIssuer,
    /// The public half of `issuer`.
    pub(crate) keys: Arc<KeySet>,
    pub(crate) app_token_ttl: Duration,
    pub(crate) org_token_ttl: Duration,
    pub(crate) transfer_timeout: Duration,
    pub(crate) max_transfer_polls: usize,
    /// At most `max_transfer_polls`.
    pub(crate) max_transfer_polls_per_client: usize,
    pub(crate) sign_in_failures: u32,
    pub(crate) sign_in_window: Duration,
    pub(crate) identities: Vec<Identity>,
}

/// A user of the login page, with the password loaded.
#[derive(Debug)]
pub(crate) struct Identity {
    /// Lower-case e-mail address.
    pub(crate) email: String,
    pub(crate) password: Secret,
}

impl ResolvedConfig {
    /// The hostnames served, sorted (for `--check` output).
    pub fn hostnames(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.applications.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The access section's auth domain and transfer host, when it is configured.
    pub fn access_hosts(&self) -> Option<(&str, &str)> {
        self.access
            .as_deref()
            .map(|a| (a.auth_domain.as_str(), a.transfer_host.as_str()))
    }
}

/// One validated application.
#[derive(Debug)]
pub(crate) struct Application {
    pub(crate) hostname: String,
    pub(crate) aud: String,
    pub(crate) origin: Origin,
    pub(crate) socks: bool,
    pub(crate) allow: Option<Vec<AllowRule>>,
    /// `allow`'s `host:port` entries naming a host may reach the gateway's own host.
    pub(crate) allow_internal: bool,
    pub(crate) jwks: Option<Arc<KeyStore>>,
    pub(crate) issuer: Option<String>,
    pub(crate) service_tokens: Vec<ServiceToken>,
}

/// A configured service token with its secret loaded.
#[derive(Debug)]
pub(crate) struct ServiceToken {
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
}

/// One entry of a bastion allow-list. Hosts are lower-case, IP addresses in their canonical
/// form ([`canonical_host`]), so they compare as text with a destination's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowRule {
    /// Exactly this host and port.
    Exact(String, u16),
    /// This host, any port.
    Host(String),
    /// Any host ending in `.suffix`, any port.
    Suffix(String),
}

/// `host` lower-cased, and an IP address in its canonical form (`::1` for `0:0::1`), so a
/// destination and an allow-list entry naming the same address compare equal.
pub(crate) fn canonical_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

impl AllowRule {
    fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim().to_ascii_lowercase();
        if let Some(suffix) = entry.strip_prefix("*.") {
            return (!suffix.is_empty() && !suffix.contains(['*', ':']))
                .then(|| Self::Suffix(suffix.to_owned()));
        }
        if let Some((host, port)) = split_host_port(&entry) {
            return Some(Self::Exact(canonical_host(&host), port));
        }
        if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
            return Some(Self::Host(ip.to_string()));
        }
        (!entry.is_empty() && !entry.contains(['*', ':', '/', ' '])).then_some(Self::Host(entry))
    }

    /// The IP address the rule names, when it names one (`ip` or `ip:port`).
    pub(crate) fn address(&self) -> Option<std::net::IpAddr> {
        match self {
            Self::Exact(h, _) | Self::Host(h) => h.parse().ok(),
            Self::Suffix(_) => None,
        }
    }

    /// Whether the rule is a `host:port` naming a host (not an IP address): what
    /// `allow_internal` applies to.
    fn names_a_host_and_port(&self) -> bool {
        matches!(self, Self::Exact(..)) && self.address().is_none()
    }

    /// Whether a destination this rule admits may be dialled at an address of the gateway's
    /// own host: when the rule is an IP address (the destination is then that address, and
    /// no DNS answer is involved), or a `host:port` naming a host and `allow_internal` is on.
    /// Never for a host without a port or a `*.suffix` pattern, so a DNS record under an
    /// allowed name cannot point the bastion at the gateway's host. Link-local and metadata
    /// addresses are refused whatever this says.
    pub(crate) fn reaches_own_host(&self, allow_internal: bool) -> bool {
        self.address().is_some() || (allow_internal && self.names_a_host_and_port())
    }

    /// Whether the rule admits `host:port` (host already lower-case).
    pub(crate) fn admits(&self, host: &str, port: u16) -> bool {
        match self {
            Self::Exact(h, p) => h == host && *p == port,
            Self::Host(h) => h == host,
            Self::Suffix(s) => host
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins_parse_and_display() {
        assert_eq!(
            "tcp://10.0.0.1:6443".parse::<Origin>().unwrap(),
            Origin::Tcp {
                host: "10.0.0.1".into(),
                port: 6443
            }
        );
        assert_eq!("bastion".parse::<Origin>().unwrap(), Origin::Bastion);
        let v6: Origin = "tcp://[::1]:443".parse().unwrap();
        assert_eq!(v6.to_string(), "tcp://[::1]:443");
        for bad in [
            "http://x:1",
            "tcp://x",
            "tcp://:1",
            "tcp://x:0",
            "tcp://x:99999",
        ] {
            assert!(bad.parse::<Origin>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn allow_rules_match_as_documented() {
        let exact = AllowRule::parse("API.internal:6443").unwrap();
        assert!(exact.admits("api.internal", 6443));
        assert!(!exact.admits("api.internal", 443));
        let suffix = AllowRule::parse("*.internal").unwrap();
        assert!(suffix.admits("a.internal", 1));
        assert!(!suffix.admits("internal", 1));
        assert!(!suffix.admits("evilinternal", 1));
        let host = AllowRule::parse("10.0.0.1").unwrap();
        assert!(host.admits("10.0.0.1", 22));
        assert!(AllowRule::parse("a:b:c").is_none());
        // IP addresses are kept in their canonical form, as destinations are.
        assert_eq!(
            AllowRule::parse("[0:0::1]:6443").unwrap(),
            AllowRule::Exact("::1".into(), 6443)
        );
        assert_eq!(
            AllowRule::parse("FD00::A").unwrap(),
            AllowRule::Host("fd00::a".into())
        );
        // Only addresses reach the own host without the opt-in; with it, `host:port` names.
        for (entry, without, with) in [
            ("127.0.0.1:6443", true, true),
            ("127.0.0.1", true, true),
            ("api.internal:6443", false, true),
            ("api.internal", false, false),
            ("*.internal", false, false),
        ] {
            let rule = AllowRule::parse(entry).unwrap();
            assert_eq!(rule.reaches_own_host(false), without, "{entry}");
            assert_eq!(rule.reaches_own_host(true), with, "{entry} opted in");
        }
    }

    /// An allow-list entry naming a link-local or metadata address, and an `allow_internal`
    /// that could not apply, are configuration errors, not refusals at every connection.
    #[test]
    fn allow_entries_that_can_never_be_reached_are_refused_at_start() {
        let error = |allow: &[&str], allow_internal: bool| {
            let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
            let mut app = ApplicationConfig::new("b.example", "aud", Origin::Bastion);
            app.allow =
                (!allow.is_empty()).then(|| allow.iter().map(|a| (*a).to_owned()).collect());
            app.allow_internal = allow_internal;
            app.service_tokens.push(ServiceTokenConfig {
                client_id: "c".into(),
                client_secret: SecretSource::Value(Secret::new("s")),
            });
            config.applications.push(app);
            config.resolve().err().map(|e| e.to_string())
        };
        for entry in [
            "169.254.169.254:80",
            "169.254.169.254",
            "[fd00:ec2::254]:80",
            "[fd20:ce::254]:80",
            "100.100.100.200:80",
        ] {
            let err = error(&["10.0.0.1:80", entry], false).unwrap_or_default();
            assert!(
                err.starts_with("applications[0].allow[1]:") && err.contains("never reaches"),
                "{entry}: {err}"
            );
        }
        assert_eq!(error(&["127.0.0.1:6443", "api.internal:6443"], false), None);
        assert_eq!(error(&["api.internal:6443"], true), None);
        assert_eq!(
            error(&[], true).as_deref(),
            Some("applications[0].allow_internal: applies to a bastion's `allow` list only")
        );
        assert!(
            error(&["127.0.0.1:6443", "*.internal"], true)
                .is_some_and(|e| e.starts_with("applications[0].allow_internal: has no effect")),
        );
    }

    #[test]
    fn yaml_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.yaml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:0\napplications:\n  - hostname: a.example\n    aud: x\n    origin: tcp://h:1\n    socks: true\n    allow: [\"h:1\"]\n    service_tokens: [{client_id: c, client_secret: {env: K8S_TUNNELS_TEST_UNSET_VAR}}]\n",
        )
        .unwrap();
        let config = GatewayConfig::from_yaml_file(&path).unwrap();
        let err = config.resolve().unwrap_err().to_string();
        assert!(err.starts_with("applications[0].allow:"), "{err}");

        std::fs::write(&path, "listen: 127.0.0.1:0\nbogus: 1\napplications: []\n").unwrap();
        let err = GatewayConfig::from_yaml_file(&path).unwrap_err();
        assert!(err.to_string().contains("gw.yaml"), "{err}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            cause.contains("bogus") && cause.contains("line 2"),
            "{cause}"
        );

        std::fs::write(
            &path,
            "listen: 127.0.0.1:0\napplications:\n  - {hostname: a.example, aud: x, origin: 'tcp://h:1', service_tokens: [{client_id: c, client_secret: {env: K8S_TUNNELS_TEST_UNSET_VAR}}]}\n",
        )
        .unwrap();
        let err = GatewayConfig::from_yaml_file(&path)
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "applications[0].service_tokens[0].client_secret: environment variable K8S_TUNNELS_TEST_UNSET_VAR is not set"
        );
    }

    #[test]
    fn the_access_section_reads_from_yaml_and_opens_every_application() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = crate::gateway::TokenIssuer::generate().unwrap();
        let key = dir.path().join("access-key.pem");
        std::fs::write(&key, issuer.private_key_pem().expose()).unwrap();
        let password = dir.path().join("ada-password");
        std::fs::write(&password, "hunter2\n").unwrap();
        let path = dir.path().join("gw.yaml");
        let yaml = format!(
            "listen: 127.0.0.1:0\napplications:\n  - {{hostname: a.example, aud: x, origin: 'tcp://h:1'}}\n\
             access:\n  auth_domain: Team.CloudflareAccess.com\n  signing_key: {{file: {}}}\n  app_token_ttl: 90s\n\
             \x20 identities:\n    - {{email: Ada@Example.com, password: {{file: {}}}}}\n",
            key.display(),
            password.display()
        );
        std::fs::write(&path, yaml).unwrap();
        let resolved = GatewayConfig::from_yaml_file(&path)
            .unwrap()
            .resolve()
            .unwrap();
        let access = resolved.access.as_ref().unwrap();
        assert_eq!(access.auth_domain, "team.cloudflareaccess.com");
        assert_eq!(access.transfer_host, DEFAULT_TRANSFER_HOST);
        assert_eq!(access.app_token_ttl, Duration::from_secs(90));
        assert_eq!(access.org_token_ttl, DEFAULT_ORG_TOKEN_TTL);
        assert_eq!(
            access.max_transfer_polls_per_client,
            DEFAULT_MAX_TRANSFER_POLLS_PER_CLIENT
        );
        assert_eq!(access.identities[0].email, "ada@example.com");
        assert_eq!(access.identities[0].password.expose(), "hunter2");
        assert_eq!(access.issuer.kid(), issuer.kid());
        // The application named no key set: the access key is its key set.
        let app = &resolved.applications["a.example"];
        assert!(
            app.jwks
                .as_ref()
                .unwrap()
                .current()
                .json
                .contains(issuer.kid())
        );
        assert!(!format!("{resolved:?}").contains("hunter2"));
    }

    #[test]
    fn access_errors_name_the_field() {
        let base = || {
            let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
            config.applications.push(ApplicationConfig::new(
                "a.example",
                "aud",
                "tcp://h:1".parse().unwrap(),
            ));
            let key = crate::gateway::TokenIssuer::generate().unwrap();
            config.access = Some(AccessConfig::new(
                "team.cloudflareaccess.com",
                SecretSource::Value(key.private_key_pem().clone()),
            ));
            config
        };
        let error = |config: GatewayConfig| config.resolve().unwrap_err().to_string();

        let mut config = base();
        if let Some(access) = config.access.as_mut() {
            access.signing_key = SecretSource::Value(Secret::new("-----BEGIN NONSENSE-----"));
        }
        assert!(
            error(config).starts_with("access.signing_key: unusable signing key"),
            "signing key"
        );

        let mut config = base();
        if let Some(access) = config.access.as_mut() {
            access.identities.push(IdentityConfig {
                email: "ada@example.com".into(),
                password: SecretSource::Env("K8S_TUNNELS_TEST_UNSET_VAR".into()),
            });
        }
        assert_eq!(
            error(config),
            "access.identities[0].password: environment variable K8S_TUNNELS_TEST_UNSET_VAR is not set"
        );

        let mut config = base();
        config.applications[0].hostname = "team.cloudflareaccess.com".into();
        assert!(error(config).starts_with("applications[0].hostname:"));

        let mut config = base();
        if let Some(access) = config.access.as_mut() {
            access.transfer_timeout = Duration::ZERO;
        }
        assert!(error(config).starts_with("access.transfer_timeout:"));

        let mut config = base();
        if let Some(access) = config.access.as_mut() {
            access.sign_in_failures = 0;
        }
        assert_eq!(error(config), "access.sign_in_failures: must be at least 1");

        let mut config = base();
        if let Some(access) = config.access.as_mut() {
            access.max_transfer_polls = 0;
        }
        assert_eq!(
            error(config),
            "access.max_transfer_polls: must be at least 1"
        );

        let mut config = base();
        if let Some(access) = config.access.as_mut() {
            access.max_transfer_polls_per_client = 0;
        }
        assert_eq!(
            error(config),
            "access.max_transfer_polls_per_client: must be at least 1"
        );
    }

    #[test]
    fn limits_read_from_yaml_with_defaults_and_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.yaml");
        let app = "applications:\n  - {hostname: a.example, aud: x, origin: 'tcp://h:1', service_tokens: [{client_id: c, client_secret: {env: PATH}}]}\n";
        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:0\njwks_refresh: 90s\nlimits:\n  max_connections: 500\n  socks_timeout: 3s\n{app}"),
        )
        .unwrap();
        let resolved = GatewayConfig::from_yaml_file(&path)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(resolved.limits.max_connections, 500);
        assert_eq!(resolved.limits.socks_timeout, Duration::from_secs(3));
        assert_eq!(
            resolved.limits.max_connections_per_client,
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT.min(500)
        );
        assert_eq!(resolved.limits.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(resolved.jwks_refresh, Duration::from_secs(90));

        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:0\nlimits: {{max_conections: 5}}\n{app}"),
        )
        .unwrap();
        let err = GatewayConfig::from_yaml_file(&path).unwrap_err();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("max_conections"), "{cause}");

        let error = |limits: LimitsConfig| {
            let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
            config.applications.push(ApplicationConfig::new(
                "a.example",
                "aud",
                "tcp://h:1".parse().unwrap(),
            ));
            config.applications[0]
                .service_tokens
                .push(ServiceTokenConfig {
                    client_id: "c".into(),
                    client_secret: SecretSource::Value(Secret::new("s")),
                });
            config.limits = limits;
            config.resolve().unwrap_err().to_string()
        };
        let err = error(LimitsConfig {
            max_unauthenticated: 0,
            ..LimitsConfig::default()
        });
        assert_eq!(err, "limits.max_unauthenticated: must be at least 1");
        let err = error(LimitsConfig {
            socks_timeout: Duration::from_millis(10),
            ..LimitsConfig::default()
        });
        assert_eq!(err, "limits.socks_timeout: must be at least 1s");
    }

    #[test]
    fn an_application_needs_a_way_in() {
        let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
        config
            .applications
            .push(ApplicationConfig::new("a.example", "aud", Origin::Bastion));
        let err = config.resolve().unwrap_err().to_string();
        assert!(err.starts_with("applications[0]: no way in"), "{err}");
    }
}
