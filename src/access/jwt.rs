//! Reading an Access JWT's claims *without* verifying it, as cloudflared does: the client only
//! needs to know whether a token it holds is worth sending (not expired, for this application)
//! and whom it names. The edge verifies every token it is sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;

use crate::secret::Secret;

/// A token counts as expired this long before its `exp`: clocks disagree, and a token that
/// expires on the wire is a failed connection (pomerium cli#676).
pub const SKEW_MARGIN: Duration = Duration::from_secs(60);

/// Why a token's claims cannot be read. Never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three dot-separated parts.
    #[error("not a JWT (expected three dot-separated parts)")]
    Shape,
    /// The payload is not base64url.
    #[error("the JWT payload is not base64url")]
    Base64(#[source] base64::DecodeError),
    /// The payload is not the JSON we expect.
    #[error("the JWT payload is not valid claims JSON")]
    Json(#[source] serde_json::Error),
    /// A time claim (`exp`, `iat`) lies beyond what the system clock can represent.
    #[error("the JWT has a time claim out of range")]
    TimeOutOfRange,
}

/// `aud` is a string or an array of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct RawClaims {
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    iss: Option<String>,
}

/// The claims the client uses, read without verification. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// Audiences (an app token carries its application's AUD).
    pub aud: Vec<String>,
    /// Expiry, when present.
    pub exp: Option<SystemTime>,
    /// Issued at, when present.
    pub iat: Option<SystemTime>,
    /// The user's e-mail address, when present.
    pub email: Option<String>,
    /// `type` (`"org"` on org tokens).
    pub kind: Option<String>,
    /// Issuer (`https://<auth_domain>`).
    pub iss: Option<String>,
}

impl TokenClaims {
    /// Reads the claims of `token`.
    pub fn read(token: &Secret) -> Result<Self, JwtError> {
        let mut parts = token.expose().split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Shape);
        };
        // Tokens are unpadded base64url, but accept padding too.
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(JwtError::Base64)?;
        let raw: RawClaims = serde_json::from_slice(&bytes).map_err(JwtError::Json)?;
        // Hostile tokens (from a file, a cookie, the transfer service) may carry any number:
        // an out-of-range time is an error, never a panic.
        let at = |s: u64| {
            UNIX_EPOCH
                .checked_add(Duration::from_secs(s))
                .ok_or(JwtError::TimeOutOfRange)
        };
        Ok(Self {
            aud: match raw.aud {
                None => Vec::new(),
                Some(Audience::One(a)) => vec![a],
                Some(Audience::Many(a)) => a,
            },
            exp: raw.exp.map(at).transpose()?,
            iat: raw.iat.map(at).transpose()?,
            email: raw.email,
            kind: raw.kind,
            iss: raw.iss,
        })
    }

    /// Time left before the token counts as expired (its `exp` minus `margin`, normally
    /// [`SKEW_MARGIN`]) at `now`; zero when it already does. A token without `exp` is treated
    /// as expired: we cannot tell, and the edge would decide on every connection.
    pub fn usable_for(&self, now: SystemTime, margin: Duration) -> Duration {
        self.exp
            .and_then(|exp| exp.checked_sub(margin))
            .and_then(|deadline| deadline.duration_since(now).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the token is worth sending at `now` (not expired within `margin`).
    pub fn is_fresh(&self, now: SystemTime, margin: Duration) -> bool {
        !self.usable_for(now, margin).is_zero()
    }

    /// Whether the token is for the application `aud`.
    pub fn is_for(&self, aud: &str) -> bool {
        self.aud.iter().any(|a| a == aud)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An unsigned token with `claims` (the signature part is junk: nothing here verifies it).
    pub(crate) fn token(claims: serde_json::Value) -> Secret {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        Secret::new(format!(
            "{}.{}.c2ln",
            b64(br#"{"alg":"RS256","kid":"k"}"#),
            b64(claims.to_string().as_bytes())
        ))
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn reads_aud_as_string_or_array_and_exp_with_margin() {
        let now = now_secs();
        let t = token(
            serde_json::json!({"aud": ["a1", "a2"], "exp": now + 3600, "email": "ada@example.com"}),
        );
        let c = TokenClaims::read(&t).unwrap();
        assert!(c.is_for("a2") && !c.is_for("a3"));
        assert_eq!(c.email.as_deref(), Some("ada@example.com"));
        assert!(c.is_fresh(SystemTime::now(), SKEW_MARGIN));
        let left = c.usable_for(SystemTime::now(), SKEW_MARGIN);
        assert!(left <= Duration::from_secs(3600 - 59) && left > Duration::from_secs(3400));

        let c =
            TokenClaims::read(&token(serde_json::json!({"aud": "one", "exp": now + 30}))).unwrap();
        assert_eq!(c.aud, ["one"]);
        // Thirty seconds left is inside the skew margin: already stale.
        assert!(!c.is_fresh(SystemTime::now(), SKEW_MARGIN));
        let c = TokenClaims::read(&token(serde_json::json!({"aud": "one"}))).unwrap();
        assert!(
            !c.is_fresh(SystemTime::now(), SKEW_MARGIN),
            "no exp counts as expired"
        );
    }

    #[test]
    fn garbage_is_an_error_that_does_not_echo_the_token() {
        for bad in ["nope", "a.b", "a.!!!.c", "a.e30x.c", "a.b.c.d"] {
            let err = TokenClaims::read(&Secret::new(bad)).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(bad) || bad.len() < 3, "{shown}");
        }
        let not_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("secret-stuff");
        let err = TokenClaims::read(&Secret::new(format!("a.{not_json}.c"))).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("secret-stuff"));
    }

    #[test]
    fn an_out_of_range_time_is_an_error_not_a_panic() {
        let hostile = token(serde_json::json!({"aud": "one", "exp": u64::MAX}));
        assert!(matches!(
            TokenClaims::read(&hostile),
            Err(JwtError::TimeOutOfRange)
        ));
    }

    /// A bounded fuzz run over the tokens the client reads from files, cookies and the
    /// transfer service: every input is read or refused, and whatever is read can be judged
    /// and shown (`auth status`) without a panic.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn claim() -> impl Strategy<Value = serde_json::Value> {
            prop_oneof![
                any::<u64>().prop_map(serde_json::Value::from),
                // Around the year 9999 and far beyond it.
                (253_402_300_000_u64..u64::MAX / 4).prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,20}".prop_map(serde_json::Value::from),
                prop::collection::vec(".{0,8}", 0..3).prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_text_is_read_or_refused(text in ".{0,200}", payload in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = TokenClaims::read(&Secret::new(text));
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
                let _ = TokenClaims::read(&Secret::new(format!("e30.{b64}.c2ln")));
            }

            #[test]
            fn any_claims_are_read_or_refused_and_shown(
                aud in claim(), exp in claim(), iat in claim(), email in claim(), iss in claim(),
                skew in any::<u64>(),
            ) {
                let t = token(serde_json::json!({"aud": aud, "exp": exp, "iat": iat, "email": email, "iss": iss}));
                if let Ok(claims) = TokenClaims::read(&t) {
                    let now = SystemTime::now();
                    let margin = Duration::from_secs(skew);
                    let _ = (claims.usable_for(now, margin), claims.is_fresh(now, margin), claims.is_for("x"));
                    for time in [claims.exp, claims.iat].into_iter().flatten() {
                        prop_assert!(!crate::timestamp::rfc3339(time).is_empty());
                    }
                }
            }
        }
    }
}
