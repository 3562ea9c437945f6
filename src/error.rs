//! The crate's error type, at the edge where a server is built and run.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// What can stop a server from starting or running.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    Config(String),
    /// A listener could not be bound (address in use, not local, ...).
    Bind {
        /// `"tcp"` or `"udp"`.
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The event loop failed at run time.
    Io(io::Error),
    /// A shard's thread panicked; the server was stopped.
    ShardPanicked(usize),
    /// A worker process (`sockloop serve --workers`) failed before it was
    /// ready: the whole server stops rather than restart it in a loop.
    WorkerStart {
        /// The worker's index.
        worker: usize,
        /// What the worker reported, or how it ended.
        reason: String,
    },
}

impl Error {
    /// True for errors the caller can fix by changing its request (the CLI
    /// exits 2 for these, 1 for the rest).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Config(_) | Error::Bind { .. } | Error::WorkerStart { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Error::Bind {
                proto,
                addr,
                source,
            } if source.kind() == io::ErrorKind::AddrInUse => write!(
                f,
                "cannot bind {proto} {addr}: address in use (another socket holds it, \
                 perhaps another server)"
            ),
            Error::Bind {
                proto,
                addr,
                source,
            } => write!(f, "cannot bind {proto} {addr}: {source}"),
            Error::Io(e) => write!(f, "event loop failed: {e}"),
            Error::ShardPanicked(id) => write!(f, "shard {id} panicked"),
            Error::WorkerStart { worker, reason } => {
                write!(f, "worker {worker} could not start: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Io(source) => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}
