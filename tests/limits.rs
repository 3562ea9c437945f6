//! Protection over real sockets: per-source caps, connect and message
//! rates, strikes and bans. Each limit is crossed by one source while
//! another (a second loopback address) is served as if nothing happened.
//! Loopback is trusted by default, so these servers trust nothing, except
//! where a test is about trust.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{wait_until, Running};
use sockloop::limit::{IpLimits, Rate, Trusted};
use sockloop::services::JsonEcho;
use sockloop::{Server, ServerConfig};

const OFFENDER: &str = "127.0.0.1";
const BYSTANDER: &str = "127.0.0.2";

fn json_server(sources: IpLimits, message_rate: Option<Rate>) -> Running {
    json_server_with(ServerConfig {
        sources,
        trusted: Trusted::none(),
        message_rate,
        ..ServerConfig::default()
    })
}

/// The JSON service on 2 shards, with `config` otherwise.
fn json_server_with(config: ServerConfig) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 2,
        ..config
    };
    let server = Server::builder()
        .config(config)
        .tcp(any, || JsonEcho::new(1024))
        .build()
        .unwrap();
    Running::start(server)
}

/// One message there and back.
fn echo(conn: &mut BufReader<TcpStream>, n: u32) {
    let message = format!("{{\"n\":{n}}}\n");
    conn.get_mut().write_all(message.as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    assert_eq!(line, message);
}

/// Everything the server says before it closes.
fn refusal(mut conn: BufReader<TcpStream>) -> String {
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn the_per_ip_cap_refuses_the_next_connection_from_that_address_only() {
    let limits = IpLimits {
        max_conns_per_ip: 2,
        ..IpLimits::unlimited()
    };
    let server = json_server(limits, None);
    let addr = server.tcp[0];
    let mut held: Vec<_> = (0..2)
        .map(|_| common::connect_from(OFFENDER, addr))
        .collect();
    for (n, conn) in held.iter_mut().enumerate() {
        echo(conn, n as u32);
    }
    let third = common::connect_from(OFFENDER, addr);
    let want = "{\"error\":\"too many connections from your address\"}\n";
    assert_eq!(refusal(third), want);
    let mut bystander = common::connect_from(BYSTANDER, addr);
    echo(&mut bystander, 7);
    for (n, conn) in held.iter_mut().enumerate() {
        echo(conn, 10 + n as u32); // the held ones lost nothing
    }
    assert_eq!(server.handle.stats().refused_per_ip, 1);
    // One closes: its address may connect again.
    drop(held.pop());
    let handle = server.handle.clone();
    wait_until("a slot back", || handle.stats().conns_open == 2);
    echo(&mut common::connect_from(OFFENDER, addr), 20);
    drop((held, bystander));
    server.shutdown().unwrap();
}

#[test]
fn the_connect_rate_refuses_a_burst_beyond_it() {
    let limits = IpLimits {
        connect_rate: Some(Rate::per_minute(3)),
        ..IpLimits::unlimited()
    };
    let server = json_server(limits, None);
    let addr = server.tcp[0];
    let mut admitted: Vec<_> = (0..3)
        .map(|_| common::connect_from(OFFENDER, addr))
        .collect();
    for (n, conn) in admitted.iter_mut().enumerate() {
        echo(conn, n as u32);
    }
    let fourth = common::connect_from(OFFENDER, addr);
    let want = "{\"error\":\"too many connection attempts from your address\"}\n";
    assert_eq!(refusal(fourth), want);
    echo(&mut common::connect_from(BYSTANDER, addr), 9);
    assert_eq!(server.handle.stats().refused_connect_rate, 1);
    drop(admitted);
    server.shutdown().unwrap();
}

#[test]
fn strikes_ban_an_address_which_is_refused_until_the_ban_ends() {
    let ban_for = Duration::from_millis(600);
    let limits = IpLimits {
        ban_after: 3,
        ban_for,
        ..IpLimits::unlimited()
    };
    let server = json_server(limits, None);
    let addr = server.tcp[0];
    let mut bystander = common::connect_from(BYSTANDER, addr);
    let mut offender = common::connect_from(OFFENDER, addr);
    offender.get_mut().write_all(b"nope\nnope\n").unwrap();
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        offender.read_line(&mut line).unwrap();
        assert!(line.starts_with("{\"error\":\"invalid message\""), "{line}");
    }
    echo(&mut offender, 1); // two strikes: still served
    offender.get_mut().write_all(b"nope\n").unwrap();
    let banned_at = Instant::now();
    // The third strike bans the address and closes this connection, after
    // its error line.
    let rest = refusal(offender);
    assert!(rest.starts_with("{\"error\":\"invalid message\""), "{rest}");
    assert_eq!(rest.lines().count(), 1, "{rest}");
    let want = "{\"error\":\"your address is banned for a while\"}\n";
    assert_eq!(refusal(common::connect_from(OFFENDER, addr)), want);
    echo(&mut bystander, 2); // another address: untouched
                             // Not a moment before the ban ends... then served again.
    while banned_at.elapsed() < ban_for - Duration::from_millis(150) {
        assert_eq!(refusal(common::connect_from(OFFENDER, addr)), want);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(ban_for);
    echo(&mut common::connect_from(OFFENDER, addr), 3);
    let stats = server.handle.stats();
    assert!(stats.refused_banned >= 2, "{}", stats.refused_banned);
    drop(bystander);
    server.shutdown().unwrap();
}

#[test]
fn over_the_message_rate_messages_are_dropped_with_an_error_each() {
    let server = json_server(IpLimits::unlimited(), Some(Rate::per_minute(5)));
    let addr = server.tcp[0];
    let mut fast = common::connect_from(OFFENDER, addr);
    let burst: String = (0..8).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    fast.get_mut().write_all(burst.as_bytes()).unwrap();
    let mut lines = Vec::new();
    for _ in 0..8 {
        let mut line = String::new();
        fast.read_line(&mut line).unwrap();
        lines.push(line);
    }
    let echoed: Vec<String> = (0..5).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    assert_eq!(lines[..5], echoed[..]);
    let dropped = "{\"error\":\"over the message rate\"}\n";
    assert!(lines[5..].iter().all(|l| l == dropped), "{lines:?}");
    // Its own bucket: another connection is not slowed.
    echo(&mut common::connect_from(BYSTANDER, addr), 1);
    drop(fast);
    server.shutdown().unwrap();
}

/// Answers every datagram with one twice its size.
struct Amplifier;

impl sockloop::service::UdpService for Amplifier {
    fn on_datagram(
        &mut self,
        out: &mut sockloop::service::DatagramContext<'_>,
        from: SocketAddr,
        data: &[u8],
    ) {
        out.send_to(from, data); // as large: allowed
        out.send_to(from, &[data, data].concat()); // past what it sent: dropped
    }
}

fn udp_from(from: &str) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket
}

#[test]
fn replies_to_an_unproven_sender_are_never_larger_than_what_it_sent() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(ServerConfig {
            shards: 1,
            ..ServerConfig::default()
        })
        .udp(any, || Amplifier)
        .build()
        .unwrap();
    let server = Running::start(server);
    let client = udp_from(OFFENDER);
    client.send_to(b"tiny", server.udp[0]).unwrap();
    let mut buf = [0; 64];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"tiny");
    assert!(
        client.recv_from(&mut buf).is_err(),
        "the doubled reply must not come"
    );
    assert_eq!(server.handle.stats().udp_dropped_amplification, 1);
    server.shutdown().unwrap();
}

/// Echoes every datagram twice with `send_back`, optionally through the
/// offload (GRO) receive path, where there is no receive slot to send
/// from.
struct EchoTwice {
    offload: bool,
}

impl sockloop::service::UdpService for EchoTwice {
    fn on_datagram(
        &mut self,
        out: &mut sockloop::service::DatagramContext<'_>,
        _: SocketAddr,
        _: &[u8],
    ) {
        out.send_back(); // as large: allowed
        out.send_back(); // past what it sent: dropped
    }

    fn offload(&self) -> bool {
        self.offload
    }
}

#[test]
fn send_back_is_held_to_the_same_reply_budget() {
    for offload in [false, true] {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = Server::builder()
            .config(ServerConfig {
                shards: 1,
                ..ServerConfig::default()
            })
            .udp(any, move || EchoTwice { offload })
            .build()
            .unwrap();
        let server = Running::start(server);
        let client = udp_from(OFFENDER);
        for d in [&b"first"[..], b"second datagram"] {
            client.send_to(d, server.udp[0]).unwrap();
            let mut buf = [0; 64];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (d, server.udp[0]), "offload {offload}");
        }
        let mut buf = [0; 64];
        assert!(
            client.recv_from(&mut buf).is_err(),
            "no second copy (offload {offload})"
        );
        assert_eq!(server.handle.stats().udp_dropped_amplification, 2);
        server.shutdown().unwrap();
    }
}

#[test]
fn a_source_over_the_udp_rate_is_dropped_and_another_is_not() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 1,
        udp_rate: Some(Rate::per_minute(5)),
        trusted: "127.0.0.3".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .udp(any, || sockloop::services::Echo)
        .build()
        .unwrap();
    let server = Running::start(server);
    let (flood, bystander) = (udp_from(OFFENDER), udp_from(BYSTANDER));
    for n in 0..8u8 {
        flood.send_to(&[n], server.udp[0]).unwrap();
    }
    bystander.send_to(b"hi", server.udp[0]).unwrap();
    let mut buf = [0; 16];
    let got: Vec<u8> =
        std::iter::from_fn(|| flood.recv_from(&mut buf).ok().map(|_| buf[0])).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    let (n, _) = bystander.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hi");
    // A trusted source is not rate-limited at all.
    let trusted = udp_from("127.0.0.3");
    for n in 0..8u8 {
        trusted.send_to(&[n], server.udp[0]).unwrap();
    }
    let got: Vec<u8> =
        std::iter::from_fn(|| trusted.recv_from(&mut buf).ok().map(|_| buf[0])).collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7]);
    let stats = server.handle.stats();
    assert_eq!((stats.udp_dropped_rate, stats.udp_trusted), (3, 8));
    server.shutdown().unwrap();
}

#[test]
fn loopback_is_trusted_by_default_strikes_and_caps_do_not_apply() {
    let limits = IpLimits {
        max_conns_per_ip: 2,
        ban_after: 3,
        ..IpLimits::default()
    };
    let server = json_server_with(ServerConfig {
        sources: limits,
        ..ServerConfig::default() // trusting loopback
    });
    let addr = server.tcp[0];
    // Ten times the ban threshold of invalid lines, and more connections
    // than the per-source cap: every one is answered, none refused.
    let mut conns: Vec<_> = (0..5)
        .map(|_| common::connect_from(OFFENDER, addr))
        .collect();
    conns[0]
        .get_mut()
        .write_all(b"nope\n".repeat(30).as_slice())
        .unwrap();
    for _ in 0..30 {
        let mut line = String::new();
        conns[0].read_line(&mut line).unwrap();
        assert!(line.starts_with("{\"error\":\"invalid message\""), "{line}");
    }
    for (n, conn) in conns.iter_mut().enumerate() {
        echo(conn, n as u32);
    }
    echo(&mut common::connect_from(BYSTANDER, addr), 9);
    let stats = server.handle.stats();
    assert_eq!(
        (
            stats.strikes_trusted,
            stats.conns_trusted,
            stats.refused_banned
        ),
        (30, 6, 0)
    );
    assert_eq!(stats.refused_per_ip + stats.refused_connect_rate, 0);
    drop(conns);
    server.shutdown().unwrap();
}

#[test]
fn a_trusted_network_exempts_only_its_own_addresses() {
    let limits = IpLimits {
        max_conns_per_ip: 1,
        ..IpLimits::unlimited()
    };
    let server = json_server_with(ServerConfig {
        sources: limits,
        trusted: "127.0.0.2/32".parse().unwrap(),
        max_conns: Some(5),
        ..ServerConfig::default()
    });
    let addr = server.tcp[0];
    let mut trusted: Vec<_> = (0..3)
        .map(|_| common::connect_from(BYSTANDER, addr))
        .collect();
    for (n, conn) in trusted.iter_mut().enumerate() {
        echo(conn, n as u32);
    }
    let mut first = common::connect_from(OFFENDER, addr);
    echo(&mut first, 5);
    let want = "{\"error\":\"too many connections from your address\"}\n";
    assert_eq!(refusal(common::connect_from(OFFENDER, addr)), want);
    // The global cap is everyone's: the sixth connection finds it reached.
    trusted.push(common::connect_from(BYSTANDER, addr));
    echo(trusted.last_mut().unwrap(), 6);
    let full = "{\"error\":\"the server is full\"}\n";
    assert_eq!(refusal(common::connect_from(BYSTANDER, addr)), full);
    let stats = server.handle.stats();
    assert_eq!((stats.conns_trusted, stats.refused_per_ip), (4, 1));
    assert_eq!((stats.conns_open, stats.refused_server_full), (5, 1));
    drop((trusted, first));
    server.shutdown().unwrap();
}

#[test]
fn a_flood_of_banned_addresses_locks_out_neither_a_newcomer_nor_a_neighbour() {
    // A small table (64 sources, 16 bans) and a ban at the first strike:
    // 300 addresses each send one bad line and are banned. Bans are
    // bounded apart from the sources, so the table keeps room.
    let limits = IpLimits {
        ban_after: 1,
        max_sources: 64,
        max_bans: 16,
        ban_block_after: 0,
        ..IpLimits::unlimited()
    };
    let server = json_server(limits, None);
    let addr = server.tcp[0];
    let mut neighbour = common::connect_from(BYSTANDER, addr);
    echo(&mut neighbour, 0);
    for n in 0..300u32 {
        let from = format!("127.1.{}.{}", n / 200, n % 200 + 1);
        let mut attacker = common::connect_from(&from, addr);
        attacker.get_mut().write_all(b"nope\n").unwrap();
        let rest = refusal(attacker);
        assert!(rest.starts_with("{\"error\":\"invalid message\""), "{rest}");
    }
    echo(&mut neighbour, 1);
    // A newcomer is served, not told the server is full.
    echo(&mut common::connect_from("127.2.0.1", addr), 2);
    let stats = server.handle.stats();
    assert_eq!((stats.refused_server_full, stats.refused_busy), (0, 0));
    drop(neighbour);
    server.shutdown().unwrap();
}
