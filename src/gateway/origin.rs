//! Reaching an application's origin: choosing the destination (fixed, or the bastion header
//! checked against the allow-list), dialling it, and the SOCKS5 server that `socks` origins
//! run inside the stream.

use std::time::Duration;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::{ReplyError, Socks5Command};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::config::{AllowRule, Application, Origin, canonical_host, split_host_port};
use super::internal;
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
        /// The destination as the client named it (`host:port`).
        destination: String,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// The connection took longer than the connect timeout.
    #[error("connecting to {destination} timed out")]
    Timeout {
        /// The destination as the client named it (`host:port`).
        destination: String,
    },
    /// The destination's name resolved to no address at all.
    #[error("{destination} resolves to no address")]
    NoAddress {
        /// The destination as the client named it (`host:port`).
        destination: String,
    },
    /// A bastion destination resolved only to addresses on the internal list (the gateway's
    /// host, link-local, cloud metadata) that its allow-list entry does not let it reach.
    #[error("destination {destination} resolves to {address}, which is {why}")]
    Internal {
        /// The destination as the client named it (`host:port`).
        destination: String,
        /// The first address refused.
        address: std::net::IpAddr,
        /// Why it is internal.
        why: internal::Internal,
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

/// Where a request's stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// Host name (lower-case) or IP address (canonical form).
    pub(crate) host: String,
    /// TCP port, never 0.
    pub(crate) port: u16,
    /// What the resolved addresses are checked against before they are dialled.
    pub(crate) check: AddressCheck,
}

/// Which resolved addresses a destination may be dialled at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressCheck {
    /// Any: a `tcp://` origin the operator configured.
    Trusted,
    /// None on the [internal list](super::internal) but the gateway's own host's (loopback,
    /// its interfaces): a bastion destination admitted by an allow-list entry that is an IP
    /// address, or a `host:port` of an application with `allow_internal`, which is how an
    /// operator lets a bastion reach a service on the gateway's host. Link-local and metadata
    /// addresses are refused all the same ([`internal::Internal::always_refused`]).
    OwnHost,
    /// None on the [internal list](super::internal): every other bastion destination.
    External,
}

impl AddressCheck {
    /// Why `ip` may not be dialled under this check, if it may not.
    fn refuses(self, ip: std::net::IpAddr) -> Option<internal::Internal> {
        match self {
            Self::Trusted => None,
            Self::OwnHost => internal::classify(ip).filter(|why| why.always_refused()),
            Self::External => internal::classify(ip),
        }
    }
}

/// The destination of this request's stream.
pub(crate) fn destination(
    app: &Application,
    headers: &HeaderMap,
) -> Result<Destination, DestinationError> {
    match &app.origin {
        Origin::Tcp { host, port } => Ok(Destination {
            host: host.clone(),
            port: *port,
            check: AddressCheck::Trusted,
        }),
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
            let host = canonical_host(&host);
            let check = match &app.allow {
                // No allow-list: any destination off the internal list.
                None => AddressCheck::External,
                Some(rules) => {
                    let admitting: Vec<&AllowRule> =
                        rules.iter().filter(|r| r.admits(&host, port)).collect();
                    if admitting.is_empty() {
                        return Err(DestinationError::NotAllowed(host_port(&host, port)));
                    }
                    if admitting
                        .iter()
                        .any(|r| r.reaches_own_host(app.allow_internal))
                    {
                        AddressCheck::OwnHost
                    } else {
                        AddressCheck::External
                    }
                }
            };
            Ok(Destination { host, port, check })
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

/// Dials `dest` within `timeout`: a trusted one as [`dial`] does; otherwise its name is
/// resolved here, every address is checked (see [`AddressCheck`]) and only the checked
/// addresses are dialled, so the name cannot resolve to something else between the check and
/// the connection (DNS rebinding).
pub(crate) async fn dial_destination(
    dest: &Destination,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    if dest.check == AddressCheck::Trusted {
        return dial(&dest.host, dest.port, timeout).await;
    }
    let destination = host_port(&dest.host, dest.port);
    let timed_out = || DialError::Timeout {
        destination: destination.clone(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let resolved: Vec<std::net::SocketAddr> = tokio::time::timeout_at(
        deadline,
        tokio::net::lookup_host((dest.host.as_str(), dest.port)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|source| DialError::Connect {
        destination: destination.clone(),
        source,
    })?
    .collect();
    let mut refused = None;
    let permitted: Vec<_> = resolved
        .into_iter()
        .filter(|a| match dest.check.refuses(a.ip()) {
            Some(why) => {
                refused.get_or_insert((a.ip(), why));
                false
            }
            None => true,
        })
        .collect();
    if permitted.is_empty() {
        let Some((address, why)) = refused else {
            return Err(DialError::NoAddress { destination });
        };
        return Err(DialError::Internal {
            destination,
            address,
            why,
        });
    }
    let mut last = None;
    for addr in permitted {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::gateway::config::GatewayConfig;

    fn bastion(allow: Option<&[&str]>) -> Application {
        bastion_with(allow, false)
    }

    fn bastion_with(allow: Option<&[&str]>, allow_internal: bool) -> Application {
        let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
        let mut app = crate::gateway::ApplicationConfig::new("b.example", "aud", Origin::Bastion);
        app.allow = allow.map(|a| a.iter().map(|s| (*s).to_owned()).collect());
        app.allow_internal = allow_internal;
        app.service_tokens.push(crate::gateway::ServiceTokenConfig {
            client_id: "c".into(),
            client_secret: crate::gateway::SecretSource::Value(crate::secret::Secret::new("s")),
        });
        config.applications.push(app);
        let resolved = config.resolve().unwrap();
        let app = resolved.applications.get("b.example").unwrap();
        Application {
            hostname: app.hostname.clone(),
            aud: app.aud.clone(),
            origin: app.origin.clone(),
            socks: app.socks,
            allow: app.allow.clone(),
            allow_internal: app.allow_internal,
            jwks: None,
            issuer: None,
            service_tokens: Vec::new(),
        }
    }

    fn check(app: &Application, dest: &str) -> Result<AddressCheck, DestinationError> {
        let mut headers = HeaderMap::new();
        headers.insert(JUMP_DESTINATION_HEADER, dest.parse().unwrap());
        destination(app, &headers).map(|d| d.check)
    }

    /// Only an IP address entry, or a `host:port` entry of an application with
    /// `allow_internal`, lets a destination reach the gateway's own host; a name entry without
    /// the opt-in, a host entry or a suffix pattern has every resolved address checked, as a
    /// bastion without an allow-list does (the DNS rebinding case of issue 16's review).
    #[test]
    fn only_an_address_entry_or_the_opt_in_reaches_the_own_host() {
        let open = bastion(None);
        assert_eq!(
            check(&open, "db.example:5432").unwrap(),
            AddressCheck::External
        );
        let entries = [
            "api.internal:6443",
            "127.0.0.1",
            "[0:0::1]:6443",
            "cache.internal",
            "*.k8s.internal",
        ];
        let listed = bastion(Some(&entries));
        let opted_in = bastion_with(Some(&entries), true);
        for (dest, without, with) in [
            (
                "api.internal:6443",
                AddressCheck::External,
                AddressCheck::OwnHost,
            ),
            (
                "127.0.0.1:8080",
                AddressCheck::OwnHost,
                AddressCheck::OwnHost,
            ),
            // The same address written another way is the same entry.
            ("[::1]:6443", AddressCheck::OwnHost, AddressCheck::OwnHost),
            (
                "[0000::0001]:6443",
                AddressCheck::OwnHost,
                AddressCheck::OwnHost,
            ),
            (
                "cache.internal:6379",
                AddressCheck::External,
                AddressCheck::External,
            ),
            (
                "evil.k8s.internal:6443",
                AddressCheck::External,
                AddressCheck::External,
            ),
        ] {
            assert_eq!(check(&listed, dest).unwrap(), without, "{dest}");
            assert_eq!(check(&opted_in, dest).unwrap(), with, "{dest} opted in");
        }
        assert!(matches!(
            check(&listed, "api.internal:22"),
            Err(DestinationError::NotAllowed(_))
        ));
    }

    /// Link-local and metadata addresses are refused under every check but a `tcp://`
    /// origin's; the gateway's own host only under [`AddressCheck::External`].
    #[test]
    fn metadata_is_refused_even_where_the_own_host_is_allowed() {
        for text in [
            "169.254.169.254",
            "fd00:ec2::254",
            "fd20:ce::254",
            "fd00:c1::a9fe:a9fe",
            "::ffff:0:169.254.169.254",
            "100.100.100.200",
        ] {
            let ip = text.parse().unwrap();
            assert!(AddressCheck::OwnHost.refuses(ip).is_some(), "{text}");
            assert!(AddressCheck::External.refuses(ip).is_some(), "{text}");
            assert_eq!(AddressCheck::Trusted.refuses(ip), None, "{text}");
        }
        for text in ["127.0.0.1", "::1", "0.0.0.0"] {
            let ip = text.parse().unwrap();
            assert_eq!(AddressCheck::OwnHost.refuses(ip), None, "{text}");
            assert!(AddressCheck::External.refuses(ip).is_some(), "{text}");
        }
    }

    /// A name under an allowed suffix whose record points at loopback is refused after
    /// resolution (here `localhost`, which every resolver maps to loopback).
    #[tokio::test]
    async fn a_checked_name_that_resolves_to_loopback_is_refused_before_any_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dest = Destination {
            host: "localhost".into(),
            port,
            check: AddressCheck::External,
        };
        let err = dial_destination(&dest, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                DialError::Internal {
                    why: internal::Internal::Loopback,
                    ..
                }
            ),
            "{err:?}"
        );
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection reached the listener");
        // Where the own host is allowed, the same destination is dialled.
        let dest = Destination {
            check: AddressCheck::OwnHost,
            ..dest
        };
        dial_destination(&dest, Duration::from_secs(2))
            .await
            .unwrap();
    }

    /// Where the own host is allowed, a metadata address is still refused, before any
    /// connection is tried.
    #[tokio::test]
    async fn the_own_host_check_still_refuses_metadata_without_dialling() {
        let dest = Destination {
            host: "169.254.169.254".into(),
            port: 80,
            check: AddressCheck::OwnHost,
        };
        let started = std::time::Instant::now();
        let err = dial_destination(&dest, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                DialError::Internal {
                    why: internal::Internal::LinkLocal,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
