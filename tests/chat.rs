//! The chat room over real sockets: JSON and protobuf members, two shards,
//! slow members and bad input.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::Duration;

use common::{connect, wait_until, Running, IO_TIMEOUT};
use sockloop::client::chat::{ChatClient, GreetingError};
use sockloop::codec::LengthDelimited;
use sockloop::proto::chat::ChatMessage;
use sockloop::services::chat::{Chat, ChatConfig, Encoding};
use sockloop::{Server, ServerConfig};

/// A chat with a JSON listener (`tcp[0]`) and a protobuf one (`tcp[1]`).
fn chat_server(config: ServerConfig, chat: ChatConfig) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let make = Chat::maker(chat, &[Encoding::Json, Encoding::Protobuf]);
    let server = Server::builder()
        .config(config)
        .tcp_group(&[any, any], make)
        .build()
        .expect("bind the chat");
    Running::start(server)
}

/// Joins as `name`, speaking JSON or protobuf; checks the welcome.
fn join(server: &Running, encoding: Encoding, name: &str) -> ChatClient {
    let addr = match encoding {
        Encoding::Json => server.tcp[0],
        Encoding::Protobuf => server.tcp[1],
    };
    let (client, welcome) = ChatClient::connect(addr, encoding, name).expect("join");
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(welcome.from, "System");
    assert!(
        welcome.content.starts_with(&format!("Welcome, {name}! ")),
        "{welcome:?}"
    );
    client
}

fn recv(client: &mut ChatClient) -> ChatMessage {
    client
        .recv()
        .expect("receive")
        .expect("the server closed the connection")
}

fn encoding_of(i: usize) -> Encoding {
    match i % 2 {
        0 => Encoding::Json,
        _ => Encoding::Protobuf,
    }
}

#[test]
fn twenty_members_on_two_shards_get_every_other_members_messages_once_in_order() {
    const MEMBERS: usize = 20;
    const MESSAGES: usize = 200;
    // Handoff mode spreads members over the shards evenly, by load.
    let mut config = ServerConfig {
        shards: 2,
        ..ServerConfig::default()
    };
    config.socket.reuse_port = false;
    let server = chat_server(config, ChatConfig::default());
    let members: Vec<ChatClient> = (0..MEMBERS)
        .map(|i| join(&server, encoding_of(i), &format!("m{i}")))
        .collect();
    let per_shard: Vec<u64> = server
        .handle
        .shard_stats()
        .iter()
        .map(|s| s.conns_open)
        .collect();
    assert_eq!(per_shard, [10, 10]);
    let receivers: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(me, member)| {
            let mut member = member.try_clone().unwrap();
            member.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            thread::spawn(move || {
                let mut next: HashMap<String, usize> = HashMap::new();
                let mut notices = 0;
                for _ in 0..(MEMBERS - 1) * MESSAGES {
                    // Join notices of later members may still be on their
                    // way: only each sender's order is kept, and notices
                    // from two shards may cross.
                    let message = loop {
                        let message = recv(&mut member);
                        if message.from != "System" {
                            break message;
                        }
                        assert!(message.content.ends_with(" joined lobby"), "{message:?}");
                        notices += 1;
                    };
                    assert_ne!(message.from, format!("m{me}"), "got its own message back");
                    let n: usize = message.content.parse().expect("a numbered message");
                    let want = next.entry(message.from.clone()).or_default();
                    assert_eq!(n, *want, "m{me}: {message:?} out of order");
                    *want += 1;
                }
                assert!(notices < MEMBERS, "m{me}: {notices} join notices");
                assert_eq!(next.len(), MEMBERS - 1);
                assert!(next.values().all(|&n| n == MESSAGES));
            })
        })
        .collect();
    let senders: Vec<_> = members
        .iter()
        .map(|member| {
            let mut member = member.try_clone().unwrap();
            thread::spawn(move || {
                for n in 0..MESSAGES {
                    member.send(&n.to_string()).unwrap();
                }
            })
        })
        .collect();
    senders.into_iter().for_each(|s| s.join().unwrap());
    receivers.into_iter().for_each(|r| r.join().unwrap());
    let stats = server.handle.stats();
    assert_eq!(
        (
            stats.mailbox_dropped,
            stats.closed_output_hard,
            stats.closed_output_soft
        ),
        (0, 0, 0)
    );
    drop(members);
    server.shutdown().unwrap();
}

#[test]
fn a_burst_through_a_tiny_inbox_reaches_both_shards_complete_and_in_order() {
    const BURST: usize = 5_000;
    // Handoff mode spreads members over the shards evenly, by load; an
    // inbox of 8 is refused again and again by a burst of thousands.
    let mut config = ServerConfig {
        shards: 2,
        mailbox_capacity: 8,
        idle_timeout: None,
        ..ServerConfig::default()
    };
    config.socket.reuse_port = false;
    let server = chat_server(config, ChatConfig::default());
    let mut sender = join(&server, Encoding::Json, "sender");
    let readers: Vec<ChatClient> = (0..3)
        .map(|i| join(&server, encoding_of(i), &format!("r{i}")))
        .collect();
    let per_shard: Vec<u64> = (server.handle.shard_stats().iter())
        .map(|s| s.conns_open)
        .collect();
    assert_eq!(per_shard, [2, 2], "readers on both shards");
    let readers: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(me, mut reader)| {
            thread::spawn(move || {
                let mut next = 0;
                while next < BURST {
                    let message = recv(&mut reader);
                    if message.from == "System" {
                        assert!(message.content.ends_with(" joined lobby"), "{message:?}");
                        continue;
                    }
                    assert_eq!(message.from, "sender");
                    assert_eq!(message.content, next.to_string(), "r{me}: out of order");
                    next += 1;
                }
                reader
            })
        })
        .collect();
    for n in 0..BURST {
        sender.send(&n.to_string()).unwrap();
    }
    let readers: Vec<ChatClient> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    // The sender was slowed, never told its messages were lost: the next
    // thing it hears is the answer to a command sent after the burst.
    sender.send("/help").unwrap();
    let message = loop {
        let message = recv(&mut sender);
        if !message.content.ends_with(" joined lobby") {
            break message;
        }
    };
    assert_eq!(message.from, "System");
    assert!(!message.content.starts_with("error"), "{message:?}");
    let stats = server.handle.stats();
    assert_eq!(
        (stats.mailbox_dropped, stats.closed_output_hard),
        (0, 0),
        "{stats:?}"
    );
    drop((sender, readers));
    server.shutdown().unwrap();
}

#[test]
fn a_member_that_never_reads_is_dropped_by_the_hard_limit_and_the_room_loses_nothing() {
    const MESSAGES: usize = 2048;
    let mut config = ServerConfig {
        shards: 1,
        output_hard_limit: 192 * 1024,
        output_soft_limit: 160 * 1024,
        output_soft_for: None,
        ..ServerConfig::default()
    };
    // Small kernel buffers, so the server's own buffering is what grows.
    config.socket.send_buffer = Some(16 * 1024);
    let server = chat_server(config, ChatConfig::default());
    let mut writer = join(&server, Encoding::Json, "writer");
    let mut fast = join(&server, Encoding::Protobuf, "fast");
    let slow = join(&server, Encoding::Json, "slow");
    assert_eq!(recv(&mut writer).content, "fast joined lobby");
    assert_eq!(recv(&mut writer).content, "slow joined lobby");
    assert_eq!(recv(&mut fast).content, "slow joined lobby");

    // The writer waits for the fast member every 32 messages, so only the
    // slow one falls behind.
    let text = "x".repeat(1000);
    let mut notices = Vec::new();
    for chunk in 0..MESSAGES / 32 {
        for n in chunk * 32..(chunk + 1) * 32 {
            writer.send(&format!("{n} {text}")).unwrap();
        }
        let mut got = 0;
        while got < 32 {
            let message = recv(&mut fast);
            if message.from == "System" {
                notices.push(message.content);
                continue;
            }
            assert_eq!(message.content, format!("{} {text}", chunk * 32 + got));
            got += 1;
        }
    }
    wait_until("the slow member's close", || {
        server.handle.stats().closed_output_hard == 1
    });
    // Its leave notice reaches the room.
    writer.send("done").unwrap();
    let last = recv(&mut fast);
    notices.extend((last.from == "System").then_some(last.content.clone()));
    assert_eq!(notices, ["slow left lobby"]);
    assert_eq!(server.handle.stats().closed_output_soft, 0);
    drop((writer, fast, slow));
    server.shutdown().unwrap();
}

/// Two members that keep talking while a third misbehaves: they must see
/// each other's messages and nothing else.
struct Bystanders {
    ann: ChatClient,
    bob: ChatClient,
    said: usize,
}

impl Bystanders {
    fn new(server: &Running) -> Bystanders {
        let mut ann = join(server, Encoding::Json, "ann");
        let bob = join(server, Encoding::Protobuf, "bob");
        assert_eq!(recv(&mut ann).content, "bob joined lobby");
        Bystanders { ann, bob, said: 0 }
    }

    /// One exchange both ways, checked; notices about `others` are skipped.
    fn talk(&mut self) {
        let n = self.said;
        self.said += 1;
        self.ann.send(&format!("ann {n}")).unwrap();
        self.bob.send(&format!("bob {n}")).unwrap();
        for (member, from) in [(&mut self.bob, "ann"), (&mut self.ann, "bob")] {
            let message = loop {
                let message = recv(member);
                if message.from != "System" {
                    break message;
                }
                let joined_or_left =
                    message.content.contains(" joined ") || message.content.contains(" left ");
                assert!(joined_or_left, "a bystander got {message:?}");
            };
            assert_eq!(
                (message.from.as_str(), message.content),
                (from, format!("{from} {n}"))
            );
        }
    }
}

#[test]
fn bad_input_gets_its_documented_reply_and_costs_the_others_nothing() {
    let config = ServerConfig {
        shards: 1,
        frame_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    };
    let server = chat_server(config, ChatConfig::default());
    let mut room = Bystanders::new(&server);
    room.talk();

    // Invalid JSON: an error line each; the fifth disconnects.
    let mut stream = connect(server.tcp[0]);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut prompt = [0; 21];
    reader.read_exact(&mut prompt).unwrap();
    stream.write_all(b"raw\n").unwrap();
    let mut welcome = String::new();
    reader.read_line(&mut welcome).unwrap();
    room.talk();
    stream.write_all(b"{\"content\": oops}\n").unwrap();
    let error = next_system(&mut reader);
    assert!(
        error.starts_with("error: invalid message: expected value at line 1 column 13"),
        "{error}"
    );
    room.talk();
    stream.write_all(b"{\"content\":\"/list\"}\n").unwrap();
    assert_eq!(
        next_system(&mut reader),
        "3 in lobby: ann, bob, raw",
        "still a member"
    );
    stream
        .write_all(b"1\n[]\n\"\"\nnull\n{\"content\":\"unread\"}\n")
        .unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let replies: Vec<String> = rest
        .lines()
        .filter(|line| !line.contains("\"from\":\"ann\"") && !line.contains("\"from\":\"bob\""))
        .map(system_line)
        .collect();
    let want = [
        "error: invalid message: invalid type: integer `1`, expected struct ChatLine at line 1 column 1",
        "error: invalid message: invalid length 1, expected struct ChatLine with 3 elements at line 1 column 2",
        "error: invalid message: invalid type: string \"\", expected struct ChatLine at line 1 column 2",
        "error: invalid message: invalid type: null, expected struct ChatLine at line 1 column 4",
        "5 invalid messages: disconnecting",
    ];
    assert_eq!(replies, want);
    room.talk();

    // An oversized protobuf frame: an error, then the connection closes.
    let codec = LengthDelimited::new(1 << 20);
    let mut oversized = connect(server.tcp[1]);
    oversized.write_all(&[0x81, 0x80, 0x01]).unwrap(); // declares 16,385 bytes
    let mut frames = Vec::new();
    oversized.read_to_end(&mut frames).unwrap();
    let (prompt, used) = codec.decode::<ChatMessage>(&frames).unwrap().unwrap();
    assert_eq!(prompt.content, "Enter your username: ");
    let (error, rest) = codec
        .decode::<ChatMessage>(&frames[used..])
        .unwrap()
        .unwrap();
    let want = "error: frame of 16385 bytes exceeds the 16384-byte limit; disconnecting";
    assert_eq!((error.content.as_str(), frames.len()), (want, used + rest));
    room.talk();

    // A truncated frame: the frame timeout closes it, with nothing sent.
    let mut truncated = connect(server.tcp[1]);
    let name = ChatMessage {
        content: "trunc".into(),
        ..ChatMessage::default()
    };
    let mut wire = Vec::new();
    LengthDelimited::encode(&name, &mut wire).unwrap();
    truncated.write_all(&wire[..wire.len() - 2]).unwrap();
    let mut got = Vec::new();
    truncated.read_to_end(&mut got).unwrap();
    let (prompt, used) = codec.decode::<ChatMessage>(&got).unwrap().unwrap();
    assert_eq!(
        (prompt.content.as_str(), got.len()),
        ("Enter your username: ", used)
    );
    assert_eq!(server.handle.stats().closed_frame_timeout, 1);
    room.talk();

    // A 1 MiB username line: cut off at the frame limit with an error. The
    // server reads on (discarding) until the writer is done, so the error
    // arrives intact rather than destroyed by a reset.
    let mut long = connect(server.tcp[0]);
    let writer = {
        let mut long = long.try_clone().unwrap();
        thread::spawn(move || {
            long.write_all(&vec![b'n'; 1 << 20]).unwrap();
            long.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = String::new();
    long.read_to_string(&mut got).unwrap();
    writer.join().unwrap();
    let error = got.strip_prefix("Enter your username: ").unwrap();
    let want = "error: no newline within 16384 bytes; disconnecting";
    assert_eq!(system_line(error), want);
    room.talk();

    // Each lingers, discarding input, until its client closes too.
    drop((stream, reader, oversized, long));
    let handle = server.handle.clone();
    wait_until("the chat's closes", || handle.stats().closed_service == 3);
    drop(room);
    server.shutdown().unwrap();
}

/// The next `System` message's content, skipping the members' talk.
fn next_system(reader: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed early");
        let message: serde_json::Value = serde_json::from_str(&line).unwrap();
        if message["from"] == "System" {
            return message["content"].as_str().unwrap().to_owned();
        }
    }
}

/// The content of a JSON line from `System`.
fn system_line(line: &str) -> String {
    let message: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(message["from"], "System", "{line}");
    message["content"].as_str().unwrap().to_owned()
}

#[test]
fn connect_says_which_encoding_the_port_speaks() {
    let server = chat_server(ServerConfig::default(), ChatConfig::default());
    for (addr, asked, spoken) in [
        (server.tcp[0], Encoding::Protobuf, Encoding::Json),
        (server.tcp[1], Encoding::Json, Encoding::Protobuf),
    ] {
        let error = ChatClient::connect(addr, asked, "ann").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        let greeting = error.get_ref().unwrap().downcast_ref::<GreetingError>();
        assert_eq!(greeting, Some(&GreetingError::WrongEncoding(spoken)));
    }
    // The JSON port still seats a member who speaks its language.
    join(&server, Encoding::Json, "ann");
}

/// The attack run's lobby storm, smaller: 400 members join the lobby of a
/// one-shard chat from one address while two neighbours in another room
/// of the same shard keep talking. The neighbours get every message, in
/// order; a lobby member hears of all 400 joins, most of them batched.
#[test]
fn a_storm_of_joins_leaves_the_neighbours_served() {
    const STORM: usize = 400;
    let config = ServerConfig {
        shards: 1,
        sources: sockloop::limit::IpLimits::unlimited(),
        ..ServerConfig::default()
    };
    let server = chat_server(config, ChatConfig::default());
    let mut ann = join(&server, Encoding::Json, "ann");
    let mut bob = join(&server, Encoding::Protobuf, "bob");
    assert_eq!(recv(&mut ann).content, "bob joined lobby");
    ann.send("/join den").unwrap();
    assert_eq!(recv(&mut ann).content, "You are in den, alone so far.");
    assert_eq!(recv(&mut bob).content, "ann left lobby");
    bob.send("/join den").unwrap();
    assert_eq!(recv(&mut bob).content, "You are in den with 1 other.");
    assert_eq!(recv(&mut ann).content, "bob joined den");
    let mut watcher = join(&server, Encoding::Json, "watcher");

    let (json, protobuf) = (server.tcp[0], server.tcp[1]);
    let storm = thread::spawn(move || {
        (0..STORM)
            .map(|n| {
                let encoding = encoding_of(n);
                let addr = match encoding {
                    Encoding::Json => json,
                    Encoding::Protobuf => protobuf,
                };
                let (client, _welcome) = ChatClient::connect(addr, encoding, &format!("storm{n}"))
                    .expect("a storm member joins");
                client
            })
            .collect::<Vec<_>>()
    });
    // The neighbours talk through the storm, and a little after it.
    let mut said = 0;
    let mut after = 0;
    while after < 20 {
        if storm.is_finished() {
            after += 1;
        }
        ann.send(&format!("ann {said}")).unwrap();
        bob.send(&format!("bob {said}")).unwrap();
        let (to_bob, to_ann) = (recv(&mut bob), recv(&mut ann));
        assert_eq!(
            (to_bob.from.as_str(), to_bob.content),
            ("ann", format!("ann {said}"))
        );
        assert_eq!(
            (to_ann.from.as_str(), to_ann.content),
            ("bob", format!("bob {said}"))
        );
        said += 1;
    }
    let members = storm.join().unwrap();
    assert_eq!(members.len(), STORM);

    // The watcher hears of every join: one by one while the lobby is
    // small, then in batches.
    let (mut joined, mut notices, mut batches) = (0, 0, 0);
    while joined < STORM {
        let notice = recv(&mut watcher);
        assert_eq!(notice.from, "System");
        notices += 1;
        match notice.content.split_once(" joined lobby") {
            Some((count, rest)) if rest.starts_with(": ") => {
                batches += 1;
                joined += count.parse::<usize>().unwrap();
            }
            Some((name, "")) => {
                assert!(name.starts_with("storm"), "{notice:?}");
                joined += 1;
            }
            _ => panic!("the watcher got {notice:?}"),
        }
    }
    assert_eq!(joined, STORM);
    // The lobby was under 64 (the watcher and 62 of the storm) for 62 joins.
    assert_eq!(notices - batches, 62);
    let stats = server.handle.stats();
    assert_eq!((stats.closed_output_hard, stats.closed_output_soft), (0, 0));
    drop((members, ann, bob, watcher));
    server.shutdown().unwrap();
}
