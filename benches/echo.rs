//! Echo macro benchmark: sockloop vs a tokio echo server under the same load.
//!
//! Both servers run in this process, each on ONE thread (sockloop's single
//! shard `sockloop-shard-0`; tokio as a `current_thread` runtime on the
//! thread `tokio-echo`), and are loaded one after the other, in alternating
//! order over several rounds, by the same single-threaded mio load
//! generators stepped on the main thread (TCP: the library's
//! `client::bench::TcpLoad`, latency recording off; UDP: `UdpLoad` below):
//!
//! - TCP: 100 connections, 64-byte messages, one in flight per connection
//!   (closed loop), TCP_NODELAY; every echoed byte is checked.
//! - UDP: 32 sockets, 4 datagrams of 64 bytes in flight per socket (closed
//!   loop); a datagram unanswered after 200 ms counts as lost and is
//!   replaced by a new one.
//!
//! Measured per window: round trips per second, and the server thread's
//! CPU time per round trip, from utime+stime in `/proc/self/task/<tid>/stat`
//! (clock-tick resolution) with the exact `schedstat` run time alongside.
//!
//! `cargo bench --bench echo`; `SOCKLOOP_BENCH_SECS` (default 3) is the
//! measured window, `SOCKLOOP_BENCH_WARMUP_SECS` (1) the warm-up before it,
//! `SOCKLOOP_BENCH_ROUNDS` (3) the rounds. With `--test` (or when run by
//! `cargo test --benches`) it does one tiny round as a smoke test.

mod common;

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use common::{clk_tck, find_tid, median, quick_mode, round_plan, tcp_load, Cpu};
use sockloop::client::bench::{message, TcpLoad};

/// Bytes per message, TCP and UDP.
const MSG: usize = 64;
const TCP_CONNS: usize = 100;
const UDP_SOCKETS: usize = 32;
const UDP_IN_FLIGHT: usize = 4;
const UDP_TIMEOUT: Duration = Duration::from_millis(200);
/// Goals: sockloop's server CPU per round trip below tokio's by this much.
const GOAL_TCP: f64 = 0.05;
const GOAL_UDP: f64 = 0.30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A running echo server under test.
struct Target {
    name: &'static str,
    tcp: SocketAddr,
    udp: SocketAddr,
    /// The server's only thread.
    tid: u32,
}

/// One measured window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rt_per_s: f64,
    /// Server CPU µs per round trip from stat ticks.
    srv_us_stat: f64,
    /// The same from schedstat, if the kernel has it.
    srv_us_sched: Option<f64>,
    /// Server CPU seconds per wall second.
    srv_util: f64,
    /// Generator CPU seconds per wall second.
    gen_share: f64,
    lost: u64,
}

// ---------------------------------------------------------------- servers

fn start_sockloop() -> (
    Target,
    sockloop::Handle,
    JoinHandle<Result<(), sockloop::Error>>,
) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // One shard: one core against tokio's one-thread runtime.
    let config = sockloop::ServerConfig {
        sources: sockloop::limit::IpLimits::unlimited(),
        shards: 1,
        ..sockloop::ServerConfig::default()
    };
    let server = sockloop::Server::builder()
        .config(config)
        .tcp(any, || sockloop::services::Echo)
        .udp(any, || sockloop::services::Echo)
        .build()
        .expect("sockloop server builds");
    let (tcp, udp) = (server.tcp_addrs()[0], server.udp_addrs()[0]);
    let handle = server.handle();
    let running = thread::spawn(move || server.run());
    let tid = wait_for_thread("sockloop-shard-0");
    let target = Target {
        name: "sockloop",
        tcp,
        udp,
        tid,
    };
    (target, handle, running)
}

/// The comparison server: one `current_thread` runtime on one thread.
struct TokioServer {
    stop: Arc<AtomicBool>,
    tcp: SocketAddr,
    thread: JoinHandle<()>,
}

fn start_tokio() -> (Target, TokioServer) {
    let tcp = StdTcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let udp = StdUdpSocket::bind("127.0.0.1:0").expect("bind udp");
    tcp.set_nonblocking(true).unwrap();
    udp.set_nonblocking(true).unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name("tokio-echo".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("tokio runtime");
            rt.block_on(common::tokio_echo(tcp, udp, stopping, common::TOKIO_READ));
        })
        .expect("spawn tokio-echo");
    let tid = wait_for_thread("tokio-echo");
    let target = Target {
        name: "tokio",
        tcp: tcp_addr,
        udp: udp_addr,
        tid,
    };
    let server = TokioServer {
        stop,
        tcp: tcp_addr,
        thread,
    };
    (target, server)
}

impl TokioServer {
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.tcp); // wakes the accept loop
        self.thread.join().expect("tokio-echo thread");
    }
}

fn wait_for_thread(name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(tid) = find_tid(name) {
            return tid;
        }
        assert!(Instant::now() < deadline, "no thread named {name}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------- load

/// A closed-loop load on one mio `Poll`.
trait Load {
    /// Handles one batch of events (waiting at most `timeout`).
    fn step(&mut self, timeout: Duration) -> io::Result<()>;
    /// Round trips completed so far.
    fn completed(&self) -> u64;
    /// Datagrams given up on so far.
    fn lost(&self) -> u64;
    /// What went wrong that must not (a corrupted echo, a connection
    /// closed), if anything.
    fn problems(&self) -> Option<String> {
        None
    }
}

impl Load for TcpLoad {
    fn step(&mut self, timeout: Duration) -> io::Result<()> {
        TcpLoad::step(self, timeout)
    }

    fn completed(&self) -> u64 {
        TcpLoad::completed(self)
    }

    fn lost(&self) -> u64 {
        0
    }

    fn problems(&self) -> Option<String> {
        let report = self.report();
        (!report.clean()).then(|| report.problems())
    }
}

struct UdpClient {
    socket: UdpSocket,
    /// The sequence number each in-flight slot waits for, and when it was sent.
    slots: [(u64, Instant); UDP_IN_FLIGHT],
    next_seq: u64,
    /// The datagram being sent.
    out: Vec<u8>,
}

struct UdpLoad {
    poll: Poll,
    events: Events,
    clients: Vec<UdpClient>,
    completed: u64,
    lost: u64,
    stale: u64,
    last_sweep: Instant,
    /// What an echo should be.
    expected: Vec<u8>,
}

/// Datagram id: socket index in the high bits, slot in the low byte.
fn udp_id(socket: usize, slot: usize) -> u32 {
    ((socket as u32) << 8) | slot as u32
}

impl UdpClient {
    fn send(&mut self, index: usize, slot: usize) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots[slot] = (seq, Instant::now());
        self.out.clear();
        message(udp_id(index, slot), seq, MSG, &mut self.out);
        match self.socket.send(&self.out) {
            Ok(_) => Ok(()),
            // Treated like a loss: the timeout sweep replaces it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl UdpLoad {
    fn new(addr: SocketAddr) -> io::Result<UdpLoad> {
        let poll = Poll::new()?;
        let now = Instant::now();
        let mut clients = Vec::with_capacity(UDP_SOCKETS);
        for i in 0..UDP_SOCKETS {
            let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
            socket.connect(addr)?;
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            clients.push(UdpClient {
                socket,
                slots: [(0, now); UDP_IN_FLIGHT],
                next_seq: 0,
                out: Vec::with_capacity(MSG),
            });
        }
        for (i, client) in clients.iter_mut().enumerate() {
            for slot in 0..UDP_IN_FLIGHT {
                client.send(i, slot)?;
            }
        }
        Ok(UdpLoad {
            poll,
            events: Events::with_capacity(1024),
            clients,
            completed: 0,
            lost: 0,
            stale: 0,
            last_sweep: now,
            expected: Vec::with_capacity(MSG),
        })
    }

    /// Replaces datagrams unanswered for `UDP_TIMEOUT`, counting them lost.
    fn sweep(&mut self) -> io::Result<()> {
        let now = Instant::now();
        if now - self.last_sweep < UDP_TIMEOUT / 4 {
            return Ok(());
        }
        self.last_sweep = now;
        for (i, client) in self.clients.iter_mut().enumerate() {
            for slot in 0..UDP_IN_FLIGHT {
                if now - client.slots[slot].1 >= UDP_TIMEOUT {
                    self.lost += 1;
                    client.send(i, slot)?;
                }
            }
        }
        Ok(())
    }
}

impl Load for UdpLoad {
    fn step(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.min(UDP_TIMEOUT / 4);
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        let mut buf = [0u8; 2048];
        for event in self.events.iter() {
            let index = event.token().0;
            let client = &mut self.clients[index];
            loop {
                let n = match client.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                assert_eq!(n, MSG, "udp echo of the wrong length");
                let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                let id = u32::from_le_bytes(buf[8..12].try_into().unwrap());
                let slot = (id & 0xff) as usize;
                assert!(
                    id >> 8 == index as u32 && slot < UDP_IN_FLIGHT,
                    "udp echo to the wrong socket"
                );
                self.expected.clear();
                message(id, seq, MSG, &mut self.expected);
                assert_eq!(buf[..MSG], self.expected[..], "bad udp echo");
                if client.slots[slot].0 == seq {
                    self.completed += 1;
                    client.send(index, slot)?;
                } else {
                    self.stale += 1; // the echo of a datagram already given up on
                }
            }
        }
        self.sweep()
    }

    fn completed(&self) -> u64 {
        self.completed
    }

    fn lost(&self) -> u64 {
        self.lost
    }
}

// ---------------------------------------------------------------- measuring

fn measure(target: &Target, proto: Proto, warmup: Duration, window: Duration, tck: u64) -> Sample {
    // The TCP load sends until its window ends: measure exactly that window.
    let (mut load, measured): (Box<dyn Load>, Range<Instant>) = match proto {
        Proto::Tcp => {
            let load = tcp_load(target.tcp, TCP_CONNS, 1, warmup, window);
            let measured = load.window();
            (Box::new(load), measured)
        }
        Proto::Udp => {
            let load = UdpLoad::new(target.udp).expect("udp load");
            let from = Instant::now() + warmup;
            (Box::new(load), from..from + window)
        }
    };
    let run_until = |load: &mut Box<dyn Load>, until: Instant| loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        load.step((until - now).min(Duration::from_millis(50)))
            .unwrap_or_else(|e| panic!("{} {} load failed: {e}", target.name, proto.name()));
    };
    run_until(&mut load, measured.start);

    let (rt0, lost0) = (load.completed(), load.lost());
    let (srv0, gen0) = (Cpu::of(Some(target.tid)), Cpu::of(None));
    let start = Instant::now();
    run_until(&mut load, measured.end);
    let (srv1, gen1) = (Cpu::of(Some(target.tid)), Cpu::of(None));
    let wall = start.elapsed().as_secs_f64();
    let rts = (load.completed() - rt0).max(1) as f64;
    let lost = load.lost() - lost0;
    if let Some(problems) = load.problems() {
        panic!("{} {} load: {problems}", target.name, proto.name());
    }
    drop(load); // closes every client socket

    let srv = srv1.secs_since(&srv0, tck);
    Sample {
        rt_per_s: rts / wall,
        srv_us_stat: srv * 1e6 / rts,
        srv_us_sched: srv1.sched_secs_since(&srv0).map(|s| s * 1e6 / rts),
        srv_util: srv / wall,
        gen_share: gen1.secs_since(&gen0, tck) / wall,
        lost,
    }
}

fn main() {
    let quick = quick_mode();
    let (warmup, window, rounds) = round_plan(quick, 3);
    let tck = clk_tck();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "echo: sockloop vs tokio (each server on ONE thread), {}",
        if quick {
            "quick smoke run"
        } else {
            "benchmark"
        }
    );
    println!(
        "  load: TCP {TCP_CONNS} conns x {MSG} B closed loop, NODELAY; UDP {UDP_SOCKETS} sockets x {UDP_IN_FLIGHT} in flight x {MSG} B, lost after {UDP_TIMEOUT:?}"
    );
    println!(
        "  {rounds} rounds, alternating order, {:.1}s warm-up + {:.1}s measured each; medians below",
        warmup.as_secs_f64(),
        window.as_secs_f64()
    );
    println!(
        "  NOTE: {cores} cores, shared machine: the one-thread load generator runs in this process and competes with the server for CPU; absolute rt/s is generator-bound, compare CPU per round trip"
    );
    println!(
        "  CPU from /proc/self/task/<tid>/stat utime+stime at {tck} Hz (schedstat ns alongside)"
    );
    print_loadavg("before");

    let (sockloop, handle, sockloop_thread) = start_sockloop();
    let (tokio, tokio_server) = start_tokio();
    let targets = [&sockloop, &tokio];
    // samples[target][proto]
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(), Vec::new()]; 2];
    for round in 0..rounds {
        for (p, proto) in [Proto::Tcp, Proto::Udp].into_iter().enumerate() {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for t in order {
                let s = measure(targets[t], proto, warmup, window, tck);
                println!(
                    "  round {} {:<8} {}: {:>9.0} rt/s  {:>6.2} µs/rt (schedstat {})  server {:>3.0}% CPU  generator {:>3.0}%  lost {}",
                    round + 1,
                    targets[t].name,
                    proto.name(),
                    s.rt_per_s,
                    s.srv_us_stat,
                    s.srv_us_sched.map_or("n/a".into(), |v| format!("{v:.2}")),
                    s.srv_util * 100.0,
                    s.gen_share * 100.0,
                    s.lost
                );
                samples[t][p].push(s);
            }
        }
    }
    handle.shutdown();
    sockloop_thread
        .join()
        .expect("sockloop thread")
        .expect("sockloop run");
    tokio_server.stop();
    print_loadavg("after");
    report(&samples, &targets);
}

/// Other work on the machine skews everything: show how much there was.
fn print_loadavg(when: &str) {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  loadavg {when}: {}", loadavg.trim());
}

/// The medians of one (target, proto) cell.
fn medians(samples: &[Sample]) -> Sample {
    let pick = |f: &dyn Fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    let sched: Vec<f64> = samples.iter().filter_map(|s| s.srv_us_sched).collect();
    Sample {
        rt_per_s: pick(&|s| s.rt_per_s),
        srv_us_stat: pick(&|s| s.srv_us_stat),
        srv_us_sched: (sched.len() == samples.len()).then(|| median(&mut sched.clone())),
        srv_util: pick(&|s| s.srv_util),
        gen_share: pick(&|s| s.gen_share),
        lost: pick(&|s| s.lost as f64) as u64,
    }
}

fn report(samples: &[Vec<Vec<Sample>>], targets: &[&Target; 2]) {
    println!();
    println!(
        "{:<9} {:<5} {:>10} {:>14} {:>16} {:>9} {:>9} {:>6}",
        "server", "proto", "rt/s", "srv CPU µs/rt", "(schedstat µs)", "srv CPU", "gen CPU", "lost"
    );
    let mut cells = [[None; 2]; 2];
    for p in 0..2 {
        for t in 0..2 {
            let m = medians(&samples[t][p]);
            println!(
                "{:<9} {:<5} {:>10.0} {:>14.2} {:>16} {:>8.0}% {:>8.0}% {:>6}",
                targets[t].name,
                [Proto::Tcp, Proto::Udp][p].name(),
                m.rt_per_s,
                m.srv_us_stat,
                m.srv_us_sched.map_or("n/a".into(), |v| format!("{v:.2}")),
                m.srv_util * 100.0,
                m.gen_share * 100.0,
                m.lost
            );
            cells[t][p] = Some(m);
        }
    }
    println!();
    println!("sockloop / tokio (medians):");
    for (p, (proto, goal)) in [(Proto::Tcp, GOAL_TCP), (Proto::Udp, GOAL_UDP)]
        .into_iter()
        .enumerate()
    {
        let (s, t) = (cells[0][p].unwrap(), cells[1][p].unwrap());
        let cpu_ratio = s.srv_us_stat / t.srv_us_stat;
        let sched_ratio = s.srv_us_sched.zip(t.srv_us_sched).map(|(a, b)| a / b);
        let verdict = |ratio: f64| {
            if 1.0 - ratio >= goal {
                "MET"
            } else {
                "NOT MET"
            }
        };
        println!(
            "  {}: rt/s x{:.3}; server CPU per rt x{:.3} (stat) / {} (schedstat); goal: >= {:.0}% less CPU per rt -> {} (stat){}",
            proto.name(),
            s.rt_per_s / t.rt_per_s,
            cpu_ratio,
            sched_ratio.map_or("n/a".into(), |r| format!("x{r:.3}")),
            goal * 100.0,
            verdict(cpu_ratio),
            sched_ratio.map_or(String::new(), |r| format!(", {} (schedstat)", verdict(r))),
        );
    }
}
