//! The PROXY protocol on listeners (`ServerConfig::proxy_from`), in
//! process: the client address a header names is what the service and
//! the per-source limits see; headers from other peers, malformed ones
//! and missing ones close the connection and are counted.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{wait_until, Running};
use sockloop::limit::{IpLimits, Trusted};
use sockloop::net::proxy_header::{encode_v1, encode_v2, ProxyHeader};
use sockloop::service::{ConnContext, TcpService};
use sockloop::{Server, ServerConfig};

/// Greets each connection with `peer ADDR`, then echoes.
struct Peer;

impl TcpService for Peer {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        let line = format!("peer {}\n", conn.peer_addr());
        conn.send(line.as_bytes());
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

/// Headers taken from 127.0.0.1 only; one connection per client address.
fn server(frame_timeout: Duration) -> Running {
    let config = ServerConfig {
        shards: 1,
        trusted: Trusted::none(),
        proxy_from: "127.0.0.1/32".parse().unwrap(),
        frame_timeout: Some(frame_timeout),
        sources: IpLimits {
            max_conns_per_ip: 1,
            connect_rate: None,
            ..IpLimits::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp("127.0.0.1:0".parse().unwrap(), || Peer)
        .build()
        .unwrap();
    Running::start(server)
}

fn v2(source: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let header = ProxyHeader::Proxied {
        source: source.parse().unwrap(),
        destination: "198.51.100.7:443".parse().unwrap(),
    };
    encode_v2(&header, &mut bytes);
    bytes
}

fn line(client: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    client.read_line(&mut line).unwrap();
    line
}

/// The server closed the connection (EOF or reset), with nothing sent.
fn assert_closed(client: &mut BufReader<TcpStream>) {
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

#[test]
fn the_client_a_header_names_is_the_peer_and_the_limits_source() {
    let server = server(Duration::from_secs(10));
    let addr = server.tcp[0];
    // A header and data in one write, a header in pieces: both served.
    let mut first = common::connect_from("127.0.0.1", addr);
    let mut bytes = v2("192.0.2.1:1000");
    bytes.extend_from_slice(b"hello\n");
    first.get_mut().write_all(&bytes).unwrap();
    assert_eq!(line(&mut first), "peer 192.0.2.1:1000\n");
    assert_eq!(line(&mut first), "hello\n");

    let mut other = common::connect_from("127.0.0.1", addr);
    let mut header = Vec::new();
    let v6 = ProxyHeader::Proxied {
        source: "[2001:db8::5]:7".parse().unwrap(),
        destination: "[2001:db8::1]:443".parse().unwrap(),
    };
    encode_v1(&v6, &mut header);
    for piece in header.chunks(5) {
        other.get_mut().write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(line(&mut other), "peer [2001:db8::5]:7\n");
    other.get_mut().write_all(b"six\n").unwrap();
    assert_eq!(line(&mut other), "six\n");

    // The same client again: over its cap of one, though the proxy's
    // own address has two connections open already.
    let mut again = common::connect_from("127.0.0.1", addr);
    again.get_mut().write_all(&v2("192.0.2.1:1001")).unwrap();
    assert_closed(&mut again);
    let stats = server.handle.stats();
    assert_eq!((stats.refused_per_ip, stats.proxy_headers), (1, 3));
    drop(again); // ends the refused connection's linger
    wait_until("the refused one gone", || {
        server.handle.stats().conns_open == 2
    });

    // A LOCAL header (a health check) keeps the proxy's address.
    let mut local = common::connect_from("127.0.0.1", addr);
    let mut bytes = Vec::new();
    encode_v2(&ProxyHeader::Local, &mut bytes);
    local.get_mut().write_all(&bytes).unwrap();
    let greeting = line(&mut local);
    assert!(greeting.starts_with("peer 127.0.0.1:"), "{greeting}");

    // Closing gives each client's count back (a connection's pass is
    // released against the address the header named): both clients,
    // at their cap of one until now, are served again.
    drop((first, other));
    wait_until("the two clients gone", || {
        server.handle.stats().conns_open == 1
    });
    let mut first = common::connect_from("127.0.0.1", addr);
    first.get_mut().write_all(&v2("192.0.2.1:1002")).unwrap();
    assert_eq!(line(&mut first), "peer 192.0.2.1:1002\n");
    let mut other = common::connect_from("127.0.0.1", addr);
    let mut header = Vec::new();
    let v6 = ProxyHeader::Proxied {
        source: "[2001:db8::5]:8".parse().unwrap(),
        destination: "[2001:db8::1]:443".parse().unwrap(),
    };
    encode_v1(&v6, &mut header);
    other.get_mut().write_all(&header).unwrap();
    assert_eq!(line(&mut other), "peer [2001:db8::5]:8\n");
    assert_eq!(server.handle.stats().refused_per_ip, 1);
    drop(server);
}

#[test]
fn headers_from_elsewhere_malformed_or_missing_close_the_connection_counted() {
    let server = server(Duration::from_millis(300));
    let addr = server.tcp[0];
    // Outside --proxy-from: served as itself, but a header is refused.
    let mut plain = common::connect_from("127.0.0.2", addr);
    assert!(line(&mut plain).starts_with("peer 127.0.0.2:"));
    plain.get_mut().write_all(b"PROXYless\n").unwrap();
    assert_eq!(line(&mut plain), "PROXYless\n");
    drop(plain);
    // A blank line begins like a v2 signature: it is not held back.
    let mut blank = common::connect_from("127.0.0.2", addr);
    assert!(line(&mut blank).starts_with("peer 127.0.0.2:"));
    blank.get_mut().write_all(b"\r\n").unwrap();
    assert_eq!(line(&mut blank), "\r\n");
    drop(blank);
    let mut forged = common::connect_from("127.0.0.3", addr);
    assert!(line(&mut forged).starts_with("peer 127.0.0.3:"));
    forged.get_mut().write_all(&v2("192.0.2.9:9")).unwrap();
    assert_closed(&mut forged);
    assert_eq!(server.handle.stats().proxy_untrusted, 1);

    // From the proxy: malformed, oversized, then nothing at all.
    let mut bad = common::connect_from("127.0.0.1", addr);
    bad.get_mut()
        .write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n")
        .unwrap();
    assert_closed(&mut bad);
    let mut long = common::connect_from("127.0.0.1", addr);
    long.get_mut().write_all(b"PROXY ").unwrap();
    long.get_mut().write_all(&[b'x'; 200]).unwrap();
    assert_closed(&mut long);
    assert_eq!(server.handle.stats().proxy_malformed, 2);
    let mut silent = common::connect_from("127.0.0.1", addr);
    assert_closed(&mut silent);
    let stats = server.handle.stats();
    assert_eq!((stats.proxy_timeouts, stats.proxy_headers), (1, 0));
    wait_until("all closed", || server.handle.stats().conns_open == 0);
}

/// Over TLS the header comes first, in plain bytes; here in the same
/// write as the ClientHello, which must reach the TLS session intact.
#[cfg(feature = "tls")]
#[test]
fn over_tls_the_header_precedes_the_handshake() {
    use std::sync::Arc;

    let (tls, client_config, _) = common::tls::certificates();
    let config = ServerConfig {
        shards: 1,
        trusted: Trusted::none(),
        proxy_from: "127.0.0.1/32".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tls("127.0.0.1:0".parse().unwrap(), tls, || Peer)
        .build()
        .unwrap();
    let server = Running::start(server);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::clone(&client_config), name).unwrap();
    let mut first = v2("203.0.113.4:4444");
    tls.write_tls(&mut first).unwrap(); // the ClientHello
    let mut tcp = common::connect(server.tcp[0]);
    tcp.write_all(&first).unwrap();
    let mut stream = BufReader::new(rustls::StreamOwned::new(tls, tcp));
    let mut greeting = String::new();
    stream.read_line(&mut greeting).unwrap();
    assert_eq!(greeting, "peer 203.0.113.4:4444\n");
    stream.get_mut().write_all(b"secret\n").unwrap();
    let mut echo = String::new();
    stream.read_line(&mut echo).unwrap();
    assert_eq!(echo, "secret\n");
    let stats = server.handle.stats();
    assert_eq!((stats.proxy_headers, stats.tls_errors), (1, 0));
}
