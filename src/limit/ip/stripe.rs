//! One locked stripe of the table: its entries, the least-recently-used
//! order of the unpinned ones, the ban timers, and its counters.
//!
//! A stripe is what one `Mutex` guards; the table picks one by a keyed hash
//! of the source and never holds two at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::entry::{Entry, Standing};
use super::{IpTableStats, Source};
use crate::timer::{TimerHandle, Wheel};

/// Ban expiry is exact to the nanosecond whatever the tick (the ban's end
/// is compared directly); the wheel only unpins and uncounts an ended ban,
/// at most one tick later.
const BAN_TICK: Duration = Duration::from_millis(1);

/// One stripe's sources; see [`IpTable`](super::IpTable) for the eviction
/// policy it implements.
pub(super) struct Stripe {
    pub(super) entries: HashMap<Source, Entry>,
    /// Exactly the unpinned entries, by `last_use`: the first is the
    /// eviction victim.
    unpinned_by_use: BTreeMap<u64, Source>,
    /// Counts uses; stamps `Entry::last_use`.
    uses: u64,
    capacity: usize,
    /// Made at the first call with a `now`, which becomes its origin.
    ban_timers: Option<Wheel<Source>>,
    /// Reused by `expire_bans`.
    fired: Vec<(TimerHandle, Source)>,
    /// Everything but `sources`, which is `entries.len()`.
    pub(super) counters: IpTableStats,
}

impl Stripe {
    pub(super) fn new(capacity: usize) -> Stripe {
        Stripe {
            entries: HashMap::new(),
            unpinned_by_use: BTreeMap::new(),
            uses: 0,
            capacity,
            ban_timers: None,
            fired: Vec::new(),
            counters: IpTableStats::default(),
        }
    }

    /// Runs `change` on `source`'s entry as one use of it, adding the entry
    /// (made by `fresh`) if it is new; `None` if it is new and there is no
    /// room.
    pub(super) fn use_or_insert<R>(
        &mut self,
        source: Source,
        fresh: impl FnOnce() -> Entry,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        if !self.entries.contains_key(&source) {
            if !self.make_room() {
                return None;
            }
            // Enters unpinned, so it goes into the LRU order like any
            // other unpinned entry; `use_known` takes it from there.
            let mut entry = fresh();
            self.uses += 1;
            entry.last_use = self.uses;
            self.unpinned_by_use.insert(entry.last_use, source);
            self.entries.insert(source, entry);
        }
        self.use_known(source, change)
    }

    /// Runs `change` on `source`'s entry as one use of it, keeping the LRU
    /// order and the ban count true to what `change` did; `None` if the
    /// source is not in the table.
    pub(super) fn use_known<R>(
        &mut self,
        source: Source,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        let entry = self.entries.get_mut(&source)?;
        let (was_pinned, was_in_ban) = (entry.pinned(), entry.in_ban());
        if !was_pinned {
            self.unpinned_by_use.remove(&entry.last_use);
        }
        let result = change(entry);
        self.uses += 1;
        entry.last_use = self.uses;
        if !entry.pinned() {
            self.unpinned_by_use.insert(entry.last_use, source);
        }
        match (was_in_ban, entry.in_ban()) {
            (false, true) => self.counters.bans_active += 1,
            (true, false) => self.counters.bans_active -= 1,
            _ => {}
        }
        Some(result)
    }

    /// Evicts least recently used unpinned entries until one more fits;
    /// `false` if every entry is pinned.
    fn make_room(&mut self) -> bool {
        while self.entries.len() >= self.capacity {
            let Some((last_use, victim)) = self.unpinned_by_use.pop_first() else {
                return false;
            };
            // Always true unless a panic interrupted a use half-way; then
            // the stale index key is just dropped.
            let evictable = self
                .entries
                .get(&victim)
                .is_some_and(|entry| entry.last_use == last_use && !entry.pinned());
            if evictable {
                self.entries.remove(&victim);
                self.counters.evictions += 1;
            }
        }
        true
    }

    pub(super) fn arm_ban_timer(&mut self, source: Source, until: Instant) {
        if let Some(timers) = &mut self.ban_timers {
            timers.arm(until, source);
        }
    }

    /// Clears the bans that ended by `now`: they stop counting as active,
    /// and a source with no open connection becomes evictable again, at
    /// its old place in the LRU order (an ended ban is not a use).
    pub(super) fn expire_bans(&mut self, now: Instant) {
        let timers = self
            .ban_timers
            .get_or_insert_with(|| Wheel::new(now, BAN_TICK));
        if timers.is_empty() {
            return;
        }
        timers.expire(now, &mut self.fired);
        for (_, source) in self.fired.drain(..) {
            let Some(entry) = self.entries.get_mut(&source) else {
                continue;
            };
            match entry.standing {
                Standing::Banned { until } if until <= now => {
                    entry.standing = Standing::Clean;
                    self.counters.bans_active -= 1;
                    if entry.open == 0 {
                        self.unpinned_by_use.insert(entry.last_use, source);
                    }
                }
                // A later ban than this timer's (an ended ban replaced
                // before its timer fired), or one whose timer fired early
                // because another thread's `now` ran ahead: wait for it.
                Standing::Banned { until } => {
                    timers.arm(until, source);
                }
                // Already cleared by a strike after the ban ended.
                Standing::Clean | Standing::Striking { .. } => {}
            }
        }
    }
}
