//! Starts the k8s-tunnels desktop app: the tray process, which owns the tunnels (see the
//! library's `agent`). A second launch opens the running app's window instead.
fn main() {
    k8s_tunnels_desktop::agent::run()
}
