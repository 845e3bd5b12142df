//! The tunnel: local SOCKS5 listener, WebSocket carrier and origin modes.

pub mod ws_stream;
