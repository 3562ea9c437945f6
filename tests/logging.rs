//! What the server logs about events a peer can repeat at will: each is
//! counted, and logged at most once per source per interval.
//!
//! A `log::Log` can be installed once per process, so these tests share
//! one capturing logger in their own test binary, and each looks only at
//! the lines about what it did.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, Once};

use common::tls::certificates;
use common::{connect, udp_client, wait_until, Running};
use log::{Level, LevelFilter, Log, Metadata, Record};
use sockloop::service::{DatagramContext, UdpService};
use sockloop::services::Echo;
use sockloop::{Server, ServerConfig};

/// Keeps every line sockloop logs at info or above.
struct Capture(Mutex<Vec<(Level, String)>>);

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("sockloop") && metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            self.0.lock().unwrap().push((record.level(), line));
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

/// The lines captured so far that contain `needle`, installing the logger
/// on first use.
fn lines_with(needle: &str) -> Vec<(Level, String)> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this binary");
        log::set_max_level(LevelFilter::Info);
    });
    let lines = CAPTURE.0.lock().unwrap();
    lines
        .iter()
        .filter(|(_, line)| line.contains(needle))
        .cloned()
        .collect()
}

fn one_shard() -> ServerConfig {
    ServerConfig {
        shards: 1, // the suppression is per shard
        sources: sockloop::limit::IpLimits::unlimited(),
        ..ServerConfig::default()
    }
}

/// Answers each datagram with it twice over: more than an unverified
/// sender may be sent. A datagram starting with `v` stands for a finished
/// handshake: the sender is verified first, so its reply goes out. The
/// reply is built in place (`send_with`), which the budget judges as it
/// does `send_to`.
struct Doubler;

impl UdpService for Doubler {
    fn on_datagram(&mut self, out: &mut DatagramContext<'_>, from: SocketAddr, data: &[u8]) {
        if data.starts_with(b"v") {
            out.sender_verified();
        }
        let built = out.send_with(2 * data.len(), |buf| {
            buf.extend_from_slice(data);
            buf.extend_from_slice(data);
            Some(from)
        });
        assert_eq!(built, Some(true), "built (then sent or dropped)");
    }
}

#[test]
fn amplification_drops_are_counted_and_logged_once_per_source() {
    lines_with(""); // the logger is in place before the server logs
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(one_shard())
        .udp(any, || Doubler)
        .build()
        .unwrap();
    let server = Running::start(server);
    let client = udp_client(server.udp[0]);
    let me = client.local_addr().unwrap();
    for _ in 0..5 {
        client.send(b"ping").unwrap();
    }
    wait_until("five drops", || {
        server.handle.stats().udp_dropped_amplification == 5
    });
    // The same sender, verified: its reply is not held back.
    client.send(b"verified").unwrap();
    let mut reply = [0; 64];
    let n = client.recv(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"verifiedverified");

    // The shard counts a send after it returns: the reply may come first.
    wait_until("the reply counted", || server.handle.stats().udp_out == 1);
    let stats = server.handle.stats();
    assert_eq!((stats.udp_dropped_amplification, stats.udp_out), (5, 1));
    let expected = format!(
        "127.0.0.1: udp reply of 8 bytes to {me} dropped (anti-amplification): \
         replies to an unverified sender may total at most the 4 bytes it sent; \
         a service that has proven the address lifts this with \
         DatagramContext::sender_verified"
    );
    assert_eq!(
        lines_with(&me.to_string()),
        [(Level::Info, expected)],
        "one line for five drops from one source"
    );
    server.shutdown().unwrap();
}

#[test]
fn tls_handshake_failures_are_counted_and_logged_once_per_source() {
    lines_with("");
    let (tls, _, _) = certificates();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(one_shard())
        .tls(any, tls, || Echo)
        .build()
        .unwrap();
    let server = Running::start(server);
    let mut peers = Vec::new();
    for round in 1..=2 {
        let mut plain = connect(server.tcp[0]);
        peers.push(plain.local_addr().unwrap());
        plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let _ = plain.read_to_end(&mut got); // the close may come as a reset
        wait_until("the failure", || server.handle.stats().tls_errors == round);
    }
    wait_until("both closed", || server.handle.stats().conns_open == 0);
    let stats = server.handle.stats();
    assert_eq!((stats.tls_errors, stats.closed_error), (2, 2));
    let expected = format!(
        "127.0.0.1: TLS handshake failed: received corrupt message of type \
         InvalidContentType (peer {}); connection closed",
        peers[0]
    );
    // The second failure, from the same source within 10 s, is held back.
    assert_eq!(lines_with("TLS"), [(Level::Info, expected)]);
    server.shutdown().unwrap();
}
