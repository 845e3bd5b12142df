//! A token issuer standing in for the Access identity provider: an RSA key that signs RS256
//! application and organisation tokens (and the signed `cf-access-metadata` answer), and the
//! JWKS that verifies them. For the lab, the tests and the gateway's `access:` section.

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Errors creating keys or tokens.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// RSA key generation or serialisation failed.
    #[error("cannot generate an RSA signing key")]
    KeyGeneration,
    /// jsonwebtoken refused the key or the claims.
    #[error("cannot sign or describe the token")]
    Jwt(#[source] jsonwebtoken::errors::Error),
    /// The PEM text is not an RSA private key (PKCS#1 or PKCS#8).
    #[error("not an RSA private key in PEM form")]
    NotRsaKey(#[source] jsonwebtoken::errors::Error),
}

/// The claims of an Access application token that the gateway checks or logs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Audience: the application AUD tags this token is for.
    pub aud: Vec<String>,
    /// The user's e-mail address (logged as the subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Subject id.
    #[serde(default)]
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issuer (`https://<team>.cloudflareaccess.com` at Cloudflare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The token's kind, JSON `type`: `app` for an application token, `org` for the auth
    /// domain's organisation token (which no application accepts).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Claims {
    /// Claims for `email` valid for `lifetime` from now.
    pub fn for_user(aud: &str, email: &str, lifetime: std::time::Duration) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Self {
            aud: vec![aud.to_owned()],
            email: Some(email.to_owned()),
            sub: email.to_owned(),
            iat: now,
            exp: now + lifetime.as_secs(),
            iss: None,
            kind: None,
        }
    }
}

/// An RS256 signing key with a key id. Its `Debug` does not show the key.
pub struct TokenIssuer {
    kid: String,
    key: EncodingKey,
    jwk: Jwk,
    pem: Secret,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Generates a fresh RSA-2048 key with a random key id.
    pub fn generate() -> Result<Self, IssuerError> {
        use aws_lc_rs::encoding::AsDer;
        use base64::Engine;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| IssuerError::KeyGeneration)?;
        let pkcs8 = pair.as_der().map_err(|_| IssuerError::KeyGeneration)?;
        // jsonwebtoken takes RSA keys as PKCS#1 DER or as PEM (PKCS#1 or PKCS#8); PEM-wrap the
        // PKCS#8 document rather than hand-parse ASN.1.
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        Self::from_pem(&Secret::new(pem))
    }

    /// An issuer for an existing RSA private key (PEM, PKCS#1 or PKCS#8). The key id is the
    /// key's RFC 7638 thumbprint, so it stays the same across restarts and tokens minted before
    /// a restart still name a published key.
    pub fn from_pem(pem: &Secret) -> Result<Self, IssuerError> {
        let key =
            EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(IssuerError::NotRsaKey)?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).map_err(IssuerError::Jwt)?;
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(IssuerError::Jwt)?;
        // 32 characters of the base64url thumbprint: unique enough, short enough for headers.
        let kid: String = thumbprint.chars().take(32).collect();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        Ok(Self {
            kid,
            key,
            jwk,
            pem: pem.clone(),
        })
    }

    /// The private key, PEM (PKCS#8 when generated here), for a gateway's `access.signing_key`.
    pub fn private_key_pem(&self) -> &Secret {
        &self.pem
    }

    /// The key id put in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set (one key) that verifies this issuer's tokens.
    pub fn jwk_set(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// The public key set as JSON, for a gateway's `jwks: { inline: … }` or a JWKS file.
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&self.jwk_set()).unwrap_or_else(|_| String::from("{\"keys\":[]}"))
    }

    /// Signs `claims` as an RS256 JWT with this issuer's `kid`.
    pub fn mint(&self, claims: &Claims) -> Result<Secret, IssuerError> {
        self.sign(claims)
    }

    /// Signs any claims set (the metadata answer has its own shape) as an RS256 JWT with this
    /// issuer's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<Secret, IssuerError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map(Secret::new)
            .map_err(IssuerError::Jwt)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn minted_tokens_verify_against_the_published_jwks() {
        let issuer = TokenIssuer::generate().unwrap();
        let claims = Claims::for_user(
            "aud-1",
            "ada@example.com",
            std::time::Duration::from_secs(60),
        );
        let token = issuer.mint(&claims).unwrap();
        let set: JwkSet = serde_json::from_str(&issuer.jwks_json()).unwrap();
        let jwk = set.find(issuer.kid()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&["aud-1"]);
        let data = jsonwebtoken::decode::<Claims>(token.expose(), &key, &validation).unwrap();
        assert_eq!(data.claims, claims);
        assert_eq!(data.header.kid.as_deref(), Some(issuer.kid()));
        assert!(
            !issuer.jwks_json().contains("\"d\""),
            "private exponent published"
        );
        assert!(!format!("{issuer:?}").contains("PRIVATE"));
    }

    #[test]
    fn an_issuer_from_the_same_pem_keeps_its_key_id() {
        let issuer = TokenIssuer::generate().unwrap();
        let again = TokenIssuer::from_pem(issuer.private_key_pem()).unwrap();
        assert_eq!(issuer.kid(), again.kid());
        assert_eq!(issuer.jwks_json(), again.jwks_json());
        assert!(matches!(
            TokenIssuer::from_pem(&Secret::new("not a key")),
            Err(IssuerError::NotRsaKey(_))
        ));
    }
}
