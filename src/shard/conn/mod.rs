//! One TCP connection, in two parts: a [`Transport`] that moves bytes
//! (`transport.rs`: plain or TLS, and a fake in tests) and a [`State`]
//! that does no syscalls (`state.rs`: flags, buffers, deadlines, the write
//! side and the decision to close; `read.rs`: the read side). The shard
//! owns dispatch: it walks its slab, calls these procedures on readiness
//! and hands input to services.
//!
//! Split this way, the state machine's rules (backpressure, half-close,
//! lingering close, drain, deadlines, output limits) are tested without
//! sockets or sleeps, on a fake transport and a virtual clock (`tests.rs`).

#[cfg(test)]
mod fake;
#[cfg(test)]
mod layout;
mod read;
mod splice;
mod state;
#[cfg(test)]
mod tests;
mod transport;

use std::net::SocketAddr;

use mio::Token;
use slab::Slab;

use super::limits::ConnLimits;
use super::token::Slot;
use super::trace::Tracer;
use crate::metrics::ShardStats;
use crate::net::buffer::BufferPool;
pub(crate) use read::{Input, PlainRead, ReadOutcome, Step};
pub(crate) use splice::{Splicer, BULK_CREDIT, BULK_READ};
pub(crate) use state::{Flags, Settled, State};
pub(crate) use transport::Transport;

/// A connection as the shard's slab holds it.
#[derive(Debug)]
pub(crate) struct TcpConn {
    pub(crate) state: State,
    pub(crate) transport: Transport,
    /// The generation in its token (here rather than in `State`, whose
    /// padding would round the entry up by 8 bytes).
    pub(crate) gen: u32,
    /// Index of its service among the shard's TCP services.
    pub(crate) service: u16,
    /// The place of the listener that accepted it among that service's.
    pub(crate) listener: u16,
}

impl TcpConn {
    pub(crate) fn new(
        transport: Transport,
        peer: SocketAddr,
        gen: u32,
        (service, listener): (u16, u16),
        now_ms: u32,
    ) -> Self {
        TcpConn {
            state: State::new(peer, now_ms),
            transport,
            gen,
            service,
            listener,
        }
    }

    /// The token of this connection, which sits at `key` in the slab.
    pub(crate) fn token(&self, key: usize) -> Token {
        Slot::Conn { key, gen: self.gen }.token()
    }
}

/// What a connection's procedures borrow from their shard: the buffer
/// pool, the counters, the limits and the turn's time, passed as one value.
pub(crate) struct Env<'a> {
    pub(crate) pool: &'a mut BufferPool,
    pub(crate) stats: &'a ShardStats,
    pub(crate) limits: &'a ConnLimits,
    pub(crate) now_ms: u32,
    pub(crate) trace: &'a Tracer,
}

impl Env<'_> {
    /// A copy for a call that takes it by value: made only where that call
    /// is, so the common path keeps the fields in registers (a reference
    /// passed out of line makes the whole value be built in memory first).
    #[inline(always)]
    pub(crate) fn reborrow(&mut self) -> Env<'_> {
        Env {
            pool: &mut *self.pool,
            ..*self
        }
    }

    /// Counts bytes a transport put on the wire.
    #[inline]
    fn count_sent(&self, sent: usize) {
        if sent > 0 {
            self.stats.tcp_bytes_out.add(sent as u64);
        }
    }
}

/// The slab key of the open connection `token` names, or `None` if that
/// connection is closed (its slot may already hold a newer one).
pub(crate) fn live(conns: &Slab<TcpConn>, token: Token) -> Option<usize> {
    match Slot::of(token) {
        Slot::Conn { key, gen } => {
            Some(key).filter(|&key| conns.get(key).is_some_and(|conn| conn.gen == gen))
        }
        _ => None,
    }
}
