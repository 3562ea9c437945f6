//! The service API: what a protocol implements to run on the event loop.
//!
//! A service never sees a socket. The shard calls it with bytes and a
//! context; the context queues output and requests, and the shard does the
//! I/O. One service value exists per listener per shard, so a service needs
//! no locks: everything it is called with happens on one thread.

use std::net::SocketAddr;

pub use crate::shard::context::{ConnContext, ShardContext};
pub use crate::shard::mailbox::Shards;
pub use crate::shard::udp::DatagramContext;

/// Identifies one connection for its whole life on a shard.
///
/// Ids are never reused while the connection is open, and a closed
/// connection's id is not handed out again until 2^32 more connections have
/// been accepted on that shard, so a service may key its per-connection
/// state by `ConnId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer closed its side and everything owed to it was flushed.
    PeerClosed,
    /// A reset or another socket error.
    Error,
    /// The service called [`ConnContext::close`].
    Service,
    /// The service left more unconsumed input than the read buffer may hold.
    ReadBufferFull,
    /// The server shut down.
    Shutdown,
    /// No bytes moved for the idle timeout.
    IdleTimeout,
    /// A frame stayed incomplete for the frame timeout.
    FrameTimeout,
    /// Output made no progress for the write timeout.
    WriteTimeout,
    /// Pending output passed the hard limit.
    OutputHardLimit,
    /// Pending output stayed above the soft limit for too long.
    OutputSoftLimit,
}

/// Why a connection was refused before it got a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The server holds `max_conns` connections already.
    ServerFull,
    /// Its address holds `max_conns_per_ip` connections already.
    TooManyFromIp,
    /// Its address connects faster than `conn_rate` allows.
    ConnectRate,
    /// Its address is banned for now.
    Banned,
    /// The process is out of file descriptors (the connection was taken
    /// with the reserve descriptor only to be told so).
    NoDescriptors,
}

impl Refusal {
    /// A short reason, for a service's refusal message.
    ///
    /// ```
    /// assert_eq!(sockloop::service::Refusal::ServerFull.reason(), "the server is full");
    /// ```
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ServerFull => "the server is full",
            Refusal::TooManyFromIp => "too many connections from your address",
            Refusal::ConnectRate => "too many connection attempts from your address",
            Refusal::Banned => "your address is banned for a while",
            Refusal::NoDescriptors => "the server is out of resources",
        }
    }
}

/// A service timer, for cancelling it. Cancelling one that already fired
/// is a harmless no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) crate::timer::TimerHandle);

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

    /// A timer armed with [`ConnContext::arm_timer`] fired.
    fn on_timer(&mut self, _conn: &mut ConnContext<'_>, _key: u64) {}

    /// This service on shard `from` posted `message` with
    /// [`ConnContext::post`]. Messages from one shard arrive in the order
    /// they were posted.
    fn on_message(&mut self, _shard: &mut ShardContext<'_>, _from: usize, _message: &[u8]) {}

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

    /// A timer armed with [`DatagramContext::arm_timer`] fired: e.g. expire
    /// per-peer state.
    fn on_timer(&mut self, _out: &mut DatagramContext<'_>, _key: u64) {}

    /// This service on shard `from` posted `message` with
    /// [`DatagramContext::post`], in order per sending shard.
    fn on_message(&mut self, _out: &mut DatagramContext<'_>, _from: usize, _message: &[u8]) {}

    /// The server is shutting down and this socket closes after this call:
    /// the last chance to tell peers (a protocol's goodbye).
    fn on_shutdown(&mut self, _out: &mut DatagramContext<'_>) {}
}
