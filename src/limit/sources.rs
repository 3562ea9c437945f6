//! Per-source token buckets for datagrams: a bounded table, first in
//! first out.
//!
//! A flood of spoofed sources would fill any table, so the bound is the
//! policy: beyond `capacity` the oldest source is forgotten, and if it
//! comes back it starts with a full bucket again. A real sender keeps its
//! entry; a spoofed one costs one slot for a while and nothing more.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{Rate, Source, TokenBucket};

/// Datagram rates per source.
///
/// ```
/// use std::time::Instant;
/// use sockloop::limit::{Rate, SourceRates};
///
/// let now = Instant::now();
/// let mut rates = SourceRates::new(Rate::per_second(2), 1024);
/// let ip = "192.0.2.1".parse().unwrap();
/// assert!(rates.take(ip, now) && rates.take(ip, now));
/// assert!(!rates.take(ip, now)); // the third in the same instant
/// assert!(rates.take("192.0.2.2".parse().unwrap(), now)); // another source
/// ```
#[derive(Debug)]
pub struct SourceRates {
    rate: Rate,
    buckets: HashMap<Source, TokenBucket>,
    /// Sources in the order they were first seen, for eviction.
    order: VecDeque<Source>,
    capacity: usize,
    evictions: u64,
}

impl SourceRates {
    /// Buckets of `rate` for at most `capacity` sources (at least 1).
    pub fn new(rate: Rate, capacity: usize) -> SourceRates {
        SourceRates {
            rate,
            buckets: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            evictions: 0,
        }
    }

    /// The rate each source gets.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token for one datagram from `ip`; false: over its rate.
    pub fn take(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        let source = Source::from(ip);
        if let Some(bucket) = self.buckets.get_mut(&source) {
            return bucket.take(&self.rate, now);
        }
        if self.buckets.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.buckets.remove(&oldest);
                self.evictions += 1;
            }
        }
        let mut bucket = TokenBucket::new(&self.rate, now);
        let taken = bucket.take(&self.rate, now);
        self.buckets.insert(source, bucket);
        self.order.push_back(source);
        taken
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Sources forgotten to stay within the capacity.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;

    #[test]
    fn refills_at_the_rate() {
        let t = Instant::now();
        let mut rates = SourceRates::new(Rate::per_second(10).with_burst(2), 8);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(rates.take(ip, t) && rates.take(ip, t) && !rates.take(ip, t));
        assert!(!rates.take(ip, t + Duration::from_millis(99)));
        assert!(rates.take(ip, t + Duration::from_millis(100)));
    }

    #[test]
    fn a_flood_of_sources_stays_within_the_capacity() {
        let t = Instant::now();
        let mut rates = SourceRates::new(Rate::per_second(1), 4096);
        for n in 0..100_000u32 {
            assert!(rates.take(IpAddr::V4(Ipv4Addr::from(n)), t));
            assert!(rates.len() <= 4096);
        }
        assert_eq!((rates.len(), rates.evictions()), (4096, 100_000 - 4096));
    }
}
