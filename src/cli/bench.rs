//! `sockloop bench`: load an echo server, or hold many connections.

use std::time::Duration;

use clap::{Args, Subcommand};

use sockloop::client::bench::{hgrm, hold, run_tcp, run_udp, svg_plot, HoldConfig, LoadConfig};
use sockloop::config::{parse_duration, parse_size};

use super::addr::HostPort;
use crate::Failure;

/// The largest UDP payload over IPv4: 65,535 less the IP and UDP headers
/// (the error message spells it out).
const UDP_MAX: usize = 65_507;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// TCP echo load: closed loop (--depth in flight) or open loop (--rate).
    Tcp(BenchArgs),
    /// UDP echo load: a socket per connection, a datagram per message; an echo
    /// later than 1 s is lost.
    Udp(BenchArgs),
    /// Hold many idle connections, pinging each at the start and the end.
    Hold(HoldArgs),
}

#[derive(Args)]
pub(crate) struct HoldArgs {
    /// The echo server, HOST:PORT (each connection tries every address).
    #[arg(value_name = "ADDR")]
    addr: HostPort,
    /// Connections to hold.
    #[arg(long, default_value = "1000", value_parser = at_least_one)]
    conns: usize,
    /// How long to hold them.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    duration: Duration,
    /// Connections per source address (127.0.0.1, .2, ... towards a loopback server).
    #[arg(long, default_value = "16384", value_name = "N", value_parser = at_least_one)]
    per_source: usize,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// The echo server, HOST:PORT (TCP: each connection tries every address; UDP: the first).
    #[arg(value_name = "ADDR")]
    addr: HostPort,
    /// Connections.
    #[arg(long, default_value = "50", value_parser = at_least_one)]
    conns: usize,
    /// Bytes per message (at least 16; UDP: at most 65,507).
    #[arg(long, value_parser = parse_size, default_value = "64", value_name = "BYTES")]
    size: usize,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value = "1", value_name = "D", value_parser = at_least_one)]
    depth: usize,
    /// Measured time.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    duration: Duration,
    /// Load before measuring.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    warmup: Duration,
    /// Generator threads.
    #[arg(long, default_value = "1", value_name = "N", value_parser = at_least_one)]
    threads: usize,
    /// Open loop: messages per second over all connections; latency counts from each
    /// message's intended send time (coordinated omission corrected).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Print a JSON summary instead of the text report.
    #[arg(long)]
    json: bool,
    /// Write one RTT per line in microseconds under an `RTT_us` header.
    #[arg(long, value_name = "FILE")]
    csv: Option<std::path::PathBuf>,
    /// Write the HDR histogram's percentile distribution (.hgrm).
    #[arg(long, value_name = "FILE")]
    hgrm: Option<std::path::PathBuf>,
    /// Draw the latency percentile curve into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

/// A count that 0 would make meaningless (no connections, no messages
/// in flight, no threads): refused rather than silently raised to 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Which load `bench` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

/// Runs one `sockloop bench` subcommand.
pub(crate) fn run(command: BenchCommand) -> Result<(), Failure> {
    match command {
        BenchCommand::Tcp(args) => bench(args, Transport::Tcp),
        BenchCommand::Udp(args) => bench(args, Transport::Udp),
        BenchCommand::Hold(args) => bench_hold(args),
    }
}

/// `sockloop bench tcp|udp`: the load, the report, the files. Exit 1 if
/// any byte came back wrong or any message or connection was lost.
fn bench(args: BenchArgs, transport: Transport) -> Result<(), Failure> {
    if args.size < 16 {
        return Err(Failure::usage("--size must be at least 16 bytes"));
    }
    if transport == Transport::Udp && args.size > UDP_MAX {
        let error = format!(
            "--size {} is over the largest UDP datagram (65,507 bytes)",
            args.size
        );
        return Err(Failure::usage(error));
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(Failure::usage("--rate must be above 0"));
    }
    let config = LoadConfig {
        conns: args.conns,
        size: args.size,
        depth: args.depth,
        duration: args.duration,
        warmup: args.warmup,
        threads: args.threads,
        rate: args.rate,
        progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = match transport {
        Transport::Tcp => run_tcp(args.addr.all(), config)?,
        Transport::Udp => run_udp(args.addr.first(), config)?,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, hgrm(&report.rtt_us))?;
    }
    if let Some(path) = &args.plot {
        let title = format!("{} echo latency, {} connections", args.addr, args.conns);
        std::fs::write(path, svg_plot(&report.rtt_us, &title))?;
    }
    if !report.clean() {
        return Err(std::io::Error::other(report.problems()).into());
    }
    Ok(())
}

/// `sockloop bench hold`: exit 1 unless every connection held.
fn bench_hold(args: HoldArgs) -> Result<(), Failure> {
    let config = HoldConfig {
        conns: args.conns,
        duration: args.duration,
        per_source: args.per_source,
    };
    let report = hold(args.addr.all(), config)?;
    println!("{}", report.text());
    if report.alive_at_end < args.conns {
        let lost = args.conns - report.alive_at_end;
        return Err(std::io::Error::other(format!("{lost} connection(s) not held")).into());
    }
    Ok(())
}
