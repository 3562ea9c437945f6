//! A client `rudp::Connection` and a server `rudp::Endpoint` on a network
//! the fuzzer controls: it decides which datagrams are delivered, dropped,
//! duplicated or reordered, injects datagrams of its own into either side
//! (from any of four addresses), moves a virtual clock, sends messages and
//! polls events.
//!
//! Input: byte 0 picks the client's mode and ISN; then a sequence of
//! operations, each an opcode byte followed by its arguments (see `step`).
//! Reading past the end yields zeros, so every input is a valid program.
//!
//! Checked besides "no panic":
//! - everything either side's `poll_transmit` writes parses with
//!   `Packet::parse`, and `poll_transmit` goes quiet (no endless output);
//! - `poll_timeout` does not stay in the past after `handle_timeout`
//!   (an event loop driving it would spin);
//! - `can_send(len)` agrees with what `send` then does;
//! - the endpoint answers an address it has no connection with no more
//!   bytes than that address sent it, and never accepts a peer without a
//!   cookie it minted for it;
//! - events: `Connected` once, on the client only, before its messages;
//!   one `Closed`, `Local` only after `close`; on the endpoint, `Closed` is
//!   a connection's last event (as `Endpoint::poll_event` documents);
//! - messages: while nothing was injected into a direction, what arrives is
//!   exactly what was sent (reliable: a prefix of it, in order; unreliable:
//!   an in-order subsequence; never a message that was not sent).
//!
//! It found two bugs, both fixed, with regression tests in the library:
//! `Closed` given before a connection's waiting messages, and an unreliable
//! gap skip splicing two messages (see README.md).

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sockloop::rudp::{CloseCause, Config, Connection, Endpoint, Event, Mode, Packet, Seq};

/// Datagrams held in flight per direction; more are dropped.
const MAX_QUEUE: usize = 512;
/// `poll_transmit` calls in a row after which output counts as endless.
const MAX_POLLS: usize = 4096;
/// Connections the endpoint may hold.
const MAX_PEERS: usize = 16;
/// Longest message the harness sends (5 fragments of 1200 bytes).
const MAX_SEND: usize = 5000;

fn addr(i: u8) -> SocketAddr {
    const ADDRS: [&str; 4] = [
        "127.0.0.1:4000", // the client
        "127.0.0.1:4001",
        "127.0.0.2:4000",
        "[::1]:4000",
    ];
    ADDRS[usize::from(i % 4)].parse().unwrap()
}

/// The fuzz input as a stream of numbers; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// A message the harness sends: `len` bytes that differ from every other
/// message's (its number in front, then a pattern keyed by it).
fn message(id: u32, len: usize) -> Vec<u8> {
    let key = id.to_be_bytes();
    (0..len)
        .map(|j| match j {
            0..4 => key[j],
            _ => (j as u8) ^ (id as u8).wrapping_mul(31) ^ key[2],
        })
        .collect()
}

/// An event, with a message shown by its length and first bytes.
fn describe(event: &Event) -> String {
    match event {
        Event::Message(m) => format!("Message({} bytes {:02x?}..)", m.len(), &m[..m.len().min(8)]),
        other => format!("{other:?}"),
    }
}

/// What one direction delivered so far, against what was sent.
#[derive(Default)]
struct Stream {
    sent: Vec<Vec<u8>>,
    /// Index in `sent` of the next message that may arrive.
    next: usize,
    /// Cleared once the fuzzer injects datagrams into this direction.
    clean: bool,
}

impl Stream {
    fn arrived(&mut self, mode: Mode, got: &[u8], side: &str) {
        if !self.clean {
            return;
        }
        let from = self.next;
        let found = match mode {
            Mode::Reliable => self
                .sent
                .get(from)
                .filter(|m| m[..] == got[..])
                .map(|_| from),
            Mode::Unreliable => (from..self.sent.len()).find(|&i| self.sent[i][..] == got[..]),
        };
        match found {
            Some(i) => self.next = i + 1,
            None => panic!(
                "{side} received a message that was not sent next ({mode:?}): {} bytes {:02x?}...; \
                 {} sent, next expected #{from} of {:?} bytes",
                got.len(),
                &got[..got.len().min(8)],
                self.sent.len(),
                self.sent.get(from).map(Vec::len),
            ),
        }
    }
}

struct Harness {
    now: Instant,
    config: Config,
    client: Connection,
    server: Endpoint,
    c2s: VecDeque<Vec<u8>>,
    s2c: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    next_id: u32,
    up: Stream,
    down: Stream,
    client_connected: bool,
    client_closed: Option<CloseCause>,
    client_close_called: bool,
    server_close_called: bool,
    /// How many `Closed` the endpoint reported per peer address. Each
    /// connection ends once, and only accepted ones end: more `Closed` (or
    /// anything after the last) than connections accepted is an event of a
    /// connection already over. (A client's old hello with a still-valid
    /// cookie, delivered late, may open a second connection for the same
    /// address after the first closed: that is two.)
    server_closed: HashMap<SocketAddr, u64>,
    received_from: HashMap<SocketAddr, usize>,
    sent_to: HashMap<SocketAddr, usize>,
}

impl Harness {
    fn new(flags: u8) -> Harness {
        let now = Instant::now();
        let mode = match flags & 1 {
            0 => Mode::Reliable,
            _ => Mode::Unreliable,
        };
        let config = Config {
            mode,
            ..Config::default()
        };
        // ISN 0, or just before the wrap.
        let isn = match flags & 2 {
            0 => Seq(0),
            _ => Seq(u32::MAX - 2),
        };
        Harness {
            now,
            config,
            client: Connection::connect(config, now, isn),
            server: Endpoint::new(Config::default(), now, &[0; 32], MAX_PEERS),
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            buf: Vec::new(),
            next_id: 0,
            up: Stream {
                clean: true,
                ..Stream::default()
            },
            down: Stream {
                clean: true,
                ..Stream::default()
            },
            client_connected: false,
            client_closed: None,
            client_close_called: false,
            server_close_called: false,
            server_closed: HashMap::new(),
            received_from: HashMap::new(),
            sent_to: HashMap::new(),
        }
    }

    fn parse_check(&self, side: &str) {
        if let Err(e) = Packet::parse(&self.buf, self.config.max_payload) {
            panic!(
                "{side} sent an unparsable datagram ({e}): {:02x?}",
                self.buf
            );
        }
    }

    fn flush_client(&mut self) {
        for polls in 0.. {
            assert!(polls < MAX_POLLS, "client.poll_transmit never goes quiet");
            if !self.client.poll_transmit(self.now, &mut self.buf) {
                assert!(self.buf.is_empty(), "poll_transmit false but wrote bytes");
                return;
            }
            self.parse_check("client");
            if self.c2s.len() < MAX_QUEUE {
                self.c2s.push_back(self.buf.clone());
            }
        }
    }

    fn flush_server(&mut self) {
        for polls in 0.. {
            assert!(polls < MAX_POLLS, "endpoint.poll_transmit never goes quiet");
            let Some(to) = self.server.poll_transmit(self.now, &mut self.buf) else {
                assert!(self.buf.is_empty(), "poll_transmit None but wrote bytes");
                return;
            };
            self.parse_check("endpoint");
            let sent = self.sent_to.entry(to).or_default();
            *sent += self.buf.len();
            if to == addr(0) {
                if self.s2c.len() < MAX_QUEUE {
                    self.s2c.push_back(self.buf.clone());
                }
            } else {
                // Only the client can hold a connection, so anything else
                // is a stateless reply and must not amplify.
                let got = self.received_from.get(&to).copied().unwrap_or(0);
                assert!(
                    *sent <= got,
                    "endpoint sent {sent} bytes to {to}, which sent it only {got}"
                );
            }
        }
    }

    fn server_receives(&mut self, from: SocketAddr, datagram: &[u8]) {
        *self.received_from.entry(from).or_default() += datagram.len();
        self.server.handle_datagram(self.now, from, datagram);
        assert!(self.server.peers() <= MAX_PEERS);
        for i in 1..4 {
            assert!(
                self.server.connection(addr(i)).is_none(),
                "{} got a connection without a cookie minted for it",
                addr(i)
            );
        }
    }

    fn deliver(&mut self, up: bool, index: usize, keep: bool) {
        let queue = if up { &mut self.c2s } else { &mut self.s2c };
        if queue.is_empty() {
            return;
        }
        let index = index % queue.len();
        let datagram = match keep {
            true => queue[index].clone(),
            false => queue.remove(index).unwrap(),
        };
        if up {
            self.server_receives(addr(0), &datagram);
        } else {
            let result = self.client.handle_datagram(self.now, &datagram);
            assert!(result.is_ok(), "{result:?}");
        }
    }

    /// Runs the deadlines that passed, as an event loop would, and checks
    /// that it would not spin: handled deadlines move into the future.
    fn timeouts(&mut self) {
        for round in 0.. {
            let now = self.now;
            let client_due = self.client.poll_timeout().is_some_and(|at| at <= now);
            let server_due = self.server.poll_timeout().is_some_and(|at| at <= now);
            if !client_due && !server_due {
                return;
            }
            assert!(
                round < 4,
                "deadline still in the past after {round} rounds of handle_timeout \
                 (client {client_due}, endpoint {server_due}): the loop would spin"
            );
            if client_due {
                self.client.handle_timeout(now);
                self.flush_client();
            }
            if server_due {
                self.server.handle_timeout(now);
                self.flush_server();
            }
        }
    }

    fn client_send(&mut self, len: usize) {
        let msg = message(self.next_id, len);
        self.next_id += 1;
        let could = self.client.can_send(len);
        let result = self.client.send(&msg);
        assert_eq!(
            could,
            result.is_ok(),
            "can_send({len}) {could} but send {result:?}"
        );
        if result.is_ok() {
            self.up.sent.push(msg);
        }
    }

    fn server_send(&mut self, len: usize) {
        let msg = message(self.next_id, len);
        self.next_id += 1;
        let could = self.server.can_send(addr(0), len);
        let result = self.server.send(addr(0), &msg);
        assert_eq!(
            could,
            result.is_ok(),
            "can_send({len}) {could} but send {result:?}"
        );
        if result.is_ok() {
            self.down.sent.push(msg);
        }
    }

    fn events(&mut self, limit: usize) {
        // One connection generation only: a second one starts its
        // sequence numbers afresh, and this bookkeeping does not follow it.
        let one_generation = self.server.stats().accepted <= 1;
        for _ in 0..limit {
            let Some(event) = self.client.poll_event() else {
                break;
            };
            match event {
                Event::Connected => {
                    assert!(!self.client_connected, "Connected twice");
                    assert!(self.client_closed.is_none(), "Connected after Closed");
                    self.client_connected = true;
                }
                Event::Message(m) => {
                    assert!(self.client_connected, "a message before Connected");
                    assert!(m.len() <= self.config.max_message);
                    if one_generation {
                        self.down.arrived(self.config.mode, &m, "client");
                    }
                }
                Event::Closed(cause) => {
                    assert!(self.client_closed.is_none(), "Closed twice");
                    assert!(cause != CloseCause::Local || self.client_close_called);
                    self.client_closed = Some(cause);
                }
            }
        }
        for _ in 0..limit {
            let Some((peer, event)) = self.server.poll_event() else {
                break;
            };
            let accepted = self.server.stats().accepted;
            if let Some(&closed) = self.server_closed.get(&peer) {
                // As many ended as were ever accepted, and none open now:
                // the event is an ended connection's.
                let open = self.server.connection(peer).is_some_and(|c| !c.is_closed());
                let stale = closed >= accepted && !open;
                if stale {
                    panic!(
                        "endpoint gave {} for {peer} after that peer's Closed",
                        describe(&event)
                    );
                }
            }
            match event {
                Event::Connected => panic!("the endpoint reported Connected"),
                Event::Message(m) => {
                    assert_eq!(peer, addr(0));
                    assert!(m.len() <= self.config.max_message);
                    if one_generation {
                        self.up.arrived(self.config.mode, &m, "endpoint");
                    }
                }
                Event::Closed(cause) => {
                    assert!(cause != CloseCause::Local || self.server_close_called);
                    *self.server_closed.entry(peer).or_default() += 1;
                }
            }
        }
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.u8() % 19 {
            // A datagram of the fuzzer's to the client.
            0 => {
                let len = usize::from(input.u8());
                let datagram = input.bytes(len).to_vec();
                self.down.clean = false;
                let _ = self.client.handle_datagram(self.now, &datagram);
            }
            // A datagram of the fuzzer's to the endpoint, from any address.
            1 => {
                let from = addr(input.u8());
                let len = usize::from(input.u8());
                let datagram = input.bytes(len).to_vec();
                if from == addr(0) {
                    self.up.clean = false;
                }
                self.server_receives(from, &datagram);
            }
            2 => {
                self.now += Duration::from_millis(u64::from(input.u16()));
                self.timeouts();
            }
            3 => {
                let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                if let Some(at) = next {
                    self.now = self.now.max(at);
                }
                self.timeouts();
            }
            // handle_timeout with nothing due must be harmless.
            4 => {
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
            }
            5 => self.flush_client(),
            6 => self.flush_server(),
            7 => self.deliver(true, usize::from(input.u8()), false),
            8 => self.deliver(false, usize::from(input.u8()), false),
            // Drop one datagram in flight.
            9 => {
                let b = input.u8();
                let queue = if b & 1 == 0 {
                    &mut self.c2s
                } else {
                    &mut self.s2c
                };
                if !queue.is_empty() {
                    let index = usize::from(b >> 1) % queue.len();
                    queue.remove(index);
                }
            }
            // Deliver a copy of one, keeping it in flight.
            10 => {
                let b = input.u8();
                self.deliver(b & 1 == 0, usize::from(b >> 1), true);
            }
            // A perfect network for a few rounds.
            11 => {
                for _ in 0..=input.u8() % 8 {
                    self.flush_client();
                    self.flush_server();
                    while !self.c2s.is_empty() {
                        self.deliver(true, 0, false);
                    }
                    while !self.s2c.is_empty() {
                        self.deliver(false, 0, false);
                    }
                }
            }
            12 => {
                let len = usize::from(input.u16()) % (MAX_SEND + 1);
                self.client_send(len);
            }
            13 => {
                let len = usize::from(input.u16()) % (MAX_SEND + 1);
                self.server_send(len);
            }
            14 => {
                let limit = usize::from(input.u8());
                self.events(limit);
            }
            15 => {
                self.client_close_called = true;
                self.client.close();
            }
            16 => {
                self.server_close_called = true;
                self.server.close_all();
            }
            17 => {
                let held = input.u8() & 1 == 1;
                self.server.hold(addr(0), held);
            }
            // Small clock steps (the unreliable gap timeout is 50 ms).
            _ => {
                self.now += Duration::from_millis(u64::from(input.u8()));
                self.timeouts();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut harness = Harness::new(input.u8());
    while !input.0.is_empty() {
        harness.step(&mut input);
    }
    harness.server.hold(addr(0), false);
    harness.events(usize::MAX);
});
