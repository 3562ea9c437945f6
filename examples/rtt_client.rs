//! The article's RTT benchmark client: N messages, one at a time, each
//! timed from send to echo; the article's statistics, and its CSV.
//!
//! ```sh
//! cargo run --example concurrent &                 # echo: tcp 9201, udp 9202
//! cargo run --example rtt_client                   # TCP, 1000 messages of 64 bytes
//! cargo run --example rtt_client -- --proto udp -n 5000 --size 512 --csv udp_rtt.csv
//! cargo run --example rtt_client -- --addr 127.0.0.1:7000    # any echo server
//! ```
//!
//! It prints, as the Go client does:
//!
//! ```text
//! TCP RTT Benchmark:
//! Sent 1000 messages of 64 bytes in 41.2ms
//! Throughput: 24271.84 msg/sec, 1.48 MB/sec
//! RTT (min/avg/stddev/p50/p95/p99/max): 25.00 / 40.53 / 12.10 / 38.00 / 59.00 / 88.00 / 190.00 us
//! RTTs written to udp_rtt.csv                      (with --csv; one RTT_us column)
//! ```
//!
//! and `lost N` when UDP echoes did not come back within a second (the Go
//! client waits forever for them).
//!
//! # What this measures, and what it hides
//!
//! A closed loop: the next message is sent only when the echo of the last
//! one is back. If the server stalls for 200 ms, this client records one
//! slow round trip and then simply sends nothing during the stall; a real
//! client sending every millisecond would have had 200 messages delayed.
//! This is *coordinated omission*: the measurement slows down with the
//! server and hides its worst moments from the percentiles. `sockloop
//! bench tcp ADDR --rate R` is the open loop: messages leave on schedule
//! whatever the server does, and each latency counts from when its message
//! was due (`tests/bench.rs` shows a 200 ms stall in the open loop's p99
//! and hidden from the closed loop's).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(1);

fn usage() -> ! {
    eprintln!(
        "usage: rtt_client [--proto tcp|udp] [-n 1000] [--size 64] [--csv FILE] [--addr ADDR]"
    );
    std::process::exit(2);
}

fn main() -> std::io::Result<()> {
    let (mut proto, mut n, mut size, mut csv, mut addr) = ("tcp".to_string(), 1000, 64, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--proto" => proto = value,
            "-n" => n = value.parse().unwrap_or_else(|_| usage()),
            "--size" => size = value.parse().unwrap_or_else(|_| usage()),
            "--csv" => csv = Some(value),
            "--addr" => addr = Some(value.parse::<SocketAddr>().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let udp = match proto.as_str() {
        "tcp" => false,
        "udp" => true,
        _ => usage(),
    };
    if n == 0 || size == 0 {
        usage();
    }
    let default = if udp {
        "127.0.0.1:9202"
    } else {
        "127.0.0.1:9201"
    };
    let addr = addr.unwrap_or_else(|| default.parse().unwrap());
    let message = vec![if udp { b'B' } else { b'A' }; size];
    let mut echo = vec![0; size];
    // Microseconds per round trip; `None` for a UDP message lost.
    let mut rtts: Vec<Option<f64>> = Vec::with_capacity(n);
    let start = Instant::now();
    if udp {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(WAIT))?;
        for _ in 0..n {
            let sent = Instant::now();
            socket.send(&message)?;
            // An echo later than WAIT counts as lost here, and is then taken
            // for the next message's (the Go client has the same flaw;
            // `sockloop bench` numbers its messages and matches echoes).
            let got = socket.recv(&mut echo).ok().filter(|&len| len == size);
            rtts.push(got.map(|_| sent.elapsed().as_secs_f64() * 1e6));
        }
    } else {
        let mut stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_nodelay(true)?; // each message is sent at once, not held by Nagle
        stream.set_read_timeout(Some(WAIT))?;
        for _ in 0..n {
            let sent = Instant::now();
            stream.write_all(&message)?;
            stream.read_exact(&mut echo)?; // a stream: the echo may come in pieces
            rtts.push(Some(sent.elapsed().as_secs_f64() * 1e6));
        }
    }
    let elapsed = start.elapsed();

    let mut valid: Vec<f64> = rtts.iter().flatten().copied().collect();
    valid.sort_by(f64::total_cmp);
    let (count, lost) = (valid.len() as f64, n - valid.len());
    let avg = valid.iter().sum::<f64>() / count;
    let stddev = (valid.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / count).sqrt();
    // The article's percentile: the value at rank ceil(p% of count).
    let pct = |p: f64| valid[((p / 100.0 * count).ceil() as usize).max(1) - 1];
    let secs = elapsed.as_secs_f64();
    println!("{} RTT Benchmark:", if udp { "UDP" } else { "TCP" });
    println!("Sent {n} messages of {size} bytes in {elapsed:.1?}");
    println!(
        "Throughput: {:.2} msg/sec, {:.2} MB/sec",
        n as f64 / secs,
        (n * size) as f64 / (1024.0 * 1024.0) / secs
    );
    if valid.is_empty() {
        println!("No RTTs recorded.");
    } else {
        println!(
            "RTT (min/avg/stddev/p50/p95/p99/max): {:.2} / {avg:.2} / {stddev:.2} / {:.2} / {:.2} / {:.2} / {:.2} us",
            valid[0], pct(50.0), pct(95.0), pct(99.0), valid[valid.len() - 1]
        );
    }
    if lost > 0 {
        println!("lost {lost}");
    }
    if let Some(path) = csv {
        let mut out = String::from("RTT_us\n");
        for rtt in rtts.iter().flatten() {
            out.push_str(&format!("{rtt:.2}\n"));
        }
        std::fs::write(&path, out)?;
        println!("RTTs written to {path}");
    }
    Ok(())
}
