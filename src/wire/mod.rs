//! The wire: what both ends of the tunnel speak, shared by the client ([`crate::tunnel`]) and
//! the gateway ([`crate::gateway`]), which import it and never each other.
//!
//! - [`access`]: the Access vocabulary (headers, cookie, paths);
//! - [`handshake`]: the WebSocket upgrade through hyper;
//! - [`stream`]: the WebSocket as a byte stream ([`WsStream`]), framed here ([`frame`]);
//! - [`keepalive`]: pings, dead-peer detection and TCP tuning;
//! - [`copy`]: the bidirectional pipe between a stream and its local end;
//! - [`read_ahead`]: large socket reads under TLS;
//! - [`counted`]: byte counters on a stream.
//!
//! Memory is the design constraint: an idle connection holds no payload or copy buffer; buffers
//! exist while data flows and are released when it stops.

pub mod access;
pub mod copy;
pub mod counted;
pub mod frame;
pub mod handshake;
pub mod keepalive;
pub mod read_ahead;
pub mod stream;

pub use frame::Role;
pub use stream::WsStream;

/// `User-Agent` the client sends to the edge (every upgrade, every Access call), like
/// `cloudflared/<version>`.
pub const USER_AGENT: &str = concat!("k8s-tunnels/", env!("CARGO_PKG_VERSION"));
