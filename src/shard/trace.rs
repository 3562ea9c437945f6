//! The loop you can watch: one line per event and per action of a shard's
//! loop turn (`serve --trace`, [`Builder::trace`](crate::server::Builder::trace)).
//!
//! Lines go to the `log` crate under the target `sockloop::trace` at info
//! level, so an embedder's logger decides where they land (stderr with
//! `env_logger`, a file, a test's capture) and may filter them out by
//! target; `serve --trace` turns that target on whatever `--log-level`
//! says. Each line starts `shard N`, so interleaved shards stay readable.
//!
//! Off (the default), every hook is one branch on a shard-local bool:
//! the methods are `#[inline(always)]` and test [`Tracer::enabled`] before calling
//! their `#[cold]` formatting half, so nothing is formatted, allocated or
//! locked. On, lines are rate-limited per shard ([`TraceLimit`]): at most
//! N a second, and when a window ends with lines held back, one line says
//! how many.

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::Token;

use super::deadline::TimerTarget;
use super::token::Slot;
use crate::net::peer_addr::PeerAddr;
use crate::service::CloseReason;

/// The `log` target trace lines are written under.
pub const TRACE_TARGET: &str = "sockloop::trace";

/// Lines per second per shard when no rate is given.
pub const DEFAULT_TRACE_RATE: u32 = 200;

/// How many lines may pass per one-second window, and how many were held
/// back in the current one. Pure: time is passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLimit {
    per_second: u32,
    /// When the current window began (`None` before the first line).
    window: Option<Instant>,
    shown: u32,
    held: u64,
}

impl TraceLimit {
    /// At most `per_second` lines a window (0 holds back every line).
    pub fn new(per_second: u32) -> Self {
        TraceLimit {
            per_second,
            window: None,
            shown: 0,
            held: 0,
        }
    }

    /// Ends the window if a second has passed since it began: returns the
    /// count of lines it held back, if any, for one line saying so (that
    /// line is not counted against the new window).
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        let start = *self.window.get_or_insert(now);
        if now.saturating_duration_since(start) < Duration::from_secs(1) {
            return None;
        }
        self.window = Some(now);
        self.shown = 0;
        Some(std::mem::take(&mut self.held)).filter(|&n| n > 0)
    }

    /// Whether one more line may pass in the current window; counts it as
    /// held back if not.
    pub fn admit(&mut self) -> bool {
        if self.shown < self.per_second {
            self.shown += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }
}

/// A shard's tracer: off, a bool and nothing else is looked at.
#[derive(Debug)]
pub(crate) struct Tracer {
    on: bool,
    shard: usize,
    limit: Cell<TraceLimit>,
    /// The turn's time, for the limiter (set by [`Tracer::turn`]).
    now: Cell<Option<Instant>>,
    turns: Cell<u64>,
}

impl Tracer {
    /// `rate`: `None` is off, otherwise the lines per second allowed.
    pub(crate) fn new(shard: usize, rate: Option<u32>) -> Self {
        Tracer {
            on: rate.is_some(),
            shard,
            limit: Cell::new(TraceLimit::new(rate.unwrap_or(0))),
            now: Cell::new(None),
            turns: Cell::new(0),
        }
    }

    /// The one test every hook makes.
    #[inline(always)]
    pub(crate) fn enabled(&self) -> bool {
        self.on
    }

    /// A loop turn begins: `events` came out of `poll`.
    #[inline(always)]
    pub(crate) fn turn(&self, now: Instant, events: &mio::Events) {
        if self.enabled() {
            self.turn_cold(now, events);
        }
    }

    /// Readiness reported for `token`.
    #[inline(always)]
    pub(crate) fn ready(&self, event: &Event) {
        if self.enabled() {
            self.line(format_args!(
                "ready {} {}",
                Named(event.token()),
                Readiness(event)
            ));
        }
    }

    /// A connection accepted (or connected, for outbound ones).
    #[inline(always)]
    pub(crate) fn accept(&self, token: Token, peer: &SocketAddr) {
        if self.enabled() {
            self.line(format_args!("accept {} from {peer}", Named(token)));
        }
    }

    /// One read syscall moved `n` bytes in (0: end of stream).
    #[inline(always)]
    pub(crate) fn read(&self, peer: &PeerAddr, n: usize) {
        if self.enabled() {
            self.read_cold(peer, n);
        }
    }

    /// One write syscall put `n` bytes on the wire; `buffered` are left
    /// waiting in the write buffer.
    #[inline(always)]
    pub(crate) fn write(&self, peer: &PeerAddr, n: usize, buffered: usize) {
        if self.enabled() {
            self.write_cold(peer, n, buffered);
        }
    }

    /// One splice moved `n` bytes from the socket into the shard's pipe
    /// (0: end of stream).
    #[inline(always)]
    pub(crate) fn splice_in(&self, peer: &PeerAddr, n: usize) {
        if self.enabled() {
            match n {
                0 => self.line(format_args!("read {peer} eof (splice)")),
                n => self.line(format_args!("read {peer} {n}B (splice into the pipe)")),
            }
        }
    }

    /// One splice sent `n` bytes from the shard's pipe; `buffered` are
    /// left in the write buffer (copied out of the pipe).
    #[inline(always)]
    pub(crate) fn splice_out(&self, peer: &PeerAddr, n: usize, buffered: usize) {
        if self.enabled() {
            self.line(format_args!(
                "write {peer} {n}B (splice from the pipe), {buffered}B buffered"
            ));
        }
    }

    /// A pooled buffer is about to be lent to a connection.
    #[inline(always)]
    pub(crate) fn lent(&self, peer: &PeerAddr, side: &'static str) {
        if self.enabled() {
            self.buffer_cold("lend", side, peer);
        }
    }

    /// A connection's buffer went back to the pool.
    #[inline(always)]
    pub(crate) fn returned(&self, peer: &PeerAddr, side: &'static str) {
        if self.enabled() {
            self.buffer_cold("return", side, peer);
        }
    }

    /// Reading a connection paused (backpressure on) or resumed (off).
    #[inline(always)]
    pub(crate) fn backpressure(&self, peer: &PeerAddr, on: bool, buffered: usize) {
        if self.enabled() {
            let what = if on { "pause" } else { "resume" };
            self.line(format_args!(
                "{what} {peer} backpressure {}, {buffered}B buffered",
                if on { "on" } else { "off" }
            ));
        }
    }

    /// A connection's deadline timer armed to fire after `after`.
    #[inline(always)]
    pub(crate) fn timer_armed(&self, token: Token, after: Duration) {
        if self.enabled() {
            self.line(format_args!(
                "timer armed {} in {}ms",
                Named(token),
                after.as_millis()
            ));
        }
    }

    /// A connection's deadline timer cancelled.
    #[inline(always)]
    pub(crate) fn timer_cancelled(&self, token: Token) {
        if self.enabled() {
            self.line(format_args!("timer cancelled {}", Named(token)));
        }
    }

    /// A timer came due.
    #[inline(always)]
    pub(crate) fn timer_fired(&self, target: &TimerTarget) {
        if self.enabled() {
            match target {
                TimerTarget::Deadline(token) => {
                    self.line(format_args!("timer fired {} deadline", Named(*token)))
                }
                other => self.line(format_args!("timer fired {other:?}")),
            }
        }
    }

    /// A connection closed, and why.
    #[inline(always)]
    pub(crate) fn close(&self, token: Token, peer: &PeerAddr, reason: CloseReason) {
        if self.enabled() {
            self.line(format_args!("close {} {peer} {reason:?}", Named(token)));
        }
    }

    /// `datagrams` moved by one batch syscall (`recvmmsg`, or the
    /// `sendmmsg` calls of one flush).
    #[inline(always)]
    pub(crate) fn udp_batch(&self, syscall: &'static str, datagrams: usize) {
        if self.enabled() {
            self.line(format_args!("udp {syscall} {datagrams} datagrams"));
        }
    }

    // The hot hooks' lines are formatted out of line, so that off, not
    // even their arguments are prepared.

    #[cold]
    #[inline(never)]
    fn read_cold(&self, peer: &PeerAddr, n: usize) {
        match n {
            0 => self.line(format_args!("read {peer} eof (recvfrom)")),
            n => self.line(format_args!("read {peer} {n}B (recvfrom)")),
        }
    }

    #[cold]
    #[inline(never)]
    fn write_cold(&self, peer: &PeerAddr, n: usize, buffered: usize) {
        self.line(format_args!(
            "write {peer} {n}B (sendto), {buffered}B buffered"
        ));
    }

    #[cold]
    #[inline(never)]
    fn buffer_cold(&self, verb: &'static str, side: &'static str, peer: &PeerAddr) {
        self.line(format_args!("{verb} {side} buffer {peer}"));
    }

    #[cold]
    #[inline(never)]
    fn turn_cold(&self, now: Instant, events: &mio::Events) {
        self.now.set(Some(now));
        let turn = self.turns.get() + 1;
        self.turns.set(turn);
        self.line(format_args!(
            "turn {turn}: {} events",
            events.iter().count()
        ));
    }

    #[cold]
    #[inline(never)]
    fn line(&self, what: fmt::Arguments<'_>) {
        let now = self.now.get().unwrap_or_else(Instant::now);
        let mut limit = self.limit.get();
        emit(&mut limit, now, format_args!("shard {}", self.shard), what);
        self.limit.set(limit);
    }
}

/// Writes one line if `limit` lets it through, after the count of lines
/// the last window held back; `who` starts each line.
fn emit(limit: &mut TraceLimit, now: Instant, who: fmt::Arguments<'_>, what: fmt::Arguments<'_>) {
    if let Some(held) = limit.roll(now) {
        log::info!(target: TRACE_TARGET, "{who} held back {held} lines");
    }
    if limit.admit() {
        log::info!(target: TRACE_TARGET, "{who} {what}");
    }
}

/// The same rate-limited lines for a loop that is not a shard's (the
/// clients' own loops: `sockloop rudp --trace`); off, one branch.
#[derive(Debug, Clone)]
pub struct TraceLines {
    /// Starts each line (`rudp client`).
    who: &'static str,
    limit: Option<TraceLimit>,
}

impl TraceLines {
    /// `rate`: `None` is off, otherwise the lines per second allowed.
    pub fn new(who: &'static str, rate: Option<u32>) -> Self {
        TraceLines {
            who,
            limit: rate.map(TraceLimit::new),
        }
    }

    /// No lines are written.
    pub fn off() -> Self {
        TraceLines::new("", None)
    }

    /// Whether lines are written at all.
    #[inline(always)]
    pub fn enabled(&self) -> bool {
        self.limit.is_some()
    }

    /// Writes `what` at `now` if on and within the rate.
    #[inline]
    pub fn line(&mut self, now: Instant, what: fmt::Arguments<'_>) {
        if self.enabled() {
            self.line_cold(now, what);
        }
    }

    #[cold]
    #[inline(never)]
    fn line_cold(&mut self, now: Instant, what: fmt::Arguments<'_>) {
        if let Some(limit) = self.limit.as_mut() {
            emit(limit, now, format_args!("{}", self.who), what);
        }
    }
}

/// A token as what it names: `#KEY.GEN` for a connection, `listener:I`,
/// `udp:I`, `waker`.
struct Named(Token);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Slot::of(self.0) {
            Slot::Conn { key, gen } => write!(f, "#{key}.{gen}"),
            Slot::TcpListener(i) => write!(f, "listener:{i}"),
            Slot::Udp(i) => write!(f, "udp:{i}"),
            Slot::Waker => f.write_str("waker"),
            Slot::Unknown => write!(f, "token:{}", self.0 .0),
        }
    }
}

/// An event's readiness as words.
struct Readiness<'a>(&'a Event);

impl fmt::Display for Readiness<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let words = [
            (e.is_readable(), "readable"),
            (e.is_writable(), "writable"),
            (e.is_read_closed(), "read-closed"),
            (e.is_write_closed(), "write-closed"),
            (e.is_error(), "error"),
        ];
        let mut first = true;
        for (_, word) in words.iter().filter(|(set, _)| *set) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(word)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn lets_the_rate_through_then_holds_back_and_counts() {
        let t0 = Instant::now();
        let mut limit = TraceLimit::new(3);
        let mut shown = 0;
        for i in 0..10 {
            assert_eq!(limit.roll(at(t0, i * 10)), None);
            shown += u32::from(limit.admit());
        }
        assert_eq!(shown, 3);
        // 999 ms after the window began: still the same window.
        assert_eq!(limit.roll(at(t0, 999)), None);
        assert!(!limit.admit());
        // At one second the window ends with 8 held back, then 3 pass again.
        assert_eq!(limit.roll(at(t0, 1000)), Some(8));
        assert!(limit.admit() && limit.admit() && limit.admit());
        assert!(!limit.admit());
        // The next window begins at 1000 ms, not at 2000 ms after t0.
        assert_eq!(limit.roll(at(t0, 1999)), None);
        assert_eq!(limit.roll(at(t0, 2000)), Some(1));
    }

    #[test]
    fn a_window_with_nothing_held_back_ends_silently() {
        let t0 = Instant::now();
        let mut limit = TraceLimit::new(5);
        assert_eq!(limit.roll(t0), None);
        assert!(limit.admit() && limit.admit());
        assert_eq!(limit.roll(at(t0, 5000)), None);
        // The long gap starts a fresh window at 5000 ms.
        for _ in 0..5 {
            assert!(limit.admit());
        }
        assert!(!limit.admit());
        assert_eq!(limit.roll(at(t0, 5999)), None);
        assert_eq!(limit.roll(at(t0, 6000)), Some(1));
    }

    #[test]
    fn a_zero_rate_holds_back_every_line() {
        let t0 = Instant::now();
        let mut limit = TraceLimit::new(0);
        assert_eq!(limit.roll(t0), None);
        for _ in 0..4 {
            assert!(!limit.admit());
        }
        assert_eq!(limit.roll(at(t0, 1000)), Some(4));
    }

    #[test]
    fn off_it_writes_nothing_and_keeps_no_time() {
        let tracer = Tracer::new(0, None);
        assert!(!tracer.enabled());
        tracer.read(
            &"127.0.0.1:1"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            5,
        );
        assert_eq!(tracer.limit.get(), TraceLimit::new(0));
        assert_eq!(tracer.now.get(), None);
    }
}
