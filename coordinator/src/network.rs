//! Failure domains by network: nodes whose public addresses share an IPv4
//! /24 or an IPv6 /64 sit behind one router, one uplink, one provider
//! outage. Placement counts such nodes as one failure domain (as Storj does
//! with /24s): never two packets of one stripe there.
//!
//! Owns [`NetworkDomain`] and the rule that maps an address to it
//! ([`NetworkDomain::of`]). Loopback, private (RFC 1918, CGNAT 100.64/10,
//! IPv6 unique-local fc00::/7), link-local, unspecified, broadcast,
//! multicast and reserved ranges have no domain: local grids and
//! test labs keep working, and a node whose only known address is private is
//! not constrained by this rule. This module only classifies; where an
//! address comes from (the connection the manager sees, or the node's
//! identify-confirmed external addresses) is the overlay's business.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The public network a node's address belongs to: an IPv4 /24 or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NetworkDomain {
    /// The first three octets of a public IPv4 address.
    V4([u8; 3]),
    /// The first eight bytes of a public IPv6 address.
    V6([u8; 8]),
}

impl NetworkDomain {
    /// The failure domain of `ip`, or `None` when the address is loopback,
    /// private or otherwise not globally routable (exempt from the rule).
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn of(ip: IpAddr) -> Option<NetworkDomain> {
        match ip {
            IpAddr::V4(v4) => v4_domain(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4_domain(v4),
                None => v6_domain(v6),
            },
        }
    }
}

/// Whether `ip` is a public (globally routable) address, the kind placement
/// groups into failure domains and AutoNAT confirms.
pub fn is_public(ip: IpAddr) -> bool {
    NetworkDomain::of(ip).is_some()
}

fn v4_domain(ip: Ipv4Addr) -> Option<NetworkDomain> {
    let o = ip.octets();
    let exempt = ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        // Carrier-grade NAT, 100.64.0.0/10: shared by many subscribers.
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // Reserved 240.0.0.0/4.
        || o[0] >= 240;
    (!exempt).then_some(NetworkDomain::V4([o[0], o[1], o[2]]))
}

fn v6_domain(ip: Ipv6Addr) -> Option<NetworkDomain> {
    let s = ip.segments();
    let exempt = ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7 and link-local fe80::/10.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80;
    if exempt {
        return None;
    }
    let b = ip.octets();
    Some(NetworkDomain::V6([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

impl fmt::Display for NetworkDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkDomain::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            NetworkDomain::V6(p) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(p);
                write!(f, "{}/64", Ipv6Addr::from(full))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_v4_groups_by_slash_24() {
        let a = NetworkDomain::of(ip("203.0.113.7")).unwrap();
        let b = NetworkDomain::of(ip("203.0.113.250")).unwrap();
        let c = NetworkDomain::of(ip("203.0.114.7")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "203.0.113.0/24");
    }

    #[test]
    fn public_v6_groups_by_slash_64() {
        let a = NetworkDomain::of(ip("2001:db8:1:2::1")).unwrap();
        let b = NetworkDomain::of(ip("2001:db8:1:2:ffff::9")).unwrap();
        let c = NetworkDomain::of(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let mapped = NetworkDomain::of(ip("::ffff:198.51.100.4")).unwrap();
        assert_eq!(mapped, NetworkDomain::of(ip("198.51.100.200")).unwrap());
    }

    #[test]
    fn loopback_and_private_ranges_are_exempt() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert_eq!(NetworkDomain::of(ip(s)), None, "{s}");
            assert!(!is_public(ip(s)));
        }
        assert!(is_public(ip("8.8.8.8")));
    }
}
