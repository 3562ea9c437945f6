//! [`Source`]: the unit the per-source table counts by, an IPv4 address or
//! an IPv6 /64, in 9 bytes.
//!
//! Alone because more than the table counts by it: the per-source UDP
//! rates and the suppressed log lines key on it too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The unit the table counts by: an IPv4 address, or the /64 prefix of an
/// IPv6 address.
///
/// One IPv6 host normally owns a whole /64 (SLAAC and privacy addresses
/// pick the low 64 bits freely), so counting per address would let one
/// host open 2^64 "sources". An IPv4-mapped address (`::ffff:a.b.c.d`, how
/// a dual-stack socket reports IPv4 peers) is the IPv4 address it maps:
/// its /64 would otherwise lump every IPv4 peer into one source.
///
/// Someone owning a larger block (a /48 has 65,536 /64s) still has many
/// sources; the table's bound, not the per-source cap, is the defence
/// there.
///
/// ```
/// use std::net::IpAddr;
/// use sockloop::limit::Source;
///
/// let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
/// assert_eq!(Source::from(a), Source::from(b));
/// assert_eq!(Source::from(a).to_string(), "2001:db8:1:2::/64");
///
/// let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
/// assert_eq!(Source::from(mapped).to_string(), "192.0.2.7");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(SourceKey);

/// Byte arrays keep the key at 9 bytes (`u32`/`u64` would pad it to 16).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(SourceKey::V4(v4.octets())),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source(SourceKey::V6Prefix(prefix))
            }
        }
    }
}

/// `192.0.2.7`, or `2001:db8:1:2::/64`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SourceKey::V4(octets) => Ipv4Addr::from(octets).fmt(f),
            SourceKey::V6Prefix(prefix) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(&prefix);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({self})")
    }
}

/// The block a [`Source`] belongs to, for bans that cover many sources at
/// once: an IPv4 /24, or an IPv6 /48 (a site's usual allocation, 65,536
/// /64s).
///
/// ```
/// use std::net::IpAddr;
/// use sockloop::limit::Source;
///
/// let a: IpAddr = "192.0.2.7".parse().unwrap();
/// assert_eq!(Source::from(a).prefix().to_string(), "192.0.2.0/24");
/// let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
/// assert_eq!(Source::from(b).prefix().to_string(), "2001:db8:1::/48");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix(PrefixKey);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PrefixKey {
    V4([u8; 3]),
    V6([u8; 6]),
}

impl Source {
    /// The block this source is in.
    pub fn prefix(&self) -> Prefix {
        match self.0 {
            SourceKey::V4([a, b, c, _]) => Prefix(PrefixKey::V4([a, b, c])),
            SourceKey::V6Prefix([a, b, c, d, e, f, ..]) => {
                Prefix(PrefixKey::V6([a, b, c, d, e, f]))
            }
        }
    }
}

/// `192.0.2.0/24`, or `2001:db8:1::/48`.
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            PrefixKey::V4([a, b, c]) => write!(f, "{}/24", Ipv4Addr::new(a, b, c, 0)),
            PrefixKey::V6(head) => {
                let mut octets = [0; 16];
                octets[..6].copy_from_slice(&head);
                write!(f, "{}/48", Ipv6Addr::from(octets))
            }
        }
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prefix({self})")
    }
}
