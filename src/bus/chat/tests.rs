//! Two or three processes' chat buses through an in-memory broker that
//! speaks enough of the server's side (INFO, SUB, PUB to MSG, PING/PONG),
//! on a virtual clock.

use std::time::{Duration, Instant};

use super::*;
use crate::bus::{BusConfig, ServerUrl};

const INFO: &[u8] = b"INFO {\"max_payload\":1048576}\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One process: its chat bus, whether the broker reaches it, its SUBs,
/// and what it told its chat.
struct Process {
    bus: ChatBus,
    up: bool,
    subs: Vec<(String, u64)>,
    pending: Vec<u8>,
    told: Vec<ChatEvent>,
}

struct Net {
    now: Instant,
    processes: Vec<Process>,
}

fn matches(filter: &str, subject: &str) -> bool {
    let (f, s): (Vec<&str>, Vec<&str>) =
        (filter.split('.').collect(), subject.split('.').collect());
    f.len() == s.len() && f.iter().zip(&s).all(|(f, s)| *f == "*" || f == s)
}

impl Net {
    fn new(origins: &[u64]) -> Net {
        let now = Instant::now();
        let processes = origins
            .iter()
            .map(|&origin| {
                let mut config = BusConfig::new(vec![ServerUrl {
                    host: "broker".into(),
                    port: 4222,
                }]);
                config.jitter = 0.0;
                config.ping_interval = Duration::from_secs(3600);
                let bus = ChatBus::new(config, ChatBusConfig::default(), origin, now).unwrap();
                Process {
                    bus,
                    up: true,
                    subs: Vec::new(),
                    pending: Vec::new(),
                    told: Vec::new(),
                }
            })
            .collect();
        let mut net = Net { now, processes };
        net.settle();
        net
    }

    /// Runs dials, writes and routing until nothing moves.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.processes.len() {
                let now = self.now;
                let p = &mut self.processes[i];
                while let Some(event) = p.bus.poll_event() {
                    moved = true;
                    match event {
                        ChatEvent::Dial(_) if p.up => {
                            p.subs.clear();
                            p.pending.clear();
                            p.bus.handle_connected(now);
                            p.bus.handle_input(now, INFO);
                        }
                        ChatEvent::Dial(_) => p.bus.handle_disconnected(now),
                        ChatEvent::Close => {}
                        other => p.told.push(other),
                    }
                }
                while let Some(bytes) = p.bus.poll_transmit() {
                    moved = true;
                    p.pending.extend_from_slice(&bytes);
                }
                for (subject, payload) in self.ops(i) {
                    self.route(&subject, &payload);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the net does not settle");
    }

    /// Parses what process `i` sent: answers PING, records SUBs, returns
    /// the PUBs.
    fn ops(&mut self, i: usize) -> Vec<(String, Vec<u8>)> {
        let now = self.now;
        let p = &mut self.processes[i];
        let mut pubs = Vec::new();
        while let Some(end) = p.pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8(p.pending[..end].to_vec()).unwrap();
            let mut words = line.split(' ');
            let used = match words.next().unwrap() {
                "PUB" => {
                    let subject = words.next().unwrap().to_owned();
                    let n: usize = words.next().unwrap().parse().unwrap();
                    pubs.push((subject, p.pending[end + 2..end + 2 + n].to_vec()));
                    end + 2 + n + 2
                }
                "SUB" => {
                    let subject = words.next().unwrap().to_owned();
                    p.subs
                        .push((subject, words.next().unwrap().parse().unwrap()));
                    end + 2
                }
                "PING" => {
                    p.bus.handle_input(now, b"PONG\r\n");
                    end + 2
                }
                _ => end + 2,
            };
            p.pending.drain(..used);
        }
        pubs
    }

    /// Delivers to every other reachable subscriber (echo is off).
    fn route(&mut self, subject: &str, payload: &[u8]) {
        let now = self.now;
        for p in self.processes.iter_mut().filter(|p| p.up) {
            let sids: Vec<u64> = p
                .subs
                .iter()
                .filter(|(f, _)| matches(f, subject))
                .map(|(_, sid)| *sid)
                .collect();
            for sid in sids {
                let mut wire = format!("MSG {subject} {sid} {}\r\n", payload.len()).into_bytes();
                wire.extend_from_slice(payload);
                wire.extend_from_slice(b"\r\n");
                p.bus.handle_input(now, &wire);
            }
        }
    }

    /// Advances the clock to `at`, firing every timer on the way in order.
    fn advance_to(&mut self, at: Instant) {
        loop {
            let next = self
                .processes
                .iter()
                .filter_map(|p| p.bus.poll_timeout())
                .min()
                .unwrap();
            if next > at {
                break;
            }
            self.now = next;
            for p in &mut self.processes {
                if p.bus.poll_timeout() == Some(next) {
                    p.bus.handle_timeout(next);
                }
            }
            self.settle();
        }
        self.now = at;
    }

    /// Cuts process `i` off the broker (its socket closes).
    fn cut(&mut self, i: usize) {
        let now = self.now;
        let p = &mut self.processes[i];
        p.up = false;
        p.subs.clear();
        p.bus.handle_disconnected(now);
        self.settle();
    }

    fn told(&mut self, i: usize) -> Vec<ChatEvent> {
        std::mem::take(&mut self.processes[i].told)
    }

    fn bus(&mut self, i: usize) -> &mut ChatBus {
        &mut self.processes[i].bus
    }
}

fn deliver(from: &str, room: &str, content: &str) -> ChatEvent {
    ChatEvent::Deliver(ChatMessage {
        from: from.into(),
        content: content.into(),
        time: "12:00:00".into(),
        room: room.into(),
    })
}

fn joined(room: &str, name: &str) -> ChatEvent {
    ChatEvent::Joined {
        room: room.into(),
        name: name.into(),
    }
}

fn left(room: &str, name: &str) -> ChatEvent {
    ChatEvent::Left {
        room: room.into(),
        name: name.into(),
    }
}

#[test]
fn messages_cross_once_in_order_and_never_come_back() {
    let mut net = Net::new(&[10, 20, 30]);
    net.bus(0).joined("ann", "lobby");
    net.bus(1).joined("bob", "lobby");
    net.bus(2).joined("cy", "den");
    net.settle();
    assert_eq!(net.told(0), [joined("lobby", "bob"), joined("den", "cy")]);
    assert_eq!(net.told(1), [joined("lobby", "ann"), joined("den", "cy")]);
    assert_eq!(
        net.told(2),
        [joined("lobby", "ann"), joined("lobby", "bob")]
    );
    for i in 0..50 {
        net.bus(0)
            .send("ann", "lobby", &format!("a{i}"), "12:00:00")
            .unwrap();
        net.bus(1)
            .send("bob", "lobby", &format!("b{i}"), "12:00:00")
            .unwrap();
    }
    net.bus(2).send("cy", "den", "hi den", "12:00:00").unwrap();
    net.settle();
    let from = |who: &'static str, n| {
        (0..n).map(move |i| deliver(who, "lobby", &format!("{}{i}", &who[..1])))
    };
    let mut expected_0: Vec<ChatEvent> = from("bob", 50).collect();
    expected_0.push(deliver("cy", "den", "hi den"));
    assert_eq!(net.told(0), expected_0);
    let mut expected_2: Vec<ChatEvent> = Vec::new();
    expected_2.extend(from("ann", 50));
    expected_2.extend(from("bob", 50));
    let mut got_2 = net.told(2);
    // ann's and bob's interleave; each sender's order holds.
    got_2.sort_by_key(|e| match e {
        ChatEvent::Deliver(m) => m.from.clone(),
        _ => String::new(),
    });
    assert_eq!(got_2, expected_2);
    assert_eq!(net.bus(2).counters().delivered, 100);
    assert_eq!(net.bus(2).counters().lost, 0);
    // 50 messages and one join (the heartbeat on connecting had no one).
    assert_eq!(net.bus(0).connection().counters().published, 50 + 1);
}

#[test]
fn rosters_span_processes_and_expire_when_a_process_goes_silent() {
    let mut net = Net::new(&[1, 2]);
    let t0 = net.now;
    net.bus(0).joined("ann", "lobby");
    net.bus(0).joined("al", "den");
    net.settle();
    assert_eq!(net.bus(1).roster("lobby"), ["ann"]);
    assert_eq!(net.bus(1).roster("den"), ["al"]);
    assert!(net.bus(1).is_taken("ANN") && !net.bus(1).is_taken("bob"));
    net.bus(0).joined("al", "lobby"); // a move
    net.bus(0).left("ann");
    net.settle();
    assert_eq!(
        net.told(1),
        [
            joined("lobby", "ann"),
            joined("den", "al"),
            left("den", "al"),
            joined("lobby", "al"),
            left("lobby", "ann")
        ]
    );
    assert_eq!(net.bus(1).roster("lobby"), ["al"]);
    // Heartbeats at 2 s, 4 s, ... keep al; process 0 goes silent at 5 s;
    // its last heartbeat was at 4 s, so al expires at the first tick at
    // least 7 s later: 12 s (ticks at 2 s, 4 s, ..., process 1's too).
    net.advance_to(t0 + ms(5000));
    assert_eq!(net.bus(1).roster("lobby"), ["al"]);
    net.cut(0);
    net.advance_to(t0 + ms(11_999));
    assert_eq!(net.bus(1).roster("lobby"), ["al"]);
    assert_eq!(net.told(1), []);
    net.advance_to(t0 + ms(12_000));
    assert_eq!(net.bus(1).roster("lobby"), Vec::<String>::new());
    assert_eq!(net.told(1), [left("lobby", "al")]);
}

#[test]
fn a_late_process_learns_the_roster_from_heartbeats_silently() {
    let mut net = Net::new(&[1, 2]);
    let t0 = net.now;
    net.cut(1);
    net.bus(0).joined("ann", "lobby");
    net.settle();
    net.processes[1].up = true;
    // Process 1 redials at 100 ms; process 0's next heartbeat is at 2 s.
    net.advance_to(t0 + ms(1999));
    assert_eq!(net.bus(1).roster("lobby"), Vec::<String>::new());
    net.advance_to(t0 + ms(2000));
    assert_eq!(net.bus(1).roster("lobby"), ["ann"]);
    assert_eq!(net.told(1), [ChatEvent::Degraded, ChatEvent::Recovered]);
}

#[test]
fn the_lowest_origin_keeps_a_contested_name() {
    let mut net = Net::new(&[7, 3]);
    // Both grant "Ann" at once (neither knew of the other's).
    net.bus(0).joined("Ann", "lobby");
    net.bus(1).joined("ann", "den");
    net.settle();
    assert_eq!(
        net.told(0),
        [
            joined("den", "ann"),
            ChatEvent::NameConflict { name: "Ann".into() }
        ]
    );
    assert_eq!(net.told(1), [joined("lobby", "Ann")]);
    // Told once, however many heartbeats repeat the claim.
    let t0 = net.now;
    net.advance_to(t0 + ms(6000));
    assert_eq!(net.told(0), []);
    // The loser renames; the winner keeps its name.
    net.bus(0).left("Ann");
    net.bus(0).joined("Ann-2", "lobby");
    net.settle();
    assert_eq!(
        net.told(1),
        [left("lobby", "Ann"), joined("lobby", "Ann-2")]
    );
    assert_eq!(net.told(0), []);
    assert!(net.bus(0).is_taken("ann") && !net.bus(1).is_taken("Ann"));
    // Each side lists the other's under the names they now have.
    assert_eq!(net.bus(1).roster("lobby"), ["Ann-2"]);
    assert_eq!(net.bus(0).roster("den"), ["ann"]);
    assert!(net.bus(1).is_taken("ann-2"));
}

#[test]
fn degraded_and_recovered_are_told_once() {
    let mut net = Net::new(&[1, 2]);
    let t0 = net.now;
    net.bus(0).joined("ann", "lobby");
    net.settle();
    net.told(1);
    net.cut(1);
    // Redials at 100, 300, 700, 1500 ms all fail: one notice.
    net.advance_to(t0 + ms(2000));
    assert_eq!(net.told(1), [ChatEvent::Degraded]);
    // Local sends never wait: they queue.
    net.bus(1)
        .send("bob", "lobby", "while down", "12:00:00")
        .unwrap();
    net.processes[1].up = true;
    net.advance_to(t0 + ms(3100)); // the redial at 3.1 s succeeds
    assert_eq!(net.told(1), [ChatEvent::Recovered]);
    assert_eq!(net.told(0), [deliver("bob", "lobby", "while down")]);
    assert_eq!(net.bus(1).connection().counters().reconnects, 1);
}

#[test]
fn sequence_gaps_reorders_own_and_bad_envelopes_are_counted() {
    let mut net = Net::new(&[1, 2]);
    let message = |origin, seq, room: &str| Envelope::Message {
        origin,
        seq,
        from: "eve".into(),
        room: room.into(),
        content: format!("m{seq}"),
        time: "12:00:00".into(),
    };
    for (subject, envelope) in [
        ("sockloop.chat.room.lobby", message(9, 1, "lobby").encode()),
        ("sockloop.chat.room.lobby", message(9, 2, "lobby").encode()),
        ("sockloop.chat.room.lobby", message(9, 5, "lobby").encode()),
        ("sockloop.chat.room.lobby", message(9, 4, "lobby").encode()),
        ("sockloop.chat.room.lobby", message(2, 1, "lobby").encode()),
        ("sockloop.chat.room.den", message(9, 6, "lobby").encode()),
        ("sockloop.chat.room.lobby", b"{}".to_vec()),
    ] {
        net.route(subject, &envelope);
    }
    net.settle();
    let contents: Vec<String> = net
        .told(1)
        .into_iter()
        .map(|e| match e {
            ChatEvent::Deliver(m) => m.content,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(contents, ["m1", "m2", "m5"]);
    assert_eq!(
        net.bus(1).counters(),
        ChatBusCounters {
            delivered: 3,
            lost: 2,
            out_of_order: 1,
            invalid: 2,
            roster_full: 0
        }
    );
}

#[test]
fn the_roster_is_bounded() {
    let now = Instant::now();
    let config = BusConfig::new(vec!["b:1".parse().unwrap()]);
    let chat_config = ChatBusConfig {
        max_remote_members: 2,
        ..ChatBusConfig::default()
    };
    let mut bus = ChatBus::new(config, chat_config, 1, now).unwrap();
    bus.handle_connected(now);
    bus.handle_input(now, INFO);
    bus.handle_input(now, b"PONG\r\n");
    let beat = Envelope::Heartbeat {
        origin: 5,
        members: ["a", "b", "c"]
            .iter()
            .map(|n| ("lobby".to_owned(), n.to_string()))
            .collect(),
    }
    .encode();
    let mut wire = format!("MSG {PRESENCE} 2 {}\r\n", beat.len()).into_bytes();
    wire.extend_from_slice(&beat);
    wire.extend_from_slice(b"\r\n");
    bus.handle_input(now, &wire);
    assert_eq!(bus.roster("lobby"), ["a", "b"]);
    assert_eq!(bus.counters().roster_full, 1);
    let bad = ChatBusConfig {
        presence_ttl: Duration::from_secs(1),
        ..ChatBusConfig::default()
    };
    let config = BusConfig::new(vec!["b:1".parse().unwrap()]);
    assert!(ChatBus::new(config, bad, 1, now).is_err());
}

#[test]
fn a_synced_local_roster_becomes_joins_moves_and_leaves() {
    let mut net = Net::new(&[1, 2]);
    let members = |list: &[(&str, &str)]| -> BTreeMap<String, String> {
        list.iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect()
    };
    net.bus(0)
        .set_local(&members(&[("ann", "lobby"), ("bob", "den")]));
    net.settle();
    assert_eq!(net.told(1), [joined("lobby", "ann"), joined("den", "bob")]);
    net.bus(0)
        .set_local(&members(&[("ann", "den"), ("cy", "lobby")]));
    net.settle();
    assert_eq!(
        net.told(1),
        [
            left("den", "bob"),
            left("lobby", "ann"),
            joined("den", "ann"),
            joined("lobby", "cy")
        ]
    );
    assert_eq!(
        net.bus(1).rosters(),
        BTreeMap::from([
            ("den".to_owned(), vec!["ann".to_owned()]),
            ("lobby".to_owned(), vec!["cy".to_owned()])
        ])
    );
}
