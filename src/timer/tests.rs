//! The wheel's tests: exact firing ticks across every level boundary,
//! rounding, ties, cancellation, extremes; `model` checks it against a
//! `BTreeMap` under random operations.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::levels::{list_for, OVERDUE, SLOTS, TOP};
use super::lists::NIL;
use super::*;
use crate::rng::Rng;

const MS: Duration = Duration::from_millis(1);
const L2: u64 = 64 * 64;
const L6: u64 = 1 << 36;

fn wheel() -> (Instant, Wheel<u64>) {
    // The single clock read: every other instant is derived from it.
    let origin = Instant::now();
    (origin, Wheel::new(origin, MS))
}

#[test]
fn an_entry_with_an_8_byte_value_is_32_bytes() {
    // Every open connection has one in the shard's deadline wheel.
    use std::mem::size_of;
    type Entry = super::lists::Entry<[u32; 2]>;
    assert_eq!(size_of::<Entry>(), 32);
    // The slab's own slot is `Vacant(usize) | Occupied(entry)`, shaped as
    // this `Result`: the list id's niche holds its tag.
    assert_eq!(size_of::<Result<usize, Entry>>(), 32);
    assert_eq!(size_of::<super::lists::Entry<u64>>(), 32);
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
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let ticks_ns = [1, 2, 3, 7, 1000, 1_000_000, 3_333_333, 250_000_000];
    for tick in ticks_ns
        .into_iter()
        .chain([999_999_999, 1_000_000_000, 1 << 40])
    {
        let w: Wheel<()> = Wheel::new(origin, Duration::from_nanos(tick));
        for i in 0..20_000u64 {
            let x = rng.next_u64();
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

mod model;
