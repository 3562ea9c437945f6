//! Deterministic tests of a connection's state machine: a fake transport
//! (`fake.rs`), a virtual clock, and [`Harness`], a small model of the
//! shard's loop that calls the same procedures in the same order as
//! `Shard::read`, `flush`, `settle` and `fire_timers` do, with the real
//! timer wheel. No sockets, no sleeps: every outcome is exact, down to the
//! millisecond a deadline closes the connection.
//!
//! Timeouts are judged passed a full millisecond after they end (the
//! instants are truncated to milliseconds), so on this clock a 100 ms
//! timeout counted from t = 0 closes at t = 101, and never at t = 100.

use std::time::{Duration, Instant};

use mio::Token;

use super::fake::Fake;
use super::{Env, Flags, Input, PlainRead, ReadOutcome, Settled, State, Step, Transport};
use crate::config::ServerConfig;
use crate::metrics::ShardStats;
use crate::net::buffer::{BufferPool, Scratch};
use crate::service::CloseReason;
use crate::shard::deadline::{TimerTarget, Timers};
use crate::shard::limits::ConnLimits;
use crate::shard::trace::Tracer;

/// What the test's service does with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// Sends everything back.
    Echo,
    /// Takes whole lines only: a partial line is an open frame.
    Lines,
    /// Answers `bye\n` to anything and closes the connection.
    Quit,
}

/// One connection and the parts of a shard it uses, on a virtual clock.
struct Harness {
    state: State,
    t: Transport,
    pool: BufferPool,
    scratch: Scratch,
    stats: ShardStats,
    trace: Tracer,
    limits: ConnLimits,
    timers: Timers,
    origin: Instant,
    now_ms: u32,
    service: Service,
    /// Lines the `Lines` service took.
    lines: Vec<Vec<u8>>,
    /// How the connection ended, and when.
    closed: Option<(CloseReason, u32)>,
    /// Reads that delivered in the common pass (`State::read_plain`).
    plain_passes: usize,
}

const MS: Duration = Duration::from_millis(1);

/// A configuration with every deadline off and small buffers; each test
/// turns on what it looks at.
fn config() -> ServerConfig {
    ServerConfig {
        buffer_size: 16,
        read_budget: 1024,
        max_read_buffer: 1024,
        write_high_water: 64,
        write_low_water: 16,
        idle_timeout: None,
        frame_timeout: None,
        write_timeout: None,
        output_soft_for: None,
        output_hard_limit: 1 << 20,
        close_linger: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    }
}

impl Harness {
    /// A connection opened at t = 0, as `Shard::open` does.
    fn open(config: ServerConfig, fake: Fake, service: Service) -> Harness {
        let origin = Instant::now();
        let mut h = Harness {
            state: State::new("192.0.2.1:5000".parse().unwrap(), 0),
            t: Transport::Fake(Box::new(fake)),
            pool: BufferPool::new(config.buffer_size, 4),
            scratch: Scratch::default(),
            stats: ShardStats::new(0),
            trace: Tracer::new(0, None),
            limits: ConnLimits::of(&config),
            timers: Timers::new(origin, MS),
            origin,
            now_ms: 0,
            service,
            lines: Vec::new(),
            closed: None,
            plain_passes: 0,
        };
        if h.t.handshaking() {
            h.state.deadlines.frame(0, false, true);
        }
        h.settle();
        h
    }

    fn fake(&mut self) -> &mut Fake {
        self.t.fake()
    }

    fn env(&mut self) -> (&mut State, &mut Transport, Env<'_>) {
        let env = Env {
            pool: &mut self.pool,
            stats: &self.stats,
            limits: &self.limits,
            now_ms: self.now_ms,
            trace: &self.trace,
        };
        (&mut self.state, &mut self.t, env)
    }

    /// A readable event, as `Shard::dispatch` handles it.
    fn readable(&mut self) -> Option<ReadOutcome> {
        self.assert_open();
        if self.fake().peer_fin {
            self.state.flags.set(Flags::HUP_SEEN);
        }
        let outcome = self.read();
        self.settle();
        outcome
    }

    /// A writable event.
    fn writable(&mut self) {
        self.assert_open();
        let (state, t, mut env) = self.env();
        if state.flush(t, &mut env) {
            self.read();
        }
        self.settle();
    }

    /// `Shard::read`, with the test's service: the common pass first
    /// (`State::read_plain`), then step by step.
    fn read(&mut self) -> Option<ReadOutcome> {
        let mut budget = self.limits.read_budget;
        let mut scratch = std::mem::take(&mut self.scratch);
        let (state, t, mut env) = self.env();
        let first = state.read_plain(t, &mut scratch, &mut budget, &mut env);
        self.scratch = scratch;
        match first {
            PlainRead::Bytes(input) => {
                self.plain_passes += 1;
                if let Some(outcome) = self.serve_input(input, budget) {
                    return Some(outcome);
                }
            }
            PlainRead::Done(outcome) => return Some(outcome),
            PlainRead::Step => {}
        }
        loop {
            let mut scratch = std::mem::take(&mut self.scratch);
            let (state, t, mut env) = self.env();
            let input = match state.read(t, &mut scratch, &mut budget, &mut env) {
                Step::Deliver(input) => input,
                Step::Done(outcome) => {
                    self.scratch = scratch;
                    return Some(outcome);
                }
                Step::Again => {
                    self.scratch = scratch;
                    continue;
                }
                Step::TlsFailed(failure) => panic!("a fake has no TLS: {failure}"),
                Step::Proxy(_) => panic!("no PROXY check is due"),
            };
            self.scratch = scratch;
            if let Some(outcome) = self.serve_input(input, budget) {
                return Some(outcome);
            }
        }
    }

    /// The service's call with `input`, and what the state does after it.
    fn serve_input(&mut self, input: Input, budget: usize) -> Option<ReadOutcome> {
        let scratch = std::mem::take(&mut self.scratch);
        let consumed = self.serve(input.bytes(&scratch));
        let (state, t, mut env) = self.env();
        let outcome = state.delivered(t, input, &scratch, consumed, budget, &mut env);
        self.scratch = scratch;
        outcome
    }

    fn serve(&mut self, input: &[u8]) -> usize {
        match self.service {
            Service::Echo => {
                self.send(input);
                input.len()
            }
            Service::Lines => {
                let end = input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let lines = input[..end].split_inclusive(|&b| b == b'\n');
                self.lines.extend(lines.map(<[u8]>::to_vec));
                end
            }
            Service::Quit => {
                self.send(b"bye\n");
                self.state.flags.set(Flags::CLOSE_REQUESTED);
                input.len()
            }
        }
    }

    /// What a service's `send` does.
    fn send(&mut self, bytes: &[u8]) {
        let (state, t, mut env) = self.env();
        state.send(t, bytes, &mut env);
    }

    /// A send from another connection's callback: settled after it.
    fn push(&mut self, bytes: &[u8]) {
        self.send(bytes);
        self.settle();
    }

    /// `Shard::settle`: close, or hold write interest and arm the timer.
    fn settle(&mut self) {
        let (state, t, mut env) = self.env();
        match state.settle(t, &mut env) {
            Settled::Close(reason) => self.close(reason),
            Settled::Open { wants_write } => {
                match wants_write {
                    true => self.state.flags.set(Flags::WRITE_INTEREST),
                    false => self.state.flags.clear(Flags::WRITE_INTEREST),
                }
                let token = Token(1 << 32);
                let (timers, limits) = (&mut self.timers, &self.limits);
                timers.arm_deadline(&mut self.state.deadlines, limits, token, &self.trace);
            }
        }
    }

    /// `Shard::close`'s part for the state and transport: the transport's
    /// last act (a reset or a graceful end), timer and buffers returned.
    fn close(&mut self, reason: CloseReason) {
        let mut sent = 0;
        self.t.before_close(reason, &mut sent);
        if let Some(timer) = self.state.deadlines.timer.take() {
            self.timers.cancel_deadline(timer);
        }
        for buf in [self.state.read_buf.take(), self.state.write_buf.take()] {
            buf.into_iter().for_each(|buf| self.pool.give(*buf));
        }
        self.closed = Some((reason, self.now_ms));
    }

    /// `Shard::begin_shutdown` for this connection, with the drain timer.
    fn shut_down(&mut self, drain: Duration) {
        self.timers.arm_after(drain, TimerTarget::Drain);
        self.state.flags.set(Flags::DRAINING);
        self.read();
        self.settle();
    }

    /// Moves the clock to `ms`, one millisecond at a time, firing timers
    /// as `Shard::fire_timers` does; stops once the connection is closed.
    fn at(&mut self, ms: u32) {
        while self.now_ms < ms && self.closed.is_none() {
            self.now_ms += 1;
            let now = self.origin + MS * self.now_ms;
            self.timers.set_now(now);
            assert_eq!(self.timers.now_ms(), self.now_ms);
            let mut fired = Vec::new();
            self.timers.expire(&mut fired);
            for (_, target) in fired {
                match target {
                    TimerTarget::Deadline(_) => {
                        let limits = &self.limits;
                        match self.state.deadlines.fired(self.now_ms, limits) {
                            Some(reason) => self.close(reason),
                            None => self.settle(),
                        }
                    }
                    TimerTarget::Drain => self.close(CloseReason::Shutdown),
                    other => panic!("unexpected timer {other:?}"),
                }
            }
        }
    }

    /// Runs the clock to `ms` and expects the connection still open at
    /// `ms - 1` and closed for `reason` exactly at `ms`.
    fn closes_at(&mut self, ms: u32, reason: CloseReason) {
        self.at(ms - 1);
        assert_eq!(self.closed, None, "closed before {ms} ms");
        self.at(ms);
        assert_eq!(self.closed, Some((reason, ms)));
    }

    fn assert_open(&self) {
        assert_eq!(self.closed, None, "the connection is closed");
    }

    fn wants_write(&self) -> bool {
        self.state.flags.any(Flags::WRITE_INTEREST)
    }
}

#[test]
fn a_short_round_trip_costs_one_read_and_one_write() {
    let mut h = Harness::open(config(), Fake::with_room(1 << 20), Service::Echo);
    h.fake().arrive(b"ping");
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    let fake = h.fake();
    assert_eq!((fake.reads, fake.writes), (1, 1), "short read = drained");
    assert_eq!(fake.sent, b"ping");
    assert!(!h.wants_write(), "write interest only while output waits");
    assert_eq!(h.pool.bytes_lent(), 0, "an idle connection holds no buffer");
}

#[test]
fn only_a_connection_holding_nothing_in_no_checked_state_takes_the_common_pass() {
    let mut h = Harness::open(config(), Fake::with_room(1 << 20), Service::Lines);
    h.fake().arrive(b"one\ntw");
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!(h.plain_passes, 1, "holding nothing: the common pass");
    // Holding "tw": the next read goes into its own buffer, step by step.
    h.fake().arrive(b"o\n");
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!(h.plain_passes, 1);
    assert_eq!(h.lines, [b"one\n".to_vec(), b"two\n".to_vec()]);
    // Held nothing again: back on the common pass, read once, drained.
    h.fake().arrive(b"three\n");
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!((h.plain_passes, h.fake().reads), (2, 3));
    // Standing for a TLS session in its handshake: stepped.
    h.fake().handshaking = true;
    h.fake().arrive(b"four\n");
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!(h.plain_passes, 2);
    assert_eq!(h.lines.len(), 4);
}

#[test]
fn a_read_with_nothing_waiting_ends_drained_and_holds_nothing() {
    let mut h = Harness::open(config(), Fake::with_room(1 << 20), Service::Echo);
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!((h.plain_passes, h.fake().reads), (0, 1));
    assert_eq!(h.pool.bytes_lent(), 0);
    // The peer's FIN: noted in the common pass, stopped by the next step.
    h.fake().peer_fin = true;
    assert_eq!(h.readable(), Some(ReadOutcome::Stopped));
    assert!(h.state.flags.any(Flags::PEER_EOF));
    assert_eq!(
        h.closed.map(|(reason, _)| reason),
        Some(CloseReason::PeerClosed)
    );
}

#[test]
fn one_read_takes_all_that_waits_and_only_leftovers_are_kept() {
    let mut h = Harness::open(config(), Fake::with_room(1 << 20), Service::Lines);
    // 100 bytes: more than a pooled buffer (16), taken by one scratch read.
    let mut input = [b'x'; 100];
    input[59] = b'\n';
    h.fake().arrive(&input);
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!(h.fake().reads, 1);
    assert_eq!(h.lines, [input[..60].to_vec()]);
    // The 40 bytes of the open line moved to a buffer of the connection's.
    assert_eq!(h.state.read_buf.as_ref().map(|buf| buf.len()), Some(40));
    assert_eq!(h.pool.bytes_lent(), 40, "a 16-byte buffer grown to hold 40");
    h.fake().arrive(b"y\n");
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!(h.lines.len(), 2);
    assert_eq!(h.lines[1].len(), 42);
    assert_eq!(h.pool.bytes_lent(), 0, "finished: nothing held");
}

#[test]
fn the_read_budget_stops_a_busy_peer_and_a_revisit_goes_on() {
    let config = ServerConfig {
        read_budget: 16,
        ..config()
    };
    let mut h = Harness::open(config, Fake::with_room(1 << 20), Service::Echo);
    h.fake().arrive(&[b'x'; 40]);
    assert_eq!(h.readable(), Some(ReadOutcome::BudgetSpent));
    assert_eq!((h.fake().reads, h.fake().sent.len()), (1, 16));
    assert_eq!(h.readable(), Some(ReadOutcome::BudgetSpent));
    assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    assert_eq!((h.fake().reads, h.fake().sent.len()), (3, 40));
}

#[test]
fn backpressure_pauses_at_the_high_water_mark_and_resumes_below_the_low() {
    // The peer sends 8 bytes at a time and reads nothing: echoes pile up.
    let mut h = Harness::open(config(), Fake::with_room(0), Service::Echo);
    for _ in 0..8 {
        h.fake().arrive(&[b'x'; 8]);
        assert_eq!(h.readable(), Some(ReadOutcome::Drained));
    }
    assert_eq!(h.state.write_buffered(), 64);
    assert!(h.wants_write());
    h.fake().arrive(&[b'y'; 8]);
    assert_eq!(h.readable(), Some(ReadOutcome::Stopped));
    assert_eq!(h.fake().reads, 8, "not read at the high-water mark");
    assert_eq!(h.stats.backpressure_pauses.get(), 1);
    h.fake().peer_reads(48);
    h.writable();
    assert_eq!(h.state.write_buffered(), 16);
    assert_eq!(h.fake().reads, 8, "still paused at the low-water mark");
    h.fake().peer_reads(1);
    h.writable();
    assert_eq!(h.fake().reads, 9, "resumed below it, without a new edge");
    assert_eq!(h.state.write_buffered(), 15 + 8);
    assert_eq!(h.fake().inbox.len(), 0);
}

#[test]
fn the_peers_eof_flushes_what_it_is_owed_then_closes() {
    let mut h = Harness::open(config(), Fake::with_room(3), Service::Echo);
    h.fake().arrive(b"hello");
    h.fake().peer_fin = true;
    assert_eq!(h.readable(), Some(ReadOutcome::Stopped));
    assert!(h.state.flags.any(Flags::PEER_EOF));
    assert_eq!(h.fake().reads, 2, "the EOF behind the data is read at once");
    assert_eq!(h.closed, None, "two bytes are still owed");
    assert!(h.wants_write());
    h.fake().peer_reads(2);
    h.writable();
    assert_eq!(h.fake().sent, b"hello");
    assert_eq!(h.closed, Some((CloseReason::PeerClosed, 0)));
    assert!(!h.fake().fin_sent);
    assert_eq!(h.pool.bytes_lent(), 0);
}

#[test]
fn a_service_close_flushes_sends_fin_and_discards_until_the_peers_eof() {
    let mut h = Harness::open(config(), Fake::with_room(2), Service::Quit);
    h.fake().arrive(b"quit\n");
    h.readable();
    assert_eq!(h.fake().sent, b"by");
    assert!(!h.fake().fin_sent, "no FIN before the reply is out");
    h.fake().arrive(b"more input");
    h.readable();
    assert_eq!(h.stats.tcp_bytes_discarded.get(), 10, "read and dropped");
    h.at(30);
    h.fake().peer_reads(2);
    h.writable();
    assert_eq!(h.fake().sent, b"bye\n");
    assert!(h.fake().fin_sent);
    assert_eq!(h.closed, None, "lingering for the peer's EOF");
    h.at(50);
    h.fake().peer_fin = true;
    h.readable();
    assert_eq!(h.closed, Some((CloseReason::Service, 50)));
}

#[test]
fn a_lingering_close_ends_exactly_at_the_linger_deadline() {
    let mut h = Harness::open(config(), Fake::with_room(2), Service::Quit);
    h.fake().arrive(b"quit\n");
    h.readable();
    h.at(30);
    h.fake().peer_reads(2);
    h.writable(); // the FIN goes at 30: lingering for 200 ms from there
    h.at(100);
    h.fake().arrive(b"input does not reset it");
    h.readable();
    h.closes_at(30 + 200 + 1, CloseReason::Service);
}

#[test]
fn shutdown_discards_input_flushes_then_fin_and_the_peers_eof_closes() {
    let mut h = Harness::open(config(), Fake::with_room(0), Service::Echo);
    h.fake().arrive(b"abc");
    h.readable();
    h.fake().arrive(b"late");
    h.shut_down(Duration::from_millis(500));
    assert_eq!(h.stats.tcp_bytes_discarded.get(), 4);
    assert!(!h.fake().fin_sent, "the echo is still owed");
    h.fake().peer_reads(3);
    h.writable();
    assert_eq!(h.fake().sent, b"abc");
    assert!(h.fake().fin_sent, "FIN once flushed");
    h.at(40);
    h.fake().peer_fin = true;
    h.readable();
    assert_eq!(h.closed, Some((CloseReason::Shutdown, 40)));
}

#[test]
fn a_draining_connection_whose_peer_stays_is_closed_at_the_drain_deadline() {
    let mut h = Harness::open(config(), Fake::with_room(16), Service::Echo);
    h.shut_down(Duration::from_millis(500));
    assert!(h.fake().fin_sent);
    h.closes_at(500, CloseReason::Shutdown);
}

#[test]
fn the_idle_timeout_counts_from_the_last_byte_either_way() {
    let config = ServerConfig {
        idle_timeout: Some(Duration::from_millis(100)),
        ..config()
    };
    let mut h = Harness::open(config, Fake::with_room(1 << 20), Service::Echo);
    h.at(40);
    h.fake().arrive(b"x");
    h.readable();
    h.closes_at(40 + 100 + 1, CloseReason::IdleTimeout);
}

#[test]
fn the_frame_timeout_counts_from_the_first_byte_however_slowly_it_trickles() {
    let config = ServerConfig {
        frame_timeout: Some(Duration::from_millis(50)),
        ..config()
    };
    let mut fake = Fake::with_room(1 << 20);
    fake.read_chunk = 1;
    let mut h = Harness::open(config, fake, Service::Lines);
    h.at(10);
    h.fake().arrive(b"ab\ncd");
    for _ in 0..5 {
        h.readable(); // a byte at a time
    }
    assert_eq!(h.lines, [b"ab\n".to_vec()]);
    h.at(30);
    h.fake().arrive(b"e");
    h.readable(); // more of the same frame: the clock keeps running
    h.closes_at(10 + 50 + 1, CloseReason::FrameTimeout);
}

#[test]
fn a_tls_handshake_is_a_frame_open_from_the_first_moment() {
    let config = ServerConfig {
        frame_timeout: Some(Duration::from_millis(50)),
        ..config()
    };
    let mut fake = Fake::with_room(1 << 20);
    fake.handshaking = true;
    let mut h = Harness::open(config.clone(), fake, Service::Echo);
    h.closes_at(51, CloseReason::FrameTimeout);

    let mut fake = Fake::with_room(1 << 20);
    fake.handshaking = true;
    let mut h = Harness::open(config, fake, Service::Echo);
    h.at(20);
    h.fake().handshaking = false; // the records that finished it arrive
    h.fake().arrive(b"x");
    h.readable();
    h.at(1000);
    assert_eq!(h.closed, None);
}

#[test]
fn a_tls_record_trickled_after_the_handshake_is_an_open_frame() {
    let config = ServerConfig {
        frame_timeout: Some(Duration::from_millis(100)),
        ..config()
    };
    let mut h = Harness::open(config.clone(), Fake::with_room(1 << 20), Service::Echo);
    h.at(10);
    for ms in [10, 40, 70, 100] {
        h.at(ms);
        h.fake().arrive_partial_record(1); // ciphertext, no plaintext yet
        h.readable();
    }
    h.closes_at(10 + 100 + 1, CloseReason::FrameTimeout);
    assert!(h.fake().sent.is_empty(), "the service saw nothing");

    // A record that completes gives the service its bytes and closes the
    // frame.
    let mut h = Harness::open(config, Fake::with_room(1 << 20), Service::Echo);
    h.fake().arrive_partial_record(3);
    h.readable();
    h.at(50);
    h.fake().arrive(b"hi");
    h.readable();
    h.at(1000);
    assert_eq!(h.closed, None);
    assert_eq!(h.fake().sent, b"hi");
}

#[test]
fn a_peer_closed_for_not_reading_is_reset_any_other_close_is_graceful() {
    let hard = ServerConfig {
        output_hard_limit: 100,
        ..config()
    };
    let mut h = Harness::open(hard, Fake::with_room(0), Service::Echo);
    h.push(&[b'x'; 101]);
    assert_eq!(h.closed, Some((CloseReason::OutputHardLimit, 0)));
    assert!(h.fake().reset, "the hard limit resets");

    let soft = ServerConfig {
        output_soft_limit: 10,
        output_soft_for: Some(Duration::from_millis(100)),
        ..config()
    };
    let mut h = Harness::open(soft, Fake::with_room(0), Service::Echo);
    h.push(&[b'x'; 11]);
    h.closes_at(101, CloseReason::OutputSoftLimit);
    assert!(h.fake().reset, "the soft limit resets");

    let stall = ServerConfig {
        write_timeout: Some(Duration::from_millis(30)),
        ..config()
    };
    let mut h = Harness::open(stall, Fake::with_room(0), Service::Echo);
    h.push(b"for a peer that does not read");
    h.closes_at(31, CloseReason::WriteTimeout);
    assert!(h.fake().reset, "the write timeout resets");

    let idle = ServerConfig {
        idle_timeout: Some(Duration::from_millis(30)),
        frame_timeout: Some(Duration::from_millis(20)),
        ..config()
    };
    let mut h = Harness::open(idle.clone(), Fake::with_room(1 << 20), Service::Echo);
    h.closes_at(31, CloseReason::IdleTimeout);
    assert!(!h.fake().reset, "an idle peer reads its FIN");
    let mut h = Harness::open(idle, Fake::with_room(1 << 20), Service::Lines);
    h.fake().arrive(b"half a line");
    h.readable();
    h.closes_at(21, CloseReason::FrameTimeout);
    assert!(!h.fake().reset, "a slow sender reads its FIN");

    let mut h = Harness::open(config(), Fake::with_room(1 << 20), Service::Quit);
    h.fake().arrive(b"quit\n");
    h.readable();
    h.fake().peer_fin = true;
    h.readable();
    assert_eq!(h.closed, Some((CloseReason::Service, 0)));
    assert!(!h.fake().reset && h.fake().fin_sent);
    assert_eq!(h.fake().sent, b"bye\n");
}

#[test]
fn a_write_stall_counts_from_the_last_progress() {
    let config = ServerConfig {
        write_timeout: Some(Duration::from_millis(30)),
        ..config()
    };
    let mut h = Harness::open(config, Fake::with_room(0), Service::Echo);
    h.at(5);
    h.push(b"for a peer that does not read");
    h.at(20);
    h.fake().peer_reads(1);
    h.writable(); // one byte of progress restarts the clock
    h.closes_at(20 + 30 + 1, CloseReason::WriteTimeout);
}

#[test]
fn output_above_the_soft_limit_for_too_long_closes() {
    let config = ServerConfig {
        output_soft_limit: 10,
        output_soft_for: Some(Duration::from_millis(100)),
        ..config()
    };
    let mut h = Harness::open(config.clone(), Fake::with_room(0), Service::Echo);
    h.at(7);
    h.push(&[b'x'; 11]);
    h.at(50);
    h.push(&[b'x'; 5]); // still above: the clock keeps running
    h.closes_at(7 + 100 + 1, CloseReason::OutputSoftLimit);

    let mut h = Harness::open(config, Fake::with_room(0), Service::Echo);
    h.push(&[b'x'; 11]);
    h.at(60);
    h.fake().peer_reads(1);
    h.writable(); // back at the limit: the clock stops
    h.at(5000);
    assert_eq!(h.closed, None);
}

#[test]
fn the_hard_output_limit_closes_at_once_and_frees_the_buffer() {
    let config = ServerConfig {
        output_hard_limit: 100,
        ..config()
    };
    let mut h = Harness::open(config, Fake::with_room(0), Service::Echo);
    h.push(&[b'x'; 60]);
    assert!(h.pool.bytes_lent() >= 60);
    h.send(&[b'x'; 41]);
    assert_eq!(h.pool.bytes_lent(), 0, "freed before the shard closes it");
    h.settle();
    assert_eq!(h.closed, Some((CloseReason::OutputHardLimit, 0)));
}

#[test]
fn input_is_held_to_the_frame_limit() {
    let config = ServerConfig {
        max_read_buffer: 32,
        ..config()
    };
    let mut h = Harness::open(config, Fake::with_room(1 << 20), Service::Lines);
    h.fake().arrive(&[b'x'; 40]);
    assert_eq!(h.readable(), Some(ReadOutcome::Stopped));
    assert_eq!(
        h.fake().reads,
        1,
        "32 bytes (the limit) into the scratch buffer"
    );
    assert_eq!(h.closed, Some((CloseReason::ReadBufferFull, 0)));
    assert_eq!(h.pool.bytes_lent(), 0);
}

#[test]
fn a_socket_that_takes_one_byte_at_a_time_gets_everything_in_order() {
    let config = ServerConfig {
        write_timeout: Some(Duration::from_millis(30)),
        ..config()
    };
    let mut fake = Fake::with_room(1 << 20);
    fake.write_chunk = 1;
    let mut h = Harness::open(config, fake, Service::Echo);
    h.push(b"hello world");
    assert_eq!((h.fake().writes, h.state.write_buffered()), (1, 10));
    for ms in 1..=10 {
        assert!(h.wants_write());
        h.at(ms * 20); // each byte is progress: no write stall
        h.writable();
    }
    assert_eq!(h.fake().sent, b"hello world");
    assert_eq!(h.fake().writes, 11, "one write per writable event");
    assert!(!h.wants_write());
    assert_eq!((h.closed, h.pool.bytes_lent()), (None, 0));
}

impl Harness {
    /// An outbound connection at t = 0, as `outbound::open` leaves it.
    fn connecting(config: ServerConfig, fake: Fake, service: Service) -> Harness {
        let mut h = Harness::open(config, fake, service);
        h.state.begin_connect(0);
        h.settle();
        h
    }

    /// The connect completed, as `Shard::finish_connect` then `dispatch`
    /// handle the writable event.
    fn connect_completes(&mut self) {
        self.state.connected(self.now_ms);
        let (state, t, mut env) = self.env();
        state.flush(t, &mut env);
        self.read();
        self.settle();
    }
}

#[test]
fn a_connecting_connection_buffers_output_and_reads_nothing_until_connected() {
    let mut h = Harness::connecting(config(), Fake::with_room(1 << 20), Service::Echo);
    assert!(
        h.wants_write(),
        "writability announces the connect's outcome"
    );
    h.push(b"hello");
    h.fake().arrive(b"early");
    assert_eq!(h.readable(), Some(ReadOutcome::Stopped));
    let fake = h.fake();
    assert_eq!(
        (fake.reads, fake.writes),
        (0, 0),
        "no syscall before the connect"
    );
    assert_eq!(h.state.write_buffered(), 5);
    h.at(7);
    h.connect_completes();
    // The buffered output went out first, then the echo of what arrived.
    assert_eq!(h.fake().sent, b"helloearly");
    assert!(!h.wants_write());
    assert_eq!(h.pool.bytes_lent(), 0);
}

#[test]
fn the_connect_timeout_closes_at_its_millisecond_and_stops_once_connected() {
    let timeout = ServerConfig {
        connect_timeout: Some(Duration::from_millis(50)),
        ..config()
    };
    let mut h = Harness::connecting(timeout.clone(), Fake::with_room(64), Service::Echo);
    h.closes_at(51, CloseReason::ConnectTimeout);

    let idle = ServerConfig {
        idle_timeout: Some(Duration::from_millis(100)),
        ..timeout
    };
    let mut h = Harness::connecting(idle, Fake::with_room(64), Service::Echo);
    h.at(40);
    h.connect_completes();
    // No connect timeout any more; the idle clock counts from the connect.
    h.closes_at(40 + 100 + 1, CloseReason::IdleTimeout);
}

#[test]
fn closing_or_draining_a_connecting_connection_ends_it_at_once() {
    let mut h = Harness::connecting(config(), Fake::with_room(64), Service::Echo);
    h.push(b"never sent");
    h.state.flags.set(Flags::CLOSE_REQUESTED);
    h.settle();
    assert_eq!(h.closed, Some((CloseReason::Service, 0)));
    assert!(h.fake().sent.is_empty() && !h.fake().fin_sent);

    let mut h = Harness::connecting(config(), Fake::with_room(64), Service::Echo);
    h.at(3);
    h.shut_down(Duration::from_secs(5));
    assert_eq!(h.closed, Some((CloseReason::Shutdown, 3)));
}

#[test]
fn output_past_the_hard_limit_while_connecting_closes_it() {
    let small = ServerConfig {
        output_hard_limit: 100,
        output_soft_limit: 50,
        ..config()
    };
    let mut h = Harness::connecting(small, Fake::with_room(1 << 20), Service::Echo);
    h.push(&[7; 100]);
    assert_eq!(h.closed, None);
    h.push(&[7; 1]);
    assert_eq!(h.closed, Some((CloseReason::OutputHardLimit, 0)));
    assert_eq!(h.pool.bytes_lent(), 0, "the backlog's memory is freed");
}
