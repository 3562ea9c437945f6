//! Two `sockloop serve` processes on one NATS bus (a real `nats-server`
//! started on a free loopback port), two shards each: 10 members on each
//! (JSON and protobuf mixed) each send 200 numbered messages; every member
//! gets every other member's messages exactly once, per sender in order,
//! none of its own; join notices and `/list` span both. Then, with 3 + 3
//! JSON members, the broker is killed and restarted.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

use common::external::{local_nats, NatsServer};
use common::process::Served;
use sockloop::client::chat::ChatClient;
use sockloop::protocol::chat::{ChatMessage, Encoding};

const DEADLINE: Duration = Duration::from_secs(20);
const MEMBERS: usize = 3;
const MESSAGES: usize = 20;
/// Members per process in the mixed test ...
const MIXED_MEMBERS: usize = 10;
/// ... and the messages each sends.
const MIXED_MESSAGES: usize = 200;
/// How long a mixed member's reads wait: a quiet socket ends a drain.
const QUIET: Duration = Duration::from_millis(300);

/// A JSON chat member: the prompt answered, the welcome read.
struct Member {
    name: String,
    reader: BufReader<TcpStream>,
}

impl Member {
    fn join(addr: &str, name: &str) -> Member {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut prompt = [0; 21];
        reader.read_exact(&mut prompt).unwrap();
        reader
            .get_mut()
            .write_all(format!("{name}\n").as_bytes())
            .unwrap();
        let welcome = Self::line(&mut reader).expect("a welcome");
        let value: serde_json::Value = serde_json::from_str(&welcome).unwrap();
        let content = value["content"].as_str().unwrap();
        let granted = (content
            .strip_prefix("Welcome, ")
            .and_then(|rest| rest.split_once('!')))
        .unwrap_or_else(|| panic!("not a welcome: {welcome}"))
        .0;
        Member {
            name: granted.into(),
            reader,
        }
    }

    fn line(reader: &mut BufReader<TcpStream>) -> Option<String> {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line),
            Ok(_) => panic!("the server closed"),
            Err(_) => None, // the read timeout
        }
    }

    fn say(&mut self, text: &str) {
        let line = serde_json::json!({ "content": text }).to_string();
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// The next message not from `System`, as `(from, content)`, if one
    /// comes within the read timeout.
    fn next(&mut self) -> Option<(String, String)> {
        loop {
            let (from, content) = self.next_any()?;
            if from != "System" {
                return Some((from, content));
            }
        }
    }

    /// The next message, `System`'s included.
    fn next_any(&mut self) -> Option<(String, String)> {
        let line = Self::line(&mut self.reader)?;
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let field = |name: &str| value[name].as_str().unwrap().to_owned();
        Some((field("from"), field("content")))
    }

    /// Every message until `until` passes.
    fn all_until(&mut self, until: Instant) -> Vec<(String, String)> {
        let mut got = Vec::new();
        while Instant::now() < until {
            got.extend(self.next_any());
        }
        got
    }
}

/// A mixed member: `(name, client)`; even `i` speak JSON, odd protobuf.
fn join_mixed(served: &Served, side: char, i: usize) -> (String, ChatClient) {
    let name = format!("{side}{i}");
    let (encoding, listener) = match i % 2 {
        0 => (Encoding::Json, 0),
        _ => (Encoding::Protobuf, 1),
    };
    let (client, welcome) =
        ChatClient::connect(served.addr(listener), encoding, &name).expect("join");
    assert!(
        welcome.content.starts_with(&format!("Welcome, {name}! ")),
        "{welcome:?}"
    );
    client.set_read_timeout(Some(QUIET)).unwrap();
    (name, client)
}

/// The next message, or `None` once the socket is quiet for [`QUIET`].
fn recv_quiet(client: &mut ChatClient) -> Option<ChatMessage> {
    match client.recv() {
        Ok(Some(message)) => Some(message),
        Ok(None) => panic!("the server closed"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("receive: {e}"),
    }
}

/// Everything until the socket is quiet, as `(from, content)`.
fn drain(client: &mut ChatClient) -> Vec<(String, String)> {
    std::iter::from_fn(|| recv_quiet(client))
        .map(|m| (m.from, m.content))
        .collect()
}

/// What has arrived by now (after a pause for it to arrive).
fn drain_now(client: &mut ChatClient) -> Vec<(String, String)> {
    client
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let got = drain(client);
    client.set_read_timeout(Some(QUIET)).unwrap();
    got
}

#[test]
fn mixed_members_on_two_processes_hear_each_other_exactly_once() {
    let Some((_nats, _, port)) = local_nats() else {
        return;
    };
    let bus = format!("nats://127.0.0.1:{port}");
    let args = [
        "--tcp",
        "127.0.0.1:0=chat",
        "--tcp",
        "127.0.0.1:0=chat-proto",
        "--shards",
        "2",
        "--bus",
        &bus,
    ];
    let (one, two) = (Served::start(&args, 2), Served::start(&args, 2));
    let mut members = vec![join_mixed(&one, 'a', 0), join_mixed(&two, 'b', 0)];

    // The buses connect at the first member: probe until each side hears
    // the other (probes and what came before are not counted below).
    let until = Instant::now() + DEADLINE;
    let mut heard = [false, false];
    while heard != [true, true] {
        assert!(
            Instant::now() < until,
            "the processes never heard each other"
        );
        for (side, other) in [(0, "b0"), (1, "a0")] {
            members[side].1.send("probe").unwrap();
            heard[side] |= drain(&mut members[side].1)
                .iter()
                .any(|(from, _)| from == other);
        }
    }
    std::thread::sleep(QUIET);
    for (_, client) in &mut members {
        drain_now(client);
    }

    // The others join, alternating sides, each once the other side heard
    // the join before: each member is told of every later join, on either
    // process, exactly once (a0 and b0 joined before the buses were up).
    let mut got: Vec<Vec<(String, String)>> = vec![Vec::new(), Vec::new()];
    for i in 1..MIXED_MEMBERS {
        for (side, served) in [('a', &one), ('b', &two)] {
            let member = join_mixed(served, side, i);
            let notice = ("System".to_owned(), format!("{} joined lobby", member.0));
            // a0 hears b's joins over the bus, b0 a's.
            let other = usize::from(side == 'a');
            let until = Instant::now() + DEADLINE;
            while !got[other].contains(&notice) {
                assert!(Instant::now() < until, "{notice:?} never crossed");
                let message = recv_quiet(&mut members[other].1);
                got[other].extend(message.map(|m| (m.from, m.content)));
            }
            members.push(member);
            got.push(Vec::new());
        }
    }
    let names: Vec<String> = members.iter().map(|(name, _)| name.clone()).collect();
    std::thread::sleep(QUIET);
    for (k, (name, client)) in members.iter_mut().enumerate() {
        got[k].extend(drain_now(client));
        let mut joins: Vec<&str> = (got[k].iter())
            .filter(|(from, _)| from == "System")
            .filter_map(|(_, content)| content.strip_suffix(" joined lobby"))
            .collect();
        joins.sort();
        let mut later = names[(k + 1).max(2)..].to_vec();
        later.sort();
        assert_eq!(joins, later, "{name}'s join notices");
    }

    // /list spans both processes (rosters travel in heartbeats).
    let mut everyone = names.clone();
    everyone.sort();
    let listed = format!("{} in lobby: {}", everyone.len(), everyone.join(", "));
    let until = Instant::now() + DEADLINE;
    'listed: loop {
        assert!(Instant::now() < until, "/list never showed both processes");
        for k in [0, 1] {
            let client = &mut members[k].1;
            client.send("/list").unwrap();
            let got = drain(client);
            if got
                .iter()
                .any(|m| *m == ("System".to_owned(), listed.clone()))
            {
                break 'listed;
            }
        }
    }
    std::thread::sleep(QUIET);
    for (_, client) in &mut members {
        drain_now(client);
    }

    // Everyone sends while everyone reads.
    let expected = (names.len() - 1) * MIXED_MESSAGES;
    let mut senders = Vec::new();
    let readers: Vec<_> = members
        .into_iter()
        .map(|(name, mut client)| {
            senders.push((name.clone(), client.try_clone().unwrap()));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let until = Instant::now() + 2 * DEADLINE;
                while got.len() < expected && Instant::now() < until {
                    got.extend(recv_quiet(&mut client).filter(|m| m.from != "System"));
                }
                // Anything extra (a duplicate) would arrive now.
                while let Some(message) = recv_quiet(&mut client) {
                    got.extend((message.from != "System").then_some(message));
                }
                (name, got)
            })
        })
        .collect();
    for n in 0..MIXED_MESSAGES {
        for (name, client) in &mut senders {
            client.send(&format!("{name} {n}")).unwrap();
        }
    }
    for reader in readers {
        let (name, got) = reader.join().unwrap();
        for sender in names.iter().filter(|s| **s != name) {
            let from_sender: Vec<&str> = got
                .iter()
                .filter(|m| m.from == *sender)
                .map(|m| m.content.as_str())
                .collect();
            let expected: Vec<String> = (0..MIXED_MESSAGES)
                .map(|n| format!("{sender} {n}"))
                .collect();
            assert_eq!(from_sender, expected, "{name} from {sender}");
        }
        assert!(got.iter().all(|m| m.from != name), "{name} got its own");
        assert_eq!(got.len(), expected, "{name}");
    }
    one.stop();
    two.stop();
}

#[test]
fn the_broker_killed_and_restarted() {
    let Some((nats, binary, port)) = local_nats() else {
        return;
    };
    let bus = format!("nats://127.0.0.1:{port}");
    let args = ["--tcp", "127.0.0.1:0=chat", "--shards", "2", "--bus", &bus];
    let (one, two) = (Served::start(&args, 1), Served::start(&args, 1));
    let mut members: Vec<Member> = (0..MEMBERS)
        .map(|i| Member::join(one.addr(0), &format!("a{i}")))
        .chain((0..MEMBERS).map(|i| Member::join(two.addr(0), &format!("b{i}"))))
        .collect();

    // The buses connect at the first member: probe until each side hears
    // the other (probes are not counted below).
    let until = Instant::now() + DEADLINE;
    let (mut a_heard, mut b_heard) = (false, false);
    while !(a_heard && b_heard) {
        assert!(
            Instant::now() < until,
            "the processes never heard each other"
        );
        members[0].say("probe");
        members[MEMBERS].say("probe");
        for i in [0, MEMBERS] {
            while let Some((from, _)) = members[i].next() {
                let other_side = (i == 0) == from.starts_with('b');
                if other_side && i == 0 {
                    a_heard = true;
                } else if other_side {
                    b_heard = true;
                }
            }
        }
    }
    // Drain the probes still in flight everywhere.
    std::thread::sleep(Duration::from_millis(300));
    for member in &mut members {
        while member.next().is_some() {}
    }

    for n in 0..MESSAGES {
        for member in &mut members {
            let text = format!("{} {n}", member.name);
            member.say(&text);
        }
    }
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut member| {
            std::thread::spawn(move || {
                let expected = (2 * MEMBERS - 1) * MESSAGES;
                let mut got = Vec::new();
                let until = Instant::now() + DEADLINE;
                while got.len() < expected && Instant::now() < until {
                    if let Some(message) = member.next() {
                        got.push(message);
                    }
                }
                // Anything extra (a duplicate) would arrive now.
                let quiet = Instant::now() + Duration::from_millis(300);
                while Instant::now() < quiet {
                    if let Some(message) = member.next() {
                        got.push(message);
                    }
                }
                (member, got)
            })
        })
        .collect();
    let mut members = Vec::new();
    for reader in readers {
        let (member, got) = reader.join().unwrap();
        let name = member.name.clone();
        members.push(member);
        let mut senders: Vec<String> = (0..MEMBERS)
            .flat_map(|i| [format!("a{i}"), format!("b{i}")])
            .filter(|s| *s != name)
            .collect();
        senders.sort();
        for sender in &senders {
            let from_sender: Vec<&str> = got
                .iter()
                .filter(|(from, _)| from == sender)
                .map(|(_, content)| content.as_str())
                .collect();
            let expected: Vec<String> = (0..MESSAGES).map(|n| format!("{sender} {n}")).collect();
            assert_eq!(from_sender, expected, "{name} from {sender}");
        }
        assert!(
            got.iter().all(|(from, _)| *from != name),
            "{name} got its own"
        );
        assert_eq!(got.len(), senders.len() * MESSAGES, "{name}");
    }

    // /list spans both processes (rosters travel in heartbeats), and a
    // name held on the other process is taken here too.
    let everyone = "6 in lobby: a0, a1, a2, b0, b1, b2";
    let until = Instant::now() + DEADLINE;
    'listed: loop {
        assert!(Instant::now() < until, "/list never showed both processes");
        members[MEMBERS].say("/list");
        while let Some(message) = members[MEMBERS].next_any() {
            if message == ("System".into(), everyone.into()) {
                break 'listed;
            }
        }
    }
    let copy = Member::join(two.addr(0), "a0");
    assert_eq!(copy.name, "a0-2");
    drop(copy);

    // The broker goes away: every member is told once; local delivery
    // goes on.
    drop(nats);
    members[1].say("during");
    let quiet = Instant::now() + Duration::from_secs(2);
    let degraded = (
        "System".to_owned(),
        "the bus is down: rooms reach this server's members only until it is back".to_owned(),
    );
    for (i, member) in members.iter_mut().enumerate() {
        // The first member waits for the notices; the rest have theirs.
        let got = member.all_until(quiet.max(Instant::now() + Duration::from_millis(500)));
        let told = got.iter().filter(|m| **m == degraded).count();
        assert_eq!(told, 1, "{}: {got:?}", member.name);
        let during = got.iter().filter(|(from, _)| from == "a1").count();
        let expected = usize::from(i < MEMBERS && i != 1);
        assert_eq!(during, expected, "{}: {got:?}", member.name);
    }
    // Back on the same port: told once more, and messages cross again.
    let _nats = NatsServer::start(&binary, port);
    let recovered = (
        "System".to_owned(),
        "the bus is back: rooms span servers again".to_owned(),
    );
    for member in &mut members {
        let until = Instant::now() + DEADLINE;
        loop {
            assert!(
                Instant::now() < until,
                "{} never told of the recovery",
                member.name
            );
            if member.next_any().is_some_and(|m| m == recovered) {
                break;
            }
        }
    }
    // Subscriptions are restored on both sides once both are told; a
    // message crosses.
    std::thread::sleep(Duration::from_millis(300));
    members[MEMBERS].say("after");
    let until = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < until, "nothing crossed after the restart");
        if members[0].next() == Some(("b0".into(), "after".into())) {
            break;
        }
    }
    one.stop();
    two.stop();
}

/// `/list` from `member` until it shows `want`; returns all it got.
fn await_list(member: &mut Member, want: &str) -> Vec<(String, String)> {
    let until = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    loop {
        assert!(
            Instant::now() < until,
            "/list never showed {want:?}: {got:?}"
        );
        member.say("/list");
        got.extend(member.all_until(Instant::now() + Duration::from_millis(300)));
        if got
            .iter()
            .any(|(from, content)| from == "System" && content == want)
        {
            return got;
        }
    }
}

#[test]
fn a_name_granted_on_both_processes_at_once_is_kept_by_one() {
    let Some((_nats, _, port)) = local_nats() else {
        return;
    };
    let bus = format!("nats://127.0.0.1:{port}");
    let args = ["--tcp", "127.0.0.1:0=chat", "--bus", &bus];
    let (one, two) = (Served::start(&args, 1), Served::start(&args, 1));
    // Both join before either bus is up (each connects at its first
    // member, and rosters cross in heartbeats): both are granted "ann".
    let mut members = [
        Member::join(one.addr(0), "ann"),
        Member::join(two.addr(0), "ann"),
    ];
    assert_eq!([&*members[0].name, &*members[1].name], ["ann", "ann"]);
    // Once the buses meet, one process renames its member and tells it
    // so, once.
    let notice = "ann is taken on another server, so you are ann-2.";
    let mut renamed = 0;
    for member in &mut members {
        let got = await_list(member, "2 in lobby: ann, ann-2");
        let told = got.iter().filter(|(_, content)| content == notice).count();
        assert!(told <= 1, "{got:?}");
        if told == 1 {
            member.name = "ann-2".into();
            renamed += 1;
        }
    }
    assert_eq!(renamed, 1);
    // Messages go out under the name each now has.
    members[0].say("hello");
    let until = Instant::now() + DEADLINE;
    let want = (members[0].name.clone(), "hello".to_owned());
    while members[1].next() != Some(want.clone()) {
        assert!(Instant::now() < until, "hello never crossed");
    }
    one.stop();
    two.stop();
}

/// Each worker's `sockloop_bus_connected`, from the supervisor's merged
/// `/metrics` (a worker that has not opened its bus yet shows 0).
fn bus_connected(metrics: &str) -> [u64; 2] {
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let mut connected = [0; 2];
    for line in response.lines() {
        let Some(rest) = line.strip_prefix("sockloop_bus_connected{worker=\"") else {
            continue;
        };
        let (worker, rest) = rest.split_once('"').unwrap();
        let value: u64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        connected[worker.parse::<usize>().unwrap()] += value;
    }
    connected
}

/// `--workers 2 --bus`: each worker is one more process on the bus, so
/// members that landed on different workers of one server share a room.
#[test]
fn workers_of_one_server_share_rooms_over_the_bus() {
    let Some((_nats, _, port)) = local_nats() else {
        return;
    };
    let bus = format!("nats://127.0.0.1:{port}");
    let args = [
        "--workers",
        "2",
        "--shards",
        "1",
        "--tcp",
        "127.0.0.1:0=chat",
        "--metrics",
        "127.0.0.1:0",
        "--bus",
        &bus,
    ];
    let served = Served::start(&args, 2);
    // A worker opens its bus connection with its first member, and has
    // subscribed once it shows connected: members join until both have.
    let mut members = Vec::new();
    let until = Instant::now() + DEADLINE;
    while bus_connected(served.addr(1)) != [1, 1] {
        assert!(
            Instant::now() < until && members.len() < 64,
            "the two workers never both had a member on the bus: {:?}",
            bus_connected(served.addr(1))
        );
        let name = format!("m{}", members.len());
        members.push(Member::join(served.addr(0), &name));
        std::thread::sleep(Duration::from_millis(20));
    }
    for member in &mut members {
        let text = format!("hello from {}", member.name);
        member.say(&text);
    }
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    for member in &mut members {
        let mut expected: Vec<(String, String)> = (names.iter())
            .filter(|name| **name != member.name)
            .map(|name| (name.clone(), format!("hello from {name}")))
            .collect();
        let mut got = Vec::new();
        let until = Instant::now() + DEADLINE;
        while got.len() < expected.len() && Instant::now() < until {
            got.extend(member.next());
        }
        // A duplicate would arrive now.
        let quiet = Instant::now() + QUIET;
        while Instant::now() < quiet {
            got.extend(member.next());
        }
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "what {} heard", member.name);
    }
    drop(members);
    let output = served.stop();
    assert_eq!(output.status.code(), Some(0));
}
