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
//!
//! The step most reads are (a plain connection holding nothing, in no
//! state a step checks) also has a one-pass form, `State::read_plain`,
//! which the shard tries first: the same rules, none of the other cases'
//! moves through memory.

use std::io;

use super::state::{Flags, State};
use super::transport::{plain_read, Received, Transport};
use super::Env;
use crate::net::buffer::{Buffer, Scratch};
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
    /// The connection's first input, for the PROXY protocol check
    /// ([`Flags::PROXY_PENDING`]) rather than its service.
    Proxy(Input),
}

/// Input for the service, held apart from its connection while the
/// service reads it, so that the service may reach every connection of the
/// shard, this one included: the first bytes of the shard's [`Scratch`]
/// (read in place, nothing moved), or the connection's own buffer when it
/// held leftovers (moved out by its pointer).
#[derive(Debug)]
pub(crate) struct Input {
    /// `None`: the input is the first `len` bytes of the scratch.
    own: Option<Box<Buffer>>,
    len: u32,
    drained: bool,
}

impl Input {
    /// The bytes, `scratch` being the shard's buffer they were read into.
    #[inline(always)]
    pub(crate) fn bytes<'a>(&'a self, scratch: &'a Scratch) -> &'a [u8] {
        match &self.own {
            Some(buf) => buf.as_slice(),
            None => scratch.filled(self.len as usize),
        }
    }

    fn len(&self) -> usize {
        match &self.own {
            Some(buf) => buf.len(),
            None => self.len as usize,
        }
    }
}

/// What the common read step did ([`State::read_plain`]).
#[derive(Debug)]
pub(crate) enum PlainRead {
    /// Input for the service, at the front of the scratch: call it, then
    /// hand the input back to [`State::delivered`].
    Bytes(Input),
    /// Stop reading, with this outcome (nothing waits).
    Done(ReadOutcome),
    /// Step with [`State::read`]: not the common case (nothing was read),
    /// or a read that brought no bytes (EOF, an error, an interruption,
    /// noted in the state for the next step to act on).
    Step,
}

impl State {
    /// The common read step, in one pass: a plain connection that holds
    /// no input, has no output waiting (so it is below the high-water
    /// mark, which is at least 1) and is in none of the states a step
    /// checks ([`Flags::READ_CHECKS`], discarding) reads whatever waits
    /// into `scratch`. It does what [`State::read`] does in that case,
    /// without the other cases' moves through memory: the echo's path.
    #[inline(always)]
    pub(crate) fn read_plain(
        &mut self,
        t: &mut Transport,
        scratch: &mut Scratch,
        budget: &mut usize,
        env: &mut Env,
    ) -> PlainRead {
        if self.flags.any(Flags::NOT_PLAIN_STEP)
            || self.read_buf.is_some()
            || self.write_buf.is_some()
        {
            return PlainRead::Step;
        }
        match t {
            Transport::Plain(_, fd) => {
                let fd = *fd;
                self.read_plain_with(|out| plain_read(fd, out), scratch, budget, env)
            }
            #[cfg(test)]
            Transport::Fake(fake) if fake.plain() => {
                self.read_plain_with(|out| fake.read(out), scratch, budget, env)
            }
            _ => PlainRead::Step,
        }
    }

    /// [`State::read_plain`] with `read`, one read of the socket, which
    /// gives the service every byte it takes (no TLS).
    #[inline(always)]
    fn read_plain_with(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<Received>,
        scratch: &mut Scratch,
        budget: &mut usize,
        env: &mut Env,
    ) -> PlainRead {
        env.trace.lent(&self.peer, "read");
        let room = scratch.room();
        let asked = room.len().min(*budget).min(env.limits.max_read_buffer);
        match read(&mut room[..asked]) {
            Ok(Received::Bytes { plain, drained, .. }) => {
                env.trace.read(&self.peer, plain);
                env.stats.tcp_bytes_in.add(plain as u64);
                *budget = budget.saturating_sub(plain);
                self.deadlines.io(env.now_ms);
                PlainRead::Bytes(Input {
                    own: None,
                    len: plain as u32, // at most SCRATCH_SIZE
                    drained,
                })
            }
            other => match self.read_nothing(other, env.reborrow()) {
                Some(outcome) => PlainRead::Done(outcome),
                None => PlainRead::Step,
            },
        }
    }

    /// [`State::read_plain`]'s read brought no bytes. (Out of line, and
    /// its answer small: the common pass keeps its input in registers.)
    #[inline(never)]
    fn read_nothing(&mut self, received: io::Result<Received>, env: Env) -> Option<ReadOutcome> {
        let trace = env.trace;
        let step = self.no_bytes(received, env);
        trace.returned(&self.peer, "read");
        match step {
            Step::Done(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// One read, within what is left of `budget`: into the connection's
    /// own buffer if it holds leftovers, otherwise into `scratch`.
    #[inline(always)]
    pub(crate) fn read(
        &mut self,
        t: &mut Transport,
        scratch: &mut Scratch,
        budget: &mut usize,
        env: &mut Env,
    ) -> Step {
        // The service may have closed the connection in the last callback.
        let discarding = self.flags.any(Flags::DISCARDING);
        let checks = self.flags.any(Flags::READ_CHECKS);
        if checks {
            if let Some(step) = self.before_read(discarding, env.limits.high_water) {
                return step;
            }
        }
        if !discarding && self.write_buffered() >= env.limits.high_water {
            return self.pause(env.reborrow());
        }
        let raw = checks && self.flags.any(Flags::PROXY_PENDING);
        let (own, received) = match self.read_buf.take() {
            // Nothing held: read whatever waits into the scratch (up to
            // the frame limit); only leftovers are copied out to keep.
            None => {
                env.trace.lent(&self.peer, "read");
                let room = scratch.room();
                let asked = room.len().min(*budget).min(env.limits.max_read_buffer);
                (None, receive(t, raw, room, asked, env))
            }
            Some(buf) => match self.read_held(t, raw, buf, *budget, env.reborrow()) {
                Some((buf, received)) => (Some(buf), received),
                None => return Step::Done(ReadOutcome::Stopped),
            },
        };
        let step = match received {
            Ok(Received::Bytes {
                plain,
                wire,
                drained,
            }) => {
                env.trace.read(&self.peer, wire);
                env.stats.tcp_bytes_in.add(wire as u64);
                *budget = budget.saturating_sub(wire.max(plain));
                self.deadlines.io(env.now_ms);
                let input = match own {
                    Some(mut buf) => {
                        buf.commit(plain);
                        Input {
                            own: Some(buf),
                            len: 0,
                            drained,
                        }
                    }
                    None => Input {
                        own: None,
                        len: plain as u32, // at most SCRATCH_SIZE
                        drained,
                    },
                };
                if discarding || plain == 0 {
                    return self.nothing_to_deliver(
                        t,
                        input,
                        scratch,
                        plain,
                        *budget,
                        env.reborrow(),
                    );
                }
                return match raw {
                    false => Step::Deliver(input),
                    true => Step::Proxy(input),
                };
            }
            other => self.no_bytes(other, env.reborrow()),
        };
        // Nothing read: the held buffer goes back as it was.
        let input = Input {
            own,
            len: 0,
            drained: false,
        };
        self.keep(input, 0, scratch, env);
        step
    }

    /// What a read that brought no bytes means: EOF, a TLS failure,
    /// drained, or a socket error.
    #[inline(never)]
    fn no_bytes(&mut self, received: io::Result<Received>, env: Env) -> Step {
        match received {
            Ok(Received::Bytes { .. }) => unreachable!("bytes are handled by the caller"),
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
        }
    }

    /// The write buffer reached the high-water mark: reading pauses until
    /// it drains below the low-water mark.
    #[cold]
    fn pause(&mut self, env: Env) -> Step {
        self.flags.set(Flags::READ_PAUSED);
        env.stats.backpressure_pauses.incr();
        env.trace
            .backpressure(&self.peer, true, self.write_buffered());
        Step::Done(ReadOutcome::Stopped)
    }

    /// One read into the connection's held buffer, grown (doubling) up to
    /// the frame limit when full. `None` when it holds the limit already:
    /// the connection closes (`READ_BUFFER_FULL`).
    #[inline(never)]
    fn read_held(
        &mut self,
        t: &mut Transport,
        raw: bool,
        mut buf: Box<Buffer>,
        budget: usize,
        env: Env,
    ) -> Option<(Box<Buffer>, io::Result<Received>)> {
        // What the service left unconsumed is held to the frame limit,
        // whatever the pooled buffer's size.
        let max = env.limits.max_read_buffer;
        if buf.len() >= max {
            self.read_buf = Some(buf);
            self.flags.set(Flags::READ_BUFFER_FULL);
            return None;
        }
        if buf.spare_mut().is_empty() {
            let before = buf.capacity();
            buf.grow_to((before * 2).min(max));
            env.pool.note_growth(before, buf.capacity());
        }
        let spare = buf.spare_mut();
        let asked = spare.len().min(budget);
        let received = receive(t, raw, spare, asked, &env);
        Some((buf, received))
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
                    own: Some(buf),
                    len: 0,
                    drained: false,
                }));
            }
        }
        None
    }

    /// Input read while discarding (`plain` bytes new) is dropped whole;
    /// TLS records with no plaintext yet leave nothing for the service.
    #[inline(never)]
    fn nothing_to_deliver(
        &mut self,
        t: &Transport,
        input: Input,
        scratch: &Scratch,
        plain: usize,
        budget: usize,
        mut env: Env,
    ) -> Step {
        let mut consumed = 0;
        if self.flags.any(Flags::DISCARDING) {
            env.stats.tcp_bytes_discarded.add(plain as u64);
            consumed = input.len();
        }
        self.consumed(t, input, scratch, consumed, budget, &mut env)
    }

    /// The service took `consumed` bytes of `input` (more counts as all);
    /// `budget` is what is left of it. `None`: read again.
    #[inline(always)]
    pub(crate) fn delivered(
        &mut self,
        t: &Transport,
        input: Input,
        scratch: &Scratch,
        consumed: usize,
        budget: usize,
        env: &mut Env,
    ) -> Option<ReadOutcome> {
        let consumed = consumed.min(input.len());
        match self.consumed(t, input, scratch, consumed, budget, env) {
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
        input: Input,
        scratch: &Scratch,
        consumed: usize,
        budget: usize,
        env: &mut Env,
    ) -> Step {
        let drained = input.drained;
        let left = self.keep(input, consumed, scratch, env);
        // Every byte that opens a frame counts: an unfinished TLS handshake
        // or a TLS record partly received is an open frame too, so the
        // frame timeout is its deadline (a record trickled a byte at a
        // time after the handshake gave the service nothing to hold).
        let open = left || t.input_open();
        self.deadlines.frame(env.now_ms, consumed > 0, open);
        if drained && !self.flags.any(Flags::HUP_SEEN) {
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
        input: Input,
        scratch: &Scratch,
        consumed: usize,
        env: &mut Env,
    ) {
        let left = self.keep(input, consumed, scratch, env);
        let open = left || t.input_open();
        self.deadlines.frame(env.now_ms, consumed > 0, open);
        if left {
            self.flags.set(Flags::REOFFER);
        }
    }

    /// Keeps what follows the first `consumed` bytes of `input` as the
    /// connection's read buffer, and says whether anything is kept. An
    /// emptied buffer goes back to the pool: an idle connection holds no
    /// buffer memory. What is left in the scratch moves to a pooled buffer
    /// of the connection's own (traced as the one lent buffer the
    /// connection keeps).
    #[inline(always)]
    fn keep(&mut self, input: Input, consumed: usize, scratch: &Scratch, env: &mut Env) -> bool {
        match input.own {
            None => {
                let len = input.len as usize;
                if consumed >= len {
                    env.trace.returned(&self.peer, "read");
                    return false;
                }
                self.keep_copy(&scratch.filled(len)[consumed..], env.reborrow());
                true
            }
            Some(mut buf) => {
                buf.consume(consumed);
                if buf.is_empty() {
                    env.trace.returned(&self.peer, "read");
                    env.pool.give(*buf);
                    return false;
                }
                self.read_buf = Some(buf);
                true
            }
        }
    }

    /// Copies leftovers out of the scratch into a pooled buffer of the
    /// connection's own.
    #[inline(never)]
    fn keep_copy(&mut self, rest: &[u8], env: Env) {
        let mut own = env.pool.take();
        let before = own.capacity();
        own.extend_from_slice(rest);
        env.pool.note_growth(before, own.capacity());
        self.read_buf = Some(Box::new(own));
    }
}

/// One read into `out` (at most `asked` bytes): raw, before any TLS, while
/// a PROXY header is due. Bytes TLS wrote meanwhile are counted.
#[inline(always)]
fn receive(
    t: &mut Transport,
    raw: bool,
    out: &mut [u8],
    asked: usize,
    env: &Env,
) -> io::Result<Received> {
    match t {
        // Raw or not, the same bytes; nothing written meanwhile.
        Transport::Plain(_, fd) => plain_read(*fd, &mut out[..asked]),
        _ => receive_other(t, raw, out, asked, env),
    }
}

/// [`receive`] over TLS (or a test's fake).
#[inline(never)]
fn receive_other(
    t: &mut Transport,
    raw: bool,
    out: &mut [u8],
    asked: usize,
    env: &Env,
) -> io::Result<Received> {
    if raw {
        return t.read_raw(&mut out[..asked]);
    }
    let mut sent = 0;
    let received = t.read(out, asked, &mut sent);
    env.count_sent(sent);
    received
}
