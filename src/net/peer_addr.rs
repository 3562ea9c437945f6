//! A connection's peer address in 16 bytes instead of `SocketAddr`'s 32.
//!
//! Every open connection holds its peer's address (limits, bans, logs,
//! the services' `peer_addr`), so its size is paid per idle connection.
//! An IPv4 address and port (6 bytes) are kept inline; an IPv6 one (28
//! bytes with its flow info and scope id) is boxed, so IPv6 peers pay a
//! small allocation and IPv4 peers nothing. Either way the address comes
//! back exactly as it went in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address as a connection keeps it; [`get`](Self::get) gives
/// the `SocketAddr` back.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PeerAddr(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    V4 { ip: [u8; 4], port: u16 },
    V6(Box<SocketAddrV6>),
}

impl PeerAddr {
    /// The address as it was stored.
    #[inline]
    pub(crate) fn get(&self) -> SocketAddr {
        match &self.0 {
            Repr::V4 { ip, port } => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(*ip), *port)),
            Repr::V6(addr) => SocketAddr::V6(**addr),
        }
    }

    /// The address's IP.
    #[inline]
    pub(crate) fn ip(&self) -> IpAddr {
        self.get().ip()
    }
}

impl From<SocketAddr> for PeerAddr {
    #[inline]
    fn from(addr: SocketAddr) -> PeerAddr {
        PeerAddr(match addr {
            SocketAddr::V4(v4) => Repr::V4 {
                ip: v4.ip().octets(),
                port: v4.port(),
            },
            SocketAddr::V6(v6) => Repr::V6(Box::new(v6)),
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn round_trip(addr: SocketAddr) {
        let peer = PeerAddr::from(addr);
        assert_eq!(peer.get(), addr);
        assert_eq!(peer.ip(), addr.ip());
        assert_eq!(peer.to_string(), addr.to_string());
        assert_eq!(format!("{peer:?}"), format!("{addr:?}"));
        assert_eq!(peer.clone(), peer);
    }

    #[test]
    fn is_half_a_socket_addr() {
        assert_eq!(std::mem::size_of::<PeerAddr>(), 16);
        assert_eq!(std::mem::size_of::<SocketAddr>(), 32);
    }

    #[test]
    fn ipv4_round_trips_at_the_edges() {
        for ip in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(192, 0, 2, 7),
            Ipv4Addr::new(10, 255, 0, 1),
        ] {
            for port in [0, 1, 80, 443, 32768, u16::MAX] {
                round_trip(SocketAddr::V4(SocketAddrV4::new(ip, port)));
            }
        }
    }

    #[test]
    fn ipv6_keeps_flow_info_and_scope_id() {
        let mapped = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped();
        for ip in [
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::LOCALHOST,
            mapped,
            "fe80::1".parse().unwrap(),
            "2001:db8::ff00:42:8329".parse().unwrap(),
            Ipv6Addr::from(u128::MAX),
        ] {
            for (flow, scope) in [(0, 0), (1, 2), (0xfffff, u32::MAX), (u32::MAX, 7)] {
                for port in [0, 8080, u16::MAX] {
                    round_trip(SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)));
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn every_address_round_trips(addr in proptest::prelude::any::<SocketAddr>()) {
            round_trip(addr);
        }
    }

    #[test]
    fn a_v4_mapped_v6_peer_stays_v6() {
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        let addr = SocketAddr::V6(SocketAddrV6::new(mapped, 9, 0, 0));
        let peer = PeerAddr::from(addr);
        assert!(peer.get().is_ipv6());
        assert_ne!(
            peer,
            PeerAddr::from("127.0.0.1:9".parse::<SocketAddr>().unwrap())
        );
    }

    #[test]
    fn equal_only_when_every_field_is() {
        let a: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let SocketAddr::V6(mut b) = a else {
            unreachable!()
        };
        b.set_scope_id(3);
        assert_ne!(PeerAddr::from(a), PeerAddr::from(SocketAddr::V6(b)));
        assert_ne!(
            PeerAddr::from("192.0.2.1:1".parse::<SocketAddr>().unwrap()),
            PeerAddr::from("192.0.2.1:2".parse::<SocketAddr>().unwrap())
        );
    }
}
