//! The server side of the tunnel protocol (a self-hostable stand-in for the Access edge).
//!
//! A TLS WebSocket endpoint that routes by `Host` to an application, checks its Access JWT or
//! service token, dials the application's origin (`tcp://`, `tcp://` with SOCKS5 inside the
//! stream, or bastion) and pipes bytes. The configuration format is in [`config`]; the wire
//! behaviour follows `shared/reference/cloudflare-access.md` ("Server side").

pub mod auth;
pub mod config;
pub mod issuer;
mod login;
pub mod origin;
pub(crate) mod serve;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{
    AccessConfig, ApplicationConfig, ConfigError, GatewayConfig, IdentityConfig, Origin,
    SecretSource, ServiceTokenConfig, TextSource, TlsConfig,
};
pub use issuer::{Claims, IssuerError, TokenIssuer};

use serve::Lifecycle;

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
        /// Why.
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
        let state = server::GatewayState {
            config: Arc::new(config),
            life: life.clone(),
            deposits: Arc::default(),
        };
        let local_addr = serve::bind_and_serve(listen, tls, server::router(state), life.clone())
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
