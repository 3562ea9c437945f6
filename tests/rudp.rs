//! rudp over real sockets: the echo service on the event loop, the
//! blocking client, and a lossy relay between them.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::child::Child;
use common::process::BIN;
use common::relay::{Fates, Relay};
use common::Running;
use sockloop::client::rudp::Client;
use sockloop::net::gso::{OffloadMode, OFFLOAD_ENV};
use sockloop::rudp::{Config, Mode, Packet, Seq};
use sockloop::services::rudp_echo::{random_secret, RudpEcho};
use sockloop::{Server, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(20);

fn rudp_server(max_peers: usize) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let secret = random_secret().unwrap();
    let mut config = ServerConfig {
        shards: 1,
        ..ServerConfig::default()
    };
    // Room for a full window of 1200-byte datagrams.
    config.socket.recv_buffer = Some(1 << 20);
    let server = Server::builder()
        .config(config)
        .udp(any, move || {
            RudpEcho::new(Config::default(), max_peers, &secret)
        })
        .build()
        .unwrap();
    Running::start(server)
}

/// Message `n`: its number, then a pattern, `len` bytes in all.
fn message(n: u32, len: usize) -> Vec<u8> {
    let mut bytes = vec![(n % 251) as u8; len.max(4)];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes
}

/// Sends `count` messages (sizes cycling through 1, 2 and 3 fragments)
/// with up to the window in flight, and checks every echo, in order.
fn echo_all(client: &mut Client, count: u32) {
    let sizes = [100, 2000, 3000];
    let mut next = 0;
    for expected in 0..count {
        while next < count
            && client
                .try_send(&message(next, sizes[next as usize % 3]))
                .unwrap()
        {
            next += 1;
        }
        let echo = client
            .recv(TIMEOUT)
            .unwrap()
            .expect("an echo within the timeout");
        assert_eq!(
            echo,
            message(expected, sizes[expected as usize % 3]),
            "echo {expected}"
        );
    }
}

/// Sends `count` messages of one full datagram each (1200 bytes), queued
/// while the window has room so they leave in runs, and checks every
/// echo byte for byte, in order.
fn bulk_echo(client: &mut Client, count: u32) {
    let mut next = 0;
    for expected in 0..count {
        while next < count && client.try_queue(&message(next, 1200)).unwrap() {
            next += 1;
        }
        let echo = client
            .recv(TIMEOUT)
            .unwrap()
            .expect("an echo within the timeout");
        assert_eq!(echo, message(expected, 1200), "echo {expected}");
    }
}

#[test]
fn queued_buffers_are_handed_back_when_the_window_is_full_and_echoed_intact() {
    let server = rudp_server(16);
    let mut client = Client::connect(server.udp[0], Config::default(), TIMEOUT).unwrap();
    // The first 128 fill the window; the next is handed back as it was.
    for n in 0..128 {
        assert_eq!(client.try_queue_vec(message(n, 1200)).unwrap(), None);
    }
    let refused = client.try_queue_vec(message(128, 1200)).unwrap();
    assert_eq!(refused, Some(message(128, 1200)));
    // Each echo's buffer, rewritten, carries a later message.
    let (mut next, mut refused) = (128, refused);
    for expected in 0..300 {
        let echo = client
            .recv(TIMEOUT)
            .unwrap()
            .expect("an echo within the timeout");
        assert_eq!(echo, message(expected, 1200), "echo {expected}");
        let mut spare = Some(echo);
        while next < 300 {
            let buffer = refused.take().unwrap_or_else(|| match spare.take() {
                Some(mut buffer) => {
                    buffer.clear();
                    buffer.extend_from_slice(&message(next, 1200));
                    buffer
                }
                None => message(next, 1200),
            });
            match client.try_queue_vec(buffer).unwrap() {
                Some(back) => {
                    refused = Some(back);
                    break;
                }
                None => next += 1,
            }
        }
    }
    client.close().unwrap();
}

#[test]
fn a_caller_slow_with_its_events_still_acknowledges_in_time() {
    // 16 echoes arrive together; the caller spends 20 ms on each (320 ms,
    // past the server's least retransmission timeout of 100 ms) while
    // their acknowledgement waits for it to take them all: the server
    // must not take the silence for a loss and send the flight again.
    let server = rudp_server(16);
    let mut client = Client::connect(server.udp[0], Config::default(), TIMEOUT).unwrap();
    for n in 0..16 {
        assert!(client.try_queue(&message(n, 1200)).unwrap());
    }
    for expected in 0..16 {
        let echo = client
            .recv(TIMEOUT)
            .unwrap()
            .expect("an echo within the timeout");
        assert_eq!(echo, message(expected, 1200), "echo {expected}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Take whatever the server sent again meanwhile.
    assert_eq!(client.recv(Duration::from_millis(300)).unwrap(), None);
    let duplicates = client.stats().receive.duplicates;
    // A tail loss probe (one packet, after 2 RTTs) may come before the
    // first acknowledgement; a timeout would resend the whole flight.
    assert!(duplicates <= 2, "{duplicates} packets received twice");
    client.close().unwrap();
}

#[test]
fn a_bulk_transfer_goes_segmented_and_coalesced_both_ways() {
    let server = rudp_server(16);
    let config = Config::default();
    let mut client =
        Client::connect_with(server.udp[0], config, TIMEOUT, OffloadMode::Auto).unwrap();
    if client.offload() != (true, true) {
        eprintln!("skipping: this kernel has no UDP_SEGMENT and UDP_GRO");
        return;
    }
    bulk_echo(&mut client, 5000);
    assert_eq!(client.offload(), (true, true), "nothing was refused");
    // GRO only glues what was sent segmented: the echo's runs.
    assert!(client.coalesced_receives() > 0, "no echoes came in runs");
    assert_eq!(client.stats().timeouts, 0);
    client.close().unwrap();
}

#[test]
fn a_refused_offload_falls_back_on_both_ends_and_loses_nothing() {
    let mut serve = Child::spawn(
        Command::new(BIN)
            .env(OFFLOAD_ENV, "refuse")
            .args(["serve", "--udp", "127.0.0.1:0=rudp", "--udp-rate", "0"])
            .args(["--recv-buffer", "1MiB", "--log-level", "warn"]),
    );
    let line = serve.stdout_line();
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let config = Config::default();
    let mut client = Client::connect_with(addr, config, TIMEOUT, OffloadMode::Refuse).unwrap();
    assert_eq!(
        client.offload(),
        (true, false),
        "GRO refused, GSO not tried yet"
    );
    bulk_echo(&mut client, 3000);
    assert_eq!(
        client.offload(),
        (false, false),
        "the first run was refused"
    );
    assert_eq!(client.coalesced_receives(), 0);
    client.close().unwrap();
    serve.stderr_until("refused a segmented UDP send");
    serve.signal("TERM");
    assert!(serve.wait().0.success());
}

#[test]
fn ten_thousand_messages_through_a_lossy_relay_arrive_in_order() {
    let server = rudp_server(16);
    let relay = Relay::start(server.udp[0], Fates::lossy(0.1, 7));
    let mut client = Client::connect(relay.addr, Config::default(), TIMEOUT).unwrap();
    echo_all(&mut client, 10_000);
    let stats = client.stats();
    client.close().unwrap();
    let relay = relay.finish();
    assert!(
        relay.dropped > 1000,
        "the relay should have been lossy: {relay:?}"
    );
    assert!(relay.reordered > 100 && relay.duplicated > 100, "{relay:?}");
    assert!(
        stats.retransmissions > 0,
        "the client must have resent its losses"
    );
    drop(server);
}

#[test]
fn unreliable_mode_keeps_order_through_loss() {
    let server = rudp_server(16);
    let relay = Relay::start(server.udp[0], Fates::lossy(0.05, 8));
    let config = Config {
        mode: Mode::Unreliable,
        ..Config::default()
    };
    let mut client = Client::connect(relay.addr, config, TIMEOUT).unwrap();
    let mut last = None;
    let mut got = 0;
    for n in 0..2000u32 {
        client.send(&message(n, 8)).unwrap();
        while let Some(echo) = client.recv(Duration::ZERO).unwrap() {
            let n = u32::from_be_bytes(echo[..4].try_into().unwrap());
            assert!(last.is_none_or(|last| n > last), "{n} after {last:?}");
            last = Some(n);
            got += 1;
        }
    }
    while let Some(echo) = client.recv(Duration::from_millis(500)).unwrap() {
        let n = u32::from_be_bytes(echo[..4].try_into().unwrap());
        assert!(last.is_none_or(|last| n > last), "{n} after {last:?}");
        last = Some(n);
        got += 1;
    }
    assert_eq!(
        client.stats().retransmissions,
        0,
        "unreliable: nothing resent"
    );
    // Each echo crosses the 5% relay twice (and may be skipped behind a gap).
    assert!((1500..2000).contains(&got), "{got} of 2000");
    drop(relay);
    drop(server);
}

#[test]
fn a_spoofed_hello_gets_a_smaller_cookie_and_no_state() {
    let server = rudp_server(16);
    let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
    spoofer.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut hello = Vec::new();
    Packet::Hello {
        mode: Mode::Reliable,
        isn: Seq(1),
        cookie: None,
    }
    .encode(&mut hello);
    spoofer.send_to(&hello, server.udp[0]).unwrap();
    let mut reply = [0; 2048];
    let (n, _) = spoofer.recv_from(&mut reply).unwrap();
    assert!(
        n < hello.len(),
        "a {n}-byte reply to a {}-byte hello",
        hello.len()
    );
    assert!(matches!(
        Packet::parse(&reply[..n], 1200),
        Ok(Packet::Cookie(_))
    ));
    // A data packet from an address with no connection draws nothing.
    let mut data = Vec::new();
    Packet::Data {
        seq: Seq(1),
        fragment: 0,
        fragments: 1,
        payload: b"hi",
    }
    .encode(&mut data);
    spoofer.send_to(&data, server.udp[0]).unwrap();
    spoofer
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        spoofer.recv_from(&mut reply).is_err(),
        "no reply to an unknown peer"
    );
    drop(server);
}

#[test]
fn the_peer_cap_refuses_the_next_client() {
    let server = rudp_server(2);
    let first = Client::connect(server.udp[0], Config::default(), TIMEOUT).unwrap();
    let second = Client::connect(server.udp[0], Config::default(), TIMEOUT).unwrap();
    let third = Client::connect(server.udp[0], Config::default(), TIMEOUT);
    let error = third.unwrap_err();
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
    drop((first, second));
    drop(server);
}

#[test]
fn shutdown_says_goodbye_to_every_peer() {
    let server = rudp_server(16);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client::connect(server.udp[0], Config::default(), TIMEOUT).unwrap())
        .collect();
    server.shutdown().unwrap();
    for client in &mut clients {
        let error = client.recv(TIMEOUT).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionAborted);
        assert_eq!(error.to_string(), "the peer closed the connection");
    }
}
