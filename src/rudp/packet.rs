//! The rudp wire format, parsed once into a validated [`Packet`]; nothing
//! read from a packet afterwards can be out of range.
//!
//! Every packet starts with a 4-byte header: version (1), kind, and two
//! reserved bytes that must be zero. Integers are big-endian.
//!
//! | kind | body after the header | bytes in all |
//! | --- | --- | --- |
//! | 1 hello | mode u8, has-cookie u8, isn u32, cookie (36) | 46 |
//! | 2 cookie | cookie: epoch u32, mac [u8; 32] | 40 |
//! | 3 data | seq u32, fragment u8, fragments u8, payload | 10 + payload |
//! | 4 ack | next u32, sack u64, window u16 | 18 |
//! | 5 ping | (none) | 4 |
//! | 6 close | (none) | 4 |
//!
//! A hello is always larger than the cookie that answers it, so the
//! handshake never amplifies what a spoofed source sent.

use std::fmt;

use super::seq::Seq;
use super::Mode;

/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Bytes before a data packet's payload.
pub const DATA_HEADER: usize = 10;
/// Bytes of a hello, the largest packet other than data.
pub const HELLO_LEN: usize = 46;
/// The most fragments one message may have (a `u8` count).
pub const MAX_FRAGMENTS: usize = 255;

const HEADER: usize = 4;

/// A handshake cookie: the server's proof, handed back by the client, that
/// the client receives at the address it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cookie {
    /// The key epoch it was minted in.
    pub epoch: u32,
    /// HMAC-SHA256 of the address and epoch under that epoch's key.
    pub mac: [u8; 32],
}

/// One parsed packet. Payloads borrow from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Client to server: open a connection (with the cookie, the second
    /// time). `isn` is the client's first data sequence number.
    Hello {
        /// Delivery mode the client asks for.
        mode: Mode,
        /// The client's initial sequence number.
        isn: Seq,
        /// The cookie from the server's `Cookie` reply, if any yet.
        cookie: Option<Cookie>,
    },
    /// Server to client: come back with this.
    Cookie(Cookie),
    /// A fragment of a message.
    Data {
        /// This packet's sequence number.
        seq: Seq,
        /// Which fragment of its message (0-based).
        fragment: u8,
        /// How many fragments the message has (at least 1).
        fragments: u8,
        /// The fragment's bytes.
        payload: &'a [u8],
    },
    /// What the receiver has: everything before `next`, plus bit `i` of
    /// `sack` for `next + 1 + i`; `window` more packets fit.
    Ack {
        /// The first sequence number not yet received.
        next: Seq,
        /// Selective acknowledgements past `next`.
        sack: u64,
        /// Free receive slots.
        window: u16,
    },
    /// Are you there? Answered with an ack.
    Ping,
    /// The sender is going away.
    Close,
}

/// Why a datagram is not a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketError {
    /// Shorter than its kind's fixed part.
    Truncated,
    /// A version this code does not speak.
    Version(u8),
    /// An unknown kind.
    Kind(u8),
    /// Reserved bits set, or a flag byte out of range.
    Reserved,
    /// Bytes after a fixed-size packet's end.
    TrailingBytes,
    /// Fragment number not below the fragment count, or a count of zero.
    Fragment,
    /// A payload over the configured maximum.
    PayloadTooLarge,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::Truncated => f.write_str("truncated packet"),
            PacketError::Version(v) => write!(f, "unsupported version {v}"),
            PacketError::Kind(k) => write!(f, "unknown packet kind {k}"),
            PacketError::Reserved => f.write_str("reserved bits set"),
            PacketError::TrailingBytes => f.write_str("bytes after the packet's end"),
            PacketError::Fragment => f.write_str("fragment number out of range"),
            PacketError::PayloadTooLarge => f.write_str("payload over the maximum"),
        }
    }
}

impl std::error::Error for PacketError {}

impl<'a> Packet<'a> {
    /// Parses and validates a datagram; `max_payload` bounds data payloads.
    ///
    /// ```
    /// use sockloop::rudp::{Packet, PacketError, Seq};
    ///
    /// let mut wire = Vec::new();
    /// Packet::Data { seq: Seq(7), fragment: 0, fragments: 1, payload: b"hi" }.encode(&mut wire);
    /// let packet = Packet::parse(&wire, 1200)?;
    /// assert_eq!(packet, Packet::Data { seq: Seq(7), fragment: 0, fragments: 1, payload: b"hi" });
    /// assert_eq!(Packet::parse(&wire[..5], 1200), Err(PacketError::Truncated));
    /// # Ok::<(), PacketError>(())
    /// ```
    pub fn parse(datagram: &'a [u8], max_payload: usize) -> Result<Packet<'a>, PacketError> {
        let Some((header, body)) = datagram.split_first_chunk::<HEADER>() else {
            return Err(PacketError::Truncated);
        };
        let [version, kind, reserved @ ..] = *header;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        if reserved != [0, 0] {
            return Err(PacketError::Reserved);
        }
        let mut body = Reader(body);
        let packet = match kind {
            1 => {
                let mode = match body.u8()? {
                    0 => Mode::Reliable,
                    1 => Mode::Unreliable,
                    _ => return Err(PacketError::Reserved),
                };
                let has_cookie = body.u8()?;
                let isn = Seq(body.u32()?);
                let cookie = body.cookie()?;
                let cookie = match has_cookie {
                    // No cookie: its bytes must be blank, so one packet has one form.
                    0 if cookie.epoch == 0 && cookie.mac == [0; 32] => None,
                    1 => Some(cookie),
                    _ => return Err(PacketError::Reserved),
                };
                Packet::Hello { mode, isn, cookie }
            }
            2 => Packet::Cookie(body.cookie()?),
            3 => {
                let seq = Seq(body.u32()?);
                let (fragment, fragments) = (body.u8()?, body.u8()?);
                if fragment >= fragments {
                    return Err(PacketError::Fragment);
                }
                let payload = std::mem::take(&mut body.0);
                if payload.len() > max_payload {
                    return Err(PacketError::PayloadTooLarge);
                }
                Packet::Data {
                    seq,
                    fragment,
                    fragments,
                    payload,
                }
            }
            4 => Packet::Ack {
                next: Seq(body.u32()?),
                sack: body.u64()?,
                window: body.u16()?,
            },
            5 => Packet::Ping,
            6 => Packet::Close,
            other => return Err(PacketError::Kind(other)),
        };
        if !body.0.is_empty() {
            return Err(PacketError::TrailingBytes);
        }
        Ok(packet)
    }

    /// Appends the packet's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let kind = match self {
            Packet::Hello { .. } => 1,
            Packet::Cookie(_) => 2,
            Packet::Data { .. } => 3,
            Packet::Ack { .. } => 4,
            Packet::Ping => 5,
            Packet::Close => 6,
        };
        out.extend_from_slice(&[VERSION, kind, 0, 0]);
        match *self {
            Packet::Hello { mode, isn, cookie } => {
                out.push(mode as u8);
                out.push(u8::from(cookie.is_some()));
                out.extend_from_slice(&isn.0.to_be_bytes());
                let cookie = cookie.unwrap_or(Cookie {
                    epoch: 0,
                    mac: [0; 32],
                });
                put_cookie(&cookie, out);
            }
            Packet::Cookie(cookie) => put_cookie(&cookie, out),
            Packet::Data {
                seq,
                fragment,
                fragments,
                payload,
            } => {
                out.extend_from_slice(&seq.0.to_be_bytes());
                out.extend_from_slice(&[fragment, fragments]);
                out.extend_from_slice(payload);
            }
            Packet::Ack { next, sack, window } => {
                out.extend_from_slice(&next.0.to_be_bytes());
                out.extend_from_slice(&sack.to_be_bytes());
                out.extend_from_slice(&window.to_be_bytes());
            }
            Packet::Ping | Packet::Close => {}
        }
    }
}

fn put_cookie(cookie: &Cookie, out: &mut Vec<u8>) {
    out.extend_from_slice(&cookie.epoch.to_be_bytes());
    out.extend_from_slice(&cookie.mac);
}

/// Reads fixed-size fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], PacketError> {
        let (field, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(PacketError::Truncated)?;
        self.0 = rest;
        Ok(*field)
    }

    fn u8(&mut self) -> Result<u8, PacketError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, PacketError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, PacketError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, PacketError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn cookie(&mut self) -> Result<Cookie, PacketError> {
        Ok(Cookie {
            epoch: self.u32()?,
            mac: self.take()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn wire(packet: &Packet<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        packet.encode(&mut out);
        out
    }

    fn samples() -> Vec<Packet<'static>> {
        let cookie = Cookie {
            epoch: 9,
            mac: [7; 32],
        };
        vec![
            Packet::Hello {
                mode: Mode::Reliable,
                isn: Seq(u32::MAX),
                cookie: None,
            },
            Packet::Hello {
                mode: Mode::Unreliable,
                isn: Seq(1),
                cookie: Some(cookie),
            },
            Packet::Cookie(cookie),
            Packet::Data {
                seq: Seq(5),
                fragment: 2,
                fragments: 3,
                payload: b"abc",
            },
            Packet::Data {
                seq: Seq(0),
                fragment: 0,
                fragments: 1,
                payload: b"",
            },
            Packet::Ack {
                next: Seq(77),
                sack: 0x8000_0000_0000_0001,
                window: 128,
            },
            Packet::Ping,
            Packet::Close,
        ]
    }

    #[test]
    fn round_trips_with_the_documented_sizes() {
        let sizes = [HELLO_LEN, HELLO_LEN, 40, 13, 10, 18, 4, 4];
        for (packet, size) in samples().iter().zip(sizes) {
            let bytes = wire(packet);
            assert_eq!(bytes.len(), size, "{packet:?}");
            assert_eq!(Packet::parse(&bytes, 1200), Ok(*packet));
            for cut in 0..bytes.len().min(size) {
                let short = Packet::parse(&bytes[..cut], 1200);
                let data_body = matches!(packet, Packet::Data { .. }) && cut >= DATA_HEADER;
                if !data_body {
                    assert_eq!(short, Err(PacketError::Truncated), "{packet:?} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn a_hello_outweighs_its_cookie() {
        let hello = wire(&samples()[0]);
        let cookie = wire(&samples()[2]);
        assert!(hello.len() > cookie.len());
    }

    #[test]
    fn each_kind_of_bad_packet() {
        let ping = wire(&Packet::Ping);
        let mut bad_version = ping.clone();
        bad_version[0] = 2;
        assert_eq!(
            Packet::parse(&bad_version, 1200),
            Err(PacketError::Version(2))
        );
        let mut bad_kind = ping.clone();
        bad_kind[1] = 9;
        assert_eq!(Packet::parse(&bad_kind, 1200), Err(PacketError::Kind(9)));
        let mut reserved = ping.clone();
        reserved[3] = 1;
        assert_eq!(Packet::parse(&reserved, 1200), Err(PacketError::Reserved));
        let mut trailing = ping.clone();
        trailing.push(0);
        assert_eq!(
            Packet::parse(&trailing, 1200),
            Err(PacketError::TrailingBytes)
        );

        let mut hello = wire(&samples()[0]);
        hello[4] = 2; // mode
        assert_eq!(Packet::parse(&hello, 1200), Err(PacketError::Reserved));
        hello[4] = 0;
        hello[5] = 2; // has-cookie
        assert_eq!(Packet::parse(&hello, 1200), Err(PacketError::Reserved));

        let data = |fragment, fragments, payload: &'static [u8]| {
            let mut out = wire(&Packet::Ping);
            out[1] = 3;
            out.extend_from_slice(&[0, 0, 0, 1, fragment, fragments]);
            out.extend_from_slice(payload);
            out
        };
        assert_eq!(
            Packet::parse(&data(1, 1, b"x"), 1200),
            Err(PacketError::Fragment)
        );
        assert_eq!(
            Packet::parse(&data(0, 0, b"x"), 1200),
            Err(PacketError::Fragment)
        );
        assert_eq!(
            Packet::parse(&data(0, 1, b"xyz"), 2),
            Err(PacketError::PayloadTooLarge)
        );
        assert!(Packet::parse(&data(0, 1, b"xy"), 2).is_ok());
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = Packet::parse(&bytes, 64) {
                // Whatever parses re-encodes to the same bytes.
                prop_assert_eq!(wire(&packet), bytes);
            }
        }

        #[test]
        fn valid_headers_with_any_body(kind in 1u8..=6, body in proptest::collection::vec(any::<u8>(), 0..60)) {
            let mut bytes = vec![VERSION, kind, 0, 0];
            bytes.extend(body);
            if let Ok(packet) = Packet::parse(&bytes, 64) {
                prop_assert_eq!(wire(&packet), bytes);
            }
        }
    }
}
