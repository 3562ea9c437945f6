//! TLS listeners: echo and chat through rustls, certificates made here.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::tls::{certificates, tls_connect};
use common::{connect, wait_until, Running};
use sockloop::net::tls::TlsConfig;
use sockloop::services::chat::{Chat, ChatConfig, Encoding};
use sockloop::services::Echo;
use sockloop::{Server, ServerConfig};

/// TLS echo on 127.0.0.1:0.
fn tls_echo(config: ServerConfig, tls: TlsConfig) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder().config(config).tls(any, tls, || Echo);
    Running::start(server.build().unwrap())
}

fn one_shard() -> ServerConfig {
    ServerConfig {
        shards: 1,
        ..ServerConfig::default()
    }
}

#[test]
fn echo_over_tls_small_and_large() {
    let (tls, client, _) = certificates();
    let server = tls_echo(one_shard(), tls);
    let mut stream = tls_connect(server.tcp[0], &client);
    stream.write_all(b"hello").unwrap();
    let mut reply = [0; 5];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello");

    // 4 MiB: many records, rustls's buffer limit and the loop's backpressure.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut echoed = Vec::with_capacity(data.len());
    let chunk = 64 * 1024;
    for part in data.chunks(chunk) {
        stream.write_all(part).unwrap();
        let mut got = vec![0; part.len()];
        stream.read_exact(&mut got).unwrap();
        echoed.extend_from_slice(&got);
    }
    assert!(echoed == data, "4 MiB came back damaged");
    stream.conn.send_close_notify();
    stream.flush().unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    wait_until("the close", || server.handle.stats().closed_peer == 1);
    assert_eq!(server.handle.stats().tls_errors, 0);
    server.shutdown().unwrap();
}

#[test]
fn chat_over_tls() {
    let (tls, client, _) = certificates();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = vec![
        sockloop::Listener::tls(any, tls),
        sockloop::Listener::plain(any),
    ];
    let make = Chat::maker(ChatConfig::default(), &[Encoding::Json, Encoding::Json]);
    let server = Running::start(
        Server::builder()
            .config(one_shard())
            .listeners(listeners, make)
            .build()
            .unwrap(),
    );
    let mut secure = BufReader::new(tls_connect(server.tcp[0], &client));
    let mut prompt = [0; 21];
    secure.read_exact(&mut prompt).unwrap();
    assert_eq!(&prompt, b"Enter your username: ");
    secure.get_mut().write_all(b"ann\n").unwrap();
    let mut line = String::new();
    secure.read_line(&mut line).unwrap();
    assert!(
        line.starts_with(r#"{"from":"System","content":"Welcome, ann!"#),
        "{line}"
    );

    // A plaintext member of the same room hears the TLS one.
    let mut plain = BufReader::new(connect(server.tcp[1]));
    plain.read_exact(&mut prompt).unwrap();
    plain.get_mut().write_all(b"bob\n").unwrap();
    line.clear();
    plain.read_line(&mut line).unwrap();
    line.clear();
    secure.read_line(&mut line).unwrap();
    assert!(line.contains("bob joined lobby"), "{line}");
    secure
        .get_mut()
        .write_all(b"{\"content\":\"over TLS\"}\n")
        .unwrap();
    line.clear();
    plain.read_line(&mut line).unwrap();
    assert!(
        line.starts_with(r#"{"from":"ann","content":"over TLS""#),
        "{line}"
    );
    server.shutdown().unwrap();
}

#[test]
fn a_plaintext_client_gets_an_alert_and_is_closed() {
    let (tls, _, _) = certificates();
    let server = tls_echo(one_shard(), tls);
    let mut plain = connect(server.tcp[0]);
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got); // the close may come as a reset
    assert_eq!(
        got.first(),
        Some(&0x15),
        "a TLS alert record first: {got:?}"
    );
    wait_until("the close", || server.handle.stats().conns_open == 0);
    let stats = server.handle.stats();
    assert_eq!((stats.tls_errors, stats.closed_error), (1, 1));
    server.shutdown().unwrap();
}

#[test]
fn a_stalled_handshake_is_closed_by_the_frame_timeout() {
    let (tls, _, _) = certificates();
    let config = ServerConfig {
        frame_timeout: Some(Duration::from_millis(300)),
        ..one_shard()
    };
    let server = tls_echo(config, tls);
    let mut silent = connect(server.tcp[0]);
    let mut got = Vec::new();
    silent.read_to_end(&mut got).unwrap();
    // A close_notify alert (plaintext before any handshake), then EOF.
    assert_eq!(got, [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00]);
    assert_eq!(server.handle.stats().closed_frame_timeout, 1);
    server.shutdown().unwrap();
}

#[test]
fn bad_certificate_files_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("sockloop-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, _, made) = certificates();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    assert!(TlsConfig::from_pem_files(&cert, &key).is_ok());
    let error = |c: &std::path::Path, k: &std::path::Path| {
        TlsConfig::from_pem_files(c, k).unwrap_err().to_string()
    };
    let missing = dir.join("missing.pem");
    assert!(
        error(&missing, &key).contains("missing.pem: cannot read certificates"),
        "{}",
        error(&missing, &key)
    );
    assert!(
        error(&garbage, &key).contains("garbage.pem: no certificate in the file"),
        "{}",
        error(&garbage, &key)
    );
    assert!(
        error(&cert, &garbage).contains("garbage.pem: no usable private key"),
        "{}",
        error(&cert, &garbage)
    );
    // A key that does not match the certificate.
    let (_, _, other) = certificates();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    assert!(
        error(&cert, &other_key).contains("other-key.pem"),
        "{}",
        error(&cert, &other_key)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
