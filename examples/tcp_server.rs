//! The article's TCP server (2.5), on the event loop: every line a client
//! sends is printed and answered with `Hello from TCP server!`.
//!
//! ```sh
//! cargo run --example tcp_server                   # 127.0.0.1:8080, the article's port
//! cargo run --example tcp_client                   # or: nc 127.0.0.1 8080
//! cargo run --example tcp_server -- 127.0.0.1:0    # any free port
//! ```
//!
//! It prints `listening on tcp ADDR` once bound, `Received from PEER:
//! LINE` per line, and `closed (REASON)` when a client goes.
//!
//! # What happens, step by step
//!
//! The Go server calls `Accept` in a loop and starts a goroutine per
//! connection that blocks in `Read`. Here one thread per shard waits in
//! `epoll_wait` for *any* of its sockets to become ready, and never waits
//! on one socket:
//!
//! 1. A client's SYN arrives; the kernel completes the three-way
//!    handshake by itself and queues the connection on the listening
//!    socket, which becomes readable. The shard calls `accept4` until it
//!    says `EAGAIN`, puts each connection in its slab and registers it with
//!    epoll; then `on_open` runs (nothing to do here).
//! 2. Bytes arrive: the socket becomes readable. The shard lends the
//!    connection a buffer from its pool, `recvfrom` copies what the kernel
//!    holds into it, and `on_data` sees every byte not yet consumed.
//! 3. `on_data` returns how many bytes it used. A line without its `\n`
//!    yet stays in the buffer and is shown again with the next read, so a
//!    line split across TCP segments is never misread (the Go server's
//!    single `Read` of 1024 bytes would cut it).
//! 4. `conn.send` writes through at once (`sendto`) when nothing is
//!    queued; what the kernel does not take now is queued and the shard
//!    asks epoll for writability, so a slow reader never blocks the loop.
//! 5. When the client closes, `recvfrom` returns 0; the shard flushes what
//!    it owes, closes the socket, and calls `on_close`. The timer wheel
//!    closes a client that stays idle for 300 s, or leaves a line
//!    unfinished for 10 s after its first byte (slowloris): `closed
//!    (IdleTimeout)`, `closed (FrameTimeout)`.

use sockloop::codec::LineCodec;
use sockloop::service::{CloseReason, ConnContext, ConnId, ShardContext, TcpService};
use sockloop::Server;

/// Longest line accepted, `\n` included: a client that sends more without
/// a newline is answered with an error and closed, never buffered forever.
const MAX_LINE: usize = 1024;

/// One value per shard (each shard thread owns its own, so no lock).
struct Hello {
    codec: LineCodec,
}

impl TcpService for Hello {
    fn on_data(&mut self, conn: &mut ConnContext<'_>, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            match self.codec.decode(&data[used..]) {
                Ok(Some((line, n))) => {
                    used += n;
                    // println! may wait on a full stdout pipe; a real server
                    // logs instead (the log crate, rate-limited).
                    let text = String::from_utf8_lossy(line.trim_ascii());
                    println!("Received from {}: {text}", conn.peer_addr());
                    conn.send(b"Hello from TCP server!\n");
                }
                Ok(None) => return used, // the rest of a line comes later
                Err(e) => {
                    conn.send(format!("error: {e}\n").as_bytes());
                    conn.close(); // flushes the error, then closes
                    return data.len();
                }
            }
        }
    }

    fn on_close(&mut self, _shard: &mut ShardContext<'_>, _id: ConnId, reason: CloseReason) {
        // The socket is closed and gone from the slab; only its id is left.
        println!("closed ({reason:?})");
    }
}

fn main() -> Result<(), sockloop::Error> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    let Ok(addr) = addr.parse() else {
        eprintln!("usage: tcp_server [ADDR]   e.g. 127.0.0.1:8080");
        std::process::exit(2);
    };
    let server = Server::builder()
        .tcp(addr, || Hello {
            codec: LineCodec::new(MAX_LINE),
        })
        .build()?; // binds now: "address in use" surfaces here
    println!("listening on tcp {}", server.tcp_addrs()[0]);
    server.run() // the shards' loops; returns when stopped
}
