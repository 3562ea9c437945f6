//! The read side of a connection's state: one read per step, and what
//! each read changes (the budget, buffer growth up to the frame limit,
//! backpressure at the high-water mark, input discarded while closing or
//! draining, the frame deadline). The shard loops over the steps and calls
//! the service (`Shard::read`); these procedures never see it.
//!
//! One `read` per step: a read that fills less than it asked for means the
//! socket is drained, so no second syscall is spent just to see
//! `WouldBlock` -- unless the peer's FIN was reported, which may sit behind
//! the data just read.

use std::io;

use super::state::{Flags, State};
use super::transport::{Received, Transport};
use super::Env;
use crate::net::buffer::Buffer;
use crate::net::tls::TlsFailure;

/// How reading a connection ended, for the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// The socket has nothing more to read now.
    Drained,
    /// The byte budget ran out with input possibly left: revisit.
    BudgetSpent,
    /// Not reading (backpressure, paused by the service, EOF, closing or
    /// failed).
    Stopped,
}

/// What one step of reading asks of the shard.
#[derive(Debug)]
pub(crate) enum Step {
    /// Stop reading, with this outcome.
    Done(ReadOutcome),
    /// Step again: nothing for the service this time (EOF noted, input
    /// discarded, TLS records only, an interrupted read).
    Again,
    /// The peer's TLS failed and the connection with it: log the failure,
    /// then step again (which stops).
    TlsFailed(Box<TlsFailure>),
    /// Input for the service: call it with [`Input::bytes`], then hand the
    /// input back to [`State::delivered`].
    Deliver(Input),
}

/// Input out of its connection while the service reads it, so that the
/// service may reach every connection of the shard, this one included.
#[derive(Debug)]
pub(crate) struct Input {
    buf: Buffer,
    /// `buf` is the shard's scratch buffer, not the connection's own.
    scratch: bool,
    drained: bool,
}

impl Input {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.as_slice()
    }
}

impl State {
    /// One read, within what is left of `budget`.
    #[inline]
    pub(crate) fn read(&mut self, t: &mut Transport, budget: &mut usize, env: &mut Env) -> Step {
        // The service may have closed the connection in the last callback.
        let discarding = self.flags.any(Flags::DISCARDING);
        if self.flags.any(Flags::READ_CHECKS) {
            if let Some(step) = self.before_read(discarding, env.limits.high_water) {
                return step;
            }
        }
        if !discarding && self.write_buffered() >= env.limits.high_water {
            self.flags.set(Flags::READ_PAUSED);
            env.stats.backpressure_pauses.incr();
            env.trace
                .backpressure(&self.peer, true, self.write_buffered());
            return Step::Done(ReadOutcome::Stopped);
        }
        // What the service left unconsumed is held to the frame limit,
        // whatever the pooled buffer's size.
        let max = env.limits.max_read_buffer;
        // Nothing held: read whatever waits into the shard's scratch buffer
        // (up to the frame limit); only leftovers are copied out to keep.
        let (mut buf, scratch, limit) = match self.read_buf.take() {
            Some(buf) => (*buf, false, usize::MAX),
            None => {
                env.trace.lent(&self.peer, "read");
                match env.pool.take_scratch() {
                    Some(buf) => (buf, true, max),
                    None => (env.pool.take(), false, usize::MAX),
                }
            }
        };
        if buf.len() >= max {
            self.read_buf = Some(Box::new(buf));
            self.flags.set(Flags::READ_BUFFER_FULL);
            return Step::Done(ReadOutcome::Stopped);
        }
        if buf.spare_mut().is_empty() {
            let before = buf.capacity();
            buf.grow_to((before * 2).min(max));
            env.pool.note_growth(before, buf.capacity());
        }
        let spare = buf.spare_mut();
        let asked = spare.len().min(*budget).min(limit);
        let mut sent = 0;
        let received = match self.flags.any(Flags::PROXY_PENDING) {
            true => t.read_raw(&mut spare[..asked]),
            false => t.read(spare, asked, &mut sent),
        };
        env.count_sent(sent);
        let step = match received {
            Ok(Received::Bytes {
                plain,
                wire,
                drained,
            }) => {
                env.trace.read(&self.peer, wire);
                buf.commit(plain);
                env.stats.tcp_bytes_in.add(wire as u64);
                *budget = budget.saturating_sub(wire.max(plain));
                self.deadlines.io(env.now_ms);
                let input = Input {
                    buf,
                    scratch,
                    drained,
                };
                if discarding {
                    env.stats.tcp_bytes_discarded.add(plain as u64);
                    let all = input.buf.len();
                    return self.consumed(t, input, all, *budget, env);
                }
                if plain == 0 {
                    // TLS records with nothing for the service yet.
                    return self.consumed(t, input, 0, *budget, env);
                }
                return Step::Deliver(input);
            }
            Ok(Received::Eof) => {
                env.trace.read(&self.peer, 0);
                self.flags.set(Flags::PEER_EOF);
                Step::Again
            }
            Ok(Received::TlsFailed(failure)) => {
                env.stats.tls_errors.incr();
                self.flags.set(Flags::FAILED);
                Step::TlsFailed(failure)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Done(ReadOutcome::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
            Err(e) => {
                self.fail(&e);
                Step::Again
            }
        };
        self.keep(buf, scratch, env);
        step
    }

    /// What a read step does instead of reading in the states of
    /// [`Flags::READ_CHECKS`]: stop, or offer again what the service left
    /// unconsumed when it paused (resumed: it may hold whole frames, and
    /// no read may bring more).
    /// `None`: read.
    #[cold]
    fn before_read(&mut self, discarding: bool, high_water: usize) -> Option<Step> {
        if self.flags.any(Flags::NO_READ) || self.connecting() {
            return Some(Step::Done(ReadOutcome::Stopped));
        }
        if discarding {
            return None;
        }
        if self.flags.any(Flags::PAUSED) {
            return Some(Step::Done(ReadOutcome::Stopped));
        }
        // Above the high-water mark the caller pauses reading first.
        if self.flags.any(Flags::REOFFER) && self.write_buffered() < high_water {
            self.flags.clear(Flags::REOFFER);
            if let Some(buf) = self.read_buf.take_if(|buf| !buf.is_empty()) {
                return Some(Step::Deliver(Input {
                    buf: *buf,
                    scratch: false,
                    drained: false,
                }));
            }
        }
        None
    }

    /// The service took `consumed` bytes of `input` (more counts as all);
    /// `budget` is what is left of it. `None`: read again.
    #[inline(always)]
    pub(crate) fn delivered(
        &mut self,
        t: &Transport,
        input: Input,
        consumed: usize,
        budget: usize,
        env: &mut Env,
    ) -> Option<ReadOutcome> {
        let consumed = consumed.min(input.buf.len());
        match self.consumed(t, input, consumed, budget, env) {
            Step::Done(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// Drops what was consumed, keeps the rest as an open frame, and says
    /// whether to read on.
    #[inline(always)]
    fn consumed(
        &mut self,
        t: &Transport,
        mut input: Input,
        consumed: usize,
        budget: usize,
        env: &mut Env,
    ) -> Step {
        input.buf.consume(consumed);
        // Every byte that opens a frame counts: an unfinished TLS handshake
        // or a TLS record partly received is an open frame too, so the
        // frame timeout is its deadline (a record trickled a byte at a
        // time after the handshake gave the service nothing to hold).
        let open = !input.buf.is_empty() || t.input_open();
        self.deadlines.frame(env.now_ms, consumed > 0, open);
        self.keep(input.buf, input.scratch, env);
        if input.drained && !self.flags.any(Flags::HUP_SEEN) {
            Step::Done(ReadOutcome::Drained)
        } else if budget == 0 {
            Step::Done(ReadOutcome::BudgetSpent)
        } else {
            Step::Again
        }
    }

    /// Drops the first `consumed` bytes of `input` (a PROXY header) and
    /// keeps the rest to be offered to the service by the next step.
    pub(crate) fn requeue(
        &mut self,
        t: &Transport,
        mut input: Input,
        consumed: usize,
        env: &mut Env,
    ) {
        input.buf.consume(consumed);
        let open = !input.buf.is_empty() || t.input_open();
        self.deadlines.frame(env.now_ms, consumed > 0, open);
        if !input.buf.is_empty() {
            self.flags.set(Flags::REOFFER);
        }
        self.keep(input.buf, input.scratch, env);
    }

    /// Puts the read buffer back, or returns it to the pool if empty: an
    /// idle connection holds no buffer memory. What is left in the scratch
    /// buffer moves to a pooled buffer of the connection's own (traced as
    /// the one lent buffer the connection keeps).
    #[inline(always)]
    fn keep(&mut self, buf: Buffer, scratch: bool, env: &mut Env) {
        if scratch {
            if !buf.is_empty() {
                let mut own = env.pool.take();
                let before = own.capacity();
                own.extend_from_slice(buf.as_slice());
                env.pool.note_growth(before, own.capacity());
                self.read_buf = Some(Box::new(own));
            } else {
                env.trace.returned(&self.peer, "read");
            }
            env.pool.give_scratch(buf);
        } else if buf.is_empty() {
            env.trace.returned(&self.peer, "read");
            env.pool.give(buf);
        } else {
            self.read_buf = Some(Box::new(buf));
        }
    }
}
