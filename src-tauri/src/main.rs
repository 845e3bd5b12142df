//! The k8s-tunnels window (see the library's `window`): started by the tray process when the
//! window is opened, and ends when it is closed.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]
fn main() {
    k8s_tunnels_window::window::run()
}
