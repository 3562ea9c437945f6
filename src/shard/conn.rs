//! One TCP connection: its socket, its lent buffers, and the read and write
//! procedures the shard runs on readiness.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::Token;
use slab::Slab;

use super::context::ConnContext;
use super::deadline::Deadlines;
use super::limits::ConnLimits;
use super::token::Slot;
use super::Resources;
use crate::limit::{Source, TokenBucket};
use crate::metrics::ShardStats;
use crate::net::buffer::{Buffer, BufferPool};
use crate::net::tls::{TlsFailure, TlsSession, CIPHERTEXT_READ};
use crate::service::{CloseReason, TcpService};
use crate::shard::gate::Pass;

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

    /// States in which the socket is no longer read.
    const NO_READ: Flags = Flags(Self::PEER_EOF.0 | Self::FAILED.0 | Self::READ_BUFFER_FULL.0);
    /// States in which input is read only to be discarded.
    pub(crate) const DISCARDING: Flags = Flags(Self::DRAINING.0 | Self::CLOSE_REQUESTED.0);

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

/// What a connection's procedures borrow from their shard: the buffer
/// pool, the counters, the limits and the turn's time, passed as one value.
pub(crate) struct Env<'a> {
    pub(crate) pool: &'a mut BufferPool,
    pub(crate) stats: &'a ShardStats,
    pub(crate) limits: &'a ConnLimits,
    pub(crate) now_ms: u32,
}

/// How a call to [`read_ready`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// The socket has nothing more to read now.
    Drained,
    /// The byte budget ran out with input possibly left: revisit.
    BudgetSpent,
    /// Not reading (backpressure, EOF, closing or failed).
    Stopped,
}

/// A connection as the shard's slab holds it.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) io: ConnIo,
    pub(crate) read_buf: Option<Buffer>,
    /// Index of its service among the shard's TCP services.
    pub(crate) service: u16,
    /// The place of the listener that accepted it among that service's.
    pub(crate) listener: u16,
    /// Its count against the server's and its source's caps.
    pub(crate) admission: Option<Pass>,
    /// Its message-rate bucket, once a service asked for a token (boxed:
    /// with no rate set, every connection pays one pointer, not 24 bytes).
    pub(crate) message_tokens: Option<Box<TokenBucket>>,
}

/// The part of a connection a service's context may touch.
#[derive(Debug)]
pub(crate) struct ConnIo {
    pub(crate) stream: TcpStream,
    /// TLS state, on a TLS listener's connections (boxed: plain ones pay
    /// one pointer).
    pub(crate) tls: Option<Box<TlsSession>>,
    pub(crate) peer: SocketAddr,
    pub(crate) write_buf: Option<Buffer>,
    pub(crate) deadlines: Deadlines,
    pub(crate) gen: u32,
    pub(crate) flags: Flags,
}

impl Connection {
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        gen: u32,
        (service, listener): (u16, u16),
        now_ms: u32,
    ) -> Self {
        Connection {
            io: ConnIo {
                stream,
                tls: None,
                peer,
                write_buf: None,
                deadlines: Deadlines::new(now_ms),
                gen,
                flags: Flags::default(),
            },
            read_buf: None,
            service,
            listener,
            admission: None,
            message_tokens: None,
        }
    }

    /// The reason to close now, or `None` while the connection should live.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        let flags = self.io.flags;
        if flags.any(Flags::FAILED) {
            return Some(CloseReason::Error);
        }
        if flags.any(Flags::READ_BUFFER_FULL) {
            return Some(CloseReason::ReadBufferFull);
        }
        if flags.any(Flags::OUTPUT_OVERFLOW) {
            return Some(CloseReason::OutputHardLimit);
        }
        if self.io.output_pending() {
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
}

/// The slab key of the open connection `token` names, or `None` if that
/// connection is closed (its slot may already hold a newer one).
pub(crate) fn live(conns: &Slab<Connection>, token: Token) -> Option<usize> {
    match Slot::of(token) {
        Slot::Conn { key, gen } => {
            Some(key).filter(|&key| conns.get(key).is_some_and(|conn| conn.io.gen == gen))
        }
        _ => None,
    }
}

impl ConnIo {
    /// The token of this connection, which sits at `key` in the slab.
    pub(crate) fn token(&self, key: usize) -> Token {
        Slot::Conn { key, gen: self.gen }.token()
    }

    /// Bytes waiting in the write buffer.
    pub(crate) fn write_buffered(&self) -> usize {
        self.write_buf.as_ref().map_or(0, Buffer::len)
    }

    /// Queues `bytes` for the peer: straight to the socket while nothing is
    /// buffered, the remainder into the write buffer.
    pub(crate) fn send(&mut self, bytes: &[u8], env: &mut Env) {
        let (stats, now_ms, limits) = (env.stats, env.now_ms, env.limits);
        let gone = Flags(Flags::FAILED.0 | Flags::WRITE_SHUT.0 | Flags::OUTPUT_OVERFLOW.0);
        if self.flags.any(gone) {
            return; // nothing more can reach the peer
        }
        let mut rest = bytes;
        if self.write_buf.is_none() {
            match self.write_through(rest, stats) {
                Ok(n) => rest = &rest[n..],
                Err(e) => return self.fail(&e),
            }
            if rest.len() < bytes.len() {
                self.deadlines.io(now_ms);
            }
            if rest.is_empty() {
                return;
            }
            self.deadlines.write(now_ms, false, true);
        }
        let pending = self.write_buffered() + rest.len();
        if pending > limits.output_hard {
            // Free the memory now; the shard closes the connection next.
            self.flags.set(Flags::OUTPUT_OVERFLOW);
            if let Some(buf) = self.write_buf.take() {
                env.pool.give(buf);
            }
            return;
        }
        let buf = self.write_buf.get_or_insert_with(|| env.pool.take());
        let before = buf.capacity();
        buf.extend_from_slice(rest);
        env.pool.note_growth(before, buf.capacity());
        self.deadlines.output(now_ms, pending > limits.output_soft);
    }

    /// Writes out the write buffer as far as the socket takes it, and
    /// returns the buffer to the pool once empty. Returns true when reading
    /// should resume (the buffer fell below the low-water mark).
    pub(crate) fn flush(&mut self, env: &mut Env) -> bool {
        let (stats, now_ms, limits) = (env.stats, env.now_ms, env.limits);
        if let Some(Err(e)) = self
            .tls
            .as_mut()
            .map(|tls| write_records(tls, &mut self.stream, stats))
        {
            self.fail(&e);
        }
        if let Some(mut buf) = self.write_buf.take() {
            match self.write_through(buf.as_slice(), stats) {
                Ok(n) => {
                    buf.consume(n);
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
        let release =
            self.flags.any(Flags::FAILED) || self.write_buf.as_ref().is_some_and(Buffer::is_empty);
        if let Some(buf) = self.write_buf.take_if(|_| release) {
            env.pool.give(buf);
        }
        let resume = self.flags.any(Flags::READ_PAUSED) && self.write_buffered() < limits.low_water;
        if resume {
            self.flags.clear(Flags::READ_PAUSED);
        }
        resume
    }

    /// Sends our FIN once the write buffer is empty, so a draining peer sees
    /// EOF after the last byte it is owed. Over TLS, close_notify goes
    /// first, and the FIN once it is written.
    pub(crate) fn shut_write_when_flushed(&mut self, stats: &ShardStats) {
        if self.write_buffered() > 0 || self.flags.any(Flags::WRITE_SHUT) {
            return;
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.close_notify();
            if let Err(e) = write_records(tls, &mut self.stream, stats) {
                return self.fail(&e);
            }
            if tls.wants_write() {
                return; // the rest goes with the next flush
            }
        }
        self.flags.set(Flags::WRITE_SHUT);
        if let Err(e) = self.stream.shutdown(std::net::Shutdown::Write) {
            self.fail(&e);
        }
    }

    /// Output not yet on the socket: the write buffer, or TLS records.
    pub(crate) fn output_pending(&self) -> bool {
        self.write_buffered() > 0 || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// Writes `bytes` straight to the peer as far as the socket takes them;
    /// returns how many were taken. Over TLS they go to rustls (up to its
    /// buffer limit) and its records to the socket.
    fn write_through(&mut self, bytes: &[u8], stats: &ShardStats) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return write_until_full(&mut self.stream, bytes, stats);
        };
        write_records(tls, &mut self.stream, stats)?;
        if tls.wants_write() {
            return Ok(0); // the socket is full: keep the plaintext
        }
        let taken = tls.write_plaintext(bytes);
        write_records(tls, &mut self.stream, stats)?;
        Ok(taken)
    }

    /// One read from the peer into `out`: plaintext bytes and the socket
    /// bytes they took (the same without TLS).
    fn read_into(
        &mut self,
        out: &mut [u8],
        asked: usize,
        stats: &ShardStats,
    ) -> io::Result<ReadResult> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(match self.stream.read(&mut out[..asked])? {
                0 => ReadResult::Eof,
                n => ReadResult::Bytes {
                    plain: n,
                    wire: n,
                    drained: n < asked,
                },
            });
        };
        // Decrypted bytes waiting in rustls come first.
        let plain = tls.read_plaintext(out);
        if plain > 0 {
            return Ok(ReadResult::Bytes {
                plain,
                wire: 0,
                drained: false,
            });
        }
        if tls.peer_closed() {
            return Ok(ReadResult::Eof);
        }
        let cap = asked.min(CIPHERTEXT_READ);
        let wire = self.stream.read(&mut out[..cap])?;
        if wire == 0 {
            return Ok(ReadResult::Eof);
        }
        if let Err(failure) = tls.receive(&out[..wire]) {
            // rustls queued an alert saying why: send it, then give up.
            stats.tls_errors.incr();
            let _ = write_records(tls, &mut self.stream, stats);
            return Ok(ReadResult::TlsFailed(failure));
        }
        write_records(tls, &mut self.stream, stats)?; // handshake replies
        let plain = tls.read_plaintext(out);
        if plain == 0 && tls.peer_closed() {
            return Ok(ReadResult::Eof); // close_notify: no readiness edge will follow
        }
        Ok(ReadResult::Bytes {
            plain,
            wire,
            drained: wire < cap,
        })
    }

    /// A TLS connection still in its handshake.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    pub(crate) fn fail(&mut self, e: &io::Error) {
        log::debug!("connection from {}: {e}", self.peer);
        self.flags.set(Flags::FAILED);
    }
}

/// Writes `tls`'s pending records to `stream` and counts them.
fn write_records(
    tls: &mut TlsSession,
    stream: &mut TcpStream,
    stats: &ShardStats,
) -> io::Result<()> {
    let mut sent = 0;
    let result = tls.write_tls(stream, &mut sent);
    if sent > 0 {
        stats.tcp_bytes_out.add(sent as u64);
    }
    result
}

/// What one read produced.
enum ReadResult {
    Eof,
    /// The peer's TLS failed (its alert is sent): close the connection.
    TlsFailed(TlsFailure),
    Bytes {
        /// Bytes for the service.
        plain: usize,
        /// Bytes taken off the socket.
        wire: usize,
        /// The socket gave less than asked: nothing more to read now.
        drained: bool,
    },
}

/// Writes until `bytes` are all written or the socket is full; returns how
/// many were written. A short write means the socket buffer is full, so it
/// stops there rather than paying a syscall to see `WouldBlock`.
fn write_until_full(stream: &mut TcpStream, bytes: &[u8], stats: &ShardStats) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(n) => {
                stats.tcp_bytes_out.add(n as u64);
                written += n;
                if written < bytes.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Reads connection `key` until its socket is drained, the budget is
/// spent, or it stops reading, handing each read to `service`.
///
/// One `read` per iteration: a read that fills less than it asked for
/// means the socket is drained, so no second syscall is spent just to see
/// `WouldBlock` -- unless the peer's FIN was reported, which may sit behind
/// the data just read. The read buffer is taken out of the connection while
/// the service runs, so the service may reach every connection of the
/// shard through its context.
pub(crate) fn read_ready(
    conns: &mut Slab<Connection>,
    key: usize,
    service: &mut dyn TcpService,
    res: &mut Resources,
) -> ReadOutcome {
    let limits = res.limits;
    let mut budget = limits.read_budget;
    loop {
        let conn = &mut conns[key];
        if conn.io.flags.any(Flags::NO_READ) {
            return ReadOutcome::Stopped;
        }
        // The service may have closed the connection in the last callback.
        let discarding = conn.io.flags.any(Flags::DISCARDING);
        if !discarding {
            if conn.io.flags.any(Flags::READ_PAUSED) {
                return ReadOutcome::Stopped;
            }
            if conn.io.write_buffered() >= limits.high_water {
                conn.io.flags.set(Flags::READ_PAUSED);
                res.stats.backpressure_pauses.incr();
                return ReadOutcome::Stopped;
            }
        }
        let mut buf = conn.read_buf.take().unwrap_or_else(|| res.pool.take());
        // What the service left unconsumed is held to the frame limit,
        // whatever the pooled buffer's size.
        if buf.len() >= limits.max_read_buffer {
            conn.read_buf = Some(buf);
            conn.io.flags.set(Flags::READ_BUFFER_FULL);
            return ReadOutcome::Stopped;
        }
        if buf.spare_mut().is_empty() {
            let before = buf.capacity();
            buf.grow_to((before * 2).min(limits.max_read_buffer));
            res.pool.note_growth(before, buf.capacity());
        }
        let spare = buf.spare_mut();
        let asked = spare.len().min(budget);
        let outcome = match conn.io.read_into(spare, asked, &res.stats) {
            Ok(ReadResult::Eof) => {
                conn.io.flags.set(Flags::PEER_EOF);
                None
            }
            Ok(ReadResult::TlsFailed(failure)) => {
                // Counted in `tls_errors`; logged at info, since a client
                // that cannot connect is often a misconfiguration (wrong
                // port, wrong certificate) the operator must see, yet at
                // most once per source per interval, as peers repeat it
                // at will.
                conn.io.flags.set(Flags::FAILED);
                let peer = conn.io.peer;
                let now = res.timers.now();
                super::log_per_source(
                    &mut res.tls_failures,
                    now,
                    log::Level::Info,
                    Source::from(peer.ip()),
                    format_args!("{failure} (peer {peer}); connection closed"),
                );
                None
            }
            Ok(ReadResult::Bytes {
                plain,
                wire,
                drained,
            }) => {
                buf.commit(plain);
                res.stats.tcp_bytes_in.add(wire as u64);
                budget = budget.saturating_sub(wire.max(plain));
                let now_ms = res.timers.now_ms();
                conn.io.deadlines.io(now_ms);
                let consumed = if discarding {
                    res.stats.tcp_bytes_discarded.add(plain as u64);
                    buf.len()
                } else if plain == 0 {
                    0 // TLS records with nothing for the service yet
                } else {
                    let mut cx = ConnContext::new(key, conns, res);
                    service.on_data(&mut cx, buf.as_slice()).min(buf.len())
                };
                buf.consume(consumed);
                let conn = &mut conns[key];
                // An unfinished TLS handshake is an open frame: the frame
                // timeout is its deadline.
                let open = !buf.is_empty() || conn.io.handshaking();
                conn.io.deadlines.frame(now_ms, consumed > 0, open);
                if drained && !conn.io.flags.any(Flags::HUP_SEEN) {
                    Some(ReadOutcome::Drained)
                } else if budget == 0 {
                    Some(ReadOutcome::BudgetSpent)
                } else {
                    None
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(ReadOutcome::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                conn.io.fail(&e);
                None
            }
        };
        // An idle connection holds no buffer memory.
        if buf.is_empty() {
            res.pool.give(buf);
        } else {
            conns[key].read_buf = Some(buf);
        }
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
}
