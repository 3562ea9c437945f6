//! The sans-IO NATS connection against a real `nats-server` (Debian
//! package), driven by a small blocking `TcpStream` driver: two clients
//! exchange messages in order; the server is killed and restarted: drops
//! are counted, the clients reconnect, subscriptions are restored and
//! delivery resumes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

mod common;

use common::external::{local_nats, NatsServer};
use sockloop::bus::{BusConfig, Connection, Event, ServerUrl};
use sockloop::protocol::nats::pub_len;

const DEADLINE: Duration = Duration::from_secs(20);

/// The test's driver: one blocking socket with a short read timeout
/// around the state machine.
struct Client {
    bus: Connection,
    stream: Option<TcpStream>,
    messages: Vec<Vec<u8>>,
    connects: usize,
    disconnects: usize,
}

impl Client {
    fn new(port: u16, seed: u64) -> Client {
        let servers = vec![ServerUrl {
            host: "127.0.0.1".into(),
            port,
        }];
        let mut config = BusConfig::new(servers);
        config.seed = seed;
        config.reconnect_min = Duration::from_millis(20);
        config.reconnect_max = Duration::from_millis(200);
        config.max_pending = 4096;
        let mut bus = Connection::new(config, Instant::now()).unwrap();
        bus.subscribe("test.room").unwrap();
        Client {
            bus,
            stream: None,
            messages: Vec::new(),
            connects: 0,
            disconnects: 0,
        }
    }

    /// One round: timers, events, writes, one read of at most 1 ms.
    fn step(&mut self) {
        self.bus.handle_timeout(Instant::now());
        self.events();
        while let Some(bytes) = self.bus.poll_transmit() {
            let written = self.stream.as_mut().map(|s| s.write_all(&bytes));
            if let Some(Err(_)) = written {
                self.stream = None;
                self.bus.handle_disconnected(Instant::now());
            }
        }
        let mut buf = [0; 16 * 1024];
        if let Some(stream) = &mut self.stream {
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.stream = None;
                    self.bus.handle_disconnected(Instant::now());
                }
                Ok(n) => self.bus.handle_input(Instant::now(), &buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    self.stream = None;
                    self.bus.handle_disconnected(Instant::now());
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.events();
    }

    fn events(&mut self) {
        while let Some(event) = self.bus.poll_event() {
            match event {
                Event::Dial(url) => {
                    let addr: SocketAddr = (url.host.as_str(), url.port)
                        .to_socket_addrs()
                        .unwrap()
                        .next()
                        .unwrap();
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        Ok(stream) => {
                            stream
                                .set_read_timeout(Some(Duration::from_millis(1)))
                                .unwrap();
                            stream.set_nodelay(true).unwrap();
                            self.stream = Some(stream);
                            self.bus.handle_connected(Instant::now());
                        }
                        Err(_) => self.bus.handle_disconnected(Instant::now()),
                    }
                }
                Event::Close => self.stream = None,
                Event::Connected => self.connects += 1,
                Event::Disconnected => self.disconnects += 1,
                Event::Message { payload, .. } => self.messages.push(payload),
                Event::Error(_) => {}
            }
        }
    }
}

/// Steps both clients until `done` holds (or fails the test at the
/// deadline).
fn drive(a: &mut Client, b: &mut Client, what: &str, done: impl Fn(&Client, &Client) -> bool) {
    let until = Instant::now() + DEADLINE;
    while !done(a, b) {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        a.step();
        b.step();
    }
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!("{prefix}-{i:04}").into_bytes())
        .collect()
}

#[test]
fn two_clients_through_a_server_killed_and_restarted() {
    let Some((server, binary, port)) = local_nats() else {
        return;
    };
    let (mut a, mut b) = (Client::new(port, 1), Client::new(port, 2));
    drive(&mut a, &mut b, "both connected", |a, b| {
        a.connects == 1 && b.connects == 1
    });

    // 300 each way, in order, none of one's own (echo off).
    for i in 0..300 {
        a.bus
            .publish("test.room", format!("a-{i:04}").as_bytes())
            .unwrap();
        b.bus
            .publish("test.room", format!("b-{i:04}").as_bytes())
            .unwrap();
        a.step();
        b.step();
    }
    drive(&mut a, &mut b, "300 each way", |a, b| {
        a.messages.len() >= 300 && b.messages.len() >= 300
    });
    assert_eq!(a.messages, numbered("b", 0..300));
    assert_eq!(b.messages, numbered("a", 0..300));

    // The server goes away: both notice, publications queue to 4 KiB and
    // the rest are dropped and counted.
    drop(server);
    drive(&mut a, &mut b, "both disconnected", |a, b| {
        a.disconnects == 1 && b.disconnects == 1
    });
    assert!(!a.bus.counters().connected);
    let each = pub_len("test.room", "a-0000".len());
    let fit = 4096 / each;
    let mut accepted = 0;
    for i in 0..200 {
        if a.bus
            .publish("test.room", format!("q-{i:04}").as_bytes())
            .is_ok()
        {
            accepted += 1;
        }
    }
    assert_eq!(accepted, fit);
    assert_eq!(a.bus.counters().dropped, (200 - fit) as u64);
    assert_eq!(a.bus.counters().published, (300 + fit) as u64);

    // Back on the same port: both reconnect with their subscriptions.
    let _server = NatsServer::start(&binary, port);
    drive(&mut a, &mut b, "both reconnected", |a, b| {
        a.connects == 2 && b.connects == 2
    });
    assert_eq!(a.bus.counters().reconnects, 1);
    assert_eq!(b.bus.counters().reconnects, 1);
    for i in 0..100 {
        a.step(); // hands the queue to the socket first
        b.step();
        a.bus
            .publish("test.room", format!("c-{i:04}").as_bytes())
            .unwrap();
        b.bus
            .publish("test.room", format!("d-{i:04}").as_bytes())
            .unwrap();
    }
    let after = |c: &Client, prefix: u8| c.messages.iter().filter(|m| m[0] == prefix).count();
    drive(&mut a, &mut b, "delivery after the restart", |a, b| {
        after(a, b'd') >= 100 && after(b, b'c') >= 100
    });
    assert_eq!(a.messages[300..], numbered("d", 0..100)[..]);
    // What a queued may be lost if it reached the server before b had
    // subscribed again (at most once); what b got of it is in order and
    // came before a's later messages.
    let (queued, later) = b.messages[300..].split_at(b.messages.len() - 400);
    assert_eq!(later, &numbered("c", 0..100)[..]);
    let all_queued = numbered("q", 0..fit);
    assert!(queued.iter().all(|m| all_queued.contains(m)), "{queued:?}");
    assert!(queued.windows(2).all(|w| w[0] < w[1]), "{queued:?}");
    println!("{} of {fit} queued messages delivered", queued.len());
}
