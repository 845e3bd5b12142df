//! The addresses a bastion does not dial: the gateway's own host and what only its host or
//! its cloud can reach. One list for every bastion mode, checked on each address a destination
//! resolves to, and the address checked is the one dialled, so no name (a DNS record under an
//! allowed suffix, a rebinding answer) can smuggle one past it.
//!
//! The list:
//!
//! - this host: loopback, "this network" (`0.0.0.0/8`, `::`, which Linux connects to the
//!   host itself) and **every address of the host's interfaces**, which reach whatever is
//!   bound to `0.0.0.0`;
//! - link-local (`169.254.0.0/16`, `fe80::/10`): the metadata service of AWS, GCP, Azure and
//!   Oracle at `169.254.169.254`, AWS's resolver at `.253`;
//! - other clouds' metadata and host endpoints: AWS over IPv6 (`fd00:ec2::/32`, the service
//!   at `fd00:ec2::254`), GCP over IPv6 (`fd20:ce::254`), Oracle over IPv6
//!   (`fd00:c1::a9fe:a9fe`), Alibaba (`100.100.100.200`), Azure's WireServer (`168.63.129.16`);
//! - multicast, broadcast and `240.0.0.0/4`;
//! - each of these inside an IPv6 address that carries an IPv4 one: IPv4-mapped
//!   (`::ffff:127.0.0.1`), IPv4-translated (`::ffff:0:127.0.0.1`), IPv4-compatible
//!   (`::7f00:1`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) and 6to4 (`2002::/16`); and all of
//!   Teredo (`2001::/32`), whose addresses carry an IPv4 address in two places, one of them
//!   scrambled.
//!
//! An allow-list may let a bastion reach the first group, this host (see
//! [`Internal::always_refused`]); never the others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::own_host;

/// Why an address is internal (said in the refusal and the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Internal {
    /// Loopback.
    Loopback,
    /// The unspecified address or "this network", which reach this host.
    Unspecified,
    /// An address of one of this host's interfaces.
    OwnAddress,
    /// Link-local, where the common cloud metadata service lives.
    LinkLocal,
    /// A cloud's metadata or host service outside link-local.
    Metadata,
    /// Multicast, broadcast or reserved.
    NotUnicast,
    /// Teredo, an IPv6 tunnel whose addresses carry IPv4 ones.
    Teredo,
}

impl Internal {
    /// Whether no configuration lets a bastion dial it: link-local and metadata (the cloud's
    /// credentials), and what is no unicast host at all. Only this host's own addresses
    /// (loopback, "this network", its interfaces) may be admitted on purpose, by an
    /// allow-list entry (see `docs/gateway.md`, "Bastion destinations").
    pub(crate) fn always_refused(self) -> bool {
        match self {
            Self::Loopback | Self::Unspecified | Self::OwnAddress => false,
            Self::LinkLocal | Self::Metadata | Self::NotUnicast | Self::Teredo => true,
        }
    }
}

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::Unspecified => "unspecified (this host)",
            Self::OwnAddress => "an address of the gateway's host",
            Self::LinkLocal => "link-local (cloud metadata)",
            Self::Metadata => "a cloud metadata endpoint",
            Self::NotUnicast => "not unicast",
            Self::Teredo => "Teredo (carries an IPv4 address)",
        })
    }
}

/// Alibaba Cloud's metadata service and Azure's WireServer: outside link-local, reachable from
/// every instance.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// GCP's and Oracle's metadata services over IPv6, in unique-local space those clouds also
/// hand out to networks, so the addresses themselves and not their prefixes. (AWS's whole
/// `fd00:ec2::/32` is its own: see [`v6_range`].)
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe),
];

/// Whether `ip` is internal to the gateway's host or its cloud, and why.
pub(crate) fn classify(ip: IpAddr) -> Option<Internal> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4).or_else(|| own_address(ip)),
        IpAddr::V6(v6) => embedded_v4(v6)
            .into_iter()
            .find_map(|v4| classify(IpAddr::V4(v4)))
            .or_else(|| v6_range(v6))
            .or_else(|| own_address(ip)),
    }
}

fn v4_range(v4: Ipv4Addr) -> Option<Internal> {
    let first = v4.octets()[0];
    if v4.is_loopback() {
        Some(Internal::Loopback)
    } else if first == 0 {
        Some(Internal::Unspecified)
    } else if v4.is_link_local() {
        Some(Internal::LinkLocal)
    } else if METADATA_V4.contains(&v4) {
        Some(Internal::Metadata)
    } else if v4.is_multicast() || v4.is_broadcast() || first >= 240 {
        Some(Internal::NotUnicast)
    } else {
        None
    }
}

fn v6_range(v6: Ipv6Addr) -> Option<Internal> {
    let s = v6.segments();
    if v6.is_loopback() {
        Some(Internal::Loopback)
    } else if v6.is_unspecified() {
        Some(Internal::Unspecified)
    } else if v6.is_unicast_link_local() {
        Some(Internal::LinkLocal)
    } else if (s[0] == 0xfd00 && s[1] == 0x0ec2) || METADATA_V6.contains(&v6) {
        Some(Internal::Metadata)
    } else if s[0] == 0x2001 && s[1] == 0 {
        // Teredo: the server's IPv4 address in bits 32..64 and the client's, inverted, in the
        // last 32; no bastion has business with a Teredo client, so the whole /32 goes.
        Some(Internal::Teredo)
    } else if v6.is_multicast() {
        Some(Internal::NotUnicast)
    } else {
        None
    }
}

/// The IPv4 addresses an IPv6 address carries, where a stack or a translator on the path may
/// deliver it as IPv4: mapped, translated (SIIT's `::ffff:0:a.b.c.d`), compatible
/// (deprecated, still routed by tunnels), NAT64 (the well-known /96, and the local-use /48
/// read both ways operators lay it out) and 6to4. (Teredo is refused whole: [`v6_range`].)
fn embedded_v4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = v6.octets();
    let s = v6.segments();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return vec![v4];
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return vec![last];
    }
    if s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        return vec![last];
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return vec![last];
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        // Operators lay out the local-use /48 as RFC 6052's /48 (the address in bits 48..64
        // and 72..88) or as a /96 inside it (the last 32 bits, bits 48..96 zero); no
        // translator forwards to 0.0.0.0/8, so a zero first octet means the second.
        return vec![if o[6] == 0 {
            last
        } else {
            Ipv4Addr::new(o[6], o[7], o[9], o[10])
        }];
    }
    if s[0] == 0x2002 {
        return vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])];
    }
    Vec::new()
}

/// Whether `ip` is one of this host's own addresses ([`own_host`] asks the system).
fn own_address(ip: IpAddr) -> Option<Internal> {
    own_host::is_own_address(ip).then_some(Internal::OwnAddress)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn of(text: &str) -> Option<Internal> {
        classify(text.parse().unwrap())
    }

    #[test]
    fn the_list_holds_what_the_review_found_missing() {
        for (text, want) in [
            ("127.0.0.1", Internal::Loopback),
            ("127.3.2.1", Internal::Loopback),
            ("0.0.0.0", Internal::Unspecified),
            ("0.1.2.3", Internal::Unspecified),
            ("169.254.169.254", Internal::LinkLocal),
            ("100.100.100.200", Internal::Metadata),
            ("168.63.129.16", Internal::Metadata),
            ("255.255.255.255", Internal::NotUnicast),
            ("224.0.0.1", Internal::NotUnicast),
            ("240.0.0.1", Internal::NotUnicast),
            ("::1", Internal::Loopback),
            ("::", Internal::Unspecified),
            ("fe80::1", Internal::LinkLocal),
            ("fd00:ec2::254", Internal::Metadata),
            ("fd20:ce::254", Internal::Metadata),
            ("fd00:c1::a9fe:a9fe", Internal::Metadata),
            ("ff02::1", Internal::NotUnicast),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Internal::Teredo),
            ("2001::1", Internal::Teredo),
            // IPv4 inside IPv6.
            ("::ffff:127.0.0.1", Internal::Loopback),
            ("::ffff:169.254.169.254", Internal::LinkLocal),
            ("::ffff:0:127.0.0.1", Internal::Loopback),
            ("::ffff:0:169.254.169.254", Internal::LinkLocal),
            ("::ffff:0:100.100.100.200", Internal::Metadata),
            ("::7f00:1", Internal::Loopback),
            ("::a9fe:a9fe", Internal::LinkLocal),
            ("64:ff9b::7f00:1", Internal::Loopback),
            ("64:ff9b::a9fe:a9fe", Internal::LinkLocal),
            ("64:ff9b::6464:64c8", Internal::Metadata),
            ("64:ff9b:1:7f00:0:100::", Internal::Loopback),
            ("64:ff9b:1::a9fe:a9fe", Internal::LinkLocal),
            ("2002:7f00:1::1", Internal::Loopback),
            ("2002:a9fe:a9fe::", Internal::LinkLocal),
        ] {
            assert_eq!(of(text), Some(want), "{text}");
        }
    }

    #[test]
    fn ordinary_destinations_pass() {
        for text in [
            "10.0.0.10",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "fd12:3456::1",
            "64:ff9b::a00:a",
            "64:ff9b:1::a00:a",
            "64:ff9b:1:a00:0:a00::",
            "::ffff:10.0.0.10",
            "::ffff:0:10.0.0.10",
            // Beside the metadata addresses, in the same clouds' unique-local space.
            "fd20:ce::253",
            "fd20:ce:1::254",
            "fd00:c1::a9fe:a9fd",
            // Next to Teredo's /32.
            "2001:1::1",
        ] {
            assert_eq!(of(text), None, "{text}");
        }
    }

    /// The host's own interface addresses, which reach every service bound to 0.0.0.0, are
    /// internal, also inside IPv6; found here the way the kernel picks a source address.
    #[test]
    fn the_hosts_own_interface_addresses_are_internal() {
        let own = own_non_loopback_address();
        assert_eq!(classify(own), Some(Internal::OwnAddress), "{own}");
        if let IpAddr::V4(v4) = own {
            assert_eq!(
                classify(IpAddr::V6(v4.to_ipv6_mapped())),
                Some(Internal::OwnAddress)
            );
            assert_eq!(
                classify(IpAddr::V6(v4.to_ipv6_compatible())),
                Some(Internal::OwnAddress)
            );
        }
    }

    /// A non-loopback address of this host: the source address the kernel picks for a route
    /// out (a UDP `connect` sends nothing). Fails loudly on a host without one.
    fn own_non_loopback_address() -> IpAddr {
        for target in [
            "192.0.2.1:9",
            "198.51.100.1:9",
            "8.8.8.8:53",
            "[2001:db8::1]:9",
        ] {
            let target: std::net::SocketAddr = target.parse().unwrap();
            let bind: std::net::SocketAddr = if target.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let Ok(socket) = std::net::UdpSocket::bind(bind) else {
                continue;
            };
            if socket.connect(target).is_ok()
                && let Ok(local) = socket.local_addr()
                && !local.ip().is_loopback()
                && !local.ip().is_unspecified()
            {
                return local.ip();
            }
        }
        panic!("this test needs a non-loopback interface address and a route out");
    }
}
