//! The silent SSO: trade the org token (the auth domain's session) for an app token, as
//! cloudflared does — request the app, follow its redirect to the auth domain's login with the
//! cookie `CF_Authorization=<org token>`, follow on to the app's `/cdn-cgi/access/authorized`,
//! and take the `CF_Authorization` cookie it sets as the app token.

use crate::access::metadata::AppInfo;
use crate::access::settings::AccessSettings;
use crate::secret::Secret;

/// The cookie Access keeps its tokens in.
pub use crate::wire::access::TOKEN_COOKIE as COOKIE;
/// Enough for app → login → authorized (→ app), with room for an extra hop.
const MAX_HOPS: usize = 6;

/// Why the exchange did not produce an app token. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The auth domain did not accept the org token (it showed the sign-in page instead): the
    /// session is over and the user must sign in again.
    #[error("the Access session of {auth_domain} is no longer valid")]
    OrgTokenRejected {
        /// The auth domain.
        auth_domain: String,
    },
    /// A request failed (network, TLS, timeout).
    #[error("the Access token exchange for {host} failed")]
    Request {
        /// The host asked.
        host: String,
        /// What the HTTP client met: no connection, a timeout, a refused certificate.
        #[source]
        source: reqwest::Error,
    },
    /// An answer did not follow the protocol.
    #[error("unexpected answer in the Access token exchange: {0}")]
    Protocol(String),
    /// The edge failed (5xx): nothing is learnt about the tokens.
    #[error("{host} answered HTTP {status} during the Access token exchange")]
    Server {
        /// The host.
        host: String,
        /// The status.
        status: u16,
    },
}

impl ExchangeError {
    /// Whether the org token is no good (as opposed to the edge being unreachable or failing).
    pub fn org_token_rejected(&self) -> bool {
        matches!(self, ExchangeError::OrgTokenRejected { .. })
    }
}

/// Exchanges `org_token` for an app token for `app` (reached at `app_url`).
pub async fn exchange(
    clients: &crate::access::http::Clients,
    app: &AppInfo,
    app_url: &url::Url,
    org_token: &Secret,
    settings: &AccessSettings,
) -> Result<Secret, ExchangeError> {
    let mut url = app_url.clone();
    for _ in 0..MAX_HOPS {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let on_auth_domain = host == app.auth_domain;
        // The cluster's own edge CA vouches for its app host only, never for the auth domain
        // that receives the org cookie.
        let mut request = clients
            .for_host(&host)
            .get(url.clone())
            .timeout(crate::access::http::REQUEST_TIMEOUT);
        if on_auth_domain {
            // The org cookie goes to the auth domain only, never to an app host.
            let mut cookie =
                http::HeaderValue::from_str(&format!("{COOKIE}={}", org_token.expose())).map_err(
                    |_| ExchangeError::Protocol("the org token is not a valid cookie value".into()),
                )?;
            cookie.set_sensitive(true);
            request = request.header(http::header::COOKIE, cookie);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ExchangeError::Request {
                host: host.clone(),
                // The URL may carry a token (`/authorized?token=…`): keep it out of messages.
                source: source.without_url(),
            })?;
        let status = response.status();
        if status.is_server_error() {
            return Err(ExchangeError::Server {
                host,
                status: status.as_u16(),
            });
        }
        if host == app.app_host
            && let Some(token) = authorization_cookie(response.headers())
        {
            return Ok(token);
        }
        if !status.is_redirection() {
            if on_auth_domain {
                // The sign-in page (200/401): the org cookie did not count.
                return Err(ExchangeError::OrgTokenRejected {
                    auth_domain: app.auth_domain.clone(),
                });
            }
            return Err(ExchangeError::Protocol(format!(
                "{host} answered HTTP {} instead of redirecting to the Access login",
                status.as_u16()
            )));
        }
        let next = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .ok_or_else(|| {
                ExchangeError::Protocol(format!("{host} redirected without a Location"))
            })?;
        let next_host = next.host_str().unwrap_or_default().to_ascii_lowercase();
        // Follow only between the app and its auth domain (and only over https, except to a
        // plain-ws lab app): the org cookie must not leak, and neither may the app token.
        // https only, unless the app itself is plain http (a loopback lab app).
        let scheme_ok = next.scheme() == "https" || next.scheme() == app_url.scheme();
        let allowed = scheme_ok
            && (next_host == app.app_host
                || (next_host == app.auth_domain && settings.auth_domain_allowed(&next_host)));
        if !allowed {
            return Err(ExchangeError::Protocol(format!(
                "redirected to {next_host}, outside the application and its auth domain"
            )));
        }
        url = next;
    }
    Err(ExchangeError::Protocol("too many redirects".into()))
}

/// The `CF_Authorization` value of the answer's `Set-Cookie` headers.
fn authorization_cookie(headers: &http::HeaderMap) -> Option<Secret> {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|cookie| {
            let pair = cookie.split(';').next()?.trim();
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE && !value.trim().is_empty()).then(|| Secret::new(value.trim()))
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn takes_the_authorization_cookie_only() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::SET_COOKIE, "other=1; Path=/".parse().unwrap());
        headers.append(
            http::header::SET_COOKIE,
            "CF_Authorization=abc.def.ghi; Secure; HttpOnly; Path=/"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            authorization_cookie(&headers).unwrap().expose(),
            "abc.def.ghi"
        );
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::SET_COOKIE,
            "CF_Authorization=; Path=/".parse().unwrap(),
        );
        assert!(authorization_cookie(&headers).is_none());
    }
}
