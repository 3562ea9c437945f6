//! Accepting connections: until `WouldBlock`, without spinning when the
//! process runs out of descriptors, and (in the handoff mode) passing each
//! to the least loaded shard.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::Interest;

use super::conn::{Flags, TcpConn, Transport};
use super::context::ConnContext;
use super::deadline::TimerTarget;
use super::mailbox::Mail;
use super::token::Slot;
use super::{reserve_descriptor, Shard};
use crate::limit::Source;
use crate::metrics::ShardStats;
use crate::net::socket::tune_accepted;
use crate::net::tls::TlsSession;
use crate::service::Refusal;
use crate::shard::gate::{Explained, Pass};

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
                Err(e) if out_of_descriptors(&e) && self.reserve.is_some() => {
                    // Free the reserve for one accept, tell that peer why,
                    // close it and take the reserve back: the backlog drains
                    // with an answer instead of waiting in silence.
                    // (Linux reports EMFILE before looking at the backlog,
                    // so it may well be empty.)
                    self.reserve = None;
                    let accepted = listener.accept();
                    let refused = match accepted {
                        Ok((stream, peer)) => {
                            self.refuse(index, stream, peer, Refusal::NoDescriptors);
                            true
                        }
                        Err(_) => false, // nothing queued (or it gave up): done
                    };
                    // The refused socket is closed now: its descriptor
                    // becomes the reserve again.
                    self.reserve = reserve_descriptor();
                    if self.reserve.is_none() {
                        // Another thread took it: wait rather than spin.
                        return self.pause_accepting(index, &e);
                    }
                    if !refused {
                        return;
                    }
                }
                Err(e) if out_of_descriptors(&e) => {
                    return self.pause_accepting(index, &e);
                }
                Err(e) => {
                    self.res.stats.accept_errors.incr();
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Out of descriptors with no reserve to answer with: the pending
    /// connection stays in the backlog and the listener stays readable, so
    /// retrying now would spin; wait a little instead.
    fn pause_accepting(&mut self, index: usize, e: &io::Error) {
        let pause = self.config.accept_pause;
        self.tcp[index].paused = true;
        self.res
            .timers
            .arm_after(pause, TimerTarget::ResumeAccept(index));
        self.res.stats.accept_pauses.incr();
        log::warn!("accept: {e}; not accepting for {pause:?}");
    }

    /// One warning per second while out of descriptors, with the count of
    /// refusals since the last one.
    fn warn_out_of_descriptors(&mut self) {
        let now = self.res.timers.now();
        let (since, quiet) = &mut self.descriptor_warning;
        *quiet += 1;
        if since.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
            log::warn!("out of file descriptors: refused {quiet} connection(s) with the reserve descriptor");
            *since = Some(now);
            *quiet = 0;
        }
    }

    /// Sends a refused connection its service's refusal message, if any,
    /// and closes it. Counted by reason.
    fn refuse(
        &mut self,
        listener: usize,
        mut stream: TcpStream,
        peer: SocketAddr,
        reason: Refusal,
    ) {
        let endpoint = &self.tcp[listener];
        let (service, place, tls) = (endpoint.service, endpoint.place, endpoint.tls.is_some());
        if let Some(message) = self.refusal(service, place, tls, peer, reason) {
            // One try, no waiting: a fresh socket takes a short reply.
            let _ = stream.write(&message);
        }
    }

    /// Counts and logs a refusal, and returns what to tell the peer: its
    /// service's refusal message, if any (none over TLS, whose peer cannot
    /// read a plaintext word before its handshake).
    pub(super) fn refusal(
        &mut self,
        service: u16,
        place: u16,
        tls: bool,
        peer: SocketAddr,
        reason: Refusal,
    ) -> Option<Vec<u8>> {
        let stats = &self.res.stats;
        match reason {
            Refusal::ServerFull => stats.refused_server_full.incr(),
            Refusal::TooManyFromIp { .. } => stats.refused_per_ip.incr(),
            Refusal::ConnectRate => stats.refused_connect_rate.incr(),
            Refusal::Banned { .. } => stats.refused_banned.incr(),
            Refusal::Busy => stats.refused_busy.incr(),
            Refusal::NoDescriptors => stats.refused_no_descriptors.incr(),
        }
        if reason == Refusal::NoDescriptors {
            self.warn_out_of_descriptors();
        }
        let gate = Arc::clone(&self.res.gate);
        let why = Explained {
            reason,
            gate: &gate,
        };
        let what = format_args!("connection refused: {why}");
        super::warn_suspicious(&mut self.res, Source::from(peer.ip()), what);
        let service = &self.services[usize::from(service)];
        (!tls).then(|| service.refusal(usize::from(place), reason))?
    }
}

impl Shard {
    /// Serves a new connection here, or in the handoff mode on the shard
    /// with the fewest open connections. If that shard's inbox is full the
    /// connection stays here: it is never dropped for lack of a place.
    fn place(&mut self, listener: usize, stream: TcpStream, peer: SocketAddr) {
        let admitted = match self.tcp[listener].reserved {
            true => self.res.gate.admit_reserved(),
            // Counted against its client once its PROXY header is read.
            false if self.config.proxy_from.contains(peer.ip()) => {
                self.res.gate.admit_unattributed()
            }
            false => self.res.gate.admit(peer.ip(), self.res.timers.now()),
        };
        let admission = match admitted {
            Ok(admission) => admission,
            Err(reason) => return self.refuse(listener, stream, peer, reason),
        };
        let here = self.res.postbox.shard;
        let Some(target) = self.handoff.as_ref().map(Handoff::least_loaded) else {
            return self.open(listener, stream, peer, admission);
        };
        if target == here {
            return self.open(listener, stream, peer, admission);
        }
        let mail = Mail::Adopt {
            listener,
            stream: stream.into(),
            peer,
            admission,
        };
        match self.res.postbox.peers[target].post(mail) {
            Ok(()) => {
                self.res.stats.handed_off.incr();
                if let Some(handoff) = self.handoff.as_mut() {
                    handoff.sent[target] += 1;
                }
            }
            Err(Mail::Adopt {
                stream, admission, ..
            }) => self.open(listener, TcpStream::from_std(stream), peer, admission),
            Err(Mail::Message { .. }) => unreachable!("posted an Adopt"),
        }
    }

    /// Registers a connection accepted here or handed over by shard 0.
    pub(super) fn open(
        &mut self,
        listener: usize,
        mut stream: TcpStream,
        peer: SocketAddr,
        admission: Pass,
    ) {
        if let Err(e) = tune_accepted(&stream, &self.config.socket) {
            log::debug!("tuning connection from {peer}: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if u32::try_from(key).is_err() {
            // Unreachable below 2^32 descriptors; refuse rather than alias.
            self.res.stats.accept_errors.incr();
            return self.res.gate.release(admission);
        }
        let gen = self.res.generations.next();
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
            return self.res.gate.release(admission);
        }
        let now_ms = self.res.timers.now_ms();
        let endpoint = &self.tcp[listener];
        let (service, place) = (endpoint.service, endpoint.place);
        let proxy = &self.config.proxy_from;
        let proxied = !endpoint.reserved && proxy.contains(peer.ip());
        // Over TLS a stray header fails the handshake: no check needed.
        let sniffed = !endpoint.reserved && !proxy.nets().is_empty() && endpoint.tls.is_none();
        let tls = match endpoint.tls.as_ref().map(TlsSession::new).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                self.res.stats.accept_errors.incr();
                log::warn!("TLS for connection from {peer}: {e}");
                return self.res.gate.release(admission);
            }
        };
        if admission.is_trusted() && !proxied {
            self.res.stats.conns_trusted.incr();
        }
        let transport = match tls {
            Some(tls) => Transport::Tls(stream, Box::new(tls)),
            None => Transport::plain(stream),
        };
        let mut conn = TcpConn::new(transport, peer, gen, (service, place), now_ms);
        conn.state.hold_pass(admission);
        if proxied || sniffed {
            conn.state.flags.set(Flags::PROXY_PENDING);
        }
        if proxied || conn.transport.handshaking() {
            // A PROXY header and a TLS handshake are frames open from the
            // first moment: the frame timeout is their deadline.
            conn.state.deadlines.frame(now_ms, false, true);
        }
        entry.insert(conn);
        self.res.trace.accept(token, &peer);
        self.res.stats.conns_accepted.incr();
        self.res.stats.conns_open.incr();
        if !proxied {
            // A proxied connection's service hears of it with its client.
            let mut cx = ConnContext::new(key, &mut self.conns, &mut self.res);
            self.services[service as usize].on_open(&mut cx);
        }
        self.settle(key);
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
