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
        if self.flags.any(Flags::NO_READ) {
            return Step::Done(ReadOutcome::Stopped);
        }
        // The service may have closed the connection in the last callback.
        let discarding = self.flags.any(Flags::DISCARDING);
        if !discarding {
            if self.flags.any(Flags::PAUSED) {
                return Step::Done(ReadOutcome::Stopped);
            }
            if self.write_buffered() >= env.limits.high_water {
                self.flags.set(Flags::READ_PAUSED);
                env.stats.backpressure_pauses.incr();
                env.trace
                    .backpressure(self.peer, true, self.write_buffered());
                return Step::Done(ReadOutcome::Stopped);
            }
            // Resumed by the service: what it left unconsumed when it
            // paused may hold whole frames, and no read may bring more.
            if self.flags.any(Flags::REOFFER) {
                self.flags.clear(Flags::REOFFER);
                if let Some(buf) = self.read_buf.take_if(|buf| !buf.is_empty()) {
                    return Step::Deliver(Input {
                        buf,
                        drained: false,
                    });
                }
            }
        }
        env.trace
            .lent_if(self.read_buf.is_none(), self.peer, "read");
        let mut buf = self.read_buf.take().unwrap_or_else(|| env.pool.take());
        // What the service left unconsumed is held to the frame limit,
        // whatever the pooled buffer's size.
        let max = env.limits.max_read_buffer;
        if buf.len() >= max {
            self.read_buf = Some(buf);
            self.flags.set(Flags::READ_BUFFER_FULL);
            return Step::Done(ReadOutcome::Stopped);
        }
        if buf.spare_mut().is_empty() {
            let before = buf.capacity();
            buf.grow_to((before * 2).min(max));
            env.pool.note_growth(before, buf.capacity());
        }
        let spare = buf.spare_mut();
        let asked = spare.len().min(*budget);
        let mut sent = 0;
        let received = t.read(spare, asked, &mut sent);
        env.count_sent(sent);
        let step = match received {
            Ok(Received::Bytes {
                plain,
                wire,
                drained,
            }) => {
                env.trace.read(self.peer, wire);
                buf.commit(plain);
                env.stats.tcp_bytes_in.add(wire as u64);
                *budget = budget.saturating_sub(wire.max(plain));
                self.deadlines.io(env.now_ms);
                let input = Input { buf, drained };
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
                env.trace.read(self.peer, 0);
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
        self.keep(buf, env);
        step
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
        self.keep(input.buf, env);
        if input.drained && !self.flags.any(Flags::HUP_SEEN) {
            Step::Done(ReadOutcome::Drained)
        } else if budget == 0 {
            Step::Done(ReadOutcome::BudgetSpent)
        } else {
            Step::Again
        }
    }

    /// Puts the read buffer back, or returns it to the pool if empty: an
    /// idle connection holds no buffer memory.
    #[inline]
    fn keep(&mut self, buf: Buffer, env: &mut Env) {
        if buf.is_empty() {
            env.trace.returned(self.peer, "read");
            env.pool.give(buf);
        } else {
            self.read_buf = Some(buf);
        }
    }
}
