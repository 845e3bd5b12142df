//! Which Access application guards a host: the signed `cf-access-metadata` answer
//! (cloudflared's `GetAppInfo`), verified against the auth domain's JWKS, with the older
//! redirect form (`kid` query + `CF-Access-Domain`) as a fallback.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::access::settings::AccessSettings;
use crate::sync::lock;
use crate::wire::access as vocabulary;

/// How long a fetched JWKS is trusted.
pub const JWKS_TTL: Duration = Duration::from_secs(24 * 3600);
/// The oldest metadata answer accepted.
const MAX_METADATA_AGE: Duration = Duration::from_secs(24 * 3600);

/// An Access application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppInfo {
    /// The application's hostname (where the login and the authorized cookie live).
    pub app_host: String,
    /// The application's AUD tag.
    pub aud: String,
    /// The team's auth domain (`<team>.cloudflareaccess.com`).
    pub auth_domain: String,
}

/// Why the application could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The request failed (network, TLS, timeout).
    #[error("cannot reach {host} to identify its Access application")]
    Request {
        /// The host.
        host: String,
        /// What the HTTP client met: no connection, a timeout, a refused certificate.
        #[source]
        source: reqwest::Error,
    },
    /// The host answered, but neither with metadata nor with a login redirect.
    #[error("{host} answered HTTP {status} without Access metadata: not an Access application?")]
    NotAccess {
        /// The host.
        host: String,
        /// The status.
        status: u16,
    },
    /// The metadata or the redirect named an auth domain outside the configured suffixes.
    #[error(
        "{host} names the auth domain {auth_domain}, which is not allowed by access.auth_domain_suffixes"
    )]
    AuthDomainNotAllowed {
        /// The host.
        host: String,
        /// The auth domain.
        auth_domain: String,
    },
    /// An unsigned answer named another application than the host that gave it.
    #[error(
        "{host} names the Access application {claimed} in an unsigned answer; only signed metadata may name another host"
    )]
    ForeignApplication {
        /// The host asked.
        host: String,
        /// The application it named.
        claimed: String,
    },
    /// The metadata JWT failed verification or a claim check.
    #[error("the Access metadata of {host} is invalid: {reason}")]
    Invalid {
        /// The host.
        host: String,
        /// What failed.
        reason: String,
    },
    /// The auth domain's key set could not be fetched.
    #[error("cannot fetch the key set of {auth_domain}")]
    Jwks {
        /// The auth domain.
        auth_domain: String,
        /// What the HTTP client met: no connection, a timeout, a refused certificate.
        #[source]
        source: reqwest::Error,
    },
}

#[derive(Debug, Deserialize)]
struct MetadataClaims {
    #[serde(rename = "type")]
    kind: String,
    hostname: String,
    auth_domain: String,
    aud: AudClaim,
    #[serde(default)]
    app_hostname: Option<String>,
    iat: u64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AudClaim {
    One(String),
    Many(Vec<String>),
}

/// JWKS per auth domain, fetched at most once a day (again when a `kid` is unknown).
#[derive(Debug, Default)]
pub struct JwksCache {
    sets: Mutex<HashMap<String, (Instant, JwkSet)>>,
}

impl JwksCache {
    async fn key(
        &self,
        client: &reqwest::Client,
        auth_domain: &str,
        kid: Option<&str>,
    ) -> Result<Option<DecodingKey>, MetadataError> {
        let find = |set: &JwkSet| {
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None => set.keys.first(),
            };
            jwk.and_then(|j| DecodingKey::from_jwk(j).ok())
        };
        let cached = lock(&self.sets)
            .get(auth_domain)
            .filter(|(at, _)| at.elapsed() < JWKS_TTL)
            .map(|(_, set)| find(set));
        if let Some(Some(key)) = cached {
            return Ok(Some(key));
        }
        let jwks_err = |source| MetadataError::Jwks {
            auth_domain: auth_domain.to_string(),
            source,
        };
        let set: JwkSet = client
            .get(format!("https://{auth_domain}/cdn-cgi/access/certs"))
            .timeout(crate::access::http::REQUEST_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(jwks_err)?
            .json()
            .await
            .map_err(jwks_err)?;
        let key = find(&set);
        lock(&self.sets).insert(auth_domain.to_string(), (Instant::now(), set));
        Ok(key)
    }
}

/// Identifies the Access application at `url` (an `https://` app URL).
pub async fn app_info(
    clients: &crate::access::http::Clients,
    url: &url::Url,
    settings: &AccessSettings,
    jwks: &JwksCache,
) -> Result<AppInfo, MetadataError> {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let response = clients
        .app
        .head(url.clone())
        .header(vocabulary::METADATA_REQUEST_HEADER, "true")
        .timeout(crate::access::http::REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|source| MetadataError::Request {
            host: host.clone(),
            source: source.without_url(),
        })?;
    let headers = response.headers();
    if let Some(jwt) = headers
        .get(vocabulary::METADATA_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return verify_metadata(&clients.auth, jwt, &host, settings, jwks).await;
    }
    // Before 2026.8 the AUD came from the login redirect (unsigned; the suffix check on the
    // auth domain is what keeps a spoofed answer from sending the login elsewhere).
    if response.status().is_redirection()
        && let Some(info) = from_redirect(headers, &host, settings)?
    {
        return Ok(info);
    }
    Err(MetadataError::NotAccess {
        host,
        status: response.status().as_u16(),
    })
}

fn from_redirect(
    headers: &http::HeaderMap,
    host: &str,
    settings: &AccessSettings,
) -> Result<Option<AppInfo>, MetadataError> {
    let Some(location) = headers
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| url::Url::parse(l).ok())
    else {
        return Ok(None);
    };
    if !vocabulary::is_login_path(location.path()) {
        return Ok(None);
    }
    let Some(aud) = location
        .query_pairs()
        .find(|(k, _)| k == "kid")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let auth_domain = location.host_str().unwrap_or_default().to_ascii_lowercase();
    if !settings.auth_domain_allowed(&auth_domain) {
        return Err(MetadataError::AuthDomainNotAllowed {
            host: host.to_string(),
            auth_domain,
        });
    }
    // Unsigned, this answer can only speak for the host that gave it: a token is obtained
    // for, stored under and sent to that host alone. An edge naming another application (the
    // login path's host or `CF-Access-Domain`) would otherwise be handed that application's
    // token — from cloudflared's files or the silent exchange — without the user knowing.
    let named = [
        location
            .path()
            .strip_prefix(vocabulary::LOGIN_PATH)
            .map(str::to_owned),
        headers
            .get(vocabulary::DOMAIN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    ];
    for claimed in named.into_iter().flatten() {
        if !names_host(&claimed, host) {
            return Err(MetadataError::ForeignApplication {
                host: host.to_string(),
                claimed: printable(&claimed),
            });
        }
    }
    Ok(Some(AppInfo {
        app_host: host.to_string(),
        aud,
        auth_domain,
    }))
}

/// Whether an application domain as an unsigned answer names it (`host`, `host/path`, or a
/// wildcard `*.parent` covering `host`; empty means the host itself) covers `host`.
fn names_host(claimed: &str, host: &str) -> bool {
    let domain = claimed.trim().split('/').next().unwrap_or_default();
    let domain = domain.to_ascii_lowercase();
    if domain.is_empty() || domain == host {
        return true;
    }
    domain.strip_prefix("*.").is_some_and(|parent| {
        host.strip_suffix(parent)
            .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
    })
}

/// A hostile value, cut short and stripped of control characters, for an error message.
fn printable(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

async fn verify_metadata(
    client: &reqwest::Client,
    jwt: &str,
    host: &str,
    settings: &AccessSettings,
    jwks: &JwksCache,
) -> Result<AppInfo, MetadataError> {
    let invalid = |reason: String| MetadataError::Invalid {
        host: host.to_string(),
        reason,
    };
    // The claims say where the keys are; read them unverified first, check the auth domain
    // against the allowed suffixes, then verify the signature with that domain's keys.
    let (header, claims) = unverified_claims(jwt).map_err(invalid)?;
    let auth_domain = claims.auth_domain.to_ascii_lowercase();
    if !settings.auth_domain_allowed(&auth_domain) {
        return Err(MetadataError::AuthDomainNotAllowed {
            host: host.to_string(),
            auth_domain,
        });
    }
    let key = jwks
        .key(client, &auth_domain, header.kid.as_deref())
        .await?
        .ok_or_else(|| invalid("signed by a key the auth domain does not publish".into()))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let verified = jsonwebtoken::decode::<MetadataClaims>(jwt, &key, &validation)
        .map_err(|e| invalid(format!("signature: {e}")))?
        .claims;
    check_claims(verified, host, SystemTime::now()).map_err(invalid)
}

/// The header and claims of a metadata JWT, before its signature is checked.
fn unverified_claims(jwt: &str) -> Result<(jsonwebtoken::Header, MetadataClaims), String> {
    use base64::Engine as _;
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| e.to_string())?;
    let claims = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok((header, claims))
}

fn check_claims(claims: MetadataClaims, host: &str, now: SystemTime) -> Result<AppInfo, String> {
    if claims.kind != "match" {
        return Err(format!("type is {:?}, not \"match\"", claims.kind));
    }
    if !claims.hostname.eq_ignore_ascii_case(host) {
        return Err(format!("issued for {}, not {host}", claims.hostname));
    }
    let Some(issued) = UNIX_EPOCH.checked_add(Duration::from_secs(claims.iat)) else {
        return Err("iat is out of range".into());
    };
    match now.duration_since(issued) {
        Ok(age) if age > MAX_METADATA_AGE => return Err("older than 24 h".into()),
        Ok(_) => {}
        // Issued "in the future": tolerate clock skew of a few minutes only.
        Err(e) if e.duration() > Duration::from_secs(300) => {
            return Err("issued in the future".into());
        }
        Err(_) => {}
    }
    let aud = match claims.aud {
        AudClaim::One(a) => a,
        AudClaim::Many(a) => a.into_iter().next().unwrap_or_default(),
    };
    if aud.is_empty() {
        return Err("no aud".into());
    }
    Ok(AppInfo {
        app_host: claims
            .app_hostname
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| host.to_string())
            .to_ascii_lowercase(),
        aud,
        auth_domain: claims.auth_domain.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(kind: &str, hostname: &str, iat: SystemTime) -> MetadataClaims {
        MetadataClaims {
            kind: kind.into(),
            hostname: hostname.into(),
            auth_domain: "team.cloudflareaccess.com".into(),
            aud: AudClaim::Many(vec!["aud-1".into()]),
            app_hostname: Some("App.example.com".into()),
            iat: iat.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        }
    }

    #[test]
    fn claim_checks() {
        let now = SystemTime::now();
        let info = check_claims(
            claims("match", "app.example.com", now),
            "app.example.com",
            now,
        )
        .unwrap();
        assert_eq!(info.aud, "aud-1");
        assert_eq!(info.app_host, "app.example.com");
        assert!(
            check_claims(
                claims("org", "app.example.com", now),
                "app.example.com",
                now
            )
            .is_err()
        );
        assert!(
            check_claims(
                claims("match", "other.example.com", now),
                "app.example.com",
                now
            )
            .is_err()
        );
        let old = now - Duration::from_secs(25 * 3600);
        assert!(
            check_claims(
                claims("match", "app.example.com", old),
                "app.example.com",
                now
            )
            .is_err()
        );
    }

    #[test]
    fn redirect_form_reads_kid_and_domain_and_checks_the_suffix() {
        let settings = AccessSettings::default();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::LOCATION,
            "https://team.cloudflareaccess.com/cdn-cgi/access/login/app.example.com?kid=aud-9&redirect_url=%2F"
                .parse()
                .unwrap(),
        );
        headers.insert("cf-access-domain", "app.example.com".parse().unwrap());
        let info = from_redirect(&headers, "app.example.com", &settings)
            .unwrap()
            .unwrap();
        assert_eq!(info.aud, "aud-9");
        assert_eq!(info.auth_domain, "team.cloudflareaccess.com");
        headers.insert(
            http::header::LOCATION,
            "https://evil.example.net/cdn-cgi/access/login/app.example.com?kid=aud-9"
                .parse()
                .unwrap(),
        );
        assert!(matches!(
            from_redirect(&headers, "app.example.com", &settings),
            Err(MetadataError::AuthDomainNotAllowed { .. })
        ));
        headers.insert(
            http::header::LOCATION,
            "https://app.example.com/elsewhere".parse().unwrap(),
        );
        assert!(
            from_redirect(&headers, "app.example.com", &settings)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_unsigned_answer_speaks_only_for_the_host_that_gave_it() {
        let settings = AccessSettings::default();
        let answer = |path_host: &str, domain: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::LOCATION,
                format!(
                    "https://team.cloudflareaccess.com/cdn-cgi/access/login/{path_host}?kid=aud-b"
                )
                .parse()
                .unwrap(),
            );
            if let Some(domain) = domain {
                headers.insert("cf-access-domain", domain.parse().unwrap());
            }
            from_redirect(&headers, "edge.example.com", &settings)
        };
        // Another application's redirect, or its domain in the header: refused, named.
        for (path_host, domain) in [
            ("b.example.com", Some("b.example.com")),
            ("edge.example.com", Some("b.example.com")),
            ("b.example.com", None),
            ("edge.example.com", Some("*.other.example.com")),
            ("edge.example.com", Some("*.edge.example.com")),
        ] {
            let err = answer(path_host, domain).unwrap_err();
            assert!(
                matches!(&err, MetadataError::ForeignApplication { host, .. } if host == "edge.example.com"),
                "{path_host} {domain:?}: {err}"
            );
        }
        // Its own name, a path under it, or a wildcard covering it: the app host is the host.
        for domain in [
            None,
            Some("EDGE.example.com"),
            Some("edge.example.com/k8s"),
            Some("*.example.com"),
        ] {
            let info = answer("edge.example.com", domain).unwrap().unwrap();
            assert_eq!(info.app_host, "edge.example.com");
            assert_eq!(info.aud, "aud-b");
        }
    }

    /// A bounded fuzz run over what an edge can send: any metadata JWT, any redirect and
    /// domain header. Every input is read or refused; none panics.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn b64(bytes: &[u8]) -> String {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }

        fn number() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                any::<u64>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,12}".prop_map(serde_json::Value::from),
            ]
        }

        fn text() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                "[a-zA-Z0-9.*/_-]{0,40}".prop_map(serde_json::Value::from),
                prop::collection::vec("[a-z0-9-]{0,10}", 0..4).prop_map(serde_json::Value::from),
                number(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_metadata_jwt_is_read_or_refused(
                header in prop_oneof![Just(r#"{"alg":"RS256","kid":"k"}"#.to_string()), ".{0,60}"],
                kind in text(), hostname in text(), auth_domain in text(), aud in text(),
                app_hostname in text(), iat in number(), junk in ".{0,80}",
            ) {
                let claims = serde_json::json!({
                    "type": kind, "hostname": hostname, "auth_domain": auth_domain,
                    "aud": aud, "app_hostname": app_hostname, "iat": iat,
                });
                for jwt in [
                    format!("{}.{}.c2ln", b64(header.as_bytes()), b64(claims.to_string().as_bytes())),
                    junk.clone(),
                    format!("{}.{}", b64(header.as_bytes()), b64(junk.as_bytes())),
                ] {
                    if let Ok((_, claims)) = unverified_claims(&jwt) {
                        let _ = check_claims(claims, "edge.example.com", SystemTime::now());
                    }
                }
            }

            #[test]
            fn any_redirect_is_read_or_refused(
                location in prop_oneof![
                    ".{0,120}",
                    "https://[a-z.]{1,20}(:[0-9]{1,6})?/cdn-cgi/access/login(/[ -~]{0,30})?(\\?[ -~]{0,40})?",
                ],
                domain in proptest::option::of("[ -~]{0,60}"),
            ) {
                let mut headers = http::HeaderMap::new();
                if let Ok(value) = http::HeaderValue::from_str(&location) {
                    headers.insert(http::header::LOCATION, value);
                }
                if let Some(Ok(value)) = domain.as_deref().map(http::HeaderValue::from_str) {
                    headers.insert("cf-access-domain", value);
                }
                if let Ok(Some(info)) = from_redirect(&headers, "edge.example.com", &AccessSettings::default()) {
                    // Whatever the answer said, it speaks for the host that gave it.
                    prop_assert_eq!(info.app_host, "edge.example.com");
                }
            }
        }
    }
}
