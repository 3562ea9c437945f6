//! User-space memory per idle TCP connection in the real `sockloop` binary.
//!
//! Starts `sockloop serve --tcp 127.0.0.1:0`, warms it up with 100
//! connections that each echo one byte (so the buffer pool, slab and event
//! arrays exist), reads the server's `VmRSS`, then opens 10,000 more
//! connections (each pings one byte and reads the echo, so the server has
//! surely accepted it) and reads `VmRSS` again after ~1 s, also at 5,000 to
//! show the trend. Kernel socket memory is not in RSS: this is what the
//! server's own data structures cost per connection.
//!
//! `cargo bench --bench idle_memory`. With `--test` (or under
//! `cargo test --benches`) it uses 100 + 500 connections and a short wait.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{quick_mode, status_bytes};

const WARM: usize = 100;
/// Issue 19's goal (it was 256 B before).
const GOAL_BYTES: f64 = 160.0;

/// Kills the server (SIGTERM, then SIGKILL) however the bench ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ping(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"x").expect("ping");
    let mut reply = [0u8; 1];
    stream.read_exact(&mut reply).expect("echo");
    assert_eq!(&reply, b"x");
    stream
}

fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn main() {
    let quick = quick_mode();
    let (total, settle) = if quick {
        (500, Duration::from_millis(200))
    } else {
        (10_000, Duration::from_secs(1))
    };
    let checkpoints = [total / 2, total];
    let needed = (WARM + total + 50) as u64;
    let limit = nofile_soft_limit();
    println!(
        "idle_memory: sockloop binary, VmRSS growth per idle TCP connection ({})",
        if quick {
            "quick smoke run"
        } else {
            "benchmark"
        }
    );
    match limit {
        Some(l) if l < needed => {
            println!("  SKIPPED: open files soft limit {l} < {needed} needed; raise it (ulimit -n) and rerun");
            return;
        }
        Some(l) => println!("  open files soft limit {l} (needs {needed})"),
        None => println!("  open files limit unknown"),
    }

    // SOCKLOOP_IDLE_BIN measures another build (e.g. main's) the same way.
    let exe = std::env::var("SOCKLOOP_IDLE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sockloop").to_string());
    let child = Command::new(exe)
        .args(["--log-level", "warn", "serve", "--tcp", "127.0.0.1:0"])
        // 10,000 connections from one address: the per-source limits off.
        .args(["--max-conns-per-ip", "0", "--conn-rate", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the sockloop binary");
    let mut server = Server(child);
    let pid = server.0.id();
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the listening line");
    let addr: SocketAddr = line
        .strip_prefix("listening tcp ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            let status = server.0.wait();
            panic!("the server printed {line:?} instead of `listening tcp ADDR echo` (exit: {status:?})")
        });
    let rss = || status_bytes(pid, "VmRSS").expect("VmRSS");
    let anon = || status_bytes(pid, "RssAnon").unwrap_or(0);

    let mut conns: Vec<TcpStream> = (0..WARM).map(|_| ping(addr)).collect();
    std::thread::sleep(settle);
    let (base, base_anon) = (rss(), anon());
    println!(
        "  after {WARM} warm-up connections: VmRSS {} KiB (RssAnon {} KiB)",
        base / 1024,
        base_anon / 1024
    );
    println!(
        "  {:>8} {:>12} {:>14} {:>12} {:>16}",
        "idle", "VmRSS KiB", "growth B/conn", "RssAnon KiB", "anon B/conn"
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for &n in &checkpoints {
        while conns.len() < WARM + n {
            conns.push(ping(addr));
        }
        std::thread::sleep(settle);
        let (now, now_anon) = (rss(), anon());
        let per = (now as f64 - base as f64) / n as f64;
        let per_anon = (now_anon as f64 - base_anon as f64) / n as f64;
        println!(
            "  {:>8} {:>12} {:>14.1} {:>12} {:>16.1}",
            n,
            now / 1024,
            per,
            now_anon / 1024,
            per_anon
        );
        results.push(per);
    }
    let per = *results.last().unwrap();
    println!(
        "  {} connections opened in {:.1}s; VmRSS has 4 KiB page granularity ({:.2} B/conn at {total})",
        total,
        started.elapsed().as_secs_f64(),
        4096.0 / total as f64
    );
    println!(
        "  goal: <= {GOAL_BYTES:.0} B per idle connection -> {} ({per:.1} B)",
        if per <= GOAL_BYTES { "MET" } else { "NOT MET" }
    );
    drop(conns);
    drop(server); // SIGTERM and wait
}
