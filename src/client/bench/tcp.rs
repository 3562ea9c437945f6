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
    /// A line came instead of the first echo, with this many messages in
    /// flight: the server's refusal if it closes the connection, a
    /// corrupted echo if it is still open at the end.
    unexpected: Option<u64>,
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
            unexpected: None,
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
            for conn in conns
                .iter_mut()
                .filter(|c| c.alive && c.unexpected.is_none())
            {
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
    for conn in &mut conns {
        if let (Some(in_flight), true) = (conn.unexpected, conn.alive) {
            report.corrupted += 1;
            report.lost += in_flight;
            conn.alive = false;
            report.conn_errors += 1;
        }
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

    /// The server closed or reset the connection (`reset`). Before any
    /// echo that is the server turning it away, with whatever it said
    /// kept as the refusal; after, a reset is counted apart and a close
    /// is a plain failure.
    fn closed_by_server(&mut self, reset: bool, report: &mut Report) {
        if !self.alive {
            return;
        }
        if self.next_recv > 0 {
            self.fail(report);
            if reset {
                // Counted apart from the other failures.
                report.conn_errors -= 1;
                report.resets += 1;
            }
            return;
        }
        self.alive = false;
        self.sent_at.clear(); // never taken, so not lost
        report.closed_at_once += 1;
        if report.refusal.is_none() && !self.input.is_empty() {
            report.refusal = Some(refusal_line(&self.input));
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
                Ok(0) => return self.closed_by_server(false, report),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return self.closed_by_server(true, report)
                }
                Err(_) => return self.fail(report),
            }
        }
        if self.unexpected.is_some() {
            // Only the close is awaited now; the first line is kept.
            self.input.truncate(4096);
            return;
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
                if self.next_recv == 0 && self.input.contains(&b'\n') {
                    // A line instead of the first echo: a refusal if the
                    // server now closes, a wrong reply if it does not.
                    self.unexpected = Some(self.sent_at.len() as u64 + 1);
                    self.sent_at.clear();
                    return;
                }
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

/// The first line of what a refusing server sent, escaped, at most
/// `REFUSAL_MAX` bytes of it.
fn refusal_line(input: &[u8]) -> String {
    const REFUSAL_MAX: usize = 200;
    let line = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut out = String::new();
    for &byte in &line[..line.len().min(REFUSAL_MAX)] {
        // Printable ASCII as it is (a JSON refusal stays readable), the
        // rest escaped so no server can drive the terminal.
        match byte {
            b' '..=b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::refusal_line;

    #[test]
    fn a_refusal_is_its_first_line_escaped() {
        let json = b"{\"error\":\"the server is full\"}\r\nmore";
        assert_eq!(refusal_line(json), r#"{"error":"the server is full"}"#);
        assert_eq!(refusal_line(b"\x1b[2Jno\xff"), r"\x1b[2Jno\xff");
        assert_eq!(refusal_line(&[b'a'; 300]).len(), 200);
    }
}
