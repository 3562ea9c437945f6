//! Hierarchical timing wheel (6 levels × 64 slots).
//!
//! Time is counted in ticks since `origin`. Level `l` slot `s` covers
//! `64^l` ticks; a timer lives at the level of the highest base-64 digit in
//! which its deadline differs from the wheel's current tick, so all timers
//! on level `l` lie in the wheel's current level-`l + 1` slot and everything
//! on a lower level is due before anything on a higher one. When the wheel
//! reaches a coarse slot it re-files (cascades) the slot's timers one or more
//! levels down; every timer is therefore always filed exactly where a fresh
//! `arm` would put it, which is what keeps equal deadlines in one list and so
//! in arm order.

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use slab::Slab;

use super::levels::{list_for, LEVELS, OVERDUE, SLOTS};
use super::lists::{Entry, List, ListId, EMPTY, NIL};
use super::ticks::NANOS_PER_SEC;

/// Identifies an armed timer in its [`Wheel`].
///
/// Carries a generation, so a handle whose timer has fired or been cancelled
/// stays harmless even after its storage slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    pub(super) key: u32,
    /// Never zero, so `Option<TimerHandle>` is 8 bytes, not 12.
    pub(super) gen: NonZeroU32,
}

/// A hierarchical timing wheel holding values of type `T`.
///
/// The wheel is pure: it never reads the clock. `origin` is time zero and
/// every instant is measured from it in ticks (`tick`, given to [`new`]);
/// instants before `origin` count as `origin`.
///
/// # Timing guarantees
///
/// * A deadline is rounded **up** to the next tick boundary
///   (`origin + k·tick`, unchanged if already on one); [`deadline`] reports
///   the rounded value.
/// * [`expire(now)`](Wheel::expire) fires exactly the timers whose rounded
///   deadline is `<= now`. So a timer never fires before its deadline, and
///   fires at the first `expire` whose `now` is at or past its rounded
///   deadline, which is less than one tick after the deadline itself.
/// * Timers are appended in rounded-deadline order; timers with the same
///   rounded deadline come out in the order they were armed.
/// * A deadline the wheel has already passed fires on the next `expire`
///   (unless that `now` is earlier than the deadline, i.e. time ran back).
/// * Deadlines more than `64^6` ticks ahead (≈ 2.2 years at 1 ms) park in
///   the top level, re-filed each turn until they come into range. Deadlines at
///   or beyond `origin + (2^64 − 1)·tick` (≈ 584 million years at 1 ms,
///   584 years at 1 ns) saturate to that tick and never fire.
///
/// Arming and cancelling are O(1) and reuse freed storage, so a wheel in
/// steady state does not allocate. `expire` is O(timers fired + timers
/// cascaded); a timer cascades at most once per level on its way down, plus
/// once per turn of the top level while it is over `64^6` ticks away.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use sockloop::timer::Wheel;
///
/// let origin = Instant::now();
/// let ms = Duration::from_millis(1);
/// let mut wheel = Wheel::new(origin, ms);
///
/// let idle = wheel.arm(origin + 30_000 * ms, "idle");
/// let retry = wheel.arm(origin + 50 * ms, "retry");
/// assert_eq!(wheel.cancel(idle), Some("idle"));
/// assert_eq!(wheel.cancel(idle), None); // already gone: a no-op
///
/// // The loop sleeps at most until the earliest deadline...
/// assert_eq!(wheel.poll_timeout(origin), Some(50 * ms));
///
/// // ...and then collects what is due.
/// let mut fired = Vec::new();
/// wheel.expire(origin + 49 * ms, &mut fired);
/// assert!(fired.is_empty());
/// wheel.expire(origin + 50 * ms, &mut fired);
/// assert_eq!(fired, [(retry, "retry")]);
/// assert!(wheel.is_empty());
/// ```
///
/// [`new`]: Wheel::new
/// [`deadline`]: Wheel::deadline
pub struct Wheel<T> {
    pub(super) origin: Instant,
    pub(super) tick_ns: u64,
    /// Ticks per second if the tick divides a second, else 0. Then an
    /// instant converts with multiplies only: a 64-bit `div` is a large
    /// share of `arm`.
    pub(super) per_sec: u64,
    /// `ceil(2^64 / tick_ns)`, so `n / tick_ns == (n * recip) >> 64` for
    /// any 32-bit `n` (Lemire et al., "Faster remainder by direct
    /// computation"); 0 for a 1 ns tick, which needs no division.
    pub(super) recip: u64,
    /// First tick not yet processed: every timer due before it has fired,
    /// and every timer in the levels is due at or after it.
    pub(super) elapsed: u64,
    pub(super) entries: Slab<Entry<T>>,
    /// `level * SLOTS + slot`, then [`OVERDUE`].
    pub(super) lists: [List; OVERDUE + 1],
    /// Bit `s` of `occupied[l]` is set iff slot `s` of level `l` is non-empty.
    pub(super) occupied: [u64; LEVELS],
    /// Lower bound on the ticks in each top-level list (not raised on
    /// cancel); tells a cascade how far it may jump.
    pub(super) top_min: [u64; SLOTS],
    /// Lower bound on the overdue timers' ticks (not raised on cancel).
    pub(super) overdue_min: u64,
    pub(super) next_gen: NonZeroU32,
    /// Reused by `expire` to sort overdue timers without allocating.
    pub(super) scratch: Vec<(u64, u32, u32)>,
}

impl<T> Wheel<T> {
    /// Creates an empty wheel whose tick 0 is `origin`.
    ///
    /// `tick` is clamped to at least 1 ns and at most `u64::MAX` ns.
    pub fn new(origin: Instant, tick: Duration) -> Self {
        Self::with_capacity(origin, tick, 0)
    }

    /// Like [`new`](Wheel::new), with room for `cap` timers before the
    /// first allocation.
    pub fn with_capacity(origin: Instant, tick: Duration, cap: usize) -> Self {
        let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
        let divides = NANOS_PER_SEC.is_multiple_of(tick_ns);
        Wheel {
            origin,
            tick_ns,
            per_sec: if divides { NANOS_PER_SEC / tick_ns } else { 0 },
            recip: if tick_ns > 1 {
                u64::MAX / tick_ns + 1
            } else {
                0
            },
            elapsed: 0,
            entries: Slab::with_capacity(cap),
            lists: [EMPTY; OVERDUE + 1],
            occupied: [0; LEVELS],
            top_min: [u64::MAX; SLOTS],
            overdue_min: u64::MAX,
            next_gen: NonZeroU32::MIN,
            scratch: Vec::new(),
        }
    }

    /// Arms a timer for `deadline`, rounded up to the next tick boundary.
    ///
    /// # Panics
    ///
    /// If `2^32 − 1` timers are already pending (well over 100 GiB of them).
    pub fn arm(&mut self, deadline: Instant, value: T) -> TimerHandle {
        let when = self.ticks(deadline, true);
        let list = if when < self.elapsed {
            self.overdue_min = self.overdue_min.min(when);
            OVERDUE
        } else {
            list_for(self.elapsed, when)
        };
        let gen = self.next_gen;
        self.next_gen = gen.checked_add(1).unwrap_or(NonZeroU32::MIN);

        let vacant = self.entries.vacant_entry();
        let key = match u32::try_from(vacant.key()) {
            Ok(key) if key != NIL => key,
            _ => panic!("timer wheel full: {} pending timers", u32::MAX),
        };
        let tail = self.lists[list].tail;
        vacant.insert(Entry {
            when,
            value,
            gen,
            prev: tail,
            next: NIL,
            list: ListId::new(list),
        });
        self.link_after(list, tail, key, when);
        TimerHandle { key, gen }
    }

    /// Cancels a pending timer and returns its value; `None` (and no effect)
    /// if it already fired or was cancelled.
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        let key = handle.key as usize;
        if self.entries.get(key)?.gen != handle.gen {
            return None;
        }
        self.unlink(handle.key);
        Some(self.entries.remove(key).value)
    }

    /// The tick-rounded deadline of a pending timer; `None` if it fired or
    /// was cancelled (or, absurdly, if the rounded deadline is past what
    /// `Instant` can represent).
    pub fn deadline(&self, handle: TimerHandle) -> Option<Instant> {
        let entry = self.entries.get(handle.key as usize)?;
        if entry.gen != handle.gen {
            return None;
        }
        self.instant(entry.when)
    }

    /// Moves every timer whose rounded deadline is `<= now` into `fired`
    /// (appended in deadline order, equal deadlines in arm order).
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<(TimerHandle, T)>) {
        // Capped one below the saturated deadline so that saturated timers,
        // whose real deadline is unknown, never fire early.
        let now_tick = self.ticks(now, false).min(u64::MAX - 1);
        if self.lists[OVERDUE].head != NIL {
            self.expire_overdue(now_tick, fired);
        }
        let target = now_tick + 1;
        if target <= self.elapsed {
            return;
        }
        while let Some((list, start)) = self.first_slot() {
            if list < SLOTS {
                if start > now_tick {
                    break;
                }
                self.elapsed = start;
                self.fire(list, fired);
            } else {
                // A coarse slot starting at `target` is cascaded too: once
                // `elapsed` is inside it, its timers belong lower down.
                if start > target {
                    break;
                }
                self.cascade(list, start, target);
            }
        }
        self.elapsed = target;
    }

    /// A lower bound on the earliest pending deadline, `None` if empty.
    ///
    /// Exactly the earliest rounded deadline when that timer sits in level 0,
    /// i.e. it falls in the same 64-tick-aligned block as the wheel's current
    /// tick (the one after the last `expire`'s `now`). Otherwise it is the
    /// start of the coarse slot holding the earliest timer, on level `l` at
    /// most `64^l − 1` ticks early (more for timers over `64^6` ticks away):
    /// the loop wakes, `expire` cascades, and the next call is tighter.
    /// Timers armed in the past report their earliest deadline or earlier.
    /// Costs at most six bit-scans. `None` also if the bound is past what
    /// `Instant` can represent.
    pub fn next_deadline(&self) -> Option<Instant> {
        let wheel = self.first_slot().map(|(_, start)| start);
        let overdue = (self.lists[OVERDUE].head != NIL).then_some(self.overdue_min);
        let tick = match (wheel, overdue) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        self.instant(tick)
    }

    /// How long the loop may sleep from `now`: [`next_deadline`] minus
    /// `now`, zero if that is past, `None` if the wheel is empty.
    ///
    /// [`next_deadline`]: Wheel::next_deadline
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.next_deadline()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn fire(&mut self, list: usize, fired: &mut Vec<(TimerHandle, T)>) {
        let mut key = self.take(list);
        while key != NIL {
            let Entry {
                gen, value, next, ..
            } = self.entries.remove(key as usize);
            fired.push((TimerHandle { key, gen }, value));
            key = next;
        }
    }

    /// Fires the overdue timers due by `now_tick`, sorted by deadline; the
    /// list is in arm order, so the position breaks ties.
    fn expire_overdue(&mut self, now_tick: u64, fired: &mut Vec<(TimerHandle, T)>) {
        let mut due = std::mem::take(&mut self.scratch);
        let mut rest_min = u64::MAX;
        let mut key = self.lists[OVERDUE].head;
        while key != NIL {
            let entry = &self.entries[key as usize];
            if entry.when <= now_tick {
                due.push((entry.when, due.len() as u32, key));
            } else {
                rest_min = rest_min.min(entry.when);
            }
            key = entry.next;
        }
        self.overdue_min = rest_min;
        due.sort_unstable();
        for &(_, _, key) in &due {
            self.unlink(key);
            let Entry { gen, value, .. } = self.entries.remove(key as usize);
            fired.push((TimerHandle { key, gen }, value));
        }
        due.clear();
        self.scratch = due;
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("tick", &Duration::from_nanos(self.tick_ns))
            .field("elapsed_ticks", &self.elapsed)
            .field("len", &self.len())
            .finish()
    }
}
