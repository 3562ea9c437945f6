//! One process's share of the held connections: open them (paced, from
//! the right source addresses, to the right ports), ping them, close them.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::super::Ends;
use crate::TraceLines;

/// How long one connect, and one ping's echo, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Connections pinged at once: their echoes wait in the kernel until
/// read, so a batch bounds that memory (1M at once would be ~1 GB).
const PING_BATCH: usize = 1024;

/// A kernel or process limit that stops the run: past it no connection
/// can open, however often it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// The process's descriptor cap (`EMFILE`).
    Descriptors,
    /// The system's open-file table (`ENFILE`).
    SystemFiles,
    /// A source address's ephemeral ports (`EADDRNOTAVAIL`, `EADDRINUSE`).
    Ports,
    /// Kernel memory for sockets (`ENOMEM`, `ENOBUFS`).
    Memory,
}

impl Limit {
    /// The limit `error` says was reached, if it is one.
    pub fn of(error: &io::Error) -> Option<Limit> {
        match error.raw_os_error()? {
            libc::EMFILE => Some(Limit::Descriptors),
            libc::ENFILE => Some(Limit::SystemFiles),
            libc::EADDRNOTAVAIL | libc::EADDRINUSE => Some(Limit::Ports),
            libc::ENOMEM | libc::ENOBUFS => Some(Limit::Memory),
            _ => None,
        }
    }
}

/// What was reached and how to get past it, in one line.
impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Descriptors => {
                "the process's descriptor cap was reached (EMFILE): raise `ulimit -n`, \
                 or spread the connections over more --procs"
            }
            Limit::SystemFiles => {
                "the system's open-file table is full (ENFILE): raise fs.file-max"
            }
            Limit::Ports => {
                "a source address ran out of ephemeral ports (EADDRNOTAVAIL): lower \
                 --per-source to use more source addresses, or widen \
                 net.ipv4.ip_local_port_range"
            }
            Limit::Memory => {
                "the kernel is out of memory for sockets (ENOMEM/ENOBUFS): free memory \
                 or raise net.ipv4.tcp_mem, or hold fewer connections"
            }
        })
    }
}

/// Connections that could not be opened, by why (none of them a
/// [`Limit`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    /// Refused (`ECONNREFUSED`): nothing listening, or a full queue.
    pub refused: usize,
    /// Not accepted within 5 s (a full accept queue drops the SYN).
    pub timed_out: usize,
    /// Reset while connecting.
    pub reset: usize,
    /// Anything else.
    pub other: usize,
}

impl Failures {
    /// All of them.
    pub fn total(&self) -> usize {
        self.refused + self.timed_out + self.reset + self.other
    }

    fn count(&mut self, error: &io::Error) {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => self.refused += 1,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.timed_out += 1,
            io::ErrorKind::ConnectionReset => self.reset += 1,
            _ => self.other += 1,
        }
    }

    pub(super) fn add(&mut self, other: &Failures) {
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.reset += other.reset;
        self.other += other.other;
    }
}

/// Where every connection goes: connection `i` (numbered over the whole
/// run, whichever process opens it) goes to `targets[i % targets.len()]`
/// (trying each address of it in turn) from source address `i /
/// per_source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// One entry per target port: the addresses it resolved to.
    pub(crate) targets: Vec<Vec<SocketAddr>>,
    /// Connections per source address.
    pub(crate) per_source: usize,
}

/// The connections one process opened, and how opening went.
pub(super) struct Held {
    pub streams: Vec<TcpStream>,
    pub failures: Failures,
    /// From the first connect to the last.
    pub connect_time: Duration,
    /// The limit that stopped the opening early, if one did.
    pub limit: Option<Limit>,
}

impl Plan {
    /// Opens connections `range` of the plan, at most `rate` per second
    /// (`None`: as fast as they open), until done, a limit, or `stop`;
    /// each connect's outcome traced.
    pub(super) fn open(
        &self,
        range: Range<usize>,
        rate: Option<f64>,
        stop: &AtomicBool,
        trace: &mut TraceLines,
    ) -> Held {
        let mut held = Held {
            streams: Vec::with_capacity(range.len()),
            failures: Failures::default(),
            connect_time: Duration::ZERO,
            limit: None,
        };
        let start = Instant::now();
        for (j, i) in range.enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64(j as f64 / rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let target = &self.targets[i % self.targets.len()];
            match connect_any(target, i / self.per_source.max(1)) {
                Ok(stream) => {
                    trace!(trace, "connect #{i} {} (connect)", Ends(&stream));
                    held.streams.push(stream);
                }
                Err(e) => {
                    trace!(trace, "connect #{i} failed: {e} (connect)");
                    match Limit::of(&e) {
                        Some(limit) => {
                            held.limit = Some(limit);
                            break;
                        }
                        None => held.failures.count(&e),
                    }
                }
            }
        }
        held.connect_time = start.elapsed();
        held
    }

    /// Source addresses the first `conns` connections use.
    pub(super) fn sources(&self, conns: usize) -> usize {
        conns.div_ceil(self.per_source.max(1))
    }
}

impl Held {
    /// Writes one byte on every connection and reads each echo, a batch
    /// at a time; returns how many came back. Each ping's outcome traced.
    pub(super) fn ping(&mut self, trace: &mut TraceLines) -> usize {
        let mut alive = 0;
        for batch in self.streams.chunks_mut(PING_BATCH) {
            let sent: Vec<bool> = batch
                .iter_mut()
                .map(|s| match s.write_all(b"p") {
                    Ok(()) => true,
                    Err(e) => {
                        trace!(trace, "ping {} not sent: {e} (sendto)", Ends(s));
                        false
                    }
                })
                .collect();
            for (stream, _) in batch.iter_mut().zip(sent).filter(|(_, sent)| *sent) {
                let mut byte = [0];
                match stream.read_exact(&mut byte) {
                    Ok(()) if byte == *b"p" => {
                        alive += 1;
                        trace!(
                            trace,
                            "ping {} echoed (sendto 1B, recvfrom 1B)",
                            Ends(stream)
                        );
                    }
                    Ok(()) => trace!(trace, "corrupt {} ping echoed as {byte:?}", Ends(stream)),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        trace!(
                            trace,
                            "timeout {} no ping echo within {TIMEOUT:?}",
                            Ends(stream)
                        );
                    }
                    Err(e) => trace!(trace, "ping {} no echo: {e} (recvfrom)", Ends(stream)),
                }
            }
        }
        alive
    }

    /// Closes every connection with a reset (`SO_LINGER` 0), so no
    /// `TIME_WAIT` keeps their source ports from the next run.
    pub(super) fn close(self) {
        for stream in self.streams {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
    }
}

/// A connection from the `n`th source address to the first address of
/// `target` that takes it; the last error if none does.
fn connect_any(target: &[SocketAddr], n: usize) -> io::Result<TcpStream> {
    let mut last = io::Error::other("no address to connect to");
    for &addr in target {
        match connect_from(source_address(addr, n)?, addr) {
            Ok(stream) => return Ok(stream),
            Err(e) if Limit::of(&e).is_some() => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Source addresses a loopback run can use: 127.0.0.1 to 127.0.0.254.
pub const MAX_SOURCES: usize = 254;

/// The `n`th source address: 127.0.0.(1 + n) towards a loopback server,
/// the unspecified address (the OS picks) otherwise.
fn source_address(server: SocketAddr, n: usize) -> io::Result<IpAddr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let last = u8::try_from(1 + n)
                .ok()
                .filter(|&last| last < 255)
                .ok_or_else(|| {
                    io::Error::other("more than 254 loopback source addresses needed")
                })?;
            Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        }
        IpAddr::V4(_) => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => Ok(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
    }
}

fn connect_from(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(server);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if !source.is_unspecified() {
        // The port is picked at connect: bind's own search slows sharply
        // as an address fills (5,803 against 29,621 connects/s at 4,000
        // from one address).
        crate::net::sys::set_bind_address_no_port(std::os::fd::AsFd::as_fd(&socket))?;
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&server.into(), TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_told_from_failures_by_errno() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(Limit::of(&os(libc::EMFILE)), Some(Limit::Descriptors));
        assert_eq!(Limit::of(&os(libc::ENFILE)), Some(Limit::SystemFiles));
        assert_eq!(Limit::of(&os(libc::EADDRNOTAVAIL)), Some(Limit::Ports));
        assert_eq!(Limit::of(&os(libc::EADDRINUSE)), Some(Limit::Ports));
        assert_eq!(Limit::of(&os(libc::ENOBUFS)), Some(Limit::Memory));
        assert_eq!(Limit::of(&os(libc::ECONNREFUSED)), None);
        let mut failures = Failures::default();
        for errno in [
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            libc::ECONNRESET,
            libc::EHOSTUNREACH,
        ] {
            failures.count(&os(errno));
        }
        let one_each = Failures {
            refused: 1,
            timed_out: 1,
            reset: 1,
            other: 1,
        };
        assert_eq!((failures, failures.total()), (one_each, 4));
    }

    #[test]
    fn sources_are_127_0_0_1_to_254_towards_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(source_address(lo, 0).unwrap(), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(
            source_address(lo, 253).unwrap(),
            Ipv4Addr::new(127, 0, 0, 254)
        );
        assert!(source_address(lo, 254).is_err());
        let other: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        assert_eq!(source_address(other, 9).unwrap(), Ipv4Addr::UNSPECIFIED);
    }
}
