//! Two `sockloop serve` processes on one NATS bus (a real `nats-server`
//! started on a free loopback port): chat members on each, JSON, two
//! shards each; every member gets every other member's messages exactly
//! once, per sender in order, none of its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::Served;

const DEADLINE: Duration = Duration::from_secs(20);
const MEMBERS: usize = 3;
const MESSAGES: usize = 100;

struct NatsServer(Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_binary() -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()?;
    let binary = String::from_utf8(found.stdout).ok()?.trim().to_owned();
    (found.status.success() && !binary.is_empty()).then_some(binary)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nats(binary: &str, port: u16) -> NatsServer {
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = NatsServer(child);
    let until = Instant::now() + DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

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

#[test]
fn chat_spans_two_processes_over_nats() {
    let Some(binary) = nats_binary() else {
        println!("skipping: nats-server not found");
        return;
    };
    let port = free_port();
    let nats = start_nats(&binary, port);
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
    let _nats = start_nats(&binary, port);
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
