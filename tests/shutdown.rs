//! Graceful shutdown with connections mid-transfer.

mod common;

use std::io::{Read, Write};
use std::thread;

use common::{connect, wait_until, Rng, Running};
use sockloop::ServerConfig;

#[test]
fn shutdown_delivers_pending_echoes_then_closes_everything() {
    let mut config = ServerConfig::default();
    // Small kernel buffers: the server holds echoes the clients have not
    // read yet when shutdown begins.
    config.socket.send_buffer = Some(16 * 1024);
    config.socket.recv_buffer = Some(16 * 1024);
    let server = Running::echo(config);
    let addr = server.tcp[0];
    const CLIENTS: usize = 20;
    const EACH: usize = 512 * 1024;

    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|i| {
            let stream = connect(addr);
            let data = Rng::new(i).bytes(EACH);
            let mut writer = stream.try_clone().unwrap();
            let to_send = data.clone();
            // Writes fail once the drain deadline resets the connection,
            // which this test never reaches; the result is not the point.
            let write = thread::spawn(move || {
                let _ = writer.write_all(&to_send);
            });
            (stream, data, write)
        })
        .collect();
    let handle = server.handle.clone();
    wait_until("every client to be backpressured", || {
        handle.stats().backpressure_pauses >= CLIENTS as u64
    });

    handle.shutdown();
    let mut received = 0;
    for (mut stream, data, write) in clients {
        let mut got = Vec::new();
        stream
            .read_to_end(&mut got)
            .expect("EOF after the pending echo");
        assert!(
            !got.is_empty() && data.starts_with(&got),
            "echo is not a prefix of what was sent"
        );
        received += got.len() as u64;
        write.join().unwrap();
    }
    server.shutdown().expect("run returns cleanly");

    let stats = handle.stats();
    assert_eq!(
        stats.tcp_bytes_out, received,
        "an echo the server owed was lost"
    );
    assert_eq!(stats.tcp_bytes_in - stats.tcp_bytes_discarded, received);
    assert_eq!(stats.conns_open, 0);
    assert_eq!(stats.closed_shutdown, CLIENTS as u64);
}

#[test]
fn shutdown_with_no_connections_returns_at_once() {
    let server = Running::echo(ServerConfig::default());
    server.shutdown().unwrap();
}
