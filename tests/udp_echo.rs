//! UDP echo over real sockets.

mod common;

use std::thread;

use common::{udp_client, wait_until, Rng, Running};
use sockloop::ServerConfig;

/// In flight per socket: small enough that 10 sockets cannot overrun the
/// server's default receive buffer, so any loss is the server's fault.
const WINDOW: usize = 4;

#[test]
fn a_thousand_datagrams_from_ten_sockets_are_all_echoed_exactly() {
    let server = Running::echo(ServerConfig::default());
    let addr = server.udp[0];
    let clients: Vec<_> = (0..10u64)
        .map(|client| {
            thread::spawn(move || {
                let socket = udp_client(addr);
                let mut rng = Rng::new(client);
                let datagrams: Vec<Vec<u8>> = (0..100)
                    .map(|i| {
                        let mut d = format!("{client}:{i}:").into_bytes();
                        let len = rng.range(0, 1200);
                        d.extend(rng.bytes(len));
                        d
                    })
                    .collect();
                let mut echoed = Vec::new();
                let mut buf = [0; 2048];
                for window in datagrams.chunks(WINDOW) {
                    for d in window {
                        socket.send(d).unwrap();
                    }
                    for _ in window {
                        let n = socket.recv(&mut buf).expect("echo within the timeout");
                        echoed.push(buf[..n].to_vec());
                    }
                }
                // Loopback keeps order; the echo must too.
                (datagrams, echoed)
            })
        })
        .collect();
    for client in clients {
        let (sent, echoed) = client.join().unwrap();
        assert!(sent == echoed, "echoed datagrams differ from those sent");
    }
    // The server counts a reply after the send returns, which can be
    // after the client has it.
    let handle = server.handle.clone();
    wait_until("the counters", || handle.stats().udp_out >= 1000);
    let stats = server.handle.stats();
    assert_eq!(stats.udp_in, 1000);
    assert_eq!(stats.udp_out, 1000);
    assert_eq!(stats.udp_dropped_queue_full + stats.udp_send_errors, 0);
    server.shutdown().unwrap();
}

#[test]
fn a_datagram_above_the_maximum_is_dropped_and_counted() {
    let config = ServerConfig {
        udp_max_datagram: 512,
        udp_queue_bytes: 4096,
        ..ServerConfig::default()
    };
    let server = Running::echo(config);
    let socket = udp_client(server.udp[0]);
    socket.send(&[1; 513]).unwrap();
    socket.send(&[2; 512]).unwrap();
    let mut buf = [0; 1024];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        &[2; 512][..],
        "the oversized datagram was echoed"
    );
    let handle = server.handle.clone();
    wait_until("the counters", || handle.stats().udp_out >= 1);
    let stats = server.handle.stats();
    assert_eq!(
        (stats.udp_in, stats.udp_dropped_truncated, stats.udp_out),
        (2, 1, 1)
    );
    server.shutdown().unwrap();
}
