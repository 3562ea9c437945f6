//! Log suppression: one line per key per interval, saying how many were
//! held back.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::mem;
use std::time::{Duration, Instant};

/// Decides when to log an event that can repeat without end (a refused
/// connection, a malformed datagram) for a key (usually a
/// [`Source`](super::Source)): the first event of a key logs, then that key
/// stays quiet until `interval` has passed since its last logged line, and
/// the next line carries the count of events suppressed in between.
///
/// It only decides; the caller writes the line. It is meant to be owned by
/// one shard (`&mut self`, no lock), so a source hitting several shards
/// gets up to one line per shard per interval.
///
/// # Bound
///
/// It remembers at most `capacity` keys. A new key arriving when it is full
/// takes the place of the key logged longest ago, if that one's interval
/// has passed (it would log on its next event anyway; a suppressed count
/// it was still holding is lost). If every remembered key logged within the
/// interval, the new key is not remembered and its event is suppressed,
/// counted in [`untracked`](Suppressor::untracked): a flood of new keys
/// produces at most `capacity` lines per interval. Both steps are
/// O(log capacity).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use sockloop::limit::{Source, Suppressor};
///
/// let mut refusals = Suppressor::new(Duration::from_secs(10), 1024);
/// let peer = Source::from("192.0.2.7".parse::<std::net::IpAddr>().unwrap());
/// let t0 = Instant::now();
/// assert_eq!(refusals.note(peer, t0), Some(0)); // log it
/// assert_eq!(refusals.note(peer, t0 + Duration::from_secs(1)), None);
/// assert_eq!(refusals.note(peer, t0 + Duration::from_secs(2)), None);
/// // Log again, with "2 more suppressed".
/// assert_eq!(refusals.note(peer, t0 + Duration::from_secs(10)), Some(2));
/// ```
#[derive(Debug)]
pub struct Suppressor<K> {
    interval: Duration,
    capacity: usize,
    keys: HashMap<K, Quiet>,
    /// Every remembered key by `Quiet::order`: the first logged longest ago.
    by_last_line: BTreeMap<u64, K>,
    /// Counts logged lines; stamps `Quiet::order`.
    lines: u64,
    untracked: u64,
}

#[derive(Debug)]
struct Quiet {
    logged_at: Instant,
    suppressed: u64,
    order: u64,
}

impl<K: Hash + Eq + Clone> Suppressor<K> {
    /// One line per key per `interval`, remembering at most `capacity` keys
    /// (at least 1).
    pub fn new(interval: Duration, capacity: usize) -> Suppressor<K> {
        Suppressor {
            interval,
            capacity: capacity.max(1),
            keys: HashMap::new(),
            by_last_line: BTreeMap::new(),
            lines: 0,
            untracked: 0,
        }
    }

    /// Notes one event for `key` at `now`: `Some(suppressed)` if a line
    /// should be logged now, `suppressed` being the events held back since
    /// the key's previous line (0 for its first), `None` to stay quiet.
    pub fn note(&mut self, key: K, now: Instant) -> Option<u64> {
        if let Some(quiet) = self.keys.get_mut(&key) {
            if now.saturating_duration_since(quiet.logged_at) < self.interval {
                quiet.suppressed += 1;
                return None;
            }
            self.by_last_line.remove(&quiet.order);
            self.lines += 1;
            quiet.order = self.lines;
            quiet.logged_at = now;
            self.by_last_line.insert(quiet.order, key);
            return Some(mem::take(&mut quiet.suppressed));
        }
        if self.keys.len() >= self.capacity && !self.forget_oldest(now) {
            self.untracked += 1;
            return None;
        }
        self.lines += 1;
        let quiet = Quiet {
            logged_at: now,
            suppressed: 0,
            order: self.lines,
        };
        self.by_last_line.insert(quiet.order, key.clone());
        self.keys.insert(key, quiet);
        Some(0)
    }

    /// Events suppressed because their key was new and could not be
    /// remembered (see the bound above).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets the key logged longest ago if its interval has passed.
    fn forget_oldest(&mut self, now: Instant) -> bool {
        let Some((_, oldest)) = self.by_last_line.first_key_value() else {
            return false;
        };
        let expired = self
            .keys
            .get(oldest)
            .is_none_or(|quiet| now.saturating_duration_since(quiet.logged_at) >= self.interval);
        if expired {
            if let Some((_, oldest)) = self.by_last_line.pop_first() {
                self.keys.remove(&oldest);
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const NS: Duration = Duration::from_nanos(1);

    #[test]
    fn logs_first_then_quiet_until_the_interval_then_the_count() {
        let mut suppressor = Suppressor::new(10 * SEC, 16);
        let t0 = Instant::now();
        assert_eq!(suppressor.note("a", t0), Some(0));
        for n in 0..7 {
            assert_eq!(suppressor.note("a", t0 + n * SEC), None);
        }
        // Another key is independent.
        assert_eq!(suppressor.note("b", t0 + 3 * SEC), Some(0));
        assert_eq!(suppressor.note("a", t0 + 10 * SEC - NS), None);
        assert_eq!(suppressor.note("a", t0 + 10 * SEC), Some(8));
        // The interval restarts at the line just logged.
        assert_eq!(suppressor.note("a", t0 + 20 * SEC - NS), None);
        assert_eq!(suppressor.note("a", t0 + 20 * SEC), Some(1));
        assert_eq!(suppressor.note("a", t0 + 60 * SEC), Some(0));
        assert_eq!(suppressor.note("b", t0 + 60 * SEC), Some(0));
    }

    #[test]
    fn bounded_by_forgetting_expired_keys_or_suppressing_new_ones() {
        let mut suppressor = Suppressor::new(10 * SEC, 2);
        let t0 = Instant::now();
        assert_eq!(suppressor.note(1, t0), Some(0));
        assert_eq!(suppressor.note(2, t0 + SEC), Some(0));
        // Full, and both logged within the interval: 3 is suppressed.
        assert_eq!(suppressor.note(3, t0 + 2 * SEC), None);
        assert_eq!(suppressor.untracked(), 1);
        assert_eq!(suppressor.len(), 2);
        // At t0 + 10 s key 1's interval is over: 3 takes its place.
        assert_eq!(suppressor.note(3, t0 + 10 * SEC), Some(0));
        assert_eq!(suppressor.note(3, t0 + 10 * SEC), None);
        assert_eq!(suppressor.note(1, t0 + 10 * SEC), None);
        assert_eq!(suppressor.untracked(), 2);
        // Key 2 logs again, so 3 is the oldest line at 20 s.
        assert_eq!(suppressor.note(2, t0 + 11 * SEC), Some(0));
        assert_eq!(suppressor.note(1, t0 + 20 * SEC), Some(0));
        assert_eq!(suppressor.note(2, t0 + 20 * SEC), None);
        assert_eq!(suppressor.len(), 2);
    }

    #[test]
    fn stays_bounded_under_a_flood_of_keys() {
        let mut suppressor = Suppressor::new(SEC, 100);
        let t0 = Instant::now();
        let mut lines = 0;
        for n in 0..100_000_u32 {
            let now = t0 + Duration::from_micros(u64::from(n) * 100); // 10 s in all
            lines += u32::from(suppressor.note(n, now).is_some());
            assert!(suppressor.len() <= 100);
        }
        // At most 100 keys' first lines per second, for 10 seconds.
        assert_eq!(lines, 1000);
        assert_eq!(suppressor.untracked(), 99_000);
    }
}
