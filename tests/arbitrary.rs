//! Arbitrary bytes into every service: the server never panics, and a
//! well-behaved client is served right after. (The fuzz/ targets go
//! deeper into each decoder; this runs in the normal suite.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{connect, wait_until, Running};
use proptest::prelude::*;
use sockloop::client::rudp::Client;
use sockloop::limit::IpLimits;
use sockloop::services::chat::{Chat, ChatConfig, Encoding};
use sockloop::services::rudp_echo::RudpEcho;
use sockloop::services::{Echo, JsonEcho};
use sockloop::{rudp, Server, ServerConfig};

/// Every service on one server: tcp echo, json, chat, chat-proto; udp
/// echo and rudp.
fn everything() -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 2,
        // Garbage draws strikes; these tests are not about bans.
        sources: IpLimits::unlimited(),
        frame_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    };
    let chat = Chat::maker(ChatConfig::default(), &[Encoding::Json, Encoding::Protobuf]);
    let server = Server::builder()
        .config(config)
        .tcp(any, || Echo)
        .tcp(any, || JsonEcho::new(4096))
        .tcp_group(&[any, any], chat)
        .udp(any, || Echo)
        .udp(any, move || {
            RudpEcho::new(rudp::Config::default(), 64, &[1; 32])
        })
        .build()
        .unwrap();
    Running::start(server)
}

/// Each service still answers a proper request.
fn all_still_serve(server: &Running) {
    let mut echo = connect(server.tcp[0]);
    echo.write_all(b"ping").unwrap();
    let mut four = [0; 4];
    echo.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");

    let mut json = BufReader::new(connect(server.tcp[1]));
    json.get_mut().write_all(b"{\"ok\":true}\n").unwrap();
    let mut line = String::new();
    json.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"ok\":true}\n");

    let mut chat = BufReader::new(connect(server.tcp[2]));
    let mut prompt = [0; 21];
    chat.read_exact(&mut prompt).unwrap();
    assert_eq!(&prompt, b"Enter your username: ");

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    udp.send_to(b"dgram", server.udp[0]).unwrap();
    let mut buf = [0; 16];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"dgram");

    let timeout = Duration::from_secs(10);
    let mut client = Client::connect(server.udp[1], rudp::Config::default(), timeout).unwrap();
    client.send(b"reliable").unwrap();
    assert_eq!(client.recv(timeout).unwrap(), Some(b"reliable".to_vec()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn garbage_into_every_service_harms_nothing(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
    ) {
        let server = everything();
        for &addr in &server.tcp {
            let mut stream = connect(addr);
            for chunk in &chunks {
                // The server may hang up on garbage: later writes may fail.
                let _ = stream.write_all(chunk);
            }
        }
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for &addr in &server.udp {
            for chunk in &chunks {
                let _ = socket.send_to(chunk, addr);
            }
        }
        all_still_serve(&server);
        // Four garbage connections and three proper ones, all accepted;
        // a panicking shard would make `shutdown` fail.
        let handle = server.handle.clone();
        wait_until("every connection accepted", || handle.stats().conns_accepted == 7);
        server.shutdown().unwrap();
    }
}
