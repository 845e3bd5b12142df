//! Reaching an application's origin: choosing the destination (fixed, or the bastion header
//! checked against the allow-list), dialling it, and the SOCKS5 server that `socks` origins
//! run inside the stream.

use std::time::Duration;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::{ReplyError, Socks5Command};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::config::{Application, Origin, split_host_port};
pub use crate::wire::access::JUMP_DESTINATION_HEADER;

/// Why no destination could be chosen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DestinationError {
    /// Bastion mode without a usable header.
    #[error("missing or malformed Cf-Access-Jump-Destination (expected host:port)")]
    Missing,
    /// The destination is not on the allow-list.
    #[error("destination {0} is not allowed")]
    NotAllowed(String),
}

/// Errors dialling an origin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// The connection failed.
    #[error("cannot connect to {destination}")]
    Connect {
        /// Where.
        destination: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection took longer than the connect timeout.
    #[error("connecting to {destination} timed out")]
    Timeout {
        /// Where.
        destination: String,
    },
    /// A bastion without an allow-list was asked for an address on the gateway's own machine
    /// or a link-local one (a cloud metadata endpoint).
    #[error("destination {destination} is internal to the gateway's host")]
    Internal {
        /// Where.
        destination: String,
    },
}

/// Errors of the SOCKS5 exchange inside a stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InStreamSocksError {
    /// The client's handshake failed or asked for something other than NoAuth.
    #[error("SOCKS5 handshake inside the stream failed")]
    Handshake(#[source] fast_socks5::server::SocksServerError),
    /// The client asked for a command other than CONNECT.
    #[error("SOCKS5 command {0:?} refused: only CONNECT is served")]
    Command(Socks5Command),
}

impl InStreamSocksError {
    /// Whether the client closed the stream before sending anything: a health probe.
    pub(crate) fn closed_before_any_data(&self) -> bool {
        use fast_socks5::server::SocksServerError;
        match self {
            InStreamSocksError::Handshake(SocksServerError::EOF) => true,
            InStreamSocksError::Handshake(SocksServerError::Io { source, .. }) => matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

/// The `host:port` this request's stream goes to, as a displayable string and its parts.
pub(crate) fn destination(
    app: &Application,
    headers: &HeaderMap,
) -> Result<(String, u16), DestinationError> {
    match &app.origin {
        Origin::Tcp { host, port } => Ok((host.clone(), *port)),
        Origin::Bastion => {
            let raw = headers
                .get(JUMP_DESTINATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or(DestinationError::Missing)?
                .trim();
            // cloudflared accepts a bare `host:port` or one with a scheme in front.
            let bare = raw.split_once("://").map_or(raw, |(_, rest)| rest);
            let (host, port) =
                split_host_port(bare.trim_end_matches('/')).ok_or(DestinationError::Missing)?;
            let host = host.to_ascii_lowercase();
            match &app.allow {
                Some(rules) if !rules.iter().any(|r| r.admits(&host, port)) => {
                    Err(DestinationError::NotAllowed(host_port(&host, port)))
                }
                Some(_) => Ok((host, port)),
                // No allow-list: any destination outside the gateway's host (see `dial_external`).
                None => Ok((host, port)),
            }
        }
    }
}

/// `host:port`, bracketing IPv6 literals.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Dials `host:port` with TCP_NODELAY within `timeout`.
pub(crate) async fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, DialError> {
    let destination = host_port(host, port);
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| DialError::Timeout {
            destination: destination.clone(),
        })?
        .map_err(|source| DialError::Connect {
            destination: destination.clone(),
            source,
        })?;
    // Nagle would hold back the small writes of TLS handshakes by ~40 ms.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Dials `host:port` for a bastion that has no allow-list: only addresses outside the gateway's
/// own machine and link-local ranges, so an authenticated user cannot reach services bound to
/// the gateway's loopback or a cloud metadata endpoint (169.254.169.254). The check runs after
/// DNS resolution and the checked address is the one dialled, so a name cannot smuggle such an
/// address past it.
pub(crate) async fn dial_external(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    let destination = host_port(host, port);
    let timed_out = || DialError::Timeout {
        destination: destination.clone(),
    };
    let resolved: Vec<std::net::SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| DialError::Connect {
                destination: destination.clone(),
                source,
            })?
            .collect();
    let permitted: Vec<_> = resolved
        .into_iter()
        .filter(|a| !is_internal(a.ip()))
        .collect();
    if permitted.is_empty() {
        return Err(DialError::Internal { destination });
    }
    let mut last = None;
    for addr in permitted {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(source)) => {
                last = Some(DialError::Connect {
                    destination: destination.clone(),
                    source,
                })
            }
            Err(_) => last = Some(timed_out()),
        }
    }
    Err(last.unwrap_or_else(timed_out))
}

/// Loopback, unspecified, link-local, multicast or broadcast — also as IPv4-mapped IPv6.
fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unicast_link_local()
            }
        },
    }
}

/// Runs the SOCKS5 server half inside `stream` the way cloudflared's `proxyType: socks` does:
/// NoAuth only, CONNECT only, and whatever address is asked for, the answer is the fixed
/// origin (already dialled, at `bound`). Returns the stream ready for piping.
pub(crate) async fn socks_in_stream<S>(
    stream: S,
    bound: std::net::SocketAddr,
) -> Result<S, InStreamSocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // fast-socks5 writes its method choice without flushing; WsStream flushes before it
    // reads the command, so the reply is not held back.
    let proto = Socks5ServerProtocol::accept_no_auth(stream)
        .await
        .map_err(InStreamSocksError::Handshake)?;
    let (proto, command, _ignored_target) = proto
        .read_command()
        .await
        .map_err(InStreamSocksError::Handshake)?;
    if command != Socks5Command::TCPConnect {
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return Err(InStreamSocksError::Command(command));
    }
    proto
        .reply_success(bound)
        .await
        .map_err(InStreamSocksError::Handshake)
}
