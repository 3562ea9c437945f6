//! The shard's sense of time: two timer wheels, the turn's `now`, and each
//! connection's deadlines.
//!
//! A connection keeps the instants its deadlines count from (last I/O,
//! start of the unfinished frame, start of the write stall) and has at most
//! one timer in the deadline wheel, for the earliest of them. Activity only
//! moves those instants; the wheel is touched when a deadline moves
//! *earlier* than the armed timer. A timer that fires early for a deadline that has
//! since moved is re-armed then (lazy re-arm), so a byte received costs a
//! store, not a wheel operation.

use std::time::{Duration, Instant, SystemTime};

use mio::Token;

use super::limits::ConnLimits;
use super::trace::Tracer;
use crate::service::CloseReason;
use crate::timer::{TimerHandle, Wheel};

/// What a timer in the shard's wheel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerTarget {
    /// A connection's earliest deadline.
    Deadline(Token),
    /// A timer a service armed for a connection.
    ConnService { conn: Token, key: u64 },
    /// A timer a TCP service armed for itself, not for a connection.
    TcpService { service: usize, key: u64 },
    /// A timer a UDP service armed.
    UdpService { socket: usize, key: u64 },
    /// The end of an accept pause on a listener.
    ResumeAccept(usize),
    /// The end of the shutdown drain.
    Drain,
}

/// A connection's deadline timer as its wheel holds it: the connection's
/// token in two halves (8 bytes, 4-aligned; a `Token` would pad the entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnTimer([u32; 2]);

impl ConnTimer {
    fn of(token: Token) -> ConnTimer {
        let bits = token.0 as u64;
        ConnTimer([bits as u32, (bits >> 32) as u32])
    }

    fn token(self) -> Token {
        let [low, high] = self.0;
        Token((u64::from(high) << 32 | u64::from(low)) as usize)
    }
}

/// The wheels and the current loop turn's time. Connections' deadlines
/// have a wheel apart from everything else (services' timers, accept
/// pauses, the drain), as every open connection pays for its entry: 32
/// bytes holding a [`ConnTimer`] rather than 48 holding a [`TimerTarget`].
pub(crate) struct Timers {
    /// Every timer but the connections' deadlines.
    pub(crate) wheel: Wheel<TimerTarget>,
    /// One timer per connection at most, for its earliest deadline.
    deadlines: Wheel<ConnTimer>,
    /// Reused by `expire`, so firing deadlines does not allocate.
    fired_deadlines: Vec<(TimerHandle, ConnTimer)>,
    origin: Instant,
    /// The wall clock at `origin`: wall time is derived from the monotonic
    /// clock, so a turn costs no second clock read.
    wall_origin: SystemTime,
    now: Instant,
    /// The wheel's resolution.
    tick: Duration,
    /// `now` in milliseconds since `origin`, wrapping every ~49 days;
    /// deadlines are differences, which wrapping arithmetic keeps right.
    now_ms: u32,
    /// No timer is due before this (a lower bound on the wheel's earliest
    /// deadline; `None`: the wheel is empty). A turn before it skips the
    /// wheel entirely; arming lowers it, cancelling leaves it.
    next_check: Option<Instant>,
}

impl Timers {
    pub(crate) fn new(now: Instant, tick: Duration) -> Timers {
        Timers {
            wheel: Wheel::new(now, tick),
            deadlines: Wheel::new(now, tick),
            fired_deadlines: Vec::new(),
            origin: now,
            wall_origin: SystemTime::now(),
            now,
            tick,
            now_ms: 0,
            next_check: None,
        }
    }

    /// How long the loop may sleep: until the earliest timer (or a lower
    /// bound on it), `None` with no timer armed.
    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        self.next_check
            .map(|at| at.saturating_duration_since(self.now))
    }

    /// Moves the timers due at this turn's `now` into `fired`, the
    /// connections' deadlines first (as [`TimerTarget::Deadline`], whose
    /// handle is the deadline wheel's); costs a comparison when none can be
    /// due.
    pub(crate) fn expire(&mut self, fired: &mut Vec<(TimerHandle, TimerTarget)>) {
        if self.next_check.is_none_or(|at| at > self.now) {
            return;
        }
        self.deadlines.expire(self.now, &mut self.fired_deadlines);
        let deadlines = self.fired_deadlines.drain(..);
        fired.extend(deadlines.map(|(handle, conn)| (handle, TimerTarget::Deadline(conn.token()))));
        self.wheel.expire(self.now, fired);
        self.next_check = match (self.wheel.next_deadline(), self.deadlines.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Sets the time for this loop turn: the one clock read per turn.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.origin).as_millis() as u32;
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    pub(crate) fn now_ms(&self) -> u32 {
        self.now_ms
    }

    /// Wall-clock time of this turn (for timestamps people read; it
    /// follows the monotonic clock, so it ignores clock steps after start).
    pub(crate) fn wall_clock(&self) -> SystemTime {
        self.wall_origin + self.now.saturating_duration_since(self.origin)
    }

    pub(crate) fn arm_after(&mut self, after: Duration, target: TimerTarget) -> TimerHandle {
        let at = self.due_after(after);
        self.wheel.arm(at, target)
    }

    /// The instant `after` from now, with `next_check` lowered to it.
    fn due_after(&mut self, after: Duration) -> Instant {
        let at = self
            .now
            .checked_add(after)
            .unwrap_or(self.now + Duration::from_secs(1 << 32));
        self.next_check = Some(self.next_check.map_or(at, |next| next.min(at)));
        at
    }

    /// Cancels a connection's deadline timer (it is closing).
    pub(crate) fn cancel_deadline(&mut self, timer: TimerHandle) {
        self.deadlines.cancel(timer);
    }

    /// Makes sure connection `conn`'s timer is armed no later than its
    /// earliest deadline (and at most a tick before it, so small moves
    /// cost no wheel operation).
    #[inline]
    pub(crate) fn arm_deadline(
        &mut self,
        d: &mut Deadlines,
        limits: &ConnLimits,
        conn: Token,
        trace: &Tracer,
    ) {
        // Activity only moves deadlines later, and a timer that fires early
        // re-arms itself; only a deadline that appeared needs a look now.
        if !d.take_moved_earlier() && d.timer.is_some() {
            return;
        }
        let left = match d.due(self.now_ms, limits) {
            None => return,
            Some(Due::In(left)) => left,
            Some(Due::Expired(_)) if d.timer.is_some() => return, // its timer is due
            Some(Due::Expired(_)) => Duration::ZERO,              // born expired (a zero linger)
        };
        let armed = d.timer.and_then(|timer| self.deadlines.deadline(timer));
        let wanted = self.now + left;
        // Re-arm only when the armed timer would be late by more than a
        // tick; one that is early re-arms itself when it fires.
        if armed.is_none_or(|at| at >= wanted + self.tick) {
            if let Some(old) = d.timer.take() {
                trace.timer_cancelled(conn);
                self.deadlines.cancel(old);
            }
            trace.timer_armed(conn, left);
            let at = self.due_after(left);
            d.timer = Some(self.deadlines.arm(at, ConnTimer::of(conn)));
        }
    }
}

/// Where a connection's deadlines stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The earliest deadline is this far away.
    In(Duration),
    /// A deadline has passed: close for this reason.
    Expired(CloseReason),
}

/// The instants a connection's deadlines count from, in wrapping
/// milliseconds since the shard's origin (4 bytes each: paid by every
/// connection, idle or not).
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    last_io: u32,
    frame_since: u32,
    write_since: u32,
    /// Since output went over the soft limit, or, once lingering, since
    /// our FIN went out: a lingering connection has sent its last byte, so
    /// the two clocks never run at once and share the field.
    over_soft_or_linger_since: u32,
    /// Which clocks run, whether an outbound connect is in progress (since
    /// `frame_since`: no frame is open before the connection is, so the
    /// two share the field), and whether a deadline appeared since the
    /// shard last looked (possibly earlier than the armed timer): the flag
    /// bits below, one byte rather than six bools.
    bits: u8,
    /// Its timer in the deadline wheel, for the earliest deadline, if armed.
    pub(crate) timer: Option<TimerHandle>,
}

const FRAME_OPEN: u8 = 1;
const WRITE_STALLED: u8 = 1 << 1;
const OVER_SOFT: u8 = 1 << 2;
/// Our FIN is sent after the service closed: waiting for the peer's.
const LINGERING: u8 = 1 << 3;
const MOVED_EARLIER: u8 = 1 << 4;
/// An outbound connect is in progress.
const CONNECTING: u8 = 1 << 5;

impl Deadlines {
    fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    fn put(&mut self, bit: u8, on: bool) {
        if on {
            self.bits |= bit;
        } else {
            self.bits &= !bit;
        }
    }

    pub(crate) fn new(now_ms: u32) -> Deadlines {
        Deadlines {
            last_io: now_ms,
            ..Deadlines::default()
        }
    }

    /// An outbound connect began: the connect timeout counts from now.
    pub(crate) fn connecting(&mut self, now_ms: u32) {
        self.bits |= CONNECTING | MOVED_EARLIER;
        self.frame_since = now_ms;
    }

    /// A connect is in progress.
    pub(crate) fn is_connecting(&self) -> bool {
        self.has(CONNECTING)
    }

    /// The connect completed: its clock stops, and the idle clock counts
    /// from now.
    pub(crate) fn connected(&mut self, now_ms: u32) {
        self.bits &= !CONNECTING;
        self.last_io = now_ms;
    }

    /// Bytes moved in either direction.
    pub(crate) fn io(&mut self, now_ms: u32) {
        self.last_io = now_ms;
    }

    /// After the service saw input: a frame is open while it leaves bytes
    /// unconsumed, and it counts from the read that began it. Consuming
    /// something completed a frame, so leftovers begin a new one now.
    pub(crate) fn frame(&mut self, now_ms: u32, consumed: bool, leftover: bool) {
        let open = self.has(FRAME_OPEN);
        if leftover && (consumed || !open) {
            self.frame_since = now_ms;
        }
        if leftover && !open {
            self.bits |= MOVED_EARLIER;
        }
        self.put(FRAME_OPEN, leftover);
    }

    /// After a write attempt: the stall clock starts when output first
    /// waits and restarts on every byte of progress.
    pub(crate) fn write(&mut self, now_ms: u32, progressed: bool, pending: bool) {
        let stalled = self.has(WRITE_STALLED);
        if pending && (progressed || !stalled) {
            self.write_since = now_ms;
        }
        if pending && !stalled {
            self.bits |= MOVED_EARLIER;
        }
        self.put(WRITE_STALLED, pending);
    }

    /// After output was queued or written: the soft-limit clock runs while
    /// pending output stays above the limit.
    pub(crate) fn output(&mut self, now_ms: u32, over_soft: bool) {
        if over_soft && !self.has(OVER_SOFT) {
            debug_assert!(!self.has(LINGERING), "output after our FIN");
            self.over_soft_or_linger_since = now_ms;
            self.bits |= MOVED_EARLIER;
        }
        self.put(OVER_SOFT, over_soft);
    }

    /// Our FIN went out after the service closed the connection: the
    /// linger clock starts, once; input that keeps coming does not reset it.
    pub(crate) fn linger(&mut self, now_ms: u32) {
        if !self.has(LINGERING) {
            // Nothing more is sent (a failed write may have left the
            // soft-limit clock running): the field is the linger clock's.
            self.bits = (self.bits | LINGERING) & !OVER_SOFT;
            self.over_soft_or_linger_since = now_ms;
            self.bits |= MOVED_EARLIER;
        }
    }

    /// The connection's timer fired: the reason to close now, or `None` if
    /// its deadlines moved later since it was armed (settling re-arms it).
    pub(crate) fn fired(&mut self, now_ms: u32, limits: &ConnLimits) -> Option<CloseReason> {
        self.timer = None;
        match self.due(now_ms, limits) {
            Some(Due::Expired(reason)) => Some(reason),
            _ => None,
        }
    }

    /// A timer is armed and no deadline appeared since the shard last
    /// looked: arming has nothing to do.
    #[inline]
    pub(crate) fn settled(&self) -> bool {
        self.timer.is_some() && !self.has(MOVED_EARLIER)
    }

    /// Whether a deadline appeared since the last call.
    pub(crate) fn take_moved_earlier(&mut self) -> bool {
        let moved = self.has(MOVED_EARLIER);
        self.bits &= !MOVED_EARLIER;
        moved
    }

    /// The earliest deadline, or `None` if none is enabled. A deadline is
    /// only judged passed a full millisecond after it, since the instants
    /// are truncated to milliseconds: never early, at most 1 ms late.
    pub(crate) fn due(&self, now_ms: u32, limits: &ConnLimits) -> Option<Due> {
        let clocks = [
            (Some(self.last_io), limits.idle_ms, CloseReason::IdleTimeout),
            (
                self.has(FRAME_OPEN).then_some(self.frame_since),
                limits.frame_ms,
                CloseReason::FrameTimeout,
            ),
            (
                self.has(WRITE_STALLED).then_some(self.write_since),
                limits.write_ms,
                CloseReason::WriteTimeout,
            ),
            (
                self.has(OVER_SOFT)
                    .then_some(self.over_soft_or_linger_since),
                limits.over_soft_ms,
                CloseReason::OutputSoftLimit,
            ),
            (
                self.has(CONNECTING).then_some(self.frame_since),
                limits.connect_ms,
                CloseReason::ConnectTimeout,
            ),
            (
                self.has(LINGERING)
                    .then_some(self.over_soft_or_linger_since),
                limits.linger_ms,
                CloseReason::Service,
            ),
        ];
        let mut earliest: Option<u32> = None;
        for (since, limit, reason) in clocks {
            let (Some(since), Some(limit)) = (since, limit) else {
                continue;
            };
            let elapsed = now_ms.wrapping_sub(since);
            if elapsed >= limit {
                return Some(Due::Expired(reason));
            }
            let left = limit - elapsed;
            earliest = Some(earliest.map_or(left, |e| e.min(left)));
        }
        earliest.map(|ms| Due::In(Duration::from_millis(ms.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits with these deadlines in milliseconds (0: disabled).
    fn limits(idle: u64, frame: u64, write: u64, over_soft: u64) -> ConnLimits {
        let ms = |n| (n > 0).then(|| Duration::from_millis(n));
        ConnLimits::of(&crate::ServerConfig {
            idle_timeout: ms(idle),
            frame_timeout: ms(frame),
            write_timeout: ms(write),
            output_soft_for: ms(over_soft),
            ..crate::ServerConfig::default()
        })
    }

    #[test]
    fn idle_counts_from_the_last_io_and_is_never_early() {
        let config = limits(100, 0, 0, 0);
        let mut d = Deadlines::new(1000);
        assert_eq!(
            d.due(1000, &config),
            Some(Due::In(Duration::from_millis(101)))
        );
        d.io(1050);
        assert_eq!(
            d.due(1150, &config),
            Some(Due::In(Duration::from_millis(1)))
        );
        assert_eq!(
            d.due(1151, &config),
            Some(Due::Expired(CloseReason::IdleTimeout))
        );
    }

    #[test]
    fn a_frame_counts_from_its_first_byte_however_much_trickles_in() {
        let config = limits(0, 50, 0, 0);
        let mut d = Deadlines::new(0);
        assert_eq!(d.due(0, &config), None);
        d.frame(10, false, true);
        d.io(30);
        d.frame(30, false, true); // more bytes of the same frame
        assert_eq!(d.due(60, &config), Some(Due::In(Duration::from_millis(1))));
        let expired = Some(Due::Expired(CloseReason::FrameTimeout));
        assert_eq!(d.due(61, &config), expired);
        d.frame(61, true, true); // completed; the leftovers start a new one
        assert_eq!(d.due(61, &config), Some(Due::In(Duration::from_millis(51))));
        d.frame(70, true, false);
        assert_eq!(d.due(1000, &config), None);
    }

    #[test]
    fn a_write_stall_counts_from_the_last_progress() {
        let config = limits(0, 0, 20, 0);
        let mut d = Deadlines::new(0);
        d.write(5, false, true);
        d.write(15, false, true); // no progress: the clock keeps running
        assert_eq!(
            d.due(26, &config),
            Some(Due::Expired(CloseReason::WriteTimeout))
        );
        d.write(26, true, true);
        assert_eq!(d.due(26, &config), Some(Due::In(Duration::from_millis(21))));
        d.write(30, true, false);
        assert_eq!(d.due(500, &config), None);
    }

    #[test]
    fn output_above_the_soft_limit_counts_from_when_it_went_above() {
        let config = limits(0, 0, 0, 100);
        let mut d = Deadlines::new(0);
        d.output(10, true);
        d.output(50, true); // still above: the clock keeps running
        assert_eq!(d.due(110, &config), Some(Due::In(Duration::from_millis(1))));
        assert_eq!(
            d.due(111, &config),
            Some(Due::Expired(CloseReason::OutputSoftLimit))
        );
        d.output(111, false);
        assert_eq!(d.due(5000, &config), None);
    }

    #[test]
    fn only_a_deadline_that_appears_asks_for_a_look() {
        let mut d = Deadlines::new(0);
        d.io(5);
        d.frame(5, true, false);
        d.write(5, true, false);
        d.output(5, false);
        assert!(
            !d.take_moved_earlier(),
            "activity only moves deadlines later"
        );
        d.frame(6, false, true);
        assert!(d.take_moved_earlier(), "a frame opened");
        d.frame(7, false, true);
        assert!(!d.take_moved_earlier(), "the same frame goes on");
        d.write(8, false, true);
        assert!(d.take_moved_earlier(), "output began to wait");
        d.output(9, true);
        assert!(d.take_moved_earlier(), "output went over the soft limit");
        assert!(!d.take_moved_earlier());
    }

    #[test]
    fn lingering_takes_the_soft_limit_clocks_field() {
        let mut config = limits(0, 0, 0, 100);
        config.linger_ms = Some(50);
        let mut d = Deadlines::new(0);
        d.output(10, true);
        d.output(20, false); // flushed below the limit: that clock stops
        d.linger(30);
        assert_eq!(d.due(79, &config), Some(Due::In(Duration::from_millis(1))));
        let expired = Some(Due::Expired(CloseReason::Service));
        assert_eq!(d.due(80, &config), expired);
        d.linger(70); // started once: more input does not reset it
        assert_eq!(d.due(80, &config), expired);

        // Over the soft limit when lingering began (its write failed):
        // the field is the linger clock's, the soft-limit clock stops.
        config.linger_ms = Some(200);
        let mut d = Deadlines::new(0);
        d.output(10, true);
        d.linger(100);
        let left = |ms| Some(Due::In(Duration::from_millis(ms)));
        assert_eq!(d.due(250, &config), left(50), "no OutputSoftLimit");
        assert_eq!(d.due(300, &config), expired);
    }

    #[test]
    fn a_conn_timer_gives_its_token_back() {
        for bits in [0, 1, u32::MAX as usize, 1 << 32, (7 << 32) | 5, usize::MAX] {
            assert_eq!(ConnTimer::of(Token(bits)).token(), Token(bits));
        }
        assert_eq!(std::mem::size_of::<ConnTimer>(), 8);
        assert_eq!(std::mem::align_of::<ConnTimer>(), 4);
    }

    #[test]
    fn the_earliest_of_several_wins_across_the_wrap() {
        let config = limits(1000, 100, 0, 0);
        let start = u32::MAX - 10;
        let mut d = Deadlines::new(start);
        d.frame(start, false, true);
        let later = start.wrapping_add(50);
        assert_eq!(
            d.due(later, &config),
            Some(Due::In(Duration::from_millis(51)))
        );
    }
}
