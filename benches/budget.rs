//! Budget benchmark: what an echo round trip costs the server in syscalls,
//! user-space instructions and CPU time, counted rather than timed where
//! possible, for sockloop beside a tokio echo and a minimal C epoll echo.
//!
//! Shapes (the generator is the library's `client::bench` load, run in this
//! process; every echoed byte is checked):
//! - `tcp 100x64B d1`: 100 connections, 64 B messages, 1 in flight each;
//! - `tcp 1x64KiB d4`: 1 connection, 64 KiB messages, 4 in flight;
//! - `udp 32x64B d4`: 32 sockets, 64 B datagrams, 4 in flight each.
//!
//! Servers, each its own process on one thread of work:
//! - sockloop: the `sockloop serve` binary, `--shards 1 --udp-rate 0`;
//! - tokio: this bench binary re-run as a `current_thread` tokio echo
//!   reading up to 64 KiB (tokio is a dev-dependency only);
//! - tokio-example: the same with the 1 KiB reads of tokio's published
//!   `examples/echo.rs`, the echo most tokio servers start from;
//! - C: a level-triggered epoll echo (64 KiB reads) compiled with `gcc -O2`
//!   into a temporary directory at bench time.
//!
//! Columns, per round trip (a UDP round trip is one datagram):
//! - `syscalls`: `strace -f -c` over the server process;
//! - `instr`: user-space instructions, `valgrind --tool=callgrind` totals
//!   over the server process (exact and repeatable, kernel excluded);
//! - `cpu_us`: server CPU (user + kernel, `schedstat` of all its threads)
//!   with no tool attached, beside the generator's own CPU (`gen_us`, this
//!   process's utime + stime, clock ticks).
//!
//! A tool's counts include start-up, connection set-up and shutdown, so
//! each is taken from two runs of different lengths: (count of the long
//! run - count of the short) / (round trips of the long - of the short).
//! A missing tool (strace, valgrind, gcc) is reported and its column or
//! server skipped, never failed.
//!
//! `cargo bench --bench budget`; `SOCKLOOP_BUDGET_BEFORE=PATH` adds a row
//! for another `sockloop` binary (an older build) right after this one's,
//! so before and after alternate within one run; `SOCKLOOP_BUDGET_SERVERS` (e.g.
//! `sockloop,before,tokio,tokio-example,c`) and `SOCKLOOP_BUDGET_SHAPES` (e.g. `tcp64,tcp64k`,
//! `udp`) choose a part; `SOCKLOOP_BUDGET_TOOLS` (`cpu,strace,callgrind`)
//! the columns. With `--test` (as under `cargo test --benches`) it runs one
//! tiny plain round against sockloop as a smoke test.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{clk_tck, quick_mode};
use sockloop::client::bench::{run_udp, LoadConfig, TcpLoad};

/// The environment variable that makes this binary a tokio echo server.
const ROLE: &str = "SOCKLOOP_BUDGET_ROLE";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    key: &'static str,
    name: &'static str,
    proto: Proto,
    conns: usize,
    size: usize,
    depth: usize,
}

const SHAPES: [Shape; 3] = [
    Shape {
        key: "tcp64",
        name: "tcp 100x64B d1",
        proto: Proto::Tcp,
        conns: 100,
        size: 64,
        depth: 1,
    },
    Shape {
        key: "tcp64k",
        name: "tcp 1x64KiB d4",
        proto: Proto::Tcp,
        conns: 1,
        size: 65536,
        depth: 4,
    },
    Shape {
        key: "udp",
        name: "udp 32x64B d4",
        proto: Proto::Udp,
        conns: 32,
        size: 64,
        depth: 4,
    },
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tool {
    /// No tool: CPU time.
    Cpu,
    Strace,
    Callgrind,
}

impl Tool {
    fn key(self) -> &'static str {
        match self {
            Tool::Cpu => "cpu",
            Tool::Strace => "strace",
            Tool::Callgrind => "callgrind",
        }
    }
}

/// How to start one kind of server.
struct ServerKind {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Option<(&'static str, &'static str)>,
}

/// What one run of a server under a tool counted.
#[derive(Debug, Clone, Copy)]
struct Run {
    round_trips: u64,
    /// Syscalls, instructions or server CPU ns, by tool.
    count: f64,
    /// The generator's CPU ns (plain runs).
    gen_ns: f64,
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("tokio") => return tokio_server(common::TOKIO_READ),
        Ok("tokio-example") => return tokio_server(common::TOKIO_EXAMPLE_READ),
        _ => {}
    }
    let quick = quick_mode();
    let dir = std::env::temp_dir().join(format!("sockloop-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut servers = vec![ServerKind {
        name: "sockloop",
        program: env!("CARGO_BIN_EXE_sockloop").into(),
        args: [
            "serve",
            "--tcp",
            "127.0.0.1:0=echo",
            "--udp",
            "127.0.0.1:0=echo",
            "--shards",
            "1",
            "--udp-rate",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        env: None,
    }];
    if let Ok(before) = std::env::var("SOCKLOOP_BUDGET_BEFORE") {
        // Another build of the binary (e.g. main's), run beside this one.
        let args = servers[0].args.clone();
        servers.push(ServerKind {
            name: "before",
            program: before.into(),
            args,
            env: None,
        });
    }
    for role in ["tokio", "tokio-example"] {
        servers.push(ServerKind {
            name: role,
            program: std::env::current_exe().expect("bench binary"),
            args: Vec::new(),
            env: Some((ROLE, role)),
        });
    }
    match build_c_echo(&dir) {
        Ok(program) => servers.push(ServerKind {
            name: "C epoll",
            program,
            args: Vec::new(),
            env: None,
        }),
        Err(why) => println!("skipping the C epoll echo: {why}"),
    }
    let chosen = |var: &str, key: &str| {
        std::env::var(var)
            .map(|v| v.split(',').any(|k| k.trim() == key))
            .unwrap_or(true)
    };
    servers.retain(|s| {
        let key = s.name.split(' ').next().unwrap_or(s.name).to_lowercase();
        chosen("SOCKLOOP_BUDGET_SERVERS", &key)
    });
    let mut tools = vec![Tool::Cpu];
    for (tool, program) in [(Tool::Strace, "strace"), (Tool::Callgrind, "valgrind")] {
        if !found(program) {
            println!("skipping the {} column: {program} not found", tool.key());
        } else {
            tools.push(tool);
        }
    }
    tools.retain(|t| chosen("SOCKLOOP_BUDGET_TOOLS", t.key()));
    let shapes: Vec<Shape> = SHAPES
        .into_iter()
        .filter(|s| chosen("SOCKLOOP_BUDGET_SHAPES", s.key))
        .collect();
    if quick {
        // A smoke test: one short plain run against sockloop.
        let run = measure(
            &servers[0],
            &SHAPES[0],
            Tool::Cpu,
            Duration::from_millis(200),
        );
        assert!(run.round_trips > 0, "no round trips");
        println!("budget smoke test: {} round trips", run.round_trips);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    println!(
        "{:<16} {:<13} {:>9} {:>9} {:>8} {:>8}",
        "shape", "server", "syscalls", "instr", "cpu_us", "gen_us"
    );
    for shape in &shapes {
        for server in &servers {
            let mut row = [None::<f64>; 4];
            for &tool in &tools {
                let (short, long) = match tool {
                    Tool::Cpu => (Duration::from_millis(500), Duration::from_secs(3)),
                    Tool::Strace => (Duration::from_millis(500), Duration::from_secs(2)),
                    Tool::Callgrind => (Duration::from_secs(1), Duration::from_secs(4)),
                };
                let a = measure(server, shape, tool, short);
                let b = measure(server, shape, tool, long);
                let per = |x: f64, y: f64| {
                    (b.round_trips > a.round_trips)
                        .then(|| (y - x) / (b.round_trips - a.round_trips) as f64)
                };
                match tool {
                    Tool::Strace => row[0] = per(a.count, b.count),
                    Tool::Callgrind => row[1] = per(a.count, b.count),
                    Tool::Cpu => {
                        row[2] = per(a.count, b.count).map(|ns| ns / 1e3);
                        row[3] = per(a.gen_ns, b.gen_ns).map(|ns| ns / 1e3);
                    }
                }
            }
            let cell = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
            };
            println!(
                "{:<16} {:<13} {:>9} {:>9} {:>8} {:>8}",
                shape.name,
                server.name,
                cell(row[0], 2),
                cell(row[1], 0),
                cell(row[2], 2),
                cell(row[3], 2)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// True when `program` runs (`--version`).
fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `server` under `tool`, loads it with `shape` for `window`, stops
/// it and returns what the tool counted.
fn measure(server: &ServerKind, shape: &Shape, tool: Tool, window: Duration) -> Run {
    let out = std::env::temp_dir().join(format!(
        "sockloop-budget-{}-{}.out",
        std::process::id(),
        tool.key()
    ));
    let _ = std::fs::remove_file(&out);
    let mut command = match tool {
        Tool::Cpu => Command::new(&server.program),
        Tool::Strace => {
            let mut c = Command::new("strace");
            c.args(["-f", "-c", "-U", "calls,name", "-o"])
                .arg(&out)
                .arg("--");
            c.arg(&server.program);
            c
        }
        Tool::Callgrind => {
            let mut c = Command::new("valgrind");
            c.args(["--tool=callgrind", "--quiet"])
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&server.program);
            c
        }
    };
    command.args(&server.args);
    if let Some((k, v)) = server.env {
        command.env(k, v);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let (tcp, udp) = listening(&mut child);
    // Under strace the server is strace's child; otherwise the process itself.
    let pid = match tool {
        Tool::Strace => traced_child(child.id()),
        _ => child.id(),
    };
    let cpu_before = process_cpu_ns(pid);
    // The generator's CPU: all of this process's threads, finished ones
    // included (the UDP load runs on its own thread), from clock ticks.
    let gen_before = own_cpu_ns();
    let config = LoadConfig {
        conns: shape.conns,
        size: shape.size,
        depth: shape.depth,
        duration: window,
        warmup: Duration::ZERO,
        threads: 1,
        rate: None,
        progress: false,
        trace: None,
        samples: false,
    };
    let round_trips = match shape.proto {
        Proto::Tcp => tcp_round_trips(tcp, &config),
        Proto::Udp => {
            let report = run_udp(udp, config).expect("udp load");
            report.received
        }
    };
    let gen_ns = own_cpu_ns().saturating_sub(gen_before) as f64;
    let cpu_ns = process_cpu_ns(pid).saturating_sub(cpu_before) as f64;
    // SIGTERM: sockloop drains (no connections are left) and exits; the
    // others die of it; both tools write their counts as the process ends.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let count = match tool {
        Tool::Cpu => cpu_ns,
        Tool::Strace => strace_total(&out),
        Tool::Callgrind => callgrind_total(&out),
    };
    let _ = std::fs::remove_file(&out);
    Run {
        round_trips,
        count,
        gen_ns,
    }
}

/// Runs the closed loop for its window, then lets what is in flight come
/// back: every round trip the server did is counted.
fn tcp_round_trips(addr: SocketAddr, config: &LoadConfig) -> u64 {
    let ids: Vec<u32> = (0..config.conns as u32).collect();
    let mut load = TcpLoad::new(&[addr], config, &ids).expect("tcp load");
    load.record_latency(false);
    let end = load.window().end;
    while Instant::now() < end {
        load.step(Duration::from_millis(50)).expect("poll");
    }
    let drain = Instant::now() + Duration::from_secs(10);
    while load.in_flight() > 0 && Instant::now() < drain {
        load.step(Duration::from_millis(50)).expect("poll");
    }
    let completed = load.completed();
    let report = load.finish();
    assert_eq!(
        report.corrupted + report.conn_errors + report.lost,
        0,
        "{}",
        report.text()
    );
    completed
}

/// Reads the server's `listening tcp ADDR` and `listening udp ADDR` lines.
fn listening(child: &mut Child) -> (SocketAddr, SocketAddr) {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut tcp, mut udp) = (None, None);
    while tcp.is_none() || udp.is_none() {
        let line = lines
            .next()
            .expect("the server printed its addresses")
            .expect("read the server's stdout");
        let mut words = line.split_whitespace();
        let (Some("listening"), Some(proto), Some(addr)) =
            (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let addr: SocketAddr = addr.parse().expect("an address");
        match proto {
            "tcp" => tcp = Some(addr),
            "udp" => udp = Some(addr),
            _ => {}
        }
    }
    // Keep reading (and dropping) its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (tcp.unwrap(), udp.unwrap())
}

/// The one child of `pid` (strace's tracee).
fn traced_child(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no child in {path}"))
}

/// On-CPU nanoseconds of every thread of process `pid` (`schedstat`).
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of this whole process (`/proc/self/stat`, clock-tick
/// resolution), in nanoseconds.
fn own_cpu_ns() -> u64 {
    common::own_cpu_ticks() * 1_000_000_000 / clk_tck()
}

/// The `total` line of `strace -c -U calls,name`: its calls column.
fn strace_total(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The `totals:` (or `summary:`) line of a callgrind output file.
fn callgrind_total(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The C epoll echo: level-triggered, one 64 KiB `recv` per readiness,
/// `send` at once, a per-connection remainder only when the socket is full.
const C_ECHO: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 65536
struct pending { char *buf; size_t off, len; };
static struct pending pend[MAXFD];
static char buf[65536];

static void set(int ep, int op, int fd, unsigned events) {
    struct epoll_event ev = { .events = events, .data.fd = fd };
    epoll_ctl(ep, op, fd, &ev);
}

static int bound(int type) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s = socket(AF_INET, type | SOCK_NONBLOCK, 0);
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (void *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
    if (type == SOCK_STREAM && listen(s, 1024) < 0) { perror("listen"); exit(1); }
    getsockname(s, (void *)&a, &len);
    printf("listening %s 127.0.0.1:%d\n", type == SOCK_STREAM ? "tcp" : "udp", ntohs(a.sin_port));
    return s;
}

static void drop(int fd) { free(pend[fd].buf); pend[fd] = (struct pending){0}; close(fd); }

int main(void) {
    int ep = epoll_create1(0), one = 1;
    int l = bound(SOCK_STREAM), u = bound(SOCK_DGRAM);
    fflush(stdout);
    set(ep, EPOLL_CTL_ADD, l, EPOLLIN);
    set(ep, EPOLL_CTL_ADD, u, EPOLLIN);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, 0, 0, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    set(ep, EPOLL_CTL_ADD, c, EPOLLIN);
                }
            } else if (fd == u) {
                struct sockaddr_storage from;
                socklen_t len = sizeof from;
                ssize_t r;
                while ((r = recvfrom(u, buf, sizeof buf, 0, (void *)&from, &len)) >= 0) {
                    sendto(u, buf, r, 0, (void *)&from, len);
                    len = sizeof from;
                }
            } else {
                struct pending *p = &pend[fd];
                if (p->len) {
                    ssize_t w = send(fd, p->buf + p->off, p->len - p->off, MSG_NOSIGNAL);
                    if (w < 0 && errno != EAGAIN) { drop(fd); continue; }
                    if (w > 0) p->off += w;
                    if (p->off == p->len) { p->off = p->len = 0; set(ep, EPOLL_CTL_MOD, fd, EPOLLIN); }
                    continue;
                }
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) { drop(fd); continue; }
                if (r < 0) continue;
                ssize_t w = send(fd, buf, r, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) { drop(fd); continue; }
                if (w < 0) w = 0;
                if (w < r) {
                    p->buf = realloc(p->buf, r - w);
                    memcpy(p->buf, buf + w, r - w);
                    p->off = 0;
                    p->len = r - w;
                    set(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
                }
            }
        }
    }
}
"#;

/// Compiles [`C_ECHO`] with gcc into `dir`.
fn build_c_echo(dir: &Path) -> Result<PathBuf, String> {
    let source = dir.join("echo.c");
    let program = dir.join("c-echo");
    std::fs::write(&source, C_ECHO).map_err(|e| e.to_string())?;
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&source)
        .status()
        .map_err(|e| format!("gcc not found ({e})"))?;
    if !status.success() {
        return Err(format!("gcc failed ({status})"));
    }
    Ok(program)
}

/// This binary as the tokio echo: one `current_thread` runtime, a task per
/// connection reading up to `read_size` bytes and writing them back, one
/// UDP task.
fn tokio_server(read_size: usize) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    tcp.set_nonblocking(true).unwrap();
    udp.set_nonblocking(true).unwrap();
    println!("listening tcp {}", tcp.local_addr().unwrap());
    println!("listening udp {}", udp.local_addr().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    // Never stopped: the bench kills this process.
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    rt.block_on(common::tokio_echo(tcp, udp, never, read_size));
}
