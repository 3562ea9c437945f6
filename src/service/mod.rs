//! The service API: what a protocol implements to run on the event loop.
//!
//! A service never sees a socket. The shard calls it with bytes and a
//! context; the context queues output and requests, and the shard does the
//! I/O. One service value exists per listener per shard, so a service needs
//! no locks: everything it is called with happens on one thread.
//!
//! Every context reaches one capability, the [`Loop`] (by `Deref`): the
//! turn's time (`now`, `wall_clock`), service timers, posting to other
//! shards, strikes against an address, and the service's counters. On top
//! of it, [`ShardContext`] reaches every connection of the shard by
//! [`ConnId`] (a room's fan-out), [`ConnContext`] is a `ShardContext`
//! while one connection is served, and [`DatagramContext`] sends
//! datagrams from one UDP socket.
//!
//! ```text
//! ConnContext ──deref──> ShardContext ──deref──> Loop <──deref── DatagramContext
//! (one connection)       (the shard's conns)     (time, timers, post, strike, counters)
//! ```

mod counters;
mod ids;
mod reasons;

use std::io;
use std::net::SocketAddr;

pub use crate::limit::Refusal;
pub use crate::shard::context::{ConnContext, DatagramContext, Loop, ShardContext};
pub use crate::shard::mailbox::Shards;
pub use crate::shard::outbound::ConnectError;
pub use counters::{CounterKind, CounterSpec};
pub use ids::{ConnId, TimerId};
pub use reasons::CloseReason;

/// A stream protocol: called by the shard for each connection event.
///
/// ```
/// use sockloop::service::{ConnContext, TcpService};
///
/// /// Answers every complete line with its length.
/// struct LineLength;
///
/// impl TcpService for LineLength {
///     fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
///         let mut consumed = 0;
///         while let Some(end) = data[consumed..].iter().position(|&b| b == b'\n') {
///             conn.send(format!("{}\n", end).as_bytes());
///             consumed += end + 1;
///         }
///         consumed // a partial line stays buffered for the next call
///     }
/// }
/// ```
pub trait TcpService: Send {
    /// A connection was accepted.
    fn on_open(&mut self, _conn: &mut ConnContext<'_>) {}

    /// The bytes to send a connection refused before it got a slot (see
    /// [`Refusal`]), then it is closed; `None` (the default) closes it
    /// without a word. `listener` is as in [`ConnContext::listener`].
    /// Keep it short: it is written once, without waiting.
    fn refusal(&self, _listener: usize, _reason: Refusal) -> Option<Vec<u8>> {
        None
    }

    /// Bytes arrived. `data` is everything received and not yet consumed;
    /// return how many leading bytes were consumed. Unconsumed bytes are
    /// offered again, with whatever arrives next, up to the configured
    /// maximum read buffer (then the connection is closed).
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize;

    /// An outbound connection opened with [`ShardContext::connect`]
    /// connected: from now on it is served like an accepted one (`on_data`,
    /// timers, `on_close`), and what was sent to it meanwhile goes out.
    fn on_connected(&mut self, _conn: &mut ConnContext<'_>) {}

    /// An outbound connection opened with [`ShardContext::connect`] did
    /// not connect: `error` says why (`ConnectionRefused`, `TimedOut`
    /// after `ServerConfig::connect_timeout`, `ConnectionAborted` when the
    /// service or shutdown closed it first). Nothing more is called for
    /// `id`, not even `on_close`; reconnecting, and when, is the
    /// service's choice.
    fn on_connect_failed(&mut self, _shard: &mut ShardContext<'_>, _id: ConnId, _error: io::Error) {
    }

    /// Everything sent to the connection is written out, after the service
    /// asked with [`ShardContext::notify_drained`]: e.g. resume reading
    /// the connection that feeds it (a proxy's backpressure).
    fn on_drained(&mut self, _conn: &mut ConnContext<'_>) {}

    /// A timer armed with [`ConnContext::arm_timer`] fired.
    fn on_timer(&mut self, _conn: &mut ConnContext<'_>, _key: u64) {}

    /// A timer armed with [`Loop::arm_timer`] from any of this service's
    /// contexts fired: a timer of the service, not of one connection (a
    /// room's notice batch).
    fn on_shard_timer(&mut self, _shard: &mut ShardContext<'_>, _key: u64) {}

    /// The counters this service keeps (see [`CounterSpec`]); asked once,
    /// when the server is built.
    fn counters(&self) -> &'static [CounterSpec] {
        &[]
    }

    /// This service on shard `from` posted `message` with
    /// [`Loop::post`]. Messages from one shard arrive in the order they
    /// were posted.
    fn on_message(&mut self, _shard: &mut ShardContext<'_>, _from: usize, _message: &[u8]) {}

    /// True for a service that sends every byte it gets straight back,
    /// unchanged and in order, and does nothing else with it: an echo. The
    /// shard may then echo a plain TCP connection's bulk input in the
    /// kernel (`splice(2)` through a pipe, no copy in user space, no
    /// `on_data` call) while nothing else waits to be sent to it
    /// ([`ServerConfig::splice`](crate::ServerConfig::splice)). False, the
    /// default, for everything else.
    fn echoes(&self) -> bool {
        false
    }

    /// The connection is gone; no more calls for `id` follow (its pending
    /// timers are dropped when they come due). `shard` reaches the other
    /// connections, e.g. to tell a room someone left.
    fn on_close(&mut self, _shard: &mut ShardContext<'_>, _id: ConnId, _reason: CloseReason) {}
}

/// A datagram protocol: called by the shard for each received datagram.
///
/// ```
/// use std::net::SocketAddr;
/// use sockloop::service::{DatagramContext, UdpService};
///
/// /// Replies to every datagram with its length as text.
/// struct Length;
///
/// impl UdpService for Length {
///     fn on_datagram(&mut self, out: &mut DatagramContext<'_>, from: SocketAddr, data: &[u8]) {
///         out.send_to(from, data.len().to_string().as_bytes());
///     }
/// }
/// ```
pub trait UdpService: Send {
    /// A datagram from `from` arrived.
    fn on_datagram(&mut self, out: &mut DatagramContext<'_>, from: SocketAddr, data: &[u8]);

    /// Every datagram of one receive batch was handed over: a protocol
    /// that answers several datagrams with one (an acknowledgement) sends
    /// it here.
    fn on_batch_end(&mut self, _out: &mut DatagramContext<'_>) {}

    /// A timer armed with [`Loop::arm_timer`] fired: e.g. expire per-peer
    /// state.
    fn on_timer(&mut self, _out: &mut DatagramContext<'_>, _key: u64) {}

    /// The counters this service keeps (see [`CounterSpec`]); asked once,
    /// when the server is built.
    fn counters(&self) -> &'static [CounterSpec] {
        &[]
    }

    /// This service on shard `from` posted `message` with
    /// [`Loop::post`], in order per sending shard.
    fn on_message(&mut self, _out: &mut DatagramContext<'_>, _from: usize, _message: &[u8]) {}

    /// The server is shutting down and this socket closes after this call:
    /// the last chance to tell peers (a protocol's goodbye).
    fn on_shutdown(&mut self, _out: &mut DatagramContext<'_>) {}

    /// Whether this socket uses UDP segmentation offload (asked once, when
    /// the socket is served): replies queued back to back for one peer,
    /// equal in size, leave in one segmented send, and bursts from one
    /// peer arrive coalesced, cut back into datagrams before
    /// `on_datagram` (see [`crate::net::gso`]). For bulk protocols to few
    /// peers; false (the default) keeps `recvmmsg` batches across peers.
    fn offload(&self) -> bool {
        false
    }
}
