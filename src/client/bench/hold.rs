//! `sockloop bench hold`: many idle connections, held, checked alive at
//! the start and at the end.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldConfig {
    /// Connections to open.
    pub conns: usize,
    /// How long to hold them between the two pings.
    pub duration: Duration,
    /// Connections per source address: past it the next goes from the
    /// next loopback address (127.0.0.1, .2, ...), since one address has
    /// only so many ephemeral ports (and servers cap connections per
    /// address).
    pub per_source: usize,
}

impl Default for HoldConfig {
    fn default() -> HoldConfig {
        HoldConfig {
            conns: 1000,
            duration: Duration::from_secs(10),
            per_source: 16_384,
        }
    }
}

/// What holding measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldReport {
    /// Connections opened.
    pub connected: usize,
    /// Connections that could not be opened.
    pub failed: usize,
    /// Opened per second.
    pub connect_rate: f64,
    /// Echoed a ping right after all were open.
    pub alive_at_start: usize,
    /// Echoed a ping after the hold.
    pub alive_at_end: usize,
    /// Source addresses used.
    pub sources: usize,
}

impl HoldReport {
    /// The human-readable report.
    pub fn text(&self) -> String {
        format!(
            "connected {} ({} failed) from {} source address(es) at {:.0}/s\n\
             alive at start {}, alive at end {}",
            self.connected,
            self.failed,
            self.sources,
            self.connect_rate,
            self.alive_at_start,
            self.alive_at_end
        )
    }
}

/// Opens `config.conns` connections to the echo server at `addr` (on
/// loopback, spread over source addresses; each connection tries every
/// address `addr` resolves to), pings each, holds them for
/// `config.duration`, and pings each again.
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
/// let config = HoldConfig { conns: 20, duration: Duration::from_millis(50), per_source: 8 };
/// let report = hold(addr, config)?;
/// assert_eq!((report.connected, report.alive_at_end, report.sources), (20, 20, 3));
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn hold(addr: impl ToSocketAddrs, config: HoldConfig) -> io::Result<HoldReport> {
    let addrs = super::resolve(addr)?;
    let per_source = config.per_source.max(1);
    let mut streams = Vec::with_capacity(config.conns);
    let mut failed = 0;
    let start = Instant::now();
    for i in 0..config.conns {
        match connect_any(&addrs, i / per_source)? {
            Some(stream) => streams.push(stream),
            None => failed += 1,
        }
    }
    let connect_rate = streams.len() as f64 / start.elapsed().as_secs_f64().max(f64::EPSILON);
    let alive_at_start = ping_all(&mut streams);
    std::thread::sleep(config.duration);
    let alive_at_end = ping_all(&mut streams);
    Ok(HoldReport {
        connected: streams.len(),
        failed,
        connect_rate,
        alive_at_start,
        alive_at_end,
        sources: config.conns.div_ceil(per_source),
    })
}

/// A connection from the `n`th source address to the first of `addrs`
/// that takes it; `None` if none does.
fn connect_any(addrs: &[SocketAddr], n: usize) -> io::Result<Option<TcpStream>> {
    for &addr in addrs {
        if let Ok(stream) = connect_from(source_address(addr, n)?, addr) {
            return Ok(Some(stream));
        }
    }
    Ok(None)
}

/// The `n`th source address: 127.0.0.(1 + n) towards a loopback server,
/// the unspecified address (the OS picks) otherwise.
fn source_address(server: SocketAddr, n: usize) -> io::Result<IpAddr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let last = u8::try_from(1 + n)
                .map_err(|_| io::Error::other("more than 254 loopback source addresses needed"))?;
            Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        }
        IpAddr::V4(_) => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => Ok(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
    }
}

fn connect_from(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(server);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// Writes one byte on every connection, then reads each echo; returns how
/// many came back.
fn ping_all(streams: &mut [TcpStream]) -> usize {
    let sent: Vec<bool> = streams
        .iter_mut()
        .map(|s| s.write_all(b"p").is_ok())
        .collect();
    let mut alive = 0;
    for (stream, sent) in streams.iter_mut().zip(sent) {
        let mut byte = [0];
        if sent && stream.read_exact(&mut byte).is_ok() && byte == *b"p" {
            alive += 1;
        }
    }
    alive
}
