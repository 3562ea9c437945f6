//! `sockloop bench hold`: many idle connections, held, checked alive at
//! the start and at the end; in one process, or spread over several
//! (each process has its own descriptor cap) with their reports merged.

mod procs;
mod share;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::TraceLines;

pub use procs::{hold_in_processes, hold_share};
use share::Plan;
pub use share::{Failures, Limit, MAX_SOURCES};

/// Descriptors a holding process keeps for itself (standard streams,
/// pipes, files read at start): its share of connections is its cap
/// less these.
pub const DESCRIPTOR_RESERVE: usize = 16;

/// What to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldConfig {
    /// Connections to open.
    pub conns: usize,
    /// How long to hold them between the two pings.
    pub duration: Duration,
    /// Connections per source address: past it the next goes from the
    /// next loopback address (127.0.0.1, .2, ... .254), since one address
    /// has only so many ephemeral ports (and servers cap connections per
    /// address). Default 4,096: 254 addresses hold a million, and each
    /// stays well under half its ports (with a port chosen at `bind`, as
    /// before `IP_BIND_ADDRESS_NO_PORT`, 15,000 from one address opened
    /// at 201/s against 10,967/s at 4,096).
    pub per_source: usize,
    /// Connections opened per second over the whole run (`None`: as fast
    /// as they open).
    pub connect_rate: Option<f64>,
    /// Trace each connect and ping (`bench hold --trace`, lines starting
    /// `bench hold`, from every holding process): at most this many lines
    /// a second per process (`None`: off).
    pub trace: Option<u32>,
}

impl Default for HoldConfig {
    fn default() -> HoldConfig {
        HoldConfig {
            conns: 1000,
            duration: Duration::from_secs(10),
            per_source: 4096,
            connect_rate: None,
            trace: None,
        }
    }
}

/// What holding measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldReport {
    /// Connections opened.
    pub connected: usize,
    /// Connections that could not be opened, by why.
    pub failures: Failures,
    /// Opened per second: all opened over the longest process's opening
    /// time.
    pub connect_rate: f64,
    /// Echoed a ping right after all were open.
    pub alive_at_start: usize,
    /// Echoed a ping after the hold (`None`: not held, a limit stopped the
    /// run first).
    pub alive_at_end: Option<usize>,
    /// Source addresses used.
    pub sources: usize,
    /// Target ports.
    pub ports: usize,
    /// Processes that held them.
    pub procs: usize,
    /// The limit that stopped the run, if one did.
    pub limit: Option<Limit>,
}

impl HoldReport {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let f = &self.failures;
        let end = match self.alive_at_end {
            Some(n) => n.to_string(),
            None => "not held (stopped at a limit)".into(),
        };
        format!(
            "connected {} ({} failed: {} refused, {} timed out, {} reset, {} other) \
             over {} process(es) from {} source address(es) to {} port(s) at {:.0}/s\n\
             alive at start {}, alive at end {end}",
            self.connected,
            f.total(),
            f.refused,
            f.timed_out,
            f.reset,
            f.other,
            self.procs,
            self.sources,
            self.ports,
            self.connect_rate,
            self.alive_at_start,
        )
    }
}

/// Opens `config.conns` connections to the echo server at `addr` (on
/// loopback, spread over source addresses; each connection tries every
/// address `addr` resolves to), pings each, holds them for
/// `config.duration`, and pings each again. A [`Limit`] stops the opening
/// and skips the hold: the report says which, and what was reached.
///
/// ```
/// use std::time::Duration;
/// use sockloop::client::bench::{hold, HoldConfig};
/// use sockloop::{services::Echo, Server};
///
/// let server = Server::builder().tcp("127.0.0.1:0".parse().unwrap(), || Echo).build()?;
/// let addr = server.tcp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let config = HoldConfig {
///     conns: 20,
///     duration: Duration::from_millis(50),
///     per_source: 8,
///     ..HoldConfig::default()
/// };
/// let report = hold(addr, config)?;
/// assert_eq!((report.connected, report.alive_at_end, report.sources), (20, Some(20), 3));
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn hold(addr: impl ToSocketAddrs, config: HoldConfig) -> io::Result<HoldReport> {
    hold_spread(&[super::resolve(addr)?], config)
}

/// [`hold`] over several targets (e.g. the ports of several servers),
/// each given as the addresses it resolved to: connection `i` goes to
/// `targets[i % targets.len()]`. One process.
pub fn hold_spread(targets: &[Vec<SocketAddr>], config: HoldConfig) -> io::Result<HoldReport> {
    let plan = plan(targets, &config)?;
    let mut trace = TraceLines::new("bench hold", config.trace);
    let stop = AtomicBool::new(false);
    let mut held = plan.open(0..config.conns, config.connect_rate, &stop, &mut trace);
    let alive_at_start = held.ping(&mut trace);
    let alive_at_end = match held.limit {
        Some(_) => None,
        None => {
            log::info!(
                "{} connections open; holding them for {:?}",
                held.streams.len(),
                config.duration
            );
            std::thread::sleep(config.duration);
            Some(held.ping(&mut trace))
        }
    };
    let report = HoldReport {
        connected: held.streams.len(),
        failures: held.failures,
        connect_rate: rate(held.streams.len(), held.connect_time),
        alive_at_start,
        alive_at_end,
        sources: plan.sources(config.conns),
        ports: targets.len(),
        procs: 1,
        limit: held.limit,
    };
    held.close();
    Ok(report)
}

/// The plan for `config`, refused if it has no target, a connect rate not
/// above 0, or needs more source addresses than loopback has.
fn plan(targets: &[Vec<SocketAddr>], config: &HoldConfig) -> io::Result<Plan> {
    if targets.is_empty() || targets.iter().any(Vec::is_empty) {
        return Err(io::Error::other("no address to connect to"));
    }
    if config
        .connect_rate
        .is_some_and(|r| !(r.is_finite() && r > 0.0))
    {
        return Err(io::Error::other("the connect rate must be above 0"));
    }
    let plan = Plan {
        targets: targets.to_vec(),
        per_source: config.per_source.max(1),
    };
    let loopback = targets
        .iter()
        .flatten()
        .any(|a| a.ip().is_loopback() && a.is_ipv4());
    if loopback && plan.sources(config.conns) > MAX_SOURCES {
        return Err(io::Error::other(format!(
            "{} connections at --per-source {} need {} source addresses; loopback has {MAX_SOURCES}: raise --per-source",
            config.conns,
            plan.per_source,
            plan.sources(config.conns)
        )));
    }
    Ok(plan)
}

/// `n` per `time`, per second.
fn rate(n: usize, time: Duration) -> f64 {
    n as f64 / time.as_secs_f64().max(f64::EPSILON)
}
