//! k8s-tunnels: reach every Kubernetes cluster behind Cloudflare Access.
//!
//! The library holds everything but the front ends: cluster discovery and the shared model
//! ([`inventory`], [`discovery`]) with the one [`listing`] of it every front end shows, the
//! tunnel ([`tunnel`]) and the [`engine`] that owns open tunnels, Access credentials
//! ([`access`]), the safe [`kubeconfig`] writer, persisted app [`state`], files only the user
//! can read ([`private_file`]), and the server side of the protocol ([`gateway`]) with the demo
//! [`lab`] built on it. The CLI and the desktop shell are thin front ends over
//! [`engine::Engine`] and the [`app::App`] facade.

pub mod access;
pub mod app;
pub mod config;
pub mod dirs;
pub mod discovery;
mod duration;
pub mod engine;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod inventory;
pub mod keychain;
pub mod kubeconfig;
#[cfg(feature = "lab")]
pub mod lab;
pub mod listing;
pub mod memory;
pub mod private_file;
pub mod secret;
pub mod signals;
pub mod state;
pub mod sync;
pub mod terminal;
pub mod timestamp;
pub mod tls;
pub mod tunnel;
pub mod wake;
pub mod wire;

/// Formats an error with its chain of sources, `outer: inner: root`, for logs and events.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Many errors repeat their source in their own message; don't say it twice.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
