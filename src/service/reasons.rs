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
    /// An outbound connection did not connect within
    /// `ServerConfig::connect_timeout`. Its service hears of it through
    /// `TcpService::on_connect_failed` (as `TimedOut`), never `on_close`.
    ConnectTimeout,
}
