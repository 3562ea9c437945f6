//! Trusted sources: networks the per-source limits leave alone.
//!
//! A developer testing from the server's own machine, or a load
//! generator beside it, is not an attacker: banning 127.0.0.1 after ten
//! typos, or capping it at 256 connections, only gets in their way. So by
//! default loopback is trusted: its connections and datagrams skip the
//! per-source cap, the connect rate, the UDP rate, strikes and bans. The
//! global cap, frame limits, deadlines and output limits still apply to
//! everyone.
//!
//! A server behind a local reverse proxy sees every client as loopback;
//! there, trust nothing (`--trusted none`) until the proxy passes the real
//! address (the PROXY protocol).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// At most this many networks: the list is scanned on every accept.
pub const MAX_TRUSTED_NETS: usize = 64;

/// An IP network: an address and a prefix length, host bits zero.
///
/// ```
/// use sockloop::limit::Cidr;
///
/// let net: Cidr = "10.1.0.0/16".parse().unwrap();
/// assert!(net.contains("10.1.200.3".parse().unwrap()));
/// assert!(!net.contains("10.2.0.1".parse().unwrap()));
/// assert_eq!("192.0.2.7".parse::<Cidr>().unwrap().to_string(), "192.0.2.7/32");
/// assert!("10.1.0.1/16".parse::<Cidr>().is_err()); // host bits set
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address
    /// (`::ffff:127.0.0.1`, how a dual-stack socket reports IPv4 peers) is
    /// the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of an IPv4 address set.
fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The top `prefix` bits of an IPv6 address set.
fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`, or a bare address for that one address.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let bad = |why: &str| format!("bad network {text:?}: {why}");
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("expected ADDR/PREFIX, e.g. 10.0.0.0/8 or fd00::/8"))?;
        let longest = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            "" => longest,
            digits => digits
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= longest)
                .ok_or_else(|| bad(&format!("the prefix must be 0..={longest}")))?,
        };
        let net = Cidr { addr, prefix };
        if net.network() != addr {
            let base = net.network();
            return Err(bad(&format!(
                "host bits set; did you mean {base}/{prefix}?"
            )));
        }
        Ok(net)
    }
}

impl Cidr {
    /// The address with its host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) & mask_v4(self.prefix)).into(),
            IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) & mask_v6(self.prefix)).into(),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The networks exempt from per-source limits (at most
/// [`MAX_TRUSTED_NETS`]). `Default` is loopback: `127.0.0.0/8,::1/128`.
///
/// ```
/// use sockloop::limit::Trusted;
///
/// let loopback = Trusted::default();
/// assert!(loopback.contains("127.0.0.2".parse().unwrap()));
/// assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
/// assert!(!loopback.contains("192.0.2.1".parse().unwrap()));
/// assert!(!"none".parse::<Trusted>().unwrap().contains("127.0.0.1".parse().unwrap()));
/// assert_eq!(loopback.to_string(), "127.0.0.0/8,::1/128");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trusted {
    nets: Vec<Cidr>,
}

impl Trusted {
    /// Nothing is trusted: loopback is limited like anyone else.
    pub fn none() -> Trusted {
        Trusted { nets: Vec::new() }
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// The networks, in the order given.
    pub fn nets(&self) -> &[Cidr] {
        &self.nets
    }
}

impl Default for Trusted {
    fn default() -> Trusted {
        let v4 = Cidr {
            addr: Ipv4Addr::new(127, 0, 0, 0).into(),
            prefix: 8,
        };
        let v6 = Cidr {
            addr: Ipv6Addr::LOCALHOST.into(),
            prefix: 128,
        };
        Trusted { nets: vec![v4, v6] }
    }
}

impl FromStr for Trusted {
    type Err = String;

    /// `none`, or networks separated by commas.
    fn from_str(text: &str) -> Result<Trusted, String> {
        if text.trim() == "none" {
            return Ok(Trusted::none());
        }
        let nets = text
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, String>>()?;
        if nets.len() > MAX_TRUSTED_NETS {
            return Err(format!(
                "{} trusted networks: at most {MAX_TRUSTED_NETS}",
                nets.len()
            ));
        }
        Ok(Trusted { nets })
    }
}

/// `127.0.0.0/8,::1/128`, or `none`.
impl fmt::Display for Trusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nets.is_empty() {
            return f.write_str("none");
        }
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            net.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_match_exactly_their_addresses() {
        let net: Cidr = "192.0.2.128/25".parse().unwrap();
        assert!(net.contains(ip("192.0.2.128")));
        assert!(net.contains(ip("192.0.2.255")));
        assert!(!net.contains(ip("192.0.2.127")));
        assert!(!net.contains(ip("::ffff:192.0.2.127")));
        assert!(net.contains(ip("::ffff:192.0.2.200")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.255.255.255")) && !all.contains(ip("::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let one: Cidr = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
    }

    #[test]
    fn bad_networks_say_why() {
        let err = |text: &str| text.parse::<Cidr>().unwrap_err();
        assert_eq!(
            err("10.0.0.1/8"),
            "bad network \"10.0.0.1/8\": host bits set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            err("10.0.0.0/33"),
            "bad network \"10.0.0.0/33\": the prefix must be 0..=32"
        );
        assert_eq!(
            err("localhost"),
            "bad network \"localhost\": expected ADDR/PREFIX, e.g. 10.0.0.0/8 or fd00::/8"
        );
    }

    #[test]
    fn lists_parse_and_print_back() {
        let list: Trusted = "10.0.0.0/8, fd00::/8".parse().unwrap();
        assert_eq!(list.to_string(), "10.0.0.0/8,fd00::/8");
        assert!(list.contains(ip("10.9.9.9")) && list.contains(ip("fd12::1")));
        assert!(!list.contains(ip("127.0.0.1")));
        assert_eq!("none".parse::<Trusted>().unwrap(), Trusted::none());
        assert_eq!(Trusted::none().to_string(), "none");
        let many = vec!["10.0.0.0/8"; MAX_TRUSTED_NETS + 1].join(",");
        assert_eq!(
            many.parse::<Trusted>().unwrap_err(),
            "65 trusted networks: at most 64"
        );
    }
}
