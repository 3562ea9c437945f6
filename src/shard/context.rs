//! The contexts services are called with: what a service may do to the
//! connections of its shard, to timers and to other shards. No socket is
//! ever handed out.
//!
//! One capability underlies them all, the [`Loop`]: time, service timers,
//! posting, strikes and counters. [`ShardContext`] adds the shard's
//! connections, [`ConnContext`] the connection being served, and
//! [`DatagramContext`] a UDP socket's replies; each derefs to the one
//! below, so every ability is reached the same way from every context.
//!
//! A service may send to, or close, any connection on its shard (a chat room
//! fans a message out to its members). Connections other than the one being
//! served are noted as touched and settled by the shard after the callback
//! (write interest, deadlines, closing), so a callback never removes a
//! connection from under the shard.

use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::Token;
use slab::Slab;

use super::conn::{self, Flags, TcpConn};
use super::deadline::TimerTarget;
use super::mailbox::{ServiceRef, Shards};
use super::outbound::{self, ConnectError};
use super::Resources;
use crate::limit::{Source, StrikeOutcome, TokenBucket};
use crate::net::udp_batch::SendQueue;
use crate::service::{ConnId, TimerId};

/// What every service callback can do, whatever it was called for: read
/// the turn's time, arm and cancel the service's own timers, post to the
/// same service on other shards, strike an address, and move counters.
pub struct Loop<'a> {
    pub(crate) res: &'a mut Resources,
    pub(crate) service: ServiceRef,
}

impl Loop<'_> {
    /// The time of this loop turn. Services take time from here rather
    /// than reading a clock, which keeps them testable on a virtual one.
    pub fn now(&self) -> Instant {
        self.res.timers.now()
    }

    /// The wall-clock time of this loop turn, for timestamps people read.
    pub fn wall_clock(&self) -> SystemTime {
        self.res.timers.wall_clock()
    }

    /// The index of this shard.
    pub fn shard(&self) -> usize {
        self.res.postbox.shard
    }

    /// How many shards the server runs.
    pub fn shards(&self) -> usize {
        self.res.postbox.peers.len()
    }

    /// Posts `message` to this service on other shards (its `on_message`).
    /// A shard whose inbox is full misses it, counted as
    /// `mailbox_dropped`; returns how many shards it reached. (A service
    /// that would rather keep and retry a refused message:
    /// [`try_post`](Self::try_post).)
    pub fn post(&mut self, to: Shards, message: &Arc<[u8]>) -> usize {
        self.res.postbox.post(self.service, to, message)
    }

    /// Posts `message` to this service on shard `to` unless its inbox is
    /// full; true if it was taken. A refusal is not counted: the caller
    /// keeps the message and tries again later (a service timer), in
    /// order behind it whatever else it has for that shard, and counts
    /// what it finally gives up itself. (`to` past the shard count: false.)
    pub fn try_post(&mut self, to: usize, message: &Arc<[u8]>) -> bool {
        self.res.postbox.try_post(self.service, to, message)
    }

    /// Calls the service back with `key` after `after` (within one timer
    /// tick): [`TcpService::on_shard_timer`] or [`UdpService::on_timer`].
    /// A timer of the service, not of a connection: see
    /// [`ConnContext::arm_timer`] for one that dies with its connection.
    ///
    /// [`TcpService::on_shard_timer`]: crate::service::TcpService::on_shard_timer
    /// [`UdpService::on_timer`]: crate::service::UdpService::on_timer
    pub fn arm_timer(&mut self, after: Duration, key: u64) -> TimerId {
        let target = match self.service {
            ServiceRef::Tcp(service) => TimerTarget::TcpService { service, key },
            ServiceRef::Udp(socket) => TimerTarget::UdpService { socket, key },
        };
        TimerId(self.res.timers.arm_after(after, target))
    }

    /// Cancels any timer this service armed; false if it already fired or
    /// was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.res.timers.wheel.cancel(timer.0).is_some()
    }

    /// Counts a protocol error or limit violation against `ip`'s source.
    /// Enough within the strike window ban it (`ServerConfig::sources`);
    /// returns true if the source is banned now. A trusted source
    /// (`ServerConfig::trusted`) is never banned.
    pub fn strike_source(&mut self, ip: IpAddr, why: &str) -> bool {
        let source = Source::from(ip);
        let Some(outcome) = self.res.gate.strike(ip, self.res.timers.now()) else {
            self.res.stats.strikes_trusted.incr();
            log::debug!("{source} (trusted, never banned): {why}");
            return false;
        };
        match outcome {
            StrikeOutcome::Banned { until_in } => {
                // Never held back: at most one per source per ban, and the
                // line an operator looks for.
                let limits = self.res.gate.sources.limits();
                log::warn!(
                    "{source}: banned for {until_in:?} after {} strikes within {:?}, the last: \
                     {why} (--ban-after, --strike-window, --ban-for, or --trusted to exempt \
                     a network)",
                    limits.ban_after,
                    limits.strike_window
                );
                true
            }
            StrikeOutcome::AlreadyBanned { .. } => true,
            StrikeOutcome::Counted { strikes } => {
                let what = format_args!("strike {strikes}: {why}");
                super::warn_suspicious(self.res, source, what);
                false
            }
            StrikeOutcome::Untracked => false,
        }
    }

    /// Counts messages a service decoded (`frames_in`) and sent
    /// (`frames_out`), for the metrics.
    pub fn count_frames(&mut self, decoded: u64, sent: u64) {
        self.res.stats.frames_in.add(decoded);
        self.res.stats.frames_out.add(sent);
    }

    /// Adds `n` to this service's counter number `counter` (its place in
    /// the service's `counters()` list). An index past that list is a bug
    /// in the service: ignored, and logged once per call at debug.
    pub fn add(&mut self, counter: usize, n: u64) {
        if let Some(counter) = self.counter(counter) {
            counter.add(n);
        }
    }

    /// Subtracts `n` from this service's gauge number `counter`.
    pub fn sub(&mut self, counter: usize, n: u64) {
        if let Some(counter) = self.counter(counter) {
            counter.sub(n);
        }
    }

    fn counter(&self, counter: usize) -> Option<&crate::metrics::Counter> {
        let (tcp, service) = match self.service {
            ServiceRef::Tcp(i) => (true, i),
            ServiceRef::Udp(i) => (false, i),
        };
        let slot = self.res.counter_slots.slot(tcp, service, counter);
        if slot.is_none() {
            log::debug!("{:?}: no counter number {counter}", self.service);
        }
        slot.and_then(|slot| self.res.stats.service.get(slot))
    }
}

/// The slab key of the open connection `id` names, if any.
fn live(conns: &Slab<TcpConn>, id: ConnId) -> Option<usize> {
    conn::live(conns, Token(id.0 as usize))
}

/// What a [`TcpService`](crate::service::TcpService) can do outside any
/// one connection (a message from another shard, a close, a service
/// timer): reach every connection of its shard by id. Derefs to [`Loop`].
pub struct ShardContext<'a> {
    conns: &'a mut Slab<TcpConn>,
    lp: Loop<'a>,
    /// The connection a [`ConnContext`] serves: settled after its
    /// callback, so never put on the touched list.
    serving: Option<usize>,
}

impl<'a> Deref for ShardContext<'a> {
    type Target = Loop<'a>;
    fn deref(&self) -> &Loop<'a> {
        &self.lp
    }
}

impl DerefMut for ShardContext<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.lp
    }
}

impl<'a> ShardContext<'a> {
    pub(crate) fn new(
        conns: &'a mut Slab<TcpConn>,
        res: &'a mut Resources,
        service: ServiceRef,
    ) -> Self {
        ShardContext {
            conns,
            lp: Loop { res, service },
            serving: None,
        }
    }

    /// Sends `bytes` to a connection on this shard, of any listener, in
    /// order after what it was sent before; false if it is closed (or on
    /// another shard). Nothing is lost: what the socket does not take now
    /// is buffered, within the output limits.
    pub fn send_to(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        let Some(key) = live(self.conns, id) else {
            return false;
        };
        let conn = &mut self.conns[key];
        conn.state
            .send(&mut conn.transport, bytes, &mut self.lp.res.env());
        self.touch(key);
        true
    }

    /// Opens a TCP connection to `addr` from this shard, served by this
    /// service exactly like an accepted one (same buffers, backpressure,
    /// deadlines and callbacks), once connected. The connect does not
    /// block: its outcome comes later, as
    /// [`on_connected`](crate::service::TcpService::on_connected) or
    /// [`on_connect_failed`](crate::service::TcpService::on_connect_failed)
    /// (refused, unreachable, or not connected within
    /// `ServerConfig::connect_timeout`). Meanwhile the id may be sent to
    /// (the bytes wait, within the output limits), paused or closed.
    ///
    /// The connection counts towards `ServerConfig::max_conns`: when the
    /// server is full this returns [`ConnectError::ServerFull`] and nothing
    /// is opened. Plain TCP only (no TLS client). Reconnecting is the
    /// service's business.
    ///
    /// [`ConnectError::ServerFull`]: crate::service::ConnectError::ServerFull
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, ConnectError> {
        let ServiceRef::Tcp(service) = self.lp.service else {
            let e = std::io::Error::from(std::io::ErrorKind::Unsupported);
            return Err(ConnectError::Io(e));
        };
        // The builder allows at most u16::MAX TCP services.
        let key = outbound::open(self.conns, self.lp.res, service as u16, addr)?;
        self.touch(key); // settled after the callback: the timeout is armed
        Ok(ConnId(self.conns[key].token(key).0 as u64))
    }

    /// Whether a connection was opened by [`connect`](Self::connect)
    /// rather than accepted (false if it is closed).
    pub fn is_outbound(&self, id: ConnId) -> bool {
        live(self.conns, id).is_some_and(|key| self.conns[key].listener == outbound::OUTBOUND)
    }

    /// Closes a connection on this shard once what it was sent is flushed
    /// (see [`ConnContext::close`]); false if it is already gone.
    pub fn close_conn(&mut self, id: ConnId) -> bool {
        let Some(key) = live(self.conns, id) else {
            return false;
        };
        self.conns[key].state.flags.set(Flags::CLOSE_REQUESTED);
        self.touch(key);
        true
    }

    /// Stops reading a connection on this shard for the service's own
    /// reasons (a chat member whose messages wait for a full inbox): no
    /// `on_data` for it until [`resume_reading_of`](Self::resume_reading_of).
    /// Input waits in the kernel, so the peer is slowed by TCP's own flow
    /// control. Separate from the write side's backpressure (a full write
    /// buffer), so neither lifts the other; a closing connection is still
    /// read to discard its input. False if it is closed.
    pub fn pause_reading_of(&mut self, id: ConnId) -> bool {
        let Some(key) = live(self.conns, id) else {
            return false;
        };
        self.conns[key].state.flags.set(Flags::SERVICE_PAUSED);
        true
    }

    /// Reads a connection the service paused again: on the next loop turn
    /// it is offered what it left unconsumed, then read, without waiting
    /// for a readiness edge (what arrived while it was paused sent none).
    /// False if it is closed or was not paused by the service.
    pub fn resume_reading_of(&mut self, id: ConnId) -> bool {
        let Some(key) = live(self.conns, id) else {
            return false;
        };
        let conn = &mut self.conns[key];
        if !conn.state.flags.any(Flags::SERVICE_PAUSED) {
            return false;
        }
        conn.state.flags.clear(Flags::SERVICE_PAUSED);
        conn.state.flags.set(Flags::REOFFER);
        let token = conn.token(key);
        self.lp.res.resumed.push(token);
        true
    }

    /// Calls [`TcpService::on_drained`](crate::service::TcpService::on_drained)
    /// once for a connection when its write buffer has been written out
    /// (one call per request). False, and nothing is armed, if it is
    /// closed or nothing waits to be written: then it is drained already.
    pub fn notify_drained(&mut self, id: ConnId) -> bool {
        let Some(key) = live(self.conns, id) else {
            return false;
        };
        let state = &mut self.conns[key].state;
        if state.write_buf.is_none() {
            return false;
        }
        state.flags.set(Flags::DRAIN_WATCHED);
        true
    }

    /// Bytes waiting to be written to a connection (`None` if it is
    /// closed): how a fan-out spots a slow consumer.
    pub fn write_buffered_of(&self, id: ConnId) -> Option<usize> {
        live(self.conns, id).map(|key| self.conns[key].state.write_buffered())
    }

    /// `ServerConfig::output_soft_limit`: pending output a service that
    /// produces a large reply in pieces should stay under (wait for
    /// [`notify_drained`](Self::notify_drained) before adding more).
    pub fn output_soft_limit(&self) -> usize {
        self.lp.res.limits.output_soft
    }

    /// The peer address of a connection (`None` if it is closed).
    pub fn peer_addr_of(&self, id: ConnId) -> Option<SocketAddr> {
        live(self.conns, id).map(|key| self.conns[key].state.peer.get())
    }

    /// Takes one token from a connection's message-rate bucket
    /// (`ServerConfig::message_rate`); false means over the rate: drop
    /// the message and strike. Always true with no rate set, or for a
    /// closed connection.
    pub fn take_message_token_of(&mut self, id: ConnId) -> bool {
        let Some(rate) = self.lp.res.limits.message_rate else {
            return true;
        };
        let Some(key) = live(self.conns, id) else {
            return true;
        };
        let now = self.lp.res.timers.now();
        let bucket = self.conns[key]
            .state
            .message_tokens
            .get_or_insert_with(|| Box::new(TokenBucket::new(&rate, now)));
        bucket.take(&rate, now)
    }

    /// Strikes a connection's address (see [`Loop::strike_source`]); if
    /// that bans it, the connection is closed too, and true is returned.
    pub fn strike_conn(&mut self, id: ConnId, why: &str) -> bool {
        let Some(peer) = self.peer_addr_of(id) else {
            return false;
        };
        let banned = self.lp.strike_source(peer.ip(), why);
        if banned {
            self.close_conn(id);
        }
        banned
    }

    /// Marks connection `key` for settling after the callback (the one
    /// being served is settled after it anyway).
    fn touch(&mut self, key: usize) {
        if self.serving == Some(key) {
            return;
        }
        let conn = &mut self.conns[key];
        if !conn.state.flags.any(Flags::TOUCHED) {
            conn.state.flags.set(Flags::TOUCHED);
            self.lp.res.touched.push(conn.token(key));
        }
    }
}

/// What a [`TcpService`](crate::service::TcpService) can do while called
/// for one connection: a [`ShardContext`] (by `Deref`) plus that
/// connection's own abilities.
pub struct ConnContext<'a> {
    id: ConnId,
    key: usize,
    shard: ShardContext<'a>,
}

impl<'a> Deref for ConnContext<'a> {
    type Target = ShardContext<'a>;
    fn deref(&self) -> &ShardContext<'a> {
        &self.shard
    }
}

impl DerefMut for ConnContext<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.shard
    }
}

impl<'a> ConnContext<'a> {
    pub(crate) fn new(key: usize, conns: &'a mut Slab<TcpConn>, res: &'a mut Resources) -> Self {
        let conn = &conns[key];
        let (token, service) = (conn.token(key), usize::from(conn.service));
        Self::of(key, token, service, conns, res)
    }

    /// [`ConnContext::new`] for the connection at `key` whose token and
    /// service index the caller has at hand (no second look-up).
    #[inline(always)]
    pub(crate) fn of(
        key: usize,
        token: Token,
        service: usize,
        conns: &'a mut Slab<TcpConn>,
        res: &'a mut Resources,
    ) -> Self {
        let mut shard = ShardContext::new(conns, res, ServiceRef::Tcp(service));
        shard.serving = Some(key);
        let id = ConnId(token.0 as u64);
        ConnContext { id, key, shard }
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shard.conns[self.key].state.peer.get()
    }

    /// Which of its service's listeners accepted this connection: its
    /// position in [`Builder::tcp_group`](crate::Builder::tcp_group)'s
    /// addresses (0 for a listener added with `tcp`). For an outbound
    /// connection ([`ShardContext::connect`]): `u16::MAX`.
    pub fn listener(&self) -> usize {
        usize::from(self.shard.conns[self.key].listener)
    }

    /// Sends `bytes` to the peer, in order after everything sent before.
    /// Nothing is lost: what the socket does not take now is buffered.
    #[inline]
    pub fn send(&mut self, bytes: &[u8]) {
        let conn = &mut self.shard.conns[self.key];
        conn.state
            .send(&mut conn.transport, bytes, &mut self.shard.lp.res.env());
    }

    /// Closes the connection: everything sent so far is flushed, then our
    /// FIN goes out. No more input is delivered; what still arrives is
    /// read and discarded until the peer's FIN, or for at most
    /// `ServerConfig::close_linger`, so the peer reads the last reply
    /// rather than losing it to the reset that closing a socket with unread
    /// input sends.
    pub fn close(&mut self) {
        self.shard.conns[self.key]
            .state
            .flags
            .set(Flags::CLOSE_REQUESTED);
    }

    /// Stops reading this connection until the service resumes it; see
    /// [`ShardContext::pause_reading_of`]. Calls for input already read
    /// go on: return what was consumed, and the rest is offered again on
    /// resume.
    pub fn pause_reading(&mut self) {
        let id = self.id;
        self.shard.pause_reading_of(id);
    }

    /// Takes one token from this connection's message-rate bucket; see
    /// [`ShardContext::take_message_token_of`].
    pub fn take_message_token(&mut self) -> bool {
        let id = self.id;
        self.shard.take_message_token_of(id)
    }

    /// Counts a protocol error or limit violation against the peer's
    /// address (see [`Loop::strike_source`]); if that bans the address,
    /// this connection is closed too, and true is returned.
    pub fn strike(&mut self, why: &str) -> bool {
        let ip = self.peer_addr().ip();
        let banned = self.shard.lp.strike_source(ip, why);
        if banned {
            self.close();
        }
        banned
    }

    /// Bytes sent but not yet taken by the socket.
    pub fn write_buffered(&self) -> usize {
        self.shard.conns[self.key].state.write_buffered()
    }

    /// Calls [`TcpService::on_timer`](crate::service::TcpService::on_timer)
    /// with `key` for this connection after `after` (within one timer
    /// tick). Dropped if the connection closes first. (A timer of the
    /// whole service is [`Loop::arm_timer`].)
    pub fn arm_timer(&mut self, after: Duration, key: u64) -> TimerId {
        let conn = Token(self.id.0 as usize);
        let target = TimerTarget::ConnService { conn, key };
        TimerId(self.shard.lp.res.timers.arm_after(after, target))
    }
}

/// What a [`UdpService`](crate::service::UdpService) can do while handling
/// a datagram, a timer or a message: send datagrams from its socket, and
/// everything a [`Loop`] can (by `Deref`).
pub struct DatagramContext<'a> {
    queue: &'a mut SendQueue,
    lp: Loop<'a>,
    /// The datagram being handled, if any.
    received: Option<Received<'a>>,
    /// While handling a datagram from an unverified sender: how many bytes
    /// may still go back to it (anti-amplification). `None` when verified.
    budget_left: Option<usize>,
}

/// The datagram a [`DatagramContext`] is called for.
#[derive(Clone, Copy)]
pub(crate) struct Received<'a> {
    /// By reference: a per-datagram copy of a `SocketAddr` is not free.
    pub(crate) from: &'a SocketAddr,
    pub(crate) data: &'a [u8],
    /// Its slot in the receive batch the socket flushes with
    /// ([`SendQueue::flush_batch`]), so that sending it back copies nothing.
    pub(crate) slot: Option<usize>,
}

impl<'a> Deref for DatagramContext<'a> {
    type Target = Loop<'a>;
    fn deref(&self) -> &Loop<'a> {
        &self.lp
    }
}

impl DerefMut for DatagramContext<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.lp
    }
}

impl<'a> DatagramContext<'a> {
    /// A context for UDP socket `socket`; `received` is the datagram being
    /// handled, if any.
    pub(crate) fn new(
        queue: &'a mut SendQueue,
        res: &'a mut Resources,
        socket: usize,
        received: Option<Received<'a>>,
    ) -> Self {
        DatagramContext {
            queue,
            lp: Loop {
                res,
                service: ServiceRef::Udp(socket),
            },
            budget_left: received.map(|r| r.data.len()),
            received,
        }
    }

    /// Sends `data` to `to` from this socket. Replies are batched and sent
    /// after the current receive batch; if the reply queue is full the
    /// datagram is dropped and counted (UDP promises no delivery, and an
    /// unbounded queue would let a flood exhaust memory).
    ///
    /// Anti-amplification: while handling a datagram, what is sent back to
    /// its sender totals at most that datagram's size, since its source
    /// address may be forged; beyond, replies are dropped and counted
    /// (`udp_dropped_amplification`). A service that has proven the address
    /// (a handshake) lifts this with [`sender_verified`](Self::sender_verified).
    /// A drop is logged at info, at most once per source per 10 s with the
    /// count held back in between, since a service whose replies vanish
    /// this way is otherwise hard to diagnose.
    pub fn send_to(&mut self, to: SocketAddr, data: &[u8]) {
        let to_sender = self.budget_left.is_some() && self.received.is_some_and(|r| *r.from == to);
        if to_sender && !self.charge_sender(data.len()) {
            return;
        }
        if self.queue.push(to, data).is_err() {
            self.lp.res.stats.udp_dropped_queue_full.incr();
        }
    }

    /// As [`send_to`](Self::send_to), with the datagram built by `write`
    /// in place in the reply queue, not copied there: `write` appends at
    /// most `max_len` bytes and returns the destination, or `None` for
    /// nothing to send. Returns `None` without calling `write` if the
    /// queue has no room for `max_len` bytes now (the caller may then
    /// build it elsewhere and [`send_to`](Self::send_to), which counts
    /// the drop), else whether a datagram was queued.
    pub fn send_with(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Option<SocketAddr>,
    ) -> Option<bool> {
        if self.budget_left.is_some() {
            // The budget is judged per destination, known only once built.
            let mut data = Vec::with_capacity(max_len);
            let Some(to) = write(&mut data) else {
                return Some(false);
            };
            self.send_to(to, &data);
            return Some(true);
        }
        self.queue
            .push_with(max_len, write)
            .ok()
            .map(|to| to.is_some())
    }

    /// Sends the datagram being handled back to its sender unchanged: what
    /// `send_to(from, data)` with `on_datagram`'s arguments does, under the
    /// same rules, but sent from the receive buffer without a copy (unless
    /// the socket cannot take it at once). Outside `on_datagram` there is
    /// no such datagram and nothing is sent.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use sockloop::service::{DatagramContext, UdpService};
    ///
    /// /// Echoes datagrams that start with `!`.
    /// struct Bang;
    ///
    /// impl UdpService for Bang {
    ///     fn on_datagram(&mut self, out: &mut DatagramContext<'_>, _: SocketAddr, data: &[u8]) {
    ///         if data.starts_with(b"!") {
    ///             out.send_back();
    ///         }
    ///     }
    /// }
    /// ```
    pub fn send_back(&mut self) {
        let Some(received) = self.received.as_ref() else {
            return;
        };
        let (from, data, slot) = (*received.from, received.data, received.slot);
        if !self.charge_sender(data.len()) {
            return;
        }
        let queued = match slot {
            Some(slot) => self.queue.push_slot(from, slot, data.len()),
            None => self.queue.push(from, data),
        };
        if queued.is_err() {
            self.lp.res.stats.udp_dropped_queue_full.incr();
        }
    }

    /// Takes `len` bytes of a reply to the sender of the datagram being
    /// handled from its budget, or drops the reply (false) when they do not
    /// fit.
    #[inline]
    fn charge_sender(&mut self, len: usize) -> bool {
        let Some(left) = self.budget_left.as_mut() else {
            return true;
        };
        if len > *left {
            self.over_budget(len);
            return false;
        }
        *left -= len;
        true
    }

    /// A reply of `len` bytes to the sender went over its budget: counted,
    /// and logged per source at most once per 10 s.
    #[cold]
    #[inline(never)]
    fn over_budget(&mut self, len: usize) {
        let Some(received) = self.received else {
            return;
        };
        let to = *received.from;
        let res = &mut *self.lp.res;
        res.stats.udp_dropped_amplification.incr();
        let what = format_args!(
            "udp reply of {len} bytes to {to} dropped (anti-amplification): \
             replies to an unverified sender may total at most the {} bytes \
             it sent; a service that has proven the address lifts this with \
             DatagramContext::sender_verified",
            received.data.len(),
        );
        let now = res.timers.now();
        let source = Source::from(to.ip());
        let suppressor = &mut res.amplification;
        super::log_per_source(suppressor, now, log::Level::Info, source, what);
    }

    /// The sender of the datagram being handled has proven its address:
    /// replies to it may be larger than what it sent.
    pub fn sender_verified(&mut self) {
        self.budget_left = None;
    }
}
