//! The article's graceful shutdown (5.2): on Ctrl-C (SIGINT) or SIGTERM
//! the server stops accepting, lets every connection finish what it owes,
//! and exits 0.
//!
//! ```sh
//! cargo run --example graceful_shutdown                  # 127.0.0.1:9401, the article's port
//! nc 127.0.0.1 9401                                      # type lines; each gets "ok N"
//! kill -INT PID                                          # or Ctrl-C in its terminal
//! cargo run --example graceful_shutdown -- 127.0.0.1:0   # any free port
//! ```
//!
//! It prints `listening on tcp ADDR` once bound, `closed (REASON)` per
//! connection, and once every connection is gone `stopped: N connections
//! closed by the shutdown`. A second signal stops at once.
//!
//! # What happens at the signal
//!
//! `stop_on_signals` waits for the signal on its own thread and then
//! writes a shutdown word into every shard's mailbox and wakes its epoll
//! (a `mio::Waker`: an eventfd). Each shard, on its next turn:
//! 1. deregisters and closes its listening sockets: new connections are
//!    refused by the kernel from then on;
//! 2. for each connection: input that still arrives is read and
//!    discarded, queued output is flushed, then the shard sends FIN
//!    (`shutdown(SHUT_WR)`), so the client reads the end of the stream
//!    after every byte it was owed;
//! 3. closes each connection when the client's FIN arrives, or at the
//!    drain deadline (5 s) from the timer wheel, whichever comes first.
//!
//! `run` returns when every shard is empty. The Go version needs a
//! context, a WaitGroup, a closed listener and a per-connection deadline
//! for the same; a goroutine stuck in `Read` past the deadline is still
//! waited for.
//!
//! The Go server's 10 s deadline is the idle timeout here: a connection
//! that moves no byte for 10 s is closed by the timer wheel.

use std::time::Duration;

use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::{Server, ServerConfig};

/// Answers each read with `ok N`, N the bytes it got (the Go server
/// prints them).
struct Count;

impl TcpService for Count {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        conn.send(format!("ok {}\n", data.len()).as_bytes());
        data.len()
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, _id: ConnId, reason: CloseReason) {
        println!("closed ({reason:?})");
    }
}

fn main() -> Result<(), sockloop::Error> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9401".into());
    let Ok(addr) = addr.parse() else {
        eprintln!("usage: graceful_shutdown [ADDR]   e.g. 127.0.0.1:9401");
        std::process::exit(2);
    };
    let config = ServerConfig {
        idle_timeout: Some(Duration::from_secs(10)),
        drain_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp(addr, || Count)
        .build()?;
    println!("listening on tcp {}", server.tcp_addrs()[0]);
    let handle = server.handle();
    handle.stop_on_signals()?; // logs "shutting down: draining for up to 5s ..."
    server.run()?;
    let drained = handle.stats().closed_shutdown;
    println!("stopped: {drained} connections closed by the shutdown");
    Ok(())
}
