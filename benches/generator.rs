//! Generator overhead: the CPU `sockloop bench`'s load generator spends per
//! round trip, beside the CPU the echo server spends, in one run, so users
//! know when the generator itself is the bottleneck.
//!
//! One process: a sockloop echo server (1 shard, thread
//! `sockloop-shard-0`) and the generator (`client::bench::run_tcp` /
//! `run_udp`, 1 thread). Server CPU is its thread's `schedstat`; generator
//! CPU is the whole process's CPU (`/proc/self/stat`) minus the server's.
//! Run: `cargo bench --bench generator` (`-- --test`: a short smoke run).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{clk_tck, find_tid, quick_mode, round_plan, Cpu};
use sockloop::client::bench::{run_tcp, run_udp, LoadConfig, Report};
use sockloop::limit::IpLimits;
use sockloop::{services::Echo, Server, ServerConfig};

/// utime + stime of the whole process, in seconds.
fn process_cpu(tck: u64) -> f64 {
    common::own_cpu_ticks() as f64 / tck as f64
}

type Load = fn(SocketAddr, LoadConfig) -> std::io::Result<Report>;

fn main() {
    let quick = quick_mode();
    let (warmup, measure, _) = round_plan(quick, 1);
    let tck = clk_tck();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 1,
        sources: IpLimits::unlimited(),
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp(any, || Echo)
        .udp(any, || Echo)
        .build()
        .unwrap();
    let (tcp, udp) = (server.tcp_addrs()[0], server.udp_addrs()[0]);
    let handle = server.handle();
    let running = std::thread::spawn(move || server.run());
    std::thread::sleep(Duration::from_millis(100));
    let shard = find_tid("sockloop-shard-0");

    println!(
        "generator overhead: CPU per round trip, generator (1 thread) beside server (1 shard)"
    );
    println!("| load | rt/s | generator µs/rt | server µs/rt | generator / server |");
    println!("| --- | --- | --- | --- | --- |");
    let cases: [(&str, SocketAddr, Load, usize, usize); 3] = [
        ("TCP 50 conns × 1 in flight", tcp, run_tcp, 50, 1),
        ("TCP 50 conns × 8 in flight", tcp, run_tcp, 50, 8),
        ("UDP 32 sockets × 4 in flight", udp, run_udp, 32, 4),
    ];
    for (name, addr, load, conns, depth) in cases {
        let config = LoadConfig {
            conns,
            size: 64,
            depth,
            duration: measure,
            warmup,
            threads: 1,
            ..LoadConfig::default()
        };
        let (server_before, process_before) = (Cpu::of(shard), process_cpu(tck));
        let report = load(addr, config).unwrap();
        let (server_after, process_after) = (Cpu::of(shard), process_cpu(tck));
        assert!(report.clean(), "{name}: {}", report.text());
        // Warm-up and drain burn CPU too: divide by every round trip made.
        let round_trips =
            report.received as f64 * (warmup + measure).as_secs_f64() / measure.as_secs_f64();
        let server = server_after
            .sched_secs_since(&server_before)
            .unwrap_or_else(|| server_after.secs_since(&server_before, tck));
        let generator = (process_after - process_before - server).max(0.0);
        let per = |secs: f64| secs * 1e6 / round_trips.max(1.0);
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | ×{:.2} |",
            report.rate(),
            per(generator),
            per(server),
            generator / server.max(f64::EPSILON)
        );
    }
    handle.stop();
    running.join().unwrap().unwrap();
}
