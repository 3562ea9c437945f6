//! The shard: one thread's event loop over its listeners, UDP sockets and
//! connections.
//!
//! A loop turn is: `poll` (its timeout is the nearest thing the shard is
//! waiting for), dispatch each event by its token, revisit the sources that
//! used up their budget, then act on elapsed time. Nothing in the turn
//! blocks, and no single source gets more than its budget before the others
//! have had theirs.

mod accept;
mod close;
pub(crate) mod conn;
pub(crate) mod context;
pub(crate) mod deadline;
mod delivery;
mod fire;
pub(crate) mod gate;
pub(crate) mod limits;
pub(crate) mod mailbox;
pub(crate) mod outbound;
mod proxy;
pub(crate) mod token;
pub(crate) mod trace;
pub(crate) mod udp;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::ServerConfig;
use crate::limit::{Source, Suppressor};
use crate::metrics::{ServiceCounters, ShardStats};
use crate::net::buffer::{BufferPool, Scratch};
use crate::net::tls::TlsFailure;
use crate::net::udp_batch::RecvBatch;
use crate::service::{CloseReason, TcpService};
use crate::timer::TimerHandle;
use accept::Handoff;
use conn::{
    live, Env, Flags, Input, PlainRead, ReadOutcome, Settled, Splicer, Step, TcpConn, BULK_CREDIT,
    BULK_READ,
};
use context::ConnContext;
use deadline::{TimerTarget, Timers};
use gate::Gate;
use limits::ConnLimits;
use mailbox::{Mailbox, Postbox};
use token::{Generations, Slot};
use udp::ServedUdpSocket;

use crate::net::tls::TlsConfig;

/// A TCP listener and the service its connections get.
pub(crate) struct ServedListener {
    /// `None` once closed by shutdown.
    listener: Option<TcpListener>,
    /// Index of its service among the shard's TCP services.
    service: u16,
    /// Its place among the listeners of that service.
    place: u16,
    /// Set while accepting is paused for lack of descriptors.
    paused: bool,
    /// Connections speak TLS with this configuration.
    tls: Option<TlsConfig>,
    /// Admitted from the metrics reserve (`metrics::METRICS_RESERVE`), not
    /// against `max_conns` and the per-source limits.
    reserved: bool,
}

impl ServedListener {
    /// `listener` is `None` on the shards that only adopt connections
    /// (the handoff mode, where shard 0 alone listens).
    pub(crate) fn new(
        listener: Option<TcpListener>,
        service: usize,
        place: usize,
        tls: Option<TlsConfig>,
        reserved: bool,
    ) -> Self {
        // The builder allows at most u16::MAX TCP listeners.
        ServedListener {
            listener,
            service: service as u16,
            place: place as u16,
            paused: false,
            tls,
            reserved,
        }
    }
}

/// What every connection and service callback on a shard borrows: the
/// buffer pool, the counters, the clock and timers, and the way to other
/// shards.
pub(crate) struct Resources {
    pub(crate) pool: BufferPool,
    pub(crate) stats: Arc<ShardStats>,
    pub(crate) timers: Timers,
    pub(crate) postbox: Postbox,
    /// Connections a service sent to or closed from another connection's
    /// callback: settled at the end of the loop turn.
    pub(crate) touched: Vec<Token>,
    /// Connections their service resumed reading this turn: revisited, as
    /// input may have arrived while they were paused with no edge to come.
    pub(crate) resumed: Vec<Token>,
    pub(crate) limits: ConnLimits,
    /// Admission, shared by every shard.
    pub(crate) gate: Arc<Gate>,
    /// Where each service's declared counters live in `stats.service`.
    pub(crate) counter_slots: Arc<ServiceCounters>,
    /// One warning per suspicious source per interval.
    pub(crate) suspicious: Suppressor<Source>,
    /// One info line per source per interval for UDP replies dropped by
    /// anti-amplification: kept apart from `suspicious`, so a source's
    /// warnings never hide the line that explains a silent service.
    pub(crate) amplification: Suppressor<Source>,
    /// One info line per source per interval for failed TLS sessions.
    pub(crate) tls_failures: Suppressor<Source>,
    /// Where outbound connections (`ShardContext::connect`) register.
    pub(crate) registry: mio::Registry,
    /// Generations for connection tokens, accepted and outbound alike.
    pub(crate) generations: Generations,
    /// Options for every stream, accepted or outbound.
    pub(crate) socket: crate::net::socket::SocketOptions,
    /// `serve --trace`: off, one branch per hook.
    pub(crate) trace: trace::Tracer,
}

impl Resources {
    /// What a connection's procedures borrow, at this turn's time.
    pub(crate) fn env(&mut self) -> Env<'_> {
        Env {
            pool: &mut self.pool,
            stats: &self.stats,
            limits: &self.limits,
            now_ms: self.timers.now_ms(),
            trace: &self.trace,
        }
    }
}

/// One event loop and everything it owns.
pub(crate) struct Shard {
    poll: Poll,
    config: Arc<ServerConfig>,
    mailbox: Mailbox,
    /// One value per TCP service (a service may serve several listeners).
    services: Vec<Box<dyn TcpService>>,
    tcp: Vec<ServedListener>,
    udp: Vec<ServedUdpSocket>,
    conns: Slab<TcpConn>,
    res: Resources,
    /// The one buffer connections that hold nothing read into; their
    /// services are handed a slice of it.
    scratch: Scratch,
    /// The pipe bulk echoes are spliced through (`conn/splice.rs`).
    splicer: Splicer,
    /// Shared by the shard's UDP sockets; `None` when it has none.
    recv_batch: Option<RecvBatch>,
    /// Sources that spent their budget this turn and may have more input.
    revisit: Vec<Token>,
    /// The previous turn's `revisit`, kept to reuse its allocation.
    revisiting: Vec<Token>,
    /// Timers due this turn; kept to reuse its allocation.
    fired: Vec<(TimerHandle, TimerTarget)>,
    /// In the handoff mode, on the shard that listens.
    handoff: Option<Handoff>,
    /// Set once shutdown began.
    draining: bool,
    /// A descriptor held back, so that out of descriptors the shard can
    /// still accept a connection to refuse it rather than leave it queued.
    reserve: Option<std::fs::File>,
    /// When the last out-of-descriptors warning was logged, and the
    /// refusals since.
    descriptor_warning: (Option<Instant>, u64),
}

/// Where reading a connection stands after its service had an input.
enum Delivered {
    /// Reading ended with the connection quiet: nothing to settle.
    Quiet,
    /// Reading ended with this outcome.
    Ended(ReadOutcome),
    /// Read on.
    ReadOn,
}

/// How often one source may be logged for one kind of event (suspicious
/// input, amplification drops, TLS failures), and how many sources a shard
/// keeps track of for each (beyond them, lines are dropped and counted).
const SUSPICIOUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const SUSPICIOUS_SOURCES: usize = 4096;

/// Logs `what` about `source` unless it was logged within the interval;
/// the next line says how many were held back.
pub(crate) fn warn_suspicious(res: &mut Resources, source: Source, what: std::fmt::Arguments<'_>) {
    let now = res.timers.now();
    log_per_source(&mut res.suspicious, now, log::Level::Warn, source, what);
}

/// Logs `what` about `source` at `level` unless `suppressor` saw it logged
/// within its interval; the next line says how many were held back. Every
/// event a peer can repeat at will goes through one of these, so no peer
/// can flood the log.
pub(crate) fn log_per_source(
    suppressor: &mut Suppressor<Source>,
    now: Instant,
    level: log::Level,
    source: Source,
    what: std::fmt::Arguments<'_>,
) {
    if let Some(held) = suppressor.note(source, now) {
        match held {
            0 => log::log!(level, "{source}: {what}"),
            n => log::log!(level, "{source}: {what} ({n} more since the last line)"),
        }
    }
}

/// Opens the reserve descriptor (`/dev/null`); without one, running out of
/// descriptors pauses accepting instead.
pub(crate) fn reserve_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null")
        .map_err(|e| log::warn!("no reserve descriptor: {e}"))
        .ok()
}

impl Shard {
    /// Registers every endpoint with `poll`; the mailbox waker must already
    /// be registered on it with the waker token.
    pub(crate) fn new(
        poll: Poll,
        config: Arc<ServerConfig>,
        mailbox: Mailbox,
        (postbox, gate, counter_slots): (Postbox, Arc<Gate>, Arc<ServiceCounters>),
        (services, mut tcp): (Vec<Box<dyn TcpService>>, Vec<ServedListener>),
        mut udp: Vec<ServedUdpSocket>,
        handoff: Option<Arc<[Arc<ShardStats>]>>,
    ) -> io::Result<Shard> {
        for (i, endpoint) in tcp.iter_mut().enumerate() {
            if let Some(listener) = endpoint.listener.as_mut() {
                let token = Slot::TcpListener(i).token();
                poll.registry()
                    .register(listener, token, Interest::READABLE)?;
            }
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
        let shard_id = postbox.shard;
        let res = Resources {
            pool: BufferPool::new(config.buffer_size, config.pool_max_free),
            stats: Arc::clone(&postbox.stats),
            timers: Timers::new(Instant::now(), config.timer_tick),
            postbox,
            touched: Vec::new(),
            resumed: Vec::new(),
            limits: ConnLimits::of(&config),
            gate,
            counter_slots,
            suspicious: Suppressor::new(SUSPICIOUS_INTERVAL, SUSPICIOUS_SOURCES),
            amplification: Suppressor::new(SUSPICIOUS_INTERVAL, SUSPICIOUS_SOURCES),
            tls_failures: Suppressor::new(SUSPICIOUS_INTERVAL, SUSPICIOUS_SOURCES),
            registry: poll.registry().try_clone()?,
            generations: Generations::new(),
            socket: config.socket.clone(),
            trace: trace::Tracer::new(shard_id, config.trace),
        };
        let splicer = Splicer::new(&config);
        let recv_batch =
            (!udp.is_empty()).then(|| RecvBatch::new(config.udp_batch, config.udp_max_datagram));
        Ok(Shard {
            poll,
            config,
            mailbox,
            services,
            tcp,
            udp,
            conns: Slab::new(),
            res,
            scratch: Scratch::default(),
            splicer,
            recv_batch,
            revisit: Vec::new(),
            revisiting: Vec::new(),
            fired: Vec::new(),
            handoff: handoff.map(Handoff::new),
            draining: false,
            reserve: reserve_descriptor(),
            descriptor_warning: (None, 0),
        })
    }

    /// Runs the loop until shutdown has closed every connection.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.config.events_capacity);
        loop {
            // Not at all while sources wait for a revisit, otherwise until
            // the nearest timer.
            let timeout = if self.revisit.is_empty() {
                self.res.timers.poll_timeout()
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.res.timers.set_now(Instant::now());
            self.res.trace.turn(self.res.timers.now(), &events);
            for event in events.iter() {
                self.dispatch(event);
            }
            self.revisit_spent();
            self.fire_timers();
            self.settle_touched();
            self.queue_resumed();
            let pool = &self.res.pool;
            self.res.stats.buffer_bytes.set(pool.bytes_lent() as u64);
            self.res
                .stats
                .buffer_bytes_peak
                .set(pool.peak_bytes_lent() as u64);
            if self.draining && self.conns.is_empty() {
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, event: &Event) {
        self.res.trace.ready(event);
        match Slot::of(event.token()) {
            Slot::Waker => self.read_mailbox(),
            Slot::TcpListener(i) => self.accept_ready(i),
            Slot::Udp(i) => {
                if event.is_writable() {
                    if let Some(endpoint) = self.udp.get_mut(i) {
                        endpoint.flush(&self.res);
                    }
                }
                if event.is_readable() {
                    self.udp_ready(i);
                }
            }
            Slot::Conn { .. } => {
                let Some(key) = live(&self.conns, event.token()) else {
                    return; // for a connection closed earlier in this batch
                };
                // Just connected: what was sent meanwhile goes out, and
                // input that came with the connect is read (its readable
                // edge passed while the connection was not read).
                let connected = self.conns[key].state.connecting();
                if connected && !self.finish_connect(key) {
                    return;
                }
                if connected || event.is_writable() || event.is_error() {
                    self.flush(key);
                }
                if event.is_read_closed() {
                    self.conns[key].state.flags.set(Flags::HUP_SEEN);
                }
                let read =
                    connected || event.is_readable() || event.is_read_closed() || event.is_error();
                if !(read && self.read(key)) {
                    self.settle(key);
                }
            }
            Slot::Unknown => log::warn!("event for unknown token {:?}", event.token()),
        }
    }

    fn udp_ready(&mut self, index: usize) {
        let (Some(endpoint), Some(batch)) = (self.udp.get_mut(index), self.recv_batch.as_mut())
        else {
            return; // closed by shutdown earlier in this batch
        };
        if endpoint.read_ready(index, batch, &mut self.res, &self.config) {
            self.revisit.push(Slot::Udp(index).token());
        }
    }

    /// Reads a connection until it is drained, its budget is spent or it
    /// stops reading, handing each read's input to its service (the steps
    /// are `conn/read.rs`). True when it ends with the connection quiet
    /// (nothing to settle), found through the entry it already holds: the
    /// echo's path looks the connection up once. The common first step
    /// (`State::read_plain`) is taken in one pass; the rest step by step.
    fn read(&mut self, key: usize) -> bool {
        let mut budget = self.res.limits.read_budget;
        let conn = &mut self.conns[key];
        let (token, service) = (conn.token(key), usize::from(conn.service));
        let delivered = if conn.state.bulk != 0 {
            Delivered::ReadOn // spliced: the steps take it
        } else {
            let env = &mut self.res.env();
            match conn
                .state
                .read_plain(&mut conn.transport, &mut self.scratch, &mut budget, env)
            {
                PlainRead::Bytes(input) => self.serve_input((key, token, service), input, budget),
                PlainRead::Done(outcome) => Delivered::Ended(outcome),
                PlainRead::Step => Delivered::ReadOn,
            }
        };
        let outcome = match delivered {
            Delivered::Quiet => return true,
            Delivered::Ended(outcome) => outcome,
            Delivered::ReadOn => match self.read_steps(key, budget) {
                Some(outcome) => outcome,
                None => return true,
            },
        };
        if outcome == ReadOutcome::BudgetSpent {
            self.res.stats.read_budget_hits.incr();
            let conn = &mut self.conns[key];
            if !conn.state.flags.any(Flags::QUEUED) {
                conn.state.flags.set(Flags::QUEUED);
                self.revisit.push(conn.token(key));
            }
        }
        false
    }

    /// [`Shard::read`] step by step, with what is left of `budget`, until
    /// the reading ends: with its outcome, or `None` with the connection
    /// quiet. (Out of line: the common pass stays short.)
    #[inline(never)]
    fn read_steps(&mut self, key: usize, mut budget: usize) -> Option<ReadOutcome> {
        loop {
            let mut conn = &mut self.conns[key];
            if conn.state.bulk != 0 {
                match self.splice(key, budget) {
                    Ok(outcome) => return Some(outcome),
                    Err(left) => budget = left,
                }
                conn = &mut self.conns[key];
            }
            let env = &mut self.res.env();
            let step = conn
                .state
                .read(&mut conn.transport, &mut self.scratch, &mut budget, env);
            let input = match step {
                Step::Deliver(input) => input,
                step => match self.other_step(key, step, budget) {
                    Some(outcome) => return Some(outcome),
                    None => continue,
                },
            };
            let conn = &self.conns[key];
            let (token, service) = (conn.token(key), usize::from(conn.service));
            match self.serve_input((key, token, service), input, budget) {
                Delivered::ReadOn => {}
                Delivered::Quiet => return None,
                Delivered::Ended(outcome) => return Some(outcome),
            }
        }
    }

    /// Calls the service of the connection at `key` (whose token and
    /// service index the caller has at hand) with `input`, then hands what
    /// it left back to the connection's state.
    #[inline(always)]
    fn serve_input(
        &mut self,
        (key, token, service): (usize, Token, usize),
        input: Input,
        budget: usize,
    ) -> Delivered {
        let mut cx = ConnContext::of(key, token, service, &mut self.conns, &mut self.res);
        let service = &mut *self.services[service];
        let consumed = service.on_data(&mut cx, input.bytes(&self.scratch));
        if consumed >= BULK_READ {
            self.turn_bulk(key);
        }
        let conn = &mut self.conns[key];
        let env = &mut self.res.env();
        let scratch = &self.scratch;
        match conn
            .state
            .delivered(&conn.transport, input, scratch, consumed, budget, env)
        {
            None => Delivered::ReadOn,
            Some(outcome) => {
                if outcome != ReadOutcome::BudgetSpent && conn.state.quiet(&conn.transport) {
                    return Delivered::Quiet;
                }
                Delivered::Ended(outcome)
            }
        }
    }

    /// Splices a bulk connection's input back out (`conn/splice.rs`) until
    /// it is drained, its `budget` spent or it stops: `Ok` with that
    /// outcome, or `Err` with the budget left when it must be read the
    /// ordinary way now. (Out of line: the read loop's test is one byte.)
    #[cold]
    #[inline(never)]
    fn splice(&mut self, key: usize, mut budget: usize) -> Result<ReadOutcome, usize> {
        loop {
            let conn = &mut self.conns[key];
            let (splicer, scratch) = (&mut self.splicer, &mut self.scratch);
            let env = self.res.env();
            match conn
                .state
                .splice_step(&conn.transport, splicer, scratch, &mut budget, env)
            {
                Some(Step::Done(outcome)) => return Ok(outcome),
                Some(_) => {} // again
                None => return Err(budget),
            }
        }
    }

    /// Its service took a large input: the connection is spliced from now
    /// on if that service echoes and nothing rules it out (`conn/splice.rs`).
    #[cold]
    #[inline(never)]
    fn turn_bulk(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if self.splicer.on()
            && self.services[usize::from(conn.service)].echoes()
            && conn.state.turns_bulk(&conn.transport)
        {
            conn.state.bulk = BULK_CREDIT;
        }
    }

    /// A read step with nothing for the service: `Some` ends the reading
    /// with that outcome, `None` steps again. (Out of line: the loop's
    /// common case stays short.)
    #[inline(never)]
    fn other_step(&mut self, key: usize, step: Step, budget: usize) -> Option<ReadOutcome> {
        match step {
            Step::Done(outcome) => Some(outcome),
            Step::Again => None,
            Step::TlsFailed(failure) => {
                self.log_tls_failure(key, &failure);
                None
            }
            // The check reaches the whole shard, the scratch the input
            // lies in included.
            Step::Proxy(input) => {
                let scratch = std::mem::take(&mut self.scratch);
                let outcome = self.check_proxy(key, input, &scratch, budget);
                self.scratch = scratch;
                outcome
            }
            Step::Deliver(_) => unreachable!("input is the read loop's to deliver"),
        }
    }

    /// Counted in `tls_errors`; logged at info, since a client that cannot
    /// connect is often a misconfiguration (wrong port, wrong certificate)
    /// the operator must see, yet at most once per source per interval, as
    /// peers repeat it at will.
    #[inline(never)]
    fn log_tls_failure(&mut self, key: usize, failure: &TlsFailure) {
        let peer = self.conns[key].state.peer.get();
        let now = self.res.timers.now();
        log_per_source(
            &mut self.res.tls_failures,
            now,
            log::Level::Info,
            Source::from(peer.ip()),
            format_args!("{failure} (peer {peer}); connection closed"),
        );
    }

    /// Settles the connections services touched from other connections'
    /// callbacks this turn.
    fn settle_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.res.touched);
        while !touched.is_empty() {
            for token in touched.drain(..) {
                if let Some(key) = live(&self.conns, token) {
                    self.conns[key].state.flags.clear(Flags::TOUCHED);
                    self.settle(key);
                }
            }
            // Settling may close a connection, and its service's `on_close`
            // may touch others (a chat's leave notice): settle those too.
            std::mem::swap(&mut touched, &mut self.res.touched);
        }
        self.res.touched = touched;
    }

    /// Writes out a connection's buffer; resumes reading it if that relieved
    /// backpressure (the readable edge may have passed while paused, so it
    /// is read now rather than waiting for one).
    fn flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let resume = conn.state.flush(&mut conn.transport, &mut self.res.env());
        let flags = &mut conn.state.flags;
        let drained = conn.state.write_buf.is_none() && !flags.any(Flags::FAILED);
        if flags.any(Flags::DRAIN_WATCHED) && drained {
            flags.clear(Flags::DRAIN_WATCHED);
            let service = usize::from(conn.service);
            let mut cx = ConnContext::new(key, &mut self.conns, &mut self.res);
            self.services[service].on_drained(&mut cx);
        }
        if resume {
            self.read(key);
        }
    }

    /// After anything happened to a connection: closes it if it is done,
    /// starts its FIN if draining, and makes sure a timer is armed no later
    /// than its earliest deadline.
    #[inline(always)]
    fn settle(&mut self, key: usize) {
        let conn = &self.conns[key];
        if !conn.state.quiet(&conn.transport) {
            self.settle_loud(key);
        } // else the common case after a round trip: nothing to change
    }

    /// [`Shard::settle`] when there is something to change.
    #[inline(never)]
    fn settle_loud(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let wants_write = match conn.state.settle(&mut conn.transport, &mut self.res.env()) {
            Settled::Close(reason) => return self.close(key, reason),
            Settled::Open { wants_write } => wants_write,
        };
        let token = conn.token(key);
        let flags = &mut conn.state.flags;
        if wants_write != flags.any(Flags::WRITE_INTEREST) {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            // Adding WRITABLE to a socket that is writable already reports
            // it at once, so no edge is missed.
            let registry = self.poll.registry();
            if let Err(e) = registry.reregister(&mut conn.transport, token, interest) {
                conn.state.fail(&e);
                return self.close(key, CloseReason::Error);
            }
            if wants_write {
                flags.set(Flags::WRITE_INTEREST);
            } else {
                flags.clear(Flags::WRITE_INTEREST);
            }
        }
        let (timers, limits) = (&mut self.res.timers, &self.res.limits);
        let trace = &self.res.trace;
        timers.arm_deadline(&mut conn.state.deadlines, limits, token, trace);
    }

    /// Puts the connections services resumed on the revisit list: the
    /// next turn reads them (first what they left unconsumed).
    fn queue_resumed(&mut self) {
        for token in self.res.resumed.drain(..) {
            if let Some(key) = live(&self.conns, token) {
                let flags = &mut self.conns[key].state.flags;
                if !flags.any(Flags::QUEUED) {
                    flags.set(Flags::QUEUED);
                    self.revisit.push(token);
                }
            }
        }
    }

    /// Gives each source that spent its budget last time one more turn.
    fn revisit_spent(&mut self) {
        std::mem::swap(&mut self.revisit, &mut self.revisiting);
        let mut revisiting = std::mem::take(&mut self.revisiting);
        for token in revisiting.drain(..) {
            if let Slot::Udp(i) = Slot::of(token) {
                self.udp_ready(i);
            } else if token == Slot::Waker.token() {
                self.read_mailbox();
            } else if let Some(key) = live(&self.conns, token) {
                self.conns[key].state.flags.clear(Flags::QUEUED);
                self.read(key);
                self.settle(key);
            }
        }
        self.revisiting = revisiting;
    }
}
