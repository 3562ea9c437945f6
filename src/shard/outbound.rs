//! Outbound connections: a service opens a TCP connection from its shard
//! (`ShardContext::connect`), and the shard drives it like an accepted
//! one once the non-blocking connect completes.
//!
//! The connect's outcome arrives as writability: the shard then asks the
//! socket for a pending error (`SO_ERROR`) and for its peer (`ENOTCONN`
//! means not yet: a spurious wake-up). Until then the connection is
//! neither read nor written; what its service sends waits in the write
//! buffer, and the connect timeout (`ServerConfig::connect_timeout`)
//! runs. Its service hears exactly one of `on_connected` or
//! `on_connect_failed`; `on_close` follows only the first.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::Interest;
use slab::Slab;

use super::conn::{TcpConn, Transport};
use super::context::ConnContext;
use super::token::Slot;
use super::{Resources, Shard};
use crate::net::socket::tune_accepted;
use crate::service::CloseReason;

/// The `listener` field of an outbound connection, which no listener had.
pub(crate) const OUTBOUND: u16 = u16::MAX;

/// Why [`ShardContext::connect`](crate::service::ShardContext::connect)
/// could not begin a connection. (A connect that begins and then fails is
/// reported to `TcpService::on_connect_failed`.)
#[derive(Debug)]
pub enum ConnectError {
    /// The server holds `ServerConfig::max_conns` connections already;
    /// outbound ones count towards it like accepted ones.
    ServerFull,
    /// The socket could not be created, registered or started connecting
    /// (out of descriptors, no route, an address of the wrong family).
    Io(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::ServerFull => f.write_str("the server is full (--max-conns)"),
            ConnectError::Io(e) => write!(f, "connect: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io(e) => Some(e),
            ConnectError::ServerFull => None,
        }
    }
}

/// Begins connecting to `addr` for TCP service `service`; the connection
/// takes a slab slot and a place under `max_conns` at once. Returns its
/// slab key; the caller settles it (which arms the connect timeout).
pub(crate) fn open(
    conns: &mut Slab<TcpConn>,
    res: &mut Resources,
    service: u16,
    addr: SocketAddr,
) -> Result<usize, ConnectError> {
    res.stats.outbound_started.incr();
    let opened = begin(conns, res, service, addr);
    if let Err(e) = &opened {
        res.stats.outbound_failed.incr();
        log::debug!("outbound connection to {addr}: {e}");
    }
    opened
}

fn begin(
    conns: &mut Slab<TcpConn>,
    res: &mut Resources,
    service: u16,
    addr: SocketAddr,
) -> Result<usize, ConnectError> {
    let admission = res
        .gate
        .admit_unattributed()
        .map_err(|_| ConnectError::ServerFull)?;
    let registered = TcpStream::connect(addr).and_then(|mut stream| {
        if let Err(e) = tune_accepted(&stream, &res.socket) {
            log::debug!("tuning connection to {addr}: {e}");
        }
        let entry = conns.vacant_entry();
        let key = entry.key();
        if u32::try_from(key).is_err() {
            return Err(io::Error::other("connection slab full"));
        }
        let gen = res.generations.next();
        let token = Slot::Conn { key, gen }.token();
        // Writable announces the outcome; readable is kept for later.
        let interest = Interest::READABLE | Interest::WRITABLE;
        res.registry.register(&mut stream, token, interest)?;
        let now_ms = res.timers.now_ms();
        let transport = Transport::plain(stream);
        let mut conn = TcpConn::new(transport, addr, gen, (service, OUTBOUND), now_ms);
        conn.state.begin_connect(now_ms);
        entry.insert(conn);
        Ok(key)
    });
    match registered {
        Ok(key) => {
            conns[key].state.hold_pass(admission);
            res.stats.conns_open.incr();
            Ok(key)
        }
        Err(e) => {
            res.gate.release(admission);
            Err(ConnectError::Io(e))
        }
    }
}

/// What a connection that never connected tells its service, for the
/// reason the shard closed it (a socket error brings its own).
pub(crate) fn failure(reason: CloseReason) -> io::Error {
    let (kind, what) = match reason {
        CloseReason::ConnectTimeout | CloseReason::IdleTimeout => {
            (io::ErrorKind::TimedOut, "connect timed out")
        }
        CloseReason::Service => (
            io::ErrorKind::ConnectionAborted,
            "closed by its service before it connected",
        ),
        CloseReason::Shutdown => (
            io::ErrorKind::ConnectionAborted,
            "the server shut down before it connected",
        ),
        CloseReason::OutputHardLimit => (
            io::ErrorKind::OutOfMemory,
            "output past the hard limit before it connected",
        ),
        _ => (io::ErrorKind::Other, "connect failed"),
    };
    io::Error::new(kind, what)
}

impl Shard {
    /// A connecting connection's socket reported readiness: true if it is
    /// connected now (its service told, and the event handled as for any
    /// connection), false if it is still connecting or failed (and is
    /// closed).
    pub(super) fn finish_connect(&mut self, key: usize) -> bool {
        let conn = &mut self.conns[key];
        match conn.transport.connect_outcome() {
            Ok(false) => false,
            Err(e) => {
                self.close_with(key, CloseReason::Error, Some(e));
                false
            }
            Ok(true) => {
                conn.state.connected(self.res.timers.now_ms());
                self.res.stats.outbound_connected.incr();
                let service = usize::from(conn.service);
                let mut cx = ConnContext::new(key, &mut self.conns, &mut self.res);
                self.services[service].on_connected(&mut cx);
                true
            }
        }
    }
}
