//! Why connections end or are turned away.

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
    /// Its address (or its address block) is banned for now.
    Banned,
    /// Too many new addresses at once: the per-source table is full of
    /// connected ones and the rate for untracked newcomers is spent.
    Busy,
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
            Refusal::Busy => "the server is busy with new addresses; try again shortly",
            Refusal::NoDescriptors => "the server is out of resources",
        }
    }
}
