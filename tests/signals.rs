//! `Handle::stop_on_signals`, through `sockloop serve`, which uses it: the
//! first SIGTERM drains, a second one stops a server still draining.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::child::{Child, TIMEOUT};

/// `sockloop serve` with one TCP echo listener, a drain timeout of an hour
/// (only the peers, or a second signal, can end the drain within the
/// test's bounds), and its address.
fn serve() -> (Child, SocketAddr) {
    let mut child = Child::spawn(Command::new(env!("CARGO_BIN_EXE_sockloop")).args([
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--drain-timeout",
        "3600s",
        "--log-level",
        "info",
    ]));
    let line = child.stdout_line();
    let addr = line
        .strip_prefix("listening tcp ")
        .and_then(|rest| rest.strip_suffix(" echo"))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (child, addr.parse().unwrap())
}

/// A connection that has had one echo, so the server holds it open.
fn echoed_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"hello").unwrap();
    let mut reply = [0; 5];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello");
    stream
}

const DRAINING: &str = "shutting down: draining for up to 3600s (signal again to stop now)";

#[test]
fn the_first_signal_drains_then_the_process_exits_0() {
    let (mut child, addr) = serve();
    let mut stream = echoed_connection(addr);
    child.signal("TERM");
    child.stderr_until(DRAINING);
    // Draining: the server flushed what it owed, then sent its FIN.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"");
    drop(stream); // the last connection closes: the drain is over
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr:?}");
    assert!(
        stderr.iter().any(|l| l.ends_with("] stopped")),
        "{stderr:?}"
    );
    assert!(
        !stderr.iter().any(|l| l.contains("stopping now")),
        "{stderr:?}"
    );
}

#[test]
fn a_second_signal_stops_a_draining_server() {
    let (mut child, addr) = serve();
    // Held open and never closed: the drain would last the full hour.
    let _held = echoed_connection(addr);
    child.signal("TERM");
    child.stderr_until(DRAINING);
    child.signal("TERM");
    child.stderr_until("stopping now");
    let (status, stderr) = child.wait(); // fails unless it exits within TIMEOUT
    assert_eq!(status.code(), Some(0), "stderr: {stderr:?}");
    assert!(
        stderr.iter().any(|l| l.ends_with("] stopped")),
        "{stderr:?}"
    );
}
