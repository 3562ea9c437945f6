//! What a `mio::Token` stands for on a shard.
//!
//! Connection tokens carry the slab key in the low 32 bits and a generation
//! in the high 32 bits. The slab reuses keys as soon as a connection closes,
//! and events for the old occupant may still be queued in the same `poll`
//! batch; the generation tells them apart so they are ignored instead of
//! being delivered to a stranger. Generation 0 is never given to a
//! connection, which leaves the tokens below 2^32 for the shard's own
//! sources.

use mio::Token;

const KIND_SHIFT: u32 = 24;
const INDEX_MASK: usize = (1 << KIND_SHIFT) - 1;
const WAKER_KIND: usize = 0;
const TCP_KIND: usize = 1;
const UDP_KIND: usize = 2;

const _: () = assert!(usize::BITS >= 64, "connection tokens need a 64-bit usize");

/// A decoded token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The mailbox waker.
    Waker,
    /// The i-th TCP listener.
    TcpListener(usize),
    /// The i-th UDP socket.
    Udp(usize),
    /// A connection: its slab key and generation.
    Conn { key: usize, gen: u32 },
    /// Not a token this shard hands out.
    Unknown,
}

impl Slot {
    pub(crate) fn token(self) -> Token {
        Token(match self {
            Slot::Waker => WAKER_KIND << KIND_SHIFT,
            Slot::TcpListener(i) => (TCP_KIND << KIND_SHIFT) | (i & INDEX_MASK),
            Slot::Udp(i) => (UDP_KIND << KIND_SHIFT) | (i & INDEX_MASK),
            Slot::Conn { key, gen } => {
                debug_assert!(gen != 0 && key <= u32::MAX as usize);
                ((gen as usize) << 32) | key
            }
            Slot::Unknown => usize::MAX,
        })
    }

    pub(crate) fn of(token: Token) -> Slot {
        let gen = (token.0 >> 32) as u32;
        if gen != 0 {
            return Slot::Conn {
                key: token.0 & u32::MAX as usize,
                gen,
            };
        }
        let index = token.0 & INDEX_MASK;
        match token.0 >> KIND_SHIFT {
            WAKER_KIND if index == 0 => Slot::Waker,
            TCP_KIND => Slot::TcpListener(index),
            UDP_KIND => Slot::Udp(index),
            _ => Slot::Unknown,
        }
    }
}

/// Hands out connection generations: 1, 2, ... wrapping past `u32::MAX` to 1.
#[derive(Debug)]
pub(crate) struct Generations(u32);

impl Generations {
    pub(crate) fn new() -> Generations {
        Generations(0)
    }

    pub(crate) fn next(&mut self) -> u32 {
        self.0 = self.0.checked_add(1).unwrap_or(1);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_round_trips() {
        for slot in [
            Slot::Waker,
            Slot::TcpListener(0),
            Slot::TcpListener(7),
            Slot::Udp(3),
            Slot::Conn { key: 0, gen: 1 },
            Slot::Conn {
                key: u32::MAX as usize,
                gen: u32::MAX,
            },
        ] {
            assert_eq!(Slot::of(slot.token()), slot);
        }
    }

    #[test]
    fn foreign_tokens_are_unknown() {
        assert_eq!(Slot::of(Token(3 << KIND_SHIFT)), Slot::Unknown);
        assert_eq!(Slot::of(Token(5)), Slot::Unknown);
    }

    #[test]
    fn generations_skip_zero_on_wrap() {
        let mut gens = Generations(u32::MAX - 1);
        assert_eq!(gens.next(), u32::MAX);
        assert_eq!(gens.next(), 1);
    }
}
