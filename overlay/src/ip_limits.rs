//! Inbound connections per remote IP address and per subnet (SPEC R10).
//!
//! Owns [`IpLimits`], a connection-only [`NetworkBehaviour`] that counts
//! inbound connections (pending and established) by the remote address
//! they come from and denies one, before its handshake, when its IP already
//! has [`MAX_INBOUND_PER_IP`] or its /24 (IPv4) or /64 (IPv6)
//! [`MAX_INBOUND_PER_SUBNET`]. Identities are free, addresses are not: one
//! machine cannot take the inbound slots with fresh identities. Loopback is
//! exempt (local test grids and tools run many nodes on 127.0.0.1), and
//! private, link-local and unique-local addresses are exempt from the subnet
//! limit (a home LAN is one /24). Outbound connections are not counted. It
//! must not touch anything but its counters.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::ListenFailure;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

/// Inbound connections (pending and established) from one IP address.
pub const MAX_INBOUND_PER_IP: usize = 16;
/// Inbound connections from one /24 (IPv4) or /64 (IPv6).
pub const MAX_INBOUND_PER_SUBNET: usize = 64;

/// Why an inbound connection was denied.
#[derive(Debug, thiserror::Error)]
pub enum IpLimitExceeded {
    #[error("{ip} already has {limit} inbound connections")]
    PerIp { ip: IpAddr, limit: usize },
    #[error("subnet {subnet} already has {limit} inbound connections")]
    PerSubnet { subnet: IpAddr, limit: usize },
}

/// The first IP address of a multiaddr, if any.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The /24 (IPv4) or /64 (IPv6) network of `ip`, as its first address.
pub fn subnet_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4([a, b, c, 0].into())
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into())
        }
    }
}

fn exempt(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

fn local_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        // fc00::/7 (unique local) and fe80::/10 (link local).
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
    }
}

/// Counts inbound connections per IP and per subnet and denies past the limits.
#[derive(Debug)]
pub struct IpLimits {
    per_ip: usize,
    per_subnet: usize,
    by_connection: HashMap<ConnectionId, IpAddr>,
    by_ip: HashMap<IpAddr, usize>,
    by_subnet: HashMap<IpAddr, usize>,
}

impl Default for IpLimits {
    fn default() -> Self {
        Self::new(MAX_INBOUND_PER_IP, MAX_INBOUND_PER_SUBNET)
    }
}

impl IpLimits {
    pub fn new(per_ip: usize, per_subnet: usize) -> Self {
        IpLimits {
            per_ip,
            per_subnet,
            by_connection: HashMap::new(),
            by_ip: HashMap::new(),
            by_subnet: HashMap::new(),
        }
    }

    /// Inbound connections counted for `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Admits an inbound connection from `remote` (counting it) or says why not.
    pub fn admit(
        &mut self,
        connection: ConnectionId,
        remote: &Multiaddr,
    ) -> Result<(), IpLimitExceeded> {
        let Some(ip) = ip_of(remote).filter(|ip| !exempt(*ip)) else {
            return Ok(());
        };
        if self.count(ip) >= self.per_ip {
            return Err(IpLimitExceeded::PerIp {
                ip,
                limit: self.per_ip,
            });
        }
        let subnet = subnet_of(ip);
        let in_subnet = self.by_subnet.get(&subnet).copied().unwrap_or(0);
        if !local_network(ip) && in_subnet >= self.per_subnet {
            return Err(IpLimitExceeded::PerSubnet {
                subnet,
                limit: self.per_subnet,
            });
        }
        *self.by_ip.entry(ip).or_insert(0) += 1;
        *self.by_subnet.entry(subnet).or_insert(0) += 1;
        self.by_connection.insert(connection, ip);
        Ok(())
    }

    /// A counted connection failed or closed: its place is free again.
    pub fn release(&mut self, connection: ConnectionId) {
        let Some(ip) = self.by_connection.remove(&connection) else {
            return;
        };
        for (map, key) in [(&mut self.by_ip, ip), (&mut self.by_subnet, subnet_of(ip))] {
            if let Some(n) = map.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(connection_id, remote)
            .map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_and_one_subnet_get_only_their_share() {
        let mut limits = IpLimits::new(2, 3);
        let c = ConnectionId::new_unchecked;
        assert!(limits.admit(c(1), &addr("/ip4/203.0.113.7/tcp/1")).is_ok());
        assert!(
            limits
                .admit(c(2), &addr("/ip4/203.0.113.7/udp/2/quic-v1"))
                .is_ok()
        );
        assert!(matches!(
            limits.admit(c(3), &addr("/ip4/203.0.113.7/tcp/3")),
            Err(IpLimitExceeded::PerIp { limit: 2, .. })
        ));
        // Another address of the same /24: one more fits, then the subnet is full.
        assert!(limits.admit(c(4), &addr("/ip4/203.0.113.8/tcp/1")).is_ok());
        assert!(matches!(
            limits.admit(c(5), &addr("/ip4/203.0.113.9/tcp/1")),
            Err(IpLimitExceeded::PerSubnet { limit: 3, .. })
        ));
        // Another /24 is not affected.
        assert!(limits.admit(c(6), &addr("/ip4/203.0.114.9/tcp/1")).is_ok());
        // A closed connection gives its place back.
        limits.release(c(1));
        limits.release(c(1));
        assert_eq!(limits.count("203.0.113.7".parse().unwrap()), 1);
        assert!(limits.admit(c(7), &addr("/ip4/203.0.113.7/tcp/4")).is_ok());
    }

    #[test]
    fn ipv6_counts_by_64_and_loopback_and_lans_are_exempt() {
        let mut limits = IpLimits::new(1, 2);
        let c = ConnectionId::new_unchecked;
        assert!(
            limits
                .admit(c(1), &addr("/ip6/2001:db8:1:2::1/tcp/1"))
                .is_ok()
        );
        assert!(
            limits
                .admit(c(2), &addr("/ip6/2001:db8:1:2::2/tcp/1"))
                .is_ok()
        );
        assert!(
            limits
                .admit(c(3), &addr("/ip6/2001:db8:1:2::3/tcp/1"))
                .is_err()
        );
        assert!(
            limits
                .admit(c(4), &addr("/ip6/2001:db8:1:3::3/tcp/1"))
                .is_ok()
        );
        for i in 10..100 {
            assert!(limits.admit(c(i), &addr("/ip4/127.0.0.1/tcp/1")).is_ok());
            assert!(limits.admit(c(i + 1000), &addr("/ip6/::1/tcp/1")).is_ok());
        }
        // A private LAN is one /24 of many honest machines: only per IP.
        for i in 1..=5u8 {
            let a = addr(&format!("/ip4/192.168.1.{i}/tcp/1"));
            assert!(limits.admit(c(2000 + usize::from(i)), &a).is_ok());
        }
        assert!(
            limits
                .admit(c(3000), &addr("/ip4/192.168.1.1/tcp/2"))
                .is_err()
        );
        // An address without an IP (e.g. a relay circuit) is not counted.
        assert!(
            limits
                .admit(c(4000), &addr("/dns4/example.com/tcp/1"))
                .is_ok()
        );
    }
}
