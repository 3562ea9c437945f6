//! One generator thread: its connections on one mio `Poll`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{first_due, message, send_interval, LoadConfig, Report, Window, MAX_IN_FLIGHT};

/// How long after the window echoes still in flight are waited for.
const DRAIN: Duration = Duration::from_secs(2);

struct Conn {
    id: u32,
    stream: TcpStream,
    /// Bytes to send; `out[..written]` went out already.
    out: Vec<u8>,
    written: usize,
    next_send: u64,
    next_recv: u64,
    /// When each message in flight was sent (open loop: was due).
    sent_at: VecDeque<Instant>,
    /// Echoed bytes not yet checked.
    input: Vec<u8>,
    /// The next message due (open loop).
    due: Instant,
    alive: bool,
}

pub(super) fn run(
    addrs: &[SocketAddr],
    config: LoadConfig,
    ids: &[u32],
    echoes: &AtomicU64,
) -> io::Result<Report> {
    let mut poll = Poll::new()?;
    let mut report = Report::empty(&config)?;
    let size = config.size.max(16);
    let start = Instant::now();
    // Open loop: each connection sends every `interval`, staggered.
    let interval = send_interval(&config);
    let mut conns = Vec::with_capacity(ids.len());
    for (k, &id) in ids.iter().enumerate() {
        let stream = match std::net::TcpStream::connect(addrs) {
            Ok(stream) => stream,
            Err(_) => {
                report.conn_errors += 1;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry().register(
            &mut stream,
            Token(k),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn {
            id,
            stream,
            out: Vec::new(),
            written: 0,
            next_send: 0,
            next_recv: 0,
            sent_at: VecDeque::new(),
            input: Vec::new(),
            due: first_due(start, interval, k, ids.len()),
            alive: true,
        });
    }
    let window = Window::after_warmup(start, &config);
    if interval.is_none() {
        for conn in &mut conns {
            for _ in 0..config.depth.max(1) {
                conn.queue(size, start, &window, &mut report);
            }
            conn.flush(&mut report);
        }
    }
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        let sending = now < window.until;
        let in_flight: usize = conns
            .iter()
            .filter(|c| c.alive)
            .map(|c| c.sent_at.len())
            .sum();
        if !sending && (in_flight == 0 || now >= window.until + DRAIN) {
            break;
        }
        if let (Some(interval), true) = (interval, sending) {
            for conn in conns.iter_mut().filter(|c| c.alive) {
                while conn.due <= now {
                    let due = conn.due;
                    conn.due += interval;
                    if conn.sent_at.len() >= MAX_IN_FLIGHT {
                        report.lost += 1;
                        continue;
                    }
                    conn.queue(size, due, &window, &mut report);
                }
                conn.flush(&mut report);
            }
        }
        let next_due = interval
            .filter(|_| sending)
            .and_then(|_| conns.iter().filter(|c| c.alive).map(|c| c.due).min());
        let wake = next_due.unwrap_or(now + Duration::from_millis(50));
        let timeout = wake.saturating_duration_since(now);
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if !conn.alive {
                continue;
            }
            if event.is_writable() {
                conn.flush(&mut report);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let closed_loop = interval.is_none();
                conn.receive((size, closed_loop), &window, &mut report, echoes);
            }
        }
    }
    for conn in &conns {
        report.lost += conn.sent_at.len() as u64;
    }
    report.elapsed = config.duration;
    Ok(report)
}

impl Conn {
    /// Queues the next message, as sent (or due) at `at`.
    fn queue(&mut self, size: usize, at: Instant, window: &Window, report: &mut Report) {
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        message(self.id, self.next_send, size, &mut self.out);
        self.next_send += 1;
        self.sent_at.push_back(at);
        report.sent += u64::from(window.holds(at));
    }

    fn flush(&mut self, report: &mut Report) {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(report),
            }
        }
    }

    fn fail(&mut self, report: &mut Report) {
        if self.alive {
            self.alive = false;
            report.conn_errors += 1;
            report.lost += self.sent_at.len() as u64;
            self.sent_at.clear();
        }
    }

    /// Reads echoes, checks each whole message, and (closed loop) sends
    /// the next one for each.
    fn receive(
        &mut self,
        (size, closed_loop): (usize, bool),
        window: &Window,
        report: &mut Report,
        echoes: &AtomicU64,
    ) {
        let mut chunk = [0; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return self.fail(report),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(report),
            }
        }
        let now = Instant::now();
        let mut expected = Vec::with_capacity(size);
        let whole = self.input.len() / size;
        for k in 0..whole {
            let Some(sent) = self.sent_at.pop_front() else {
                // An echo of nothing sent: the stream is not ours any more.
                report.corrupted += 1;
                return self.fail(report);
            };
            expected.clear();
            message(self.id, self.next_recv, size, &mut expected);
            if self.input[k * size..(k + 1) * size] != expected[..] {
                report.corrupted += 1;
                // Out of step: nothing after this can be trusted.
                return self.fail(report);
            }
            self.next_recv += 1;
            if window.holds(sent) {
                report.record_echo(now.saturating_duration_since(sent), echoes);
            }
            if closed_loop && now < window.until {
                self.queue(size, now, window, report);
            }
        }
        self.input.drain(..whole * size);
        self.flush(report);
    }
}
