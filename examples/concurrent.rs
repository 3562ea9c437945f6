//! The article's concurrent servers (4.1): TCP echo and UDP echo, served by
//! a few shards instead of a goroutine per connection and a pool of UDP
//! workers.
//!
//! ```sh
//! cargo run --example concurrent                  # tcp 127.0.0.1:9201, udp 127.0.0.1:9202, 2 shards
//! cargo run --example concurrent -- 127.0.0.1:0 127.0.0.1:0 4
//! nc 127.0.0.1 9201                               # or: cargo run --example rtt_client
//! ```
//!
//! It prints `listening on tcp ADDR udp ADDR with N shards` once bound.
//! Ctrl-C drains, and then it prints one line per shard: the
//! connections, bytes and datagrams that shard served.
//!
//! # Shards against a goroutine per connection
//!
//! The Go server starts a goroutine per connection, each blocked in
//! `Read` with its own 4 KiB buffer; the Go runtime parks them and wakes
//! the ones whose sockets are ready (it runs epoll underneath). UDP
//! datagrams go to 8 workers through a channel of 100; when the channel is
//! full the reading goroutine blocks, and the kernel drops what arrives.
//!
//! sockloop makes that machinery the program. Each shard is one thread
//! with its own epoll, its own copy of the listening sockets
//! (`SO_REUSEPORT`: the kernel spreads new connections and datagrams over
//! the shards by a hash of the addresses), and its own buffers, timers and
//! slab of connections. Nothing is shared between shards, so no lock is
//! taken per event. A connection holds no buffer while idle: buffers are
//! lent from the shard's pool for one read and returned.
//!
//! What that buys, from the README's Performance section (release builds,
//! a 2-core machine shared with the load generator):
//! - one shard against a tokio echo server (tokio is what Go's runtime
//!   does: tasks over epoll): TCP a tie, 8.06 against 8.12 µs of server
//!   CPU per round trip; UDP 5.19 against 6.14 µs, since `recvmmsg`/
//!   `sendmmsg` move many datagrams per syscall (`cargo bench --bench echo`);
//! - an idle connection costs 243.7 bytes of process memory at 10,000
//!   held, and one process held 19,000 connections (`cargo bench --bench
//!   idle_memory`; a goroutine starts with a 2 KiB stack plus its buffer);
//! - 2 shards against 1 on 2 cores shared with the generator: ×0.80 and
//!   ×0.91 of the round trips, since three busy threads share two cores
//!   (`cargo bench --bench shards`): a shard per core pays off only when
//!   the cores are the server's.

use std::net::SocketAddr;

use sockloop::services::Echo;
use sockloop::{Server, ServerConfig};

fn main() -> Result<(), sockloop::Error> {
    let mut args = std::env::args().skip(1);
    let tcp = args.next().unwrap_or("127.0.0.1:9201".into());
    let udp = args.next().unwrap_or("127.0.0.1:9202".into());
    let shards = args.next().unwrap_or("2".into());
    let (Ok(tcp), Ok(udp), Ok(shards)) = (
        tcp.parse::<SocketAddr>(),
        udp.parse::<SocketAddr>(),
        shards.parse::<usize>(),
    ) else {
        eprintln!("usage: concurrent [TCP_ADDR [UDP_ADDR [SHARDS]]]");
        std::process::exit(2);
    };
    let config = ServerConfig {
        shards,
        ..ServerConfig::default()
    };
    // `|| Echo` is called once per shard: each shard owns its service.
    let server = Server::builder()
        .config(config)
        .tcp(tcp, || Echo)
        .udp(udp, || Echo)
        .build()?;
    println!(
        "listening on tcp {} udp {} with {shards} shards",
        server.tcp_addrs()[0],
        server.udp_addrs()[0]
    );
    let handle = server.handle();
    handle.stop_on_signals()?;
    server.run()?;
    // The counters outlive the shards: what each one did.
    for (shard, stats) in handle.shard_stats().iter().enumerate() {
        println!(
            "shard {shard}: {} connections, {} bytes in, {} datagrams in",
            stats.conns_accepted, stats.tcp_bytes_in, stats.udp_in
        );
    }
    Ok(())
}
