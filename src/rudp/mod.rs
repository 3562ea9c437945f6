//! Reliable, ordered messages over UDP, as a sans-IO state machine.
//!
//! Nothing here touches a socket or a clock. Inputs are datagrams and the
//! time (`handle_datagram(now, from, bytes)`, `handle_timeout(now)`,
//! `send(message)`); outputs are polled (`poll_transmit` for datagrams to
//! send, `poll_timeout` for when to call back, `poll_event` for messages
//! and state changes). The event loop (the `rudp` service) and the
//! blocking client (`client::rudp`) drive it with real sockets; the tests
//! drive it through a simulated lossy link with a virtual clock.
//!
//! The layers, one file each:
//!
//! - [`packet`]: the versioned wire format, parsed once into a validated
//!   [`Packet`];
//! - [`seq`]: wrapping sequence numbers;
//! - `cookie`: stateless handshake cookies (HMAC over address and epoch);
//! - [`rtt`]: the RFC 6298 retransmission timeout;
//! - `send`, `recv`: the send window (acks, loss detection) and the receive
//!   window (reordering, duplicates, reassembly);
//! - [`connection`]: one peer, either side;
//! - [`endpoint`]: the server side, many peers, the cookie handshake;
//! - [`echo`]: the reliable echo's policy over an endpoint.
//!
//! The handshake: the client sends `Hello`; the server answers `Cookie`
//! (smaller than the hello) and keeps nothing; the client repeats its hello
//! with the cookie; only then does the server create state and answer with
//! an `Ack`. A spoofed source can make the server send no more bytes than
//! it sent itself.

pub mod connection;
mod cookie;
pub mod echo;
pub mod endpoint;
pub mod packet;
mod peer_hash;
mod recv;
pub mod rtt;
mod send;
pub mod seq;
mod spare;

#[cfg(test)]
mod sim;

use std::time::Duration;

pub use connection::{CloseCause, Connection, ConnectionStats, Event};
pub use cookie::CookieError;
pub use endpoint::{Endpoint, EndpointStats};
pub use packet::{Packet, PacketError};
pub use recv::ReceiveStats;
pub use rtt::RttEstimator;
pub use send::SendError;
pub use seq::Seq;

/// What the receiver does about a missing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every message arrives, once, in order: missing packets are resent.
    Reliable = 0,
    /// Messages arrive in order, but a gap is skipped after
    /// [`Config::skip_after`] and nothing is resent: for data where late
    /// is useless (positions, telemetry samples).
    Unreliable = 1,
}

/// The protocol's tunables, the same on both sides. `Default` is what the
/// `rudp` service and client use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Delivery mode (the client's choice; the server follows it).
    pub mode: Mode,
    /// Largest payload per datagram (1200 bytes: under any path's MTU).
    pub max_payload: usize,
    /// Largest message (64 KiB); bigger ones are refused by `send`.
    pub max_message: usize,
    /// Packets in flight per direction, and the receiver's reorder window
    /// (128).
    pub window: usize,
    /// RTO before any RTT sample (500 ms).
    pub initial_rto: Duration,
    /// Lower clamp of the RTO (100 ms).
    pub min_rto: Duration,
    /// Upper clamp of the RTO, backoff included (2 s).
    pub max_rto: Duration,
    /// Timeouts in a row (retransmissions, handshake or ping attempts),
    /// each with the peer silent for the whole RTO, after which the peer
    /// is declared dead (8). Only these back the RTO off: a peer heard
    /// from is alive, and its losses are retried at the plain RTO.
    pub max_retries: u32,
    /// Quiet time after which a ping checks the peer is there (1 s).
    pub keepalive: Duration,
    /// How long an unreliable receiver waits for a missing packet (50 ms).
    pub skip_after: Duration,
    /// Server: the peers one source (an IPv4 address, or an IPv6 /64, as
    /// [`crate::limit::Source`] counts) may hold at once (4). A newcomer
    /// beyond it takes the place of that source's idlest peer, or is
    /// refused if none is idle (see [`endpoint`]).
    pub max_peers_per_source: usize,
    /// Server: how long a peer must have made no progress (no new data
    /// from it, none of its data acknowledged) before a newcomer may take
    /// its place in a full table (2 s). Pings and their acks are not
    /// progress: answering them keeps a peer alive, not its place.
    pub evict_idle_after: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Reliable,
            max_payload: 1200,
            max_message: 64 * 1024,
            window: 128,
            initial_rto: Duration::from_millis(500),
            min_rto: Duration::from_millis(100),
            max_rto: Duration::from_secs(2),
            max_retries: 8,
            keepalive: Duration::from_secs(1),
            skip_after: Duration::from_millis(50),
            max_peers_per_source: 4,
            evict_idle_after: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// The longest a silent peer can go undetected: the keepalive, then
    /// `max_retries + 1` timeouts, each at most `max_rto`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::rudp::Config;
    ///
    /// assert_eq!(Config::default().dead_after(), Duration::from_secs(19));
    /// ```
    pub fn dead_after(&self) -> Duration {
        self.keepalive + self.max_rto * (self.max_retries + 1)
    }

    /// The largest datagram either side sends: a full data packet, or a
    /// hello if payloads are tiny.
    ///
    /// ```
    /// use sockloop::rudp::Config;
    ///
    /// assert_eq!(Config::default().max_datagram(), 1210);
    /// ```
    pub fn max_datagram(&self) -> usize {
        (packet::DATA_HEADER + self.max_payload).max(packet::HELLO_LEN)
    }

    /// Checks that the limits fit the wire format.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=65_000).contains(&self.max_payload) {
            return Err("max_payload must be 1..=65000 bytes".into());
        }
        if self.max_message.div_ceil(self.max_payload) > packet::MAX_FRAGMENTS {
            return Err("max_message needs more than 255 fragments of max_payload".into());
        }
        if self.max_message.div_ceil(self.max_payload) > self.window {
            return Err("the window must hold the largest message".into());
        }
        if !(1..=u16::MAX as usize).contains(&self.window) {
            return Err("window must be 1..=65535 packets".into());
        }
        if self.min_rto.is_zero() || self.min_rto > self.max_rto {
            return Err("RTO clamps must satisfy 0 < min <= max".into());
        }
        if self.max_peers_per_source == 0 {
            return Err("max_peers_per_source must be at least 1".into());
        }
        Ok(())
    }
}
