//! A TLS record trickled a byte at a time after the handshake: its
//! ciphertext is an open frame, so the frame timeout closes it.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::tls::{certificates, tls_connect};
use common::{wait_until, Running};
use sockloop::services::Echo;
use sockloop::{Server, ServerConfig};

#[test]
fn a_record_trickled_after_the_handshake_meets_the_frame_timeout() {
    let (tls, client, _) = certificates();
    let config = ServerConfig {
        shards: 1,
        frame_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder().config(config).tls(any, tls, || Echo);
    let server = Running::start(server.build().unwrap());
    let handle = server.handle.clone();

    // The trickler finishes its handshake (an echo proves it), then seals
    // one record and sends it a byte every 50 ms: 1.4 s for its 28 bytes.
    let mut trickler = tls_connect(server.tcp[0], &client);
    trickler.write_all(b"ok").unwrap();
    let mut reply = [0; 2];
    trickler.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ok");
    trickler.conn.writer().write_all(b"trickled\n").unwrap();
    let mut record = Vec::new();
    while trickler.conn.wants_write() {
        trickler.conn.write_tls(&mut record).unwrap();
    }
    assert!(record.len() > 20, "one record, {} bytes", record.len());
    let mut neighbour = tls_connect(server.tcp[0], &client);
    let echo = |neighbour: &mut common::tls::TlsStream, text: &[u8]| {
        neighbour.write_all(text).unwrap();
        let mut reply = vec![0; text.len()];
        neighbour.read_exact(&mut reply).unwrap();
        assert_eq!(reply, text);
    };
    for (i, byte) in record.iter().enumerate() {
        thread::sleep(Duration::from_millis(50));
        if i == 2 {
            echo(&mut neighbour, b"during"); // served while the record trickles
        }
        // Fails once the server has closed (and reset) the trickler.
        if trickler.sock.write_all(std::slice::from_ref(byte)).is_err()
            || handle.stats().closed_frame_timeout == 1
        {
            break;
        }
    }
    wait_until("the frame timeout", || {
        handle.stats().closed_frame_timeout == 1
    });
    echo(&mut neighbour, b"after");
    let stats = handle.stats();
    assert_eq!(stats.closed_frame_timeout, 1);
    assert_eq!(stats.conns_open, 1, "only the neighbour is left");
    drop(neighbour);
    server.shutdown().unwrap();
}
