//! A room of members for the fan-out and output-limit tests: every line
//! relayed to every other member, and a writer that pushes lines past a
//! member that never reads.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::{Server, ServerConfig, Stats};

use super::{connect, wait_until, Running};

/// Relays every line to every other member; "kick" closes the others.
#[derive(Default)]
pub struct Room {
    members: Vec<ConnId>,
    gone: Vec<ConnId>,
}

impl TcpService for Room {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        self.members.push(conn.id());
        conn.send(b"welcome\n");
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let mut consumed = 0;
        while let Some(end) = data[consumed..].iter().position(|&b| b == b'\n') {
            let line = &data[consumed..consumed + end + 1];
            consumed += end + 1;
            let me = conn.id();
            for &member in self.members.iter().filter(|&&m| m != me) {
                if line == b"kick\n" {
                    assert!(conn.close_conn(member));
                } else {
                    assert!(conn.send_to(member, line), "a member vanished");
                }
            }
            for &gone in &self.gone {
                assert!(!conn.send_to(gone, line), "sent to a closed connection");
            }
        }
        consumed
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        self.members.retain(|&m| m != id);
        self.gone.push(id);
    }
}

/// A writer, a member that keeps up, and `slow` (made by `slow_client`),
/// which never reads. The writer waits for the fast member every 32 lines
/// of 1 KiB, so only the slow one falls behind; with `stop_at_close` it
/// stops as soon as the slow one is closed, else it writes all `lines`.
/// Then it waits for that close and checks the fast member still gets a
/// line. Returns the slow member's socket, the lines the fast member got,
/// and the counters.
pub fn push_past_a_slow_member(
    config: ServerConfig,
    lines: usize,
    slow_client: impl FnOnce(SocketAddr) -> TcpStream,
    stop_at_close: bool,
) -> (TcpStream, usize, Stats) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder()
        .config(config)
        .tcp(any, Room::default)
        .build()
        .unwrap();
    let server = Running::start(server);
    let mut writer = connect(server.tcp[0]);
    let mut fast = BufReader::new(connect(server.tcp[0]));
    let slow = slow_client(server.tcp[0]);
    let handle = server.handle.clone();
    wait_until("all joined", || handle.stats().conns_open == 3);
    let mut line = String::new();
    fast.read_line(&mut line).unwrap();
    assert_eq!(line, "welcome\n");

    let closed = |stats: Stats| stats.closed_output_hard + stats.closed_output_soft;
    let payload = format!("{}\n", "x".repeat(1023));
    let mut got = 0;
    for chunk in 0..lines / 32 {
        for _ in 0..32 {
            writer.write_all(payload.as_bytes()).unwrap();
        }
        while got < (chunk + 1) * 32 {
            line.clear();
            fast.read_line(&mut line).unwrap();
            assert_eq!(line, payload, "the fast member got a damaged line");
            got += 1;
        }
        if stop_at_close && closed(handle.stats()) > 0 {
            break;
        }
    }
    wait_until("the slow member's close", || closed(handle.stats()) == 1);
    // The fast member still gets every line after the slow one is gone.
    writer.write_all(b"after\n").unwrap();
    line.clear();
    fast.read_line(&mut line).unwrap();
    assert_eq!(line, "after\n");
    let stats = handle.stats();
    drop((writer, fast));
    server.shutdown().unwrap();
    (slow, got, stats)
}
