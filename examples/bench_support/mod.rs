//! The benchmark's parts: the origin server and the direct relay ([`origin`]), the tunnel world
//! on loopback ([`world`]), the measuring client ([`client`]) and the report ([`report`]).

pub mod client;
pub mod origin;
pub mod report;
pub mod world;
