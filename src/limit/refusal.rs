//! [`Refusal`]: why a connection was turned away before it got a slot.
//! One type from the per-source table up to the service that words it.

use std::fmt;
use std::time::Duration;

/// Why a connection was refused before it got a slot. `Display` words it
/// for the server's log; [`reason`](Refusal::reason) for the peer (a
/// service's refusal message, see `TcpService::refusal`).
///
/// ```
/// use std::time::Duration;
/// use sockloop::service::Refusal;
///
/// let banned = Refusal::Banned { until_in: Duration::from_millis(1500) };
/// assert_eq!(banned.to_string(), "banned for another 1.5s");
/// assert_eq!(banned.reason(), "your address is banned for a while");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The server holds `max_conns` connections already.
    ServerFull,
    /// Its source holds `limit` (`max_conns_per_ip`) connections already.
    TooManyFromIp {
        /// `IpLimits::max_conns_per_ip`.
        limit: u32,
    },
    /// Its source's connection-attempt bucket (`connect_rate`) is empty.
    ConnectRate,
    /// Its source (or its address block) is banned for this much longer.
    Banned {
        /// Until the ban ends.
        until_in: Duration,
    },
    /// Too many new addresses at once: the per-source table is full of
    /// connected ones and the rate for untracked newcomers
    /// (`IpLimits::untracked_rate`) is spent.
    Busy,
    /// The process is out of file descriptors (the connection was taken
    /// with the reserve descriptor only to be told so).
    NoDescriptors,
}

impl Refusal {
    /// A short reason for the peer, for a service's refusal message.
    ///
    /// ```
    /// assert_eq!(sockloop::service::Refusal::ServerFull.reason(), "the server is full");
    /// ```
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ServerFull => "the server is full",
            Refusal::TooManyFromIp { .. } => "too many connections from your address",
            Refusal::ConnectRate => "too many connection attempts from your address",
            Refusal::Banned { .. } => "your address is banned for a while",
            Refusal::Busy => "the server is busy with new addresses; try again shortly",
            Refusal::NoDescriptors => "the server is out of resources",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ServerFull => f.write_str("the server is full"),
            Refusal::TooManyFromIp { limit } => {
                write!(f, "too many connections from this address (limit {limit})")
            }
            Refusal::ConnectRate => f.write_str("connecting too fast"),
            Refusal::Banned { until_in } => write!(f, "banned for another {until_in:?}"),
            Refusal::Busy => f.write_str(
                "too many connected addresses to track a new one, and the rate for untracked ones is spent",
            ),
            Refusal::NoDescriptors => f.write_str("out of file descriptors"),
        }
    }
}
