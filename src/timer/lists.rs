//! The wheel's storage: timer entries in one slab, threaded into
//! doubly linked lists (one per slot, plus the overdue list) by `u32` keys.
//!
//! Intrusive links keep arming and cancelling O(1) and allocation-free in
//! steady state; a slot's bit in `occupied` says whether its list is empty,
//! so finding the next due slot never walks a list.

use std::num::{NonZeroU16, NonZeroU32};

use super::levels::{OVERDUE, SLOTS, TOP};
use super::wheel::Wheel;

/// Null link; keys are `u32` to keep entries small.
pub(super) const NIL: u32 = u32::MAX;

pub(super) struct Entry<T> {
    /// Deadline in ticks since `origin`, rounded up.
    pub(super) when: u64,
    pub(super) value: T,
    pub(super) gen: NonZeroU32,
    pub(super) prev: u32,
    pub(super) next: u32,
    /// The list this entry is linked into (see [`ListId`]), so `cancel`
    /// can fix up the list's head, tail and bit without recomputing it.
    pub(super) list: ListId,
}

/// A list index, stored plus one: the zero niche lets the slab fold its
/// vacant/occupied tag into the entry, 40 bytes down to 32 for a `u64`
/// value, which is fewer cache misses when cascades walk the lists.
#[derive(Clone, Copy)]
pub(super) struct ListId(NonZeroU16);

impl ListId {
    pub(super) fn new(list: usize) -> Self {
        // `list <= OVERDUE`, far below `u16::MAX`.
        ListId(NonZeroU16::MIN.saturating_add(list as u16))
    }

    pub(super) fn get(self) -> usize {
        usize::from(self.0.get() - 1)
    }
}

#[derive(Clone, Copy)]
pub(super) struct List {
    pub(super) head: u32,
    pub(super) tail: u32,
}

pub(super) const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

impl<T> Wheel<T> {
    /// Detaches a whole list, returning its head.
    pub(super) fn take(&mut self, list: usize) -> u32 {
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

    pub(super) fn push_back(&mut self, list: usize, key: u32, when: u64) {
        let tail = self.lists[list].tail;
        let entry = &mut self.entries[key as usize];
        entry.prev = tail;
        entry.next = NIL;
        entry.list = ListId::new(list);
        self.link_after(list, tail, key, when);
    }

    /// Second half of appending `key` (whose own links are already set).
    pub(super) fn link_after(&mut self, list: usize, tail: u32, key: u32, when: u64) {
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

    pub(super) fn unlink(&mut self, key: u32) {
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
