//! One generator thread over UDP: a connected socket per "connection",
//! each datagram one message. Echoes may come back in any order; one not
//! back within [`LOSS_TIMEOUT`] is lost (and, in the closed loop,
//! replaced, so the load goes on).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::TraceLines;

use super::{
    first_due, is_message, message, send_interval, Addr, LoadConfig, Report, Window, MAX_IN_FLIGHT,
};

/// Why a sockloop server loses datagrams, told when some were lost.
pub(super) const LOSS_HINT: &str = "a sockloop server drops datagrams beyond its --udp-rate \
    (datagrams per address per socket; serve --udp-rate 0 lifts it) and any over its \
    datagram limit (65,507 B)";

/// An echo later than this is counted lost.
pub(super) const LOSS_TIMEOUT: Duration = Duration::from_secs(1);

struct Socket {
    id: u32,
    socket: UdpSocket,
    next_send: u64,
    /// Sequence numbers in flight and when they were sent (or due).
    in_flight: HashMap<u64, Instant>,
    due: Instant,
}

pub(super) fn run(
    addrs: &[SocketAddr],
    config: LoadConfig,
    ids: &[u32],
    echoes: &AtomicU64,
) -> io::Result<Report> {
    let mut trace = TraceLines::new("bench udp", config.trace);
    let mut poll = Poll::new()?;
    let mut report = Report::empty(&config)?;
    let size = config.size.max(16);
    let start = Instant::now();
    let window = Window::after_warmup(start, &config);
    let interval = send_interval(&config);
    let addr = addrs[0];
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    }
    .parse()
    .map_err(io::Error::other)?;
    let mut sockets = Vec::with_capacity(ids.len());
    for (k, &id) in ids.iter().enumerate() {
        let mut socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        let local = || Addr(socket.local_addr());
        trace!(trace, "connect #{id} {} to {addr} (connect)", local());
        poll.registry()
            .register(&mut socket, Token(k), Interest::READABLE)?;
        sockets.push(Socket {
            id,
            socket,
            next_send: 0,
            in_flight: HashMap::new(),
            due: first_due(start, interval, k, ids.len()),
        });
    }
    let mut out = Vec::with_capacity(size);
    let mut send = |s: &mut Socket, at: Instant, report: &mut Report, trace: &mut TraceLines| {
        let counted = u64::from(window.holds(at));
        out.clear();
        message(s.id, s.next_send, size, &mut out);
        // A server that fell too far behind, or a full socket buffer,
        // loses the datagram like the network would.
        let id = s.id;
        let sent = if s.in_flight.len() >= MAX_IN_FLIGHT {
            trace!(trace, "write #{id} not sent, {MAX_IN_FLIGHT} in flight");
            false
        } else {
            match s.socket.send(&out) {
                Ok(n) => {
                    trace!(trace, "write #{id} {n}B (sendto)");
                    true
                }
                Err(e) => {
                    trace!(trace, "write #{id} failed: {e} (sendto)");
                    false
                }
            }
        };
        if sent {
            s.in_flight.insert(s.next_send, at);
        } else {
            report.lost += counted;
        }
        s.next_send += 1;
        report.sent += counted;
    };
    if interval.is_none() {
        for s in &mut sockets {
            for _ in 0..config.depth.max(1) {
                send(s, start, &mut report, &mut trace);
            }
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0; size.max(65_536)];
    loop {
        let now = Instant::now();
        let sending = now < window.until;
        // Echoes overdue are lost; in the closed loop each is replaced.
        for s in &mut sockets {
            let before = s.in_flight.len();
            s.in_flight
                .retain(|_, sent| now.saturating_duration_since(*sent) < LOSS_TIMEOUT);
            let gone = before - s.in_flight.len();
            report.lost += gone as u64;
            if gone > 0 {
                let id = s.id;
                trace!(
                    trace,
                    "timeout #{id} {gone} echoes later than {LOSS_TIMEOUT:?}, lost"
                );
            }
            if interval.is_none() && sending {
                for _ in 0..gone {
                    send(s, now, &mut report, &mut trace);
                }
            }
        }
        let in_flight: usize = sockets.iter().map(|s| s.in_flight.len()).sum();
        if !sending && in_flight == 0 {
            break;
        }
        if let (Some(interval), true) = (interval, sending) {
            for s in &mut sockets {
                while s.due <= now {
                    let due = s.due;
                    s.due += interval;
                    send(s, due, &mut report, &mut trace);
                }
            }
        }
        let next_due = interval
            .filter(|_| sending)
            .and_then(|_| sockets.iter().map(|s| s.due).min());
        let timeout = next_due.map_or(Duration::from_millis(20), |at| {
            at.saturating_duration_since(now)
        });
        match poll.poll(&mut events, Some(timeout.min(Duration::from_millis(20)))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            let s = &mut sockets[event.token().0];
            let id = s.id;
            let mut batch = 0;
            loop {
                let n = match s.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // e.g. an ICMP error for an earlier send
                        trace!(trace, "read #{id} failed: {e} (recvfrom)");
                        continue;
                    }
                };
                batch += 1;
                trace!(trace, "read #{id} {n}B (recvfrom)");
                let now = Instant::now();
                let seq = buf
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                let sent = seq.and_then(|seq| s.in_flight.remove(&seq).map(|at| (seq, at)));
                let Some((seq, sent)) = sent else {
                    trace!(trace, "corrupt #{id} an echo of nothing in flight");
                    report.corrupted += 1;
                    continue;
                };
                if n != size || !is_message(s.id, seq, &buf[..n]) {
                    trace!(trace, "corrupt #{id} echo {seq} differs from what was sent");
                    report.corrupted += 1;
                } else {
                    trace!(trace, "checked #{id} echo {seq} intact");
                    if window.holds(sent) {
                        report.record_echo(now.saturating_duration_since(sent));
                        echoes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if interval.is_none() && now < window.until {
                    send(s, now, &mut report, &mut trace);
                }
            }
            trace!(
                trace,
                "batch #{id} {batch} datagrams (recvfrom until EAGAIN)"
            );
        }
    }
    if report.lost > 0 {
        report.hint = Some(LOSS_HINT.into());
    }
    Ok(report)
}
