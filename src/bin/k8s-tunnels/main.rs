//! `k8s-tunnels`: the command-line front end.

fn main() {}
