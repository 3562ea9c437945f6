//! Helpers shared by the hand-rolled (harness = false) benches: run mode,
//! reading CPU time and memory from `/proc`. The TCP echo load is the
//! library's `sockloop::client::bench::TcpLoad`.
#![allow(dead_code)]

use std::net::SocketAddr;

#[cfg(feature = "client")]
use sockloop::client::bench::{LoadConfig, TcpLoad};

use std::time::Duration;

/// True when the bench should only smoke-test itself: invoked with `--test`
/// or without cargo's `--bench` (e.g. `cargo test --benches`).
pub fn quick_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

/// A duration in seconds from the environment, or `default`.
pub fn env_secs(name: &str, default: f64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(default);
    Duration::from_secs_f64(secs)
}

/// Warm-up, measured window and rounds: tiny in quick mode, else from
/// `SOCKLOOP_BENCH_WARMUP_SECS` (1 s), `SOCKLOOP_BENCH_SECS` (3 s) and
/// `SOCKLOOP_BENCH_ROUNDS` (`default_rounds`).
pub fn round_plan(quick: bool, default_rounds: usize) -> (Duration, Duration, usize) {
    if quick {
        return (Duration::from_millis(50), Duration::from_millis(200), 1);
    }
    let rounds = std::env::var("SOCKLOOP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r: &usize| r > 0)
        .unwrap_or(default_rounds);
    (
        env_secs("SOCKLOOP_BENCH_WARMUP_SECS", 1.0),
        env_secs("SOCKLOOP_BENCH_SECS", 3.0),
        rounds,
    )
}

/// Clock ticks per second for `/proc/*/stat` times (`getconf CLK_TCK`, else 100).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The id of this process's thread whose `comm` starts with `prefix`
/// (comm is truncated to 15 bytes by the kernel).
pub fn find_tid(prefix: &str) -> Option<u32> {
    let prefix = &prefix[..prefix.len().min(15)];
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            return entry.file_name().to_str()?.parse().ok();
        }
    }
    None
}

/// The ids of all this process's threads whose `comm` starts with `prefix`.
pub fn find_tids(prefix: &str) -> Vec<u32> {
    let prefix = &prefix[..prefix.len().min(15)];
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = dir
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            comm.trim_end().starts_with(prefix).then_some(())?;
            entry.file_name().to_str()?.parse().ok()
        })
        .collect();
    tids.sort_unstable();
    tids
}

/// CPU time used by one thread so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// utime + stime from `stat`, in clock ticks.
    pub ticks: u64,
    /// On-CPU time from `schedstat`, in nanoseconds (exact, not sampled).
    pub sched_ns: Option<u64>,
}

impl Cpu {
    /// `/proc/self/task/<tid>`, or the calling thread with `None`.
    pub fn of(tid: Option<u32>) -> Cpu {
        let dir = match tid {
            Some(tid) => format!("/proc/self/task/{tid}"),
            None => "/proc/thread-self".to_string(),
        };
        let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
        // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let sched_ns = std::fs::read_to_string(format!("{dir}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        Cpu {
            ticks: field(14) + field(15),
            sched_ns,
        }
    }

    /// The CPU time of several threads, summed (`sched_ns` only if every
    /// thread has it).
    pub fn sum(tids: &[u32]) -> Cpu {
        tids.iter().map(|&tid| Cpu::of(Some(tid))).fold(
            Cpu {
                ticks: 0,
                sched_ns: Some(0),
            },
            |a, b| Cpu {
                ticks: a.ticks + b.ticks,
                sched_ns: a.sched_ns.zip(b.sched_ns).map(|(x, y)| x + y),
            },
        )
    }

    /// Seconds of CPU between `earlier` and `self`, from ticks.
    pub fn secs_since(&self, earlier: &Cpu, tck: u64) -> f64 {
        self.ticks.saturating_sub(earlier.ticks) as f64 / tck as f64
    }

    /// Seconds of CPU between `earlier` and `self`, from schedstat.
    pub fn sched_secs_since(&self, earlier: &Cpu) -> Option<f64> {
        Some(self.sched_ns?.saturating_sub(earlier.sched_ns?) as f64 / 1e9)
    }
}

/// A `kB` field (`VmRSS`, `RssAnon`, ...) of `/proc/<pid>/status`, in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    let kb: u64 = line[key.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The closed-loop TCP echo load of the echo and shards benches: `conns`
/// connections (ids 0..conns) to `addr`, `depth` 64-byte messages in flight
/// on each, sending until `warmup + window` after it began (its
/// `window()`), latency recording off.
#[cfg(feature = "client")]
pub fn tcp_load(
    addr: SocketAddr,
    conns: usize,
    depth: usize,
    warmup: Duration,
    window: Duration,
) -> TcpLoad {
    let config = LoadConfig {
        conns,
        size: 64,
        depth,
        duration: window,
        warmup,
        threads: 1,
        rate: None,
        progress: false,
        trace: None,
        samples: false,
    };
    let ids: Vec<u32> = (0..conns as u32).collect();
    let mut load = TcpLoad::new(&[addr], &config, &ids).expect("tcp load");
    load.record_latency(false);
    load
}

/// The read size of the tokio echo the benches compare against.
pub const TOKIO_READ: usize = 64 * 1024;

/// The read size of tokio's published echo (`examples/echo.rs`:
/// `vec![0; 1024]`).
pub const TOKIO_EXAMPLE_READ: usize = 1024;

/// The tokio echo the benches compare against: on the caller's runtime, a
/// task per connection reading up to `read_size` bytes and writing them
/// back, one UDP task; returns at the first accept after `stop` is set
/// (dropping the runtime drops every task). The sockets must be
/// non-blocking. [`TOKIO_READ`] is the strong variant; tokio's own
/// `examples/echo.rs` reads 1 KiB ([`TOKIO_EXAMPLE_READ`]).
pub async fn tokio_echo(
    tcp: std::net::TcpListener,
    udp: std::net::UdpSocket,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    read_size: usize,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::from_std(tcp).unwrap();
    let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&buf[..n], from).await;
            }
        }
    });
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return; // dropping the runtime drops every task
        }
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut buf = vec![0u8; read_size];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// utime + stime of this whole process (`/proc/self/stat`), in clock ticks
/// (`clk_tck()` a second).
pub fn own_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields after the parenthesised comm start at 3: utime is 14, stime 15.
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}
