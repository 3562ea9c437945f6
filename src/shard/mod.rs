//! The shard: one thread's event loop over its listeners, UDP sockets and
//! connections.
//!
//! A loop turn is: `poll` (its timeout is the nearest thing the shard is
//! waiting for), dispatch each event by its token, revisit the sources that
//! used up their budget, then act on elapsed time. Nothing in the turn
//! blocks, and no single source gets more than its budget before the others
//! have had theirs.

mod accept;
pub(crate) mod conn;
pub(crate) mod deadline;
mod fire;
pub(crate) mod mailbox;
pub(crate) mod token;
pub(crate) mod udp;

use std::io;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::ServerConfig;
use crate::metrics::ShardStats;
use crate::net::buffer::BufferPool;
use crate::net::udp_batch::RecvBatch;
use crate::service::{CloseReason, ConnId, TcpService};
use crate::timer::TimerHandle;
use conn::{Connection, Flags, ReadOutcome};
use deadline::{Due, TimerTarget, Timers};
use mailbox::Command;
use token::{Generations, Slot};
use udp::UdpEndpoint;

/// A TCP listener and the service its connections get.
pub(crate) struct TcpEndpoint {
    /// `None` once closed by shutdown.
    listener: Option<TcpListener>,
    service: Box<dyn TcpService>,
    /// Set while accepting is paused for lack of descriptors.
    paused: bool,
}

impl TcpEndpoint {
    pub(crate) fn new(listener: TcpListener, service: Box<dyn TcpService>) -> Self {
        TcpEndpoint {
            listener: Some(listener),
            service,
            paused: false,
        }
    }
}

/// One event loop and everything it owns.
pub(crate) struct Shard {
    poll: Poll,
    config: Arc<ServerConfig>,
    stats: Arc<ShardStats>,
    inbox: Receiver<Command>,
    tcp: Vec<TcpEndpoint>,
    udp: Vec<UdpEndpoint>,
    conns: Slab<Connection>,
    generations: Generations,
    pool: BufferPool,
    /// Shared by the shard's UDP sockets; `None` when it has none.
    recv_batch: Option<RecvBatch>,
    /// Sources that spent their budget this turn and may have more input.
    revisit: Vec<Token>,
    /// The previous turn's `revisit`, kept to reuse its allocation.
    revisiting: Vec<Token>,
    timers: Timers,
    /// Timers due this turn; kept to reuse its allocation.
    fired: Vec<(TimerHandle, TimerTarget)>,
    /// Set once shutdown began.
    draining: bool,
}

impl Shard {
    /// Registers every endpoint with `poll`; the mailbox waker must already
    /// be registered on it with the waker token.
    pub(crate) fn new(
        poll: Poll,
        config: Arc<ServerConfig>,
        stats: Arc<ShardStats>,
        inbox: Receiver<Command>,
        mut tcp: Vec<TcpEndpoint>,
        mut udp: Vec<UdpEndpoint>,
    ) -> io::Result<Shard> {
        for (i, endpoint) in tcp.iter_mut().enumerate() {
            let listener = endpoint.listener.as_mut().expect("new listeners are open");
            poll.registry()
                .register(listener, Slot::TcpListener(i).token(), Interest::READABLE)?;
        }
        for (i, endpoint) in udp.iter_mut().enumerate() {
            // Both interests up front saves a `reregister` whenever replies
            // queue; the writable bit that rides along with readable edges
            // costs an empty-queue check (measured: no CPU difference).
            poll.registry().register(
                &mut endpoint.socket,
                Slot::Udp(i).token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        let pool = BufferPool::new(config.buffer_size, config.pool_max_free);
        let recv_batch =
            (!udp.is_empty()).then(|| RecvBatch::new(config.udp_batch, config.udp_max_datagram));
        Ok(Shard {
            poll,
            timers: Timers::new(Instant::now(), config.timer_tick),
            fired: Vec::new(),
            draining: false,
            config,
            stats,
            inbox,
            tcp,
            udp,
            conns: Slab::new(),
            generations: Generations::new(),
            pool,
            recv_batch,
            revisit: Vec::new(),
            revisiting: Vec::new(),
        })
    }

    /// Runs the loop until shutdown has closed every connection.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.config.events_capacity);
        loop {
            // Not at all while sources wait for a revisit, otherwise until
            // the nearest timer.
            let timeout = if self.revisit.is_empty() {
                self.timers.wheel.poll_timeout(self.timers.now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.timers.set_now(Instant::now());
            for event in events.iter() {
                self.dispatch(event);
            }
            self.revisit_spent();
            self.fire_timers();
            let pool = &self.pool;
            self.stats.buffer_bytes.set(pool.bytes_lent() as u64);
            self.stats
                .buffer_bytes_peak
                .set(pool.peak_bytes_lent() as u64);
            if self.draining && self.conns.is_empty() {
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, event: &Event) {
        match Slot::of(event.token()) {
            Slot::Waker => self.read_inbox(),
            Slot::TcpListener(i) => self.accept_ready(i),
            Slot::Udp(i) => {
                if event.is_writable() {
                    if let Some(endpoint) = self.udp.get_mut(i) {
                        endpoint.flush(&self.stats);
                    }
                }
                if event.is_readable() {
                    self.udp_ready(i);
                }
            }
            Slot::Conn { .. } => {
                let Some(key) = self.live_conn(event.token()) else {
                    return; // for a connection closed earlier in this batch
                };
                if event.is_writable() || event.is_error() {
                    self.flush(key);
                }
                if event.is_read_closed() {
                    self.conns[key].io.flags.set(Flags::HUP_SEEN);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(key);
                }
                self.settle(key);
            }
            Slot::Unknown => log::warn!("event for unknown token {:?}", event.token()),
        }
    }

    fn read_inbox(&mut self) {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                Command::Shutdown => self.begin_shutdown(),
                Command::Stop => {
                    self.begin_shutdown();
                    self.close_all(CloseReason::Shutdown);
                }
            }
        }
    }

    fn udp_ready(&mut self, index: usize) {
        let (Some(endpoint), Some(batch)) = (self.udp.get_mut(index), self.recv_batch.as_mut())
        else {
            return; // closed by shutdown earlier in this batch
        };
        if endpoint.read_ready(index, batch, &self.stats, &self.config, &mut self.timers) {
            self.revisit.push(Slot::Udp(index).token());
        }
    }

    /// Reads a connection and hands the input to its service.
    fn read(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let token = Slot::Conn {
            key,
            gen: conn.io.gen,
        }
        .token();
        let service = &mut *self.tcp[conn.listener as usize].service;
        let outcome = conn.read_ready(
            ConnId(token.0 as u64),
            service,
            &mut self.pool,
            &self.stats,
            &self.config,
            &mut self.timers,
        );
        if outcome == ReadOutcome::BudgetSpent {
            self.stats.read_budget_hits.incr();
            if !conn.io.flags.any(Flags::QUEUED) {
                conn.io.flags.set(Flags::QUEUED);
                self.revisit.push(token);
            }
        }
    }

    /// Writes out a connection's buffer; resumes reading it if that relieved
    /// backpressure (the readable edge may have passed while paused, so it
    /// is read now rather than waiting for one).
    fn flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let (low_water, now_ms) = (self.config.write_low_water, self.timers.now_ms());
        if conn
            .io
            .flush(&mut self.pool, &self.stats, low_water, now_ms)
        {
            self.read(key);
        }
    }

    /// After anything happened to a connection: closes it if it is done,
    /// starts its FIN if draining, and makes sure a timer is armed no later
    /// than its earliest deadline.
    fn settle(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.io.flags.any(Flags::DRAINING) {
            conn.io.shut_write_when_flushed();
        }
        if let Some(reason) = conn.close_reason() {
            return self.close(key, reason);
        }
        let token = Slot::Conn {
            key,
            gen: conn.io.gen,
        }
        .token();
        let wants_write = conn.io.write_buffered() > 0;
        if wants_write != conn.io.flags.any(Flags::WRITE_INTEREST) {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            // Adding WRITABLE to a socket that is writable already reports
            // it at once, so no edge is missed.
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.io.stream, token, interest)
            {
                conn.io.fail(&e);
                return self.close(key, CloseReason::Error);
            }
            if wants_write {
                conn.io.flags.set(Flags::WRITE_INTEREST);
            } else {
                conn.io.flags.clear(Flags::WRITE_INTEREST);
            }
        }
        let deadlines = &mut conn.io.deadlines;
        let Some(Due::In(left)) = deadlines.due(self.timers.now_ms(), &self.config) else {
            return; // none enabled, or expired: its timer is already due
        };
        let armed = deadlines
            .timer
            .and_then(|timer| self.timers.wheel.deadline(timer));
        let wanted = self.timers.now() + left;
        // Re-arm only when the armed timer would be late by more than a
        // tick; one that is early re-arms itself when it fires.
        if armed.is_none_or(|at| at >= wanted + self.config.timer_tick) {
            if let Some(old) = deadlines.timer.take() {
                self.timers.wheel.cancel(old);
            }
            deadlines.timer = Some(self.timers.arm_after(left, TimerTarget::Deadline(token)));
        }
    }

    /// The slab key of the connection `token` names, if it is still open.
    fn live_conn(&self, token: Token) -> Option<usize> {
        match Slot::of(token) {
            Slot::Conn { key, gen } => {
                Some(key).filter(|&key| self.conns.get(key).is_some_and(|conn| conn.io.gen == gen))
            }
            _ => None,
        }
    }

    /// Gives each source that spent its budget last time one more turn.
    fn revisit_spent(&mut self) {
        std::mem::swap(&mut self.revisit, &mut self.revisiting);
        let mut revisiting = std::mem::take(&mut self.revisiting);
        for token in revisiting.drain(..) {
            if let Slot::Udp(i) = Slot::of(token) {
                self.udp_ready(i);
            } else if let Some(key) = self.live_conn(token) {
                self.conns[key].io.flags.clear(Flags::QUEUED);
                self.read(key);
                self.settle(key);
            }
        }
        self.revisiting = revisiting;
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let mut conn = self.conns.remove(key);
        let id = ConnId(
            Slot::Conn {
                key,
                gen: conn.io.gen,
            }
            .token()
            .0 as u64,
        );
        for buf in [conn.read_buf.take(), conn.io.write_buf.take()]
            .into_iter()
            .flatten()
        {
            self.pool.give(buf);
        }
        let stats = &self.stats;
        stats.conns_open.decr();
        match reason {
            CloseReason::PeerClosed => stats.closed_peer.incr(),
            CloseReason::Error => stats.closed_error.incr(),
            CloseReason::Service => stats.closed_service.incr(),
            CloseReason::ReadBufferFull => stats.closed_read_buffer_full.incr(),
            CloseReason::Shutdown => stats.closed_shutdown.incr(),
            CloseReason::IdleTimeout => stats.closed_idle_timeout.incr(),
            CloseReason::FrameTimeout => stats.closed_frame_timeout.incr(),
            CloseReason::WriteTimeout => stats.closed_write_timeout.incr(),
        }
        log::trace!("closed {} ({reason:?})", conn.io.peer);
        self.tcp[conn.listener as usize]
            .service
            .on_close(id, reason);
        // Dropping the stream closes the descriptor, which also removes it
        // from the poll set: no `deregister` syscall needed.
    }

    fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason);
        }
    }

    /// Closes listeners and UDP sockets, and turns every connection to
    /// draining: input is discarded, output flushed, then FIN; the peer's
    /// EOF (or the drain deadline) closes it. Reading on while draining,
    /// rather than closing with unread input, avoids a reset that could
    /// destroy echoes the peer has not read yet.
    fn begin_shutdown(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.timers
            .arm_after(self.config.drain_timeout, TimerTarget::Drain);
        for endpoint in &mut self.tcp {
            if let Some(mut listener) = endpoint.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
        for endpoint in &mut self.udp {
            endpoint.flush(&self.stats);
        }
        self.udp.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.conns[key].io.flags.set(Flags::DRAINING);
            self.read(key);
            self.settle(key);
        }
        log::debug!("draining {} connections", self.conns.len());
    }
}
