//! Shards macro benchmark (issue 03): sockloop's TCP echo with 1 and with 2
//! shards under the same load, in one run.
//!
//! For every measurement a fresh server (`ServerConfig { shards: n }`,
//! SO_REUSEPORT, unpinned) is started in this process and loaded by the
//! single-threaded mio load generator `sockloop::client::bench::TcpLoad`
//! (latency recording off), stepped on the main thread: 100 connections, 64-byte messages, closed loop with 1 (and then
//! 4) messages in flight per connection, TCP_NODELAY; every echoed byte is
//! checked. Rounds alternate the order (1, 2 shards; then 2, 1; ...).
//!
//! Measured per window: round trips per second; the server's CPU, summed
//! over every `sockloop-shard-*` thread, per round trip (utime+stime from
//! `/proc/self/task/<tid>/stat`, with the exact `schedstat` run time
//! alongside); server and generator CPU as % of one core; and how the
//! connections (`conns_accepted` of `handle.shard_stats()`) and the server
//! CPU split over the shards.
//!
//! `cargo bench --bench shards`; `SOCKLOOP_BENCH_SECS` (default 3) is the
//! measured window, `SOCKLOOP_BENCH_WARMUP_SECS` (1) the warm-up before it,
//! `SOCKLOOP_BENCH_ROUNDS` (4) the rounds. With `--test` (or when run by
//! `cargo test --benches`) it does one tiny round as a smoke test.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{clk_tck, find_tids, median, quick_mode, round_plan, tcp_load, Cpu};
use sockloop::client::bench::TcpLoad;

const CONNS: usize = 100;
/// Bytes per message.
const MSG: usize = 64;
/// Messages in flight per connection, one load point each.
const DEPTHS: [usize; 2] = [1, 4];
/// The configurations compared.
const SHARDS: [usize; 2] = [1, 2];
const THREAD_PREFIX: &str = "sockloop-shard-";

/// One measured window.
#[derive(Debug, Clone)]
struct Sample {
    rt_per_s: f64,
    /// Server CPU (all shards) µs per round trip, from stat ticks.
    srv_us_stat: f64,
    /// The same from schedstat, if the kernel has it.
    srv_us_sched: Option<f64>,
    /// Server CPU seconds (all shards) per wall second.
    srv_util: f64,
    /// Generator CPU seconds per wall second.
    gen_util: f64,
    /// Connections each shard accepted.
    conns: Vec<u64>,
    /// Each shard's share of the server CPU (schedstat, else stat).
    cpu_share: Vec<f64>,
}

/// Waits until exactly `n` shard threads run, and returns their ids in
/// shard order (by name).
fn wait_for_shards(n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tids = find_tids(THREAD_PREFIX);
        if tids.len() == n {
            let mut named: Vec<(String, u32)> = tids
                .into_iter()
                .map(|tid| {
                    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                        .unwrap_or_default();
                    (comm.trim_end().to_string(), tid)
                })
                .collect();
            named.sort_by_key(|(name, _)| {
                name[THREAD_PREFIX.len().min(name.len())..]
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            return named.into_iter().map(|(_, tid)| tid).collect();
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} {THREAD_PREFIX}* threads, found {}",
            tids.len()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn measure(shards: usize, depth: usize, warmup: Duration, window: Duration, tck: u64) -> Sample {
    let config = sockloop::ServerConfig {
        sources: sockloop::limit::IpLimits::unlimited(),
        shards,
        ..Default::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = sockloop::Server::builder()
        .config(config)
        .tcp(any, || sockloop::services::Echo)
        .build()
        .expect("sockloop server builds");
    let addr = server.tcp_addrs()[0];
    let handle = server.handle();
    let running = thread::spawn(move || server.run());
    let tids = wait_for_shards(shards);

    let mut load = tcp_load(addr, CONNS, depth, warmup, window);
    let run_until = |load: &mut TcpLoad, until: Instant| loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        load.step((until - now).min(Duration::from_millis(50)))
            .unwrap_or_else(|e| panic!("{shards}-shard load failed: {e}"));
    };
    // The load sends until its window ends: measure exactly that window.
    let measured = load.window();
    run_until(&mut load, measured.start);

    let rt0 = load.completed();
    let per0: Vec<Cpu> = tids.iter().map(|&t| Cpu::of(Some(t))).collect();
    let (srv0, gen0) = (Cpu::sum(&tids), Cpu::of(None));
    let start = Instant::now();
    run_until(&mut load, measured.end);
    let (srv1, gen1) = (Cpu::sum(&tids), Cpu::of(None));
    let per1: Vec<Cpu> = tids.iter().map(|&t| Cpu::of(Some(t))).collect();
    let wall = start.elapsed().as_secs_f64();
    let rts = (load.completed() - rt0).max(1) as f64;
    let conns: Vec<u64> = handle
        .shard_stats()
        .iter()
        .map(|s| s.conns_accepted)
        .collect();
    let report = load.report();
    assert!(report.clean(), "{shards}-shard load: {}", report.problems());
    drop(load); // closes every client socket
    handle.shutdown();
    running
        .join()
        .expect("sockloop thread")
        .expect("sockloop run");

    let per: Vec<f64> = per1
        .iter()
        .zip(&per0)
        .map(|(b, a)| {
            b.sched_secs_since(a)
                .unwrap_or_else(|| b.secs_since(a, tck))
        })
        .collect();
    let per_total: f64 = per.iter().sum();
    let srv = srv1.secs_since(&srv0, tck);
    Sample {
        rt_per_s: rts / wall,
        srv_us_stat: srv * 1e6 / rts,
        srv_us_sched: srv1.sched_secs_since(&srv0).map(|s| s * 1e6 / rts),
        srv_util: srv / wall,
        gen_util: gen1.secs_since(&gen0, tck) / wall,
        conns,
        cpu_share: per
            .iter()
            .map(|s| if per_total > 0.0 { s / per_total } else { 0.0 })
            .collect(),
    }
}

fn split(values: &[f64], pct: bool) -> String {
    values
        .iter()
        .map(|v| {
            if pct {
                format!("{:.0}%", v * 100.0)
            } else {
                format!("{v:.0}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn main() {
    let quick = quick_mode();
    let (warmup, window, rounds) = round_plan(quick, 4);
    let tck = clk_tck();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "shards: sockloop TCP echo with 1 vs 2 shards (SO_REUSEPORT, unpinned), {}",
        if quick {
            "quick smoke run"
        } else {
            "benchmark"
        }
    );
    println!(
        "  load: {CONNS} conns x {MSG} B closed loop, {} in flight per conn, NODELAY, every echoed byte checked",
        DEPTHS.map(|d| d.to_string()).join(" / ")
    );
    println!(
        "  {rounds} rounds, alternating order, fresh server each, {:.2}s warm-up + {:.2}s measured; medians below",
        warmup.as_secs_f64(),
        window.as_secs_f64()
    );
    println!(
        "  NOTE: {cores} cores. The load generator is ONE thread in this process and competes with the server for them."
    );
    println!(
        "  CPU from /proc/self/task/<tid>/stat utime+stime at {tck} Hz, summed over {THREAD_PREFIX}* (schedstat ns alongside); 100% = one core"
    );
    print_loadavg("before");

    // samples[depth][config]
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); SHARDS.len()]; DEPTHS.len()];
    for round in 0..rounds {
        for (d, &depth) in DEPTHS.iter().enumerate() {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for c in order {
                let s = measure(SHARDS[c], depth, warmup, window, tck);
                println!(
                    "  round {} depth {depth} {} shard(s): {:>9.0} rt/s  {:>6.2} µs/rt (schedstat {})  server {:>3.0}% CPU  generator {:>3.0}%  conns {}  cpu split {}",
                    round + 1,
                    SHARDS[c],
                    s.rt_per_s,
                    s.srv_us_stat,
                    s.srv_us_sched.map_or("n/a".into(), |v| format!("{v:.2}")),
                    s.srv_util * 100.0,
                    s.gen_util * 100.0,
                    split(&s.conns.iter().map(|&c| c as f64).collect::<Vec<_>>(), false),
                    split(&s.cpu_share, true),
                );
                samples[d][c].push(s);
            }
        }
    }
    print_loadavg("after");
    report(&samples, cores);
}

/// Other work on the machine skews everything: show how much there was.
fn print_loadavg(when: &str) {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  loadavg {when}: {}", loadavg.trim());
}

/// The medians of one (depth, config) cell, field by field.
fn medians(samples: &[Sample]) -> Sample {
    let pick = |f: &dyn Fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    let sched: Vec<f64> = samples.iter().filter_map(|s| s.srv_us_sched).collect();
    let shards = samples[0].conns.len();
    Sample {
        rt_per_s: pick(&|s| s.rt_per_s),
        srv_us_stat: pick(&|s| s.srv_us_stat),
        srv_us_sched: (sched.len() == samples.len()).then(|| median(&mut sched.clone())),
        srv_util: pick(&|s| s.srv_util),
        gen_util: pick(&|s| s.gen_util),
        conns: (0..shards)
            .map(|i| pick(&|s| s.conns[i] as f64).round() as u64)
            .collect(),
        cpu_share: (0..shards).map(|i| pick(&|s| s.cpu_share[i])).collect(),
    }
}

fn report(samples: &[Vec<Vec<Sample>>], cores: usize) {
    println!();
    println!(
        "{:<6} {:<7} {:>10} {:>14} {:>16} {:>9} {:>9} {:>13} {:>13}",
        "depth",
        "shards",
        "rt/s",
        "srv CPU µs/rt",
        "(schedstat µs)",
        "srv CPU",
        "gen CPU",
        "conns/shard",
        "CPU/shard"
    );
    let mut cells: Vec<Vec<Sample>> = Vec::new();
    for (d, &depth) in DEPTHS.iter().enumerate() {
        let mut row = Vec::new();
        for (c, &shards) in SHARDS.iter().enumerate() {
            let m = medians(&samples[d][c]);
            println!(
                "{:<6} {:<7} {:>10.0} {:>14.2} {:>16} {:>8.0}% {:>8.0}% {:>13} {:>13}",
                depth,
                shards,
                m.rt_per_s,
                m.srv_us_stat,
                m.srv_us_sched.map_or("n/a".into(), |v| format!("{v:.2}")),
                m.srv_util * 100.0,
                m.gen_util * 100.0,
                split(
                    &m.conns.iter().map(|&c| c as f64).collect::<Vec<_>>(),
                    false
                ),
                split(&m.cpu_share, true),
            );
            row.push(m);
        }
        cells.push(row);
    }
    println!(
        "(conns/shard, CPU/shard: each shard's median over the rounds, so they need not add up)"
    );
    println!();
    println!("2 shards / 1 shard (medians):");
    for (d, &depth) in DEPTHS.iter().enumerate() {
        let (one, two) = (&cells[d][0], &cells[d][1]);
        let sched = one
            .srv_us_sched
            .zip(two.srv_us_sched)
            .map_or("n/a".into(), |(a, b)| format!("x{:.3}", b / a));
        println!(
            "  depth {depth}: rt/s x{:.3}; server CPU per rt x{:.3} (stat) / {sched} (schedstat); server+generator CPU {:.0}% -> {:.0}% of {}%",
            two.rt_per_s / one.rt_per_s,
            two.srv_us_stat / one.srv_us_stat,
            (one.srv_util + one.gen_util) * 100.0,
            (two.srv_util + two.gen_util) * 100.0,
            cores * 100,
        );
    }
    println!();
    println!(
        "NOTE: on {cores} cores with the load generator in this process, a second shard competes with the"
    );
    println!(
        "  generator for the same cores, so rt/s need not scale (and may drop). What shows sharding working"
    );
    println!("  is the per-shard split of connections and CPU, and the server CPU per round trip.");
}
