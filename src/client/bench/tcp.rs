//! TCP load: [`TcpLoad`], one generator thread's connections on one mio
//! `Poll`, driven a step at a time; [`run`] is the blocking run of
//! `run_tcp` built on it (warm-up, measured window, drain).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::net::sys;
use crate::TraceLines;

use super::{
    first_due, is_message, message, send_interval, Clock, Ends, LoadConfig, Report, RttCounts,
    Window, MAX_IN_FLIGHT,
};

/// How long after the window echoes still in flight are waited for, in
/// nanoseconds.
const DRAIN: u64 = 2_000_000_000;

/// The longest wait of one step in the blocking run.
const STEP: Duration = Duration::from_millis(50);

/// What a connection keeps of a refusing server's words.
const REFUSAL_KEPT: usize = 4096;

/// One blocking run: `ids`' connections stepped through the warm-up and
/// the window, then drained; echoes counted in the window are added to
/// `echoes` as they come (for the progress line).
pub(super) fn run(
    addrs: &[SocketAddr],
    config: LoadConfig,
    ids: &[u32],
    echoes: &AtomicU64,
) -> io::Result<Report> {
    let mut load = TcpLoad::new(addrs, &config, ids)?;
    let until = load.settings.window.until;
    let mut shown = 0;
    loop {
        // The clock as the last step read it: no read of its own.
        let now = load.now;
        if now >= until && (load.in_flight() == 0 || now >= until + DRAIN) {
            break;
        }
        load.step(STEP)?;
        let received = load.report().received;
        echoes.fetch_add(received - shown, Ordering::Relaxed);
        shown = received;
    }
    Ok(load.finish())
}

/// A TCP echo load on one mio `Poll`, driven a step at a time: the
/// connections `ids` (each id goes into its messages), closed loop
/// (`config.depth` messages in flight on each) or open loop
/// (`config.rate` over `config.conns` connections in all, this load's
/// share of them at the same rate each). Every echoed byte is checked.
///
/// The window it measures starts `config.warmup` after [`TcpLoad::new`]
/// began and lasts `config.duration` ([`TcpLoad::window`]); only messages
/// sent (open loop: due) in it are counted in its [`Report`]. It sends
/// nothing after the window, so stepping on drains what is in flight.
/// `config.threads` and `config.progress` are for [`run_tcp`]
/// (super::run_tcp), which runs one of these on each thread.
///
/// ```
/// use std::time::{Duration, Instant};
/// use sockloop::client::bench::{LoadConfig, TcpLoad};
/// use sockloop::{services::Echo, Server};
///
/// let server = Server::builder().tcp("127.0.0.1:0".parse().unwrap(), || Echo).build()?;
/// let addr = server.tcp_addrs()[0];
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
///
/// let config = LoadConfig {
///     conns: 4,
///     duration: Duration::from_millis(200),
///     warmup: Duration::from_millis(50),
///     ..LoadConfig::default()
/// };
/// let mut load = TcpLoad::new(&[addr], &config, &[0, 1, 2, 3])?;
/// let window = load.window();
/// while Instant::now() < window.end {
///     load.step(Duration::from_millis(50))?;
/// }
/// assert!(load.completed() > 0);
/// let report = load.finish(); // what is still in flight counts lost
/// assert_eq!(report.corrupted + report.conn_errors, 0, "{}", report.text());
///
/// handle.stop();
/// running.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TcpLoad {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    report: Report,
    /// Round trips not yet in `report`'s histogram.
    counts: RttCounts,
    settings: Settings,
    clock: Clock,
    /// When the last poll returned, on `clock`: the time of every echo
    /// found and message sent in the events it returned.
    now: u64,
    /// Intact echoes, at any time.
    completed: u64,
    /// `bench tcp --trace`: connects, reads, writes, checks, timeouts.
    trace: TraceLines,
}

/// What every connection's sending and checking follows.
struct Settings {
    size: usize,
    /// Open loop: how often each connection sends, in nanoseconds
    /// (`None`: closed loop).
    interval: Option<u64>,
    window: Window,
    /// Record each measured echo's round trip in the report.
    latency: bool,
}

struct Conn {
    id: u32,
    /// `stream`'s descriptor, kept beside it (mio's accessor is a call).
    fd: RawFd,
    /// Owns `fd`: closed when the load is dropped.
    _stream: TcpStream,
    /// Bytes to send; `out[..written]` went out already.
    out: Vec<u8>,
    written: usize,
    next_send: u64,
    next_recv: u64,
    /// When each message in flight was sent (open loop: was due), on the
    /// load's clock.
    sent_at: VecDeque<u64>,
    /// Echoed bytes, `input[..got]` not yet checked. In the closed loop it
    /// holds more than can be in flight, so a read that comes up short of
    /// filling it has drained the socket: no read is spent on `WouldBlock`.
    input: Vec<u8>,
    got: usize,
    /// The next message due (open loop), on the load's clock.
    due: u64,
    alive: bool,
    /// A line came instead of the first echo, with this many messages in
    /// flight: the server's refusal if it closes the connection, a
    /// corrupted echo if it is still open at the end.
    unexpected: Option<u64>,
}

impl TcpLoad {
    /// Opens a connection for each of `ids` (TCP_NODELAY; each tries every
    /// address of `addrs` in turn) and, in the closed loop, sends the first
    /// `config.depth` messages on each. A connection that cannot be opened
    /// is counted in the report's `conn_errors`. `config.trace` traces the
    /// load's loop (lines starting `bench tcp`).
    pub fn new(addrs: &[SocketAddr], config: &LoadConfig, ids: &[u32]) -> io::Result<TcpLoad> {
        let mut trace = TraceLines::new("bench tcp", config.trace);
        let poll = Poll::new()?;
        let mut report = Report::empty(config)?;
        let size = config.size.max(16);
        let clock = Clock {
            start: Instant::now(),
        };
        // Open loop: each connection sends every `interval`, staggered.
        let interval = send_interval(config);
        let mut conns = Vec::with_capacity(ids.len());
        for (k, &id) in ids.iter().enumerate() {
            let stream = match std::net::TcpStream::connect(addrs) {
                Ok(stream) => stream,
                Err(e) => {
                    trace!(trace, "connect #{id} failed: {e} (connect)");
                    report.conn_errors += 1;
                    continue;
                }
            };
            trace!(trace, "connect #{id} {} (connect)", Ends(&stream));
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream);
            poll.registry().register(
                &mut stream,
                Token(conns.len()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                id,
                fd: stream.as_raw_fd(),
                _stream: stream,
                out: Vec::with_capacity(config.depth.max(1) * size),
                written: 0,
                next_send: 0,
                next_recv: 0,
                sent_at: VecDeque::new(),
                input: vec![0; (config.depth.max(1) + 1) * size],
                got: 0,
                due: first_due(interval, k, ids.len()),
                alive: true,
                unexpected: None,
            });
        }
        let settings = Settings {
            size,
            interval,
            window: Window::after_warmup(config),
            latency: true,
        };
        if interval.is_none() {
            for conn in &mut conns {
                for _ in 0..config.depth.max(1) {
                    conn.queue(&settings, 0, &mut report);
                }
                conn.flush(&mut report, &mut trace);
            }
        }
        Ok(TcpLoad {
            poll,
            events: Events::with_capacity(1024),
            conns,
            report,
            counts: RttCounts::new(),
            settings,
            clock,
            now: clock.now(),
            completed: 0,
            trace,
        })
    }

    /// Whether to record each measured echo's round trip (the report's
    /// `rtt_us` and `samples`; on by default). Off, only the counts are
    /// kept: for a caller that measures throughput alone.
    pub fn record_latency(&mut self, on: bool) {
        self.settings.latency = on;
    }

    /// The measured window: from `config.warmup` after [`TcpLoad::new`]
    /// began, `config.duration` long.
    pub fn window(&self) -> Range<Instant> {
        let window = &self.settings.window;
        self.clock.instant(window.from)..self.clock.instant(window.until)
    }

    /// Sends what is due (open loop), waits for events at most `timeout`
    /// (less when a message falls due sooner) and handles them: checks the
    /// echoes and, in the closed loop, sends a message for each until the
    /// window ends. Failures are counted in the report, not returned; an
    /// error is the poll's own.
    ///
    /// The clock is read once after the poll returns, and that time stands
    /// for every echo and send in the events it returned, as a server
    /// takes one time per loop turn (the README's "Load testing" says by
    /// how much this may move a round trip).
    pub fn step(&mut self, timeout: Duration) -> io::Result<()> {
        let mut timeout = timeout;
        let open_loop = self.settings.interval.map(|i| (i, self.clock.now()));
        if let Some((interval, now)) =
            open_loop.filter(|&(_, now)| now < self.settings.window.until)
        {
            for conn in self
                .conns
                .iter_mut()
                .filter(|c| c.alive && c.unexpected.is_none())
            {
                while conn.due <= now {
                    let due = conn.due;
                    conn.due += interval;
                    if conn.sent_at.len() >= MAX_IN_FLIGHT {
                        self.report.lost += 1;
                        continue;
                    }
                    conn.queue(&self.settings, due, &mut self.report);
                }
                conn.flush(&mut self.report, &mut self.trace);
            }
            if let Some(next) = self.conns.iter().filter(|c| c.alive).map(|c| c.due).min() {
                timeout = timeout.min(Duration::from_nanos(next.saturating_sub(now)));
            }
        }
        let polled = self.poll.poll(&mut self.events, Some(timeout));
        self.now = self.clock.now();
        match polled {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        let now = self.now;
        // Replies leave after every event is read: back to back, so the
        // server, woken by the first, finds the rest waiting rather than
        // being woken again for each (a wake-up costs the waker).
        for event in self.events.iter() {
            let conn = &mut self.conns[event.token().0];
            if !conn.alive {
                continue;
            }
            let closing = event.is_read_closed() || event.is_error();
            if event.is_readable() || closing {
                let (settings, report) = (&self.settings, &mut self.report);
                let counts = &mut self.counts;
                self.completed +=
                    conn.receive(now, closing, settings, report, counts, &mut self.trace);
            }
        }
        // (A write left over from a full socket buffer goes too: the
        // event that says there is room again is among these.)
        for event in self.events.iter() {
            let conn = &mut self.conns[event.token().0];
            if conn.alive && conn.written < conn.out.len() {
                conn.flush(&mut self.report, &mut self.trace);
            }
        }
        Ok(())
    }

    /// Intact echoes so far, warm-up and drain included.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Messages sent and not echoed yet, on connections still open.
    pub fn in_flight(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.alive)
            .map(|c| c.sent_at.len())
            .sum()
    }

    /// The counts so far: the window's echoes, and every failure (a
    /// corrupted echo, a connection closed, reset or not opened) as it was
    /// found. Messages in flight are not counted lost, and round trips are
    /// not in `rtt_us`, until [`TcpLoad::finish`].
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The report, with every message still in flight counted lost (and a
    /// connection that got a line instead of its first echo and stayed
    /// open, corrupted); closes the connections.
    pub fn finish(mut self) -> Report {
        let report = &mut self.report;
        self.counts.fold_into(report);
        for conn in &mut self.conns {
            if let (Some(in_flight), true) = (conn.unexpected, conn.alive) {
                report.corrupted += 1;
                report.lost += in_flight;
                conn.alive = false;
                report.conn_errors += 1;
            }
            let in_flight = conn.sent_at.len();
            if in_flight > 0 {
                let id = conn.id;
                trace!(
                    self.trace,
                    "timeout #{id} {in_flight} echoes still in flight, lost"
                );
            }
            report.lost += in_flight as u64;
        }
        self.report
    }
}

impl Conn {
    /// Queues the next message, as sent (or due) at `at`. (In line: the
    /// call cost about 18 instructions an echo, of some 270.)
    #[inline(always)]
    fn queue(&mut self, settings: &Settings, at: u64, report: &mut Report) {
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        message(self.id, self.next_send, settings.size, &mut self.out);
        self.next_send += 1;
        self.sent_at.push_back(at);
        report.sent += u64::from(settings.window.holds(at));
    }

    fn flush(&mut self, report: &mut Report, trace: &mut TraceLines) {
        let id = self.id;
        while self.written < self.out.len() {
            match sys::send(self.fd, &self.out[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    trace!(trace, "write #{id} {n}B (sendto)");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = self.out.len() - self.written;
                    trace!(trace, "write #{id} would block, {left}B left (sendto)");
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    trace!(trace, "write #{id} failed: {e} (sendto)");
                    return self.fail(report);
                }
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
        if report.refusal.is_none() && self.got > 0 {
            report.refusal = Some(refusal_line(&self.input[..self.got]));
        }
    }

    /// Reads echoes, checks each whole message, and (closed loop, in the
    /// window) queues the next one for each, all as at `now`; returns the
    /// intact echoes. The caller flushes.
    /// Reads stop at one that comes up short of the buffer (the socket is
    /// drained: epoll(7)), unless the peer is `closing`, when they go on to
    /// the end of the stream.
    fn receive(
        &mut self,
        now: u64,
        closing: bool,
        settings: &Settings,
        report: &mut Report,
        counts: &mut RttCounts,
        trace: &mut TraceLines,
    ) -> u64 {
        let id = self.id;
        loop {
            if self.got == self.input.len() {
                let len = self.input.len() * 2;
                self.input.resize(len, 0);
            }
            let room = self.input.len() - self.got;
            match sys::recv(self.fd, &mut self.input[self.got..]) {
                Ok(0) => {
                    trace!(trace, "read #{id} eof (recvfrom)");
                    self.closed_by_server(false, report);
                    return 0;
                }
                Ok(n) => {
                    trace!(trace, "read #{id} {n}B (recvfrom)");
                    self.got += n;
                    if self.unexpected.is_some() {
                        // Only the close is awaited now; the first line is kept.
                        self.got = self.got.min(REFUSAL_KEPT);
                    }
                    if n < room && !closing {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    trace!(trace, "read #{id} reset (recvfrom)");
                    self.closed_by_server(true, report);
                    return 0;
                }
                Err(e) => {
                    trace!(trace, "read #{id} failed: {e} (recvfrom)");
                    self.fail(report);
                    return 0;
                }
            }
        }
        if self.unexpected.is_some() {
            return 0;
        }
        let size = settings.size;
        let whole = self.got / size;
        for k in 0..whole {
            let Some(sent) = self.sent_at.pop_front() else {
                // An echo of nothing sent: the stream is not ours any more.
                trace!(trace, "corrupt #{id} an echo of nothing sent");
                report.corrupted += 1;
                self.fail(report);
                return k as u64;
            };
            let echo = &self.input[k * size..(k + 1) * size];
            if !is_message(self.id, self.next_recv, echo) {
                if self.next_recv == 0 && self.input[..self.got].contains(&b'\n') {
                    // A line instead of the first echo: a refusal if the
                    // server now closes, a wrong reply if it does not.
                    self.unexpected = Some(self.sent_at.len() as u64 + 1);
                    self.sent_at.clear();
                    trace!(trace, "unexpected #{id} a line instead of the first echo");
                    return 0;
                }
                let seq = self.next_recv;
                trace!(trace, "corrupt #{id} echo {seq} differs from what was sent");
                report.corrupted += 1;
                // Out of step: nothing after this can be trusted.
                self.fail(report);
                return k as u64;
            }
            self.next_recv += 1;
            if settings.window.holds(sent) {
                match settings.latency {
                    true => report.record_echo(now.saturating_sub(sent), counts),
                    false => report.received += 1,
                }
            }
            if settings.interval.is_none() && now < settings.window.until {
                self.queue(settings, now, report);
            }
        }
        if whole > 0 {
            let in_flight = self.sent_at.len();
            trace!(
                trace,
                "checked #{id} {whole} echoes intact, {in_flight} in flight"
            );
        }
        self.input.copy_within(whole * size..self.got, 0);
        self.got -= whole * size;
        whole as u64
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
