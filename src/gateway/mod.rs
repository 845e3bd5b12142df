//! The server side of the tunnel protocol (a self-hostable stand-in for the Access edge).
//!
//! A TLS WebSocket endpoint that routes by `Host` to an application, checks its Access JWT or
//! service token, dials the application's origin (`tcp://`, `tcp://` with SOCKS5 inside the
//! stream, or bastion) and pipes bytes. The configuration format is in [`config`]; the wire
//! behaviour follows `shared/reference/cloudflare-access.md` ("Server side").

mod admission;
pub mod auth;
pub mod config;
mod csrf;
mod internal;
pub mod issuer;
mod keys;
mod login;
pub mod origin;
mod own_host;
pub(crate) mod serve;
mod server;
mod throttle;
mod transfer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{
    AccessConfig, ApplicationConfig, ConfigError, GatewayConfig, IdentityConfig, LimitsConfig,
    Origin, SecretSource, ServiceTokenConfig, TextSource, TlsConfig,
};
pub use issuer::{Claims, IssuerError, TokenIssuer};
pub use keys::KeysError;

use admission::{Admission, ConnectionLimits};
use serve::Lifecycle;

#[cfg(unix)]
/// Open files a gateway keeps for itself (listener, logs, key files, DNS), outside the two
/// per stream.
const RESERVED_FILES: u64 = 64;

/// The connection limits of `limits`, `max_connections` lowered to what the open-file limit
/// allows: past it accept would fail (EMFILE) for everyone, streams included.
fn connection_limits(limits: &config::LimitsConfig) -> ConnectionLimits {
    let max = within_open_file_limit(limits.max_connections);
    ConnectionLimits {
        max_connections: max,
        per_client: limits.max_connections_per_client.min(max),
        unauthenticated: limits.max_unauthenticated.min(max),
    }
}

/// `max` connections, or as many as the process's open-file limit leaves room for.
#[cfg(unix)]
fn within_open_file_limit(max: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return max;
    };
    // Two descriptors per stream: the client's connection and the origin's.
    let fits = usize::try_from(soft.saturating_sub(RESERVED_FILES) / 2).unwrap_or(usize::MAX);
    if fits >= max {
        return max;
    }
    tracing::info!(
        max_connections = max,
        open_file_limit = soft,
        lowered_to = fits,
        "limits.max_connections lowered to what the open-file limit allows"
    );
    fits.max(1)
}

/// `max` connections: Windows has no per-process limit on open sockets to lower it to.
#[cfg(not(unix))]
fn within_open_file_limit(max: usize) -> usize {
    max
}

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid or refers to something unreadable.
    #[error("invalid gateway configuration")]
    Config(#[source] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
}

/// The gateway server.
pub struct Gateway;

impl Gateway {
    /// Validates `config`, binds its address and starts serving in the background.
    pub async fn start(config: GatewayConfig) -> Result<GatewayHandle, GatewayError> {
        let resolved = config.resolve().map_err(GatewayError::Config)?;
        Self::start_resolved(resolved).await
    }

    /// Starts from an already validated configuration (the binary resolves it first for `--check`).
    pub async fn start_resolved(
        config: config::ResolvedConfig,
    ) -> Result<GatewayHandle, GatewayError> {
        let listen = config.listen;
        if config.tls.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "serving plain HTTP on a non-loopback address: tokens travel in clear unless a TLS-terminating proxy is in front"
            );
        }
        let tls = config.tls.clone();
        let life = Lifecycle::default();
        let limits = serve::ServeLimits {
            tls_handshake_timeout: config.limits.tls_handshake_timeout,
            request_timeout: config.limits.request_timeout,
            admission: Admission::new(connection_limits(&config.limits)),
        };
        // Key set files are read again while the gateway runs, each store once however many
        // applications share it.
        let mut stores: Vec<Arc<keys::KeyStore>> = Vec::new();
        for store in config.applications.values().filter_map(|a| a.jwks.as_ref()) {
            if store.follows_a_file() && !stores.iter().any(|s| Arc::ptr_eq(s, store)) {
                stores.push(store.clone());
            }
        }
        for store in stores {
            life.tracker
                .spawn(store.refresh_every(config.jwks_refresh, life.cancel.clone()));
        }
        let state = server::GatewayState {
            login: config
                .access
                .as_deref()
                .map(|a| Arc::new(login::LoginState::new(a))),
            config: Arc::new(config),
            life: life.clone(),
        };
        let local_addr =
            serve::bind_and_serve(listen, tls, server::router(state), life.clone(), limits)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: listen,
                    source,
                })?;
        tracing::info!(%local_addr, "gateway listening");
        Ok(GatewayHandle { local_addr, life })
    }
}

/// A running gateway. Dropping it stops the accept loop and closes every open stream.
pub struct GatewayHandle {
    local_addr: SocketAddr,
    life: Lifecycle,
}

impl GatewayHandle {
    /// The address the gateway listens on (with the real port when `:0` was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every stream and waits up to `bound` for them to end.
    /// Returns `false` when some task outlived the bound.
    pub async fn shutdown(self, bound: Duration) -> bool {
        self.life.shutdown(bound).await
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.life.cancel.cancel();
    }
}
