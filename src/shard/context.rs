//! The contexts services are called with: what a service may do to the
//! connections of its shard, to timers and to other shards. No socket is
//! ever handed out.
//!
//! A service may send to, or close, any connection on its shard (a chat room
//! fans a message out to its members). Connections other than the one being
//! served are noted as touched and settled by the shard after the callback
//! (write interest, deadlines, closing), so a callback never removes a
//! connection from under the shard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mio::Token;
use slab::Slab;

use super::conn::{self, Connection, Flags};
use super::deadline::TimerTarget;
use super::mailbox::{ServiceRef, Shards};
use super::Resources;
use crate::limit::{Source, StrikeOutcome, TokenBucket};
use crate::service::{ConnId, TimerId};

/// The slab key of the open connection `id` names, if any.
fn live(conns: &Slab<Connection>, id: ConnId) -> Option<usize> {
    conn::live(conns, Token(id.0 as usize))
}

/// Sends to connection `id` on behalf of a service; false if it is gone.
fn send_to(conns: &mut Slab<Connection>, res: &mut Resources, id: ConnId, bytes: &[u8]) -> bool {
    let Some(key) = live(conns, id) else {
        return false;
    };
    let now_ms = res.timers.now_ms();
    let io = &mut conns[key].io;
    io.send(bytes, &mut res.pool, &res.stats, now_ms, &res.limits);
    touch(io, res, id);
    true
}

/// Asks connection `id` to close once flushed; false if it is gone.
fn close(conns: &mut Slab<Connection>, res: &mut Resources, id: ConnId) -> bool {
    let Some(key) = live(conns, id) else {
        return false;
    };
    let io = &mut conns[key].io;
    io.flags.set(Flags::CLOSE_REQUESTED);
    touch(io, res, id);
    true
}

fn touch(io: &mut super::conn::ConnIo, res: &mut Resources, id: ConnId) {
    if !io.flags.any(Flags::TOUCHED) {
        io.flags.set(Flags::TOUCHED);
        res.touched.push(Token(id.0 as usize));
    }
}

/// What a [`TcpService`](crate::service::TcpService) can do while called
/// for one connection.
pub struct ConnContext<'a> {
    id: ConnId,
    key: usize,
    /// Which of the shard's TCP services this is, for posting.
    service: usize,
    conns: &'a mut Slab<Connection>,
    res: &'a mut Resources,
}

impl<'a> ConnContext<'a> {
    pub(crate) fn new(key: usize, conns: &'a mut Slab<Connection>, res: &'a mut Resources) -> Self {
        let conn = &conns[key];
        ConnContext {
            id: ConnId(conn.io.token(key).0 as u64),
            key,
            service: conn.service as usize,
            conns,
            res,
        }
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conns[self.key].io.peer
    }

    /// Which of its service's listeners accepted this connection: its
    /// position in [`Builder::tcp_group`](crate::Builder::tcp_group)'s
    /// addresses (0 for a listener added with `tcp`).
    pub fn listener(&self) -> usize {
        usize::from(self.conns[self.key].listener)
    }

    /// Sends `bytes` to the peer, in order after everything sent before.
    /// Nothing is lost: what the socket does not take now is buffered.
    pub fn send(&mut self, bytes: &[u8]) {
        let now_ms = self.res.timers.now_ms();
        let res = &mut *self.res;
        let io = &mut self.conns[self.key].io;
        io.send(bytes, &mut res.pool, &res.stats, now_ms, &res.limits);
    }

    /// Sends `bytes` to another connection on this shard, of any listener.
    /// Returns false if that connection is closed (or on another shard).
    pub fn send_to(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        if id == self.id {
            self.send(bytes);
            return true;
        }
        send_to(self.conns, self.res, id, bytes)
    }

    /// Closes the connection: everything sent so far is flushed, then our
    /// FIN goes out. No more input is delivered; what still arrives is
    /// read and discarded until the peer's FIN, or for at most
    /// `ServerConfig::close_linger`, so the peer reads the last reply
    /// rather than losing it to the reset that closing a socket with unread
    /// input sends.
    pub fn close(&mut self) {
        self.conns[self.key].io.flags.set(Flags::CLOSE_REQUESTED);
    }

    /// Closes another connection on this shard as [`close`](Self::close)
    /// does; false if it is already gone.
    pub fn close_conn(&mut self, id: ConnId) -> bool {
        if id == self.id {
            self.close();
            return true;
        }
        close(self.conns, self.res, id)
    }

    /// Counts messages a service decoded (`frames_in`) and sent
    /// (`frames_out`), for the metrics.
    pub fn count_frames(&mut self, decoded: u64, sent: u64) {
        self.res.stats.frames_in.add(decoded);
        self.res.stats.frames_out.add(sent);
    }

    /// Takes one token from this connection's message-rate bucket
    /// (`ServerConfig::message_rate`); false means over the rate: drop the
    /// message, and [`strike`](Self::strike). Always true with no rate set.
    pub fn take_message_token(&mut self) -> bool {
        let Some(rate) = self.res.limits.message_rate else {
            return true;
        };
        let now = self.res.timers.now();
        let conn = &mut self.conns[self.key];
        let bucket = conn
            .message_tokens
            .get_or_insert_with(|| Box::new(TokenBucket::new(&rate, now)));
        bucket.take(&rate, now)
    }

    /// Counts a protocol error or limit violation against the peer's
    /// address. Enough of them within the strike window ban the address
    /// (`ServerConfig::sources`); then this connection is closed too, and
    /// true is returned.
    pub fn strike(&mut self, why: &str) -> bool {
        let ip = self.peer_addr().ip();
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
                self.close();
                true
            }
            StrikeOutcome::AlreadyBanned { .. } => {
                self.close();
                true
            }
            StrikeOutcome::Counted { strikes } => {
                let what = format_args!("strike {strikes}: {why}");
                super::warn_suspicious(self.res, source, what);
                false
            }
            StrikeOutcome::Untracked => false,
        }
    }

    /// Bytes sent but not yet taken by the socket.
    pub fn write_buffered(&self) -> usize {
        self.conns[self.key].io.write_buffered()
    }

    /// Bytes waiting to be written to another connection on this shard
    /// (`None` if it is closed): how a fan-out spots a slow consumer.
    pub fn write_buffered_of(&self, id: ConnId) -> Option<usize> {
        live(self.conns, id).map(|key| self.conns[key].io.write_buffered())
    }

    /// Calls [`TcpService::on_timer`](crate::service::TcpService::on_timer)
    /// with `key` for this connection after `after` (within one timer
    /// tick). Dropped if the connection closes first.
    pub fn arm_timer(&mut self, after: Duration, key: u64) -> TimerId {
        let conn = Token(self.id.0 as usize);
        let target = TimerTarget::ConnService { conn, key };
        TimerId(self.res.timers.arm_after(after, target))
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.res.timers.wheel.cancel(timer.0).is_some()
    }

    /// The index of the shard this connection is served by.
    pub fn shard(&self) -> usize {
        self.res.postbox.shard
    }

    /// How many shards the server runs.
    pub fn shards(&self) -> usize {
        self.res.postbox.peers.len()
    }

    /// The wall-clock time of this loop turn, for timestamps people read.
    /// Services take time from here rather than reading a clock.
    pub fn wall_clock(&self) -> SystemTime {
        self.res.timers.wall_clock()
    }

    /// Posts `message` to this service on other shards (see
    /// [`TcpService::on_message`](crate::service::TcpService::on_message)).
    /// A shard whose inbox is full misses it, counted as `mailbox_dropped`;
    /// returns how many shards it reached.
    pub fn post(&mut self, to: Shards, message: &Arc<[u8]>) -> usize {
        let service = ServiceRef::Tcp(self.service);
        self.res.postbox.post(service, to, message)
    }
}

/// What a service can do outside any one connection: when a message from
/// another shard arrives.
pub struct ShardContext<'a> {
    pub(crate) conns: &'a mut Slab<Connection>,
    pub(crate) res: &'a mut Resources,
    pub(crate) service: ServiceRef,
}

impl ShardContext<'_> {
    /// The index of this shard.
    pub fn shard(&self) -> usize {
        self.res.postbox.shard
    }

    /// How many shards the server runs.
    pub fn shards(&self) -> usize {
        self.res.postbox.peers.len()
    }

    /// The wall-clock time of this loop turn; see [`ConnContext::wall_clock`].
    pub fn wall_clock(&self) -> SystemTime {
        self.res.timers.wall_clock()
    }

    /// Counts messages sent (`frames_out`), for the metrics.
    pub fn count_frames_out(&mut self, sent: u64) {
        self.res.stats.frames_out.add(sent);
    }

    /// Sends `bytes` to a connection on this shard; false if it is closed.
    pub fn send_to(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        send_to(self.conns, self.res, id, bytes)
    }

    /// Closes a connection on this shard once flushed; false if it is gone.
    pub fn close_conn(&mut self, id: ConnId) -> bool {
        close(self.conns, self.res, id)
    }

    /// Posts `message` to this service on other shards; see
    /// [`ConnContext::post`].
    pub fn post(&mut self, to: Shards, message: &Arc<[u8]>) -> usize {
        self.res.postbox.post(self.service, to, message)
    }
}
