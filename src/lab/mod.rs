//! The demo lab: a gateway and fake Kubernetes API servers on loopback.

pub mod apiserver;
pub mod pki;
