//! `serve --trace`: the lines a scripted exchange prints, in order, and
//! the rate limit on them.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::time::Duration;

use common::process::{Served, TIMEOUT};

/// The trace lines of a finished server's stderr, without the log prefix
/// and the `shard N` field.
fn trace_lines(stderr: &[u8]) -> Vec<String> {
    let marker = "sockloop::trace] shard ";
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|line| line.split_once(marker))
        .map(|(_, rest)| rest.split_once(' ').expect("shard number").1.to_owned())
        .collect()
}

/// The lines a client traced as `who` (`rudp client`, `bench tcp`, ...),
/// without the log prefix and `who`.
fn client_trace(stderr: &[u8], who: &str) -> Vec<String> {
    let marker = format!("sockloop::trace] {who} ");
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|line| line.split_once(&marker).map(|(_, l)| l.to_owned()))
        .collect()
}

/// What happened in a line: its first word, or two for timers.
fn kind(line: &str) -> String {
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or_default();
    match first {
        "timer" => format!("timer {}", words.next().unwrap_or_default()),
        _ => first.to_owned(),
    }
}

/// One echo round trip, then our FIN, then the server's.
fn exchange(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let local = stream.local_addr().unwrap().to_string();
    stream.write_all(b"hello\n").unwrap();
    let mut echoed = [0; 6];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello\n");
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    local
}

#[test]
fn a_tcp_exchange_is_traced_event_by_event() {
    let served = Served::start(
        &["--tcp", "127.0.0.1:0=echo", "--shards", "1", "--trace"],
        1,
    );
    let local = exchange(served.addr(0));
    let output = served.stop();
    assert!(output.status.success());
    let lines = trace_lines(&output.stderr);
    let accept = lines
        .iter()
        .find(|line| line.starts_with("accept ") && line.ends_with(&format!("from {local}")))
        .unwrap_or_else(|| panic!("no accept line for {local}: {lines:#?}"));
    let token = accept.split_whitespace().nth(1).unwrap().to_owned();
    let ours: Vec<&String> = lines
        .iter()
        .filter(|line| {
            line.split_whitespace()
                .any(|word| word == token || word == local)
        })
        .collect();
    let kinds: Vec<String> = ours.iter().map(|line| kind(line)).collect();
    assert_eq!(
        kinds,
        [
            "accept",
            "timer armed",
            "ready",
            "lend",
            "read",
            "write",
            "return",
            "ready",
            "lend",
            "read",
            "return",
            "close",
            "timer cancelled",
        ],
        "{ours:#?}"
    );
    assert!(ours[4].ends_with("6B (recvfrom)"), "{}", ours[4]);
    assert!(ours[5].ends_with("6B (sendto), 0B buffered"), "{}", ours[5]);
    assert!(ours[9].ends_with("eof (recvfrom)"), "{}", ours[9]);
    assert!(ours[11].ends_with("PeerClosed"), "{}", ours[11]);
    assert!(lines.iter().any(|line| line.starts_with("turn ")));
}

#[test]
fn a_udp_batch_is_one_line_each_way() {
    let served = Served::start(
        &["--udp", "127.0.0.1:0=echo", "--shards", "1", "--trace"],
        1,
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.send_to(b"ping", served.addr(0)).unwrap();
    let mut buf = [0; 16];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    let output = served.stop();
    let lines = trace_lines(&output.stderr);
    let udp: Vec<&String> = lines.iter().filter(|l| l.starts_with("udp ")).collect();
    assert_eq!(
        udp,
        ["udp recvmmsg 1 datagrams", "udp sendmmsg 1 datagrams"],
        "{lines:#?}"
    );
}

#[test]
fn the_rate_limit_holds_and_counts_what_it_held_back() {
    const RATE: usize = 5;
    let served = Served::start(
        &[
            "--tcp",
            "127.0.0.1:0=echo",
            "--shards",
            "1",
            "--trace",
            "--trace-rate",
            "5",
        ],
        1,
    );
    for _ in 0..10 {
        exchange(served.addr(0));
    }
    // A turn after the window ended prints the count.
    std::thread::sleep(Duration::from_millis(1100));
    exchange(served.addr(0));
    let output = served.stop();
    let lines = trace_lines(&output.stderr);
    let mut held_lines = 0;
    let mut shown_in_window = 0;
    for line in &lines {
        if let Some(rest) = line.strip_prefix("held back ") {
            let n: u64 = rest.strip_suffix(" lines").unwrap().parse().unwrap();
            assert!(n > 0, "{line}");
            held_lines += 1;
            shown_in_window = 0;
        } else {
            shown_in_window += 1;
            assert!(shown_in_window <= RATE, "{lines:#?}");
        }
    }
    // Ten exchanges are well over 5 lines: the first window held some back.
    assert!(held_lines >= 1, "{lines:#?}");
}

#[test]
fn the_rudp_client_traces_its_datagrams() {
    let served = Served::start(&["--udp", "127.0.0.1:0=rudp", "--shards", "1"], 1);
    let client = common::process::Spawned::sockloop(
        &["rudp", served.addr(0), "--count", "3", "--trace"],
        std::process::Stdio::null(),
    );
    let output = client.finish();
    assert!(output.status.success(), "{output:?}");
    let traced = client_trace(&output.stderr, "rudp client");
    let lines: Vec<&str> = traced.iter().map(String::as_str).collect();
    // The hello goes out and the server's answer comes in before the
    // handshake ends.
    assert_eq!(kind(lines[0]), "write", "{lines:#?}");
    let connected = lines.iter().position(|l| l.starts_with("connected to "));
    assert!(connected.is_some_and(|at| at > 0), "{lines:#?}");
    let writes = lines.iter().filter(|l| l.starts_with("write ")).count();
    let reads = lines.iter().filter(|l| l.starts_with("read ")).count();
    // Three messages out and three echoes back at least, besides the
    // handshake and acknowledgements.
    assert!(writes >= 4 && reads >= 4, "{lines:#?}");
    served.stop();
}

#[test]
fn the_chat_client_traces_its_connect_reads_and_writes() {
    let served = Served::start(&["--tcp", "127.0.0.1:0=chat", "--shards", "1"], 1);
    let mut client = common::process::Spawned::sockloop(
        &["chat", served.addr(0), "--name", "ann", "--trace"],
        std::process::Stdio::piped(),
    );
    client.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let output = client.finish();
    assert!(output.status.success(), "{output:?}");
    let traced = client_trace(&output.stderr, "chat client");
    let lines: Vec<&str> = traced.iter().map(String::as_str).collect();
    let kinds: Vec<String> = lines.iter().map(|line| kind(line)).collect();
    // The prompt, the name ("ann\n"), the welcome; then the message
    // (with its time) and, after stdin's end, the server's EOF.
    assert_eq!(
        kinds,
        ["connect", "read", "write", "read", "message", "write", "read"],
        "{lines:#?}"
    );
    assert_eq!(lines[2], "write 4B (sendto)");
    assert!(lines[4].ends_with("from \"System\""), "{lines:#?}");
    assert_eq!(lines[6], "read 0B (recvfrom)");
    served.stop();
}

/// `sockloop bench KIND ARGS --trace --trace-rate RATE`: its trace lines,
/// without the log prefix and the leading `bench KIND `.
fn bench_traced(kind: &str, args: &[&str], rate: &str) -> Vec<String> {
    let traced = ["--trace", "--trace-rate", rate];
    let client = common::process::Spawned::sockloop(
        &[&["bench", kind], args, &traced].concat(),
        std::process::Stdio::null(),
    );
    let output = client.finish();
    assert!(output.status.success(), "{output:?}");
    client_trace(&output.stderr, &format!("bench {kind}"))
}

/// One connection, one 100-byte message in flight (closed loop), for
/// 500 ms: thousands of round trips, so the trace rate (lines in the first
/// second) keeps the output to the first few, which are always the same.
#[rustfmt::skip]
const ONE_IN_FLIGHT: [&str; 8] = [
    "--conns", "1", "--size", "100", "--duration", "500ms", "--warmup", "0",
];

/// The closed loop on connection #0 as traced: its connect, the first
/// message out, then per echo its read, its check (`checked` with `{k}`
/// for the echo's number) and the next message out.
fn assert_one_in_flight(lines: &[&str], addr: &str, checked: &str) {
    assert!(
        lines[0].starts_with("connect #0 127.0.0.1:")
            && lines[0].ends_with(&format!(" to {addr} (connect)")),
        "{lines:#?}"
    );
    assert_eq!(lines[1], "write #0 100B (sendto)", "{lines:#?}");
    let expected = ["read #0 100B (recvfrom)", checked, "write #0 100B (sendto)"];
    for (i, line) in lines[2..].iter().enumerate() {
        let expected = expected[i % 3].replace("{k}", &(i / 3).to_string());
        assert_eq!(*line, expected, "{lines:#?}");
    }
}

#[test]
fn the_tcp_bench_traces_its_connect_writes_reads_and_checks() {
    let served = Served::start(&["--tcp", "127.0.0.1:0=echo", "--shards", "1"], 1);
    let addr = served.addr(0).to_owned();
    let args = [&[addr.as_str()][..], &ONE_IN_FLIGHT].concat();
    let lines = bench_traced("tcp", &args, "11");
    served.stop();
    // The run ends within the first second: only its first 11 lines show
    // (or, after a stall, more after a `held back` line).
    assert!(
        lines.len() == 11 || lines[11].starts_with("held back "),
        "{lines:#?}"
    );
    let lines: Vec<&str> = lines[..11].iter().map(String::as_str).collect();
    assert_one_in_flight(&lines, &addr, "checked #0 1 echoes intact, 1 in flight");
}

#[test]
fn the_udp_bench_traces_a_batch_line_per_readiness() {
    let served = Served::start(&["--udp", "127.0.0.1:0=echo", "--shards", "1"], 1);
    let addr = served.addr(0).to_owned();
    // Open loop: 4 datagrams, one due every 50 ms (sent together if the
    // generator stalls), so each readiness usually drains one echo.
    #[rustfmt::skip]
    let args = [
        &addr, "--conns", "1", "--size", "100", "--rate", "20", "--duration", "200ms",
        "--warmup", "0",
    ];
    let lines = bench_traced("udp", &args, "1000");
    served.stop();
    assert!(
        lines[0].starts_with("connect #0 127.0.0.1:")
            && lines[0].ends_with(&format!(" to {addr} (connect)")),
        "{lines:#?}"
    );
    // Each batch line counts the datagrams read since the last one; each
    // read is an echo, checked on the next line, in the order sent.
    let (mut batches, mut read, mut writes, mut echoes) = (0, 0, 0, 0);
    for (i, line) in lines.iter().enumerate().skip(1) {
        match kind(line).as_str() {
            "write" => {
                // Two due together leave in one segmented send.
                let segmented = "write #0 100B (sendmsg UDP_SEGMENT)";
                assert!(
                    line == "write #0 100B (sendmmsg)" || line == segmented,
                    "{line}"
                );
                writes += 1;
            }
            "read" => {
                assert_eq!(line, "read #0 100B (recvmmsg)");
                let checked = format!("checked #0 echo {echoes} intact");
                assert_eq!(lines[i + 1], checked, "{lines:#?}");
                assert!(echoes < writes, "{lines:#?}");
                (read, echoes) = (read + 1, echoes + 1);
            }
            "checked" => {}
            "batch" => {
                let n = line
                    .strip_prefix("batch #0 ")
                    .and_then(|rest| rest.strip_suffix(" datagrams (recvmmsg until short)"));
                assert_eq!(n, Some(read.to_string().as_str()), "{lines:#?}");
                (batches, read) = (batches + 1, 0);
            }
            _ => panic!("{line} in {lines:#?}"),
        }
    }
    assert!(batches >= 1 && read == 0, "{lines:#?}");
    assert!(echoes >= 1 && echoes == writes, "{lines:#?}");
}

#[test]
fn the_hold_bench_traces_each_connect_and_ping() {
    let served = Served::start(&["--tcp", "127.0.0.1:0=echo", "--shards", "1"], 1);
    let addr = served.addr(0).to_owned();
    let lines = bench_traced(
        "hold",
        &[&addr, "--conns", "2", "--duration", "10ms"],
        "100",
    );
    served.stop();
    let kinds: Vec<String> = lines.iter().map(|line| kind(line)).collect();
    assert_eq!(
        kinds,
        ["connect", "connect", "ping", "ping", "ping", "ping"],
        "{lines:#?}"
    );
    // Connection #0's ends, as its pings name them.
    let ends = lines[0]
        .strip_prefix("connect #0 ")
        .and_then(|rest| rest.strip_suffix(" (connect)"))
        .unwrap();
    assert!(ends.ends_with(&format!(" to {addr}")), "{lines:#?}");
    let ping = format!("ping {ends} echoed (sendto 1B, recvfrom 1B)");
    assert_eq!([&lines[2], &lines[4]], [&ping, &ping], "{lines:#?}");
}
