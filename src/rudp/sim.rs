//! Seeded simulations on a virtual clock: a client `Connection` and a
//! server `Endpoint` joined by a link that loses, duplicates, delays and
//! reorders datagrams. Every run is reproducible from its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::echo::EchoCore;
use super::*;
use crate::rng::Rng;

const CLIENT: &str = "10.0.0.2:5000";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What the link does to each datagram, independently per direction.
#[derive(Clone, Copy)]
struct Link {
    loss: f64,
    duplicate: f64,
    /// One-way delay.
    delay: Duration,
    /// Extra delay, uniform in `0..jitter`. Datagrams keep their order
    /// (a path is FIFO) unless picked for reordering.
    jitter: Duration,
    /// Share of datagrams that may overtake or fall behind others.
    reorder: f64,
}

impl Link {
    fn clean(delay: Duration) -> Link {
        Link {
            loss: 0.0,
            duplicate: 0.0,
            delay,
            jitter: Duration::ZERO,
            reorder: 0.0,
        }
    }
}

/// A scripted loss: once armed, the server's data packets are dropped
/// until the first of them goes again (a lost flight: only a timeout
/// recovers it), and that packet on its first `drop` transmissions. Acks
/// pass.
#[derive(Default)]
struct LoseRetransmissions {
    armed: bool,
    drop: usize,
    seq: Option<Seq>,
    /// When each of its transmissions left.
    sent: Vec<Instant>,
}

/// Datagrams on the wire, by arrival time (then sending order).
type Wire = BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>;

struct Sim {
    now: Instant,
    rng: Rng,
    link: Link,
    /// Drop everything from now on (a vanished peer).
    cut: bool,
    client: Connection,
    server: EchoCore,
    to_server: Wire,
    to_client: Wire,
    /// The latest arrival scheduled per direction (to server, to client).
    last_arrival: [Instant; 2],
    sent: u64,
    /// Data packets the link dropped, client to server.
    data_dropped: u64,
    /// Datagrams picked for reordering.
    reordered: u64,
    /// The server echoes what it receives.
    echo: bool,
    server_got: Vec<Vec<u8>>,
    client_got: Vec<Vec<u8>>,
    client_events: Vec<Event>,
    server_events: Vec<Event>,
    script: LoseRetransmissions,
}

impl Sim {
    fn new(config: Config, link: Link, seed: u64) -> Sim {
        Sim::with_isn(config, link, seed, Seq(seed as u32))
    }

    fn with_isn(config: Config, link: Link, seed: u64, isn: Seq) -> Sim {
        let now = Instant::now();
        Sim {
            now,
            rng: Rng::new(seed | 1),
            link,
            cut: false,
            client: Connection::connect(config, now, isn),
            server: EchoCore::new(Endpoint::new(config, now, &[seed as u8; 32], 16)),
            to_server: BinaryHeap::new(),
            to_client: BinaryHeap::new(),
            last_arrival: [now; 2],
            sent: 0,
            data_dropped: 0,
            reordered: 0,
            echo: false,
            server_got: Vec::new(),
            client_got: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            script: LoseRetransmissions::default(),
        }
    }

    fn addr() -> SocketAddr {
        CLIENT.parse().unwrap()
    }

    fn transmit(&mut self, bytes: &[u8], to_server: bool) {
        let scripted = !to_server && self.scripted_loss(bytes);
        let copies = if self.cut || scripted || self.rng.chance(self.link.loss) {
            if to_server && bytes.get(1) == Some(&3) {
                self.data_dropped += 1;
            }
            0
        } else if self.rng.chance(self.link.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.rng.below(self.link.jitter.as_micros() as u64);
            let mut at = self.now + self.link.delay + Duration::from_micros(jitter);
            let last = &mut self.last_arrival[usize::from(!to_server)];
            if self.rng.chance(self.link.reorder) {
                self.reordered += 1;
            } else {
                at = at.max(*last);
                *last = at;
            }
            self.sent += 1;
            let wire = if to_server {
                &mut self.to_server
            } else {
                &mut self.to_client
            };
            wire.push(Reverse((at, self.sent, bytes.to_vec())));
        }
    }

    /// Whether the script drops this datagram to the client.
    fn scripted_loss(&mut self, bytes: &[u8]) -> bool {
        let script = &mut self.script;
        if !script.armed {
            return false;
        }
        let Ok(Packet::Data { seq, .. }) = Packet::parse(bytes, usize::MAX) else {
            return false;
        };
        let blackout = script.sent.len() < 2;
        if *script.seq.get_or_insert(seq) != seq {
            return blackout;
        }
        script.sent.push(self.now);
        script.sent.len() <= script.drop
    }

    /// Moves everything each side wants to send onto the wire, and hands
    /// events to the test.
    fn flush(&mut self) {
        let mut buf = Vec::new();
        loop {
            let mut moved = false;
            while self.client.poll_transmit(self.now, &mut buf) {
                let bytes = std::mem::take(&mut buf);
                self.transmit(&bytes, true);
                moved = true;
            }
            let mut got = Vec::new();
            let mut record = |peer: SocketAddr, event: &Event| {
                assert_eq!(peer, Sim::addr());
                got.push(event.clone());
            };
            if self.echo {
                self.server.pump(record);
            } else {
                while let Some((peer, event)) = self.server.endpoint_mut().poll_event() {
                    record(peer, &event);
                }
            }
            for event in got {
                match event {
                    Event::Message(message) => self.server_got.push(message),
                    other => self.server_events.push(other),
                }
                moved = true;
            }
            while let Some(to) = self.server.endpoint_mut().poll_transmit(self.now, &mut buf) {
                assert_eq!(to, Sim::addr());
                let bytes = std::mem::take(&mut buf);
                self.transmit(&bytes, false);
                moved = true;
            }
            while let Some(event) = self.client.poll_event() {
                match event {
                    Event::Message(message) => self.client_got.push(message),
                    other => self.client_events.push(other),
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the clock to the next arrival or deadline and handles it.
    /// False when nothing is left to happen.
    fn step(&mut self) -> bool {
        self.flush();
        let next = [
            self.to_server.peek().map(|Reverse((at, _, _))| *at),
            self.to_client.peek().map(|Reverse((at, _, _))| *at),
            self.client.poll_timeout(),
            self.server.endpoint().poll_timeout(),
        ];
        let Some(next) = next.into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        self.server_due();
        while let Some(Reverse((at, _, _))) = self.to_client.peek() {
            if *at > self.now {
                break;
            }
            let Some(Reverse((_, _, bytes))) = self.to_client.pop() else {
                break;
            };
            self.client
                .handle_datagram(self.now, &bytes)
                .expect("the server sends valid packets");
        }
        if self.client.poll_timeout().is_some_and(|at| at <= self.now) {
            self.client.handle_timeout(self.now);
        }
        true
    }

    /// The server's part of a step: the datagrams due by now, then its
    /// timeout if due.
    fn server_due(&mut self) {
        while self
            .to_server
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= self.now)
        {
            let Some(Reverse((_, _, bytes))) = self.to_server.pop() else {
                break;
            };
            let endpoint = self.server.endpoint_mut();
            endpoint.handle_datagram(self.now, Sim::addr(), &bytes);
        }
        if self
            .server
            .endpoint()
            .poll_timeout()
            .is_some_and(|at| at <= self.now)
        {
            self.server.endpoint_mut().handle_timeout(self.now);
        }
    }

    /// Steps until `done`, failing after `limit` of virtual time.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now - start < limit,
                "not done after {limit:?} of virtual time"
            );
            if !self.step() {
                // The last step's output may have finished it.
                assert!(done(self), "nothing left to happen, and not done");
                return;
            }
        }
    }

    /// Sends `messages` from the client as the window allows, until the
    /// server (or, echoing, the client) has them all.
    fn transfer(&mut self, messages: &[Vec<u8>], limit: Duration) {
        let mut next = 0;
        let start = self.now;
        let already = if self.echo {
            self.client_got.len()
        } else {
            self.server_got.len()
        };
        let want = already + messages.len();
        loop {
            while next < messages.len() && self.client.send(&messages[next]).is_ok() {
                next += 1;
            }
            let got = if self.echo {
                self.client_got.len()
            } else {
                self.server_got.len()
            };
            if got == want {
                return;
            }
            assert!(
                self.now - start < limit,
                "{got} of {want} after {limit:?} of virtual time"
            );
            assert!(self.step(), "stalled at {got} of {want}");
        }
    }

    /// The client does nothing for `span` (a thread busy elsewhere, as a
    /// bench peer waiting for the others to connect): what reaches it
    /// waits, as in a socket's buffer; the server runs on.
    fn pause_client(&mut self, span: Duration) {
        let end = self.now + span;
        let mut buf = Vec::new();
        loop {
            while let Some(to) = self.server.endpoint_mut().poll_transmit(self.now, &mut buf) {
                assert_eq!(to, Sim::addr());
                let bytes = std::mem::take(&mut buf);
                self.transmit(&bytes, false);
            }
            let arrival = self.to_server.peek().map(|Reverse((at, _, _))| *at);
            let next = arrival
                .into_iter()
                .chain(self.server.endpoint().poll_timeout())
                .min();
            let Some(next) = next.filter(|&at| at <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            self.server_due();
        }
    }

    /// Echoes 1000-byte messages for `span` of virtual time, the client's
    /// send window kept full (as the rudp bench does); returns the longest
    /// time the client went without an echo.
    fn echo_window_full(&mut self, span: Duration) -> Duration {
        let (start, mut last, mut got) = (self.now, self.now, self.client_got.len());
        let mut longest = Duration::ZERO;
        let mut n = self.client_got.len() as u32;
        while self.now < start + span {
            while self.client.send(&n.to_be_bytes().repeat(250)).is_ok() {
                n += 1;
            }
            assert!(self.step(), "stalled");
            if self.client_got.len() > got {
                (got, longest, last) = (
                    self.client_got.len(),
                    longest.max(self.now - last),
                    self.now,
                );
            }
        }
        longest.max(self.now - last)
    }
}

/// `count` messages numbered in their first 4 bytes, of sizes from 1 byte
/// to 3 fragments.
fn messages(count: u32, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| {
            let len = 4 + rng.below(3000) as usize;
            let mut message = vec![(n % 251) as u8; len];
            message[..4].copy_from_slice(&n.to_be_bytes());
            message
        })
        .collect()
}

fn lossy(loss: f64) -> Link {
    Link {
        loss,
        duplicate: 0.02,
        delay: ms(20),
        jitter: ms(10),
        reorder: 0.02,
    }
}

#[test]
fn every_message_arrives_once_in_order_at_0_10_and_30_percent_loss() {
    for (loss, seed) in [(0.0, 1), (0.1, 2), (0.3, 3), (0.1, 4), (0.3, 5)] {
        let mut sim = Sim::new(Config::default(), lossy(loss), seed);
        let sent = messages(2000, &mut Rng::new(seed));
        sim.transfer(&sent, Duration::from_secs(600));
        assert_eq!(sim.server_got, sent, "loss {loss}, seed {seed}");
        let conn = sim.server.endpoint().connection(Sim::addr()).unwrap();
        assert_eq!(conn.stats().receive.broken_messages, 0);
        // Each lost data packet costs about one retransmission; reordering
        // (jitter of half the delay) adds a few spurious ones.
        let retransmissions = sim.client.stats().retransmissions;
        let bound = sim.data_dropped * 3 / 2 + 50;
        assert!(
            retransmissions <= bound,
            "loss {loss}: {retransmissions} retransmissions for {} dropped",
            sim.data_dropped
        );
        if loss == 0.0 {
            assert_eq!(sim.data_dropped, 0);
        }
    }
}

#[test]
fn echoes_come_back_in_order_through_a_lossy_link() {
    let mut sim = Sim::new(Config::default(), lossy(0.1), 11);
    sim.echo = true;
    let sent = messages(500, &mut Rng::new(11));
    sim.transfer(&sent, Duration::from_secs(600));
    assert_eq!(sim.client_got, sent);
    assert_eq!(sim.client_events, [Event::Connected]);
}

#[test]
fn sequence_numbers_wrap() {
    let link = Link {
        loss: 0.1,
        ..lossy(0.0)
    };
    let mut sim = Sim::with_isn(Config::default(), link, 21, Seq(u32::MAX - 300));
    let sent = messages(1000, &mut Rng::new(21));
    sim.transfer(&sent, Duration::from_secs(600));
    assert_eq!(sim.server_got, sent);
}

#[test]
fn the_rto_converges_to_the_simulated_rtt() {
    let config = Config {
        min_rto: ms(1),
        ..Config::default()
    };
    let mut sim = Sim::new(config, Link::clean(ms(25)), 31);
    // One packet each: about 25 round trips of a full window, so about 25
    // samples (one per ack, and the receiver acks each burst once).
    let sent: Vec<Vec<u8>> = (0u32..3200).map(|n| n.to_be_bytes().to_vec()).collect();
    sim.transfer(&sent, Duration::from_secs(60));
    let rtt = sim.client.rtt();
    assert_eq!(
        rtt.srtt(),
        Some(ms(50)),
        "two 25 ms hops, acks sent at once"
    );
    assert!(
        rtt.rto() >= ms(50) && rtt.rto() <= ms(55),
        "{:?}",
        rtt.rto()
    );
    assert_eq!(sim.client.stats().retransmissions, 0);
}

#[test]
fn a_vanished_peer_is_declared_dead_within_the_bound() {
    let config = Config::default();
    for busy in [false, true] {
        let mut sim = Sim::new(config, Link::clean(ms(10)), 41);
        sim.transfer(&messages(20, &mut Rng::new(41)), Duration::from_secs(10));
        sim.cut = true;
        let cut_at = sim.now;
        if busy {
            sim.client.send(b"into the void").unwrap();
        }
        sim.run_until(config.dead_after() * 2, |sim| {
            sim.client.is_closed() && sim.server.endpoint().peers() == 0
        });
        assert!(
            sim.now - cut_at <= config.dead_after(),
            "{:?}",
            sim.now - cut_at
        );
        assert_eq!(
            sim.client_events,
            [Event::Connected, Event::Closed(CloseCause::TimedOut)]
        );
        assert_eq!(sim.server_events, [Event::Closed(CloseCause::TimedOut)]);
        assert_eq!(sim.server.endpoint().stats().timed_out, 1);
        assert!(!sim.step(), "nothing is left armed");
    }
}

#[test]
fn unreliable_mode_delivers_in_order_and_skips_what_is_lost() {
    let config = Config {
        mode: Mode::Unreliable,
        ..Config::default()
    };
    let mut sim = Sim::new(config, lossy(0.1), 51);
    let sent: Vec<Vec<u8>> = (0u32..2000).map(|n| n.to_be_bytes().to_vec()).collect();
    let mut next = 0;
    while next < sent.len() {
        while next < sent.len() && sim.client.send(&sent[next]).is_ok() {
            next += 1;
        }
        assert!(sim.step());
    }
    // A last message over a clean link: the receiver then knows about
    // every gap before it, even one at the tail of the lossy part.
    sim.link = Link::clean(ms(20));
    sim.run_until(Duration::from_secs(10), |sim| sim.client.can_send(4));
    sim.client.send(&u32::MAX.to_be_bytes()).unwrap();
    sim.run_until(Duration::from_secs(10), |sim| {
        sim.server_got
            .last()
            .is_some_and(|m| m[..] == u32::MAX.to_be_bytes())
    });
    sim.server_got.pop();
    let got: Vec<u32> = sim
        .server_got
        .iter()
        .map(|m| u32::from_be_bytes(m[..].try_into().unwrap()))
        .collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    let skipped = sim
        .server
        .endpoint()
        .connection(Sim::addr())
        .unwrap()
        .stats()
        .receive
        .skipped;
    assert_eq!(
        got.len() as u64 + skipped,
        2000,
        "each message delivered or skipped"
    );
    assert!(skipped > 0 && skipped <= sim.data_dropped);
    assert_eq!(sim.client.stats().retransmissions, 0);
}

#[test]
fn a_spoofed_hello_leaves_no_state_and_draws_no_more_than_it_sent() {
    let now = Instant::now();
    let mut server = Endpoint::new(Config::default(), now, &[9; 32], 16);
    let spoofed: SocketAddr = "192.0.2.1:9999".parse().unwrap();
    let mut hello = Vec::new();
    Packet::Hello {
        mode: Mode::Reliable,
        isn: Seq(0),
        cookie: None,
    }
    .encode(&mut hello);
    for _ in 0..1000 {
        server.handle_datagram(now, spoofed, &hello);
    }
    let mut reply = Vec::new();
    let mut replies = 0;
    while let Some(to) = server.poll_transmit(now, &mut reply) {
        assert_eq!(to, spoofed);
        assert!(
            reply.len() < hello.len(),
            "{} >= {}",
            reply.len(),
            hello.len()
        );
        replies += 1;
    }
    assert_eq!((replies, server.peers()), (1000, 0));
    assert_eq!(server.stats().cookies_sent, 1000);
}

#[test]
fn forged_expired_and_borrowed_cookies_are_refused() {
    let now = Instant::now();
    let mut server = Endpoint::new(Config::default(), now, &[9; 32], 16);
    let client: SocketAddr = CLIENT.parse().unwrap();
    let hello = |cookie| {
        let mut out = Vec::new();
        Packet::Hello {
            mode: Mode::Reliable,
            isn: Seq(0),
            cookie,
        }
        .encode(&mut out);
        out
    };
    server.handle_datagram(now, client, &hello(None));
    let mut reply = Vec::new();
    server.poll_transmit(now, &mut reply).unwrap();
    let Ok(Packet::Cookie(cookie)) = Packet::parse(&reply, 1200) else {
        panic!("not a cookie: {reply:?}");
    };
    let mut forged = cookie;
    forged.mac[0] ^= 0x80;
    server.handle_datagram(now, client, &hello(Some(forged)));
    let other: SocketAddr = "10.0.0.3:5000".parse().unwrap();
    server.handle_datagram(now, other, &hello(Some(cookie)));
    server.handle_datagram(now + Duration::from_secs(20), client, &hello(Some(cookie)));
    let stats = server.stats();
    assert_eq!(
        (stats.cookies_forged, stats.cookies_expired, server.peers()),
        (2, 1, 0)
    );
    assert_eq!(
        server.poll_transmit(now, &mut reply),
        None,
        "no reply to any of them"
    );
    // The real one, in time, opens the connection.
    server.handle_datagram(now + Duration::from_secs(5), client, &hello(Some(cookie)));
    assert_eq!((server.peers(), server.stats().accepted), (1, 1));
}

#[test]
fn malformed_datagrams_are_counted_and_change_nothing() {
    let mut sim = Sim::new(Config::default(), Link::clean(ms(1)), 61);
    sim.transfer(&messages(10, &mut Rng::new(61)), Duration::from_secs(10));
    let junk: [&[u8]; 5] = [
        b"",
        b"\x01",
        b"\x02\x03\x00\x00",
        b"\x01\x03\x00\x00\x00\x00\x00\x01\x05\x02x",
        &[0xff; 2000],
    ];
    for datagram in junk {
        sim.server
            .endpoint_mut()
            .handle_datagram(sim.now, Sim::addr(), datagram);
        assert!(sim.client.handle_datagram(sim.now, datagram).is_err());
    }
    assert_eq!(sim.server.endpoint().stats().malformed, 5);
    let more = messages(10, &mut Rng::new(62));
    sim.transfer(&more, Duration::from_secs(10));
    assert_eq!(sim.server_got.len(), 20);
}

#[test]
fn the_peer_cap_refuses_with_a_close() {
    let now = Instant::now();
    let config = Config::default();
    let mut server = Endpoint::new(config, now, &[9; 32], 1);
    let mut buf = Vec::new();
    for (i, port) in [5000, 5001].into_iter().enumerate() {
        let addr: SocketAddr = format!("10.0.0.2:{port}").parse().unwrap();
        let mut client = Connection::connect(config, now, Seq(0));
        for _ in 0..3 {
            while client.poll_transmit(now, &mut buf) {
                server.handle_datagram(now, addr, &buf);
            }
            while let Some(to) = server.poll_transmit(now, &mut buf) {
                assert_eq!(to, addr);
                client.handle_datagram(now, &buf).unwrap();
            }
        }
        let want = [Event::Connected, Event::Closed(CloseCause::PeerClosed)];
        assert_eq!(client.poll_event().as_ref(), Some(&want[i]));
    }
    assert_eq!((server.peers(), server.stats().refused_full), (1, 1));
}

#[test]
fn closed_is_the_last_event_after_every_message_that_arrived() {
    // Found by the rudp_connection fuzz target: the endpoint reported
    // `Closed` before messages still waiting to be taken.
    let now = Instant::now();
    let config = Config::default();
    let mut server = Endpoint::new(config, now, &[9; 32], 16);
    let mut client = Connection::connect(config, now, Seq(0));
    let addr: SocketAddr = CLIENT.parse().unwrap();
    client.send(b"one").unwrap();
    client.send(b"two").unwrap();
    let mut buf = Vec::new();
    for _ in 0..4 {
        while client.poll_transmit(now, &mut buf) {
            server.handle_datagram(now, addr, &buf);
        }
        while let Some(to) = server.poll_transmit(now, &mut buf) {
            assert_eq!(to, addr);
            client.handle_datagram(now, &buf).unwrap();
        }
    }
    server.close_all();
    while server.poll_transmit(now, &mut buf).is_some() {}
    let events: Vec<Event> = std::iter::from_fn(|| server.poll_event().map(|(_, e)| e)).collect();
    let want = [
        Event::Message(b"one".to_vec()),
        Event::Message(b"two".to_vec()),
        Event::Closed(CloseCause::Local),
    ];
    assert_eq!(events, want);
}

#[test]
fn a_closed_window_is_probed_until_it_opens() {
    // A lost window update must not leave both sides waiting on each other
    // until the keepalive (found by the rudp bench): the sender probes.
    let config = Config::default();
    let mut sim = Sim::new(config, Link::clean(ms(10)), 81);
    sim.transfer(&messages(3, &mut Rng::new(81)), Duration::from_secs(10));
    let acked = sim.client.stats().packets_received;
    // The server says: everything so far arrived, and no room for more.
    let mut zero = Vec::new();
    let next = Seq(81).plus(3); // the ISN is the seed; three one-packet messages
    Packet::Ack {
        next,
        sack: 0,
        window: 0,
    }
    .encode(&mut zero);
    sim.client.handle_datagram(sim.now, &zero).unwrap();
    sim.client.send(b"waiting").unwrap();
    let mut out = Vec::new();
    assert!(
        !sim.client.poll_transmit(sim.now, &mut out),
        "the window is closed"
    );
    // The probe is due within one RTO, long before the 1 s keepalive.
    let probe_at = sim.client.poll_timeout().unwrap();
    assert!(probe_at <= sim.now + sim.client.rtt().rto());
    assert!(probe_at < sim.now + config.keepalive);
    sim.client.handle_timeout(probe_at);
    assert!(sim.client.poll_transmit(probe_at, &mut out));
    assert_eq!(Packet::parse(&out, 1200), Ok(Packet::Ping));
    assert_eq!(sim.client.stats().packets_received, acked + 1);
}

/// Many clients, each at its own address, and an echo server, joined by an
/// instant lossless link: a datagram arrives as it is sent, so only the
/// deadlines move the virtual clock.
struct Crowd {
    now: Instant,
    server: EchoCore,
    /// Each client's address, connection, and every event it saw.
    clients: Vec<(SocketAddr, Connection, Vec<Event>)>,
    /// The server's events other than messages.
    server_events: Vec<(SocketAddr, Event)>,
}

impl Crowd {
    fn new(config: Config, max_peers: usize) -> Crowd {
        let now = Instant::now();
        Crowd {
            now,
            server: EchoCore::new(Endpoint::new(config, now, &[5; 32], max_peers)),
            clients: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// A client at `addr` says hello; everything that follows at this
    /// instant happens. Returns its index.
    fn join(&mut self, addr: &str) -> usize {
        let config = Config::default();
        let isn = Seq(self.clients.len() as u32 * 1000);
        let client = Connection::connect(config, self.now, isn);
        self.clients
            .push((addr.parse().unwrap(), client, Vec::new()));
        self.flush();
        self.clients.len() - 1
    }

    fn send(&mut self, client: usize, message: &[u8]) {
        self.clients[client].1.send(message).unwrap();
        self.flush();
    }

    fn events(&self, client: usize) -> &[Event] {
        &self.clients[client].2
    }

    fn addr(&self, client: usize) -> SocketAddr {
        self.clients[client].0
    }

    fn endpoint(&self) -> &Endpoint {
        self.server.endpoint()
    }

    /// Carries datagrams both ways, and echoes, until all is quiet.
    fn flush(&mut self) {
        let mut buf = Vec::new();
        loop {
            let mut moved = false;
            for (addr, client, _) in &mut self.clients {
                while client.poll_transmit(self.now, &mut buf) {
                    let endpoint = self.server.endpoint_mut();
                    endpoint.handle_datagram(self.now, *addr, &buf);
                    moved = true;
                }
            }
            let events = &mut self.server_events;
            self.server.pump(|peer, event| {
                if !matches!(event, Event::Message(_)) {
                    events.push((peer, event.clone()));
                }
            });
            while let Some(to) = self.server.endpoint_mut().poll_transmit(self.now, &mut buf) {
                moved = true;
                if let Some((_, client, _)) = self.clients.iter_mut().find(|(a, ..)| *a == to) {
                    client.handle_datagram(self.now, &buf).unwrap();
                }
            }
            for (_, client, events) in &mut self.clients {
                while let Some(event) = client.poll_event() {
                    events.push(event);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves the clock `by` forward, through every deadline on the way.
    fn run_for(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            self.flush();
            let next = self
                .clients
                .iter()
                .filter_map(|(_, client, _)| client.poll_timeout())
                .chain(self.endpoint().poll_timeout())
                .min();
            let Some(at) = next.filter(|&at| at <= end) else {
                self.now = end;
                return self.flush();
            };
            self.now = self.now.max(at);
            for (_, client, _) in &mut self.clients {
                if client.poll_timeout().is_some_and(|at| at <= self.now) {
                    client.handle_timeout(self.now);
                }
            }
            if self
                .endpoint()
                .poll_timeout()
                .is_some_and(|at| at <= self.now)
            {
                self.server.endpoint_mut().handle_timeout(self.now);
            }
        }
    }
}

fn source(ip: &str) -> crate::limit::Source {
    crate::limit::Source::from(ip.parse::<std::net::IpAddr>().unwrap())
}

#[test]
fn one_source_holds_at_most_the_cap_and_its_idlest_peer_makes_room() {
    let config = Config::default();
    assert_eq!(config.max_peers_per_source, 4);
    let mut crowd = Crowd::new(config, 64);
    for port in 1..=6 {
        crowd.join(&format!("10.0.0.9:{port}"));
    }
    // One IPv6 /64 is one source, whatever its low 64 bits.
    for host in 1..=5 {
        crowd.join(&format!("[2001:db8:1:2::{host}]:5000"));
    }
    let refused = [Event::Closed(CloseCause::PeerClosed)];
    for i in 0..11 {
        let want: &[Event] = if [4, 5, 10].contains(&i) {
            &refused
        } else {
            &[Event::Connected]
        };
        assert_eq!(crowd.events(i), want, "client {i}");
    }
    let endpoint = crowd.endpoint();
    assert_eq!(endpoint.peers_from_source(source("10.0.0.9")), 4);
    assert_eq!(endpoint.peers_from_source(source("2001:db8:1:2::ffff")), 4);
    assert_eq!((endpoint.peers(), endpoint.stats().refused_source), (8, 3));
    // Ports 1 and 2 talk every half second; 3 and 4 stay idle (but answer
    // pings). A newcomer from the same address takes the place of the
    // idlest: 3 and 4 tie, and 3 is the lower address.
    for _ in 0..6 {
        crowd.send(0, b"ping");
        crowd.send(1, b"pong");
        crowd.run_for(ms(500));
    }
    let newcomer = crowd.join("10.0.0.9:7");
    assert_eq!(crowd.events(newcomer), [Event::Connected]);
    assert_eq!(
        crowd.events(2),
        [Event::Connected, Event::Closed(CloseCause::PeerClosed)]
    );
    assert_eq!(crowd.events(3), [Event::Connected]);
    for talker in [0, 1] {
        assert_eq!(crowd.events(talker).len(), 1 + 6, "Connected and 6 echoes");
    }
    let evicted = (crowd.addr(2), Event::Closed(CloseCause::Evicted));
    assert_eq!(crowd.server_events, [evicted]);
    let endpoint = crowd.endpoint();
    assert_eq!(endpoint.peers_from_source(source("10.0.0.9")), 4);
    assert_eq!((endpoint.peers(), endpoint.stats().evicted), (8, 1));
}

#[test]
fn a_full_table_of_idle_squatters_does_not_lock_out_a_real_client() {
    let mut crowd = Crowd::new(Config::default(), 16);
    for ip in 1..=4 {
        for port in 5000..5004 {
            crowd.join(&format!("10.0.0.{ip}:{port}"));
        }
    }
    // The squatters say nothing, but answer pings: alive, and idle.
    crowd.run_for(Duration::from_secs(5));
    assert_eq!(crowd.endpoint().peers(), 16);
    assert!((0..16).all(|i| crowd.events(i) == [Event::Connected]));
    // A real client gets in at once (no virtual time passes) and is
    // served; the idlest squatter (all tie: the lowest address) is gone.
    let start = crowd.now;
    let real = crowd.join("192.0.2.10:7000");
    assert_eq!(crowd.events(real), [Event::Connected]);
    for message in [&b"one"[..], b"two", b"three"] {
        crowd.send(real, message);
    }
    assert_eq!(crowd.now, start);
    let echoes: Vec<Event> = [&b"one"[..], b"two", b"three"]
        .iter()
        .map(|m| Event::Message(m.to_vec()))
        .collect();
    assert_eq!(crowd.events(real)[1..], echoes[..]);
    assert_eq!(crowd.addr(0).to_string(), "10.0.0.1:5000");
    assert_eq!(
        crowd.events(0),
        [Event::Connected, Event::Closed(CloseCause::PeerClosed)]
    );
    assert!((1..16).all(|i| crowd.events(i) == [Event::Connected]));
    assert_eq!(
        crowd.server_events,
        [(crowd.addr(0), Event::Closed(CloseCause::Evicted))]
    );
    let stats = crowd.endpoint().stats();
    assert_eq!((stats.evicted, stats.refused_full), (1, 0));
    assert_eq!(crowd.endpoint().peers(), 16);
}

#[test]
fn an_active_peer_is_never_evicted_while_an_idle_one_exists() {
    let config = Config::default();
    let mut crowd = Crowd::new(config, 4);
    for ip in 1..=4 {
        crowd.join(&format!("10.0.0.{ip}:5000"));
    }
    // 1, 2 and 4 talk every half second; 3 only answers pings.
    for _ in 0..6 {
        for talker in [0, 1, 3] {
            crowd.send(talker, b"still here");
        }
        crowd.run_for(ms(500));
    }
    let first = crowd.join("192.0.2.1:6000");
    assert_eq!(crowd.events(first), [Event::Connected]);
    assert_eq!(
        crowd.server_events,
        [(crowd.addr(2), Event::Closed(CloseCause::Evicted))],
        "the idle one, not the lowest address"
    );
    // At the same instant everyone left has made progress within
    // `evict_idle_after` (the newcomer just arrived): the next is refused.
    let second = crowd.join("192.0.2.2:6000");
    assert_eq!(
        crowd.events(second),
        [Event::Closed(CloseCause::PeerClosed)]
    );
    for kept in [0, 1, 3, first] {
        assert!(!crowd
            .events(kept)
            .contains(&Event::Closed(CloseCause::PeerClosed)));
    }
    let stats = crowd.endpoint().stats();
    assert_eq!(
        (stats.evicted, stats.refused_full, crowd.endpoint().peers()),
        (1, 1, 4)
    );
    // Once the talkers fall silent for long enough, they may go too.
    crowd.run_for(config.evict_idle_after);
    let third = crowd.join("192.0.2.3:6000");
    assert_eq!(crowd.events(third), [Event::Connected]);
    assert_eq!(crowd.endpoint().stats().evicted, 2);
}

#[test]
fn nothing_stays_armed_after_an_eviction() {
    let mut crowd = Crowd::new(Config::default(), 1);
    let squatter = crowd.join("10.0.0.1:5000");
    crowd.send(squatter, b"hello");
    // Quiet, but answering: the server's keepalive is armed for it.
    crowd.run_for(Duration::from_secs(3));
    assert!(crowd.endpoint().poll_timeout().is_some());
    let newcomer = crowd.join("10.0.0.2:5000");
    assert_eq!(crowd.events(newcomer), [Event::Connected]);
    assert_eq!(
        crowd.events(squatter).last(),
        Some(&Event::Closed(CloseCause::PeerClosed))
    );
    assert_eq!(crowd.clients[squatter].1.poll_timeout(), None);
    assert!(crowd.endpoint().connection(crowd.addr(squatter)).is_none());
    // The newcomer leaves too: no peer, and no deadline, is left.
    crowd.clients[newcomer].1.close();
    crowd.flush();
    assert_eq!(crowd.endpoint().peers(), 0);
    assert_eq!(crowd.endpoint().poll_timeout(), None, "nothing armed");
    assert_eq!(
        crowd.server_events,
        [
            (crowd.addr(squatter), Event::Closed(CloseCause::Evicted)),
            (crowd.addr(newcomer), Event::Closed(CloseCause::PeerClosed)),
        ]
    );
    assert_eq!(crowd.endpoint().stats().evicted, 1);
}

#[test]
fn a_lost_retransmission_is_sent_again_within_an_rto_while_the_peer_talks() {
    // The rudp bench saw one of 64 peers stall for 5 s at 10% loss: a
    // retransmission lost again, the RTO doubling each time, and nothing
    // else in flight to reveal the loss. Here the server loses a whole
    // flight of echoes, and the first of them on its first four
    // transmissions, while the client keeps sending.
    let mut sim = Sim::new(Config::default(), Link::clean(ms(60)), 91);
    sim.echo = true;
    sim.server.endpoint_mut().set_receive_budget(Some(16)); // 1,024 over 64 peers
    sim.run_until(ms(500), |sim| !sim.client_events.is_empty());
    sim.echo_window_full(Duration::from_secs(2));
    let rto = sim
        .server
        .endpoint()
        .connection(Sim::addr())
        .unwrap()
        .rtt()
        .rto();
    sim.script = LoseRetransmissions {
        armed: true,
        drop: 4,
        ..LoseRetransmissions::default()
    };
    let stall = sim.echo_window_full(Duration::from_secs(4));
    let sent = &sim.script.sent;
    let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(sent.len(), 5, "four losses, then through: {gaps:?}");
    // Each try one RTO after the last, where backing off took 123, 245,
    // 235 (a tail probe) and 150 ms, stalling the peer 892 ms.
    assert!(
        gaps.iter().all(|&gap| gap <= rto + ms(1)),
        "RTO {rto:?}: {gaps:?}"
    );
    assert!(stall <= rto * 6, "{stall:?}");
}

#[test]
fn pings_to_a_busy_peer_leave_no_backoff_once_it_answers() {
    // A bench peer connected, then waited 3 s for the others to connect
    // without reading its socket: the server's keepalive pings went
    // unanswered and backed its RTO off to 2 s, which then timed the
    // first lost echo.
    let config = Config::default();
    let mut sim = Sim::new(config, Link::clean(ms(10)), 95);
    sim.echo = true;
    sim.run_until(ms(500), |sim| !sim.client_events.is_empty());
    sim.pause_client(Duration::from_secs(3));
    let server = |sim: &Sim| *sim.server.endpoint().connection(Sim::addr()).unwrap().rtt();
    assert_eq!(server(&sim).rto(), config.max_rto, "backed off, unanswered");
    // The first echo is lost once (with everything after it until then).
    sim.script = LoseRetransmissions {
        armed: true,
        drop: 1,
        ..LoseRetransmissions::default()
    };
    sim.echo_window_full(Duration::from_secs(3));
    let sent = &sim.script.sent;
    assert_eq!(sent.len(), 2);
    // The answered pings ended the backoff: no RTT sample yet, so the
    // initial RTO, where it took the 2 s maximum before.
    assert_eq!(sent[1] - sent[0], config.initial_rto);
}
