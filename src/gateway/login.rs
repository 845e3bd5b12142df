//! The Access login, played by the gateway when its configuration has an `access:` section, so
//! that every login flow of the client runs end to end on one machine. Each part answers on its
//! own host name, as at Cloudflare:
//!
//! - application hosts: the signed `cf-access-metadata` answer, `/cdn-cgi/access/authorized`
//!   (takes an application token, sets it as the `CF_Authorization` cookie) and
//!   `/cdn-cgi/access/cli` (the browser half of the token transfer);
//! - the auth domain (`<team>.cloudflareaccess.com`): the JWKS, and the sign-in page at
//!   `/cdn-cgi/access/login/<app host>` with its organisation cookie, which later logins
//!   exchange silently for application tokens;
//! - the transfer service (`login.cloudflareaccess.org`): `GET /transfer/<client key>`, a
//!   long-poll answered with the tokens in a NaCl box sealed to the client's key.
//!
//! Tokens travel only where the protocol puts them (a `Location`, a `Set-Cookie`, the sealed
//! transfer body); they are never logged. Absolute URLs the gateway builds carry the port the
//! client used in `Host`, so the lab's names all map to one listener.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE};
use http::{Method, StatusCode, header};
use jsonwebtoken::{Algorithm, Validation};
use serde::Serialize;

use super::admission::WARN_EVERY;
use super::auth::{self, TOKEN_COOKIE};
use super::config::{AccessSettings, Application};
use super::csrf::{self, CsrfKey};
use super::issuer::{Claims, IssuerError};
use super::serve::PeerAddr;
use super::throttle::SignInThrottle;
use super::transfer::{Deposits, TooManyPolls};
use crate::access::transfer::key_code;
use crate::secret::Secret;
pub(crate) use crate::wire::access::{
    AUTHORIZED_PATH, CERTS_PATH, CLI_PATH, DOMAIN_HEADER, LOGIN_PATH, METADATA_HEADER,
    METADATA_REQUEST_HEADER,
};

/// Response header of a transfer naming the sender's public key.
pub(crate) const SERVICE_KEY_HEADER: &str = "service-public-key";
/// Long-poll path prefix on the transfer host, followed by the client's public key.
pub(crate) const TRANSFER_PATH: &str = "/transfer/";

/// Largest sign-in form body read.
const FORM_LIMIT: usize = 16 * 1024;

/// Base64url with or without padding: cloudflared pads the client key, other clients may not.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What the login keeps while the gateway runs: the transfer store, the signed metadata
/// answers, the sign-in page's failure counts and its form key, and the count of what it
/// refused.
pub(crate) struct LoginState {
    pub(crate) deposits: Deposits,
    metadata: MetadataCache,
    throttle: SignInThrottle,
    csrf: CsrfKey,
    refusals: Refusals,
}

/// A request the login refused before anyone signed in.
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// A sign-in post without the form's token, or from another site.
    ForgedPost,
    /// A sign-in past the wrong-password limit.
    Throttled,
    /// A token transfer posted from another site.
    CrossSiteTransfer,
    /// A transfer poll past the poll limits.
    BusyPoll,
}

/// The requests the login refused before sign-in, said as one warning at most every
/// [`WARN_EVERY`] with the counts since the last one (each is said at debug as it comes):
/// anyone can send them as fast as they like, and they must not become as many log lines.
#[derive(Default)]
struct Refusals {
    counts: Mutex<RefusalCounts>,
}

#[derive(Default)]
struct RefusalCounts {
    forged_posts: u64,
    throttled: u64,
    cross_site_transfers: u64,
    busy_polls: u64,
    /// When the last warning was said.
    warned: Option<Instant>,
}

impl Refusals {
    /// Counts `what`, and says the counts when the last warning is old enough.
    fn note(&self, what: Refused) {
        let mut counts = crate::sync::lock(&self.counts);
        match what {
            Refused::ForgedPost => counts.forged_posts += 1,
            Refused::Throttled => counts.throttled += 1,
            Refused::CrossSiteTransfer => counts.cross_site_transfers += 1,
            Refused::BusyPoll => counts.busy_polls += 1,
        }
        if counts.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        let said = std::mem::replace(
            &mut *counts,
            RefusalCounts {
                warned: Some(Instant::now()),
                ..RefusalCounts::default()
            },
        );
        drop(counts);
        tracing::warn!(
            forged_sign_in_posts = said.forged_posts,
            throttled_sign_ins = said.throttled,
            cross_site_transfers = said.cross_site_transfers,
            transfer_polls_refused = said.busy_polls,
            "access login: requests refused before sign-in (sign-in forms not posted from the sign-in page, sign-ins throttled after wrong passwords, token transfers posted from another site, transfer polls past their limits)"
        );
    }

    /// The counts not yet said.
    #[cfg(test)]
    fn pending(&self) -> [u64; 4] {
        let counts = crate::sync::lock(&self.counts);
        [
            counts.forged_posts,
            counts.throttled,
            counts.cross_site_transfers,
            counts.busy_polls,
        ]
    }
}

impl LoginState {
    /// Fresh state for `access`.
    pub(crate) fn new(access: &AccessSettings) -> Self {
        Self {
            deposits: Deposits::new(
                access.max_transfer_polls,
                access.max_transfer_polls_per_client,
            ),
            metadata: MetadataCache::default(),
            throttle: SignInThrottle::new(
                access.sign_in_failures,
                access.sign_in_window,
                access.identities.iter().map(|i| i.email.clone()),
            ),
            csrf: CsrfKey::generate(),
            refusals: Refusals::default(),
        }
    }
}

/// The signed metadata answer per application host, signed again once it is
/// [`METADATA_MAX_AGE`] old: an RSA signature for every unauthenticated request would let
/// anyone spend the gateway's CPU at will.
#[derive(Default)]
struct MetadataCache {
    signed: Mutex<HashMap<String, (Secret, Instant)>>,
}

/// cloudflared accepts a metadata answer whose `iat` is up to 24 h old.
const METADATA_MAX_AGE: Duration = Duration::from_secs(3600);

/// What a verified token of ours says about its holder.
struct Holder {
    email: String,
    /// Expiry, seconds since the epoch.
    exp: u64,
}

/// The claims of the signed metadata answer (cloudflared's `metadataClaims`).
#[derive(Serialize)]
struct MetadataClaims<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hostname: &'a str,
    auth_domain: &'a str,
    aud: &'a str,
    app_hostname: &'a str,
    iat: u64,
}

/// The plaintext sealed for the client (cloudflared reads `app_token` and `org_token`).
#[derive(Serialize)]
struct Transferred<'a> {
    app_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_token: Option<&'a str>,
}

impl AccessSettings {
    fn issuer_url(&self) -> String {
        format!("https://{}", self.auth_domain)
    }

    /// The AUD of organisation tokens: the auth domain itself, which no application uses.
    fn org_aud(&self) -> &str {
        &self.auth_domain
    }

    fn mint(
        &self,
        aud: &str,
        kind: &str,
        email: &str,
        ttl: Duration,
    ) -> Result<(Secret, u64), IssuerError> {
        let mut claims = Claims::for_user(aud, email, ttl);
        claims.iss = Some(self.issuer_url());
        claims.kind = Some(kind.to_owned());
        let exp = claims.exp;
        Ok((self.issuer.mint(&claims)?, exp))
    }

    fn mint_app(&self, app: &Application, email: &str) -> Result<(Secret, u64), IssuerError> {
        self.mint(&app.aud, "app", email, self.app_token_ttl)
    }

    fn mint_org(&self, email: &str) -> Result<(Secret, u64), IssuerError> {
        self.mint(self.org_aud(), "org", email, self.org_token_ttl)
    }

    /// Verifies a token this login minted for `aud` of kind `kind`. No leeway: the gateway is
    /// both the issuer and the judge, on one clock.
    fn verify(&self, token: &str, aud: &str, kind: &str) -> Option<Holder> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[aud]);
        validation.set_issuer(&[self.issuer_url()]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        self.keys.keys.iter().find_map(|(_, key)| {
            let data = jsonwebtoken::decode::<Claims>(token.trim(), key, &validation).ok()?;
            let email = data.claims.email.filter(|e| !e.is_empty())?;
            (data.claims.kind.as_deref() == Some(kind)).then_some(Holder {
                email,
                exp: data.claims.exp,
            })
        })
    }

    /// The configured identity `email`/`password` names, compared in constant time against
    /// every identity so timing tells nothing about which exist.
    fn sign_in(&self, email: &str, password: &str) -> Option<String> {
        let email = email.trim().to_ascii_lowercase();
        let mut found = None;
        for identity in &self.identities {
            let password_ok = auth::secrets_match(password, identity.password.expose());
            if password_ok && identity.email == email {
                found = Some(identity.email.clone());
            }
        }
        found
    }
}

/// `https://<host>[:<port>]`.
pub(crate) fn origin(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    }
}

fn query_pairs(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn path_and_query(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map_or_else(|| String::from("/"), |pq| pq.as_str().to_owned())
}

/// Where to send the browser after a login: `redirect` resolved against application `host` as a
/// browser would (the URL parser drops tabs and newlines and reads a backslash as `/`, so `/\t/evil`
/// cannot turn into `//evil`), kept only when it stays on `host` over https, and returned as the
/// normalised path; `/` otherwise, so the login is no open redirector.
fn safe_redirect(redirect: Option<&String>, host: &str) -> String {
    let Some(redirect) = redirect.map(|r| r.trim()).filter(|r| !r.is_empty()) else {
        return String::from("/");
    };
    let resolved =
        url::Url::parse(&format!("https://{host}/")).and_then(|base| base.join(redirect));
    match resolved {
        Ok(url) if url.scheme() == "https" && url.host_str() == Some(host) => {
            let mut path = url.path().to_owned();
            if let Some(query) = url.query() {
                path.push('?');
                path.push_str(query);
            }
            path
        }
        _ => String::from("/"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

fn internal_error(what: &str, err: &dyn std::error::Error) -> Response {
    tracing::error!(error = %crate::error_chain(err), "access login: {what}");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

/// A `302` to `location`, never cached, never leaking its URL (which may hold a token) as a
/// referrer.
fn redirect(location: &str) -> http::response::Builder {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::REFERRER_POLICY, "no-referrer")
}

fn finish(builder: http::response::Builder) -> Response {
    builder
        .body(Body::empty())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response error\n"))
}

/// `Set-Cookie` for `CF_Authorization`, expiring with the token (cloudflared only takes a
/// cookie with an `Expires` in the future).
fn token_cookie(token: &Secret, exp: u64) -> String {
    let expires = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(exp));
    let max_age = exp.saturating_sub(jsonwebtoken::get_current_timestamp());
    format!(
        "{TOKEN_COOKIE}={}; Expires={expires}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Lax",
        token.expose()
    )
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}}\
         label{{display:block;margin:.8rem 0}}input{{display:block;width:100%;padding:.4rem}}\
         .error{{color:#b00020}}</style></head><body>\n{body}\n</body></html>\n",
        title = html_escape(title),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        page,
    )
        .into_response()
}

/// The sign-in page for one application, with its form token.
struct SignInPage<'a> {
    access: &'a AccessSettings,
    app: &'a Application,
    redirect_to: &'a str,
    /// The form token ([`csrf`]), and whether it is new (then its cookie is set too).
    csrf: (String, bool),
}

impl<'a> SignInPage<'a> {
    /// The page for a request carrying `headers`: the visitor's form token is kept when it is
    /// still good (a second tab must not spoil the first one's form), else a new one.
    fn new(
        access: &'a AccessSettings,
        login: &LoginState,
        app: &'a Application,
        redirect_to: &'a str,
        headers: &http::HeaderMap,
    ) -> Self {
        let csrf = match auth::cookie(headers, csrf::COOKIE).filter(|t| login.csrf.valid(t)) {
            Some(token) => (token, false),
            None => (login.csrf.issue(), true),
        };
        Self {
            access,
            app,
            redirect_to,
            csrf,
        }
    }

    fn render(&self, status: StatusCode, error: Option<&str>) -> Response {
        let action = format!(
            "{LOGIN_PATH}{}?kid={}&redirect_url={}",
            self.app.hostname,
            auth::urlencode(&self.app.aud),
            auth::urlencode(self.redirect_to)
        );
        let error = error.map_or_else(String::new, |e| {
            format!("<p class=\"error\" id=\"error\">{}</p>", html_escape(e))
        });
        let body = format!(
            "<h1>Sign in</h1>\n<p>to <b>{app}</b> with <b>{domain}</b></p>\n{error}\n\
             <form method=\"post\" action=\"{action}\">\n\
             <input type=\"hidden\" name=\"{field}\" value=\"{token}\">\n\
             <label>Email <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required autofocus></label>\n\
             <label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
             <button id=\"sign-in\" type=\"submit\">Sign in</button>\n</form>",
            app = html_escape(&self.app.hostname),
            domain = html_escape(&self.access.auth_domain),
            action = html_escape(&action),
            field = csrf::FIELD,
            token = html_escape(&self.csrf.0),
        );
        let mut response = html(status, "Sign in", &body);
        if self.csrf.1
            && let Ok(cookie) = http::HeaderValue::from_str(&CsrfKey::cookie(&self.csrf.0))
        {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

/// The signed metadata answer for application `host` (one of the configured hosts: the
/// cache holds one answer per application).
pub(crate) fn metadata(
    access: &AccessSettings,
    login: &LoginState,
    host: &str,
    app: &Application,
) -> Response {
    let cached = crate::sync::lock(&login.metadata.signed)
        .get(host)
        .filter(|(_, at)| at.elapsed() < METADATA_MAX_AGE)
        .map(|(jwt, _)| jwt.clone());
    let signed = match cached {
        Some(jwt) => Ok(jwt),
        None => {
            let claims = MetadataClaims {
                kind: "match",
                hostname: host,
                auth_domain: &access.auth_domain,
                aud: &app.aud,
                app_hostname: &app.hostname,
                iat: jsonwebtoken::get_current_timestamp(),
            };
            access.issuer.sign(&claims).inspect(|jwt| {
                crate::sync::lock(&login.metadata.signed)
                    .insert(host.to_owned(), (jwt.clone(), Instant::now()));
            })
        }
    };
    match signed {
        Ok(jwt) => finish(
            Response::builder()
                .status(StatusCode::OK)
                .header(METADATA_HEADER, jwt.expose())
                .header(header::CACHE_CONTROL, "no-store"),
        ),
        Err(e) => internal_error("cannot sign the metadata answer", &e),
    }
}

/// Whether the request asks for the metadata answer.
pub(crate) fn wants_metadata(req: &Request) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(METADATA_REQUEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The redirect to the sign-in for application `host`, coming back to `back` afterwards.
pub(crate) fn login_redirect(
    access: Option<&AccessSettings>,
    host: &str,
    port: Option<u16>,
    app: &Application,
    back: &str,
) -> Response {
    let login_origin = access.map(|a| origin(&a.auth_domain, port));
    let location = auth::login_location(login_origin.as_deref(), host, &app.aud, back);
    finish(redirect(&location).header(DOMAIN_HEADER, host))
}

/// Where a signed-in user goes next: `/cdn-cgi/access/authorized` on the application with a
/// fresh application token.
fn to_authorized(
    access: &AccessSettings,
    app: &Application,
    port: Option<u16>,
    email: &str,
    redirect_to: &str,
) -> Result<http::response::Builder, IssuerError> {
    let (token, _) = access.mint_app(app, email)?;
    let location = format!(
        "{}{AUTHORIZED_PATH}?token={}&redirect_url={}",
        origin(&app.hostname, port),
        auth::urlencode(token.expose()),
        auth::urlencode(redirect_to),
    );
    Ok(redirect(&location))
}

/// Requests to the auth domain: the JWKS and the sign-in page.
pub(crate) async fn auth_domain(
    access: &AccessSettings,
    login: &LoginState,
    applications: &HashMap<String, Arc<Application>>,
    port: Option<u16>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == CERTS_PATH && matches!(method, Method::GET | Method::HEAD) {
        return (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            access.keys.json.clone(),
        )
            .into_response();
    }
    let Some(app_host) = path.strip_prefix(LOGIN_PATH) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(app) = applications.get(&app_host.to_ascii_lowercase()).cloned() else {
        return plain(StatusCode::NOT_FOUND, "no application for this host\n");
    };
    let query = query_pairs(&req);
    if query.get("kid").is_some_and(|kid| *kid != app.aud) {
        return plain(
            StatusCode::BAD_REQUEST,
            "kid does not name this application\n",
        );
    }
    let redirect_to = safe_redirect(query.get("redirect_url"), &app.hostname);
    match method {
        Method::GET | Method::HEAD => {
            let holder = auth::cookie(req.headers(), TOKEN_COOKIE)
                .and_then(|org| access.verify(&org, access.org_aud(), "org"));
            match holder {
                Some(holder) => {
                    match to_authorized(access, &app, port, &holder.email, &redirect_to) {
                        Ok(builder) => {
                            tracing::info!(app = %app.hostname, subject = %holder.email, "access login: signed in by the organisation token");
                            finish(builder)
                        }
                        Err(e) => internal_error("cannot mint an application token", &e),
                    }
                }
                None => SignInPage::new(access, login, &app, &redirect_to, req.headers())
                    .render(StatusCode::OK, None),
            }
        }
        Method::POST => sign_in(access, login, &app, port, &redirect_to, req).await,
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    }
}

/// The sign-in form posted: refused when it is not the form's own post ([`csrf`]), throttled
/// after too many wrong passwords ([`SignInThrottle`]), then checked.
async fn sign_in(
    access: &AccessSettings,
    login: &LoginState,
    app: &Application,
    port: Option<u16>,
    redirect_to: &str,
    req: Request,
) -> Response {
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let page = SignInPage::new(access, login, app, redirect_to, req.headers());
    // Browsers name the page a form was posted from: only the auth domain's own.
    let own_origin = origin(&access.auth_domain, port);
    let cross_site = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() != own_origin.as_bytes());
    let cookie = auth::cookie(req.headers(), csrf::COOKIE);
    let Ok(body) = axum::body::to_bytes(req.into_body(), FORM_LIMIT).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n");
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if cross_site
        || !login
            .csrf
            .posted(form.get(csrf::FIELD).map(String::as_str), cookie.as_deref())
    {
        tracing::debug!(app = %app.hostname, cross_site, "access login: refused a sign-in post that did not come from the sign-in page");
        login.refusals.note(Refused::ForgedPost);
        return page.render(
            StatusCode::FORBIDDEN,
            Some("This sign-in form expired or was sent from another site. Please sign in again."),
        );
    }
    let email = form.get("email").map_or("", String::as_str);
    // Charged as a failure now, given back below if the password is right: attempts in flight
    // at once cannot all pass the check before any of them is counted.
    let attempt = match login.throttle.attempt(peer, email) {
        Ok(attempt) => attempt,
        Err(wait) => {
            tracing::debug!(app = %app.hostname, peer = ?peer, "access login: sign-in throttled after too many wrong passwords");
            login.refusals.note(Refused::Throttled);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = page.render(
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many wrong passwords. Try again in {secs} seconds."
                )),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from(secs));
            return response;
        }
    };
    let password = Secret::new(form.get("password").cloned().unwrap_or_default());
    let Some(email) = access.sign_in(email, password.expose()) else {
        // The attempt's charge stays: a failure for the address and the account.
        drop(attempt);
        // The offered name is not logged: people type passwords into the wrong field.
        tracing::info!(app = %app.hostname, "access login: sign-in refused (wrong e-mail or password)");
        return page.render(
            StatusCode::UNAUTHORIZED,
            Some("Wrong e-mail address or password."),
        );
    };
    login.throttle.succeeded(attempt);
    let (org_token, org_exp) = match access.mint_org(&email) {
        Ok(minted) => minted,
        Err(e) => return internal_error("cannot mint an organisation token", &e),
    };
    match to_authorized(access, app, port, &email, redirect_to) {
        Ok(builder) => {
            tracing::info!(app = %app.hostname, subject = %email, "access login: signed in with a password");
            finish(builder.header(header::SET_COOKIE, token_cookie(&org_token, org_exp)))
        }
        Err(e) => internal_error("cannot mint an application token", &e),
    }
}

/// `GET /cdn-cgi/access/authorized?token=…&redirect_url=…` on an application host.
pub(crate) fn authorized(access: &AccessSettings, app: &Application, req: &Request) -> Response {
    let query = query_pairs(req);
    let token = query.get("token").map(|t| Secret::new(t.clone()));
    let Some(token) = token else {
        return plain(StatusCode::BAD_REQUEST, "no token\n");
    };
    let Some(holder) = access.verify(token.expose(), &app.aud, "app") else {
        return plain(
            StatusCode::UNAUTHORIZED,
            "the token is invalid, expired or not for this application\n",
        );
    };
    let redirect_to = safe_redirect(query.get("redirect_url"), &app.hostname);
    finish(redirect(&redirect_to).header(header::SET_COOKIE, token_cookie(&token, holder.exp)))
}

/// `/cdn-cgi/access/cli?aud=…&token=<client key>&send_org_token=…` on an application host.
/// `GET`, once the browser is signed in, asks the user to allow the sign-in: the page names the
/// application, the account and the client key's code ([`key_code`]), and offers the team
/// session (the org token) as a separate, unticked choice when the client asked for it. The
/// form's `POST` (same origin) then seals fresh tokens to the client's key for the transfer
/// service — the org token only when the user ticked it. Tokens are never handed out on a
/// `GET`: a link someone else made (with their own key in it) would otherwise make a
/// signed-in browser send them that person's way, and the session cookies are
/// `SameSite=Lax`, so another site cannot post the form with them.
pub(crate) async fn cli(
    access: &AccessSettings,
    login: &LoginState,
    host: &str,
    port: Option<u16>,
    app: &Application,
    req: Request,
) -> Response {
    let query = query_pairs(&req);
    if query.get("aud") != Some(&app.aud) {
        return plain(
            StatusCode::BAD_REQUEST,
            "aud does not name this application\n",
        );
    }
    let Some(client_key) = query.get("token").and_then(|k| decode_key(k)) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "token must be the client's public key (32 bytes, base64url)\n",
        );
    };
    let allowed = match *req.method() {
        Method::GET | Method::HEAD => false,
        Method::POST => true,
        _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    };
    // Browsers name the page a form was posted from; only our own confirmation page may.
    let own_origin = origin(&app.hostname, port);
    if allowed
        && req
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() != own_origin.as_bytes())
    {
        tracing::debug!(app = %app.hostname, "access login: refused a token transfer posted from another site");
        login.refusals.note(Refused::CrossSiteTransfer);
        return plain(StatusCode::FORBIDDEN, "cross-site request refused\n");
    }
    let holder =
        auth::cookie(req.headers(), TOKEN_COOKIE).and_then(|t| access.verify(&t, &app.aud, "app"));
    let Some(holder) = holder else {
        if allowed {
            return plain(StatusCode::UNAUTHORIZED, "sign in first\n");
        }
        return login_redirect(Some(access), host, port, app, &path_and_query(&req));
    };
    let org_offered = query
        .get("send_org_token")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let code = key_code(&URL_SAFE.encode(client_key));
    if !allowed {
        let page = ConfirmPage {
            app,
            email: &holder.email,
            code: &code,
            org_offered,
            action: &path_and_query(&req),
        };
        return page.render();
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), FORM_LIMIT).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n");
    };
    // The session goes only where the user said so on the page, whatever the link asked.
    let send_org = org_offered
        && url::form_urlencoded::parse(&body)
            .any(|(k, v)| k == ORG_FIELD && v.eq_ignore_ascii_case("true"));
    let app_token = match access.mint_app(app, &holder.email) {
        Ok((token, _)) => token,
        Err(e) => return internal_error("cannot mint an application token", &e),
    };
    let org_token = if send_org {
        match access.mint_org(&holder.email) {
            Ok((token, _)) => Some(token),
            Err(e) => return internal_error("cannot mint an organisation token", &e),
        }
    } else {
        None
    };
    let plaintext = match serde_json::to_vec(&Transferred {
        app_token: app_token.expose(),
        org_token: org_token.as_ref().map(Secret::expose),
    }) {
        Ok(json) => json,
        Err(e) => return internal_error("cannot encode the transfer", &e),
    };
    let (body, service_key) = match seal(&client_key, &plaintext) {
        Ok(sealed) => sealed,
        Err(e) => return internal_error("cannot seal the transfer", &e),
    };
    if !login.deposits.put(client_key, body, service_key) {
        tracing::warn!("access login: too many uncollected token transfers");
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins in progress; try again later\n",
        );
    }
    tracing::info!(app = %app.hostname, subject = %holder.email, org_token = send_org, "access login: tokens sealed for the client");
    html(
        StatusCode::OK,
        "Signed in",
        &format!(
            "<h1>Signed in</h1>\n<p id=\"done\">You are signed in to <b>{}</b>; you can close this tab.</p>",
            html_escape(&app.hostname)
        ),
    )
}

/// The consent form's field for handing over the team session too.
pub(crate) const ORG_FIELD: &str = "send_org_token";

/// The page that asks the signed-in user to allow a command-line client's sign-in; its form
/// posts back to the same URL.
struct ConfirmPage<'a> {
    app: &'a Application,
    email: &'a str,
    /// The code of the client key the tokens will be sealed to.
    code: &'a str,
    /// Whether the client asked for the team session too.
    org_offered: bool,
    action: &'a str,
}

impl ConfirmPage<'_> {
    fn render(&self) -> Response {
        let org_choice = if self.org_offered {
            format!(
                "<p><label><input type=\"checkbox\" id=\"{ORG_FIELD}\" name=\"{ORG_FIELD}\" value=\"true\"> \
                 Also keep this client signed in to the team's other applications (hands over \
                 your team session)</label></p>\n"
            )
        } else {
            String::new()
        };
        let body = format!(
            "<h1>Allow sign-in?</h1>\n<p>A command-line client on your computer (k8s-tunnels or \
             cloudflared) asks to sign in to <b id=\"application\">{app}</b> as <b>{email}</b>.</p>\n\
             <p>Its key: <code id=\"code\">{code}</code>. Allow it only if you started it yourself \
             and it shows this same code.</p>\n\
             <form method=\"post\" action=\"{action}\">\n{org_choice}\
             <button id=\"allow\" type=\"submit\">Allow</button>\n</form>",
            app = html_escape(&self.app.hostname),
            email = html_escape(self.email),
            code = html_escape(self.code),
            action = html_escape(self.action),
        );
        html(StatusCode::OK, "Allow sign-in?", &body)
    }
}

/// A client public key: 32 bytes, base64url.
fn decode_key(text: &str) -> Option<[u8; 32]> {
    URL_SAFE_LENIENT.decode(text.trim()).ok()?.try_into().ok()
}

/// Seals `plaintext` to `client_key` from a fresh service key pair, as cloudflared's
/// `Encrypter.Encrypt`: returns standard base64 of `nonce || box` and the base64url (padded)
/// service public key.
fn seal(client_key: &[u8; 32], plaintext: &[u8]) -> Result<(String, String), SealError> {
    use crypto_box::aead::{Aead, AeadCore, OsRng};
    let service = crypto_box::SecretKey::generate(&mut OsRng);
    let sealer = crypto_box::SalsaBox::new(&crypto_box::PublicKey::from(*client_key), &service);
    let nonce = crypto_box::SalsaBox::generate_nonce(&mut OsRng);
    let sealed = sealer.encrypt(&nonce, plaintext).map_err(|_| SealError)?;
    let mut message = nonce.to_vec();
    message.extend_from_slice(&sealed);
    Ok((
        STANDARD.encode(message),
        URL_SAFE.encode(service.public_key().as_bytes()),
    ))
}

/// The NaCl box refused to seal (it does not, for in-memory input).
#[derive(Debug, thiserror::Error)]
#[error("cannot seal the token transfer")]
struct SealError;

/// Requests to the transfer host: `GET /transfer/<client key>`.
pub(crate) async fn transfer_service(
    access: &AccessSettings,
    login: &LoginState,
    req: Request,
) -> Response {
    let key = req
        .uri()
        .path()
        .strip_prefix(TRANSFER_PATH)
        .filter(|_| matches!(*req.method(), Method::GET))
        .map(percent_decode);
    let Some(key) = key else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(key) = decode_key(&key) else {
        return plain(StatusCode::BAD_REQUEST, "not a public key\n");
    };
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    match login
        .deposits
        .take(&key, peer, access.transfer_timeout)
        .await
    {
        Ok(Some(deposit)) => (
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            [(SERVICE_KEY_HEADER, deposit.service_key)],
            deposit.body,
        )
            .into_response(),
        // cloudflared treats any status below 500 but 200 as "still waiting" and polls again.
        Ok(None) => plain(StatusCode::NOT_FOUND, "no login yet\n"),
        Err(TooManyPolls) => {
            tracing::debug!(peer = ?peer, "access login: transfer poll refused: too many waiting");
            login.refusals.note(Refused::BusyPoll);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::RETRY_AFTER, "1"),
                ],
                "too many transfers waiting; poll again\n",
            )
                .into_response()
        }
    }
}

/// `=` padding arrives percent-encoded from some clients.
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| text.to_owned(), |(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::{Refusals, Refused, safe_redirect};

    /// The first refusal is said at once; those after it within [`super::WARN_EVERY`] only
    /// counted, for the next warning.
    #[test]
    fn refusals_are_said_once_per_period_with_counts() {
        let refusals = Refusals::default();
        refusals.note(Refused::ForgedPost);
        assert_eq!(refusals.pending(), [0; 4]);
        for _ in 0..3 {
            refusals.note(Refused::Throttled);
        }
        refusals.note(Refused::BusyPoll);
        refusals.note(Refused::CrossSiteTransfer);
        assert_eq!(refusals.pending(), [0, 3, 1, 1]);
    }

    #[test]
    fn redirects_stay_on_the_application() {
        let host = "app.example.com";
        let to = |r: &str| safe_redirect(Some(&r.to_string()), host);
        assert_eq!(to("/ns/default?x=1"), "/ns/default?x=1");
        assert_eq!(to("https://app.example.com/a?b=c"), "/a?b=c");
        for hostile in [
            "//evil.example/",
            "/\\evil.example/",
            "/\t/evil.example/",
            "/\n/evil.example/",
            "\\/evil.example",
            "https://evil.example/",
            "http://app.example.com/",
            "javascript:alert(1)",
            "https://app.example.com@evil.example/",
        ] {
            assert_eq!(to(hostile), "/", "{hostile:?}");
        }
        assert_eq!(safe_redirect(None, host), "/");
    }
}
