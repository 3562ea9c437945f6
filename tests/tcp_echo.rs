//! TCP echo over real sockets: concurrency, backpressure, half-close, churn.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{connect, wait_until, Rng, Running};
use sockloop::ServerConfig;

/// Writes `data` in random-size pieces on one thread while another reads
/// the echo; returns what came back.
fn echo_in_pieces(addr: std::net::SocketAddr, data: Vec<u8>, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let stream = connect(addr);
    let mut reader = stream.try_clone().unwrap();
    let expected = data.len();
    let read = thread::spawn(move || {
        let mut got = vec![0; expected];
        reader.read_exact(&mut got).expect("read echo");
        got
    });
    let mut writer = stream;
    let mut rng = Rng::new(seed);
    let mut sent = 0;
    while sent < data.len() {
        let piece = rng.range(1, 4096).min(data.len() - sent);
        writer.write_all(&data[sent..sent + piece]).unwrap();
        sent += piece;
    }
    (data, read.join().unwrap())
}

#[test]
fn two_hundred_concurrent_clients_get_every_byte_back_in_order() {
    let server = Running::echo(ServerConfig::default());
    let addr = server.tcp[0];
    let clients: Vec<_> = (0..200u64)
        .map(|i| thread::spawn(move || echo_in_pieces(addr, Rng::new(i).bytes(64 * 1024), i)))
        .collect();
    for client in clients {
        let (sent, got) = client.join().unwrap();
        assert!(sent == got, "echo differs from what was sent");
    }
    // A write is counted after it returns, maybe after the client read it.
    let handle = server.handle.clone();
    wait_until("the counters", || {
        handle.stats().tcp_bytes_out >= 200 * 64 * 1024
    });
    let stats = server.handle.stats();
    assert_eq!(stats.conns_accepted, 200);
    assert_eq!(stats.tcp_bytes_in, 200 * 64 * 1024);
    assert_eq!(stats.tcp_bytes_out, 200 * 64 * 1024);
    server.shutdown().unwrap();
}

#[test]
fn a_client_that_does_not_read_is_held_to_a_bounded_buffer() {
    // Small kernel buffers so the server's own buffering, not the kernel's,
    // absorbs the unread echo.
    let mut config = ServerConfig::default();
    config.socket.recv_buffer = Some(16 * 1024);
    config.socket.send_buffer = Some(16 * 1024);
    let bound = config.max_conn_buffer_bytes() as u64;
    let server = Running::echo(config);
    let data = Rng::new(7).bytes(8 * 1024 * 1024);

    let stream = connect(server.tcp[0]);
    let mut writer = stream.try_clone().unwrap();
    let to_send = data.clone();
    let write = thread::spawn(move || writer.write_all(&to_send));

    // Not reading until the server has stopped reading this client.
    let handle = server.handle.clone();
    wait_until("backpressure", || handle.stats().backpressure_pauses > 0);
    thread::sleep(Duration::from_millis(100));
    let stalled = server.handle.stats();
    assert!(
        stalled.tcp_bytes_in < data.len() as u64,
        "server kept reading"
    );

    let mut got = vec![0; data.len()];
    (&stream).read_exact(&mut got).unwrap();
    write.join().unwrap().unwrap();
    assert!(got == data, "echo differs from what was sent");

    let stats = server.handle.stats();
    assert!(
        stats.buffer_bytes_peak <= bound,
        "peak buffer {} over the stated bound {bound}",
        stats.buffer_bytes_peak
    );
    drop(stream);
    wait_until("close", || server.handle.stats().conns_open == 0);
    assert_eq!(
        server.handle.stats().buffer_bytes,
        0,
        "a closed connection kept buffers"
    );
    server.shutdown().unwrap();
}

#[test]
fn half_close_still_gets_the_full_echo_then_eof() {
    // Repeated: the FIN often arrives in the same readiness event as the
    // last data, which once hid the EOF behind a short read.
    const ROUNDS: u64 = 100;
    let server = Running::echo(ServerConfig::default());
    for round in 0..ROUNDS {
        let data = Rng::new(round).bytes(1 + round as usize * 3001);
        let mut stream = connect(server.tcp[0]);
        let mut reader = stream.try_clone().unwrap();
        let read = thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).map(|_| got)
        });
        stream.write_all(&data).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let got = read.join().unwrap().expect("read to EOF");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echo differs from what was sent");
    }
    wait_until("close", || server.handle.stats().closed_peer == ROUNDS);
    server.shutdown().unwrap();
}

#[test]
fn churn_never_mixes_up_connections() {
    let server = Running::echo(ServerConfig::default());
    let addr = server.tcp[0];
    let stop = Arc::new(AtomicBool::new(false));

    // Live connections each echo their own tagged stream throughout.
    let live: Vec<_> = (0..8u8)
        .map(|tag| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut stream = connect(addr);
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) || rounds < 10 {
                    let msg = vec![tag; 1 + rounds % 700];
                    stream.write_all(&msg).unwrap();
                    let mut got = vec![0; msg.len()];
                    stream.read_exact(&mut got).unwrap();
                    assert!(got == msg, "connection {tag} received another's bytes");
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();

    let mut rng = Rng::new(11);
    for i in 0..2000 {
        let mut stream = connect(addr);
        match rng.range(0, 2) {
            0 => {}                                   // connect and close at once
            1 => stream.write_all(b"churn").unwrap(), // close with the echo unread
            _ => {
                let msg = format!("churn {i}");
                stream.write_all(msg.as_bytes()).unwrap();
                let mut got = vec![0; msg.len()];
                stream.read_exact(&mut got).unwrap();
                assert_eq!(got, msg.as_bytes());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in live {
        assert!(client.join().unwrap() >= 10);
    }
    wait_until("all closed", || server.handle.stats().conns_open == 0);
    let stats = server.handle.stats();
    assert_eq!(stats.conns_accepted, 2008);
    assert_eq!(stats.closed_peer + stats.closed_error, 2008);
    server.shutdown().unwrap();
}

#[test]
fn ipv6_loopback_echoes_where_the_host_has_it() {
    let any6: std::net::SocketAddr = "[::1]:0".parse().unwrap();
    if std::net::TcpListener::bind(any6).is_err() {
        eprintln!("no IPv6 loopback on this host; skipping");
        return;
    }
    let server = sockloop::Server::builder()
        .tcp(any6, || sockloop::services::Echo)
        .udp(any6, || sockloop::services::Echo)
        .build()
        .unwrap();
    let server = Running::start(server);
    assert!(server.tcp[0].is_ipv6() && server.udp[0].is_ipv6());
    let (sent, got) = echo_in_pieces(server.tcp[0], Rng::new(6).bytes(10_000), 6);
    assert!(sent == got, "echo differs from what was sent");
    let socket = std::net::UdpSocket::bind(any6).unwrap();
    socket.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    socket.send_to(b"v6", server.udp[0]).unwrap();
    let mut buf = [0; 8];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"v6"[..], server.udp[0]));
    server.shutdown().unwrap();
}

#[test]
fn past_max_conns_a_connection_gets_the_services_refusal_and_the_others_go_on() {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 2,
        max_conns: Some(2),
        ..ServerConfig::default()
    };
    let server = sockloop::Server::builder()
        .config(config)
        .tcp(any, || sockloop::services::JsonEcho::new(1024))
        .build()
        .unwrap();
    let server = Running::start(server);
    let mut first = BufReader::new(connect(server.tcp[0]));
    let mut second = BufReader::new(connect(server.tcp[0]));
    let handle = server.handle.clone();
    wait_until("both in", || handle.stats().conns_open == 2);
    let mut third = connect(server.tcp[0]);
    let mut refusal = String::new();
    third.read_to_string(&mut refusal).unwrap();
    assert_eq!(refusal, "{\"error\":\"the server is full\"}\n");
    assert_eq!(handle.stats().refused_server_full, 1);
    for member in [&mut first, &mut second] {
        member.get_mut().write_all(b"{\"x\":1}\n").unwrap();
        let mut line = String::new();
        member.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"x\":1}\n");
    }
    // A slot freed is a slot to take.
    drop(first);
    wait_until("one out", || handle.stats().conns_open == 1);
    let mut fourth = BufReader::new(connect(server.tcp[0]));
    fourth.get_mut().write_all(b"{}\n").unwrap();
    let mut line = String::new();
    fourth.read_line(&mut line).unwrap();
    assert_eq!(line, "{}\n");
    drop((second, fourth));
    server.shutdown().unwrap();
}
