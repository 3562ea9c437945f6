//! The client commands (`chat`, `rudp`, `bench`) run as a user runs them:
//! their errors say what is wrong and what to do, with the right exit code.

mod common;

use std::io::{BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Output, Stdio};

use common::process::{next_line, Spawned};

/// `sockloop serve ARGS`, and the addresses of its listeners in the order
/// it printed them.
fn serve(args: &[&str], listeners: usize) -> (Spawned, Vec<String>) {
    let mut server =
        Spawned::sockloop(&[&["serve", "--shards", "1"], args].concat(), Stdio::null());
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let addrs = (0..listeners)
        .map(|_| {
            let line = next_line(&mut stdout);
            line.split_whitespace().nth(2).unwrap().to_owned()
        })
        .collect();
    (server, addrs)
}

/// Runs a client command to its end, with no input.
fn run(args: &[&str]) -> Output {
    Spawned::sockloop(args, Stdio::null()).finish()
}

/// Exit `code` and exactly `stderr`.
fn assert_fails(output: &Output, code: i32, stderr: &str) {
    let got = String::from_utf8_lossy(&output.stderr);
    assert_eq!((output.status.code(), got.as_ref()), (Some(code), stderr));
}

/// Exit `code`, and `error` on stderr after bench's one line naming the
/// limits it runs under.
fn assert_fails_after_limits(output: &Output, code: i32, error: &str) {
    let got = String::from_utf8_lossy(&output.stderr);
    let (limits, last) = got.split_once('\n').unwrap_or_default();
    assert!(limits.contains(" descriptor cap "), "{got}");
    assert_eq!((output.status.code(), last), (Some(code), error));
}

/// `localhost:PORT` for `127.0.0.1:PORT`: a host name that may resolve to
/// `::1` first, where nothing listens.
fn by_name(addr: &str) -> String {
    addr.replace("127.0.0.1", "localhost")
}

#[test]
fn chat_names_the_encoding_a_port_speaks_or_says_it_is_no_chat() {
    let listeners = ["--tcp", "127.0.0.1:0", "--tcp", "127.0.0.1:0=chat"];
    let (server, addrs) = serve(
        &[&listeners[..], &["--tcp", "127.0.0.1:0=chat-proto"]].concat(),
        3,
    );
    let (echo, json, proto) = (&addrs[0], &addrs[1], &addrs[2]);

    let output = run(&["chat", &by_name(json), "--proto", "--name", "ann"]);
    assert_fails(&output, 1, "error: this port speaks JSON; drop --proto\n");
    let output = run(&["chat", proto, "--name", "ann"]);
    assert_fails(
        &output,
        1,
        "error: this port speaks protobuf; add --proto\n",
    );
    let output = run(&["chat", echo, "--name", "ann"]);
    let silence =
        format!("error: no chat prompt arrived within 3 s: {echo} may not be a chat port\n");
    assert_fails(&output, 1, &silence);
    assert_eq!(server.terminate().status.code(), Some(0));
}

#[test]
fn chat_quotes_what_a_foreign_server_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let foreign = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .unwrap();
    });
    let output = run(&["chat", &addr, "--name", "ann"]);
    let quoted = r#"error: not a chat server: it sent "HTTP/1.1 400 Bad Request\r\n\r\n""#;
    assert_fails(&output, 1, &format!("{quoted}\n"));
    foreign.join().unwrap();
}

#[test]
fn chat_shows_the_refusal_and_says_when_the_server_hangs_up() {
    let limits = [
        "--max-conns-per-ip",
        "1",
        "--conn-rate",
        "0",
        "--trusted",
        "none",
    ];
    let (server, addrs) = serve(&[&["--tcp", "127.0.0.1:0=chat"], &limits[..]].concat(), 1);
    let mut ann = Spawned::sockloop(&["chat", &addrs[0], "--name", "ann"], Stdio::piped());
    let mut ann_out = BufReader::new(ann.stdout.take().unwrap());
    assert!(next_line(&mut ann_out).contains(" System]: Welcome, ann!"));

    // One connection per address: the second member is turned away.
    let bob = run(&["chat", &addrs[0], "--name", "bob"]);
    assert_eq!(
        String::from_utf8_lossy(&bob.stdout),
        "[System]: error: too many connections from your address; try again later\n"
    );
    assert_fails(&bob, 1, "error: server closed the connection\n");

    // The server shuts down under ann, who did not ask to leave.
    assert_eq!(server.terminate().status.code(), Some(0));
    let output = ann.finish();
    assert_fails(&output, 1, "error: server closed the connection\n");
}

#[test]
fn rudp_timeout_bounds_the_handshake_too() {
    // A UDP port that takes every datagram and answers none.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let output = run(&["rudp", &addr, "--timeout", "1s", "--count", "1"]);
    let error = format!(
        "error: no answer to the rudp handshake from {addr} within 1s: \
         is it a rudp port (serve --udp ADDR=rudp)?\n"
    );
    assert_fails(&output, 1, &error);
}

#[test]
fn bench_refuses_counts_of_zero_and_datagrams_too_large() {
    // Refused while reading the flags: nothing is sent anywhere.
    let addr = "127.0.0.1:9";
    for (flag, shown) in [("--depth", "--depth <D>"), ("--threads", "--threads <N>")] {
        let output = run(&["bench", "tcp", addr, flag, "0"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        let first = stderr.lines().next().unwrap();
        let error = format!("error: invalid value '0' for '{shown}': must be at least 1");
        assert_eq!(first, error);
    }
    let output = run(&["bench", "udp", addr, "--size", "70000"]);
    let error = "error: --size 70000 is over the largest UDP datagram (65,507 bytes)\n";
    assert_fails(&output, 2, error);
    let output = run(&["bench", "udp", addr, "--size", "8"]);
    assert_fails(&output, 2, "error: --size must be at least 16 bytes\n");
}

#[test]
fn chat_group_errors_name_the_group_the_interface_and_what_to_try() {
    // Both are refused before any socket exists: nothing is sent.
    let output = run(&["chat", "--group", "10.0.0.1:9002", "--name", "ann"]);
    let error = "error: group 10.0.0.1:9002: 10.0.0.1 is not an IPv4 multicast address \
                 (224.0.0.0 to 239.255.255.255); try 239.1.2.3:9002\n";
    assert_fails(&output, 2, error);
    let group = ["chat", "--group", "239.1.2.7:9002", "--name", "ann"];
    let output = run(&[&group[..], &["--interface", "224.0.0.1"]].concat());
    let error = "error: group 239.1.2.7:9002: interface 224.0.0.1 is not an address of a \
                 host's interface; try 127.0.0.1 (this machine) or this host's LAN address\n";
    assert_fails(&output, 2, error);
    let output = run(&["chat", "--broadcast", "nowhere", "--name", "ann"]);
    let error = "error: bad --broadcast \"nowhere\": expected [ADDR:]PORT\n";
    assert_fails(&output, 2, error);
}

#[test]
fn bench_says_how_many_connections_the_server_turned_away() {
    let limits = [
        "--max-conns-per-ip",
        "2",
        "--conn-rate",
        "0",
        "--trusted",
        "none",
    ];
    // One server each, so one run's connections never count in the other's.
    let (echo_server, echo) = serve(&[&["--tcp", "127.0.0.1:0"], &limits[..]].concat(), 1);
    let (json_server, json) = serve(&[&["--tcp", "127.0.0.1:0=json"], &limits[..]].concat(), 1);
    let (echo, json) = (&echo[0], &json[0]);
    let load = [
        "--conns",
        "4",
        "--threads",
        "1",
        "--duration",
        "300ms",
        "--warmup",
        "0",
    ];

    // Echo turns the other two away without a word. By host name.
    let output = run(&[&["bench", "tcp", &by_name(echo)], &load[..]].concat());
    let report = String::from_utf8_lossy(&output.stdout);
    let counts = "\ncorrupted 0, lost 0, closed at once 2, reset 0, connection errors 0\nrtt us: ";
    assert!(report.contains(counts), "{report}");
    let error = "error: 0 corrupted, 0 lost, 2 closed at once by the server, 0 reset, \
                 0 connection errors\n";
    assert_fails_after_limits(&output, 1, error);

    // json tells them why. (The two it admits answer no echo: not
    // counted here.)
    let output = run(&[&["bench", "tcp", json], &load[..], &["--json"]].concat());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["closed_at_once"], 2, "{summary}");
    let refusal = r#"{"error":"too many connections from your address"}"#;
    assert_eq!(summary["refusal"], refusal);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(echo_server.terminate().status.code(), Some(0));
    assert_eq!(json_server.terminate().status.code(), Some(0));
}
