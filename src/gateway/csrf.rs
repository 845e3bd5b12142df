//! The sign-in form's protection against cross-site posts (login CSRF: another site making a
//! visitor's browser sign in to the gateway, e.g. as the attacker, whose session then receives
//! what the visitor does next).
//!
//! A signed double-submit token: the page puts a token in a hidden field and in a cookie that
//! only this host's own pages can send (`__Host-`, `SameSite=Strict`); a post counts only when
//! both arrive, match, carry this gateway's MAC and have not expired. Another site can make a
//! browser post the form, but it can neither read the field nor set the cookie. Nothing is
//! stored per visitor: the key is made at start (a restart makes open forms ask again).

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The form field.
pub(crate) const FIELD: &str = "csrf";
/// The cookie.
pub(crate) const COOKIE: &str = "__Host-CF_Login_CSRF";
/// How long a sign-in form stays good.
pub(crate) const TTL: Duration = Duration::from_secs(2 * 3600);

const NONCE: usize = 16;
const MAC: usize = 16;
/// Keeps these MACs apart from any other use of the key.
const CONTEXT: &[u8] = b"k8s-tunnels-gateway sign-in form\0";

/// The key that signs sign-in form tokens. Its `Debug` does not show it.
pub(crate) struct CsrfKey(hmac::Key);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

impl CsrfKey {
    /// A fresh random key.
    pub(crate) fn generate() -> Self {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
            // The system's random source failing is not something to serve through.
            .unwrap_or_else(|_| {
                let bytes: [u8; 32] = rand::random();
                hmac::Key::new(hmac::HMAC_SHA256, &bytes)
            });
        Self(key)
    }

    fn mac(&self, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(CONTEXT);
        ctx.update(body);
        ctx.sign()
    }

    /// A new token, good for [`TTL`].
    pub(crate) fn issue(&self) -> String {
        let nonce: [u8; NONCE] = rand::random();
        let expires = jsonwebtoken::get_current_timestamp() + TTL.as_secs();
        let mut token = nonce.to_vec();
        token.extend_from_slice(&expires.to_be_bytes());
        let tag = self.mac(&token);
        token.extend_from_slice(&tag.as_ref()[..MAC]);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Whether `token` is one of ours and still good.
    pub(crate) fn valid(&self, token: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        if bytes.len() != NONCE + 8 + MAC {
            return false;
        }
        let (body, mac) = bytes.split_at(NONCE + 8);
        let tag = self.mac(body);
        #[allow(deprecated)]
        let mac_ok =
            aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..MAC], mac).is_ok();
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&body[NONCE..]);
        mac_ok && u64::from_be_bytes(expires) > jsonwebtoken::get_current_timestamp()
    }

    /// Whether a post is the form's own: the field and the cookie both there, equal and valid.
    pub(crate) fn posted(&self, field: Option<&str>, cookie: Option<&str>) -> bool {
        match (field, cookie) {
            (Some(field), Some(cookie)) => {
                super::auth::secrets_match(field, cookie) && self.valid(field)
            }
            _ => false,
        }
    }

    /// `Set-Cookie` for `token`.
    pub(crate) fn cookie(token: &str) -> String {
        format!(
            "{COOKIE}={token}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Strict",
            TTL.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_matching_pair_of_our_own_unexpired_tokens_counts() {
        let key = CsrfKey::generate();
        let token = key.issue();
        assert!(key.valid(&token));
        assert!(key.posted(Some(&token), Some(&token)));
        assert!(!key.posted(Some(&token), None), "no cookie");
        assert!(!key.posted(None, Some(&token)), "no field");
        let other = key.issue();
        assert!(!key.posted(Some(&token), Some(&other)), "a mismatched pair");
        // Another gateway's (or a restarted one's) token, a tampered one, garbage.
        let stranger = CsrfKey::generate().issue();
        assert!(!key.posted(Some(&stranger), Some(&stranger)));
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        bytes[NONCE] ^= 0xff;
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        assert!(!key.posted(Some(&tampered), Some(&tampered)));
        assert!(!key.posted(Some("x"), Some("x")));
        assert!(!format!("{key:?}").contains(&token));
    }
}
