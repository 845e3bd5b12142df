//! The demo lab: a gateway and fake Kubernetes API servers on loopback.

pub mod pki;
pub mod apiserver;
