//! Reliable-UDP benchmark: goodput and delivery latency of the `rudp` echo
//! at 0% and 10% loss, for 1 and 64 peers.
//!
//! Each case starts a fresh `RudpEcho` server (one shard, 1 MiB receive
//! buffer) behind the lossy relay of `tests/common/relay.rs` (10%:
//! `Fates::lossy(0.1, seed)`, i.e. 10% dropped, 2% duplicated, 2% reordered
//! each way; 0%: the relay only forwards). Every peer is a blocking
//! `client::rudp::Client` (default `Config`: window 128) on its own thread,
//! connected through the relay. Once all are connected, each sends
//! numbered 1000-byte messages (one fragment), keeping its send window
//! full with `try_queue`, and takes the echoes with `recv_at`. Every echo is
//! checked for content and order, and after the window each peer waits for
//! all its echoes (up to `Config::dead_after` + 1 s); a wrong, misordered
//! or missing echo fails the bench. Reported per case, for the echoes
//! received in the measured window (after the warm-up):
//!
//! - goodput: echoed payload bytes and messages per second, all peers, and
//!   the slowest peer's messages per second (fairness);
//! - latency from `try_queue` to the echo's receipt, p50 / p99 / max
//!   (hdrhistogram). With the window full it is mostly queueing: about
//!   the messages in flight over the rate (Little's law);
//! - the longest time any peer went without an echo (stalls);
//! - over the connections' whole lives: client retransmissions (client to
//!   server only: the server's are not visible) and their share of the
//!   messages sent, RTO timeouts, the relay's deliberate drops (both ways),
//!   and the kernel's drops on the full receive buffers of the relay's
//!   sockets and the server's (`/proc/net/udp`). The relay is one thread
//!   with default buffers: bursts of a window overflow them, so "0%" is
//!   not lossless.
//!
//! Run: `cargo bench --bench rudp`. `SOCKLOOP_BENCH_SECS` (default 3) is the
//! measured window, `SOCKLOOP_BENCH_WARMUP_SECS` (1) the warm-up,
//! `SOCKLOOP_BENCH_ROUNDS` (3) the rounds (goodput: median; latency: all
//! rounds merged; counters: summed). With `--test` (or from `cargo test
//! --benches`) it is a smoke test: one tiny round, 8 peers instead of 64,
//! and no waiting for the echoes still in flight at the end.

mod common;
#[path = "../tests/common/relay.rs"]
mod relay;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sockloop::client::rudp::Client;
use sockloop::rudp::Config;
use sockloop::services::rudp_echo::{random_secret, RudpEcho};
use sockloop::{Server, ServerConfig};

use common::{median, quick_mode, round_plan};
use relay::{Fates, Relay};

const MSG: usize = 1000;
const CASES: [(f64, usize); 4] = [(0.0, 1), (0.0, 64), (0.1, 1), (0.1, 64)];
const QUICK_PEERS: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Warm-up, measured window, and how long to wait for the last echoes.
#[derive(Clone, Copy)]
struct Plan {
    warmup: Duration,
    window: Duration,
    drain: Duration,
}

/// Message `n` of peer `peer`: the number, the peer, then a pattern.
fn message(peer: u32, n: u64) -> Vec<u8> {
    let mut m = vec![0u8; MSG];
    m[..8].copy_from_slice(&n.to_le_bytes());
    m[8..12].copy_from_slice(&peer.to_le_bytes());
    for (i, b) in m[12..].iter_mut().enumerate() {
        *b = (n.wrapping_mul(31) as usize + i + peer as usize) as u8;
    }
    m
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// What one peer saw: echoes in the window, their latencies (µs), the
/// longest gap between them, and the connection's counters.
struct Peer {
    echoes: u64,
    latency: Histogram<u64>,
    gap: Duration,
    sent: u64,
    retx: u64,
    timeouts: u64,
}

/// One peer's life: connect, wait for the others, load, drain, close.
fn run_peer(
    id: u32,
    relay: SocketAddr,
    barrier: &Barrier,
    start: &OnceLock<Instant>,
    plan: Plan,
) -> Result<Peer, String> {
    let connected = Client::connect(relay, Config::default(), CONNECT_TIMEOUT);
    barrier.wait(); // before any early return: the others wait for us
    let fail = |what: String| format!("peer {id}: {what}");
    let mut client = connected.map_err(|e| fail(format!("connect: {e}")))?;
    let t0 = *start.get_or_init(Instant::now);
    let (from, to) = (t0 + plan.warmup, t0 + plan.warmup + plan.window);
    let (mut echoes, mut latency, mut gap, mut sent) = (0, histogram(), Duration::ZERO, 0);
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let (mut expected, mut last) = (0u64, from);
    loop {
        let now = Instant::now();
        if now >= to && (in_flight.is_empty() || now >= to + plan.drain) {
            break;
        }
        while now < to
            && client
                .try_queue(&message(id, sent))
                .map_err(|e| fail(e.to_string()))?
        {
            in_flight.push_back(Instant::now());
            sent += 1;
        }
        let got = client.recv_at(Duration::from_millis(5));
        let Some((at, echo)) = got.map_err(|e| fail(e.to_string()))? else {
            continue;
        };
        let sent_at = in_flight
            .pop_front()
            .ok_or_else(|| fail("echo never sent".into()))?;
        if echo != message(id, expected) {
            let what = match echo.get(..8) {
                Some(n) if n != expected.to_le_bytes() => "out of order",
                _ => "corrupt",
            };
            return Err(fail(format!("echo #{expected} {what} ({} B)", echo.len())));
        }
        expected += 1;
        if (from..to).contains(&at) {
            echoes += 1;
            latency.saturating_record(at.duration_since(sent_at).as_micros() as u64);
            (gap, last) = (gap.max(at - last), at);
        }
    }
    gap = gap.max(to.saturating_duration_since(last));
    if !in_flight.is_empty() && !plan.drain.is_zero() {
        let missing = in_flight.len();
        return Err(fail(format!(
            "{missing} echoes missing {:?} after the window",
            plan.drain
        )));
    }
    let stats = client.stats();
    client.close().map_err(|e| fail(format!("close: {e}")))?;
    let (retx, timeouts) = (stats.retransmissions, stats.timeouts);
    Ok(Peer {
        echoes,
        latency,
        gap,
        sent,
        retx,
        timeouts,
    })
}

/// One case, one round: the peers that finished, the relay's drops,
/// kernel drops (on the relay's sockets, on the server's) and what went
/// wrong.
struct Outcome {
    peers: Vec<Peer>,
    relay_dropped: u64,
    kernel: [u64; 2],
    failures: Vec<String>,
}

/// Drops on the server's socket and on the relay's (its front socket, and
/// its upstream sockets connected to the server), from `/proc/net/udp`.
fn socket_drops(server: u16, relay: u16) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    let (mut at_server, mut at_relay) = (0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let drops: u64 = f.last().and_then(|d| d.parse().ok()).unwrap_or(0);
        match (
            f.get(1).and_then(|a| port(a)),
            f.get(2).and_then(|a| port(a)),
        ) {
            (Some(local), _) if local == server => at_server += drops,
            (Some(local), remote) if local == relay || remote == Some(server) => at_relay += drops,
            _ => {}
        }
    }
    (at_server, at_relay)
}

fn run_case(loss: f64, peers: usize, plan: Plan, seed: u64) -> Outcome {
    let secret = random_secret().expect("random secret");
    let mut config = ServerConfig {
        shards: 1,
        ..ServerConfig::default()
    };
    config.socket.recv_buffer = Some(1 << 20); // bursts of 128 x 1200 B datagrams
    let server = Server::builder()
        .config(config)
        .udp("127.0.0.1:0".parse().unwrap(), move || {
            // Every peer comes from 127.0.0.1: one source, past the
            // default per-source cap of 4.
            let config = Config {
                max_peers_per_source: 128,
                ..Config::default()
            };
            RudpEcho::new(config, 128, &secret)
        })
        .build()
        .expect("rudp server builds");
    let (handle, server_addr) = (server.handle(), server.udp_addrs()[0]);
    let running = thread::spawn(move || server.run());
    // At 0%: no drops, duplicates or reordering either.
    let relay = Relay::start(server_addr, Fates::lossy(loss, seed));

    let barrier = Arc::new(Barrier::new(peers));
    let start = Arc::new(OnceLock::new());
    let threads: Vec<_> = (0..peers as u32)
        .map(|id| {
            let (addr, barrier, start) = (relay.addr, Arc::clone(&barrier), Arc::clone(&start));
            thread::Builder::new()
                .name(format!("rudp-peer-{id}"))
                .spawn(move || run_peer(id, addr, &barrier, &start, plan))
                .expect("spawn peer")
        })
        .collect();
    let results: Vec<Result<Peer, String>> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| Err("peer thread panicked".into()))
        })
        .collect();

    let (at_server, at_relay) = socket_drops(server_addr.port(), relay.addr.port());
    let relay_dropped = relay.finish().dropped;
    handle.stop();
    running.join().expect("server thread").expect("server run");

    let (peers, failures) = results.into_iter().partition::<Vec<_>, _>(|r| r.is_ok());
    Outcome {
        peers: peers.into_iter().flatten().collect(),
        relay_dropped,
        kernel: [at_relay, at_server],
        failures: failures.into_iter().filter_map(|r| r.err()).collect(),
    }
}

/// Latency quantile in milliseconds.
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

const HEADER: &str = "| loss | peers | goodput MB/s | msg/s | slowest peer msg/s | p50 ms | p99 ms | max ms | longest gap ms | client retx (% of sent) | RTO timeouts | relay drops | kernel drops relay / server |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// A table row for rounds `os` of one case: goodput the median, latency
/// merged, counters summed.
fn row(loss: f64, peers: usize, os: &[Outcome], window: Duration) -> String {
    let all = || os.iter().flat_map(|o| &o.peers);
    let mut latency = histogram();
    all().for_each(|p| latency.add(&p.latency).expect("same bounds"));
    let per_s = |f: &dyn Fn(&Outcome) -> u64| {
        let mut rates: Vec<f64> = os
            .iter()
            .map(|o| f(o) as f64 / window.as_secs_f64())
            .collect();
        median(&mut rates)
    };
    let rate = per_s(&|o| o.peers.iter().map(|p| p.echoes).sum());
    let slowest = per_s(&|o| o.peers.iter().map(|p| p.echoes).min().unwrap_or(0));
    let gap = all().map(|p| p.gap).max().unwrap_or_default();
    let sum = |f: &dyn Fn(&Peer) -> u64| all().map(f).sum::<u64>();
    let (sent, retx) = (sum(&|p| p.sent), sum(&|p| p.retx));
    let kernel = [0, 1].map(|i| os.iter().map(|o| o.kernel[i]).sum::<u64>().to_string());
    format!(
        "| {:.0}% | {peers} | {:.2} | {rate:.0} | {slowest:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {retx} ({:.1}%) | {} | {} | {} |",
        loss * 100.0,
        rate * MSG as f64 / 1e6,
        ms(&latency, 0.5),
        ms(&latency, 0.99),
        latency.max() as f64 / 1000.0,
        gap.as_secs_f64() * 1e3,
        retx as f64 * 100.0 / sent.max(1) as f64,
        sum(&|p| p.timeouts),
        os.iter().map(|o| o.relay_dropped).sum::<u64>(),
        kernel.join(" / "),
    )
}

fn main() {
    let quick = quick_mode();
    let (warmup, window, rounds) = round_plan(quick, 3);
    let drain = match quick {
        true => Duration::ZERO,
        false => Config::default().dead_after() + Duration::from_secs(1),
    };
    let plan = Plan {
        warmup,
        window,
        drain,
    };
    println!(
        "rudp: echo of {MSG} B messages through a lossy relay, window full; {}",
        if quick {
            "quick smoke run"
        } else {
            "benchmark"
        }
    );
    println!(
        "{rounds} round(s) of {:.1}s warm-up + {:.1}s measured per case; {} cores",
        warmup.as_secs_f64(),
        window.as_secs_f64(),
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let peers_of = |peers: usize| if quick { peers.min(QUICK_PEERS) } else { peers };
    let mut outcomes: Vec<Vec<Outcome>> = CASES.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (c, &(loss, peers)) in CASES.iter().enumerate() {
            let o = run_case(loss, peers_of(peers), plan, 0x5eed + round as u64);
            let row = row(loss, peers_of(peers), std::slice::from_ref(&o), window);
            println!("round {}: {row}", round + 1);
            outcomes[c].push(o);
        }
    }
    println!("\n{rounds} round(s): median goodput, latency merged, counters summed\n{HEADER}");
    let mut failures = Vec::new();
    for (&(loss, peers), os) in CASES.iter().zip(&outcomes) {
        println!("{}", row(loss, peers_of(peers), os, window));
        let case = format!("{:.0}%/{}", loss * 100.0, peers_of(peers));
        failures.extend(
            os.iter()
                .flat_map(|o| &o.failures)
                .map(|f| format!("{case}: {f}")),
        );
    }
    assert!(
        failures.is_empty(),
        "rudp echo failures:\n{}",
        failures.join("\n")
    );
}
