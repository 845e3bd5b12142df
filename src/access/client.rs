//! [`AccessClient`]: what a tunnel asks, per connection, for the credential to present.
//!
//! Order for a cluster that configures no credential of its own: a service token from the
//! environment (always, never a browser); an app token from the environment; a valid app
//! token we stored (keychain); one from cloudflared's files; the org-token exchange (silent
//! SSO); the browser login — the last only for callers that may interrupt the user.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::access::cloudflared_files::CloudflaredFiles;
use crate::access::exchange::{self, ExchangeError};
use crate::access::http::{self as access_http, HttpSetupError};
use crate::access::jwt::TokenClaims;
use crate::access::login::SingleFlight;
use crate::access::metadata::{self, AppInfo, JwksCache, MetadataError};
use crate::access::settings::AccessSettings;
use crate::access::store::{TokenKey, TokenStore};
use crate::access::transfer::{BrowserOpener, PollSettings, Transfer, TransferError};
use crate::access::{AccessError, Credential};
use crate::inventory::{AccessAuth, Cluster};
use crate::secret::Secret;
use crate::sync::lock;
use crate::timestamp::rfc3339;
use crate::tls::ClientConfigs;

/// Who is asking, which decides whether the user may be interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interaction {
    /// Health probes and background refresh: stored tokens and the org exchange only; never a
    /// browser.
    Silent,
    /// A new connection: may start the browser login, but not again within
    /// [`BROWSER_RETRY`] of one that failed or was abandoned (each would open another tab).
    Interactive,
    /// The user asked to sign in (`k8s-tunnels login`, a connect): may always start the
    /// browser login.
    Explicit,
}

/// After a browser login fails or is abandoned, new connections wait this long before opening
/// another tab; an explicit login does not wait.
pub const BROWSER_RETRY: Duration = Duration::from_secs(60);
/// The edge's refusals remembered, newest kept: enough for every token one session sees.
const REJECTED_KEPT: usize = 64;

/// Something about a login the user should hear of. Never carries a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AccessEvent {
    /// A browser login of `application` started: the user signs in at `url` (a browser was
    /// opened there when `browser_opened`). The URL carries only our one-time public key.
    SignInStarted {
        /// The application's hostname.
        application: String,
        /// Where to sign in.
        url: String,
        /// Whether a browser was opened at it.
        browser_opened: bool,
        /// The code of the login's key: the sign-in page shows the same one.
        code: String,
    },
    /// The login of `application` runs out in `seconds_left` and cannot be renewed silently
    /// beyond that.
    LoginExpiring {
        /// The application's hostname.
        application: String,
        /// Seconds until it expires.
        seconds_left: u64,
    },
    /// `application` needs the user to sign in again.
    LoginRequired {
        /// The application's hostname.
        application: String,
    },
}

/// Timings of refresh and warnings.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// Renew an app token through the org token when it has less than this left.
    pub refresh_before: Duration,
    /// Announce [`AccessEvent::LoginExpiring`] when the login has less than this left.
    pub warn_before: Duration,
    /// The browser login's long-poll.
    pub poll: PollSettings,
    /// A token counts as expired this long before its `exp` (clocks disagree).
    pub skew: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            refresh_before: Duration::from_secs(5 * 60),
            warn_before: Duration::from_secs(15 * 60),
            poll: PollSettings::default(),
            skew: crate::access::jwt::SKEW_MARGIN,
        }
    }
}

/// How often the client did each kind of login, for status and tests.
#[derive(Debug, Default)]
pub struct LoginCounters {
    /// Browser logins started.
    pub browser: std::sync::atomic::AtomicU64,
    /// Org-token exchanges attempted.
    pub exchanges: std::sync::atomic::AtomicU64,
}

impl LoginCounters {
    /// Browser logins started so far.
    pub fn browser(&self) -> u64 {
        self.browser.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Org-token exchanges attempted so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What `auth status` shows about one application. Holds no token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoginStatus {
    /// The application's hostname.
    pub application: String,
    /// The AUD the token is for.
    pub aud: Vec<String>,
    /// The signed-in user (`email` claim).
    pub email: Option<String>,
    /// When the app token expires (RFC 3339).
    pub expires_at: Option<String>,
    /// Whether the app token is still usable.
    pub valid: bool,
    /// The auth domain (from the token's issuer).
    pub auth_domain: Option<String>,
    /// When the org session expires (RFC 3339), if we hold it.
    pub session_expires_at: Option<String>,
}

type LoginResult = Result<Secret, Arc<LoginError>>;

/// Why a login did not produce a token. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The user must sign in (no session, or it was rejected) and the caller may not open a
    /// browser.
    #[error("login required for {application}")]
    Required {
        /// The application.
        application: String,
    },
    /// The Access application could not be identified.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The org-token exchange failed for a reason other than the session being over.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The browser login failed.
    #[error("the browser login for {application} failed")]
    Browser {
        /// The application.
        application: String,
        /// Where the token transfer stopped.
        #[source]
        source: TransferError,
    },
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Http(#[from] HttpSetupError),
    /// A login produced a token that is not for the application of the host asked: it is
    /// never sent there.
    #[error("the Access login for {application} produced a token for another application")]
    ForeignToken {
        /// The application.
        application: String,
    },
}

impl LoginError {
    /// Whether this means "the user must sign in".
    pub fn is_login_required(&self) -> bool {
        matches!(self, LoginError::Required { .. })
    }
}

/// Resolves credentials and runs logins. Cheap to clone; clones share caches and flights.
#[derive(Clone)]
pub struct AccessClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AccessClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessClient")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: AccessSettings,
    timings: Timings,
    store: TokenStore,
    files: Option<CloudflaredFiles>,
    opener: Arc<dyn BrowserOpener>,
    events: broadcast::Sender<AccessEvent>,
    apps: Mutex<HashMap<String, AppInfo>>,
    clients: Mutex<HashMap<String, access_http::Clients>>,
    /// The TLS configurations of those clients (and, through [`AccessClient::client_configs`],
    /// of the engine's tunnels).
    tls: ClientConfigs,
    /// The one client for auth domains, key sets and the transfer service, built on first use.
    auth_client: Mutex<Option<reqwest::Client>>,
    jwks: JwksCache,
    silent: SingleFlight<String, LoginResult>,
    browser: SingleFlight<String, LoginResult>,
    /// Tokens the edge refused: never offered again in this process (a cloudflared file may
    /// still hold one).
    rejected: Mutex<VecDeque<Secret>>,
    /// When the last browser login of an application failed (for [`BROWSER_RETRY`]).
    browser_failed: Mutex<HashMap<String, std::time::Instant>>,
    /// Applications whose "login required" was announced and not yet resolved.
    required_announced: Mutex<HashSet<String>>,
    /// (application, expiry) pairs whose "expiring" was announced.
    expiring_announced: Mutex<HashSet<(String, u64)>>,
    counters: LoginCounters,
}

impl AccessClient {
    /// A client with these settings, storing tokens in `store` and showing the login through
    /// `opener`.
    pub fn new(
        settings: AccessSettings,
        store: TokenStore,
        opener: Arc<dyn BrowserOpener>,
    ) -> Self {
        Self::with_timings(settings, store, opener, Timings::default())
    }

    /// [`AccessClient::new`] with explicit timings (tests use seconds).
    pub fn with_timings(
        settings: AccessSettings,
        store: TokenStore,
        opener: Arc<dyn BrowserOpener>,
        timings: Timings,
    ) -> Self {
        let (events, _) = broadcast::channel(64);
        let files = settings.cloudflared_dir().map(CloudflaredFiles::new);
        Self {
            inner: Arc::new(Inner {
                settings,
                timings,
                store,
                files,
                opener,
                events,
                apps: Mutex::default(),
                clients: Mutex::default(),
                tls: ClientConfigs::default(),
                auth_client: Mutex::default(),
                jwks: JwksCache::default(),
                silent: SingleFlight::default(),
                browser: SingleFlight::default(),
                rejected: Mutex::default(),
                browser_failed: Mutex::default(),
                required_announced: Mutex::default(),
                expiring_announced: Mutex::default(),
                counters: LoginCounters::default(),
            }),
        }
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AccessEvent> {
        self.inner.events.subscribe()
    }

    /// How many logins of each kind ran.
    pub fn counters(&self) -> &LoginCounters {
        &self.inner.counters
    }

    /// The TLS client configurations this client builds its HTTP clients from, for others to
    /// share (an engine's tunnels).
    pub fn client_configs(&self) -> &ClientConfigs {
        &self.inner.tls
    }

    /// The token store (for its durability warning).
    pub fn store(&self) -> &TokenStore {
        &self.inner.store
    }

    /// Whether the credential of `cluster` comes from a login this client manages (rather
    /// than from the cluster's configuration or the environment).
    pub fn manages(&self, cluster: &Cluster) -> bool {
        matches!(cluster.access.auth, AccessAuth::Default)
            && matches!(
                crate::access::environment_credential(
                    cluster,
                    &self.inner.settings.env_credential_hosts
                ),
                Credential::None
            )
    }

    /// The credential for one connection to `cluster`.
    pub async fn credential(
        &self,
        cluster: &Cluster,
        interaction: Interaction,
    ) -> Result<Credential, AccessError> {
        if !self.manages(cluster) {
            return crate::access::credential_for(
                cluster,
                &self.inner.settings.env_credential_hosts,
            );
        }
        // A service token the user stored for this application wins over any login: it is
        // what headless machines use, and it must never lead to a browser.
        if let Some(credential) = self.stored_service_token(cluster).await {
            return Ok(credential);
        }
        self.app_token(cluster, interaction)
            .await
            .map(Credential::Token)
            .map_err(|source| AccessError::Login {
                cluster: cluster.name.clone(),
                source,
            })
    }

    /// Stores a service token for the cluster's Access application in the keychain (or for
    /// this session only when there is none; [`TokenStore::warning`] says so).
    pub async fn set_service_token(
        &self,
        cluster: &Cluster,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<(), AccessError> {
        let (id, secret) = (client_id.trim(), client_secret.expose().trim());
        if id.is_empty() || secret.is_empty() || id.contains(['\n', '\r']) {
            return Err(AccessError::BadServiceToken);
        }
        let key = TokenKey::Service(access_http::app_host(cluster));
        let value = Secret::new(format!("{id}\n{secret}"));
        self.inner.store.put(&key, &value).await;
        Ok(())
    }

    /// Forgets the stored service token of the cluster's application; whether there was one.
    pub async fn remove_service_token(&self, cluster: &Cluster) -> bool {
        let key = TokenKey::Service(access_http::app_host(cluster));
        let had = self.inner.store.get(&key).await.is_some();
        self.inner.store.remove(&key).await;
        had
    }

    async fn stored_service_token(&self, cluster: &Cluster) -> Option<Credential> {
        let key = TokenKey::Service(access_http::app_host(cluster));
        let stored = self.inner.store.get(&key).await?;
        let (id, secret) = stored.expose().split_once('\n')?;
        Some(Credential::ServiceToken {
            client_id: id.to_string(),
            client_secret: Secret::new(secret),
        })
    }

    /// The edge refused `credential` for `cluster` (a redirect to the login, or 401): forget
    /// it, so the next [`AccessClient::credential`] finds another. Returns whether asking again
    /// can help (the credential was one of ours).
    pub async fn reject(&self, cluster: &Cluster, credential: &Credential) -> bool {
        let Credential::Token(token) = credential else {
            return false;
        };
        if !self.manages(cluster) {
            return false;
        }
        let host = access_http::app_host(cluster);
        self.remember_rejected(token);
        let key = TokenKey::App(host.clone());
        if self.inner.store.get(&key).await.as_ref() == Some(token) {
            self.inner.store.remove(&key).await;
        }
        tracing::info!(application = %host, "the edge refused the stored Access token; getting a new one");
        true
    }

    /// `k8s-tunnels login`: makes sure the user is signed in to the cluster's application
    /// (browser if needed) and returns the status.
    pub async fn login(&self, cluster: &Cluster) -> Result<LoginStatus, AccessError> {
        self.credential(cluster, Interaction::Explicit).await?;
        Ok(self.status(cluster).await.unwrap_or_else(|| LoginStatus {
            application: access_http::app_host(cluster),
            aud: Vec::new(),
            email: None,
            expires_at: None,
            valid: false,
            auth_domain: None,
            session_expires_at: None,
        }))
    }

    /// `k8s-tunnels logout`: forgets the cluster's app token, and with `session` the org token
    /// of its auth domain too (every application of the team then needs a new sign-in).
    pub async fn logout(&self, cluster: &Cluster, session: bool) {
        let host = access_http::app_host(cluster);
        let key = TokenKey::App(host.clone());
        let token = self.inner.store.get(&key).await;
        let claims = token.as_ref().and_then(|t| TokenClaims::read(t).ok());
        self.inner.store.remove(&key).await;
        let auth_domain = claims.as_ref().and_then(auth_domain_of);
        if self.inner.settings.write_cloudflared_files
            && let (Some(files), Some(claims)) = (&self.inner.files, &claims)
        {
            for aud in &claims.aud {
                let _ = files.remove_app_token(&host, aud);
            }
        }
        if session && let Some(domain) = auth_domain {
            self.inner
                .store
                .remove(&TokenKey::Org(domain.clone()))
                .await;
            if self.inner.settings.write_cloudflared_files
                && let Some(files) = &self.inner.files
            {
                let _ = files.remove_org_token(&domain);
            }
        }
    }

    /// What we hold for the cluster's application, without any network.
    pub async fn status(&self, cluster: &Cluster) -> Option<LoginStatus> {
        let host = access_http::app_host(cluster);
        let token = self.inner.store.get(&TokenKey::App(host.clone())).await?;
        let claims = TokenClaims::read(&token).ok()?;
        let auth_domain = auth_domain_of(&claims);
        let session = match &auth_domain {
            Some(d) => self
                .inner
                .store
                .get(&TokenKey::Org(d.clone()))
                .await
                .and_then(|t| TokenClaims::read(&t).ok()),
            None => None,
        };
        Some(LoginStatus {
            application: host,
            aud: claims.aud.clone(),
            email: claims.email.clone(),
            expires_at: claims.exp.map(rfc3339),
            valid: claims.is_fresh(SystemTime::now(), self.inner.timings.skew),
            auth_domain,
            session_expires_at: session.and_then(|c| c.exp).map(rfc3339),
        })
    }

    async fn app_token(
        &self,
        cluster: &Cluster,
        interaction: Interaction,
    ) -> Result<Secret, Arc<LoginError>> {
        let host = access_http::app_host(cluster);
        let now = SystemTime::now();
        if let Some((token, claims)) = self.stored_app_token(&host).await {
            let left = claims.usable_for(now, self.inner.timings.skew);
            if left > self.inner.timings.refresh_before {
                self.check_expiring(&host, &claims).await;
                return Ok(token);
            }
            // Close to expiry: renew through the org token, and keep using this one if that
            // does not work out (it is still valid, so that is not "login required": the
            // expiry warning covers it).
            return match self.silent_login(cluster, &host, false).await {
                Ok(fresh) => Ok(fresh),
                Err(_) => {
                    self.check_expiring(&host, &claims).await;
                    Ok(token)
                }
            };
        }
        match self.silent_login(cluster, &host, true).await {
            Ok(token) => Ok(token),
            Err(e) if e.is_login_required() && self.may_open_browser(&host, interaction) => {
                self.browser_login(cluster, &host).await
            }
            Err(e) => Err(e),
        }
    }

    /// A fresh app token from our store, not refused by the edge.
    async fn stored_app_token(&self, host: &str) -> Option<(Secret, TokenClaims)> {
        let token = self
            .inner
            .store
            .get(&TokenKey::App(host.to_string()))
            .await?;
        if self.is_rejected(&token) {
            return None;
        }
        let claims = TokenClaims::read(&token).ok()?;
        let aud_ok = match lock(&self.inner.apps).get(host) {
            Some(app) => claims.is_for(&app.aud),
            None => true,
        };
        (claims.is_fresh(SystemTime::now(), self.inner.timings.skew) && aud_ok)
            .then_some((token, claims))
    }

    fn remember_rejected(&self, token: &Secret) {
        let mut rejected = lock(&self.inner.rejected);
        if rejected.len() == REJECTED_KEPT {
            rejected.pop_front();
        }
        rejected.push_back(token.clone());
    }

    fn is_rejected(&self, token: &Secret) -> bool {
        lock(&self.inner.rejected).iter().any(|r| r == token)
    }

    fn may_open_browser(&self, host: &str, interaction: Interaction) -> bool {
        match interaction {
            Interaction::Silent => false,
            Interaction::Explicit => true,
            Interaction::Interactive => lock(&self.inner.browser_failed)
                .get(host)
                .is_none_or(|at| at.elapsed() >= BROWSER_RETRY),
        }
    }

    /// One silent attempt per application at a time: cloudflared's file, then the org exchange.
    /// `announce`: a failure is news ("login required") rather than a renewal that can wait.
    async fn silent_login(&self, cluster: &Cluster, host: &str, announce: bool) -> LoginResult {
        let this = self.clone();
        let cluster = cluster.clone();
        let key = host.to_string();
        let result = self
            .inner
            .silent
            .run(key.clone(), move || async move {
                this.silent_job(&cluster).await.map_err(Arc::new)
            })
            .await
            .unwrap_or_else(|| {
                Err(Arc::new(LoginError::Required {
                    application: key.clone(),
                }))
            });
        if let Err(e) = &result
            && announce
            && e.is_login_required()
            && lock(&self.inner.required_announced).insert(host.to_string())
        {
            let _ = self.inner.events.send(AccessEvent::LoginRequired {
                application: host.to_string(),
            });
        }
        result
    }

    async fn silent_job(&self, cluster: &Cluster) -> Result<Secret, LoginError> {
        let host = access_http::app_host(cluster);
        let now = SystemTime::now();
        // A flight that finished just before this one started may have renewed the token.
        if let Some((token, claims)) = self.stored_app_token(&host).await
            && claims.usable_for(now, self.inner.timings.skew) > self.inner.timings.refresh_before
        {
            return Ok(token);
        }
        let clients = self.clients(cluster)?;
        let app = self.app_info(cluster, &clients).await?;
        // A cloudflared login for this application.
        if let Some(files) = &self.inner.files
            && let Ok(Some(token)) = files.read_app_token(&app.app_host, &app.aud)
        {
            let usable = TokenClaims::read(&token).is_ok_and(|c| {
                c.is_for(&app.aud)
                    && c.usable_for(now, self.inner.timings.skew)
                        > self.inner.timings.refresh_before
            });
            if usable && !self.is_rejected(&token) {
                tracing::info!(application = %host, "using the Access token of cloudflared");
                self.save_app_token(&host, &app, &token).await;
                return Ok(token);
            }
        }
        // The org token: ours, else cloudflared's.
        let org_key = TokenKey::Org(app.auth_domain.clone());
        let mut org = self.inner.store.get(&org_key).await;
        if org
            .as_ref()
            .is_none_or(|t| !usable_org(t, now, self.inner.timings.skew) || self.is_rejected(t))
        {
            org = self
                .inner
                .files
                .as_ref()
                .and_then(|f| f.read_org_token(&app.auth_domain).ok().flatten());
        }
        let Some(org) =
            org.filter(|t| usable_org(t, now, self.inner.timings.skew) && !self.is_rejected(t))
        else {
            return Err(LoginError::Required { application: host });
        };
        let url = access_http::app_url(cluster);
        self.inner
            .counters
            .exchanges
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match exchange::exchange(&clients, &app, &url, &org, &self.inner.settings).await {
            Ok(token) if !is_for_app(&token, &app) => {
                Err(LoginError::ForeignToken { application: host })
            }
            Ok(token) => {
                tracing::info!(application = %host, "renewed the Access token through the SSO session");
                self.save_app_token(&host, &app, &token).await;
                Ok(token)
            }
            Err(e) if e.org_token_rejected() => {
                self.remember_rejected(&org);
                self.inner.store.remove(&org_key).await;
                Err(LoginError::Required { application: host })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn browser_login(&self, cluster: &Cluster, host: &str) -> LoginResult {
        let this = self.clone();
        let cluster = cluster.clone();
        let key = host.to_string();
        let result = self
            .inner
            .browser
            .run(key.clone(), move || async move {
                this.browser_job(&cluster).await.map_err(Arc::new)
            })
            .await
            .unwrap_or_else(|| Err(Arc::new(LoginError::Required { application: key })));
        let mut failed = lock(&self.inner.browser_failed);
        match &result {
            Ok(_) => failed.remove(host),
            Err(_) => failed.insert(host.to_string(), std::time::Instant::now()),
        };
        result
    }

    async fn browser_job(&self, cluster: &Cluster) -> Result<Secret, LoginError> {
        let host = access_http::app_host(cluster);
        // A login that finished just before this flight started counts.
        if let Some((token, _)) = self.stored_app_token(&host).await {
            return Ok(token);
        }
        let clients = self.clients(cluster)?;
        let app = self.app_info(cluster, &clients).await?;
        let transfer = Transfer::new(&app, &access_http::app_url(cluster));
        self.inner
            .counters
            .browser
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let browser_opened = match self.inner.opener.open(&transfer.url) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(application = %host, error = %crate::error_chain(&e), "cannot open a browser for the Access login");
                false
            }
        };
        // Front ends show the URL (a terminal prints it, the desktop shows it in its window),
        // so that the user can sign in even when no browser could be opened.
        let _ = self.inner.events.send(AccessEvent::SignInStarted {
            application: host.clone(),
            url: transfer.url.to_string(),
            browser_opened,
            code: transfer.code(),
        });
        tracing::info!(application = %host, url = %transfer.url, "waiting for the Access login in the browser");
        let tokens = transfer
            .wait(
                &clients.auth,
                &self.inner.settings.transfer_service,
                self.inner.timings.poll,
            )
            .await
            .map_err(|source| LoginError::Browser {
                application: host.clone(),
                source,
            })?;
        if !is_for_app(&tokens.app_token, &app) {
            return Err(LoginError::ForeignToken { application: host });
        }
        if let Some(org) = &tokens.org_token {
            self.inner
                .store
                .put(&TokenKey::Org(app.auth_domain.clone()), org)
                .await;
            if self.inner.settings.write_cloudflared_files
                && let Some(files) = &self.inner.files
                && let Err(e) = files.write_org_token(&app.auth_domain, org)
            {
                tracing::warn!(error = %crate::error_chain(&e), "cannot write cloudflared's org token file");
            }
        }
        self.save_app_token(&host, &app, &tokens.app_token).await;
        tracing::info!(application = %host, "signed in to Access");
        Ok(tokens.app_token)
    }

    async fn save_app_token(&self, host: &str, app: &AppInfo, token: &Secret) {
        self.inner
            .store
            .put(&TokenKey::App(host.to_string()), token)
            .await;
        lock(&self.inner.required_announced).remove(host);
        if self.inner.settings.write_cloudflared_files
            && let Some(files) = &self.inner.files
            && let Err(e) = files.write_app_token(&app.app_host, &app.aud, token)
        {
            tracing::warn!(error = %crate::error_chain(&e), "cannot write cloudflared's token file");
        }
    }

    /// Announces once per token when the login (the org session, else the app token) runs
    /// out within the warning window and cannot be renewed beyond it.
    async fn check_expiring(&self, host: &str, app_claims: &TokenClaims) {
        let now = SystemTime::now();
        let session = match auth_domain_of(app_claims) {
            Some(domain) => self
                .inner
                .store
                .get(&TokenKey::Org(domain))
                .await
                .and_then(|t| TokenClaims::read(&t).ok())
                .filter(|c| c.is_fresh(now, self.inner.timings.skew)),
            None => None,
        };
        // The login lasts as long as the longer of the two: the app token can be renewed
        // while the session lives.
        let claims = match session {
            Some(s) if s.exp > app_claims.exp => s,
            _ => app_claims.clone(),
        };
        let left = claims.usable_for(now, self.inner.timings.skew);
        if left.is_zero() || left > self.inner.timings.warn_before {
            return;
        }
        let exp = claims
            .exp
            .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        if lock(&self.inner.expiring_announced).insert((host.to_string(), exp)) {
            let _ = self.inner.events.send(AccessEvent::LoginExpiring {
                application: host.to_string(),
                seconds_left: left.as_secs(),
            });
        }
    }

    fn clients(&self, cluster: &Cluster) -> Result<access_http::Clients, HttpSetupError> {
        let host = access_http::app_host(cluster);
        if let Some(clients) = lock(&self.inner.clients).get(&host) {
            return Ok(clients.clone());
        }
        let cached = lock(&self.inner.auth_client).clone();
        let auth = match cached {
            Some(auth) => auth,
            None => {
                let auth = access_http::auth_client(&self.inner.settings, &self.inner.tls)?;
                *lock(&self.inner.auth_client) = Some(auth.clone());
                auth
            }
        };
        let clients =
            access_http::clients_for(&self.inner.settings, cluster, &self.inner.tls, &auth)?;
        lock(&self.inner.clients).insert(host, clients.clone());
        Ok(clients)
    }

    async fn app_info(
        &self,
        cluster: &Cluster,
        clients: &access_http::Clients,
    ) -> Result<AppInfo, MetadataError> {
        let host = access_http::app_host(cluster);
        if let Some(app) = lock(&self.inner.apps).get(&host) {
            return Ok(app.clone());
        }
        let app = metadata::app_info(
            clients,
            &access_http::app_url(cluster),
            &self.inner.settings,
            &self.inner.jwks,
        )
        .await?;
        lock(&self.inner.apps).insert(host, app.clone());
        Ok(app)
    }
}

/// Whether `token` names the application's AUD: only such a token is sent to its host.
fn is_for_app(token: &Secret, app: &AppInfo) -> bool {
    TokenClaims::read(token).is_ok_and(|c| c.is_for(&app.aud))
}

fn usable_org(token: &Secret, now: SystemTime, skew: Duration) -> bool {
    TokenClaims::read(token).is_ok_and(|c| c.is_fresh(now, skew))
}

/// The auth domain of a token, from its issuer `https://<auth_domain>`.
fn auth_domain_of(claims: &TokenClaims) -> Option<String> {
    let iss = claims.iss.as_deref()?;
    let url = url::Url::parse(iss).ok()?;
    url.host_str().map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct CountingOpener(AtomicU64);

    impl BrowserOpener for CountingOpener {
        fn open(&self, _url: &url::Url) -> Result<bool, crate::access::transfer::OpenError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(false)
        }
    }

    fn cluster(access: &str) -> Cluster {
        let yaml = format!(
            "clusters:\n- name: c1\n  cloud: aws\n  environment: test\n  server: https://api.c1.example:6443\n  user: {{ token: x }}\n  access:\n    hostname: c1.example.com\n    origin: tcp\n{access}"
        );
        crate::discovery::file::parse(&yaml, std::path::Path::new("inventory.yaml"))
            .unwrap()
            .remove(0)
    }

    fn client(opener: Arc<CountingOpener>) -> AccessClient {
        let settings = AccessSettings {
            // Nothing answers here: any network attempt fails fast.
            resolve: [("c1.example.com".to_string(), "127.0.0.1:9".parse().unwrap())].into(),
            cloudflared_dir: Some(std::env::temp_dir().join("k8s-tunnels-no-such-dir")),
            ..AccessSettings::default()
        };
        AccessClient::new(settings, TokenStore::memory_only("test"), opener)
    }

    #[tokio::test]
    async fn a_configured_service_token_is_always_used_and_never_opens_a_browser() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "service-secret-value").unwrap();
        let c = cluster(&format!(
            "    service_token:\n      client_id: id.access\n      client_secret: {{ file: {} }}\n",
            secret_file.display()
        ));
        let opener = Arc::new(CountingOpener(AtomicU64::new(0)));
        let access = client(opener.clone());
        assert!(!access.manages(&c));
        for _ in 0..3 {
            let credential = access
                .credential(&c, Interaction::Interactive)
                .await
                .unwrap();
            assert!(matches!(credential, Credential::ServiceToken { .. }));
            // The edge refusing it does not make it ours to replace.
            assert!(!access.reject(&c, &credential).await);
        }
        assert_eq!(opener.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_stored_service_token_is_used_before_any_login_and_can_be_removed() {
        let c = cluster("");
        let opener = Arc::new(CountingOpener(AtomicU64::new(0)));
        let access = client(opener.clone());
        assert!(
            access.manages(&c),
            "the test environment sets TUNNEL_SERVICE_TOKEN_* or K8S_TUNNELS_ACCESS_TOKEN"
        );
        let bad = access
            .set_service_token(&c, "", &Secret::new("s"))
            .await
            .unwrap_err();
        assert!(matches!(bad, AccessError::BadServiceToken));
        access
            .set_service_token(&c, "id.access", &Secret::new("service-secret-value\n"))
            .await
            .unwrap();
        for interaction in [Interaction::Interactive, Interaction::Silent] {
            match access.credential(&c, interaction).await.unwrap() {
                Credential::ServiceToken {
                    client_id,
                    client_secret,
                } => {
                    assert_eq!(client_id, "id.access");
                    assert_eq!(client_secret.expose(), "service-secret-value");
                }
                other => panic!("expected the stored service token, got {other:?}"),
            }
        }
        assert_eq!(opener.0.load(Ordering::SeqCst), 0, "no browser");
        assert!(access.remove_service_token(&c).await);
        assert!(!access.remove_service_token(&c).await);
        // Without it, a silent caller finds no credential (and still opens no browser).
        assert!(access.credential(&c, Interaction::Silent).await.is_err());
        assert_eq!(opener.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_silent_caller_never_opens_a_browser_and_errors_hold_no_token() {
        let c = cluster("");
        let opener = Arc::new(CountingOpener(AtomicU64::new(0)));
        let access = client(opener.clone());
        assert!(
            access.manages(&c),
            "the test environment sets TUNNEL_SERVICE_TOKEN_* or K8S_TUNNELS_ACCESS_TOKEN"
        );
        let token = crate::access::jwt::tests::token(serde_json::json!({"aud": ["x"], "exp": 1}));
        access
            .inner
            .store
            .put(&TokenKey::App("c1.example.com".into()), &token)
            .await;
        let err = access
            .credential(&c, Interaction::Silent)
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?} {}", crate::error_chain(&err));
        assert!(!shown.contains(token.expose()), "{shown}");
        assert!(!format!("{access:?}").contains(token.expose()));
        assert_eq!(opener.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn status_of_a_token_expiring_after_the_year_9999_prints_instead_of_panicking() {
        let c = cluster("");
        let access = client(Arc::new(CountingOpener(AtomicU64::new(0))));
        // 10000-01-01, and a time far beyond it that every platform's SystemTime still
        // represents (Windows' ends in the year 30828; 2^39 s is about the year 19400).
        for exp in [253_402_300_800_u64, 1 << 39] {
            let token = crate::access::jwt::tests::token(
                serde_json::json!({"aud": ["x"], "exp": exp, "iss": "https://team.cloudflareaccess.com"}),
            );
            access
                .inner
                .store
                .put(&TokenKey::App("c1.example.com".into()), &token)
                .await;
            let status = access.status(&c).await.unwrap();
            assert_eq!(status.expires_at.as_deref(), Some("9999-12-31T23:59:59Z"));
            assert!(status.valid);
        }
    }
}
