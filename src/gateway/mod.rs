//! The server side of the tunnel protocol (a self-hostable stand-in for the Access edge).
