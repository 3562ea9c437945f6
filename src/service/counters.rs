//! Counters a service declares for the server's metrics, instead of the
//! core growing a field per service.

/// One counter a service keeps: declared by
/// [`TcpService::counters`](super::TcpService::counters) or
/// [`UdpService::counters`](super::UdpService::counters), moved with
/// [`Loop::add`](super::Loop::add) and [`Loop::sub`](super::Loop::sub) by
/// its place in that list, and served at `/metrics` per shard as
/// `sockloop_<name>` (a gauge) or `sockloop_<name>_total` (a running total).
///
/// Services that declare the same name share one counter per shard (two
/// rudp sockets add up their peers), so a name must mean one thing.
///
/// ```
/// use sockloop::service::{CounterKind, CounterSpec};
///
/// const PEERS: CounterSpec = CounterSpec {
///     name: "gopher_peers",
///     help: "Gopher peers connected now.",
///     kind: CounterKind::Gauge,
/// };
/// assert_eq!(PEERS.metric(), "sockloop_gopher_peers");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSpec {
    /// Lower-case letters, digits and `_`; unique in meaning.
    pub name: &'static str,
    /// One line for `# HELP`.
    pub help: &'static str,
    /// A level or a running total.
    pub kind: CounterKind,
}

/// Whether a counter is a level or a running total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    /// Goes up and down (peers connected now).
    Gauge,
    /// Only goes up (packets resent so far).
    Total,
}

impl CounterSpec {
    /// The Prometheus metric name.
    pub fn metric(&self) -> String {
        match self.kind {
            CounterKind::Gauge => format!("sockloop_{}", self.name),
            CounterKind::Total => format!("sockloop_{}_total", self.name),
        }
    }
}
