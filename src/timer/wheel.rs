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
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use slab::Slab;

const LEVELS: usize = 6;
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const MASK: u64 = SLOTS as u64 - 1;
const TOP: usize = LEVELS - 1;
/// Ticks per top-level slot, as a shift.
const TOP_SHIFT: u32 = TOP as u32 * BITS;
/// List of timers whose tick the wheel had already passed when they were
/// armed; they sit outside the levels because no slot ahead can hold them.
const OVERDUE: usize = LEVELS * SLOTS;
/// Null link; keys are `u32` to keep entries small.
const NIL: u32 = u32::MAX;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Identifies an armed timer in its [`Wheel`].
///
/// Carries a generation, so a handle whose timer has fired or been cancelled
/// stays harmless even after its storage slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    key: u32,
    gen: u32,
}

struct Entry<T> {
    /// Deadline in ticks since `origin`, rounded up.
    when: u64,
    value: T,
    gen: u32,
    prev: u32,
    next: u32,
    /// The list this entry is linked into (see [`ListId`]), so `cancel`
    /// can fix up the list's head, tail and bit without recomputing it.
    list: ListId,
}

/// A list index, stored plus one: the zero niche lets the slab fold its
/// vacant/occupied tag into the entry, 40 bytes down to 32 for a `u64`
/// value, which is fewer cache misses when cascades walk the lists.
#[derive(Clone, Copy)]
struct ListId(NonZeroU16);

impl ListId {
    fn new(list: usize) -> Self {
        // `list <= OVERDUE`, far below `u16::MAX`.
        ListId(NonZeroU16::MIN.saturating_add(list as u16))
    }

    fn get(self) -> usize {
        usize::from(self.0.get() - 1)
    }
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

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
    origin: Instant,
    tick_ns: u64,
    /// Ticks per second if the tick divides a second, else 0. Then an
    /// instant converts with multiplies only: a 64-bit `div` is a large
    /// share of `arm`.
    per_sec: u64,
    /// `ceil(2^64 / tick_ns)`, so `n / tick_ns == (n * recip) >> 64` for
    /// any 32-bit `n` (Lemire et al., "Faster remainder by direct
    /// computation"); 0 for a 1 ns tick, which needs no division.
    recip: u64,
    /// First tick not yet processed: every timer due before it has fired,
    /// and every timer in the levels is due at or after it.
    elapsed: u64,
    entries: Slab<Entry<T>>,
    /// `level * SLOTS + slot`, then [`OVERDUE`].
    lists: [List; OVERDUE + 1],
    /// Bit `s` of `occupied[l]` is set iff slot `s` of level `l` is non-empty.
    occupied: [u64; LEVELS],
    /// Lower bound on the ticks in each top-level list (not raised on
    /// cancel); tells a cascade how far it may jump.
    top_min: [u64; SLOTS],
    /// Lower bound on the overdue timers' ticks (not raised on cancel).
    overdue_min: u64,
    next_gen: u32,
    /// Reused by `expire` to sort overdue timers without allocating.
    scratch: Vec<(u64, u32, u32)>,
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
            next_gen: 0,
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
        self.next_gen = gen.wrapping_add(1);

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

    /// `t - origin` in ticks, rounded up or down; saturates at `u64::MAX`.
    #[inline]
    fn ticks(&self, t: Instant, up: bool) -> u64 {
        let d = t.saturating_duration_since(self.origin);
        if self.per_sec != 0 {
            let sub = u64::from(d.subsec_nanos());
            let q = match self.recip {
                0 => sub,
                r => ((u128::from(r) * u128::from(sub)) >> 64) as u64,
            };
            let round = u64::from(up && sub != q * self.tick_ns);
            if let Some(ticks) = d.as_secs().checked_mul(self.per_sec) {
                // `q + round <= per_sec`, so this only fails near u64::MAX.
                if let Some(ticks) = ticks.checked_add(q + round) {
                    return ticks;
                }
            }
        }
        self.ticks_slow(d, up)
    }

    fn ticks_slow(&self, d: Duration, up: bool) -> u64 {
        // u64 nanoseconds cover 584 years; only beyond that pay for u128.
        let ns = d
            .as_secs()
            .checked_mul(NANOS_PER_SEC)
            .and_then(|ns| ns.checked_add(u64::from(d.subsec_nanos())));
        match ns {
            // Cannot overflow: the quotient is below `u64::MAX` unless
            // `tick_ns == 1`, and then there is no remainder.
            Some(ns) => ns / self.tick_ns + u64::from(up && !ns.is_multiple_of(self.tick_ns)),
            None => {
                let (ns, tick) = (d.as_nanos(), u128::from(self.tick_ns));
                let ticks = ns / tick + u128::from(up && !ns.is_multiple_of(tick));
                u64::try_from(ticks).unwrap_or(u64::MAX)
            }
        }
    }

    fn instant(&self, ticks: u64) -> Option<Instant> {
        let ns = u128::from(ticks) * u128::from(self.tick_ns);
        let secs = u64::try_from(ns / u128::from(NANOS_PER_SEC)).ok()?;
        let nanos = (ns % u128::from(NANOS_PER_SEC)) as u32;
        self.origin.checked_add(Duration::new(secs, nanos))
    }

    /// The earliest non-empty slot and its start tick. Any timer on a lower
    /// level is due before every timer on a higher one, so the lowest
    /// non-empty level decides.
    fn first_slot(&self) -> Option<(usize, u64)> {
        (0..LEVELS).find_map(|level| self.first_in(level))
    }

    fn first_in(&self, level: usize) -> Option<(usize, u64)> {
        let occupied = self.occupied[level];
        if occupied == 0 {
            return None;
        }
        let pos = (self.elapsed >> (level as u32 * BITS)) & MASK;
        // Level 0's current slot is the current tick and may be due. Above
        // it the current slot is empty, except on the top level where it
        // holds timers a turn or more ahead, so scanning starts past it.
        let from = (pos + u64::from(level != 0)) & MASK;
        let slot = (from + u64::from(occupied.rotate_right(from as u32).trailing_zeros())) & MASK;
        Some((level * SLOTS + slot as usize, self.slot_start(level, slot)))
    }

    /// The next tick at or after the current one (strictly after, above
    /// level 0) at which `slot` of `level` begins.
    fn slot_start(&self, level: usize, slot: u64) -> u64 {
        let shift = level as u32 * BITS;
        let pos = (self.elapsed >> shift) & MASK;
        let skip = u64::from(level != 0);
        let ahead = slot.wrapping_sub(pos + skip) & MASK;
        let base = self.elapsed >> shift << shift;
        base.saturating_add((skip + ahead) << shift)
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

    /// Re-files the timers of coarse slot `list` (which starts at `start`)
    /// relative to a new current tick in `start..=target`.
    fn cascade(&mut self, list: usize, start: u64, target: u64) {
        let head = self.take(list);
        let mut elapsed = start;
        if list / SLOTS == TOP {
            // Timers here may be due many turns after `start`; stepping a
            // turn at a time would make a huge `now` cost billions of passes.
            // Jump as far as is safe: not past `target`, nor any timer here,
            // nor into the top slot of another list's earliest timer (where
            // that timer would have to move down a level).
            let mut limit = target;
            let mut key = head;
            while key != NIL {
                let entry = &self.entries[key as usize];
                limit = limit.min(entry.when);
                key = entry.next;
            }
            let mut rest = self.occupied[TOP];
            while rest != 0 {
                let slot = u64::from(rest.trailing_zeros());
                rest &= rest - 1;
                let min = self.top_min[slot as usize] >> TOP_SHIFT << TOP_SHIFT;
                limit = limit.min(self.slot_start(TOP, slot).max(min) - 1);
            }
            elapsed = limit.max(start);
        }
        self.elapsed = elapsed;
        let mut key = head;
        while key != NIL {
            let entry = &self.entries[key as usize];
            let (next, when) = (entry.next, entry.when);
            self.push_back(list_for(elapsed, when), key, when);
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

    /// Detaches a whole list, returning its head.
    fn take(&mut self, list: usize) -> u32 {
        let head = self.lists[list].head;
        self.lists[list] = EMPTY;
        if list < OVERDUE {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
        if list / SLOTS == TOP {
            self.top_min[list % SLOTS] = u64::MAX;
        }
        head
    }

    fn push_back(&mut self, list: usize, key: u32, when: u64) {
        let tail = self.lists[list].tail;
        let entry = &mut self.entries[key as usize];
        entry.prev = tail;
        entry.next = NIL;
        entry.list = ListId::new(list);
        self.link_after(list, tail, key, when);
    }

    /// Second half of appending `key` (whose own links are already set).
    fn link_after(&mut self, list: usize, tail: u32, key: u32, when: u64) {
        if list / SLOTS == TOP {
            let min = &mut self.top_min[list % SLOTS];
            *min = (*min).min(when);
        }
        if tail == NIL {
            self.lists[list].head = key;
            if list < OVERDUE {
                self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
            }
        } else {
            self.entries[tail as usize].next = key;
        }
        self.lists[list].tail = key;
    }

    fn unlink(&mut self, key: u32) {
        let entry = &self.entries[key as usize];
        let (prev, next, list) = (entry.prev, entry.next, entry.list.get());
        if prev == NIL {
            self.lists[list].head = next;
            if next == NIL {
                // Now empty: same bookkeeping as taking the whole list.
                self.take(list);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }
}

/// The list a timer due at `when` belongs in while the wheel's current tick
/// is `elapsed` (`when >= elapsed`): the level of the highest base-64 digit
/// in which they differ, the slot of `when`'s digit there. Deadlines more
/// than a turn ahead also land on the top level, by the same digit; that
/// slot comes round (and is re-filed) each turn until they are in range.
/// Placement depends on nothing else, so timers sharing a deadline always
/// share a list, which keeps them in arm order.
#[inline]
fn list_for(elapsed: u64, when: u64) -> usize {
    let differ = (elapsed ^ when) | MASK;
    let level = (((63 - differ.leading_zeros()) / BITS) as usize).min(TOP);
    level * SLOTS + ((when >> (level as u32 * BITS)) & MASK) as usize
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    const MS: Duration = Duration::from_millis(1);
    const L2: u64 = 64 * 64;
    const L6: u64 = 1 << 36;

    fn wheel() -> (Instant, Wheel<u64>) {
        // The single clock read: every other instant is derived from it.
        let origin = Instant::now();
        (origin, Wheel::new(origin, MS))
    }

    fn at(origin: Instant, ticks: u64) -> Instant {
        origin + Duration::from_millis(ticks)
    }

    fn expire(w: &mut Wheel<u64>, now: Instant) -> Vec<u64> {
        let mut fired = Vec::new();
        w.expire(now, &mut fired);
        fired.into_iter().map(|(_, v)| v).collect()
    }

    /// The documented `next_deadline` bound, from first principles: the
    /// earliest deadline rounded down to its slot on the level where it
    /// differs from the current tick.
    fn expected_bound(elapsed: u64, when: u64) -> u64 {
        let mut level = 0;
        while level < 5 && when >> (6 * (level + 1)) != elapsed >> (6 * (level + 1)) {
            level += 1;
        }
        when >> (6 * level) << (6 * level)
    }

    #[test]
    fn fires_on_its_tick_not_one_early_stepping_every_tick() {
        let extra = [L2 - 1, L2, L2 + 1, 2 * L2 - 1, 2 * L2, 2 * L2 + 1];
        for base in [0, 1, 37, 63, 64, 65, 4000, L2 - 1, L2, L2 + 1] {
            let (origin, mut w) = wheel();
            assert!(expire(&mut w, at(origin, base)).is_empty());
            let mut pending = BTreeMap::new();
            let deadlines = (1..=300).chain(extra).map(|d| base + d);
            // Armed twice each, interleaved, to check ties come out in arm order.
            for (i, d) in deadlines.clone().chain(deadlines).enumerate() {
                w.arm(at(origin, d), i as u64);
                pending.insert((d, i as u64), ());
            }
            let mut t = base;
            while let Some(&(first, _)) = pending.keys().next() {
                t += 1;
                let bound = w.next_deadline().unwrap();
                assert_eq!(
                    bound,
                    at(origin, expected_bound(t, first)),
                    "base {base} t {t}"
                );
                assert!(w.deadline_le_all(bound));

                let due: Vec<u64> = pending.range(..(t + 1, 0)).map(|(&(_, i), _)| i).collect();
                pending.retain(|&(d, _), _| d > t);
                assert_eq!(expire(&mut w, at(origin, t)), due, "base {base} t {t}");
                w.check_invariants();
                assert_eq!(w.len(), pending.len());
            }
            assert!(w.is_empty());
            assert_eq!(w.next_deadline(), None);
        }
    }

    #[test]
    fn cascades_across_every_level_boundary() {
        let mut deadlines = vec![L6 + 5, 2 * L6 + 7, 100 * L6 + 3, (1 << 40) + 1];
        for level in 1..=6 {
            let span = 1u64 << (6 * level);
            deadlines.extend([span - 1, span, span + 1, 2 * span - 1, 2 * span + 1]);
        }
        for base in [0, 12_345, L6 - 3] {
            let (origin, mut w) = wheel();
            expire(&mut w, at(origin, base));
            let mut ds: Vec<u64> = deadlines.iter().map(|d| base + d).collect();
            let handles: Vec<_> = ds.iter().map(|&d| (d, w.arm(at(origin, d), d))).collect();
            for &(d, h) in &handles {
                assert_eq!(w.deadline(h), Some(at(origin, d)));
            }
            ds.sort_unstable();
            ds.dedup();
            for d in ds {
                let bound = w.next_deadline().unwrap();
                assert!(bound <= at(origin, d), "base {base} d {d}");
                assert!(
                    expire(&mut w, at(origin, d - 1)).is_empty(),
                    "base {base} d {d}"
                );
                // One tick before, the earliest timer is in level 0: exact.
                assert_eq!(w.next_deadline(), Some(at(origin, d)));
                assert_eq!(expire(&mut w, at(origin, d)), [d]);
            }
            assert!(w.is_empty());
        }
    }

    #[test]
    fn rounds_deadlines_up_to_the_next_tick() {
        let (origin, mut w) = wheel();
        let nanos = Duration::from_nanos;
        let on = w.arm(at(origin, 5), 0);
        let off = w.arm(at(origin, 5) + nanos(1), 1);
        let early = w.arm(origin - Duration::from_secs(1), 2);
        assert_eq!(w.deadline(on), Some(at(origin, 5)));
        assert_eq!(w.deadline(off), Some(at(origin, 6)));
        assert_eq!(w.deadline(early), Some(origin));
        assert_eq!(expire(&mut w, origin - MS), [2]);
        assert!(expire(&mut w, at(origin, 5) - nanos(1)).is_empty());
        assert_eq!(expire(&mut w, at(origin, 5)), [0]);
        assert!(expire(&mut w, at(origin, 6) - nanos(1)).is_empty());
        assert_eq!(expire(&mut w, at(origin, 6)), [1]);

        // An odd tick: 3 ms, so 7 ms rounds to 9 ms.
        let mut w = Wheel::new(origin, 3 * MS);
        let h = w.arm(at(origin, 7), 7);
        assert_eq!(w.deadline(h), Some(at(origin, 9)));
        assert!(expire(&mut w, at(origin, 9) - nanos(1)).is_empty());
        assert_eq!(expire(&mut w, at(origin, 9)), [7]);

        // A zero tick is clamped to 1 ns.
        let mut w = Wheel::new(origin, Duration::ZERO);
        w.arm(origin + nanos(3), 3);
        assert!(expire(&mut w, origin + nanos(2)).is_empty());
        assert_eq!(expire(&mut w, origin + nanos(3)), [3]);
    }

    #[test]
    fn tick_conversion_matches_exact_division() {
        let origin = Instant::now();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let ticks_ns = [1, 2, 3, 7, 1000, 1_000_000, 3_333_333, 250_000_000];
        for tick in ticks_ns
            .into_iter()
            .chain([999_999_999, 1_000_000_000, 1 << 40])
        {
            let w: Wheel<()> = Wheel::new(origin, Duration::from_nanos(tick));
            for i in 0..20_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Edges around whole ticks and seconds, then anything.
                let ns = match i % 4 {
                    0 => (x % 1000) * tick + (i / 4) % 3,
                    1 => (x % 100_000) * 1_000_000_000 + (x >> 40) % 2 * (tick - 1),
                    2 => x >> (x % 64),
                    _ => x % (1 << 62),
                };
                let t = origin + Duration::from_nanos(ns);
                let (q, r) = (ns / tick, ns % tick);
                assert_eq!(w.ticks(t, false), q, "tick {tick} ns {ns}");
                assert_eq!(
                    w.ticks(t, true),
                    q + u64::from(r != 0),
                    "tick {tick} ns {ns}"
                );
            }
        }
    }

    #[test]
    fn past_deadlines_fire_on_next_expire_in_deadline_order() {
        let (origin, mut w) = wheel();
        expire(&mut w, at(origin, 100));
        w.arm(at(origin, 50), 50);
        w.arm(at(origin, 100), 100);
        w.arm(at(origin, 20), 20);
        w.arm(at(origin, 101), 101);
        w.arm(origin - MS, 0);
        w.arm(at(origin, 50), 51);
        assert_eq!(w.next_deadline(), Some(origin));
        assert_eq!(expire(&mut w, at(origin, 100)), [0, 20, 50, 51, 100]);
        assert_eq!(w.next_deadline(), Some(at(origin, 101)));
        assert_eq!(expire(&mut w, at(origin, 101)), [101]);

        // Time running backwards never fires anything early.
        w.arm(at(origin, 60), 60);
        w.arm(at(origin, 30), 30);
        assert_eq!(w.next_deadline(), Some(at(origin, 30)));
        assert_eq!(expire(&mut w, at(origin, 40)), [30]);
        assert_eq!(w.next_deadline(), Some(at(origin, 60)));
        assert!(expire(&mut w, at(origin, 59)).is_empty());
        assert_eq!(expire(&mut w, at(origin, 200)), [60]);
    }

    #[test]
    fn cancel_before_and_after_fire() {
        let (origin, mut w) = wheel();
        let hs: Vec<_> = (0..5).map(|i| w.arm(at(origin, 10), i)).collect();
        let later = w.arm(at(origin, 100), 9);
        // Middle, head and tail of one list.
        assert_eq!(w.cancel(hs[2]), Some(2));
        assert_eq!(w.cancel(hs[0]), Some(0));
        assert_eq!(w.cancel(hs[4]), Some(4));
        assert_eq!(w.cancel(hs[2]), None);
        assert_eq!(w.deadline(hs[2]), None);
        assert_eq!(w.len(), 3);
        assert_eq!(expire(&mut w, at(origin, 10)), [1, 3]);
        assert_eq!(w.cancel(hs[1]), None);
        assert_eq!(w.deadline(hs[1]), None);
        // Emptying a slot clears its bit: nothing left to wake for.
        assert_eq!(w.cancel(later), Some(9));
        assert_eq!(w.next_deadline(), None);
        assert!(w.is_empty());
        assert!(expire(&mut w, at(origin, 1000)).is_empty());
    }

    #[test]
    fn stale_handle_after_slot_reuse_is_a_no_op() {
        let (origin, mut w) = wheel();
        let old = w.arm(at(origin, 10), 1);
        assert_eq!(w.cancel(old), Some(1));
        let new = w.arm(at(origin, 20), 2);
        assert_eq!(new.key, old.key, "the slab slot is reused");
        assert_eq!(w.cancel(old), None);
        assert_eq!(w.deadline(old), None);
        assert_eq!(w.deadline(new), Some(at(origin, 20)));

        let fired = w.arm(at(origin, 5), 3);
        assert_eq!(expire(&mut w, at(origin, 5)), [3]);
        let reuse = w.arm(at(origin, 30), 4);
        assert_eq!(reuse.key, fired.key);
        assert_eq!(w.cancel(fired), None);
        assert_eq!(w.len(), 2);
        assert_eq!(expire(&mut w, at(origin, 30)), [2, 4]);
    }

    #[test]
    fn ties_stay_in_arm_order_through_cascades_and_far_parking() {
        let (origin, mut w) = wheel();
        let top = 1u64 << 30; // one top-level slot
        let d = 74 * top + 123; // 74 slots ahead: more than a turn
        w.arm(at(origin, d), 0);
        expire(&mut w, at(origin, 5 * top + 1));
        w.arm(at(origin, d), 1); // still more than a turn ahead
        expire(&mut w, at(origin, 11 * top)); // within a turn now
        w.arm(at(origin, d), 2);
        w.arm(at(origin, d - 1), 3);
        expire(&mut w, at(origin, d - 5000));
        w.arm(at(origin, d), 4);
        expire(&mut w, at(origin, d - 10));
        w.arm(at(origin, d), 5);
        assert_eq!(w.next_deadline(), Some(at(origin, d - 1)));
        assert_eq!(expire(&mut w, at(origin, d)), [3, 0, 1, 2, 4, 5]);
    }

    #[test]
    fn huge_deadlines_fire_exactly_or_saturate_without_panicking() {
        let (origin, mut w) = wheel();
        let far = origin + Duration::from_secs(1_000_000_000);
        let h = w.arm(far, 1);
        assert_eq!(w.deadline(h), Some(far));
        assert!(w.next_deadline().unwrap() <= far);
        assert!(expire(&mut w, far - MS).is_empty());
        assert_eq!(expire(&mut w, far), [1]);

        // 1 ns ticks: 10^18 ticks is ~14.5 million turns of the top level,
        // crossed in one jump.
        let mut w = Wheel::new(origin, Duration::from_nanos(1));
        w.arm(far, 2);
        w.arm(far + Duration::from_nanos(1), 3);
        assert!(expire(&mut w, far - Duration::from_nanos(1)).is_empty());
        assert_eq!(expire(&mut w, far), [2]);
        assert_eq!(expire(&mut w, far + Duration::from_secs(1)), [3]);

        // Beyond u64::MAX ticks (584 years at 1 ns): saturates, never fires.
        let never = origin + Duration::from_secs(600 * 365 * 86_400);
        let h = w.arm(never, 4);
        assert!(w.deadline(h).unwrap() < never);
        assert!(w.next_deadline().is_some());
        assert!(expire(&mut w, never + Duration::from_secs(86_400)).is_empty());
        assert_eq!(w.cancel(h), Some(4));

        // Extremes around what Instant can hold, for any tick.
        for tick in [
            Duration::from_nanos(1),
            MS,
            Duration::from_secs(1 << 40),
            Duration::MAX,
        ] {
            let mut w = Wheel::new(origin, tick);
            for secs in [1u64 << 32, 1 << 50, 1 << 62, u64::MAX] {
                if let Some(t) = origin.checked_add(Duration::from_secs(secs)) {
                    let h = w.arm(t, secs);
                    w.deadline(h);
                    w.next_deadline();
                    w.poll_timeout(origin);
                    let mut fired = Vec::new();
                    w.expire(t, &mut fired);
                    w.expire(origin, &mut fired);
                }
            }
        }
    }

    #[test]
    fn next_deadline_and_poll_timeout() {
        let (origin, mut w) = wheel();
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.poll_timeout(origin), None);
        let soon = w.arm(at(origin, 5), 5);
        w.arm(at(origin, 100), 100);
        assert_eq!(w.next_deadline(), Some(at(origin, 5)));
        w.cancel(soon);
        // 100 sits in level 1's slot [64, 128): the bound is its start.
        assert_eq!(w.next_deadline(), Some(at(origin, 64)));
        assert!(expire(&mut w, at(origin, 63)).is_empty());
        // Reaching 64 cascaded it into level 0: now exact.
        assert_eq!(w.next_deadline(), Some(at(origin, 100)));
        assert_eq!(w.poll_timeout(at(origin, 70)), Some(30 * MS));
        assert_eq!(w.poll_timeout(at(origin, 200)), Some(Duration::ZERO));
    }

    #[test]
    fn with_capacity_and_debug() {
        let origin = Instant::now();
        let mut w: Wheel<()> = Wheel::with_capacity(origin, MS, 16);
        assert!(w.is_empty());
        w.arm(origin, ());
        assert_eq!(w.len(), 1);
        assert_eq!(
            format!("{w:?}"),
            "Wheel { tick: 1ms, elapsed_ticks: 0, len: 1 }"
        );
    }

    impl<T> Wheel<T> {
        /// Every timer is linked where a fresh `arm` would put it, and the
        /// lists, bitmaps and minimums agree with the entries.
        fn check_invariants(&self) {
            let mut seen = 0;
            for (list, l) in self.lists.iter().enumerate() {
                let (mut key, mut prev) = (l.head, NIL);
                while key != NIL {
                    let e = &self.entries[key as usize];
                    assert_eq!((e.prev, e.list.get()), (prev, list));
                    if list == OVERDUE {
                        assert!(e.when < self.elapsed && self.overdue_min <= e.when);
                    } else {
                        assert_eq!(list, list_for(self.elapsed, e.when), "when {}", e.when);
                    }
                    if list / SLOTS == TOP {
                        assert!(self.top_min[list % SLOTS] <= e.when);
                    }
                    (prev, key) = (key, e.next);
                    seen += 1;
                }
                assert_eq!(l.tail, prev);
                if list < OVERDUE {
                    let bit = self.occupied[list / SLOTS] >> (list % SLOTS) & 1;
                    assert_eq!(bit == 1, l.head != NIL);
                }
            }
            assert_eq!(seen, self.entries.len());
        }

        /// Checks the lower-bound half of `next_deadline` by brute force.
        fn deadline_le_all(&self, bound: Instant) -> bool {
            self.entries
                .iter()
                .all(|(_, e)| self.instant(e.when).is_none_or(|d| bound <= d))
        }
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// Offset from now in ns; negative is in the past.
            Arm(i128),
            /// Index into every handle ever issued, live or stale.
            Cancel(usize),
            /// Moves now forward by this many ns and expires.
            Advance(u128),
            /// Expires at now minus this many ns, without moving now.
            ExpireBack(u128),
        }

        fn ops(tick: u64) -> impl Strategy<Value = Vec<Op>> {
            let t = i128::from(tick);
            let offset = prop_oneof![
                3 => (0..200i128).prop_map(move |k| k * t), // on a tick: ties
                3 => 0..200 * t,
                2 => -2000 * t..0,
                2 => 0..300_000 * t,
                1 => 0..(1i128 << 38) * t, // beyond 64^6 ticks
                1 => 0..1i128 << 66,       // saturates 1 ns ticks
            ];
            let u = t as u128;
            let step = prop_oneof![
                4 => 0..3 * u,
                3 => 0..100 * u,
                2 => 0..5000 * u,
                1 => 0..(1u128 << 20) * u,
                1 => 0..(1u128 << 40) * u,
                1 => 0..1u128 << 65,
            ];
            let op = prop_oneof![
                6 => offset.prop_map(Op::Arm),
                2 => any::<usize>().prop_map(Op::Cancel),
                3 => step.prop_map(Op::Advance),
                1 => (0..3000 * u).prop_map(Op::ExpireBack),
            ];
            prop::collection::vec(op, 1..200)
        }

        fn span(ns: u128) -> Duration {
            let secs = (ns / 1_000_000_000) as u64;
            Duration::new(secs, (ns % 1_000_000_000) as u32)
        }

        fn run(tick: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
            let origin = Instant::now();
            let mut w = Wheel::new(origin, Duration::from_nanos(tick));
            let tick = u128::from(tick);
            let to_tick = |ns: u128, up: bool| {
                let t = ns / tick + u128::from(up && !ns.is_multiple_of(tick));
                u64::try_from(t).unwrap_or(u64::MAX)
            };
            let instant = |ticks: u64| origin + span(u128::from(ticks) * tick);
            // (rounded tick, arm seq) -> (handle, value, raw deadline ns)
            let mut model: BTreeMap<(u64, u64), (TimerHandle, u64, u128)> = BTreeMap::new();
            let mut keys: HashMap<TimerHandle, (u64, u64)> = HashMap::new();
            let mut handles = Vec::new();
            let (mut now, mut seq) = (0u128, 0u64);
            let mut fired = Vec::new();

            for op in ops {
                let expire_at = match op {
                    Op::Arm(offset) => {
                        let raw = (now as i128 + offset).max(0) as u128;
                        let when = to_tick(raw, true);
                        let h = w.arm(origin + span(raw), seq);
                        prop_assert_eq!(w.deadline(h), Some(instant(when)));
                        model.insert((when, seq), (h, seq, raw));
                        keys.insert(h, (when, seq));
                        handles.push(h);
                        seq += 1;
                        None
                    }
                    Op::Cancel(i) if !handles.is_empty() => {
                        let h = handles[i % handles.len()];
                        let want = keys.remove(&h).map(|k| model.remove(&k).unwrap().1);
                        prop_assert_eq!(w.cancel(h), want);
                        prop_assert_eq!(w.deadline(h), None);
                        None
                    }
                    Op::Cancel(_) => None,
                    Op::Advance(step) => {
                        now += step;
                        Some(now)
                    }
                    Op::ExpireBack(back) => Some(now.saturating_sub(back)),
                };
                if let Some(at_ns) = expire_at {
                    let now_tick = to_tick(at_ns, false).min(u64::MAX - 1);
                    let rest = model.split_off(&(now_tick + 1, 0));
                    let due = std::mem::replace(&mut model, rest);
                    fired.clear();
                    w.expire(origin + span(at_ns), &mut fired);
                    let want: Vec<_> = due.values().map(|&(h, v, _)| (h, v)).collect();
                    prop_assert_eq!(&fired, &want);
                    for (&(when, _), &(h, _, raw)) in &due {
                        keys.remove(&h);
                        // Never early, and less than one tick late.
                        prop_assert!(raw <= at_ns);
                        prop_assert!(u128::from(when) * tick - raw < tick);
                    }
                }
                w.check_invariants();
                prop_assert_eq!(w.len(), model.len());
                match model.keys().next() {
                    None => prop_assert_eq!(w.next_deadline(), None),
                    Some(&(when, _)) => {
                        let bound = w.next_deadline();
                        prop_assert!(bound.is_some_and(|b| b <= instant(when)));
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn matches_btreemap_model_1ms(ops in ops(1_000_000)) {
                run(1_000_000, ops)?;
            }

            #[test]
            fn matches_btreemap_model_odd_tick(ops in ops(3_333_333)) {
                run(3_333_333, ops)?;
            }

            #[test]
            fn matches_btreemap_model_1ns(ops in ops(1)) {
                run(1, ops)?;
            }
        }
    }
}
