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
use conn::{Connection, Flags, ReadOutcome};
use mailbox::Command;
use token::{Generations, Slot};
use udp::UdpEndpoint;

/// A TCP listener and the service its connections get.
pub(crate) struct TcpEndpoint {
    /// `None` once closed by shutdown.
    listener: Option<TcpListener>,
    service: Box<dyn TcpService>,
    /// Set while accepting is paused for lack of descriptors.
    paused_until: Option<Instant>,
}

impl TcpEndpoint {
    pub(crate) fn new(listener: TcpListener, service: Box<dyn TcpService>) -> Self {
        TcpEndpoint {
            listener: Some(listener),
            service,
            paused_until: None,
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
    /// Set once shutdown began.
    drain_deadline: Option<Instant>,
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
            // Both interests up front: with edge triggering this costs no
            // extra events, and saves a `reregister` whenever replies queue.
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
            drain_deadline: None,
        })
    }

    /// Runs the loop until shutdown has closed every connection.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.config.events_capacity);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                self.dispatch(event);
            }
            self.revisit_spent();
            let now = Instant::now();
            self.resume_accepting(now);
            if self.drain_deadline.is_some_and(|deadline| now >= deadline) {
                self.close_all(CloseReason::Shutdown);
            }
            self.stats.buffer_bytes.set(self.pool.bytes_lent() as u64);
            self.stats
                .buffer_bytes_peak
                .set(self.pool.peak_bytes_lent() as u64);
            if self.drain_deadline.is_some() && self.conns.is_empty() {
                return Ok(());
            }
        }
    }

    /// How long `poll` may sleep: not at all while sources wait for a
    /// revisit, otherwise until the nearest pause or deadline ends.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.revisit.is_empty() {
            return Some(Duration::ZERO);
        }
        let resumes = self.tcp.iter().filter_map(|endpoint| endpoint.paused_until);
        resumes
            .chain(self.drain_deadline)
            .min()
            .map(|wake| wake.saturating_duration_since(now))
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
            Slot::Conn { key, gen } => {
                if !self.conns.get(key).is_some_and(|conn| conn.io.gen == gen) {
                    return; // an event for a connection closed earlier in this batch
                }
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
        if endpoint.read_ready(batch, &self.stats, &self.config) {
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
        if conn
            .io
            .flush(&mut self.pool, &self.stats, self.config.write_low_water)
        {
            self.read(key);
        }
    }

    /// Closes the connection if it is done; starts its FIN if draining.
    fn settle(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.io.flags.any(Flags::DRAINING) {
            conn.io.shut_write_when_flushed();
        }
        if let Some(reason) = conn.close_reason() {
            self.close(key, reason);
        }
    }

    /// Gives each source that spent its budget last time one more turn.
    fn revisit_spent(&mut self) {
        std::mem::swap(&mut self.revisit, &mut self.revisiting);
        let mut revisiting = std::mem::take(&mut self.revisiting);
        for token in revisiting.drain(..) {
            match Slot::of(token) {
                Slot::Conn { key, gen } => {
                    let Some(conn) = self.conns.get_mut(key).filter(|c| c.io.gen == gen) else {
                        continue;
                    };
                    conn.io.flags.clear(Flags::QUEUED);
                    self.read(key);
                    self.settle(key);
                }
                Slot::Udp(i) => self.udp_ready(i),
                _ => {}
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
        if self.drain_deadline.is_some() {
            return;
        }
        self.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
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
