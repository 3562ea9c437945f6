//! `sockloop serve` on its defaults, as a new user meets it: loopback is
//! trusted, one owner per port, limits that say what they mean, and the
//! project's own load tests passing against it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;

use common::external::free_port;
use common::process::{assert_usage_error, finish, serve, Served, BIN, TIMEOUT};

fn connect(addr: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    BufReader::new(stream)
}

fn tcp_echo(addr: &str) {
    let mut conn = connect(addr);
    conn.get_mut().write_all(b"still here\n").unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n");
}

fn udp_echo(addr: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.send_to(b"ping", addr).unwrap();
    let mut buf = [0; 8];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
}

#[test]
fn a_second_server_on_the_same_ports_exits_2_and_the_first_keeps_serving() {
    let first = Served::start(
        &[
            "--shards",
            "2",
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        3,
    );
    let (tcp, udp, metrics) = (first.addr(0), first.addr(1), first.addr(2));
    let any = "127.0.0.1:0";
    for (args, taken) in [
        (
            ["--tcp", tcp, "--udp", any],
            format!("cannot bind tcp {tcp}"),
        ),
        (
            ["--tcp", any, "--udp", udp],
            format!("cannot bind udp {udp}"),
        ),
        (
            ["--tcp", any, "--metrics", metrics],
            format!("cannot bind tcp {metrics}"),
        ),
    ] {
        let output = serve(&[&args[..], &["--shards", "2"]].concat());
        assert_usage_error(&output, &format!("{taken}: address in use"));
    }
    tcp_echo(tcp);
    udp_echo(udp);
    let output = first.stop();
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn two_listeners_on_one_port_exit_2_naming_both_flags() {
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let output = serve(&[
        "--tcp",
        &format!("{at}=echo"),
        "--tcp",
        &format!("{at}=json"),
    ]);
    assert_usage_error(
        &output,
        &format!("--tcp {at} and --tcp {at} would share a port: one owner per port"),
    );
    let output = serve(&["--tcp", &at, "--metrics", &at]);
    assert_usage_error(
        &output,
        &format!("--metrics {at} and --tcp {at} would share"),
    );
    let wildcard = format!("0.0.0.0:{port}");
    let output = serve(&[
        "--tcp", &wildcard, "--tls", &at, "--cert", "c", "--key", "k",
    ]);
    assert_usage_error(
        &output,
        &format!("--tls {at} and --tcp {wildcard} would share"),
    );
    let output = serve(&["--udp", &at, "--udp", &format!("{at}=rudp")]);
    assert_usage_error(&output, &format!("--udp {at} and --udp {at} would share"));
    // TCP and UDP on one port are two owners: allowed (the defaults do it).
}

#[test]
fn a_one_kib_frame_limit_refuses_a_two_kib_json_line_with_its_error() {
    let served = Served::start(&["--tcp", "127.0.0.1:0=json", "--max-frame", "1KiB"], 1);
    let mut conn = connect(served.addr(0));
    let line = format!("{{\"a\":\"{}\"}}\n", "x".repeat(2048));
    conn.get_mut().write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "{\"error\":\"line too long\",\"max\":1024}\n");
    // A line within the limit is served as ever.
    let mut conn = connect(served.addr(0));
    conn.get_mut().write_all(b"{\"b\":1,\"a\":2}\n").unwrap();
    let mut reply = String::new();
    conn.read_line(&mut reply).unwrap();
    assert_eq!(reply, "{\"a\":2,\"b\":1}\n");
    assert_eq!(served.stop().status.code(), Some(0));
}

#[test]
fn limits_refuse_what_they_cannot_mean_and_accept_the_rest() {
    let output = serve(&["--tcp", "127.0.0.1:0", "--max-frame", "100"]);
    assert_usage_error(
        &output,
        "--max-frame 100B is below the smallest frame, 256B: a frame limit cannot be turned off",
    );
    let output = serve(&["--tcp", "127.0.0.1:0", "--stats-interval", "1ms"]);
    assert_usage_error(
        &output,
        "--stats-interval 1ms would flood the log: use at least 100ms, or 0 for never",
    );
    // A large frame limit raises the default hard output limit to fit, and
    // 0 on a cap flag means no cap.
    let served = Served::start(
        &[
            "--tcp",
            "127.0.0.1:0",
            "--max-frame",
            "1MiB",
            "--max-conns",
            "0",
        ],
        1,
    );
    tcp_echo(served.addr(0));
    tcp_echo(served.addr(0));
    assert_eq!(served.stop().status.code(), Some(0));
}

/// Sends `lines` invalid JSON lines on one connection and reads until the
/// server closes it or every error line came: how many came, and whether
/// it was closed.
fn typos(addr: &str, lines: usize) -> (usize, bool) {
    let mut conn = connect(addr);
    conn.get_mut()
        .write_all("nope\n".repeat(lines).as_bytes())
        .unwrap();
    let mut errors = 0;
    for _ in 0..lines {
        let mut line = String::new();
        if conn.read_line(&mut line).unwrap() == 0 {
            return (errors, true);
        }
        assert!(line.starts_with("{\"error\":\"invalid message\""), "{line}");
        errors += 1;
    }
    (errors, false)
}

#[test]
fn thirty_typos_from_loopback_do_not_ban_it_unless_trust_is_off() {
    let served = Served::start(&["--tcp", "127.0.0.1:0=json", "--tcp", "127.0.0.1:0"], 2);
    assert_eq!(typos(served.addr(0), 30), (30, false));
    tcp_echo(served.addr(1));
    let output = served.stop();
    assert_eq!(output.status.code(), Some(0));

    let served = Served::start(
        &[
            "--tcp",
            "127.0.0.1:0=json",
            "--tcp",
            "127.0.0.1:0",
            "--trusted",
            "none",
        ],
        2,
    );
    // The tenth strike (--ban-after 10) bans and closes, after its error.
    assert_eq!(typos(served.addr(0), 30), (10, true));
    let mut refused = connect(served.addr(1));
    let mut rest = Vec::new();
    refused.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b""); // echo has no refusal line
    let output = served.stop();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "127.0.0.1: banned for 60s after 10 strikes within 60s, the last: invalid JSON \
             message (--ban-after, --strike-window, --ban-for, or --trusted to exempt a network)"
        ),
        "{stderr}"
    );
}

/// Runs `sockloop bench ARGS`; its exit code is 0 only when nothing was
/// lost, refused or corrupted.
fn bench(args: &[&str]) {
    let child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish(child);
    assert_eq!(
        output.status.code(),
        Some(0),
        "bench {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_projects_own_load_tests_pass_against_the_default_limits() {
    let served = Served::start(&["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"], 2);
    let (tcp, udp) = (served.addr(0), served.addr(1));
    let short = ["--duration", "1s", "--warmup", "200ms"];
    bench(&[&["tcp", tcp, "--conns", "500"], &short[..]].concat());
    bench(&[&["udp", udp, "--conns", "8", "--depth", "4"], &short[..]].concat());
    bench(&["hold", tcp, "--conns", "5000", "--duration", "1s"]);
    assert_eq!(served.stop().status.code(), Some(0));
}

#[test]
fn a_refused_or_rate_limited_source_is_logged_with_the_limit_and_its_flag() {
    let served = Served::start(
        &[
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--trusted",
            "none",
            "--max-conns-per-ip",
            "1",
            "--udp-rate",
            "2/m",
            "--shards",
            "1",
        ],
        2,
    );
    let (tcp, udp) = (served.addr(0).to_owned(), served.addr(1).to_owned());
    let (tcp, udp) = (tcp.as_str(), udp.as_str());
    let mut held = connect(tcp);
    held.get_mut().write_all(b"x\n").unwrap();
    let mut line = String::new();
    held.read_line(&mut line).unwrap();
    let mut refused = Vec::new();
    connect(tcp).read_to_end(&mut refused).unwrap();
    assert_eq!(refused, b"");
    // Another loopback address, so the TCP line does not hold this one back.
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    for _ in 0..3 {
        socket.send_to(b"d", udp).unwrap();
    }
    let mut buf = [0; 4];
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    for _ in 0..2 {
        assert_eq!(socket.recv_from(&mut buf).unwrap().0, 1);
    }
    // Datagrams are handled in order on the one socket: this echo means
    // the third was judged.
    udp_echo(udp);
    drop(held);
    let output = served.stop();
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "127.0.0.1: connection refused: 1 connections from this address already \
         (--max-conns-per-ip, or --trusted to exempt a network)",
        "127.0.0.2: datagrams over 2/m from this address, dropped (--udp-rate, or --trusted \
         to exempt a network)",
        // UDP sockets ask for 4 MiB of receive buffer and say what they got.
        &format!("udp {udp}: receive buffer 4MiB asked, the kernel reports "),
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in {stderr}");
    }
}
