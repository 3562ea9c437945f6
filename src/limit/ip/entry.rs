//! One source's state in the table: open connections, its connect-rate
//! bucket, and its standing (clean, striking, banned).
//!
//! Pure per-source rules; the stripe around it keeps the LRU order and the
//! counters, and [`IpTable`](super::IpTable) takes the lock.

use std::time::{Duration, Instant};

use super::{Admission, IpLimits, Refusal, Source, StrikeOutcome};
use crate::limit::bucket::TokenBucket;

/// One source's state.
pub(super) struct Entry {
    /// The stripe's use counter at this source's last use: its place in the
    /// LRU order (and its key in `Stripe::unpinned_by_use` while unpinned).
    pub(super) last_use: u64,
    /// `Some` iff the limits have a connect rate.
    connects: Option<TokenBucket>,
    pub(super) standing: Standing,
    /// Open connections.
    pub(super) open: u32,
}

/// Strikes and bans: a source is in one state at a time, which keeps the
/// entry small (a ban resets strikes, so the two never coexist).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    Clean,
    Striking {
        strikes: u32,
        window_ends: Instant,
    },
    /// Set by a strike; cleared by the stripe's ban timer once `until` has
    /// passed, or by a strike arriving after `until` but before the timer.
    Banned {
        until: Instant,
    },
}

impl Entry {
    pub(super) fn new(limits: &IpLimits, now: Instant) -> Entry {
        Entry {
            last_use: 0,
            connects: limits
                .connect_rate
                .as_ref()
                .map(|rate| TokenBucket::new(rate, now)),
            standing: Standing::Clean,
            open: 0,
        }
    }

    /// [`IpTable::admit`] for this source, minus the bookkeeping.
    pub(super) fn admit(
        &mut self,
        source: Source,
        limits: &IpLimits,
        now: Instant,
    ) -> Result<Admission, Refusal> {
        if let Some(until_in) = self.ban_left(now) {
            return Err(Refusal::Banned { until_in });
        }
        if let (Some(rate), Some(bucket)) = (&limits.connect_rate, &mut self.connects) {
            if !bucket.take(rate, now) {
                return Err(Refusal::ConnectRate);
            }
        }
        let limit = limits.max_conns_per_ip;
        if limit != 0 && self.open >= limit {
            return Err(Refusal::TooManyFromIp { limit });
        }
        self.open += 1;
        Ok(Admission { source })
    }

    /// [`IpTable::strike`] for this source, minus the bookkeeping.
    pub(super) fn strike(&mut self, limits: &IpLimits, now: Instant) -> StrikeOutcome {
        if let Some(until_in) = self.ban_left(now) {
            return StrikeOutcome::AlreadyBanned { until_in };
        }
        let (strikes, window_ends) = match self.standing {
            Standing::Striking {
                strikes,
                window_ends,
            } if now < window_ends => (strikes + 1, window_ends),
            // No window open, or it ended, or a ban ended (if its timer is
            // still pending, it will find the source no longer banned).
            _ => (1, now + limits.strike_window),
        };
        let bans = limits.ban_after != 0 && !limits.ban_for.is_zero();
        if bans && strikes >= limits.ban_after {
            self.standing = Standing::Banned {
                until: now + limits.ban_for,
            };
            StrikeOutcome::Banned {
                until_in: limits.ban_for,
            }
        } else {
            self.standing = Standing::Striking {
                strikes,
                window_ends,
            };
            StrikeOutcome::Counted { strikes }
        }
    }

    /// The time left on the ban at `now`; `None` if not banned then.
    pub(super) fn ban_left(&self, now: Instant) -> Option<Duration> {
        match self.standing {
            Standing::Banned { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    pub(super) fn in_ban(&self) -> bool {
        matches!(self.standing, Standing::Banned { .. })
    }

    /// Pinned sources are never evicted.
    pub(super) fn pinned(&self) -> bool {
        self.open > 0 || self.in_ban()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Source>(), 9);
        assert_eq!(std::mem::size_of::<Standing>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        assert_eq!(std::mem::size_of::<(Source, Entry)>(), 80);
    }
}
