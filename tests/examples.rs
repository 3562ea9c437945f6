//! The examples, run as their users run them: built binaries talked to
//! over loopback.
//!
//! `cargo test` builds the examples into `target/debug/examples/`; with
//! `cargo test --test examples` alone, build them first (`cargo build
//! --examples`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use common::child::{Child, TIMEOUT};

/// An example's binary, beside this test's: `target/debug/deps/..` is
/// `target/debug`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().join("../examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples` (plain `cargo test` builds it)",
        path.display()
    );
    path
}

/// A line-protocol client: one line out, one line back.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// One write per line: two small writes would wait on Nagle's
    /// algorithm and the server's delayed ACK.
    fn send(&mut self, line: &str) {
        let line = format!("{line}\n");
        self.reader.get_mut().write_all(line.as_bytes()).unwrap();
    }

    fn reply(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "a whole line: {line:?}");
        line.pop();
        line
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    /// Its shard, from `STATS` (`SHARD i/n COMMANDS c KEYS k`).
    fn shard(&mut self) -> usize {
        let stats = self.ask("STATS");
        let fields: Vec<&str> = stats.split(' ').collect();
        assert_eq!((fields[0], fields.len()), ("SHARD", 6), "{stats}");
        fields[1].strip_suffix("/2").unwrap().parse().unwrap()
    }
}

/// The store with 2 shards on 127.0.0.1:0, and its address.
fn shared_state() -> (Child, SocketAddr) {
    server("shared_state", &["127.0.0.1:0", "2"], "listening ")
}

#[test]
fn shared_state_serves_one_map_to_every_shard() {
    let (child, addr) = shared_state();
    // Connect until both shards hold one (the kernel spreads connections
    // by a hash of their addresses: 64 all on one shard has odds 2^-63).
    let mut by_shard: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..64 {
        let mut client = Client::connect(addr);
        let shard = client.shard();
        by_shard[shard].push(client);
        if by_shard.iter().all(|clients| !clients.is_empty()) {
            break;
        }
    }
    let [mut zero, mut one] =
        by_shard.map(|mut clients| clients.pop().expect("a client per shard"));

    // What one shard stores, the other reads, and deletes.
    assert_eq!(zero.ask("SET greeting hello, world"), "OK");
    assert_eq!(one.ask("GET greeting"), "VALUE hello, world");
    assert_eq!(one.ask("SET greeting hi"), "OK");
    assert_eq!(zero.ask("GET greeting"), "VALUE hi");
    assert_eq!(one.ask("DEL greeting"), "DELETED");
    assert_eq!(zero.ask("GET greeting"), "NOT_FOUND");
    assert_eq!(zero.ask("DEL greeting"), "NOT_FOUND");
    // Per-connection state: each counts its own commands (STATS included).
    assert_eq!(zero.ask("STATS"), "SHARD 0/2 COMMANDS 6 KEYS 0");
    assert_eq!(one.ask("STATS"), "SHARD 1/2 COMMANDS 5 KEYS 0");

    // Bad input gets an error reply and the connection goes on.
    let long_key = "k".repeat(65);
    let long_value = "v".repeat(1025);
    assert_eq!(
        zero.ask(&format!("SET {long_key} 1")),
        "ERR key too long (at most 64 bytes)"
    );
    assert_eq!(
        zero.ask(&format!("SET k {long_value}")),
        "ERR value too long (at most 1024 bytes)"
    );
    assert_eq!(zero.ask("SET k"), unknown());
    assert_eq!(zero.ask("get k"), unknown());
    assert_eq!(zero.ask(""), unknown());
    // The largest key and value fit.
    let key = "k".repeat(64);
    let value = "v".repeat(1024);
    assert_eq!(zero.ask(&format!("SET {key} {value}")), "OK");
    assert_eq!(one.ask(&format!("GET {key}")), format!("VALUE {value}"));

    // Full at 1024 keys: a new key is refused, an old one still changes.
    for n in 1..1024 {
        one.send(&format!("SET key{n} {n}")); // pipelined: replies read below
    }
    for _ in 1..1024 {
        assert_eq!(one.reply(), "OK");
    }
    assert_eq!(
        zero.ask("SET one-too-many 1"),
        "ERR store full (1024 keys): DEL one first"
    );
    assert_eq!(zero.ask("SET key7 seven"), "OK");
    assert_eq!(zero.ask("DEL key8"), "DELETED");
    assert_eq!(one.ask("SET one-too-many 1"), "OK");
    assert_eq!(one.ask("GET key7"), "VALUE seven");

    // A line longer than any command cannot be followed: error, then close.
    zero.send(&"x".repeat(2000));
    assert_eq!(
        zero.reply(),
        "ERR line too long: no newline within 1095 bytes"
    );
    let mut rest = String::new();
    assert_eq!(zero.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    assert_eq!(one.ask("QUIT"), "BYE");
    assert_eq!(one.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");

    // Ctrl-C (here SIGINT) drains and exits 0 once the clients are gone.
    drop((zero, one));
    child.signal("INT");
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr:?}");
}

fn unknown() -> &'static str {
    "ERR unknown command (SET key value, GET key, DEL key, STATS, QUIT)"
}

#[test]
fn line_length_frames_with_the_line_codec() {
    let mut child = Child::spawn(Command::new(example("line_length")).arg("127.0.0.1:0"));
    let line = child.stdout_line();
    let addr = line
        .strip_prefix("line-length on tcp ")
        .and_then(|rest| rest.strip_suffix("; Ctrl-C to stop"))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let addr: SocketAddr = addr.parse().unwrap();

    let mut client = Client::connect(addr);
    assert_eq!(client.reply(), "send me lines; \"quit\" to leave");
    // Several lines in one write, one split across two, CRLF.
    let stream = client.reader.get_mut();
    stream.write_all(b"hello\r\n\nab").unwrap();
    stream.flush().unwrap();
    assert_eq!((client.reply(), client.reply()), ("5".into(), "0".into()));
    assert_eq!(client.ask("c"), "3");
    assert_eq!(client.ask("quit"), "bye");
    let mut rest = String::new();
    assert_eq!(client.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    drop(client); // our FIN ends the server's linger

    // A line over 1024 bytes: an error, then the close.
    let mut client = Client::connect(addr);
    assert_eq!(client.reply(), "send me lines; \"quit\" to leave");
    client.send(&"x".repeat(1024));
    assert_eq!(client.reply(), "error: no newline within 1024 bytes");
    assert_eq!(client.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    // Both were closed by the service, which says so on stdout (in either
    // order: the connections may be on different shards).
    drop(client);
    for _ in 0..2 {
        let line = child.stdout_line();
        assert!(line.contains(") closed (Service); this shard"), "{line}");
    }
}

// ---- The Go article's programs (docs/tour.md walks them in order) ----

/// Starts example `name` with `args`, and the address in its first
/// stdout line, which must read `prefix ADDR`.
fn server(name: &str, args: &[&str], prefix: &str) -> (Child, SocketAddr) {
    let mut child = Child::spawn(Command::new(example(name)).args(args));
    let line = child.stdout_line();
    let addr = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"));
    (child, addr.parse().unwrap())
}

/// Runs example `name` to its end with `input` on stdin; its stdout
/// lines, its stderr lines and its exit code (every wait bounded).
fn client(name: &str, args: &[&str], input: &str) -> (Vec<String>, Vec<String>, Option<i32>) {
    let (child, mut stdin) = Child::spawn_with_stdin(Command::new(example(name)).args(args));
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let (stdout, status, stderr) = child.wait_with_stdout();
    (stdout, stderr, status.code())
}

/// `[HH:MM:SS from]: content` with the time replaced by `T`.
fn untimed(line: &str) -> String {
    let (time, rest) = line[1..].split_at(8);
    assert!(
        line.starts_with('[') && time.bytes().all(|b| b.is_ascii_digit() || b == b':'),
        "{line:?}"
    );
    format!("[T{rest}")
}

#[test]
fn tcp_server_answers_each_line_and_tcp_client_prints_it() {
    let (mut server, addr) = server("tcp_server", &["127.0.0.1:0"], "listening on tcp ");
    let (out, err, code) = client("tcp_client", &[&addr.to_string()], "");
    assert_eq!(
        (out, code),
        (
            vec!["Server response: Hello from TCP server!".to_string()],
            Some(0)
        ),
        "{err:?}"
    );
    let received = server.stdout_line();
    assert!(
        received.starts_with("Received from 127.0.0.1:")
            && received.ends_with(": Hello from TCP client!"),
        "{received}"
    );
    assert_eq!(server.stdout_line(), "closed (PeerClosed)");

    // A line split over two writes is one line; a line over 1024 bytes
    // gets an error and the close.
    let mut raw = Client::connect(addr);
    raw.reader.get_mut().write_all(b"hel").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(raw.ask("lo"), "Hello from TCP server!");
    assert!(server.stdout_line().ends_with(": hello"));
    raw.send(&"x".repeat(1024));
    assert_eq!(raw.reply(), "error: no newline within 1024 bytes");
    let mut rest = String::new();
    assert_eq!(raw.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    drop(raw);
    assert_eq!(server.stdout_line(), "closed (Service)");

    // Nobody listening: the client names it and exits 1.
    drop(server);
    let (out, err, code) = client("tcp_client", &[&addr.to_string()], "");
    assert_eq!((out.len(), code), (0, Some(1)));
    assert!(
        err[0].starts_with(&format!("tcp_client: {addr}: ")),
        "{err:?}"
    );
}

#[test]
fn udp_server_echoes_and_udp_client_prints_each_reply() {
    let (mut server, addr) = server("udp_server", &["127.0.0.1:0"], "listening on udp ");
    let addr = addr.to_string();
    let (out, err, code) = client("udp_client", &[&addr], "hi\n  there \nquit\nnot sent\n");
    let expected = [
        &format!("Connected to UDP server at {addr}"),
        "Server response: hi",
        "Server response: there",
    ];
    assert_eq!(
        (out, code),
        (expected.map(String::from).to_vec(), Some(0)),
        "{err:?}"
    );
    for text in ["hi", "there"] {
        let line = server.stdout_line();
        assert!(
            line.starts_with("Received from 127.0.0.1:") && line.ends_with(&format!(": {text}")),
            "{line}"
        );
    }
    // The reply is exactly the datagram, never larger (anti-amplification).
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.send_to(b"twenty bytes exactly", &addr).unwrap();
    let mut reply = [0; 64];
    let n = socket.recv(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"twenty bytes exactly");
}

#[test]
fn chat_members_get_every_message_even_one_that_reads_late() {
    let (server, addr) = server("chat_server", &["127.0.0.1:0"], "chat on tcp ");
    let addr = addr.to_string();
    let (mut ann, ann_in) =
        Child::spawn_with_stdin(Command::new(example("chat_client")).args([&addr, "ann"]));
    assert!(untimed(&ann.stdout_line()).starts_with("[T System]: Welcome, ann! You are in lobby"));
    // A member that reads nothing while a burst of 100 goes by (the
    // article's chat gave such a member 11 of 100).
    let mut slow = Client::connect(addr.parse().unwrap());
    let mut prompt = [0; 21];
    std::io::Read::read_exact(&mut slow.reader, &mut prompt).unwrap();
    assert_eq!(&prompt, b"Enter your username: ");
    slow.send("carl");
    assert!(slow.reply().contains("Welcome, carl!"));
    assert_eq!(untimed(&ann.stdout_line()), "[T System]: carl joined lobby");

    let burst: String = (0..100).map(|n| format!("message {n}\n")).collect();
    let (out, err, code) = client("chat_client", &[&addr, "bob"], &(burst + "/quit\n"));
    assert_eq!(code, Some(0), "{out:?} {err:?}");
    assert_eq!(
        (out.len(), untimed(&out[1])),
        (2, "[T System]: goodbye".into()),
        "{out:?}"
    );
    assert!(
        untimed(&out[0]).starts_with("[T System]: Welcome, bob! You are in lobby with 2 others"),
        "{out:?}"
    );
    // Every member gets every message, in order: ann as she goes, carl
    // only now (his socket buffers, and past them the server, held it).
    let mut expected = vec![("System".to_string(), "bob joined lobby".to_string())];
    expected.extend((0..100).map(|n| ("bob".to_string(), format!("message {n}"))));
    expected.push(("System".into(), "bob left lobby".into()));
    for (from, content) in &expected {
        assert_eq!(
            untimed(&ann.stdout_line()),
            format!("[T {from}]: {content}")
        );
        let line: serde_json::Value = serde_json::from_str(&slow.reply()).unwrap();
        assert_eq!(
            (line["from"].as_str(), line["content"].as_str()),
            (Some(&**from), Some(&**content))
        );
    }
    // ann's input ends: she leaves, carl hears it, her client exits 0.
    drop(ann_in);
    let (rest, status, _) = ann.wait_with_stdout();
    assert_eq!((rest.len(), status.code()), (0, Some(0)), "{rest:?}");
    assert!(slow.reply().contains("\"content\":\"ann left lobby\""));
    server.signal("INT");
    drop(slow);
    let (status, stderr) = server.wait();
    assert_eq!(status.code(), Some(0), "{stderr:?}");
}

#[test]
fn lan_chat_peers_hear_each_other_on_loopback_broadcast() {
    // A free UDP port for the broadcast (the peers share it).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to = format!("127.255.255.255:{port}");
    let start = |name: &str| {
        let (mut peer, stdin) =
            Child::spawn_with_stdin(Command::new(example("lan_chat")).args([name, &to]));
        assert_eq!(peer.stdout_line(), format!("{name} on {to}"));
        (peer, stdin)
    };
    let (mut ann, mut ann_in) = start("ann");
    let (mut bob, mut bob_in) = start("bob");
    ann_in.write_all(b"hello bob\n").unwrap();
    assert_eq!(untimed(&bob.stdout_line()), "[T ann]: hello bob");
    bob_in.write_all(b"hi ann\nhow are you\n").unwrap();
    assert_eq!(untimed(&ann.stdout_line()), "[T bob]: hi ann");
    assert_eq!(untimed(&ann.stdout_line()), "[T bob]: how are you");
    // Garbage on the port is counted, never shown.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_broadcast(true).unwrap();
    socket.send_to(b"not json", &to).unwrap();
    ann_in.write_all(b"bye\n").unwrap();
    assert_eq!(untimed(&bob.stdout_line()), "[T ann]: bye");
    drop((ann_in, bob_in));
    let (rest, status, stderr) = ann.wait_with_stdout();
    assert_eq!((rest.len(), status.code()), (0, Some(0)));
    assert_eq!(
        stderr,
        ["sent 2, received 2, gaps 0, duplicates 0, garbage 1, rate-limited 0"]
    );
    let (rest, status, stderr) = bob.wait_with_stdout();
    assert_eq!((rest.len(), status.code()), (0, Some(0)));
    assert_eq!(
        stderr,
        ["sent 2, received 2, gaps 0, duplicates 0, garbage 1, rate-limited 0"]
    );
}

#[test]
fn json_server_echoes_the_articles_message_and_names_errors() {
    let (mut server, addr) = server("json_server", &["127.0.0.1:0"], "listening on tcp ");
    let mut client = Client::connect(addr);
    // Fields in any order and spacing come back in the struct's order.
    let reply = client.ask(r#"{"time":"12:00", "content":"hi","from":"ann"}"#);
    assert_eq!(reply, r#"{"from":"ann","content":"hi","time":"12:00"}"#);
    assert_eq!(
        server.stdout_line(),
        r#"Received: Message { from: "ann", content: "hi", time: "12:00" }"#
    );
    assert_eq!(
        client.ask("{oops"),
        r#"{"error":"key must be a string at line 1 column 2"}"#
    );
    assert_eq!(
        client.ask(r#"{"from":"ann","content":"hi"}"#),
        r#"{"error":"missing field `time` at line 1 column 29"}"#
    );
    assert_eq!(
        client.ask(r#"{"from":"a","content":"b","time":"c","x":1}"#),
        r#"{"error":"unknown field `x`, expected one of `from`, `content`, `time` at line 1 column 40"}"#
    );
    // Two messages in one write: two replies.
    client.send("{\"from\":\"a\",\"content\":\"1\",\"time\":\"t\"}\n{\"from\":\"b\",\"content\":\"2\",\"time\":\"t\"}");
    assert_eq!(client.reply(), r#"{"from":"a","content":"1","time":"t"}"#);
    assert_eq!(client.reply(), r#"{"from":"b","content":"2","time":"t"}"#);
    // A line over 4096 bytes is refused before parsing, and closed.
    client.send(&"x".repeat(5000));
    assert_eq!(client.reply(), r#"{"error":"line too long","max":4096}"#);
    let mut rest = String::new();
    assert_eq!(client.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");
}

#[test]
fn concurrent_spreads_tcp_and_udp_echo_over_two_shards() {
    let mut child =
        Child::spawn(Command::new(example("concurrent")).args(["127.0.0.1:0", "127.0.0.1:0", "2"]));
    let line = child.stdout_line();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        (fields[..3].join(" "), fields[4], fields[6..].join(" ")),
        ("listening on tcp".into(), "udp", "with 2 shards".into()),
        "{line}"
    );
    let (tcp, udp): (SocketAddr, SocketAddr) =
        (fields[3].parse().unwrap(), fields[5].parse().unwrap());
    // 8 connections, each echoing 3 lines: 8 × 3 × 6 bytes.
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(tcp)).collect();
    for round in 0..3 {
        for (n, client) in clients.iter_mut().enumerate() {
            assert_eq!(
                client.ask(&format!("c{n} r{round}")),
                format!("c{n} r{round}")
            );
        }
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut echo = [0; 16];
    for n in 0..10 {
        socket
            .send_to(format!("datagram {n}").as_bytes(), udp)
            .unwrap();
        let got = socket.recv(&mut echo).unwrap();
        assert_eq!(&echo[..got], format!("datagram {n}").as_bytes());
    }
    drop(clients);
    child.signal("INT");
    // One line per shard; together they saw everything.
    let (mut conns, mut bytes, mut datagrams) = (0, 0, 0);
    for shard in 0..2 {
        let line = child.stdout_line();
        let numbers: Vec<u64> = line
            .strip_prefix(&format!("shard {shard}: "))
            .unwrap_or_else(|| panic!("{line}"))
            .split(", ")
            .map(|part| part.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            line.ends_with(" datagrams in") && line.contains(" connections, "),
            "{line}"
        );
        conns += numbers[0];
        bytes += numbers[1];
        datagrams += numbers[2];
    }
    assert_eq!((conns, bytes, datagrams), (8, 8 * 3 * 6, 10));
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "{stderr:?}");
}

#[test]
fn graceful_shutdown_flushes_sends_fin_and_exits_zero() {
    let (mut child, addr) = server("graceful_shutdown", &["127.0.0.1:0"], "listening on tcp ");
    let mut client = Client::connect(addr);
    assert_eq!(client.ask("hello"), "ok 6");
    child.signal("INT");
    child.stderr_until("shutting down: draining for up to 5s (signal again to stop now)");
    // The server's FIN: the end of the stream, after everything owed.
    let mut rest = String::new();
    assert_eq!(client.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    drop(client); // our FIN completes the close
    assert_eq!(child.stdout_line(), "closed (Shutdown)");
    assert_eq!(
        child.stdout_line(),
        "stopped: 1 connections closed by the shutdown"
    );
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "{stderr:?}");
}

#[test]
fn packet_ordering_shows_datagrams_in_sequence_and_skips_a_hole() {
    let (mut child, addr) = server("packet_ordering", &["127.0.0.1:0"], "listening on udp ");
    let (out, err, code) = client("packet_ordering", &["--send", &addr.to_string()], "");
    assert_eq!(
        (out, code),
        (vec!["sent 5 datagrams".to_string()], Some(0)),
        "{err:?}"
    );
    for (seq, text) in [(0, "bar"), (1, "bye"), (2, "baz"), (3, "foo"), (4, "hi")] {
        assert_eq!(
            child.stdout_line(),
            format!("In order: SEQ:{seq} MSG:{text}")
        );
    }
    // Another sender: a duplicate, garbage, one too far ahead, a hole.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = socket.local_addr().unwrap();
    for datagram in [
        "SEQ:0 MSG:a",
        "SEQ:2 MSG:c",
        "SEQ:2 MSG:c",
        "junk",
        "SEQ:65 MSG:far",
    ] {
        socket.send_to(datagram.as_bytes(), addr).unwrap();
    }
    let expected = [
        "In order: SEQ:0 MSG:a".to_string(),
        format!("dropped from {me}: SEQ:2 came late or twice"),
        format!("dropped from {me}: not SEQ:n MSG:text"),
        format!("dropped from {me}: SEQ:65 is over 64 ahead"),
        // 300 ms later, from the shard's timer wheel:
        "gap: SEQ:1 to SEQ:1 never came".into(),
        "In order: SEQ:2 MSG:c".into(),
    ];
    for line in expected {
        assert_eq!(child.stdout_line(), line);
    }
    socket.send_to(b"SEQ:1 MSG:late", addr).unwrap();
    assert_eq!(
        child.stdout_line(),
        format!("dropped from {me}: SEQ:1 came late or twice")
    );
}

#[test]
fn reliable_udp_delivers_everything_in_order_through_a_lossy_relay() {
    let (_server, addr) = server("reliable_udp", &["127.0.0.1:0"], "listening on udp ");
    // 10% of datagrams lost each way (plus duplicates and reordering).
    let relay = common::relay::Relay::start(addr, common::relay::Fates::lossy(0.1, 20));
    let (out, err, code) = client(
        "reliable_udp",
        &["--client", &relay.addr.to_string(), "300"],
        "",
    );
    assert_eq!((out.len(), code), (3, Some(0)), "{out:?} {err:?}");
    assert!(
        out[0].starts_with("stop-and-wait: 300 messages in "),
        "{out:?}"
    );
    assert!(out[1].starts_with("windowed: 300 messages in "), "{out:?}");
    let resent: u64 = out[2]
        .strip_prefix("retransmissions ")
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        resent > 0,
        "10% loss over 600 messages resends some: {out:?}"
    );
    assert!(relay.finish().dropped > 0);
}

#[test]
fn rtt_client_prints_the_articles_statistics_and_csv() {
    let mut server =
        Child::spawn(Command::new(example("concurrent")).args(["127.0.0.1:0", "127.0.0.1:0", "1"]));
    let line = server.stdout_line();
    let fields: Vec<&str> = line.split(' ').collect();
    let csv = std::env::temp_dir().join(format!("sockloop-rtt-{}.csv", std::process::id()));
    for (proto, addr, name) in [("tcp", fields[3], "TCP"), ("udp", fields[5], "UDP")] {
        let args = [
            "--proto",
            proto,
            "-n",
            "200",
            "--size",
            "32",
            "--addr",
            addr,
            "--csv",
            csv.to_str().unwrap(),
        ];
        let (out, err, code) = client("rtt_client", &args, "");
        assert_eq!((out.len(), code), (5, Some(0)), "{out:?} {err:?}");
        assert_eq!(out[0], format!("{name} RTT Benchmark:"));
        assert!(
            out[1].starts_with("Sent 200 messages of 32 bytes in "),
            "{out:?}"
        );
        assert!(
            out[2].starts_with("Throughput: ") && out[2].ends_with(" MB/sec"),
            "{out:?}"
        );
        let stats: Vec<f64> = out[3]
            .strip_prefix("RTT (min/avg/stddev/p50/p95/p99/max): ")
            .and_then(|rest| rest.strip_suffix(" us"))
            .unwrap()
            .split(" / ")
            .map(|v| v.parse().unwrap())
            .collect();
        let [min, avg, _, p50, p95, p99, max] = stats[..] else {
            panic!("{out:?}")
        };
        assert!(
            min <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max && min <= avg && avg <= max,
            "{out:?}"
        );
        assert_eq!(out[4], format!("RTTs written to {}", csv.display()));
        // The Go client's CSV: a header, then one RTT per message.
        let written = std::fs::read_to_string(&csv).unwrap();
        let rows: Vec<f64> = written
            .lines()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!((written.lines().next(), rows.len()), (Some("RTT_us"), 200));
        assert!(rows.iter().all(|&rtt| (min..=max).contains(&rtt)));
    }
    std::fs::remove_file(&csv).unwrap();
    // A flag it does not know: the usage, exit 2.
    let (out, err, code) = client("rtt_client", &["--proto", "sctp"], "");
    assert_eq!((out.len(), code), (0, Some(2)));
    assert!(
        err[0].starts_with("usage: rtt_client [--proto tcp|udp]"),
        "{err:?}"
    );
}

/// Bytes each way through the proxy.
const PROXIED: usize = 64 << 20;

/// Writes `PROXIED` bytes of the pattern `seed` names to `to`.
fn send_pattern(mut to: TcpStream, seed: u64) -> TcpStream {
    let mut rng = common::Rng::new(seed);
    for _ in 0..PROXIED / CHUNK {
        to.write_all(&rng.bytes(CHUNK)).unwrap();
    }
    to
}

const CHUNK: usize = 64 * 1024;

/// Reads `PROXIED` bytes from `from` after waiting `stall` (so the
/// proxy must hold the sender back), and checks each against the
/// pattern `seed` names; returns the socket for what follows.
fn expect_pattern(mut from: TcpStream, seed: u64, stall: std::time::Duration) -> TcpStream {
    std::thread::sleep(stall);
    let mut rng = common::Rng::new(seed);
    let (mut expected, mut buf) = (Vec::new(), vec![0; CHUNK]);
    let mut at = 0;
    while at < PROXIED {
        let n = from.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {at} of {PROXIED} bytes");
        let mut got = &buf[..n];
        while !got.is_empty() {
            if expected.is_empty() {
                expected = rng.bytes(CHUNK);
            }
            let k = got.len().min(expected.len());
            assert!(
                got[..k] == expected[..k],
                "bytes differ at offset about {at}"
            );
            expected.drain(..k);
            got = &got[k..];
            at += k;
        }
    }
    from
}

#[test]
fn proxy_copies_64_mib_each_way_byte_exact_with_backpressure() {
    use std::net::TcpListener;
    use std::time::Duration;

    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap().to_string();
    let mut child = Child::spawn(Command::new(example("proxy")).args(["127.0.0.1:0", &up_addr]));
    let line = child.stdout_line();
    let addr: SocketAddr = line
        .strip_prefix("listening tcp ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();

    let client = TcpStream::connect(addr).unwrap();
    // accept() has no timeout: a proxy that never connects fails the
    // accept below only through this thread's deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(upstream.accept().map(|(s, _)| s)));
    let far = rx
        .recv_timeout(TIMEOUT)
        .expect("the proxy connected upstream")
        .unwrap();
    for s in [&client, &far] {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
    }
    // Each reader starts late: 64 MiB is far past the proxy's 1 MiB
    // output limit, so everything arrives only if the proxy paused the
    // sending side rather than buffering.
    let stall = Duration::from_millis(500);
    let (client_in, far_in) = (client.try_clone().unwrap(), far.try_clone().unwrap());
    let threads = [
        std::thread::spawn(move || send_pattern(client, 1)),
        std::thread::spawn(move || expect_pattern(far_in, 1, stall)),
        std::thread::spawn(move || send_pattern(far, 2)),
        std::thread::spawn(move || expect_pattern(client_in, 2, stall)),
    ];
    let [client, mut far_in, far, mut client_in] =
        threads.map(|thread| thread.join().expect("a copy failed"));
    // One side ends: the proxy closes the other.
    drop((client, far));
    drop(client_in.shutdown(std::net::Shutdown::Both));
    let mut rest = Vec::new();
    assert_eq!(
        far_in.read_to_end(&mut rest).unwrap(),
        0,
        "EOF, nothing more"
    );
    let _ = client_in.read_to_end(&mut rest);
}
