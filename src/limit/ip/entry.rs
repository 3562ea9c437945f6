//! One source's state in the table: open connections, its connect-rate
//! bucket, and its strikes. (Its bans live apart, in `bans.rs`.)
//!
//! Pure per-source rules; the stripe around it keeps the LRU order and the
//! counters, and [`IpTable`](super::IpTable) takes the lock.

use std::time::Instant;

use super::{Admission, IpLimits, Refusal, Source};
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

/// Strikes: none, or some within a window (a ban resets them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    Clean,
    Striking { strikes: u32, window_ends: Instant },
}

/// What a strike did to a source's standing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Struck {
    /// Counted: this many strikes in the window.
    Counted(u32),
    /// The `ban_after`-th: the caller bans the source; strikes are reset.
    Ban,
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
        Ok(Admission {
            source,
            tracked: true,
        })
    }

    /// [`IpTable::strike`] for this source (not banned now), minus the
    /// bookkeeping.
    pub(super) fn strike(&mut self, limits: &IpLimits, now: Instant) -> Struck {
        let (strikes, window_ends) = match self.standing {
            Standing::Striking {
                strikes,
                window_ends,
            } if now < window_ends => (strikes + 1, window_ends),
            // No window open, or it ended.
            _ => (1, now + limits.strike_window),
        };
        let bans = limits.ban_after != 0 && !limits.ban_for.is_zero();
        if bans && strikes >= limits.ban_after {
            self.standing = Standing::Clean;
            Struck::Ban
        } else {
            self.standing = Standing::Striking {
                strikes,
                window_ends,
            };
            Struck::Counted(strikes)
        }
    }

    /// Pinned sources (with an open connection) are never evicted.
    pub(super) fn pinned(&self) -> bool {
        self.open > 0
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
