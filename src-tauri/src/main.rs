//! Starts the k8s-tunnels desktop app (see the library for everything it does).
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]
fn main() {
    k8s_tunnels_desktop::run()
}
