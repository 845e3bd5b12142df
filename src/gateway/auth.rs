//! Access checks made before a stream is upgraded: an application JWT (`Cf-Access-Token`
//! header or `CF_Authorization` cookie) or a service token (`Cf-Access-Client-Id` +
//! `Cf-Access-Client-Secret`).
//!
//! Outcomes follow the Cloudflare edge where the client can tell: a missing, expired or
//! otherwise invalid JWT means "log in" (a 302 to `/cdn-cgi/access/login/…`), while a service
//! token that does not match is refused outright with 403, since no login can fix it.

use http::HeaderMap;
use jsonwebtoken::{Algorithm, Validation};

use super::config::Application;
// The names a request carries its credential under; public here for the gateway's users.
pub use crate::wire::access::{CLIENT_ID_HEADER, CLIENT_SECRET_HEADER, TOKEN_COOKIE, TOKEN_HEADER};

/// Clock skew tolerated on `exp`/`nbf`, in seconds (clients must not trust `exp` to the second
/// either, so the two sides agree within this margin).
const LEEWAY_SECS: u64 = 30;

/// Who was let in, for the log line. Never holds a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    /// A user, by e-mail or `sub`.
    User(String),
    /// A service token, by client id.
    Service(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(who) => f.write_str(who),
            Self::Service(id) => write!(f, "service-token:{id}"),
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token at all: log in.
    Missing,
    /// A token that fails verification (signature, expiry, audience, issuer, format): log in.
    Invalid,
    /// A service token that matches none configured: 403.
    ServiceTokenRejected,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "login required: no token",
            Self::Invalid => "login required: invalid token",
            Self::ServiceTokenRejected => "forbidden: service token rejected",
        }
    }
}

/// Checks the request's credentials for `app`.
pub(crate) async fn authorize(app: &Application, headers: &HeaderMap) -> Result<Subject, Refusal> {
    if let Some(id) = header_str(headers, CLIENT_ID_HEADER) {
        let secret = header_str(headers, CLIENT_SECRET_HEADER).unwrap_or_default();
        return check_service_token(app, id, secret);
    }
    let token = header_str(headers, TOKEN_HEADER)
        .map(str::to_owned)
        .or_else(|| cookie(headers, TOKEN_COOKIE));
    let Some(token) = token else {
        return Err(Refusal::Missing);
    };
    check_jwt(app, token.trim()).await
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether two secrets are equal, compared as SHA-256 digests in constant time so that neither
/// the secret nor its length leaks through timing.
pub(crate) fn secrets_match(offered: &str, want: &str) -> bool {
    let offered = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, offered.as_bytes());
    let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, want.as_bytes());
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(offered.as_ref(), want.as_ref()).is_ok()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn check_service_token(app: &Application, id: &str, secret: &str) -> Result<Subject, Refusal> {
    // Every configured token is compared so the match position does not leak through timing.
    let mut found = None;
    for token in &app.service_tokens {
        let secret_ok = secrets_match(secret, token.client_secret.expose());
        if secret_ok && token.client_id == id {
            found = Some(token.client_id.clone());
        }
    }
    found
        .map(Subject::Service)
        .ok_or(Refusal::ServiceTokenRejected)
}

/// The claims read for the log line; `aud` and `exp` are checked by the validation itself,
/// whatever their JSON shape (`aud` may be a string or a list).
#[derive(serde::Deserialize)]
struct Identity {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    /// `org` marks the auth domain's organisation token, which opens no application even
    /// when someone gives an application the auth domain's name as its AUD.
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

async fn check_jwt(app: &Application, token: &str) -> Result<Subject, Refusal> {
    let Some(store) = app.jwks.as_ref() else {
        return Err(Refusal::Invalid);
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Invalid)?;
    if header.alg != Algorithm::RS256 {
        return Err(Refusal::Invalid);
    }
    let mut keys = store.current();
    // A key id the set lacks: the key may have been rotated in since the set was read.
    if let Some(kid) = &header.kid
        && !keys.has_kid(kid)
    {
        store.unknown_kid(kid).await;
        keys = store.current();
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = LEEWAY_SECS;
    // A token is not good before its `nbf` either (jsonwebtoken checks only `exp` by default).
    validation.validate_nbf = true;
    validation.set_audience(&[app.aud.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    if let Some(iss) = &app.issuer {
        validation.set_issuer(&[iss.as_str()]);
    }
    // Try the key named by `kid`, or every key when the token names none (key rotation
    // publishes several keys at once).
    let candidates = keys
        .keys
        .iter()
        .filter(|(kid, _)| header.kid.is_none() || kid.is_none() || *kid == header.kid);
    for (_, key) in candidates {
        if let Ok(data) = jsonwebtoken::decode::<Identity>(token, key, &validation) {
            if data.claims.kind.as_deref() == Some("org") {
                return Err(Refusal::Invalid);
            }
            let who = [data.claims.email, data.claims.sub]
                .into_iter()
                .flatten()
                .find(|s| !s.is_empty())
                .unwrap_or_else(|| String::from("(anonymous)"));
            return Ok(Subject::User(who));
        }
    }
    Err(Refusal::Invalid)
}

/// The `Location` of the login redirect for application `host` (AUD `aud`), coming back to
/// `redirect` (a path on the application) after the login, as the Access edge sends it.
///
/// `login_origin` is `https://<auth domain>[:port]` when the gateway plays the login; without
/// it the redirect points at the application's own host, where no login is served (a client
/// only reads the AUD from `kid`).
pub(crate) fn login_location(
    login_origin: Option<&str>,
    host: &str,
    aud: &str,
    redirect: &str,
) -> String {
    let aud = urlencode(aud);
    let redirect = urlencode(redirect);
    let origin = login_origin.map_or_else(|| format!("https://{host}"), str::to_owned);
    format!("{origin}/cdn-cgi/access/login/{host}?kid={aud}&redirect_url={redirect}")
}

/// `text` percent-encoded for a query value.
pub(crate) fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
