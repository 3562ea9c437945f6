//! A TCP forwarder on outbound connections: each accepted connection
//! opens one connection to the upstream, and bytes are copied both ways.
//!
//! ```sh
//! cargo run --example proxy -- 127.0.0.1:7200 127.0.0.1:7100
//! ```
//!
//! Backpressure: a side whose input cannot be written on (the other side's
//! output is over `PAUSE_AT`) is no longer read, so TCP's flow control
//! slows its sender; it is read again once that output has drained
//! ([`ShardContext::notify_drained`]). Memory per pair stays near
//! `PAUSE_AT` plus one read, whatever the speeds.
//!
//! Closing: when either side ends (EOF, error, timeout), the other is
//! closed once what it is owed is written. The core has no half-close, so
//! a client that shuts down its sending side early loses what the upstream
//! sends after that.
//!
//! Prints `listening tcp ADDR` once bound.

use std::collections::HashMap;
use std::net::SocketAddr;

use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::Server;

/// Output one side may hold before the other side is paused.
const PAUSE_AT: usize = 64 * 1024;

struct Forward {
    upstream: SocketAddr,
    /// Each connection's other side, both ways.
    other: HashMap<ConnId, ConnId>,
}

impl TcpService for Forward {
    fn on_open(&mut self, conn: &mut ConnContext<'_>) {
        match conn.connect(self.upstream) {
            Ok(up) => {
                self.other.insert(conn.id(), up);
                self.other.insert(up, conn.id());
            }
            Err(e) => {
                eprintln!("proxy: {} -> {}: {e}", conn.peer_addr(), self.upstream);
                conn.close();
            }
        }
    }

    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let Some(&to) = self.other.get(&conn.id()) else {
            return data.len(); // its other side is gone: it is closing
        };
        conn.send_to(to, data);
        if conn.write_buffered_of(to).unwrap_or(0) >= PAUSE_AT && conn.notify_drained(to) {
            conn.pause_reading();
        }
        data.len()
    }

    fn on_drained(&mut self, conn: &mut ConnContext<'_>) {
        if let Some(&from) = self.other.get(&conn.id()) {
            conn.resume_reading_of(from);
        }
    }

    fn on_connect_failed(&mut self, shard: &mut ShardContext<'_>, up: ConnId, e: std::io::Error) {
        if let Some(client) = self.other.remove(&up) {
            self.other.remove(&client);
            eprintln!("proxy: upstream {}: {e}", self.upstream);
            shard.close_conn(client);
        }
    }

    fn on_close(&mut self, shard: &mut ShardContext<'_>, id: ConnId, _reason: CloseReason) {
        if let Some(other) = self.other.remove(&id) {
            self.other.remove(&other);
            shard.close_conn(other);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let (listen, upstream): (SocketAddr, SocketAddr) = (listen.parse()?, upstream.parse()?);
    let server = Server::builder()
        .tcp(listen, move || Forward {
            upstream,
            other: HashMap::new(),
        })
        .build()?;
    println!("listening tcp {}", server.tcp_addrs()[0]);
    server.run()?;
    Ok(())
}
