//! Per-source admission, strikes and bans: one bounded table shared by
//! every shard.
//!
//! The accept path asks [`IpTable::admit`] before a connection gets a slab
//! slot, and hands the [`Admission`] back to [`IpTable::release`] when the
//! connection closes. Protocol errors are reported with
//! [`IpTable::strike`]; enough of them within a window ban the source.
//!
//! The table is striped: a source's stripe is chosen by a keyed hash of its
//! address and each stripe is a `Mutex`, so shards accepting from
//! different sources rarely meet on a lock, and a call holds one lock for
//! a few hash-map and B-tree operations, never across I/O.

//!
//! Inside: [`Source`] and [`Prefix`] (what is counted and banned,
//! `source.rs`), one source's state (`entry.rs`), one stripe's bans
//! (`bans.rs`), one locked stripe with its LRU order (`stripe.rs`); this
//! file holds the table and its public types.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::bucket::{Rate, TokenBucket};
use entry::{Entry, Struck};
use stripe::Stripe;

mod bans;
mod entry;
mod source;
mod stripe;
#[cfg(test)]
mod tests;

pub use super::refusal::Refusal;
pub use source::{Prefix, Source};

/// At most this many stripes (locks); fewer for small tables, see
/// [`MIN_STRIPE`].
const MAX_STRIPES: usize = 16;
/// A stripe holds at least this many sources (unless the whole table is
/// smaller), so small tables keep one LRU order instead of many tiny ones.
const MIN_STRIPE: usize = 64;
/// Strike windows and bans are capped at about a century, so that
/// `now + duration` can never overflow an `Instant`.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The policy an [`IpTable`] enforces. `Default` is what `serve` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimits {
    /// Open connections allowed per source (256); 0 means no cap.
    pub max_conns_per_ip: u32,
    /// Connection attempts per source, a token bucket (`50/s:100`);
    /// `None` means no limit. Every attempt that gets past the ban check
    /// takes a token, including one then refused for too many connections.
    pub connect_rate: Option<Rate>,
    /// Strikes within one window that ban the source (10); 0 never bans.
    pub ban_after: u32,
    /// The strike window (60 s). It opens at a source's first strike and
    /// counts strikes for this long; a strike at or after its end opens a
    /// new window with a count of 1. (So strikes straddling two windows
    /// are not added up: up to `2 × (ban_after − 1)` strikes can fall
    /// within one `strike_window` of each other without a ban. In
    /// exchange the state is one count and one instant, not a list of
    /// strike times.) Capped at 100 years.
    pub strike_window: Duration,
    /// How long a ban lasts (60 s); zero never bans. Capped at 100 years.
    pub ban_for: Duration,
    /// The most sources the table remembers (65,536), its memory bound;
    /// at least 1. See [`IpTable`] for what happens when it is reached.
    pub max_sources: usize,
    /// The most bans held at once (16,384), apart from `max_sources`;
    /// beyond, the ban ending soonest is dropped.
    pub max_bans: usize,
    /// Banned sources of one block (an IPv4 /24, an IPv6 /48) at once that
    /// ban the whole block, for as long (16); 0 never bans a block.
    pub ban_block_after: u32,
    /// New sources admitted without being tracked while the table is full
    /// of connected ones (`1000/s:1000` over the whole table); `None`
    /// refuses them instead.
    pub untracked_rate: Option<Rate>,
}

impl Default for IpLimits {
    /// 256 connections per source, 50 connection attempts a second with
    /// bursts of 100, a ban of 60 s after 10 strikes within 60 s (a block's
    /// after 16 of its sources are banned), 65,536 sources, 16,384 bans,
    /// 1,000 untracked admissions a second once the table is full.
    fn default() -> IpLimits {
        IpLimits {
            max_conns_per_ip: 256,
            connect_rate: Some(Rate::per_second(50).with_burst(100)),
            ban_after: 10,
            strike_window: Duration::from_secs(60),
            ban_for: Duration::from_secs(60),
            max_sources: 65_536,
            max_bans: 16_384,
            ban_block_after: 16,
            untracked_rate: Some(Rate::per_second(1000)),
        }
    }
}

impl IpLimits {
    /// No per-source cap, no connect rate, no bans: for a load test from
    /// one machine (strikes are still counted, within `max_sources`).
    ///
    /// ```
    /// let open = sockloop::limit::IpLimits::unlimited();
    /// assert_eq!((open.max_conns_per_ip, open.connect_rate, open.ban_after), (0, None, 0));
    /// ```
    pub fn unlimited() -> IpLimits {
        IpLimits {
            max_conns_per_ip: 0,
            connect_rate: None,
            ban_after: 0,
            ..IpLimits::default()
        }
    }
}

/// Proof that [`IpTable::admit`] counted a connection. Keep it with the
/// connection and give it back to [`IpTable::release`] when the connection
/// closes, exactly once: it cannot be copied, so it cannot be released
/// twice. Dropping it instead leaves the connection counted forever (and
/// its source pinned in the table).
#[must_use = "give the admission back to IpTable::release when the connection closes"]
#[derive(Debug, PartialEq, Eq)]
pub struct Admission {
    source: Source,
    /// False for a source admitted while the table was full: nothing to
    /// uncount.
    tracked: bool,
}

impl Admission {
    /// The source the connection was counted against.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Whether the table counted it (false: admitted while it was full).
    pub(crate) fn is_tracked(&self) -> bool {
        self.tracked
    }

    /// An admission taken apart by a holder that keeps its source
    /// elsewhere (a connection keeps its peer address), put back together
    /// for [`IpTable::release`]: `source` and `tracked` must be the ones
    /// [`IpTable::admit`] gave.
    pub(crate) fn reassemble(source: Source, tracked: bool) -> Admission {
        Admission { source, tracked }
    }
}

/// What a [`IpTable::strike`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrikeOutcome {
    /// Counted: the source has this many strikes in its current window.
    Counted {
        /// Strikes in the window, this one included.
        strikes: u32,
    },
    /// This strike was the `ban_after`-th: the source is now banned for
    /// `until_in` (the full `ban_for`) and its strikes are reset.
    Banned {
        /// [`IpLimits::ban_for`].
        until_in: Duration,
    },
    /// The source was already banned; the strike is not counted.
    AlreadyBanned {
        /// Until the ban ends.
        until_in: Duration,
    },
    /// The source is new and the table has no room for it (see
    /// [`Refusal::Busy`]); nothing was recorded.
    Untracked,
}

/// Counters of an [`IpTable`], summed over its stripes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpTableStats {
    /// Sources remembered now (at most [`IpLimits::max_sources`]).
    pub sources: usize,
    /// Bans in force now, of sources and of blocks. A ban that just ended
    /// counts until the next call touching its stripe.
    pub bans_active: usize,
    /// Of `bans_active`, bans of whole blocks.
    pub block_bans_active: usize,
    /// Connections admitted.
    pub admitted: u64,
    /// Connections refused: [`Refusal::Banned`].
    pub refused_banned: u64,
    /// Connections refused: [`Refusal::ConnectRate`].
    pub refused_connect_rate: u64,
    /// Connections refused: [`Refusal::TooManyFromIp`].
    pub refused_too_many: u64,
    /// Connections refused: [`Refusal::Busy`].
    pub refused_table_full: u64,
    /// Strikes counted (not those against banned or untracked sources).
    pub strikes: u64,
    /// Strikes against new sources the full table could not take.
    pub strikes_untracked: u64,
    /// Bans imposed.
    pub bans: u64,
    /// Sources forgotten to make room for new ones.
    pub evictions: u64,
    /// Bans dropped early to make room for new ones.
    pub ban_evictions: u64,
    /// Connections admitted untracked, the table being full.
    pub admitted_untracked: u64,
}

impl IpTableStats {
    fn add(&mut self, other: &IpTableStats) {
        self.sources += other.sources;
        self.bans_active += other.bans_active;
        self.block_bans_active += other.block_bans_active;
        self.admitted += other.admitted;
        self.refused_banned += other.refused_banned;
        self.refused_connect_rate += other.refused_connect_rate;
        self.refused_too_many += other.refused_too_many;
        self.refused_table_full += other.refused_table_full;
        self.strikes += other.strikes;
        self.strikes_untracked += other.strikes_untracked;
        self.bans += other.bans;
        self.evictions += other.evictions;
        self.ban_evictions += other.ban_evictions;
        self.admitted_untracked += other.admitted_untracked;
    }
}

/// The per-source table: open-connection counts, connect-rate buckets,
/// strikes and bans for every source ([`Source`]: an IPv4 address or an
/// IPv6 /64) seen recently, shared by all shards (`&self` methods; it is
/// `Sync`).
///
/// It never reads the clock: every call that needs time takes the caller's
/// `now`. Calls from different threads may carry slightly out-of-order
/// readings; a bucket ignores a `now` older than its last update, and a
/// ban or window compares against whatever `now` the call brings.
///
/// # Bounds and eviction
///
/// The table holds at most [`IpLimits::max_sources`] sources, split
/// evenly over up to 16 stripes by a keyed hash of their block (an IPv4
/// /24, an IPv6 /48), so one stripe may fill, and start evicting, a little
/// before the whole table does. When a new source arrives at a full
/// stripe, the stripe forgets its **least recently used** source among
/// those that may be forgotten: a source with an open connection is
/// *pinned* and is never evicted, so a flood of new sources cannot lose
/// the count of a connected one. A forgotten source loses only its
/// connect-rate bucket and strikes. If every source in the stripe is
/// connected, the new source is admitted *untracked* (no cap, no bucket,
/// no strikes) within the table-wide [`IpLimits::untracked_rate`], and
/// refused beyond it ([`Refusal::Busy`]). Eviction is O(log n):
/// unpinned sources are kept in a `BTreeMap` ordered by last use.
///
/// Bans are kept apart, at most [`IpLimits::max_bans`] (split over the
/// stripes), so bans never crowd out new sources: a full ban list drops
/// the ban ending soonest. Once [`IpLimits::ban_block_after`] sources of
/// one block are banned at once, the block itself is banned (one record
/// for all of an attacker's addresses there).
///
/// Memory: an entry is 80 bytes with its key, in a hash map that keeps
/// spare room, plus about 35 bytes in the eviction order while unpinned:
/// measured, 13 MB for a full default table of 65,536 sources (about 200
/// bytes each). The maps keep their size after a flood has passed.
///
/// A ban ends exactly at its end instant: a call at `until − 1 ns` sees the
/// source banned, a call at `until` does not. Ended bans are dropped, in
/// order of end, by the next call on their stripe.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use sockloop::limit::{IpLimits, IpTable, Refusal, StrikeOutcome};
///
/// let table = IpTable::new(IpLimits { max_conns_per_ip: 2, ..IpLimits::default() });
/// let peer = "198.51.100.4".parse().unwrap();
/// let t0 = Instant::now();
///
/// let first = table.admit(peer, t0).unwrap();
/// let second = table.admit(peer, t0).unwrap();
/// assert_eq!(table.admit(peer, t0), Err(Refusal::TooManyFromIp { limit: 2 }));
/// table.release(first);
/// assert_eq!(table.open_connections(peer), 1);
///
/// // Ten protocol errors within a minute ban the source for a minute.
/// for strikes in 1..10 {
///     assert_eq!(table.strike(peer, t0), StrikeOutcome::Counted { strikes });
/// }
/// let minute = Duration::from_secs(60);
/// assert_eq!(table.strike(peer, t0), StrikeOutcome::Banned { until_in: minute });
/// assert_eq!(table.admit(peer, t0), Err(Refusal::Banned { until_in: minute }));
/// assert!(!table.is_banned(peer, t0 + minute));
/// table.release(second);
/// ```
pub struct IpTable {
    limits: IpLimits,
    /// Keyed, so an attacker cannot aim all its blocks at one stripe.
    stripe_hasher: RandomState,
    stripes: Box<[Mutex<Stripe>]>,
    /// Admissions of sources a full stripe cannot track, shared by all
    /// stripes (taken only while one is full); `None` without a rate.
    untracked: Option<Mutex<TokenBucket>>,
}

impl IpTable {
    /// An empty table enforcing `limits` (durations capped at 100 years,
    /// `max_sources` raised to at least 1).
    pub fn new(limits: IpLimits) -> IpTable {
        let limits = IpLimits {
            strike_window: limits.strike_window.min(LONGEST),
            ban_for: limits.ban_for.min(LONGEST),
            max_sources: limits.max_sources.max(1),
            ..limits
        };
        let stripes = (limits.max_sources / MIN_STRIPE).clamp(1, MAX_STRIPES);
        let capacity = limits.max_sources / stripes;
        let ban_capacity = (limits.max_bans / stripes).max(1);
        let start = Instant::now();
        IpTable {
            limits,
            stripe_hasher: RandomState::new(),
            stripes: (0..stripes)
                .map(|_| Mutex::new(Stripe::new(capacity, ban_capacity)))
                .collect(),
            untracked: limits
                .untracked_rate
                .map(|rate| Mutex::new(TokenBucket::new(&rate, start))),
        }
    }

    /// The limits in force (after the caps [`new`](IpTable::new) applies).
    pub fn limits(&self) -> &IpLimits {
        &self.limits
    }

    /// Decides whether a connection from `ip` may open at `now`: refused if
    /// the source (or its block) is banned, then if its connect-rate bucket
    /// is empty, then if it already has `max_conns_per_ip` connections.
    /// Otherwise the connection is counted and the [`Admission`] must be
    /// given back to [`release`](IpTable::release) when it closes. A new
    /// source that a stripe full of connected sources cannot take is
    /// admitted untracked, within [`IpLimits::untracked_rate`].
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Admission, Refusal> {
        let source = Source::from(ip);
        let limits = &self.limits;
        let mut stripe = self.stripe(source);
        stripe.bans.expire(now);
        let decision = match stripe.bans.ban_left(source, now) {
            Some(until_in) => Err(Refusal::Banned { until_in }),
            None => stripe
                .use_or_insert(
                    source,
                    || Entry::new(limits, now),
                    |entry| entry.admit(source, limits, now),
                )
                .unwrap_or_else(|| self.admit_untracked(source, now)),
        };
        let counters = &mut stripe.counters;
        match decision {
            Ok(Admission { tracked: false, .. }) => counters.admitted_untracked += 1,
            Ok(_) => counters.admitted += 1,
            Err(Refusal::Banned { .. }) => counters.refused_banned += 1,
            Err(Refusal::ConnectRate) => counters.refused_connect_rate += 1,
            Err(Refusal::TooManyFromIp { .. }) => counters.refused_too_many += 1,
            Err(Refusal::Busy) => counters.refused_table_full += 1,
            // Not the table's to give.
            Err(Refusal::ServerFull | Refusal::NoDescriptors) => {}
        }
        decision
    }

    /// A new source with no room in its stripe: let in untracked while
    /// the shared rate allows (a flood of new sources is paced, not
    /// locked out).
    fn admit_untracked(&self, source: Source, now: Instant) -> Result<Admission, Refusal> {
        let (Some(rate), Some(bucket)) = (&self.limits.untracked_rate, &self.untracked) else {
            return Err(Refusal::Busy);
        };
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        match bucket.take(rate, now) {
            true => Ok(Admission {
                source,
                tracked: false,
            }),
            false => Err(Refusal::Busy),
        }
    }

    /// Uncounts the connection `admission` was given for. Its source is
    /// never evicted while the connection is counted, so it is always
    /// found; were it not, the call would do nothing.
    pub fn release(&self, admission: Admission) {
        if !admission.tracked {
            return;
        }
        let source = admission.source;
        self.stripe(source)
            .use_known(source, |entry| entry.open = entry.open.saturating_sub(1));
    }

    /// Records a protocol error by `ip` at `now`. Strikes count within a
    /// window opened by the first one ([`IpLimits::strike_window`]); the
    /// `ban_after`-th strike within it bans the source for `ban_for` and
    /// resets its strikes; with [`IpLimits::ban_block_after`] of a block's
    /// sources banned at once, the whole block is banned too. A banned
    /// source's strikes are not counted.
    pub fn strike(&self, ip: IpAddr, now: Instant) -> StrikeOutcome {
        let source = Source::from(ip);
        let limits = &self.limits;
        let mut stripe = self.stripe(source);
        stripe.bans.expire(now);
        if let Some(until_in) = stripe.bans.ban_left(source, now) {
            return StrikeOutcome::AlreadyBanned { until_in };
        }
        let struck = stripe.use_or_insert(
            source,
            || Entry::new(limits, now),
            |entry| entry.strike(limits, now),
        );
        match struck {
            Some(Struck::Counted(strikes)) => {
                stripe.counters.strikes += 1;
                StrikeOutcome::Counted { strikes }
            }
            Some(Struck::Ban) => {
                let until = now + limits.ban_for;
                let effects = stripe.bans.ban(source, until, limits.ban_block_after);
                let counters = &mut stripe.counters;
                counters.strikes += 1;
                counters.bans += 1 + u64::from(effects.prefix_banned);
                counters.ban_evictions += u64::from(effects.evicted);
                if effects.prefix_banned {
                    log::warn!(
                        "{}: banned for {:?}: {} of its addresses were banned",
                        source.prefix(),
                        limits.ban_for,
                        limits.ban_block_after
                    );
                }
                StrikeOutcome::Banned {
                    until_in: limits.ban_for,
                }
            }
            None => {
                stripe.counters.strikes_untracked += 1;
                StrikeOutcome::Untracked
            }
        }
    }

    /// Whether `ip`'s source (or its block) is banned at `now`. A lookup:
    /// it neither adds the source nor counts as a use of it.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        let source = Source::from(ip);
        let mut stripe = self.stripe(source);
        stripe.bans.expire(now);
        stripe.bans.ban_left(source, now).is_some()
    }

    /// Connections counted for `ip`'s source (0 if it is not in the table).
    pub fn open_connections(&self, ip: IpAddr) -> u32 {
        let source = Source::from(ip);
        self.stripe(source)
            .entries
            .get(&source)
            .map_or(0, |entry| entry.open)
    }

    /// The table's counters. Takes each stripe's lock in turn (briefly: it
    /// only adds up numbers), so it is consistent per stripe, not across
    /// them.
    pub fn stats(&self) -> IpTableStats {
        let mut total = IpTableStats::default();
        for stripe in self.stripes.iter() {
            let stripe = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            total.add(&IpTableStats {
                sources: stripe.entries.len(),
                bans_active: stripe.bans.len(),
                block_bans_active: stripe.bans.prefixes(),
                ..stripe.counters
            });
        }
        total
    }

    fn stripe(&self, source: Source) -> MutexGuard<'_, Stripe> {
        let block = source.prefix();
        let index = self.stripe_hasher.hash_one(block) as usize % self.stripes.len();
        // A panic while holding the lock can at worst leave one source's
        // bookkeeping stale (see `Stripe::make_room`); refusing every later
        // connection would be worse.
        self.stripes[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for IpTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpTable")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}
