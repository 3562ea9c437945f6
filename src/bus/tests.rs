//! The connection's state machine on a virtual clock: exact bytes, exact
//! events, exact times.

use std::time::{Duration, Instant};

use super::*;
use crate::protocol::nats::{Connect, ParseError};

const INFO: &[u8] = b"INFO {\"server_id\":\"S\",\"max_payload\":1024}\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config() -> BusConfig {
    let mut config = BusConfig::new(ServerUrl::parse_list("a:1,b:2").unwrap());
    config.jitter = 0.0;
    config.name = "test".into();
    config
}

fn url(text: &str) -> ServerUrl {
    text.parse().unwrap()
}

fn events(bus: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| bus.poll_event()).collect()
}

fn transmit(bus: &mut Connection) -> Vec<u8> {
    std::iter::from_fn(|| bus.poll_transmit())
        .flatten()
        .collect()
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

fn connect_line() -> String {
    let mut out = Vec::new();
    Connect::named("test").encode(&mut out);
    text(out)
}

/// Dials (the pending `Dial` is consumed), completes the handshake and
/// returns what the client sent in it.
fn handshake(bus: &mut Connection, now: Instant) -> String {
    assert!(matches!(events(bus).as_slice(), [Event::Dial(_)]));
    bus.handle_connected(now);
    bus.handle_input(now, INFO);
    let sent = text(transmit(bus));
    bus.handle_input(now, b"PONG\r\n");
    assert_eq!(events(bus), [Event::Connected]);
    sent
}

#[test]
fn handshake_subscribes_then_publishes() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    assert_eq!(events(&mut bus), [Event::Dial(url("a:1"))]);
    assert_eq!(bus.subscribe("chat.*"), Ok(1));
    bus.publish("chat.x", b"early").unwrap();
    assert_eq!(bus.poll_transmit(), None, "no socket yet");
    bus.handle_connected(t0);
    assert_eq!(bus.poll_transmit(), None, "nothing before INFO");
    bus.handle_input(t0, INFO);
    assert_eq!(
        text(transmit(&mut bus)),
        format!("{}SUB chat.* 1\r\nPING\r\n", connect_line())
    );
    assert_eq!(bus.poll_transmit(), None, "publications wait for the PONG");
    bus.handle_input(t0, b"PONG\r\n");
    assert_eq!(events(&mut bus), [Event::Connected]);
    assert_eq!(text(transmit(&mut bus)), "PUB chat.x 5\r\nearly\r\n");
    bus.handle_input(t0, b"MSG chat.y 1 2\r\nhi\r\n");
    assert_eq!(
        events(&mut bus),
        [Event::Message {
            subject: "chat.y".into(),
            sid: 1,
            payload: b"hi".to_vec()
        }]
    );
    assert_eq!(
        bus.counters(),
        BusCounters {
            connected: true,
            published: 1,
            received: 1,
            dropped: 0,
            reconnects: 0
        }
    );
}

#[test]
fn input_in_single_bytes() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    bus.subscribe("s").unwrap();
    events(&mut bus);
    bus.handle_connected(t0);
    let wire = [INFO, b"PING\r\nPONG\r\nMSG s 1 3\r\nabc\r\n"].concat();
    for byte in wire.chunks(1) {
        bus.handle_input(t0, byte);
    }
    let connected_then_message = [
        Event::Connected,
        Event::Message {
            subject: "s".into(),
            sid: 1,
            payload: b"abc".to_vec(),
        },
    ];
    assert_eq!(events(&mut bus), connected_then_message);
    assert_eq!(
        text(transmit(&mut bus)),
        format!("{}SUB s 1\r\nPING\r\nPONG\r\n", connect_line())
    );
}

#[test]
fn answers_pings_and_sends_its_own() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    handshake(&mut bus, t0);
    bus.handle_input(t0, b"PING\r\n");
    assert_eq!(transmit(&mut bus), b"PONG\r\n");
    assert_eq!(bus.poll_timeout(), Some(t0 + ms(5000)));
    bus.handle_timeout(t0 + ms(4999));
    assert_eq!(bus.poll_transmit(), None);
    bus.handle_timeout(t0 + ms(5000));
    assert_eq!(transmit(&mut bus), b"PING\r\n");
    bus.handle_input(t0 + ms(5001), b"PONG\r\n");
    bus.handle_timeout(t0 + ms(10_000));
    assert_eq!(transmit(&mut bus), b"PING\r\n");
    bus.handle_timeout(t0 + ms(15_000));
    assert_eq!(transmit(&mut bus), b"PING\r\n");
    assert_eq!(events(&mut bus), []);
    // Two unanswered: the third interval ends it.
    bus.handle_timeout(t0 + ms(20_000));
    assert_eq!(
        events(&mut bus),
        [
            Event::Error(BusError::StaleConnection),
            Event::Close,
            Event::Disconnected
        ]
    );
    assert!(!bus.counters().connected);
    assert_eq!(bus.poll_transmit(), None);
    assert_eq!(bus.poll_timeout(), Some(t0 + ms(20_100)));
    bus.handle_timeout(t0 + ms(20_100));
    assert_eq!(events(&mut bus), [Event::Dial(url("b:2"))]);
}

#[test]
fn reconnects_in_turn_with_backoff_and_restores_subscriptions() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    let rooms = bus.subscribe("room.*").unwrap();
    let presence = bus.subscribe("presence").unwrap();
    handshake(&mut bus, t0);
    bus.handle_disconnected(t0 + ms(1000));
    assert_eq!(events(&mut bus), [Event::Disconnected]);
    bus.publish("room.a", b"1").unwrap();
    bus.publish("room.a", b"2").unwrap();
    // Waits double per failure: 100, 200, 400 ms, ... servers alternate.
    let mut at = t0 + ms(1000);
    for (wait, server) in [(100, "b:2"), (200, "a:1"), (400, "b:2"), (800, "a:1")] {
        assert_eq!(bus.poll_timeout(), Some(at + ms(wait)));
        bus.handle_timeout(at + ms(wait) - ms(1));
        assert_eq!(events(&mut bus), []);
        at += ms(wait);
        bus.handle_timeout(at);
        assert_eq!(events(&mut bus), [Event::Dial(url(server))]);
        if server == "a:1" && wait == 800 {
            break;
        }
        bus.handle_disconnected(at); // connection refused
        assert_eq!(events(&mut bus), [], "no Disconnected: it never connected");
    }
    bus.handle_connected(at);
    bus.handle_input(at, INFO);
    assert_eq!(
        text(transmit(&mut bus)),
        format!(
            "{}SUB room.* {rooms}\r\nSUB presence {presence}\r\nPING\r\n",
            connect_line()
        )
    );
    bus.handle_input(at, b"PONG\r\n");
    assert_eq!(events(&mut bus), [Event::Connected]);
    assert_eq!(
        text(transmit(&mut bus)),
        "PUB room.a 1\r\n1\r\nPUB room.a 1\r\n2\r\n"
    );
    assert_eq!(bus.counters().reconnects, 1);
    assert!(bus.counters().connected);
    // A ready connection resets the backoff.
    bus.handle_disconnected(at);
    assert_eq!(bus.poll_timeout(), Some(at + ms(100)));
}

#[test]
fn backoff_stops_at_its_maximum() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    let mut at = t0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        events(&mut bus);
        bus.handle_disconnected(at);
        let next = bus.poll_timeout().unwrap();
        waits.push((next - at).as_millis());
        at = next;
        bus.handle_timeout(at);
    }
    assert_eq!(
        waits,
        [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
    );
}

#[test]
fn jitter_is_seeded_and_bounded() {
    let waits = |seed| {
        let mut config = config();
        config.jitter = 0.5;
        config.seed = seed;
        let t0 = Instant::now();
        let mut bus = Connection::new(config, t0).unwrap();
        let mut at = t0;
        (0..8)
            .map(|_| {
                bus.handle_disconnected(at);
                let next = bus.poll_timeout().unwrap();
                let wait = next - at;
                at = next;
                bus.handle_timeout(at);
                wait
            })
            .collect::<Vec<_>>()
    };
    let (a, b, c) = (waits(7), waits(7), waits(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let full = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
    for (wait, full) in a.iter().zip(full) {
        assert!(
            *wait <= ms(full) && *wait >= ms(full) / 2,
            "{wait:?} vs {full}"
        );
    }
}

#[test]
fn handshake_timeout_and_refusals() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    events(&mut bus);
    assert_eq!(bus.poll_timeout(), Some(t0 + ms(5000)));
    bus.handle_connected(t0 + ms(10));
    bus.handle_timeout(t0 + ms(5000));
    assert_eq!(
        events(&mut bus),
        [Event::Error(BusError::HandshakeTimeout), Event::Close]
    );
    // The server wants credentials: given up at its INFO.
    let at = t0 + ms(5100);
    bus.handle_timeout(at);
    assert_eq!(events(&mut bus), [Event::Dial(url("b:2"))]);
    bus.handle_connected(at);
    bus.handle_input(at, b"INFO {\"auth_required\":true}\r\n");
    assert_eq!(
        events(&mut bus),
        [
            Event::Error(BusError::Unsupported("credentials")),
            Event::Close
        ]
    );
    assert_eq!(bus.poll_transmit(), None);
    // -ERR during the handshake ends the attempt.
    let at = at + ms(200);
    bus.handle_timeout(at);
    events(&mut bus);
    bus.handle_connected(at);
    bus.handle_input(at, INFO);
    transmit(&mut bus);
    bus.handle_input(at, b"-ERR 'Authorization Violation'\r\nPONG\r\n");
    assert_eq!(
        events(&mut bus),
        [
            Event::Error(BusError::Server("Authorization Violation".into())),
            Event::Close
        ]
    );
    assert!(!bus.is_connected());
}

#[test]
fn protocol_errors_close_and_late_bytes_are_ignored() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    bus.subscribe("s").unwrap();
    handshake(&mut bus, t0);
    // INFO said 1,024 bytes at most.
    bus.handle_input(t0, b"MSG s 1 1025\r\n");
    assert_eq!(
        events(&mut bus),
        [
            Event::Error(BusError::Protocol(ParseError::PayloadTooLarge {
                len: 1025,
                max: 1024
            })),
            Event::Close,
            Event::Disconnected
        ]
    );
    bus.handle_input(t0, b"MSG s 1 1\r\nx\r\n");
    bus.handle_disconnected(t0);
    assert_eq!(events(&mut bus), []);
    assert_eq!(bus.counters().received, 0);
}

#[test]
fn queue_is_bounded_and_drops_are_counted() {
    let t0 = Instant::now();
    let mut config = config();
    config.max_pending = 100;
    let mut bus = Connection::new(config, t0).unwrap();
    // "PUB s 10\r\n" + 10 + "\r\n": 22 bytes each; four fit in 100.
    for _ in 0..4 {
        assert_eq!(bus.publish("s", &[b'x'; 10]), Ok(()));
    }
    assert_eq!(bus.queued(), 88);
    assert_eq!(bus.publish("s", &[b'x'; 10]), Err(PublishError::QueueFull));
    assert_eq!(bus.publish("s", &[b'x'; 3]), Err(PublishError::QueueFull));
    assert_eq!(bus.publish("s", b"x"), Ok(()), "12 more: exactly full");
    assert_eq!(bus.counters().dropped, 2);
    assert_eq!(bus.counters().published, 5);
    handshake(&mut bus, t0);
    assert_eq!(transmit(&mut bus).len(), 100);
    assert_eq!(bus.queued(), 0);
    assert_eq!(bus.publish("s", &[b'x'; 10]), Ok(()));
    assert_eq!(bus.publish("s.*", b""), Err(PublishError::BadSubject));
    assert_eq!(
        bus.publish("s", &[0; 1025]),
        Err(PublishError::TooLarge {
            len: 1025,
            max: 1024
        })
    );
}

#[test]
fn a_slow_socket_leaves_publications_queued_in_chunks() {
    let t0 = Instant::now();
    let mut config = config();
    config.max_transmit = 1000;
    let mut bus = Connection::new(config, t0).unwrap();
    handshake(&mut bus, t0);
    let mut expected = Vec::new();
    for i in 0..100u32 {
        let payload = i.to_string().repeat(10);
        bus.publish("s", payload.as_bytes()).unwrap();
        crate::protocol::nats::encode_pub("s", payload.as_bytes(), &mut expected);
    }
    let chunks: Vec<Vec<u8>> = std::iter::from_fn(|| bus.poll_transmit()).collect();
    assert!(chunks.iter().all(|c| c.len() <= 1000));
    assert_eq!(chunks.len(), expected.len().div_ceil(1000));
    assert_eq!(chunks.concat(), expected);
}

#[test]
fn unsubscribed_messages_are_not_delivered() {
    let t0 = Instant::now();
    let mut bus = Connection::new(config(), t0).unwrap();
    handshake(&mut bus, t0);
    let sid = bus.subscribe("s").unwrap();
    assert_eq!(transmit(&mut bus), b"SUB s 1\r\n");
    assert!(bus.unsubscribe(sid));
    assert!(!bus.unsubscribe(sid));
    assert_eq!(transmit(&mut bus), b"UNSUB 1\r\n");
    bus.handle_input(t0, b"MSG s 1 1\r\nx\r\n");
    assert_eq!(events(&mut bus), []);
    assert_eq!(bus.counters().received, 0);
    assert_eq!(bus.subscribe("a b"), Err(SubscribeError::BadFilter));
}

#[test]
fn subscriptions_are_bounded() {
    let mut config = config();
    config.max_subscriptions = 2;
    let mut bus = Connection::new(config, Instant::now()).unwrap();
    assert_eq!(bus.subscribe("a"), Ok(1));
    assert_eq!(bus.subscribe("b"), Ok(2));
    assert_eq!(bus.subscribe("c"), Err(SubscribeError::TooMany));
}

#[test]
fn config_is_validated() {
    let now = Instant::now();
    let mut empty = config();
    empty.servers.clear();
    assert!(Connection::new(empty, now).is_err());
    let mut jitter = config();
    jitter.jitter = 1.5;
    assert!(Connection::new(jitter, now).is_err());
    let mut backoff = config();
    backoff.reconnect_min = ms(10_000);
    assert!(Connection::new(backoff, now).is_err());
}
