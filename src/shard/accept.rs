//! Accepting connections: until `WouldBlock`, without spinning when the
//! process runs out of descriptors, and (in the handoff mode) passing each
//! to the least loaded shard.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::Interest;

use super::conn::Connection;
use super::context::ConnContext;
use super::deadline::TimerTarget;
use super::mailbox::Mail;
use super::token::Slot;
use super::Shard;
use crate::metrics::ShardStats;
use crate::net::socket::tune_accepted;
use crate::net::tls::TlsSession;

/// How the listening shard of the handoff mode picks a shard for each
/// connection: the fewest open, counting those handed over but not yet
/// adopted (the other shard's gauge only moves once it reads its mail).
pub(super) struct Handoff {
    stats: Arc<[Arc<ShardStats>]>,
    /// Connections handed to each shard so far.
    sent: Vec<u64>,
}

impl Handoff {
    pub(super) fn new(stats: Arc<[Arc<ShardStats>]>) -> Handoff {
        Handoff {
            sent: vec![0; stats.len()],
            stats,
        }
    }

    fn least_loaded(&self) -> usize {
        let load = |i: usize| {
            let shard = &self.stats[i];
            let in_flight = self.sent[i].saturating_sub(shard.adopted.get());
            shard.conns_open.get() + in_flight
        };
        (0..self.stats.len()).min_by_key(|&i| load(i)).unwrap_or(0)
    }
}

impl Shard {
    /// Accepts every pending connection on listener `index`.
    pub(super) fn accept_ready(&mut self, index: usize) {
        loop {
            let Some(endpoint) = self.tcp.get_mut(index) else {
                return;
            };
            let Some(listener) = endpoint.listener.as_ref() else {
                return; // closed by shutdown, or this shard only adopts
            };
            if endpoint.paused {
                return;
            }
            match listener.accept() {
                Ok((stream, peer)) => self.place(index, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A peer that gave up while queued is no reason to stop.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) if out_of_descriptors(&e) => {
                    // The pending connection stays in the backlog and the
                    // listener stays readable, so retrying now would spin.
                    let pause = self.config.accept_pause;
                    endpoint.paused = true;
                    self.res
                        .timers
                        .arm_after(pause, TimerTarget::ResumeAccept(index));
                    self.res.stats.accept_pauses.incr();
                    log::warn!("accept: {e}; not accepting for {pause:?}");
                    return;
                }
                Err(e) => {
                    self.res.stats.accept_errors.incr();
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Serves a new connection here, or in the handoff mode on the shard
    /// with the fewest open connections. If that shard's inbox is full the
    /// connection stays here: it is never dropped for lack of a place.
    fn place(&mut self, listener: usize, stream: TcpStream, peer: SocketAddr) {
        let here = self.res.postbox.shard;
        let Some(target) = self.handoff.as_ref().map(Handoff::least_loaded) else {
            return self.open(listener, stream, peer);
        };
        if target == here {
            return self.open(listener, stream, peer);
        }
        let mail = Mail::Adopt {
            listener,
            stream: stream.into(),
            peer,
        };
        match self.res.postbox.peers[target].post(mail) {
            Ok(()) => {
                self.res.stats.handed_off.incr();
                if let Some(handoff) = self.handoff.as_mut() {
                    handoff.sent[target] += 1;
                }
            }
            Err(Mail::Adopt { stream, .. }) => {
                self.open(listener, TcpStream::from_std(stream), peer)
            }
            Err(Mail::Message { .. }) => unreachable!("posted an Adopt"),
        }
    }

    /// Registers a connection accepted here or handed over by shard 0.
    pub(super) fn open(&mut self, listener: usize, mut stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = tune_accepted(&stream, &self.config.socket) {
            log::debug!("tuning connection from {peer}: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if u32::try_from(key).is_err() {
            // Unreachable below 2^32 descriptors; refuse rather than alias.
            self.res.stats.accept_errors.incr();
            return;
        }
        let gen = self.generations.next();
        let token = Slot::Conn { key, gen }.token();
        // Readable only: writable interest is added while output waits
        // (see `settle`), or every ACK that frees send-buffer space would
        // wake the loop for nothing.
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            self.res.stats.accept_errors.incr();
            log::warn!("registering connection from {peer}: {e}");
            return;
        }
        let now_ms = self.res.timers.now_ms();
        let endpoint = &self.tcp[listener];
        let (service, place) = (endpoint.service, endpoint.place);
        let tls = match endpoint.tls.as_ref().map(TlsSession::new).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                self.res.stats.accept_errors.incr();
                return log::warn!("TLS for connection from {peer}: {e}");
            }
        };
        let mut conn = Connection::new(stream, peer, gen, (service, place), now_ms);
        if let Some(tls) = tls {
            conn.io.tls = Some(Box::new(tls));
            // The handshake is a frame open from the first moment: the
            // frame timeout is its deadline.
            conn.io.deadlines.frame(now_ms, false, true);
        }
        entry.insert(conn);
        self.res.stats.conns_accepted.incr();
        self.res.stats.conns_open.incr();
        let mut cx = ConnContext::new(key, &mut self.conns, &mut self.res);
        self.services[service as usize].on_open(&mut cx);
        self.settle(key);
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
