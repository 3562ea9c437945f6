//! The JSON message service over real sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

use common::{connect, Running};
use sockloop::limit::IpLimits;
use sockloop::{services::JsonEcho, Server, ServerConfig};

/// Bans are off: these tests are about the replies (tests/limits.rs has
/// the strikes and bans).
fn json_server(max_line: usize) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        sources: IpLimits {
            ban_after: 0,
            ..IpLimits::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp(any, move || JsonEcho::new(max_line))
        .build()
        .unwrap();
    Running::start(server)
}

#[test]
fn messages_come_back_re_encoded_and_bad_lines_get_an_error_line() {
    let server = json_server(1024);
    let mut client = connect(server.tcp[0]);
    let mut bystander = connect(server.tcp[0]);
    let mut replies = BufReader::new(client.try_clone().unwrap()).lines();

    // One message split across writes, then bad input, then a good one.
    client.write_all(b"{\"b\": [1, 2],").unwrap();
    client.write_all(b" \"a\": \"x\"}\n").unwrap();
    client
        .write_all(b"{\"unterminated\": \n42\n\n{\"ok\":true}\r\n")
        .unwrap();
    let expected = [
        r#"{"a":"x","b":[1,2]}"#,
        r#"{"error":"invalid message","detail":"EOF while parsing a value at line 1 column 17"}"#,
        r#"{"error":"invalid message","detail":"invalid type: integer `42`, expected a map at line 1 column 2"}"#,
        r#"{"ok":true}"#,
    ];
    for want in expected {
        assert_eq!(replies.next().unwrap().unwrap(), want);
    }

    // The bystander is served as if nothing happened.
    bystander.write_all(b"{\"still\":\"fine\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut bystander).read_line(&mut line).unwrap();
    assert_eq!(line, "{\"still\":\"fine\"}\n");

    drop((client, bystander, replies));
    server.shutdown().unwrap();
}

#[test]
fn a_line_over_the_limit_gets_an_error_then_the_connection_closes() {
    let server = json_server(64);
    let mut client = connect(server.tcp[0]);
    client.write_all(&[b'x'; 100]).unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "{\"error\":\"line too long\",\"max\":64}\n");
    server.shutdown().unwrap();
}

#[test]
fn a_flood_of_bad_lines_gets_every_error_line() {
    // 20,000 one-byte bad lines answered with ~90-byte error lines: output
    // far larger than input, handed over in slices, all of it delivered.
    let server = json_server(1024);
    let client = connect(server.tcp[0]);
    let mut writer = client.try_clone().unwrap();
    let flood = std::thread::spawn(move || writer.write_all(&b"x\n".repeat(20_000)).unwrap());
    let mut replies = BufReader::new(client).lines();
    for _ in 0..20_000 {
        let line = replies.next().unwrap().unwrap();
        assert!(line.starts_with(r#"{"error":"invalid message""#), "{line}");
    }
    flood.join().unwrap();
    drop(replies);
    server.shutdown().unwrap();
}
