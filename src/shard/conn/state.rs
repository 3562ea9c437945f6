//! A connection's state, with no syscalls: its flags, its lent read and
//! write buffers, its deadlines, its admission and message-rate bucket,
//! and the write side's procedures (send, flush, FIN) and the decision to
//! close. Each procedure takes the connection's [`Transport`] to move bytes
//! and one [`Env`] for what it borrows from the shard, so the same code
//! runs over a socket in the shard and over a fake in the tests.
//!
//! The read side's procedures are `read.rs`.

use std::io;
use std::net::SocketAddr;

use super::transport::Transport;
use super::Env;
use crate::limit::TokenBucket;
use crate::net::buffer::Buffer;
use crate::net::peer_addr::PeerAddr;
use crate::service::CloseReason;
use crate::shard::deadline::Deadlines;
use crate::shard::gate::{HeldPass, Pass};

/// Connection state bits; one word rather than bools keeps the slab entry small.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags(u16);

impl Flags {
    /// Not read: the write buffer is above the high-water mark.
    pub(crate) const READ_PAUSED: Flags = Flags(1);
    /// The peer closed its sending side.
    pub(crate) const PEER_EOF: Flags = Flags(1 << 1);
    /// The service asked to close: output is flushed, FIN sent, then input
    /// discarded until the peer's EOF or the linger deadline.
    pub(crate) const CLOSE_REQUESTED: Flags = Flags(1 << 2);
    /// A socket error: close at once, nothing more can be sent.
    pub(crate) const FAILED: Flags = Flags(1 << 3);
    /// Unconsumed input outgrew the read buffer.
    pub(crate) const READ_BUFFER_FULL: Flags = Flags(1 << 4);
    /// Shutting down: input is discarded, output flushed, then FIN sent.
    pub(crate) const DRAINING: Flags = Flags(1 << 5);
    /// Our FIN is sent.
    pub(crate) const WRITE_SHUT: Flags = Flags(1 << 6);
    /// Already on the shard's revisit list.
    pub(crate) const QUEUED: Flags = Flags(1 << 7);
    /// The poller reported the peer's FIN. A short read no longer means
    /// drained: the EOF behind the data must still be read, and no further
    /// readiness edge will announce it.
    pub(crate) const HUP_SEEN: Flags = Flags(1 << 8);
    /// Registered for writability: only while output waits in the buffer.
    pub(crate) const WRITE_INTEREST: Flags = Flags(1 << 9);
    /// On the shard's list of connections a service touched from another
    /// connection's callback, to be settled after it.
    pub(crate) const TOUCHED: Flags = Flags(1 << 10);
    /// Pending output passed the hard limit: close at once.
    pub(crate) const OUTPUT_OVERFLOW: Flags = Flags(1 << 11);
    /// Not read: its service paused it (`ShardContext::pause_reading_of`).
    /// Apart from `READ_PAUSED`, so the write side's resume does not undo
    /// the service's pause, nor the other way round.
    pub(crate) const SERVICE_PAUSED: Flags = Flags(1 << 12);
    /// Resumed by its service: the input it left unconsumed is offered to
    /// it again before the socket is read.
    pub(crate) const REOFFER: Flags = Flags(1 << 13);
    /// Its service asked to hear when its output drains
    /// (`ShardContext::notify_drained`).
    pub(crate) const DRAIN_WATCHED: Flags = Flags(1 << 14);
    /// Its first input goes to the PROXY protocol check (read raw, before
    /// any TLS): the header of a `proxy_from` peer, whose service has not
    /// been told of it yet (no `on_open`), or the refusal of one from
    /// anyone else (`Shard::check_proxy`).
    pub(crate) const PROXY_PENDING: Flags = Flags(1 << 15);

    /// States in which the socket is no longer read.
    pub(super) const NO_READ: Flags =
        Flags(Self::PEER_EOF.0 | Self::FAILED.0 | Self::READ_BUFFER_FULL.0);
    /// Paused, by the write side or by the service.
    pub(super) const PAUSED: Flags = Flags(Self::READ_PAUSED.0 | Self::SERVICE_PAUSED.0);
    /// States a read step must look at before reading: when none is set
    /// (the common case) one test skips them all, the PROXY check's raw
    /// read included. A connecting connection always has `WRITE_INTEREST`
    /// ([`State::begin_connect`]), so the test covers it without a bit of
    /// its own (the slab entry stays small).
    pub(super) const READ_CHECKS: Flags = Flags(
        Self::NO_READ.0
            | Self::PAUSED.0
            | Self::REOFFER.0
            | Self::WRITE_INTEREST.0
            | Self::PROXY_PENDING.0,
    );
    /// States in which input is read only to be discarded.
    pub(crate) const DISCARDING: Flags = Flags(Self::DRAINING.0 | Self::CLOSE_REQUESTED.0);
    /// States that keep a read step off the common pass
    /// (`State::read_plain`).
    pub(super) const NOT_PLAIN_STEP: Flags = Flags(Self::READ_CHECKS.0 | Self::DISCARDING.0);

    pub(crate) fn any(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    pub(crate) fn set(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    pub(crate) fn clear(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
}

/// Everything a connection is besides its transport.
#[derive(Debug)]
pub(crate) struct State {
    /// 16 bytes: IPv4 inline, IPv6 boxed. Also the source its pass counts
    /// against: take the pass ([`take_pass`](Self::take_pass)) before
    /// changing it.
    pub(crate) peer: PeerAddr,
    /// What the service left unconsumed, and output the socket did not
    /// take: boxed, as both are held only while a connection is busy, and
    /// a pointer each is all an idle connection pays for them.
    pub(crate) read_buf: Option<Box<Buffer>>,
    pub(crate) write_buf: Option<Box<Buffer>>,
    pub(crate) deadlines: Deadlines,
    /// Its count against the server's and its source's caps, without the
    /// source (which is `peer`): see [`hold_pass`](Self::hold_pass).
    admission: Option<HeldPass>,
    /// Its message-rate bucket, once a service asked for a token (boxed:
    /// with no rate set, every connection pays one pointer, not 24 bytes).
    pub(crate) message_tokens: Option<Box<TokenBucket>>,
    pub(crate) flags: Flags,
    /// Non-zero while its input comes in bulk and its service echoes:
    /// read by splicing (`splice.rs`), counting down short splices. A
    /// byte of what was padding, not a flag bit (all 16 are taken).
    pub(crate) bulk: u8,
}

/// What the shard does with a connection after it settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Close it, for this reason.
    Close(CloseReason),
    /// Keep it, registered for writability only while output waits.
    Open { wants_write: bool },
}

impl State {
    pub(crate) fn new(peer: SocketAddr, now_ms: u32) -> State {
        State {
            peer: peer.into(),
            read_buf: None,
            write_buf: None,
            deadlines: Deadlines::new(now_ms),
            admission: None,
            message_tokens: None,
            flags: Flags::default(),
            bulk: 0,
        }
    }

    /// Keeps the pass it was admitted with, for its address `peer`.
    pub(crate) fn hold_pass(&mut self, pass: Pass) {
        self.admission = Some(pass.hold(self.peer.ip()));
    }

    /// The pass it holds, to give back or trade (before `peer` changes).
    pub(crate) fn take_pass(&mut self) -> Option<Pass> {
        let held = self.admission.take()?;
        Some(held.unhold(self.peer.ip()))
    }

    /// Bytes waiting in the write buffer.
    pub(crate) fn write_buffered(&self) -> usize {
        self.write_buf.as_ref().map_or(0, |buf| buf.len())
    }

    /// Output not yet on the socket: the write buffer, or TLS records.
    #[inline]
    pub(crate) fn output_pending(&self, t: &Transport) -> bool {
        self.write_buffered() > 0 || t.output_pending()
    }

    /// Queues `bytes` for the peer: straight to the socket while nothing is
    /// buffered, the remainder into the write buffer, within the output
    /// limits.
    #[inline(always)]
    pub(crate) fn send(&mut self, t: &mut Transport, bytes: &[u8], env: &mut Env) {
        // The common case in one test: nothing waits, output is open, and
        // not connecting (which keeps write interest).
        let busy = Flags(
            Flags::FAILED.0
                | Flags::WRITE_SHUT.0
                | Flags::OUTPUT_OVERFLOW.0
                | Flags::WRITE_INTEREST.0,
        );
        if self.flags.any(busy) || self.write_buf.is_some() {
            return self.send_behind(t, bytes, env.reborrow());
        }
        if let Some(rest) = self.write_through(t, bytes, env) {
            self.buffer(rest, env.reborrow());
        }
    }

    /// [`State::send`] when something may stand in the way.
    #[inline(never)]
    fn send_behind(&mut self, t: &mut Transport, bytes: &[u8], mut env: Env) {
        let env = &mut env;
        let gone = Flags(Flags::FAILED.0 | Flags::WRITE_SHUT.0 | Flags::OUTPUT_OVERFLOW.0);
        if self.flags.any(gone) {
            return; // nothing more can reach the peer
        }
        // Before the connect completes, everything waits in the buffer.
        let rest = match self.write_buf.is_none() && !self.connecting() {
            true => self.write_through(t, bytes, env),
            false => Some(bytes),
        };
        if let Some(rest) = rest {
            self.buffer(rest, env.reborrow());
        }
    }

    /// Writes `bytes` to the socket, nothing being buffered; returns what
    /// it did not take, if anything (`None` after a failure too).
    #[inline(always)]
    fn write_through<'b>(
        &mut self,
        t: &mut Transport,
        bytes: &'b [u8],
        env: &mut Env,
    ) -> Option<&'b [u8]> {
        let mut sent = 0;
        let written = t.write(bytes, &mut sent);
        env.count_sent(sent);
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                self.fail(&e);
                return None;
            }
        };
        env.trace.write(&self.peer, n, bytes.len() - n);
        if n > 0 {
            self.deadlines.io(env.now_ms);
        }
        if n == bytes.len() {
            return None;
        }
        self.deadlines.write(env.now_ms, false, true);
        Some(&bytes[n..])
    }

    /// Appends `rest` to the write buffer, or, past the hard limit, frees
    /// it and marks the connection to close.
    #[inline(never)]
    pub(super) fn buffer(&mut self, rest: &[u8], env: Env) {
        let pending = self.write_buffered() + rest.len();
        if pending > env.limits.output_hard {
            // Free the memory now; the shard closes the connection next.
            self.flags.set(Flags::OUTPUT_OVERFLOW);
            if let Some(buf) = self.write_buf.take() {
                env.pool.give(*buf);
            }
            return;
        }
        let buf = self.write_buf.get_or_insert_with(|| {
            env.trace.lent(&self.peer, "write");
            Box::new(env.pool.take())
        });
        let before = buf.capacity();
        buf.extend_from_slice(rest);
        env.pool.note_growth(before, buf.capacity());
        self.deadlines
            .output(env.now_ms, pending > env.limits.output_soft);
    }

    /// Writes out pending TLS records and the write buffer as far as the
    /// socket takes them, and returns the buffer to the pool once empty.
    /// Returns true when reading should resume (the buffer fell below the
    /// low-water mark).
    pub(crate) fn flush(&mut self, t: &mut Transport, env: &mut Env) -> bool {
        let (now_ms, limits) = (env.now_ms, env.limits);
        let mut sent = 0;
        if let Err(e) = t.flush(&mut sent) {
            self.fail(&e);
        }
        if let Some(mut buf) = self.write_buf.take() {
            match t.write(buf.as_slice(), &mut sent) {
                Ok(n) => {
                    buf.consume(n);
                    env.trace.write(&self.peer, n, buf.len());
                    if n > 0 {
                        self.deadlines.io(now_ms);
                    }
                    self.deadlines.write(now_ms, n > 0, !buf.is_empty());
                    self.deadlines
                        .output(now_ms, buf.len() > limits.output_soft);
                }
                Err(e) => self.fail(&e),
            }
            self.write_buf = Some(buf);
        }
        env.count_sent(sent);
        let release = self.flags.any(Flags::FAILED)
            || self.write_buf.as_ref().is_some_and(|buf| buf.is_empty());
        if let Some(buf) = self.write_buf.take_if(|_| release) {
            env.trace.returned(&self.peer, "write");
            env.pool.give(*buf);
        }
        let resume = self.flags.any(Flags::READ_PAUSED) && self.write_buffered() < limits.low_water;
        if resume {
            self.flags.clear(Flags::READ_PAUSED);
            env.trace
                .backpressure(&self.peer, false, self.write_buffered());
        }
        resume
    }

    /// After anything happened: a closing connection (service close or
    /// shutdown) sends its FIN once flushed, and a service close starts
    /// lingering then; says whether to close now, and if not, whether
    /// output waits.
    #[inline]
    pub(crate) fn settle(&mut self, t: &mut Transport, env: &mut Env) -> Settled {
        if self.connecting() {
            return self.settle_connecting();
        }
        if self.flags.any(Flags::DISCARDING) {
            self.shut_write_when_flushed(t, env);
        }
        if self.flags.any(Flags::CLOSE_REQUESTED) && self.flags.any(Flags::WRITE_SHUT) {
            self.deadlines.linger(env.now_ms);
        }
        match self.close_reason(t) {
            Some(reason) => Settled::Close(reason),
            None => Settled::Open {
                wants_write: self.output_pending(t),
            },
        }
    }

    /// Nothing for settling to do: not connecting, no closing, failure or
    /// limit, no output waiting or write interest to drop, and the deadline timer armed
    /// with no deadline appeared since (what `settle` and
    /// `Timers::arm_deadline` would conclude, in one test).
    #[inline(always)]
    pub(crate) fn quiet(&self, t: &Transport) -> bool {
        let loud = Flags(
            Flags::FAILED.0
                | Flags::READ_BUFFER_FULL.0
                | Flags::OUTPUT_OVERFLOW.0
                | Flags::PEER_EOF.0
                | Flags::DISCARDING.0
                | Flags::WRITE_INTEREST.0, // always set while connecting
        );
        !self.flags.any(loud)
            && self.write_buf.is_none()
            && !t.output_pending()
            && self.deadlines.settled()
    }

    /// Sends our FIN once the write buffer is empty, so a draining peer sees
    /// EOF after the last byte it is owed. Over TLS, close_notify goes
    /// first, and the FIN once it is written.
    fn shut_write_when_flushed(&mut self, t: &mut Transport, env: &mut Env) {
        if self.write_buffered() > 0 || self.flags.any(Flags::WRITE_SHUT) {
            return;
        }
        let mut sent = 0;
        let shut = t.shut_write(&mut sent);
        env.count_sent(sent);
        match shut {
            Ok(true) => self.flags.set(Flags::WRITE_SHUT),
            Ok(false) => {} // close_notify goes with the next flush
            Err(e) => self.fail(&e),
        }
    }

    /// The reason to close now, or `None` while the connection should live.
    #[inline]
    pub(crate) fn close_reason(&self, t: &Transport) -> Option<CloseReason> {
        let flags = self.flags;
        if flags.any(Flags::FAILED) {
            return Some(CloseReason::Error);
        }
        if flags.any(Flags::READ_BUFFER_FULL) {
            return Some(CloseReason::ReadBufferFull);
        }
        if flags.any(Flags::OUTPUT_OVERFLOW) {
            return Some(CloseReason::OutputHardLimit);
        }
        if self.output_pending(t) {
            return None;
        }
        if !flags.any(Flags::PEER_EOF) {
            return None; // a closing connection lingers for the peer's EOF
        }
        Some(if flags.any(Flags::CLOSE_REQUESTED) {
            CloseReason::Service
        } else if flags.any(Flags::DRAINING) {
            CloseReason::Shutdown
        } else {
            CloseReason::PeerClosed
        })
    }

    /// A connection still connecting has nothing to flush and no FIN to
    /// send: closing it (by its service or by shutdown) ends it at once.
    /// Writability is watched meanwhile, as it announces the outcome.
    fn settle_connecting(&self) -> Settled {
        let flags = self.flags;
        let reason = if flags.any(Flags::FAILED) {
            CloseReason::Error
        } else if flags.any(Flags::OUTPUT_OVERFLOW) {
            CloseReason::OutputHardLimit
        } else if flags.any(Flags::CLOSE_REQUESTED) {
            CloseReason::Service
        } else if flags.any(Flags::DRAINING) {
            CloseReason::Shutdown
        } else {
            return Settled::Open { wants_write: true };
        };
        Settled::Close(reason)
    }

    /// An outbound connect began: the connect timeout counts from now,
    /// and writability, which announces the outcome, is watched (kept by
    /// settling until connected, so `WRITE_INTEREST` stands for connecting
    /// in the hot path's flag tests).
    pub(crate) fn begin_connect(&mut self, now_ms: u32) {
        self.flags.set(Flags::WRITE_INTEREST);
        self.deadlines.connecting(now_ms);
    }

    /// The connect completed: reading and writing begin, and the idle
    /// clock starts now.
    pub(crate) fn connected(&mut self, now_ms: u32) {
        self.deadlines.connected(now_ms);
    }

    /// An outbound connection whose connect has not completed: nothing is
    /// read or written, output waits in the buffer, and writability (the
    /// connect's outcome) is watched. (Kept by its deadline, which runs
    /// exactly as long: no flag bit of its own.)
    #[inline]
    pub(crate) fn connecting(&self) -> bool {
        self.deadlines.is_connecting()
    }

    pub(crate) fn fail(&mut self, e: &io::Error) {
        log::debug!("connection from {}: {e}", self.peer);
        self.flags.set(Flags::FAILED);
    }
}
