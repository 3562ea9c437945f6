//! One locked stripe of the table: its entries, the least-recently-used
//! order of the unpinned ones, its bans, and its counters.
//!
//! A stripe is what one `Mutex` guards; the table picks one by a keyed hash
//! of the source's block ([`Prefix`](super::source::Prefix)), so that a
//! block's bans can be counted under one lock, and never holds two at once.

use std::collections::{BTreeMap, HashMap};

use super::bans::Bans;
use super::entry::Entry;
use super::{IpTableStats, Source};

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
    /// Bounded apart from the entries: bans never pin one.
    pub(super) bans: Bans,
    /// Everything but `sources` and the ban gauges, which are read off the
    /// maps.
    pub(super) counters: IpTableStats,
}

impl Stripe {
    pub(super) fn new(capacity: usize, ban_capacity: usize) -> Stripe {
        Stripe {
            entries: HashMap::new(),
            unpinned_by_use: BTreeMap::new(),
            uses: 0,
            capacity,
            bans: Bans::new(ban_capacity),
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
    /// order true to what `change` did; `None` if the source is not in the
    /// table.
    pub(super) fn use_known<R>(
        &mut self,
        source: Source,
        change: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        let entry = self.entries.get_mut(&source)?;
        if !entry.pinned() {
            self.unpinned_by_use.remove(&entry.last_use);
        }
        let result = change(entry);
        self.uses += 1;
        entry.last_use = self.uses;
        if !entry.pinned() {
            self.unpinned_by_use.insert(entry.last_use, source);
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
}
