//! Where a timer is filed: the six levels of 64 slots, and how a coarse
//! slot's timers come down a level when the wheel reaches it.
//!
//! All of it is bit arithmetic on tick counts: a timer sits at the level of
//! the highest base-64 digit in which its deadline differs from the wheel's
//! current tick ([`list_for`]). The list storage is in `lists.rs`.

use super::lists::NIL;
use super::wheel::Wheel;

pub(super) const LEVELS: usize = 6;
const BITS: u32 = 6;
pub(super) const SLOTS: usize = 1 << BITS;
const MASK: u64 = SLOTS as u64 - 1;
pub(super) const TOP: usize = LEVELS - 1;
/// Ticks per top-level slot, as a shift.
const TOP_SHIFT: u32 = TOP as u32 * BITS;
/// List of timers whose tick the wheel had already passed when they were
/// armed; they sit outside the levels because no slot ahead can hold them.
pub(super) const OVERDUE: usize = LEVELS * SLOTS;

impl<T> Wheel<T> {
    /// The earliest non-empty slot and its start tick. Any timer on a lower
    /// level is due before every timer on a higher one, so the lowest
    /// non-empty level decides.
    pub(super) fn first_slot(&self) -> Option<(usize, u64)> {
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
    pub(super) fn slot_start(&self, level: usize, slot: u64) -> u64 {
        let shift = level as u32 * BITS;
        let pos = (self.elapsed >> shift) & MASK;
        let skip = u64::from(level != 0);
        let ahead = slot.wrapping_sub(pos + skip) & MASK;
        let base = self.elapsed >> shift << shift;
        base.saturating_add((skip + ahead) << shift)
    }

    /// Re-files the timers of coarse slot `list` (which starts at `start`)
    /// relative to a new current tick in `start..=target`.
    pub(super) fn cascade(&mut self, list: usize, start: u64, target: u64) {
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
}

/// The list a timer due at `when` belongs in while the wheel's current tick
/// is `elapsed` (`when >= elapsed`): the level of the highest base-64 digit
/// in which they differ, the slot of `when`'s digit there. Deadlines more
/// than a turn ahead also land on the top level, by the same digit; that
/// slot comes round (and is re-filed) each turn until they are in range.
/// Placement depends on nothing else, so timers sharing a deadline always
/// share a list, which keeps them in arm order.
#[inline]
pub(super) fn list_for(elapsed: u64, when: u64) -> usize {
    let differ = (elapsed ^ when) | MASK;
    let level = (((63 - differ.leading_zeros()) / BITS) as usize).min(TOP);
    level * SLOTS + ((when >> (level as u32 * BITS)) & MASK) as usize
}
