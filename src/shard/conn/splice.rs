//! Echo in the kernel: a plain TCP connection whose service echoes
//! ([`TcpService::echoes`]) and whose input comes in bulk is read by
//! `splice(2)` into the shard's one pipe and spliced from there straight
//! back into the same socket. The received pages travel by reference, so
//! neither the kernel nor user space copies the bytes (on loopback the two
//! copies of `recv` and `send` are about a fifth of a 64 KiB echo's server
//! CPU; the rest is the TCP stack and waking up, which splicing keeps).
//!
//! The rules that keep it an echo like any other:
//! - A connection turns bulk once its service took at least [`BULK_READ`]
//!   bytes in one call, and back after [`BULK_CREDIT`] splices in a row of fewer (the tail
//!   of a burst is often small): small messages keep `recv`/`send`.
//! - Only while nothing else is pending for it (no write buffer, no held
//!   input, no flag a read step must look at): output stays in order, and
//!   pauses, EOF, closing and draining take the ordinary path.
//! - The pipe is empty whenever a step ends: what the socket did not take
//!   is copied out into the connection's write buffer (the output limits
//!   apply to it as to any output), so the next connection finds it empty.
//! - The bound: one splice moves at most `ServerConfig::splice_step`
//!   (256 KiB by default: the read budget with spliced bytes weighing a
//!   quarter, within the pipe and the output hard limit), and spliced
//!   bytes count a quarter against the read budget.
//! - Counters, deadlines and trace lines are those of a read and a write.
//! - A splice that would block means drained unless it stopped at TCP
//!   urgent data (`SIOCATMARK`), where the ordinary step's `recv` reads on.
//! - `splice` into a socket cannot pass `MSG_NOSIGNAL`: a program that
//!   embeds the library and restores `SIGPIPE`'s default action (Rust
//!   programs start with it ignored) turns splicing off.
//! - A shard that cannot make its pipe, or whose `splice` is refused
//!   (`EINVAL`, `ENOSYS`, ...), logs it once, counts `splice_failures`
//!   and echoes by copying from then on.
//!
//! [`TcpService::echoes`]: crate::service::TcpService::echoes

use std::io;
use std::os::fd::RawFd;

use super::read::{ReadOutcome, Step};
use super::state::{Flags, State};
use super::transport::Transport;
use super::Env;
use crate::config::ServerConfig;
use crate::net::buffer::Scratch;
use crate::net::pipe::Pipe;
use crate::net::sys;

/// A read of at least this many bytes turns an echo connection bulk.
/// Below it a copy costs less than the pipe's bookkeeping.
pub(crate) const BULK_READ: usize = 16 * 1024;

/// How many spliced bytes count as one read byte against the read budget
/// (the budget bounds a turn's time per connection, not its bytes; see
/// `ServerConfig::splice_step`).
const SPLICE_WEIGHT: usize = 4;

/// Splices in a row shorter than [`BULK_READ`] that turn a bulk
/// connection back to copying.
pub(crate) const BULK_CREDIT: u8 = 8;

/// A shard's means to splice: its pipe (made on first use), whether
/// splicing is on (`ServerConfig::splice`, until a failure) and the most
/// one splice may move.
#[derive(Debug)]
pub(crate) struct Splicer {
    pipe: Option<Pipe>,
    on: bool,
    max_step: usize,
}

impl Splicer {
    pub(crate) fn new(config: &ServerConfig) -> Splicer {
        Splicer {
            pipe: None,
            on: config.splice,
            max_step: config.splice_step(),
        }
    }

    /// Splicing may be used.
    pub(crate) fn on(&self) -> bool {
        self.on
    }

    /// The pipe, made now if need be; `None` once splicing is off.
    fn pipe(&mut self, env: &Env) -> Option<&mut Pipe> {
        if self.on && self.pipe.is_none() {
            match Pipe::new() {
                Ok(pipe) => self.pipe = Some(pipe),
                Err(e) => Splicer::give_up(&mut self.on, "making its pipe", &e, env),
            }
        }
        if !self.on {
            self.pipe = None; // empty: every step leaves it so
        }
        self.pipe.as_mut()
    }

    /// Turns splicing off for good on this shard (its pipe goes once
    /// emptied): logged once (it happens once), counted.
    #[cold]
    fn give_up(on: &mut bool, doing: &str, e: &io::Error, env: &Env) {
        *on = false;
        env.stats.splice_failures.incr();
        log::warn!("splice: {doing} failed ({e}); this shard echoes by copying from now on");
    }
}

/// An error that says `splice` cannot be used here at all, rather than
/// that this socket failed.
fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        )
}

impl State {
    /// Whether [`BULK_READ`] bytes or more taken by a service that echoes
    /// turn the connection bulk: plain TCP only.
    pub(crate) fn turns_bulk(&self, t: &Transport) -> bool {
        matches!(t, Transport::Plain(..)) && !self.flags.any(Flags::PROXY_PENDING)
    }

    /// One step of a bulk connection: splice what waits (within `budget`)
    /// into the pipe and back out to the socket. `None`: read the ordinary
    /// way this time (something is pending, or splicing is off).
    #[inline(never)]
    pub(crate) fn splice_step(
        &mut self,
        t: &Transport,
        splicer: &mut Splicer,
        scratch: &mut Scratch,
        budget: &mut usize,
        mut env: Env,
    ) -> Option<Step> {
        let env = &mut env;
        let flags = self.flags;
        if self.bulk == 0
            || flags.any(Flags::READ_CHECKS)
            || flags.any(Flags::DISCARDING)
            || self.write_buf.is_some()
            || self.read_buf.is_some()
        {
            return None;
        }
        let Transport::Plain(_, fd) = *t else {
            self.bulk = 0;
            return None;
        };
        let max_step = splicer.max_step;
        let Some(pipe) = splicer.pipe(env) else {
            self.bulk = 0;
            return None;
        };
        let allowance = budget.saturating_mul(SPLICE_WEIGHT).min(max_step);
        let n = match pipe.fill_from(fd, allowance) {
            Ok(n) => n,
            // Drained, unless the splice stopped at TCP urgent data, where
            // only the ordinary step's `recv` reads on past it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return match sys::at_urgent_mark(fd) {
                    Ok(false) => Some(Step::Done(ReadOutcome::Drained)),
                    _ => None,
                };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Some(Step::Again),
            Err(e) if unsupported(&e) => {
                Splicer::give_up(&mut splicer.on, "splice from a socket", &e, env);
                self.bulk = 0;
                return None;
            }
            Err(e) => {
                self.fail(&e);
                return Some(Step::Again);
            }
        };
        env.trace.splice_in(&self.peer, n);
        if n == 0 {
            self.flags.set(Flags::PEER_EOF);
            return Some(Step::Again);
        }
        env.stats.tcp_bytes_in.add(n as u64);
        *budget = budget.saturating_sub(n.div_ceil(SPLICE_WEIGHT));
        self.deadlines.io(env.now_ms);
        self.splice_back(fd, splicer, scratch, env);
        // The echo consumed it all: no frame stays open.
        self.deadlines.frame(env.now_ms, true, false);
        self.bulk = match n >= BULK_READ {
            true => BULK_CREDIT,
            false => self.bulk.saturating_sub(1),
        };
        // A short splice may mean a full pipe rather than a drained
        // socket: splice again.
        Some(match *budget {
            0 => Step::Done(ReadOutcome::BudgetSpent),
            _ => Step::Again,
        })
    }

    /// Splices what the pipe holds back out to the socket, as far as it
    /// takes it; copies the rest into the write buffer, leaving the pipe
    /// empty.
    fn splice_back(
        &mut self,
        fd: RawFd,
        splicer: &mut Splicer,
        scratch: &mut Scratch,
        env: &mut Env,
    ) {
        let Some(pipe) = splicer.pipe.as_mut() else {
            return;
        };
        let mut written = 0;
        while !pipe.is_empty() {
            match pipe.empty_into(fd, pipe.held()) {
                Ok(n) => {
                    written += n;
                    if !pipe.is_empty() {
                        break; // a short splice: the socket is full
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if unsupported(&e) => {
                    // What it holds is copied out below, as a leftover.
                    Splicer::give_up(&mut splicer.on, "splice into a socket", &e, env);
                    break;
                }
                Err(e) => {
                    self.fail(&e);
                    break;
                }
            }
        }
        env.count_sent(written);
        env.stats.tcp_bytes_spliced.add(written as u64);
        if written > 0 {
            self.deadlines.io(env.now_ms);
        }
        let left = pipe.held();
        env.trace.splice_out(&self.peer, written, left);
        if left > 0 {
            self.copy_out(pipe, scratch, env);
            if !pipe.is_empty() {
                splicer.pipe = None; // unreadable: no other connection gets its bytes
            }
        }
    }

    /// Copies what the socket did not take out of the pipe (through the
    /// scratch) into the write buffer, where the output limits apply and
    /// the write deadline starts; dropped if the connection failed.
    #[cold]
    #[inline(never)]
    fn copy_out(&mut self, pipe: &mut Pipe, scratch: &mut Scratch, env: &mut Env) {
        self.deadlines.write(env.now_ms, false, true);
        while !pipe.is_empty() {
            let room = scratch.room();
            let n = match pipe.read_into(room) {
                Ok(n) if n > 0 => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(_) => return self.fail(&io::Error::from(io::ErrorKind::UnexpectedEof)),
                Err(e) => return self.fail(&e),
            };
            if !self.flags.any(Flags::FAILED) {
                self.buffer(&room[..n], env.reborrow());
            }
        }
    }
}
