//! Access credentials: where a tunnel gets what it presents to the edge.
//!
//! A credential comes from the cluster's configuration (a service token or an app token from
//! an environment variable or file), else from the environment as cloudflared reads it, else
//! from the user's Access login, which [`AccessClient`] keeps: stored tokens ([`store`],
//! [`cloudflared_files`]), the org-token exchange ([`exchange`]) and the browser login
//! ([`transfer`]), one at a time per application ([`login`]).

pub mod client;
pub mod cloudflared_files;
pub mod exchange;
pub mod http;
pub mod jwt;
pub mod login;
pub mod metadata;
pub mod settings;
pub mod store;
pub mod transfer;

pub use client::{
    AccessClient, AccessEvent, Interaction, LoginCounters, LoginError, LoginStatus, Timings,
};
pub use settings::AccessSettings;
pub use store::TokenStore;

use ::http::{HeaderMap, HeaderValue};

use crate::inventory::{AccessAuth, Cluster, Provenance, SecretRefError, resolve_secret};
use crate::secret::Secret;
use crate::wire::access as vocabulary;

/// Environment variables cloudflared reads for a service token.
pub const ENV_SERVICE_TOKEN_ID: &str = "TUNNEL_SERVICE_TOKEN_ID";
/// See [`ENV_SERVICE_TOKEN_ID`].
pub const ENV_SERVICE_TOKEN_SECRET: &str = "TUNNEL_SERVICE_TOKEN_SECRET";
/// An Access application token for every cluster that names no credential of its own.
pub const ENV_ACCESS_TOKEN: &str = "K8S_TUNNELS_ACCESS_TOKEN";

/// What the carrier presents on the upgrade.
#[derive(Clone, Debug)]
pub enum Credential {
    /// Nothing: the edge will answer "login required" unless the application is open.
    None,
    /// An Access application token, sent as `Cf-Access-Token`.
    Token(Secret),
    /// A service token, sent as `Cf-Access-Client-Id` / `Cf-Access-Client-Secret`.
    ServiceToken {
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
    },
}

/// A credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The configured secret reference could not be read.
    #[error("cannot read the Access credential of {cluster}")]
    Secret {
        /// Cluster name.
        cluster: String,
        /// Which variable or file, and what is wrong with it (never its value).
        #[source]
        source: SecretRefError,
    },
    /// A service token to store lacks its id or secret, or the id spans lines.
    #[error("a service token needs a one-line client id and a non-empty client secret")]
    BadServiceToken,
    /// A value cannot be sent as an HTTP header.
    #[error("the Access credential contains characters that cannot be sent in a header")]
    BadHeader,
    /// No token could be had from the Access login.
    #[error("no Access login for {cluster}")]
    Login {
        /// Cluster name.
        cluster: String,
        /// Why the login failed, shared by every connection that waited for it.
        #[source]
        source: std::sync::Arc<LoginError>,
    },
}

impl AccessError {
    /// Whether the user must sign in (as opposed to a configuration or network fault).
    pub fn is_login_required(&self) -> bool {
        matches!(self, AccessError::Login { source, .. } if source.is_login_required())
    }
}

impl Credential {
    /// Adds the credential's headers to an upgrade request, marked sensitive so that HTTP
    /// libraries never log them.
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<(), AccessError> {
        let sensitive = |v: &str| {
            let mut value = HeaderValue::from_str(v).map_err(|_| AccessError::BadHeader)?;
            value.set_sensitive(true);
            Ok::<_, AccessError>(value)
        };
        match self {
            Credential::None => {}
            Credential::Token(token) => {
                headers.insert(vocabulary::TOKEN_HEADER, sensitive(token.expose())?);
            }
            Credential::ServiceToken {
                client_id,
                client_secret,
            } => {
                headers.insert(vocabulary::CLIENT_ID_HEADER, sensitive(client_id)?);
                headers.insert(
                    vocabulary::CLIENT_SECRET_HEADER,
                    sensitive(client_secret.expose())?,
                );
            }
        }
        Ok(())
    }
}

/// Resolves the credential for a cluster, reading its secret references now (a token file
/// may be refreshed by another tool between connections). The environment's credentials go
/// only where [`environment_applies`] says.
pub fn credential_for(cluster: &Cluster, env_hosts: &[String]) -> Result<Credential, AccessError> {
    let read = |r| {
        resolve_secret(r).map_err(|source| AccessError::Secret {
            cluster: cluster.name.clone(),
            source,
        })
    };
    Ok(match &cluster.access.auth {
        AccessAuth::Token(r) => Credential::Token(read(r)?),
        AccessAuth::ServiceToken {
            client_id,
            client_secret,
        } => Credential::ServiceToken {
            client_id: client_id.clone(),
            client_secret: read(client_secret)?,
        },
        AccessAuth::Default => environment_credential(cluster, env_hosts),
    })
}

/// Whether the environment's credentials (`TUNNEL_SERVICE_TOKEN_ID`/`_SECRET`,
/// `K8S_TUNNELS_ACCESS_TOKEN`) may be sent to the cluster's edge: they were given for the
/// user's own clusters, so only clusters of the inventory file, or whose Access host is listed
/// in `env_hosts` (`access.env_credential_hosts`). A discovered cluster names its edge itself,
/// and a hostile tag or Vault entry must not collect them.
pub fn environment_applies(cluster: &Cluster, env_hosts: &[String]) -> bool {
    cluster.provenance == Provenance::Inventory || {
        let host = http::app_host(cluster);
        env_hosts
            .iter()
            .any(|h| h.trim().eq_ignore_ascii_case(&host))
    }
}

/// The environment's credential for `cluster`, or [`Credential::None`] when there is none or
/// it does not apply there.
pub(crate) fn environment_credential(cluster: &Cluster, env_hosts: &[String]) -> Credential {
    if environment_applies(cluster, env_hosts) {
        from_environment()
    } else {
        Credential::None
    }
}

fn from_environment() -> Credential {
    let env = |k| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let (Some(id), Some(secret)) = (env(ENV_SERVICE_TOKEN_ID), env(ENV_SERVICE_TOKEN_SECRET)) {
        return Credential::ServiceToken {
            client_id: id,
            client_secret: Secret::new(secret),
        };
    }
    match env(ENV_ACCESS_TOKEN) {
        Some(token) => Credential::Token(Secret::new(token)),
        None => Credential::None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_are_sensitive_and_debug_is_redacted() {
        let credential = Credential::ServiceToken {
            client_id: "abc.access".into(),
            client_secret: Secret::new("s3cr3t-value"),
        };
        let mut headers = HeaderMap::new();
        credential.apply(&mut headers).unwrap();
        assert_eq!(headers["cf-access-client-secret"], "s3cr3t-value");
        assert!(headers["cf-access-client-secret"].is_sensitive());
        assert!(!format!("{headers:?}").contains("s3cr3t-value"));
        assert!(!format!("{credential:?}").contains("s3cr3t-value"));
    }
}
