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
    let mut child = Child::spawn(Command::new(example("shared_state")).args(["127.0.0.1:0", "2"]));
    let line = child.stdout_line();
    let addr = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (child, addr.parse().unwrap())
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
