//! The k8s-tunnels window process (`k8s-tunnels-window`): Tauri and the webview, started by the
//! tray process (`k8s-tunnels-desktop`) when the window is opened and gone when it is closed,
//! so the webview's memory goes with it. Its [`commands`] are one-line adapters that relay the
//! UI's commands to the tray process over its control socket
//! ([`k8s_tunnels_desktop::control`]); [`window`] re-emits what it hears there to the webview.

pub mod commands;
pub mod window;
