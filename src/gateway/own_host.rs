//! Whether an address is one of the gateway host's own, asked of the system each time, so that
//! interfaces that come and go need no list kept up to date.
//!
//! - Unix: a socket can be bound only to a local address (an interface's, or one routed to the
//!   host, like Linux's `local` routes), so a bind answers exactly what the kernel would
//!   deliver to this host. A host that lets anything be bound (`ip_nonlocal_bind`) has every
//!   address counted as its own, refused rather than none.
//! - Windows: the adapters' address table (`GetAdaptersAddresses`, through `if-addrs`).
//!   Windows refuses a bind to a foreign address as Unix does, but Wine, where the Windows
//!   build is run here, lets a datagram socket bind any address; the table is what both
//!   answer alike. A table that cannot be read counts every address as the host's.

use std::net::IpAddr;

/// Whether `ip` is an address of this host.
#[cfg(unix)]
pub(crate) fn is_own_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Whether `ip` is an address of this host.
#[cfg(windows)]
pub(crate) fn is_own_address(ip: IpAddr) -> bool {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().any(|i| i.ip() == ip),
        Err(error) => {
            tracing::warn!(%error, "cannot read this host's addresses: refusing {ip} as one of them");
            true
        }
    }
}
