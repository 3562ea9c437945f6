//! The load generator behind `sockloop bench`: TCP echo load, closed loop
//! (a fixed number of messages in flight per connection) or open loop (a
//! fixed send rate, latency measured from each message's intended send
//! time, so a stalled server cannot hide its stall by slowing the sender:
//! the coordinated-omission correction).
//!
//! Every echoed byte is checked against what was sent; corrupted, lost and
//! failed counts are reported, never hidden.

/// A trace line from a generator's loop, through a
/// [`TraceLines`](crate::TraceLines): off, one bool test (the clock is
/// not read, nothing is formatted).
macro_rules! trace {
    ($lines:expr, $($what:tt)*) => {
        if $lines.enabled() {
            $lines.line(std::time::Instant::now(), format_args!($($what)*));
        }
    };
}

mod hold;
mod tcp;
mod udp;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use hold::{
    hold, hold_in_processes, hold_share, hold_spread, Failures, HoldConfig, HoldReport, Limit,
    DESCRIPTOR_RESERVE, MAX_SOURCES,
};
pub use tcp::TcpLoad;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadConfig {
    /// Connections, spread over the threads.
    pub conns: usize,
    /// Bytes per message (at least 16: a sequence number and a connection
    /// id lead each message, a pattern fills the rest).
    pub size: usize,
    /// Closed loop: messages in flight per connection.
    pub depth: usize,
    /// Measured time.
    pub duration: Duration,
    /// Load before measuring, not counted.
    pub warmup: Duration,
    /// Generator threads (each runs its own poll loop).
    pub threads: usize,
    /// Open loop: messages per second over all connections (`None`:
    /// closed loop).
    pub rate: Option<f64>,
    /// Draw a live progress line on stderr.
    pub progress: bool,
    /// Trace each generator thread's loop (`bench tcp|udp --trace`): at
    /// most this many lines a second per thread (`None`: off).
    pub trace: Option<u32>,
    /// Keep every measured round trip in [`Report::samples`] (for
    /// `--csv`; 4 bytes each, up to [`MAX_SAMPLES`]). Off, only the
    /// histogram holds them, and the generator writes no growing array.
    pub samples: bool,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            conns: 50,
            size: 64,
            depth: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            threads: 1,
            rate: None,
            progress: false,
            trace: None,
            samples: false,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Messages sent in the measured window.
    pub sent: u64,
    /// Echoes received intact in the measured window.
    pub received: u64,
    /// Echoes that differed from what was sent.
    pub corrupted: u64,
    /// Messages sent (at any time) whose echo never came.
    pub lost: u64,
    /// Connections the server closed or reset before echoing anything:
    /// turned away (a connection limit, a ban), see `refusal`. Their
    /// messages are not counted lost.
    pub closed_at_once: u64,
    /// Connections the server reset after echoing.
    pub resets: u64,
    /// Other connection failures: could not be opened, closed mid-run.
    pub conn_errors: u64,
    /// The first line a server sent a connection it turned away (escaped,
    /// at most 200 bytes), e.g. `{"error":"the server is full"}`.
    pub refusal: Option<String>,
    /// Why messages may have been lost, when some were (UDP: the server's
    /// per-address rate and datagram size limits).
    pub hint: Option<String>,
    /// The measured window's actual length.
    pub elapsed: Duration,
    /// Bytes per message.
    pub size: usize,
    /// Round-trip times of the measured echoes, in microseconds.
    pub rtt_us: Histogram<u64>,
    /// Every measured round trip in microseconds, in arrival order per
    /// thread (kept up to [`MAX_SAMPLES`], for `--csv`), if
    /// [`LoadConfig::samples`] asked for them; else empty.
    pub samples: Vec<u32>,
    /// Samples still to keep.
    samples_left: usize,
}

/// Round trips counted one by one per microsecond up to 32.8 ms (256
/// KiB, per generator thread).
const COUNTED_US: usize = 1 << 15;

/// A generator thread's round trips under 32.8 ms, as counts per
/// microsecond: an increment an echo, where recording into the HDR
/// histogram costs about 60 instructions. [`RttCounts::fold_into`] adds
/// them to the report's histogram at the end, which then holds exactly
/// what recording each echo would have left.
struct RttCounts(Box<[u64]>);

impl RttCounts {
    fn new() -> RttCounts {
        RttCounts(vec![0; COUNTED_US].into_boxed_slice())
    }

    /// Adds the counts to `report`'s histogram and clears them.
    fn fold_into(&mut self, report: &mut Report) {
        for (us, count) in self.0.iter_mut().enumerate() {
            if *count > 0 {
                let _ = report.rtt_us.record_n(us as u64, *count);
                *count = 0;
            }
        }
    }
}

/// Samples kept for `--csv` (40 MB); beyond, only the histogram counts.
pub const MAX_SAMPLES: usize = 10_000_000;

/// Messages one connection may have in flight in the open loop; a server
/// that falls further behind has the rest counted lost.
const MAX_IN_FLIGHT: usize = 1 << 16;

impl Report {
    /// Nothing measured yet, for messages of `size` bytes.
    pub(crate) fn empty(config: &LoadConfig) -> std::io::Result<Report> {
        Ok(Report {
            sent: 0,
            received: 0,
            corrupted: 0,
            lost: 0,
            closed_at_once: 0,
            resets: 0,
            conn_errors: 0,
            refusal: None,
            hint: None,
            elapsed: config.duration,
            size: config.size,
            rtt_us: Histogram::new(3).map_err(std::io::Error::other)?,
            samples: Vec::new(),
            samples_left: if config.samples { MAX_SAMPLES } else { 0 },
        })
    }

    /// Counts an intact echo of a message sent in the measured window,
    /// back `rtt_ns` nanoseconds after it was sent (open loop: was due),
    /// its round trip in `counts` (or, past them, `rtt_us`).
    fn record_echo(&mut self, rtt_ns: u64, counts: &mut RttCounts) {
        self.received += 1;
        let us = rtt_ns / 1000;
        match counts.0.get_mut(us as usize) {
            Some(count) => *count += 1,
            None => {
                let _ = self.rtt_us.record(us);
            }
        }
        if self.samples_left > 0 {
            self.samples_left -= 1;
            self.samples.push(us.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Echoes per second in the measured window.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Megabytes (10^6) per second each way.
    pub fn megabytes(&self) -> f64 {
        self.rate() * self.size as f64 / 1e6
    }

    /// True when every byte came back intact and every connection held.
    pub fn clean(&self) -> bool {
        self.corrupted == 0
            && self.lost == 0
            && self.closed_at_once == 0
            && self.resets == 0
            && self.conn_errors == 0
    }

    /// Every failure count in one line, and the server's refusal if any.
    pub fn problems(&self) -> String {
        let mut out = format!(
            "{} corrupted, {} lost, {} closed at once by the server, {} reset, {} connection errors",
            self.corrupted, self.lost, self.closed_at_once, self.resets, self.conn_errors
        );
        if let Some(refusal) = &self.refusal {
            out.push_str(&format!("; the server said: {refusal}"));
        }
        out
    }

    /// The human-readable report: the counts, the server's refusal and a
    /// hint about losses when there were any, the latencies.
    pub fn text(&self) -> String {
        let h = &self.rtt_us;
        let q = |q: f64| h.value_at_quantile(q);
        let mut why = String::new();
        if let Some(refusal) = &self.refusal {
            why.push_str(&format!("the server refused with: {refusal}\n"));
        }
        if let Some(hint) = &self.hint {
            why.push_str(&format!("hint: {hint}\n"));
        }
        format!(
            "{} echoes of {} B in {:.3} s: {:.0} msg/s, {:.2} MB/s each way\n\
             corrupted {}, lost {}, closed at once {}, reset {}, connection errors {}\n\
             {why}\
             rtt us: min {} avg {:.1} stddev {:.1} p50 {} p95 {} p99 {} p99.9 {} max {}",
            self.received,
            self.size,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.megabytes(),
            self.corrupted,
            self.lost,
            self.closed_at_once,
            self.resets,
            self.conn_errors,
            h.min(),
            h.mean(),
            h.stdev(),
            q(0.5),
            q(0.95),
            q(0.99),
            q(0.999),
            h.max()
        )
    }

    /// The machine-readable summary (`--json`).
    pub fn json(&self) -> serde_json::Value {
        let h = &self.rtt_us;
        serde_json::json!({
            "sent": self.sent,
            "received": self.received,
            "corrupted": self.corrupted,
            "lost": self.lost,
            "closed_at_once": self.closed_at_once,
            "resets": self.resets,
            "conn_errors": self.conn_errors,
            "refusal": self.refusal,
            "hint": self.hint,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "size": self.size,
            "msgs_per_s": self.rate(),
            "mb_per_s": self.megabytes(),
            "rtt_us": {
                "min": h.min(), "avg": h.mean(), "stddev": h.stdev(),
                "p50": h.value_at_quantile(0.5), "p95": h.value_at_quantile(0.95),
                "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            },
        })
    }

    /// One RTT per line in microseconds under an `RTT_us` header: the
    /// format of the classic Go benchmark client, for its plotting scripts.
    pub fn csv(&self) -> String {
        let mut out = String::with_capacity(8 + self.samples.len() * 5);
        out.push_str("RTT_us\n");
        for sample in &self.samples {
            out.push_str(&sample.to_string());
            out.push('\n');
        }
        out
    }
}

/// The HdrHistogram percentile distribution (`.hgrm`), as its tools and
/// plotters read it: value (ms), percentile, total count, 1/(1-percentile).
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0;
    for v in histogram.iter_quantiles(1) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:.2}", 1.0 / (1.0 - q))
        } else {
            "inf".into()
        };
        let ms = v.value_iterated_to() as f64 / 1000.0;
        out.push_str(&format!("{ms:12.3} {q:14.12} {total:10} {inverse:>14}\n"));
    }
    let ms = |us: f64| us / 1000.0;
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        ms(histogram.mean()),
        ms(histogram.stdev()),
        ms(histogram.max() as f64),
        histogram.len()
    ));
    out
}

/// The latency percentile curve as an SVG picture (`--plot`): latency
/// against percentile, the percentile axis stretched as 1/(1-p) on a log
/// scale (0, 90, 99, 99.9, 99.99%) as HdrHistogram's plotter draws it.
pub fn svg_plot(histogram: &Histogram<u64>, title: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 400.0;
    const M: f64 = 50.0; // margin
    const DECADES: f64 = 5.0; // up to 99.999%
    let max_ms = (histogram.max() as f64 / 1000.0).max(0.001);
    let x = |q: f64| M + (1.0 / (1.0 - q.min(0.99999))).log10() / DECADES * (W - 2.0 * M);
    let y = |ms: f64| H - M - ms / max_ms * (H - 2.0 * M);
    let mut points = String::new();
    for v in histogram.iter_quantiles(5) {
        let ms = v.value_iterated_to() as f64 / 1000.0;
        points.push_str(&format!("{:.1},{:.1} ", x(v.quantile_iterated_to()), y(ms)));
    }
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{M}\" y=\"20\">{}</text>\n\
         <line x1=\"{M}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{M}\" y1=\"{M}\" x2=\"{M}\" y2=\"{}\" stroke=\"black\"/>\n",
        escape_xml(title),
        H - M,
        W - M,
        H - M,
        H - M
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let px = M + i as f64 / DECADES * (W - 2.0 * M);
        svg.push_str(&format!(
            "<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            H - M + 16.0
        ));
    }
    for i in 0..=4 {
        let ms = max_ms * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.2} ms</text>\n",
            M - 4.0,
            y(ms) + 4.0
        ));
    }
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{}\"/>\n</svg>\n",
        points.trim_end()
    ));
    svg
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Runs an echo load against `addr` over TCP; each connection tries
/// every address `addr` resolves to, in turn.
///
/// ```
/// use std::time::Duration;
/// use sockloop::client::bench::{run_tcp, LoadConfig};
/// use sockloop::{services::Echo, Server};
///
/// let server = Server::builder().tcp("127.0.0.1:0".parse().unwrap(), || Echo).build()?;
/// let addr = server.tcp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let config = LoadConfig {
///     conns: 4,
///     duration: Duration::from_millis(200),
///     warmup: Duration::from_millis(50),
///     ..LoadConfig::default()
/// };
/// let report = run_tcp(addr, config)?;
/// assert!(report.received > 0 && report.clean(), "{}", report.text());
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run_tcp(addr: impl ToSocketAddrs, config: LoadConfig) -> std::io::Result<Report> {
    run(&resolve(addr)?, config, tcp::run)
}

/// Runs an echo load against `addr` over UDP (the first address it
/// resolves to): each "connection" is a socket, each message a datagram;
/// an echo not back within a second is lost (and, in the closed loop,
/// replaced).
pub fn run_udp(addr: impl ToSocketAddrs, config: LoadConfig) -> std::io::Result<Report> {
    run(&resolve(addr)?[..1], config, udp::run)
}

/// Every address `addr` names (never empty).
pub(crate) fn resolve(addr: impl ToSocketAddrs) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    match addrs.is_empty() {
        true => Err(std::io::Error::other("the address resolved to nothing")),
        false => Ok(addrs),
    }
}

/// One thread's share of the connections, counting echoes in the last.
type Worker = fn(&[SocketAddr], LoadConfig, &[u32], &AtomicU64) -> std::io::Result<Report>;

fn run(addrs: &[SocketAddr], config: LoadConfig, worker: Worker) -> std::io::Result<Report> {
    let threads = config.threads.clamp(1, config.conns.max(1));
    let echoes = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            // Connections t, t + threads, t + 2 * threads, ...
            let ids: Vec<u32> = (t..config.conns)
                .step_by(threads)
                .map(|i| i as u32)
                .collect();
            let echoes = Arc::clone(&echoes);
            let addrs = addrs.to_vec();
            std::thread::spawn(move || worker(&addrs, config, &ids, &echoes))
        })
        .collect();
    if config.progress {
        show_progress(&config, &echoes, &workers);
    }
    let mut report = Report::empty(&config)?;
    report.elapsed = Duration::ZERO;
    for worker in workers {
        let part = worker
            .join()
            .map_err(|_| std::io::Error::other("a generator thread panicked"))??;
        report.sent += part.sent;
        report.received += part.received;
        report.corrupted += part.corrupted;
        report.lost += part.lost;
        report.closed_at_once += part.closed_at_once;
        report.resets += part.resets;
        report.conn_errors += part.conn_errors;
        report.refusal = report.refusal.or(part.refusal);
        report.hint = report.hint.or(part.hint);
        report.elapsed = report.elapsed.max(part.elapsed);
        report
            .rtt_us
            .add(&part.rtt_us)
            .map_err(std::io::Error::other)?;
        let room = MAX_SAMPLES.saturating_sub(report.samples.len());
        report.samples.extend(part.samples.into_iter().take(room));
    }
    Ok(report)
}

/// Redraws one line until the workers are done: elapsed, echoes, rate.
fn show_progress<T>(
    config: &LoadConfig,
    echoes: &AtomicU64,
    workers: &[std::thread::JoinHandle<T>],
) {
    let total = (config.warmup + config.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template("{bar:30} {elapsed:>4} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    let start = std::time::Instant::now();
    let (mut last, mut last_at) = (0, start);
    while !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(250));
        let now = std::time::Instant::now();
        let count = echoes.load(Ordering::Relaxed);
        let rate = (count - last) as f64 / now.duration_since(last_at).as_secs_f64();
        (last, last_at) = (count, now);
        bar.set_position((now.duration_since(start).as_millis() as u64).min(total));
        let phase = match now.duration_since(start) < config.warmup {
            true => "warm-up",
            false => "measuring",
        };
        bar.set_message(format!("{phase}: {count} echoes, {rate:.0}/s"));
    }
    bar.finish_and_clear();
}

/// A socket address for a trace line, `?` if the kernel would not say.
struct Addr(std::io::Result<SocketAddr>);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(addr) => addr.fmt(f),
            Err(_) => f.write_str("?"),
        }
    }
}

/// A connection's two ends as `LOCAL to PEER`, for trace lines.
struct Ends<'a>(&'a std::net::TcpStream);

impl std::fmt::Display for Ends<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (local, peer) = (self.0.local_addr(), self.0.peer_addr());
        write!(f, "{} to {}", Addr(local), Addr(peer))
    }
}

/// A generator thread's clock: nanoseconds since its load began. Send
/// times are kept, subtracted and compared as these `u64`s, which is a
/// few instructions where `Instant` arithmetic is a few dozen.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn instant(&self, at: u64) -> Instant {
        self.start + Duration::from_nanos(at)
    }
}

/// The measured time, on a [`Clock`]: only messages sent (or due) in it
/// count, the warm-up before and the drain after do not.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: u64,
    until: u64,
}

impl Window {
    fn after_warmup(config: &LoadConfig) -> Window {
        let from = config.warmup.as_nanos() as u64;
        Window {
            from,
            until: from + config.duration.as_nanos() as u64,
        }
    }

    #[inline]
    fn holds(&self, at: u64) -> bool {
        // One comparison: before `from` wraps to beyond the length.
        at.wrapping_sub(self.from) < self.until - self.from
    }
}

/// When connection `k` of `count` first sends in the open loop, on the
/// [`Clock`]: spread over one interval, so the load is smooth rather than
/// in bursts.
fn first_due(interval: Option<u64>, k: usize, count: usize) -> u64 {
    interval.map_or(0, |i| (i as u128 * k as u128 / count.max(1) as u128) as u64)
}

/// Open loop: how often each connection sends, in nanoseconds, from 1 ns
/// to 10^18 ns (31 years: a due time plus it cannot overflow) (`None`:
/// closed loop).
pub(crate) fn send_interval(config: &LoadConfig) -> Option<u64> {
    let per_second = config.rate? / config.conns.max(1) as f64;
    Some((1e9 / per_second.max(f64::MIN_POSITIVE)).clamp(1.0, 1e18) as u64)
}

/// Message `seq` of connection `conn`, `size` bytes (at least 12),
/// appended to `out`: its sequence number and connection id, then a
/// pseudo-random pattern from a place that depends on both, so a stale,
/// mixed-up or shifted echo is caught. The pattern is computed once; a
/// message is copied out of it (and checked against it by
/// [`is_message`]) at memcpy/memcmp speed, so even 64 KiB messages cost
/// the generator little.
#[inline]
pub fn message(conn: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
    let at = body_start(conn, seq);
    let size = size.max(12);
    if size <= PATTERN {
        // The common case: one copy of the pattern from `at`, its first
        // 12 bytes then overwritten by the header.
        let start = out.len();
        out.extend_from_slice(&pattern()[at..at + size]);
        out[start..start + 12].copy_from_slice(&header(conn, seq));
        return;
    }
    out.reserve(size);
    out.extend_from_slice(&header(conn, seq));
    for_body(at + 12, size - 12, |chunk| {
        out.extend_from_slice(chunk);
        true
    });
}

/// True if `echo` is exactly [`message`]`(conn, seq, echo.len(), ..)`
/// (messages are at least 12 bytes).
#[inline]
pub fn is_message(conn: u32, seq: u64, echo: &[u8]) -> bool {
    let Some((head, body)) = echo.split_first_chunk::<12>() else {
        return false;
    };
    let (seq_bytes, conn_bytes) = head.split_at(8);
    if seq_bytes != seq.to_le_bytes() || conn_bytes != conn.to_le_bytes() {
        return false;
    }
    let at = body_start(conn, seq) + 12;
    if echo.len() <= PATTERN {
        return *body == pattern()[at..at + body.len()];
    }
    let mut rest = body;
    for_body(at, body.len(), |chunk| {
        let (head, tail) = rest.split_at(chunk.len());
        rest = tail;
        head == chunk
    })
}

/// A message's first 12 bytes: its sequence number and connection id.
fn header(conn: u32, seq: u64) -> [u8; 12] {
    let mut head = [0; 12];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..].copy_from_slice(&conn.to_le_bytes());
    head
}

/// Bytes of the repeating pattern message bodies are cut from.
const PATTERN: usize = 1 << 16;

/// Where a message body may start in the pattern: its first 4 KiB, so
/// small messages are cut from (and checked against) a few KiB that stay
/// in the L1 cache, where starts spread over all 64 KiB missed it on
/// every message. The header (sequence number, connection id) tells
/// messages apart; the body's start only has to vary.
const STARTS: usize = 1 << 12;

/// The pattern twice over, so any [`PATTERN`] bytes from a place in the
/// first copy are one slice; computed once.
fn pattern() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let once: Vec<u8> = (0..PATTERN)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect();
        once.repeat(2).into_boxed_slice()
    })
}

/// Where in the pattern message `seq` of `conn` starts: its body is the
/// pattern from 12 bytes on (the header takes the place of the first 12).
fn body_start(conn: u32, seq: u64) -> usize {
    let mixed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(conn).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (mixed >> 40) as usize % STARTS
}

/// Calls `each` with the consecutive pattern slices that make a body of
/// `len` bytes starting at `at` (below [`PATTERN`]), while it returns
/// true; returns false if it ever did.
fn for_body(mut at: usize, len: usize, mut each: impl FnMut(&[u8]) -> bool) -> bool {
    let pattern = pattern();
    let mut left = len;
    while left > 0 {
        let n = left.min(PATTERN);
        if !each(&pattern[at..at + n]) {
            return false;
        }
        left -= n;
        at = (at + n) % PATTERN;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{is_message, message, Window, PATTERN};

    #[test]
    fn a_window_holds_from_its_start_up_to_its_end() {
        let window = Window {
            from: 10,
            until: 20,
        };
        let held: Vec<u64> = (0..30).filter(|&at| window.holds(at)).collect();
        assert_eq!(held, (10..20).collect::<Vec<u64>>());
        assert!(!window.holds(u64::MAX));
        let empty = Window { from: 0, until: 0 };
        assert!(!empty.holds(0) && !empty.holds(u64::MAX));
    }

    #[test]
    fn a_message_checks_against_itself_and_nothing_else() {
        for size in [
            12,
            16,
            64,
            67,
            PATTERN,
            PATTERN + 1,
            PATTERN + 12,
            PATTERN + 13,
            3 * PATTERN + 100,
        ] {
            let mut out = Vec::new();
            message(7, 42, size, &mut out);
            assert_eq!(out.len(), size);
            assert!(is_message(7, 42, &out), "size {size}");
            assert!(!is_message(7, 43, &out), "another sequence number");
            assert!(!is_message(8, 42, &out), "another connection");
            // Any of the first 80 bytes flipped: header and body.
            for i in 0..size.min(80) {
                out[i] ^= 1;
                assert!(!is_message(7, 42, &out), "size {size}, byte {i} flipped");
                out[i] ^= 1;
            }
            let last = out.len() - 1;
            out[last] ^= 1;
            assert!(!is_message(7, 42, &out), "a flipped last byte");
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        message(1, 1, 64, &mut a);
        message(1, 2, 64, &mut b);
        assert_ne!(a[12..], b[12..], "bodies differ from message to message");
    }
}
