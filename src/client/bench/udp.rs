//! One generator thread over UDP: a connected socket per "connection",
//! each datagram one message. Echoes may come back in any order; one not
//! back within [`LOSS_TIMEOUT`] is lost (and, in the closed loop,
//! replaced, so the load goes on). A readiness is drained with
//! `recvmmsg` and the messages it triggers leave in one `sendmmsg`, as
//! the server batches its side.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::net::gso::{Offload, OffloadMode};
use crate::net::sys::{self, RecvMeta, RecvSlots};
use crate::TraceLines;

use super::{
    first_due, is_message, message, send_interval, Addr, Clock, LoadConfig, Report, RttCounts,
    Window, MAX_IN_FLIGHT,
};

/// Why a sockloop server loses datagrams, told when some were lost.
pub(super) const LOSS_HINT: &str = "a sockloop server drops datagrams beyond its --udp-rate \
    (datagrams per address per socket; serve --udp-rate 0 lifts it) and any over its \
    datagram limit (65,507 B)";

/// An echo later than this is counted lost.
pub(super) const LOSS_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the sockets are searched for echoes later than
/// [`LOSS_TIMEOUT`]: a lost echo is counted (and replaced) up to this much
/// late, and a loop turn spends nothing on it otherwise.
const EXPIRY_CHECK: Duration = Duration::from_millis(10);

/// Most datagrams one `recvmmsg` takes; fewer when they are large, so the
/// receive slots stay within [`RECV_BYTES`].
const RECV_SLOTS: usize = 64;

/// Bytes of receive slots per generator thread.
const RECV_BYTES: usize = 1 << 20;

/// The sequence numbers one socket has in flight, with when each was sent
/// (or due): a window from the oldest unanswered number to the next to
/// send. Send times only grow with the number, so the echoes overdue are
/// always at its front.
#[derive(Default)]
struct InFlight {
    /// The number of `sent[0]`.
    first: u64,
    /// Send times on the load's clock; [`ANSWERED`] where the echo came
    /// (or the datagram never left).
    sent: VecDeque<u64>,
    count: usize,
}

/// An [`InFlight`] slot whose echo is no longer awaited.
const ANSWERED: u64 = u64::MAX;

impl InFlight {
    /// Numbers from the oldest awaited to the last sent: bounded by
    /// [`MAX_IN_FLIGHT`] (past it a datagram is not sent but lost).
    fn span(&self) -> usize {
        self.sent.len()
    }

    /// Number `seq` (the next one, after `first + span`) sent at `at`.
    fn push(&mut self, seq: u64, at: u64) {
        if self.sent.is_empty() {
            self.first = seq;
        }
        debug_assert_eq!(seq, self.first + self.sent.len() as u64);
        self.sent.push_back(at);
        self.count += 1;
    }

    /// When `seq` was sent, if it is awaited; it is not any more.
    fn take(&mut self, seq: u64) -> Option<u64> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        let at = std::mem::replace(self.sent.get_mut(i)?, ANSWERED);
        if at == ANSWERED {
            return None;
        }
        self.count -= 1;
        while self.sent.front() == Some(&ANSWERED) {
            self.sent.pop_front();
            self.first += 1;
        }
        Some(at)
    }

    /// Gives up on every number sent before `cutoff`; returns how many.
    fn expire(&mut self, cutoff: u64) -> usize {
        let mut gone = 0;
        while let Some(&at) = self.sent.front() {
            if at != ANSWERED && at >= cutoff {
                break;
            }
            gone += usize::from(at != ANSWERED);
            self.sent.pop_front();
            self.first += 1;
        }
        self.count -= gone;
        gone
    }
}

struct Socket {
    id: u32,
    socket: UdpSocket,
    next_send: u64,
    in_flight: InFlight,
    /// The next datagram due (open loop), on the load's clock.
    due: u64,
    /// Messages queued for the next `sendmmsg`, `size` bytes each.
    out: Vec<u8>,
}

/// What every socket's sending and checking follows.
struct Sender {
    size: usize,
    window: Window,
    /// Segmented sends, where the kernel takes them.
    offload: Offload,
}

impl Sender {
    /// Queues `s`'s next message, sent (or due) at `at`; one past
    /// [`MAX_IN_FLIGHT`] is lost instead, as a server that fell too far
    /// behind would lose it.
    fn queue(&self, s: &mut Socket, at: u64, report: &mut Report, trace: &mut TraceLines) {
        let counted = u64::from(self.window.holds(at));
        report.sent += counted;
        if s.in_flight.span() >= MAX_IN_FLIGHT {
            let id = s.id;
            trace!(trace, "write #{id} not sent, {MAX_IN_FLIGHT} in flight");
            report.lost += counted;
            return;
        }
        message(s.id, s.next_send, self.size, &mut s.out);
        s.in_flight.push(s.next_send, at);
        s.next_send += 1;
    }

    /// Sends what [`Sender::queue`] queued for `s`: in segmented runs
    /// where the kernel takes them (one `sendmsg` with `UDP_SEGMENT` per
    /// up to 64 datagrams, the server still receiving them one by one),
    /// else `sendmmsg` by `sendmmsg`, naming no destination (the socket is
    /// connected). A datagram the kernel refuses (a full socket buffer)
    /// is lost, like the network would lose it.
    fn flush(&mut self, s: &mut Socket, report: &mut Report, trace: &mut TraceLines) {
        let (id, size) = (s.id, self.size);
        let mut left = &s.out[..];
        while !left.is_empty() {
            let gone = match self.offload.send_connected(s.socket.as_fd(), left, size) {
                Ok((n, segmented)) => {
                    let how = if segmented {
                        "sendmsg UDP_SEGMENT"
                    } else {
                        "sendmmsg"
                    };
                    for _ in 0..n {
                        trace!(trace, "write #{id} {size}B ({how})");
                    }
                    n
                }
                Err((e, n)) => {
                    trace!(trace, "write #{id} {n} datagrams failed: {e} (send)");
                    for lost in left.chunks(size).take(n) {
                        let seq = lost
                            .first_chunk::<8>()
                            .map_or(0, |b| u64::from_le_bytes(*b));
                        if let Some(at) = s.in_flight.take(seq) {
                            report.lost += u64::from(self.window.holds(at));
                        }
                    }
                    n
                }
            };
            // (Never 0 for data: the kernel sends or fails at least one.)
            left = &left[(gone.max(1) * size).min(left.len())..];
        }
        s.out.clear();
    }
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
    let mut counts = RttCounts::new();
    let size = config.size.max(16);
    let clock = Clock {
        start: Instant::now(),
    };
    let window = Window::after_warmup(&config);
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
            in_flight: InFlight::default(),
            due: first_due(interval, k, ids.len()),
            out: Vec::with_capacity(size * config.depth.clamp(1, sys::MAX_BATCH)),
        });
    }
    // The sockets are alike: what the first may do, all may.
    let offload = match sockets.first() {
        Some(s) => Offload::sending(s.socket.as_fd(), OffloadMode::from_env()),
        None => Offload::new(OffloadMode::Off, false, false),
    };
    let mut sender = Sender {
        size,
        window,
        offload,
    };
    if interval.is_none() {
        for s in &mut sockets {
            for _ in 0..config.depth.max(1) {
                sender.queue(s, 0, &mut report, &mut trace);
            }
            sender.flush(s, &mut report, &mut trace);
        }
    }
    let mut events = Events::with_capacity(1024);
    // A slot one byte larger than a message, so a longer echo shows as
    // one of the wrong length rather than needing the kernel's
    // truncation flag.
    let slot_size = size + 1;
    let count = (RECV_BYTES / slot_size).clamp(1, RECV_SLOTS);
    let mut slots = RecvSlots::new(count, slot_size);
    let mut metas = vec![RecvMeta::default(); count];
    let timeout_ns = LOSS_TIMEOUT.as_nanos() as u64;
    let mut shown = 0;
    // Read once per loop turn, after the poll returns: the time of every
    // echo and send in its events (README, "Load testing").
    let mut now = clock.now();
    // Overdue echoes are looked for every EXPIRY_CHECK, not every turn.
    let mut next_expiry_check = 0;
    loop {
        let sending = now < window.until;
        // Echoes overdue are lost; in the closed loop each is replaced.
        let checking = now >= next_expiry_check;
        if checking {
            next_expiry_check = now + EXPIRY_CHECK.as_nanos() as u64;
        }
        for s in sockets.iter_mut().filter(|_| checking) {
            let gone = s.in_flight.expire(now.saturating_sub(timeout_ns));
            report.lost += gone as u64;
            if gone > 0 {
                let id = s.id;
                trace!(
                    trace,
                    "timeout #{id} {gone} echoes later than {LOSS_TIMEOUT:?}, lost"
                );
                if interval.is_none() && sending {
                    for _ in 0..gone {
                        sender.queue(s, now, &mut report, &mut trace);
                    }
                    sender.flush(s, &mut report, &mut trace);
                }
            }
        }
        if !sending && sockets.iter().all(|s| s.in_flight.count == 0) {
            break;
        }
        let mut timeout = Duration::from_millis(20);
        if let (Some(interval), true) = (interval, sending) {
            for s in &mut sockets {
                while s.due <= now {
                    let due = s.due;
                    s.due += interval;
                    sender.queue(s, due, &mut report, &mut trace);
                }
                sender.flush(s, &mut report, &mut trace);
            }
            if let Some(next) = sockets.iter().map(|s| s.due).min() {
                timeout = timeout.min(Duration::from_nanos(next.saturating_sub(now)));
            }
        }
        let polled = poll.poll(&mut events, Some(timeout));
        now = clock.now();
        match polled {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let sending = now < window.until;
        for event in events.iter() {
            let s = &mut sockets[event.token().0];
            let id = s.id;
            let mut batch = 0;
            loop {
                let got = match slots.recv(s.socket.as_fd(), &mut metas) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // e.g. an ICMP error for an earlier send
                        trace!(trace, "read #{id} failed: {e} (recvmmsg)");
                        continue;
                    }
                };
                batch += got;
                for (i, meta) in metas[..got].iter().enumerate() {
                    let (n, echo) = (meta.len, slots.slot(i, meta.len));
                    trace!(trace, "read #{id} {n}B (recvmmsg)");
                    let seq = echo.first_chunk::<8>().map(|b| u64::from_le_bytes(*b));
                    let sent = seq.and_then(|seq| s.in_flight.take(seq).map(|at| (seq, at)));
                    let Some((seq, sent)) = sent else {
                        trace!(trace, "corrupt #{id} an echo of nothing in flight");
                        report.corrupted += 1;
                        continue;
                    };
                    if n != size || !is_message(s.id, seq, echo) {
                        trace!(trace, "corrupt #{id} echo {seq} differs from what was sent");
                        report.corrupted += 1;
                    } else {
                        trace!(trace, "checked #{id} echo {seq} intact");
                        if window.holds(sent) {
                            report.record_echo(now.saturating_sub(sent), &mut counts);
                        }
                    }
                    if interval.is_none() && sending {
                        sender.queue(s, now, &mut report, &mut trace);
                    }
                }
                if got < metas.len() {
                    // Short of the slots: the socket is drained.
                    break;
                }
            }
            trace!(
                trace,
                "batch #{id} {batch} datagrams (recvmmsg until short)"
            );
        }
        // Replies leave after every socket is read: back to back, so the
        // server, woken by the first, finds the rest waiting rather than
        // being woken again for each (a wake-up costs the waker).
        for event in events.iter() {
            let s = &mut sockets[event.token().0];
            if !s.out.is_empty() {
                sender.flush(s, &mut report, &mut trace);
            }
        }
        echoes.fetch_add(report.received - shown, Ordering::Relaxed);
        shown = report.received;
    }
    counts.fold_into(&mut report);
    if report.lost > 0 {
        report.hint = Some(LOSS_HINT.into());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn in_flight_numbers_are_taken_once_in_any_order_and_expire_from_the_oldest() {
        let mut f = InFlight::default();
        for seq in 0..4 {
            f.push(seq, 10 * seq);
        }
        assert_eq!(f.take(2), Some(20));
        assert_eq!(f.take(2), None, "taken once");
        assert_eq!(f.take(9), None, "never sent");
        assert_eq!((f.count, f.span()), (3, 4));
        assert_eq!(f.take(0), Some(0));
        assert_eq!((f.first, f.span()), (1, 3), "the answered front is dropped");
        // 1 (sent at 10) is overdue at cutoff 25; 2 is answered; 3 is not.
        assert_eq!(f.expire(25), 1);
        assert_eq!((f.first, f.count, f.span()), (3, 1, 1));
        assert_eq!(f.take(1), None, "expired");
        assert_eq!(f.take(3), Some(30));
        assert_eq!((f.count, f.span()), (0, 0));
        f.push(7, 70);
        assert_eq!((f.first, f.take(7)), (7, Some(70)));
    }
}
