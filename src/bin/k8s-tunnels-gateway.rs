//! `k8s-tunnels-gateway`: the server side of the tunnel protocol.

fn main() {}
