//! The PROXY protocol header (HAProxy's, versions 1 and 2), parsed once
//! into a validated [`ProxyHeader`]: how a load balancer in front of the
//! server tells it the real client's address. Sans-IO: bytes in, a header
//! and its length (or "need more", or why not) out.
//!
//! Version 1 is one text line, at most 107 bytes with its CRLF:
//! `PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\n` (or `PROXY UNKNOWN
//! ...\r\n`). Version 2 is binary: a 12-byte signature, a version and
//! command byte, a family and protocol byte, a 16-bit length, then the
//! addresses and optional TLVs (skipped). A v2 `LOCAL` command (a
//! balancer's health check) and an `UNKNOWN`/`UNSPEC`/unix header carry
//! no client address: the connection keeps its own.
//!
//! ```
//! use sockloop::net::proxy_header::{parse, Parsed, ProxyHeader};
//!
//! let line = b"PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\nhello";
//! let Ok(Parsed::Complete { header, len }) = parse(line) else { panic!() };
//! assert_eq!(len, line.len() - 5);
//! assert_eq!(
//!     header,
//!     ProxyHeader::Proxied {
//!         source: "192.0.2.1:51000".parse().unwrap(),
//!         destination: "198.51.100.7:443".parse().unwrap(),
//!     }
//! );
//! assert_eq!(parse(b"PROXY TCP4 192.0"), Ok(Parsed::Incomplete));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header begins with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every version 1 header begins with.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 line, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The longest version 2 header accepted, its 16 fixed bytes included:
/// room for IPv6 addresses and 500 bytes of TLVs. Longer is refused
/// ([`ProxyError::TooLong`]): no peer makes a connection hold more.
pub const V2_MAX: usize = 536;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was relayed for `source` (the real client), which
    /// connected to `destination`.
    Proxied {
        /// The real client.
        source: SocketAddr,
        /// The address it connected to, on the balancer.
        destination: SocketAddr,
    },
    /// No client address: a v2 `LOCAL` command (health check), v1
    /// `UNKNOWN`, or a v2 family with no IP address. The connection keeps
    /// its own peer address.
    Local,
}

/// The outcome of [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header so far, not yet complete: wait for more bytes.
    Incomplete,
    /// A complete header of `len` bytes; what follows is the client's.
    Complete {
        /// What the header says.
        header: ProxyHeader,
        /// Its length in bytes.
        len: usize,
    },
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// They begin with neither signature.
    NotProxy,
    /// No CRLF within [`V1_MAX`] bytes, or a v2 length past [`V2_MAX`].
    TooLong,
    /// A version 1 line that breaks the grammar; says which part.
    V1Syntax(&'static str),
    /// A version 2 version nibble other than 2.
    V2Version(u8),
    /// A version 2 command other than LOCAL (0) or PROXY (1).
    V2Command(u8),
    /// A version 2 family and protocol byte this server does not take
    /// (an IP family over a datagram protocol, or an unknown one).
    V2Family(u8),
    /// A version 2 address block shorter than its family needs.
    V2Length {
        /// Bytes its family's addresses take.
        needed: usize,
        /// Bytes the header's length field gave them.
        got: usize,
    },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("no PROXY protocol signature"),
            ProxyError::TooLong => write!(
                f,
                "PROXY header too long (v1 at most {V1_MAX} bytes, v2 at most {V2_MAX})"
            ),
            ProxyError::V1Syntax(what) => write!(f, "PROXY v1 header: bad {what}"),
            ProxyError::V2Version(v) => write!(f, "PROXY v2 header: version {v}"),
            ProxyError::V2Command(c) => write!(f, "PROXY v2 header: command {c}"),
            ProxyError::V2Family(b) => write!(f, "PROXY v2 header: family/protocol {b:#04x}"),
            ProxyError::V2Length { needed, got } => write!(
                f,
                "PROXY v2 header: {got} address bytes where {needed} are needed"
            ),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses the PROXY header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    if bytes.starts_with(&V2_SIGNATURE) {
        return parse_v2(bytes);
    }
    if bytes.starts_with(V1_PREFIX) {
        return parse_v1(bytes);
    }
    if !bytes.is_empty() && (V2_SIGNATURE.starts_with(bytes) || V1_PREFIX.starts_with(bytes)) {
        return Ok(Parsed::Incomplete);
    }
    Err(ProxyError::NotProxy)
}

/// Whether `bytes` begin like a PROXY header (`Some(true)`), cannot be
/// one (`Some(false)`), or are too short to tell (`None`): how a
/// connection from a peer that may not send one is checked.
pub fn begins_header(bytes: &[u8]) -> Option<bool> {
    match parse(bytes) {
        Err(ProxyError::NotProxy) => Some(false),
        Ok(Parsed::Incomplete) if bytes.len() < V1_PREFIX.len() => None,
        Ok(Parsed::Incomplete) if !bytes.starts_with(V1_PREFIX) && bytes.len() < 12 => None,
        _ => Some(true),
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        if bytes.len() >= V1_MAX {
            return Err(ProxyError::TooLong);
        }
        // A bare LF or CR not followed by LF can never become a header.
        if let Some(i) = window.iter().position(|&b| b == b'\n' || b == b'\r') {
            if window[i] == b'\n' || i + 1 < window.len() {
                return Err(ProxyError::V1Syntax("line end"));
            }
        }
        return Ok(Parsed::Incomplete);
    };
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..end])
        .map_err(|_| ProxyError::V1Syntax("characters"))?;
    if line.contains(['\r', '\n']) {
        return Err(ProxyError::V1Syntax("line end"));
    }
    let mut fields = line.split(' ');
    let header = match fields.next() {
        Some("UNKNOWN") => ProxyHeader::Local, // the rest is ignored
        Some(family @ ("TCP4" | "TCP6")) => {
            let v6 = family == "TCP6";
            let mut next = |what| fields.next().ok_or(ProxyError::V1Syntax(what));
            let source = v1_ip(next("source address")?, v6)?;
            let destination = v1_ip(next("destination address")?, v6)?;
            let source_port = v1_port(next("source port")?)?;
            let destination_port = v1_port(next("destination port")?)?;
            if fields.next().is_some() {
                return Err(ProxyError::V1Syntax("trailing field"));
            }
            ProxyHeader::Proxied {
                source: SocketAddr::new(source, source_port),
                destination: SocketAddr::new(destination, destination_port),
            }
        }
        _ => return Err(ProxyError::V1Syntax("protocol")),
    };
    Ok(Parsed::Complete {
        header,
        len: end + 2,
    })
}

fn v1_ip(text: &str, v6: bool) -> Result<IpAddr, ProxyError> {
    let ip = match v6 {
        false => text.parse::<Ipv4Addr>().map(IpAddr::V4),
        true => text.parse::<Ipv6Addr>().map(IpAddr::V6),
    };
    ip.map_err(|_| ProxyError::V1Syntax("address"))
}

/// Decimal, 0 to 65535, no sign, no leading zero.
fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse() {
        Ok(port) if digits && !leading_zero => Ok(port),
        _ => Err(ProxyError::V1Syntax("port")),
    }
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(fixed) = bytes.get(..16) else {
        return Ok(Parsed::Incomplete);
    };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::V2Version(version));
    }
    let family = fixed[13];
    let block = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = 16 + block;
    if len > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    let local = match command {
        0 => true,
        1 => false,
        other => return Err(ProxyError::V2Command(other)),
    };
    let needed = match family {
        0x00 | 0x31 | 0x32 => 0, // UNSPEC, unix: no IP address
        0x11 => 12,
        0x21 => 36,
        other => return Err(ProxyError::V2Family(other)),
    };
    if block < needed {
        return Err(ProxyError::V2Length { needed, got: block });
    }
    let Some(addresses) = bytes.get(16..len) else {
        return Ok(Parsed::Incomplete);
    };
    let header = match family {
        _ if local => ProxyHeader::Local,
        0x11 => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&addresses[at..at + 4]).unwrap());
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        0x21 => {
            let ip =
                |at: usize| IpAddr::from(<[u8; 16]>::try_from(&addresses[at..at + 16]).unwrap());
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        _ => ProxyHeader::Local,
    };
    Ok(Parsed::Complete { header, len })
}

/// Appends `header` in version 2 to `out`, with no TLVs: what a balancer
/// sends (and what the tests round-trip). A `Proxied` header whose two
/// addresses are of different families is sent as IPv6, the IPv4 one
/// mapped.
pub fn encode_v2(header: &ProxyHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    let ProxyHeader::Proxied {
        source,
        destination,
    } = *header
    else {
        out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return;
    };
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

/// Appends `header` in version 1 to `out` (`UNKNOWN` for `Local`).
pub fn encode_v1(header: &ProxyHeader, out: &mut Vec<u8>) {
    let line = match *header {
        ProxyHeader::Local => "PROXY UNKNOWN\r\n".to_string(),
        ProxyHeader::Proxied {
            source,
            destination,
        } => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
        }
    };
    out.extend_from_slice(line.as_bytes());
}

#[cfg(test)]
#[path = "proxy_header/tests.rs"]
mod tests;
