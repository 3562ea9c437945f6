//! The bus client's settings and their defaults.

use std::time::Duration;

use super::ServerUrl;

/// How a [`Connection`](super::Connection) behaves. `BusConfig::new(servers)`
/// gives the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    /// The servers, tried in turn (one at a time, next on each attempt).
    pub servers: Vec<ServerUrl>,
    /// The name shown in the server's monitoring (`CONNECT`'s `name`).
    pub name: String,
    /// How often a ready connection sends its own `PING` (5 s).
    pub ping_interval: Duration,
    /// `PING`s left unanswered after which the server is declared dead
    /// (2): with the defaults a silent server is given up 15 s after its
    /// last `PONG` at most (two unanswered pings, and the third interval).
    pub max_pings_out: u32,
    /// From a dial to the server's `PONG` confirming `CONNECT` (5 s):
    /// connecting, `INFO`, `CONNECT`, `PONG`. Past it the attempt fails.
    pub handshake_timeout: Duration,
    /// The wait before the first reconnect attempt (100 ms); it doubles
    /// with each failed attempt in a row ...
    pub reconnect_min: Duration,
    /// ... up to this (5 s).
    pub reconnect_max: Duration,
    /// Each wait is shortened by up to this fraction at random (0.5: a
    /// wait of 1 s is 0.5 to 1 s), so that processes cut off together do
    /// not reconnect together. 0 disables jitter.
    pub jitter: f64,
    /// Seeds the jitter (tests pass a fixed one; a server its process id
    /// or origin).
    pub seed: u64,
    /// Bytes of encoded publications kept while disconnected or while
    /// the socket cannot take more (8 MiB). A publication that does not
    /// fit is dropped and counted.
    pub max_pending: usize,
    /// Subscriptions at most (1,024); more are refused.
    pub max_subscriptions: usize,
    /// Largest chunk [`poll_transmit`](super::Connection::poll_transmit)
    /// hands out (64 KiB), so the driver's write buffer, not this queue,
    /// is what stays small.
    pub max_transmit: usize,
}

impl BusConfig {
    /// The defaults above, for these servers.
    pub fn new(servers: Vec<ServerUrl>) -> BusConfig {
        BusConfig {
            servers,
            name: "sockloop".into(),
            ping_interval: Duration::from_secs(5),
            max_pings_out: 2,
            handshake_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            jitter: 0.5,
            seed: 1,
            max_pending: 8 * 1024 * 1024,
            max_subscriptions: 1024,
            max_transmit: 64 * 1024,
        }
    }

    /// Checks the settings: at least one server, non-zero intervals,
    /// `reconnect_min <= reconnect_max`, jitter in `0..=1`, non-zero sizes.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let fail = |msg: &str| Err(crate::Error::Config(format!("bus: {msg}")));
        if self.servers.is_empty() {
            return fail("at least one server is needed");
        }
        if self.ping_interval.is_zero() || self.handshake_timeout.is_zero() {
            return fail("the ping interval and handshake timeout must not be 0");
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return fail("reconnect_min must be above 0 and at most reconnect_max");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return fail("jitter must be within 0..=1");
        }
        if self.max_pending == 0 || self.max_transmit == 0 || self.max_subscriptions == 0 {
            return fail("max_pending, max_transmit and max_subscriptions must not be 0");
        }
        Ok(())
    }
}
