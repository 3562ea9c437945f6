//! `sockloop bench`: load an echo server, or hold many connections.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Subcommand};

use sockloop::client::bench::{
    hgrm, hold_in_processes, hold_share, hold_spread, run_tcp, run_udp, svg_plot, HoldConfig,
    HoldReport, LoadConfig, DESCRIPTOR_RESERVE,
};
use sockloop::config::{parse_duration, parse_size};
use sockloop::net::{raise_nofile_limit, HostLimits};

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
    /// One process's share of `hold --procs` (run by `hold` itself; the
    /// share comes on stdin).
    #[command(hide = true)]
    HoldShare,
}

#[derive(Args)]
pub(crate) struct HoldArgs {
    /// The echo server, HOST:PORT (each connection tries every address); with --ports, HOST
    /// alone.
    #[arg(value_name = "ADDR")]
    addr: String,
    /// Connections to hold.
    #[arg(long, default_value = "1000", value_parser = at_least_one)]
    conns: usize,
    /// How long to hold them.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    duration: Duration,
    /// Connections per source address (127.0.0.1, .2, ... towards a loopback server).
    #[arg(long, default_value = "4096", value_name = "N", value_parser = at_least_one)]
    per_source: usize,
    /// Processes to spread the connections over (default: as many as the descriptor cap needs,
    /// one when it is enough).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    procs: Option<usize>,
    /// Open at most R connections per second over all processes (default: as fast as they open).
    #[arg(long, value_name = "R")]
    connect_rate: Option<f64>,
    /// Target ports, e.g. 7000-7059 or 7000,7002: connection i goes to the (i mod n)th.
    #[arg(long, value_name = "PORTS", value_parser = parse_ports)]
    ports: Option<Ports>,
    /// Print a line per connect (its two ends, or why it failed) and per
    /// ping, from every holding process, under the log target
    /// `sockloop::trace`.
    #[arg(long)]
    trace: bool,
    /// Trace lines per second per process; beyond it lines are held back
    /// and one line counts them when the second ends.
    #[arg(long, value_name = "N", default_value_t = sockloop::DEFAULT_TRACE_RATE)]
    trace_rate: u32,
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
    /// Print what each generator thread's loop does: a line per connect,
    /// read and write (bytes, syscall), echoes checked, UDP receive batch
    /// and timeout, under the log target `sockloop::trace`.
    #[arg(long)]
    trace: bool,
    /// Trace lines per second per generator thread; beyond it lines are
    /// held back and one line counts them when the second ends.
    #[arg(long, value_name = "N", default_value_t = sockloop::DEFAULT_TRACE_RATE)]
    trace_rate: u32,
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
        BenchCommand::HoldShare => Ok(hold_share()?),
    }
}

/// Raises the descriptor cap as far as it goes and logs the limits the
/// load runs under; returns them.
fn log_limits() -> Result<(u64, HostLimits), Failure> {
    let cap = raise_nofile_limit()?;
    let host = HostLimits::read();
    log::info!("descriptor cap {cap}, {host}");
    Ok((cap, host))
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
    log_limits()?;
    let config = LoadConfig {
        conns: args.conns,
        size: args.size,
        depth: args.depth,
        duration: args.duration,
        warmup: args.warmup,
        threads: args.threads,
        rate: args.rate,
        progress: !args.json && !args.trace && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        trace: args.trace.then_some(args.trace_rate),
        samples: args.csv.is_some(),
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

/// `sockloop bench hold`: exit 1 unless every connection held; a limit
/// reached is the one-line error, after the report of what was reached.
fn bench_hold(args: HoldArgs) -> Result<(), Failure> {
    if args.connect_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(Failure::usage("--connect-rate must be above 0"));
    }
    let (cap, host) = log_limits()?;
    if let Some(ports) = host.ports_per_source() {
        if args.per_source as u64 > u64::from(ports / 2) {
            log::warn!(
                "--per-source {} is over half the {ports} ephemeral ports of an address: \
                 connects slow down as an address's ports fill",
                args.per_source
            );
        }
    }
    let targets = targets(&args.addr, args.ports.as_ref().map(|p| &p.0[..]))?;
    let config = HoldConfig {
        conns: args.conns,
        duration: args.duration,
        per_source: args.per_source,
        connect_rate: args.connect_rate,
        trace: args.trace.then_some(args.trace_rate),
    };
    let per_process = usize::try_from(cap)
        .unwrap_or(usize::MAX)
        .saturating_sub(DESCRIPTOR_RESERVE)
        .max(1);
    let procs = args.procs.unwrap_or(args.conns.div_ceil(per_process));
    let report = if procs == 1 {
        hold_spread(&targets, config)?
    } else {
        log::info!(
            "{} connections over {procs} processes (descriptor cap {cap} each)",
            args.conns
        );
        let exe = std::env::current_exe()?;
        hold_in_processes(&targets, config, procs, || {
            let mut command = std::process::Command::new(&exe);
            command.args(["bench", "hold-share"]);
            command
        })?
    };
    println!("{}", report.text());
    held_them_all(&report, args.conns)
}

/// The error for a run that did not hold every connection: the limit it
/// stopped at, or how many were lost.
fn held_them_all(report: &HoldReport, conns: usize) -> Result<(), Failure> {
    if let Some(limit) = report.limit {
        let error = format!("stopped at {} connections: {limit}", report.connected);
        return Err(std::io::Error::other(error).into());
    }
    let held = report.alive_at_end.unwrap_or(0);
    if held < conns {
        let lost = conns - held;
        return Err(std::io::Error::other(format!("{lost} connection(s) not held")).into());
    }
    Ok(())
}

/// The targets of `hold`: ADDR's addresses, or with --ports, ADDR's host
/// (a port in ADDR is ignored) at each port.
fn targets(addr: &str, ports: Option<&[u16]>) -> Result<Vec<Vec<SocketAddr>>, Failure> {
    let Some(ports) = ports else {
        let addr: HostPort = addr.parse().map_err(Failure::usage)?;
        return Ok(vec![addr.all().to_vec()]);
    };
    let hosts: Vec<SocketAddr> = match addr.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, 0)],
        Err(_) => match addr.parse::<HostPort>() {
            Ok(host_port) => host_port.all().to_vec(),
            Err(_) => (addr, 0)
                .to_socket_addrs()
                .map_err(|e| Failure::usage(format!("cannot resolve {addr:?}: {e}")))?
                .collect(),
        },
    };
    Ok(ports
        .iter()
        .map(|&port| {
            hosts
                .iter()
                .map(|h| SocketAddr::new(h.ip(), port))
                .collect()
        })
        .collect())
}

/// `--ports`: every port, in order.
#[derive(Clone, Debug, PartialEq)]
struct Ports(Vec<u16>);

/// `7000-7059`, `7000,7002` or a mix: every port, in order; port 0 and
/// empty ranges refused.
fn parse_ports(text: &str) -> Result<Ports, String> {
    let port = |p: &str| match p.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
        Ok(n) => Ok(n),
    };
    let mut ports = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (port(low)?, port(high)?);
                if low > high {
                    return Err(format!("{part:?} is an empty range"));
                }
                ports.extend(low..=high);
            }
            None => ports.push(port(part)?),
        }
    }
    Ok(Ports(ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_lists_and_ranges() {
        let ports = |list: &[u16]| Ok(Ports(list.to_vec()));
        assert_eq!(
            parse_ports("7000-7002,7010"),
            ports(&[7000, 7001, 7002, 7010])
        );
        assert_eq!(parse_ports("7000"), ports(&[7000]));
        assert!(parse_ports("7002-7000")
            .unwrap_err()
            .contains("empty range"));
        for bad in ["0", "7000,", "x", "70000", "1-0"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn with_ports_the_host_is_taken_at_each_port() {
        let both: Vec<SocketAddr> = ["127.0.0.1:7000".parse().unwrap()].to_vec();
        assert_eq!(targets("127.0.0.1:7000", None).ok(), Some(vec![both]));
        let spread = targets("127.0.0.2", Some(&[5, 6])).ok().unwrap();
        let at = |p| vec![SocketAddr::from(([127, 0, 0, 2], p))];
        assert_eq!(spread, vec![at(5), at(6)]);
        assert_eq!(
            targets("127.0.0.2:9", Some(&[5])).ok().unwrap(),
            vec![at(5)]
        );
    }
}
