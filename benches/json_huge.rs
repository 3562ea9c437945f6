//! One huge JSON line against its neighbours (issue 12, item 3).
//!
//! Part 1, the cost of the work itself (no sockets): for a 13 MB line of
//! each shape, how long `serde_json` takes to parse it into the json
//! service's message type, to re-encode it, and how long a byte-at-a-time
//! scan for its newline takes (what a decoder that rescans from the start
//! pays on every read of the line).
//!
//! Part 2, what a neighbour sees: a real server (1 shard, the `json`
//! service, a 16 MiB frame limit) in this process; one neighbour
//! connection does small JSON round trips back to back while another
//! client sends one 13 MB line and reads the reply. Reported: the
//! neighbour's round trips during the huge line (from its first byte sent
//! to the last byte of its reply), their median, p99 and maximum, against
//! the same neighbour with no huge line (baseline). Rounds alternate.
//!
//! `cargo bench --bench json_huge`; `SOCKLOOP_BENCH_ROUNDS` (3) rounds.
//! With `--test` (or `cargo test --benches`) one small round as a smoke
//! test.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{median, quick_mode};
use serde_json::{Map, Value};
use sockloop::limit::IpLimits;
use sockloop::services::JsonEcho;
use sockloop::{Server, ServerConfig};

const FRAME_LIMIT: usize = 16 * 1024 * 1024;

/// A line of about `size` bytes (newline included) in one of the shapes.
fn huge_line(shape: &str, size: usize) -> Vec<u8> {
    let mut line = Vec::with_capacity(size + 64);
    match shape {
        // Many small records: the allocation-heavy case.
        "records" => {
            line.extend_from_slice(b"{\"items\":[");
            let mut i = 0u64;
            while line.len() + 80 < size {
                if i > 0 {
                    line.push(b',');
                }
                write!(
                    line,
                    "{{\"id\":{i},\"name\":\"item {i}\",\"price\":{}.25,\"tags\":[\"a\",\"b\"]}}",
                    i % 1000
                )
                .unwrap();
                i += 1;
            }
            line.extend_from_slice(b"]}");
        }
        // One long string: the scan-heavy case.
        _ => {
            line.extend_from_slice(b"{\"blob\":\"");
            line.resize(size - 3, b'x');
            line.extend_from_slice(b"\"}");
        }
    }
    line.push(b'\n');
    line
}

fn part1(size: usize, reps: usize) {
    println!("part 1: the work on one {size}-byte line (median of {reps})");
    println!("| shape | parse | re-encode | byte-at-a-time newline scan |");
    println!("| --- | --- | --- | --- |");
    for shape in ["records", "string"] {
        let line = huge_line(shape, size);
        let body = &line[..line.len() - 1];
        let (mut parse, mut encode, mut scan) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let start = Instant::now();
            let message: Map<String, Value> = serde_json::from_slice(body).unwrap();
            parse.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            let mut out = Vec::new();
            serde_json::to_writer(&mut out, &message).unwrap();
            encode.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            let at = std::hint::black_box(&line[..])
                .iter()
                .position(|&b| b == b'\n');
            scan.push(start.elapsed().as_secs_f64());
            assert_eq!(at, Some(line.len() - 1));
            drop(std::hint::black_box(message));
        }
        println!(
            "| {shape} | {:.1} ms | {:.1} ms | {:.2} ms |",
            median(&mut parse) * 1e3,
            median(&mut encode) * 1e3,
            median(&mut scan) * 1e3
        );
    }
}

fn server() -> (SocketAddr, sockloop::Handle, thread::JoinHandle<()>) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        shards: 1,
        sources: IpLimits::unlimited(),
        max_read_buffer: FRAME_LIMIT,
        output_hard_limit: 64 * 1024 * 1024,
        output_soft_limit: 64 * 1024 * 1024,
        output_soft_for: None,
        ..ServerConfig::default()
    };
    let server = Server::builder()
        .config(config)
        .tcp(any, || JsonEcho::new(FRAME_LIMIT))
        .build()
        .unwrap();
    let addr = server.tcp_addrs()[0];
    let handle = server.handle();
    let running = thread::spawn(move || server.run().unwrap());
    (addr, handle, running)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// The neighbour's round trips (seconds) while `during` runs.
fn neighbour_during(addr: SocketAddr, during: impl FnOnce() + Send + 'static) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = {
        let stop = stop.clone();
        let stream = connect(addr);
        thread::spawn(move || {
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let (mut rtts, mut reply) = (Vec::new(), String::new());
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                writer.write_all(b"{\"ping\":1}\n").unwrap();
                reply.clear();
                reader.read_line(&mut reply).unwrap();
                rtts.push(start.elapsed().as_secs_f64());
                assert_eq!(reply, "{\"ping\":1}\n");
            }
            rtts
        })
    };
    thread::sleep(Duration::from_millis(50));
    during();
    stop.store(true, Ordering::Relaxed);
    neighbour.join().unwrap()
}

fn send_huge(addr: SocketAddr, line: Arc<Vec<u8>>) {
    let stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&line).unwrap());
    let mut reply = Vec::new();
    let mut reader = BufReader::new(stream);
    reader.read_until(b'\n', &mut reply).unwrap();
    sender.join().unwrap();
    assert!(
        reply.len() > 1000 && reply.starts_with(b"{\""),
        "{}",
        reply.len()
    );
}

fn summary(rtts: &mut [f64]) -> String {
    rtts.sort_by(f64::total_cmp);
    let p99 = rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)];
    format!(
        "{} | {:.3} ms | {:.2} ms | {:.1} ms",
        rtts.len(),
        median(&mut rtts.to_vec()) * 1e3,
        p99 * 1e3,
        rtts.last().unwrap() * 1e3
    )
}

fn part2(size: usize, rounds: usize) {
    println!();
    println!("part 2: a neighbour's round trips on the same shard ({rounds} rounds)");
    println!("| round | load | round trips | median | p99 | max | huge line took |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let (addr, handle, running) = server();
    for round in 0..rounds {
        for shape in ["records", "string"] {
            let line = Arc::new(huge_line(shape, size));
            let started = Arc::new(std::sync::Mutex::new(Duration::ZERO));
            let took = started.clone();
            let mut rtts = neighbour_during(addr, move || {
                let start = Instant::now();
                send_huge(addr, line);
                *took.lock().unwrap() = start.elapsed();
            });
            let took = *started.lock().unwrap();
            println!(
                "| {round} | one {size}-byte line, {shape} | {} | {:.0} ms |",
                summary(&mut rtts),
                took.as_secs_f64() * 1e3
            );
        }
        let mut rtts = neighbour_during(addr, || thread::sleep(Duration::from_millis(500)));
        println!("| {round} | none (500 ms) | {} | |", summary(&mut rtts));
    }
    handle.stop();
    running.join().unwrap();
}

fn main() {
    let quick = quick_mode();
    let size = if quick { 1_000_000 } else { 13_000_000 };
    let rounds = if quick {
        1
    } else {
        std::env::var("SOCKLOOP_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .filter(|&r: &usize| r > 0)
            .unwrap_or(3)
    };
    part1(size, if quick { 1 } else { 5 });
    part2(size, rounds);
}
