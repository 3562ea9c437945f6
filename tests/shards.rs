//! Several shards: SO_REUSEPORT spreading, the handoff mode, cross-shard
//! messages and a panicking shard.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{connect, udp_client, wait_until, Running, IO_TIMEOUT};
use sockloop::limit::IpLimits;
use sockloop::service::{ConnContext, ShardContext, Shards, TcpService};
use sockloop::{Error, Server, ServerConfig};

/// Hundreds of connections from one address: the per-source limits off.
fn shards(n: usize) -> ServerConfig {
    ServerConfig {
        shards: n,
        sources: IpLimits::unlimited(),
        ..ServerConfig::default()
    }
}

/// Opens `count` connections at once; each echoes a message naming it.
fn echo_many(addr: SocketAddr, count: usize) {
    let mut streams: Vec<_> = (0..count).map(|_| connect(addr)).collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        stream
            .write_all(format!("connection {i:03}\n").as_bytes())
            .unwrap();
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut got = [0; 15];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got[..], format!("connection {i:03}\n").as_bytes());
    }
}

#[test]
fn two_shards_share_400_connections_and_echo_them_all() {
    let server = Running::echo(shards(2));
    echo_many(server.tcp[0], 400);
    let per_shard = server.handle.shard_stats();
    assert_eq!(per_shard.len(), 2);
    assert_eq!(
        per_shard[0].conns_accepted + per_shard[1].conns_accepted,
        400
    );
    assert!(
        per_shard.iter().all(|s| s.conns_accepted > 0),
        "one shard got nothing: {} / {}",
        per_shard[0].conns_accepted,
        per_shard[1].conns_accepted
    );
    server.shutdown().unwrap();
}

#[test]
fn the_handoff_mode_spreads_connections_from_shard_0() {
    let mut config = shards(2);
    config.socket.reuse_port = false;
    let server = Running::echo(config);
    echo_many(server.tcp[0], 100);
    let per_shard = server.handle.shard_stats();
    // Least-loaded placement alternates while every connection stays open.
    assert_eq!(
        (per_shard[0].conns_accepted, per_shard[1].conns_accepted),
        (50, 50)
    );
    assert_eq!(per_shard[0].handed_off, 50);
    server.shutdown().unwrap();
}

#[test]
fn udp_on_two_shards_echoes_every_datagram() {
    let server = Running::echo(shards(2));
    let addr = server.udp[0];
    let clients: Vec<_> = (0..40u32)
        .map(|client| {
            thread::spawn(move || {
                let socket = udp_client(addr);
                let mut buf = [0; 64];
                for i in 0..25u32 {
                    let msg = format!("{client}/{i}");
                    socket.send(msg.as_bytes()).unwrap();
                    let n = socket.recv(&mut buf).expect("echo within the timeout");
                    assert_eq!(&buf[..n], msg.as_bytes());
                }
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    let handle = server.handle.clone();
    wait_until("the counters", || handle.stats().udp_out >= 1000);
    let per_shard = server.handle.shard_stats();
    assert_eq!(per_shard[0].udp_in + per_shard[1].udp_in, 1000);
    assert!(
        per_shard.iter().all(|s| s.udp_in > 0),
        "one shard got no datagram"
    );
    server.shutdown().unwrap();
}

type Log = Arc<Mutex<Vec<(usize, usize, Vec<u8>)>>>;

/// Posts every line to all shards and acknowledges it; records what it
/// posted as (shard, shard, line) and what it received as (shard, from, line).
struct Relay {
    posted: Log,
    received: Log,
}

impl TcpService for Relay {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let mut consumed = 0;
        while let Some(end) = data[consumed..].iter().position(|&b| b == b'\n') {
            let line: Arc<[u8]> = data[consumed..consumed + end].into();
            let shard = conn.shard();
            self.posted
                .lock()
                .unwrap()
                .push((shard, shard, line.to_vec()));
            assert_eq!(conn.post(Shards::All, &line), 2);
            conn.send(b"ok\n");
            consumed += end + 1;
        }
        consumed
    }

    fn on_message(&mut self, shard: &mut ShardContext<'_>, from: usize, message: &[u8]) {
        let record = (shard.shard(), from, message.to_vec());
        self.received.lock().unwrap().push(record);
    }
}

#[test]
fn a_post_to_all_shards_reaches_each_exactly_once_in_order_per_sender() {
    let (posted, received): (Log, Log) = Default::default();
    let (p, r) = (Arc::clone(&posted), Arc::clone(&received));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(shards(2))
        .tcp(any, move || Relay {
            posted: Arc::clone(&p),
            received: Arc::clone(&r),
        })
        .build()
        .unwrap();
    let server = Running::start(server);

    // Enough connections that both shards send.
    let senders: Vec<_> = (0..8)
        .map(|c| {
            let addr = server.tcp[0];
            thread::spawn(move || {
                let stream = connect(addr);
                let mut acks = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                for i in 0..50 {
                    stream.write_all(format!("{c}:{i}\n").as_bytes()).unwrap();
                    let mut ack = String::new();
                    acks.read_line(&mut ack).unwrap();
                    assert_eq!(ack, "ok\n");
                }
            })
        })
        .collect();
    senders.into_iter().for_each(|s| s.join().unwrap());
    wait_until("every message", || {
        received.lock().unwrap().len() == 2 * 400
    });

    let posted = posted.lock().unwrap();
    let received = received.lock().unwrap();
    let senders: Vec<usize> = (0..2)
        .filter(|&s| posted.iter().any(|p| p.0 == s))
        .collect();
    assert_eq!(senders, [0, 1], "both shards should have had connections");
    for sender in 0..2 {
        let sent: Vec<&Vec<u8>> = posted
            .iter()
            .filter(|p| p.0 == sender)
            .map(|p| &p.2)
            .collect();
        for receiver in 0..2 {
            let got: Vec<&Vec<u8>> = received
                .iter()
                .filter(|m| m.0 == receiver && m.1 == sender)
                .map(|m| &m.2)
                .collect();
            assert!(
                got == sent,
                "shard {receiver} got shard {sender}'s posts wrong"
            );
        }
    }
    drop((posted, received));
    server.shutdown().unwrap();
}

/// Panics on the first byte.
struct Faulty;

impl TcpService for Faulty {
    fn on_data(&mut self, _conn: &mut ConnContext<'_>, _data: &[u8]) -> usize {
        panic!("deliberate panic in a service");
    }
}

#[test]
fn a_panicking_service_stops_the_server_with_an_error() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(shards(2))
        .tcp(any, || Faulty)
        .build()
        .unwrap();
    let addr = server.tcp_addrs()[0];
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || done_tx.send(server.run()));
    let mut stream = connect(addr);
    stream.write_all(b"boom").unwrap();
    let outcome = done_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("run() did not return");
    assert!(
        matches!(outcome, Err(Error::ShardPanicked(_))),
        "got {outcome:?}"
    );
    thread::sleep(Duration::from_millis(10));
}

/// On any input, posts `BURST` numbered messages to the other shards;
/// records what arrives.
struct Burst {
    received: Arc<Mutex<Vec<u32>>>,
}

const BURST: u32 = 3000;

impl TcpService for Burst {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        for n in 0..BURST {
            let message: Arc<[u8]> = n.to_be_bytes().into();
            assert_eq!(
                conn.post(Shards::Others, &message),
                1,
                "message {n} dropped"
            );
        }
        conn.send(b"posted\n");
        data.len()
    }

    fn on_message(&mut self, _shard: &mut ShardContext<'_>, _from: usize, message: &[u8]) {
        let n = u32::from_be_bytes(message.try_into().unwrap());
        self.received.lock().unwrap().push(n);
    }
}

#[test]
fn a_burst_larger_than_one_turns_mail_budget_arrives_whole_and_in_order() {
    let received: Arc<Mutex<Vec<u32>>> = Default::default();
    let log = Arc::clone(&received);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(shards(2))
        .tcp(any, move || Burst {
            received: Arc::clone(&log),
        })
        .build()
        .unwrap();
    let server = Running::start(server);
    let mut stream = connect(server.tcp[0]);
    stream.write_all(b"go").unwrap();
    let mut ack = [0; 7];
    stream.read_exact(&mut ack).unwrap();
    wait_until("the whole burst", || {
        received.lock().unwrap().len() == BURST as usize
    });
    assert!(
        received.lock().unwrap().iter().copied().eq(0..BURST),
        "out of order"
    );
    assert_eq!(server.handle.stats().mailbox_dropped, 0);
    drop(stream);
    server.shutdown().unwrap();
}
