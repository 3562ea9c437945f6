//! Chat fan-out across processes over NATS, against the same load on one
//! process: what the bus costs per message.
//!
//! The load of `benches/chat.rs`'s `fanout`: 100 JSON members in the
//! lobby, one sends numbered 64-byte messages, never more than `WINDOW`
//! ahead of the slowest of the 99 receivers; every delivery is decoded and
//! checked (sender, number, order). Two set-ups, side by side in one run,
//! each a real `sockloop serve` (release binary, one shard):
//!
//! - `one process`: all 100 members on one server;
//! - `two processes`: two servers on a local `nats-server`, 50 members
//!   each (the sender and 49 receivers on the first).
//!
//! Printed per set-up: deliveries per second, the p50/p99 latency of a
//! delivery (the sender's write to the receiver's decode), and the CPU time
//! of each server process (and of nats-server) per message sent, from
//! `/proc/<pid>/stat` (utime + stime).
//!
//! `cargo bench --bench chat_bus` (`SOCKLOOP_BENCH_MESSAGES`, default
//! 20,000 measured after 2,000 warm-up). With `--test` (or under
//! `cargo test --benches`) it sends 200. Without nats-server it prints
//! `skipping: nats-server not found`.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{clk_tck, quick_mode};
use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sockloop::codec::{ChatLine, NdjsonCodec};

const MEMBERS: usize = 100;
const WINDOW: u64 = 32;
const CONTENT_LEN: usize = 64;
const MAX_FRAME: usize = 16 * 1024;
/// No progress for this long is a lost message: fail loudly.
const STALL: Duration = Duration::from_secs(10);
const SENDER: &str = "m00";

/// A child process killed however the bench ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// utime + stime of the whole process, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = (after.split_whitespace())
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0)
    }
}

fn nats_binary() -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()?;
    let binary = String::from_utf8(found.stdout).ok()?.trim().to_owned();
    (found.status.success() && !binary.is_empty()).then_some(binary)
}

fn start_nats(binary: &str) -> (Proc, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let nats = Proc(child);
    let until = Instant::now() + STALL;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (nats, port)
}

/// `sockloop serve` with one chat listener, one shard; its address.
fn serve(bus: Option<&str>) -> (Proc, String) {
    let mut args = vec!["serve", "--tcp", "127.0.0.1:0=chat", "--shards", "1"];
    if let Some(bus) = bus {
        args.extend(["--bus", bus]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockloop"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sockloop");
    let mut out: BufReader<ChildStdout> = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // "listening tcp ADDR chat"
    let addr = line.split_whitespace().nth(2).expect("a listening line");
    (Proc(child), addr.to_owned())
}

fn content(seq: u64) -> String {
    format!("{seq:010} {:x<width$}", "", width = CONTENT_LEN - 11)
}

/// A JSON member: its socket and what was read but not decoded.
struct Member {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Member {
    fn join(addr: &str, name: &str) -> Member {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut member = Member {
            stream,
            buf: Vec::new(),
        };
        let mut prompt = [0; 21];
        member.stream.read_exact(&mut prompt).expect("prompt");
        writeln!(member.stream, "{name}").unwrap();
        let (from, welcome) = member.next().expect("a welcome");
        assert!(from == "System" && welcome.starts_with(&format!("Welcome, {name}!")));
        member
    }

    fn say(&mut self, content: &str) {
        writeln!(self.stream, "{{\"content\":\"{content}\"}}").unwrap();
    }

    fn decode(&mut self) -> Option<(String, String)> {
        let codec = NdjsonCodec::<ChatLine>::new(MAX_FRAME);
        let (line, used) = codec.decode(&self.buf).expect("bad JSON line")?;
        self.buf.drain(..used);
        Some((line.from, line.content))
    }

    /// The next message, or `None` after the read timeout.
    fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(message) = self.decode() {
                return Some(message);
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the server closed a member"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads what is there (non-blocking), checks each message (from the
    /// sender, numbered `expect`, `expect + 1`, ...) and records its
    /// latency from `sent`.
    fn receive(&mut self, expect: &mut u64, sent: &[Instant], latency: &mut Histogram<u64>) {
        let mut chunk = [0; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the server closed a receiver"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        let now = Instant::now();
        while let Some((from, content)) = self.decode() {
            // A batched join notice may come late (large rooms' are).
            if from == "System" {
                continue;
            }
            let seq = content.get(..10).and_then(|n| n.parse::<u64>().ok());
            let ok = from == SENDER && content.len() == CONTENT_LEN && seq == Some(*expect);
            assert!(ok, "wanted {expect} from {SENDER}, got {from}: {content:?}");
            let micros = now.duration_since(sent[*expect as usize]).as_micros() as u64;
            latency.record(micros.max(1)).unwrap();
            *expect += 1;
        }
    }
}

/// What one set-up measured.
struct Measured {
    deliveries_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    /// CPU µs per message sent, per process (servers, then nats-server).
    cpu_us: Vec<f64>,
}

/// Joins the members (member `i` on `addrs[i * addrs.len() / MEMBERS]`),
/// waits until the last receiver hears the sender, then sends `warm` and
/// `messages` numbered messages and measures the latter.
fn run(addrs: &[String], procs: &[&Proc], warm: u64, messages: u64) -> Measured {
    let mut members: Vec<Member> = (0..MEMBERS)
        .map(|i| Member::join(&addrs[i * addrs.len() / MEMBERS], &format!("m{i:02}")))
        .collect();
    // Across a bus the first messages may go before it is up: probe until
    // the last receiver hears the sender, then let everything settle.
    let until = Instant::now() + STALL;
    'heard: loop {
        assert!(
            Instant::now() < until,
            "the sender never reached the last member"
        );
        members[0].say("probe");
        while let Some((from, _)) = members[MEMBERS - 1].next() {
            if from == SENDER {
                break 'heard;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    for member in &mut members {
        while member.next().is_some() {}
    }

    let mut sender = members.remove(0);
    let mut poll = Poll::new().unwrap();
    for (i, member) in members.iter().enumerate() {
        member.stream.set_nonblocking(true).unwrap();
        let fd = member.stream.as_raw_fd();
        (poll.registry())
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            .unwrap();
    }
    let total = warm + messages;
    let mut sent = Vec::with_capacity(total as usize);
    let mut expect = vec![0u64; members.len()];
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let mut events = Events::with_capacity(256);
    // Measured from when every receiver has had the warm-up.
    let mut from: Option<(u64, Instant, Vec<u64>)> = None;
    let mut slowest = 0;
    while slowest < total {
        if slowest >= warm && from.is_none() {
            let cpu = procs.iter().map(|p| p.cpu_ticks()).collect();
            from = Some((slowest, Instant::now(), cpu));
            latency.reset();
        }
        while (sent.len() as u64) < total && (sent.len() as u64) < slowest + WINDOW {
            sent.push(Instant::now());
            sender.say(&content(sent.len() as u64 - 1));
        }
        poll.poll(&mut events, Some(STALL)).unwrap();
        assert!(!events.is_empty(), "no delivery for {STALL:?}");
        for event in &events {
            let i = event.token().0;
            members[i].receive(&mut expect[i], &sent, &mut latency);
        }
        slowest = *expect.iter().min().unwrap();
    }
    let (first, started, cpu_before) = from.expect("a measured part");
    let (measured, elapsed) = (total - first, started.elapsed().as_secs_f64());
    let tck = clk_tck() as f64;
    let cpu_us = (procs.iter().zip(&cpu_before))
        .map(|(p, before)| (p.cpu_ticks() - before) as f64 / tck * 1e6 / measured as f64)
        .collect();
    Measured {
        deliveries_per_sec: (measured * members.len() as u64) as f64 / elapsed,
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        cpu_us,
    }
}

fn report(label: &str, m: &Measured, names: &[&str]) {
    let cpu: Vec<String> = (names.iter().zip(&m.cpu_us))
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect();
    println!(
        "{label:>14}: {:>9.0} deliveries/s, latency p50 {} us, p99 {} us; CPU us per message: {}",
        m.deliveries_per_sec,
        m.p50_us,
        m.p99_us,
        cpu.join(", ")
    );
}

fn main() {
    let Some(binary) = nats_binary() else {
        println!("skipping: nats-server not found");
        return;
    };
    let (warm, messages) = match quick_mode() {
        true => (20, 200),
        false => (
            2_000,
            std::env::var("SOCKLOOP_BENCH_MESSAGES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(20_000),
        ),
    };
    println!("chat_bus: {MEMBERS} JSON members, 1 sender, window {WINDOW}, {messages} messages");

    let one = {
        let (server, addr) = serve(None);
        run(&[addr], &[&server], warm, messages)
    };
    report("one process", &one, &["server"]);

    let two = {
        let (nats, port) = start_nats(&binary);
        let bus = format!("nats://127.0.0.1:{port}");
        let (a, a_addr) = serve(Some(&bus));
        let (b, b_addr) = serve(Some(&bus));
        run(&[a_addr, b_addr], &[&a, &b, &nats], warm, messages)
    };
    report(
        "two processes",
        &two,
        &["sender's server", "other server", "nats-server"],
    );

    let sum = |m: &Measured| m.cpu_us.iter().sum::<f64>();
    println!(
        "the bus: {:.2}x the deliveries/s, p99 {:.2}x; CPU per message {:.1} us in all against {:.1} us ({:+.1} us)",
        two.deliveries_per_sec / one.deliveries_per_sec,
        two.p99_us as f64 / one.p99_us as f64,
        sum(&two),
        sum(&one),
        sum(&two) - sum(&one)
    );
}
