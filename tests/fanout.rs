//! A service reaching other connections of its shard: fan-out and kick.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::room::{push_past_a_slow_member, Room};
use common::{connect, wait_until, Running};
use sockloop::service::{ConnContext, ConnId, TcpService};
use sockloop::{Server, ServerConfig};

fn room_server() -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 1,
        ..ServerConfig::default()
    };
    Running::start(
        Server::builder()
            .config(config)
            .tcp(any, Room::default)
            .build()
            .unwrap(),
    )
}

#[test]
fn every_member_gets_every_other_members_lines_once_in_order() {
    const MEMBERS: usize = 10;
    const LINES: usize = 50;
    let server = room_server();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..MEMBERS {
        let stream = connect(server.tcp[0]);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut welcome = String::new();
        reader.read_line(&mut welcome).unwrap();
        assert_eq!(welcome, "welcome\n");
        readers.push(reader);
        writers.push(stream);
    }
    let receiving: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(me, mut reader)| {
            thread::spawn(move || {
                let mut next = [0; MEMBERS];
                for _ in 0..(MEMBERS - 1) * LINES {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let (from, n) = line.trim_end().split_once(':').unwrap();
                    let (from, n): (usize, usize) = (from.parse().unwrap(), n.parse().unwrap());
                    assert_ne!(from, me, "got its own line back");
                    assert_eq!(n, next[from], "member {me}: line from {from} out of order");
                    next[from] += 1;
                }
            })
        })
        .collect();
    for n in 0..LINES {
        for (me, writer) in writers.iter_mut().enumerate() {
            writer.write_all(format!("{me}:{n}\n").as_bytes()).unwrap();
        }
    }
    receiving.into_iter().for_each(|r| r.join().unwrap());
    drop(writers);
    server.shutdown().unwrap();
}

#[test]
fn a_service_can_close_other_connections() {
    let server = room_server();
    let mut kicker = connect(server.tcp[0]);
    let others: Vec<_> = (0..3)
        .map(|_| BufReader::new(connect(server.tcp[0])))
        .collect();
    let handle = server.handle.clone();
    wait_until("all joined", || handle.stats().conns_open == 4);
    kicker.write_all(b"kick\n").unwrap();
    for mut other in others {
        let mut text = String::new();
        // Everything owed is flushed first, then EOF.
        while other.read_line(&mut text).unwrap() > 0 {}
        assert_eq!(text, "welcome\n");
    }
    wait_until("the kicks", || handle.stats().closed_service == 3);
    drop(kicker);
    server.shutdown().unwrap();
}

fn small_buffers() -> ServerConfig {
    let mut config = ServerConfig {
        shards: 1,
        output_hard_limit: 192 * 1024,
        output_soft_limit: 160 * 1024,
        output_soft_for: None,
        ..ServerConfig::default()
    };
    // Small kernel buffers, so the server's own buffering is what grows.
    config.socket.send_buffer = Some(16 * 1024);
    config
}

#[test]
fn a_member_past_the_hard_output_limit_is_dropped_and_the_others_lose_nothing() {
    let (_, got, stats) = push_past_a_slow_member(small_buffers(), 2048, connect, false);
    assert_eq!(got, 2048, "the fast member lost lines");
    assert_eq!((stats.closed_output_hard, stats.closed_output_soft), (1, 0));
}

#[test]
fn a_member_above_the_soft_limit_too_long_is_dropped() {
    let config = ServerConfig {
        output_hard_limit: 4 * 1024 * 1024,
        output_soft_for: Some(Duration::from_millis(300)),
        ..small_buffers()
    };
    let (_, got, stats) = push_past_a_slow_member(config, 1024, connect, false);
    assert_eq!(got, 1024, "the fast member lost lines");
    assert_eq!((stats.closed_output_hard, stats.closed_output_soft), (0, 1));
}

/// Relays each line to every other member, tagged with the listener
/// position of the sender.
#[derive(Default)]
struct TaggedRoom {
    members: Vec<ConnId>,
}

impl TcpService for TaggedRoom {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        self.members.push(conn.id());
        conn.send(format!("joined via {}\n", conn.listener()).as_bytes());
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let tagged = [format!("{}:", conn.listener()).as_bytes(), data].concat();
        let me = conn.id();
        for &member in self.members.iter().filter(|&&m| m != me) {
            conn.send_to(member, &tagged);
        }
        data.len()
    }
}

#[test]
fn listeners_of_one_group_share_one_service_per_shard() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 1,
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp_group(&[any, any], TaggedRoom::default)
        .build()
        .unwrap();
    let server = Running::start(server);
    assert_eq!(server.tcp.len(), 2);
    assert_ne!(server.tcp[0], server.tcp[1]);

    let mut first = BufReader::new(connect(server.tcp[0]));
    let mut second = BufReader::new(connect(server.tcp[1]));
    let mut line = String::new();
    first.read_line(&mut line).unwrap();
    assert_eq!(line, "joined via 0\n");
    line.clear();
    second.read_line(&mut line).unwrap();
    assert_eq!(line, "joined via 1\n");

    second.get_mut().write_all(b"hello\n").unwrap();
    line.clear();
    first.read_line(&mut line).unwrap();
    assert_eq!(line, "1:hello\n");
    drop((first, second));
    server.shutdown().unwrap();
}
