//! Starts the k8s-tunnels desktop app: the tray process, which owns the tunnels (see the
//! library's `agent`). A second launch opens the running app's window instead.
// A release build on Windows is a GUI program: started at login, it opens no console window.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]
fn main() {
    k8s_tunnels_desktop::agent::run()
}
