//! One stripe's bans, bounded apart from its sources.
//!
//! Bans used to live in the source entries and pin them, so enough banned
//! addresses (80,000 sources, 10 bad lines each) filled the table and every
//! new address was refused until the bans ran out. Here a ban is a small
//! record in its own bounded list: when the list is full the ban ending
//! soonest is dropped (the offender gets back in a little early, nobody
//! else is locked out), and when many sources of one block are banned the
//! whole block is banned with one record ([`Prefix`]: an IPv4 /24 or an
//! IPv6 /48), so one attacker's many addresses cost one slot.
//!
//! Bans end exactly at their end instant; ended ones are dropped in order
//! of end by whatever call comes next (the list is ordered by end).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::source::{Prefix, Source};

/// What is banned: one source, or a whole block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) enum Banned {
    Source(Source),
    Prefix(Prefix),
}

/// What [`Bans::ban`] did besides banning the source.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct BanEffects {
    /// The list was full: the ban ending soonest was dropped.
    pub(super) evicted: bool,
    /// This ban was the one that banned the source's whole block.
    pub(super) prefix_banned: bool,
}

pub(super) struct Bans {
    /// Each ban's end and its place in `by_end`.
    ends: HashMap<Banned, (Instant, u64)>,
    /// Every ban by end, then by when it was made: the first ends first.
    by_end: BTreeMap<(Instant, u64), Banned>,
    /// Sources banned now, per block, for aggregation.
    per_prefix: HashMap<Prefix, u32>,
    capacity: usize,
    made: u64,
}

impl Bans {
    /// At most `capacity` bans (at least 1).
    pub(super) fn new(capacity: usize) -> Bans {
        Bans {
            ends: HashMap::new(),
            by_end: BTreeMap::new(),
            per_prefix: HashMap::new(),
            capacity: capacity.max(1),
            made: 0,
        }
    }

    /// Bans in the list (sources and blocks).
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Block bans in the list.
    pub(super) fn prefixes(&self) -> usize {
        self.ends.len() - self.per_prefix.values().map(|&n| n as usize).sum::<usize>()
    }

    /// Drops the bans that ended by `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.by_end.first_entry() {
            if entry.key().0 > now {
                return;
            }
            let banned = entry.remove();
            self.forget(banned);
        }
    }

    /// How much longer `source` is banned at `now`, by its own ban or its
    /// block's; `None` if not.
    pub(super) fn ban_left(&self, source: Source, now: Instant) -> Option<Duration> {
        let end = |banned| self.ends.get(&banned).map(|&(until, _)| until);
        let until = end(Banned::Source(source)).max(end(Banned::Prefix(source.prefix())))?;
        (now < until).then(|| until - now)
    }

    /// Bans `source` until `until`; with `prefix_after` (not 0) sources of
    /// its block banned at once, the block is banned too, as long.
    pub(super) fn ban(&mut self, source: Source, until: Instant, prefix_after: u32) -> BanEffects {
        let mut effects = BanEffects {
            evicted: self.insert(Banned::Source(source), until),
            ..BanEffects::default()
        };
        let prefix = source.prefix();
        let banned_in_block = self.per_prefix.get(&prefix).copied().unwrap_or(0);
        let block = Banned::Prefix(prefix);
        if prefix_after != 0 && banned_in_block >= prefix_after && !self.ends.contains_key(&block) {
            effects.evicted |= self.insert(block, until);
            effects.prefix_banned = true;
        }
        effects
    }

    /// Adds or extends one ban; true if another was dropped for room.
    fn insert(&mut self, banned: Banned, until: Instant) -> bool {
        if let Some((old_until, made)) = self.ends.remove(&banned) {
            self.by_end.remove(&(old_until, made));
            self.uncount(banned);
        }
        let mut evicted = false;
        while self.ends.len() >= self.capacity {
            let Some((_, soonest)) = self.by_end.pop_first() else {
                break;
            };
            self.forget(soonest);
            evicted = true;
        }
        self.made += 1;
        self.ends.insert(banned, (until, self.made));
        self.by_end.insert((until, self.made), banned);
        if let Banned::Source(source) = banned {
            *self.per_prefix.entry(source.prefix()).or_default() += 1;
        }
        evicted
    }

    /// Removes a ban already taken out of `by_end`.
    fn forget(&mut self, banned: Banned) {
        self.ends.remove(&banned);
        self.uncount(banned);
    }

    fn uncount(&mut self, banned: Banned) {
        if let Banned::Source(source) = banned {
            let prefix = source.prefix();
            if let Some(count) = self.per_prefix.get_mut(&prefix) {
                *count -= 1;
                if *count == 0 {
                    self.per_prefix.remove(&prefix);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn source(text: &str) -> Source {
        Source::from(text.parse::<std::net::IpAddr>().unwrap())
    }

    #[test]
    fn a_ban_ends_exactly_at_its_end() {
        let t0 = Instant::now();
        let mut bans = Bans::new(4);
        let a = source("192.0.2.1");
        bans.ban(a, t0 + SEC, 0);
        assert_eq!(bans.ban_left(a, t0), Some(SEC));
        bans.expire(t0 + SEC - Duration::from_nanos(1));
        assert_eq!(
            bans.ban_left(a, t0 + SEC - Duration::from_nanos(1)),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(bans.ban_left(a, t0 + SEC), None);
        bans.expire(t0 + SEC);
        assert_eq!(bans.len(), 0);
    }

    #[test]
    fn a_full_list_drops_the_ban_ending_soonest() {
        let t0 = Instant::now();
        let mut bans = Bans::new(2);
        let (a, b, c) = (
            source("192.0.2.1"),
            source("198.51.100.1"),
            source("203.0.113.1"),
        );
        assert!(!bans.ban(a, t0 + 2 * SEC, 0).evicted);
        assert!(!bans.ban(b, t0 + SEC, 0).evicted);
        assert!(bans.ban(c, t0 + 3 * SEC, 0).evicted);
        assert_eq!(bans.len(), 2);
        assert_eq!(bans.ban_left(b, t0), None); // ended soonest: dropped
        assert_eq!(bans.ban_left(a, t0), Some(2 * SEC));
        assert_eq!(bans.ban_left(c, t0), Some(3 * SEC));
        // Banning again extends, in place: no eviction.
        assert!(!bans.ban(a, t0 + 4 * SEC, 0).evicted);
        assert_eq!(bans.ban_left(a, t0), Some(4 * SEC));
    }

    #[test]
    fn many_bans_in_one_block_ban_the_block() {
        let t0 = Instant::now();
        let mut bans = Bans::new(100);
        for n in 1..=3 {
            let effects = bans.ban(source(&format!("192.0.2.{n}")), t0 + SEC, 3);
            assert_eq!(effects.prefix_banned, n == 3, "{n}");
        }
        assert_eq!((bans.len(), bans.prefixes()), (4, 1));
        // The block's ban covers an address never banned itself...
        assert_eq!(bans.ban_left(source("192.0.2.200"), t0), Some(SEC));
        // ...and no other block.
        assert_eq!(bans.ban_left(source("192.0.3.1"), t0), None);
        // IPv6: per /48.
        for n in 1..=3 {
            bans.ban(source(&format!("2001:db8:1:{n}::1")), t0 + SEC, 3);
        }
        assert_eq!(bans.ban_left(source("2001:db8:1:ffff::9"), t0), Some(SEC));
        assert_eq!(bans.ban_left(source("2001:db8:2::1"), t0), None);
        bans.expire(t0 + SEC);
        assert_eq!((bans.len(), bans.prefixes()), (0, 0));
    }
}
