//! The article's reliable UDP (4.3), done as a protocol: a reliable echo
//! server, and a client that measures stop-and-wait against a window.
//!
//! ```sh
//! cargo run --example reliable_udp                               # echo on udp 127.0.0.1:9501
//! cargo run --example reliable_udp -- --client 127.0.0.1:9501 1000
//! ```
//!
//! The server prints `listening on udp ADDR`. The client sends COUNT
//! (default 1000) numbered 64-byte messages twice, checks every echo and
//! its order, and prints
//!
//! ```text
//! stop-and-wait: 1000 messages in 96.1ms, 10406 msg/s
//! windowed: 1000 messages in 12.3ms, 81300 msg/s
//! retransmissions 0, smoothed rtt 75µs
//! ```
//!
//! (figures vary by machine and load).
//!
//! # Stop-and-wait, and what a window changes
//!
//! The article's client sends `SEQ:n`, waits up to 2 s for `ACK:n`, and
//! moves on even when none came: a lost packet is reported, never resent,
//! and one packet is in flight at a time, so throughput is at most one
//! message per round trip. sockloop's `rudp` keeps up to 128 packets in
//! flight, acknowledges cumulatively with 64 selective-ack bits, resends
//! on a timeout computed from measured round trips (RFC 6298) or on three
//! later acks, and backs off under loss (AIMD). The client below runs the
//! same protocol both ways; the ratio of the two lines is the window's
//! gain.
//!
//! On the server, the protocol is a sans-IO state machine (`rudp::
//! Endpoint`): the shard hands it each datagram with the time, and asks it
//! what to send and when to wake; `RudpEcho` is that glue. A forged
//! source gets a cookie no larger than its hello, and no state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sockloop::client::rudp::Client;
use sockloop::rudp::Config;
use sockloop::services::rudp_echo::{random_secret, RudpEcho};
use sockloop::Server;

const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--client") {
        let to: SocketAddr = args.get(1).map_or("127.0.0.1:9501", |a| a).parse()?;
        let count: u32 = args.get(2).map_or("1000", |a| a).parse()?;
        return client(to, count);
    }
    let addr: SocketAddr = args.first().map_or("127.0.0.1:9501", |a| a).parse()?;
    let secret = random_secret()?; // keys the handshake's cookies
    let server = Server::builder()
        .udp(addr, move || RudpEcho::new(Config::default(), 64, &secret))
        .build()?;
    println!("listening on udp {}", server.udp_addrs()[0]);
    Ok(server.run()?)
}

fn client(to: SocketAddr, count: u32) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = Client::connect(to, Config::default(), TIMEOUT)?; // the handshake
                                                                     // Stop-and-wait: one message in flight.
    let start = Instant::now();
    for n in 0..count {
        conn.send(&message(n))?;
        expect(&mut conn, n)?;
    }
    report("stop-and-wait", count, start.elapsed());
    // Windowed: send while the window has room, take an echo when not.
    // (Sending all first would deadlock: echoes not taken close our
    // receive window, the server holds them, and its window closes too.)
    let start = Instant::now();
    let (mut sent, mut echoed) = (0, 0);
    while echoed < count {
        while sent < count && conn.try_send(&message(count + sent))? {
            sent += 1;
        }
        expect(&mut conn, count + echoed)?;
        echoed += 1;
    }
    report("windowed", count, start.elapsed());
    let stats = conn.stats();
    let srtt = conn.rtt().srtt().unwrap_or_default();
    println!(
        "retransmissions {}, smoothed rtt {srtt:.1?}",
        stats.retransmissions
    );
    Ok(conn.close()?) // tells the server, so it frees the peer at once
}

/// 64 bytes: the number, then padding.
fn message(n: u32) -> Vec<u8> {
    format!("{n:<64}").into_bytes()
}

/// The next echo must be message `n`: reliable and in order.
fn expect(conn: &mut Client, n: u32) -> Result<(), Box<dyn std::error::Error>> {
    match conn.recv(TIMEOUT)? {
        Some(echo) if echo == message(n) => Ok(()),
        Some(echo) => Err(format!("echo {n} was {:?}", String::from_utf8_lossy(&echo)).into()),
        None => Err(format!("no echo of message {n} within {TIMEOUT:?}").into()),
    }
}

fn report(how: &str, count: u32, took: Duration) {
    let rate = f64::from(count) / took.as_secs_f64();
    println!("{how}: {count} messages in {took:.1?}, {rate:.0} msg/s");
}
