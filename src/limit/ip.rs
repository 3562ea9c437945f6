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

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::bucket::{Rate, TokenBucket};
use crate::timer::{TimerHandle, Wheel};

/// At most this many stripes (locks); fewer for small tables, see
/// [`MIN_STRIPE`].
const MAX_STRIPES: usize = 16;
/// A stripe holds at least this many sources (unless the whole table is
/// smaller), so small tables keep one LRU order instead of many tiny ones.
const MIN_STRIPE: usize = 64;
/// Ban expiry is exact to the nanosecond whatever the tick (the ban's end
/// is compared directly); the wheel only unpins and uncounts an ended ban,
/// at most one tick later.
const BAN_TICK: Duration = Duration::from_millis(1);
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
}

impl Default for IpLimits {
    /// 256 connections per source, 50 connection attempts a second with
    /// bursts of 100, a ban of 60 s after 10 strikes within 60 s, 65,536
    /// sources.
    fn default() -> IpLimits {
        IpLimits {
            max_conns_per_ip: 256,
            connect_rate: Some(Rate::per_second(50).with_burst(100)),
            ban_after: 10,
            strike_window: Duration::from_secs(60),
            ban_for: Duration::from_secs(60),
            max_sources: 65_536,
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

/// The unit the table counts by: an IPv4 address, or the /64 prefix of an
/// IPv6 address.
///
/// One IPv6 host normally owns a whole /64 (SLAAC and privacy addresses
/// pick the low 64 bits freely), so counting per address would let one
/// host open 2^64 "sources". An IPv4-mapped address (`::ffff:a.b.c.d`, how
/// a dual-stack socket reports IPv4 peers) is the IPv4 address it maps:
/// its /64 would otherwise lump every IPv4 peer into one source.
///
/// Someone owning a larger block (a /48 has 65,536 /64s) still has many
/// sources; the table's bound, not the per-source cap, is the defence
/// there.
///
/// ```
/// use std::net::IpAddr;
/// use sockloop::limit::Source;
///
/// let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
/// assert_eq!(Source::from(a), Source::from(b));
/// assert_eq!(Source::from(a).to_string(), "2001:db8:1:2::/64");
///
/// let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
/// assert_eq!(Source::from(mapped).to_string(), "192.0.2.7");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(SourceKey);

/// Byte arrays keep the key at 9 bytes (`u32`/`u64` would pad it to 16).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(SourceKey::V4(v4.octets())),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source(SourceKey::V6Prefix(prefix))
            }
        }
    }
}

/// `192.0.2.7`, or `2001:db8:1:2::/64`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SourceKey::V4(octets) => Ipv4Addr::from(octets).fmt(f),
            SourceKey::V6Prefix(prefix) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(&prefix);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({self})")
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
}

impl Admission {
    /// The source the connection was counted against.
    pub fn source(&self) -> Source {
        self.source
    }
}

/// Why [`IpTable::admit`] turned a connection away. `Display` makes the
/// log line's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source is banned for this much longer.
    Banned {
        /// Until the ban ends.
        until_in: Duration,
    },
    /// The source's connection-attempt bucket is empty.
    ConnectRate,
    /// The source already has `limit` open connections.
    TooManyFromIp {
        /// [`IpLimits::max_conns_per_ip`].
        limit: u32,
    },
    /// The source is new and its stripe of the table is full of sources
    /// that may not be forgotten (connected or banned ones).
    TableFull,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Banned { until_in } => write!(f, "banned for another {until_in:?}"),
            Refusal::ConnectRate => f.write_str("connecting too fast"),
            Refusal::TooManyFromIp { limit } => {
                write!(f, "too many connections from this address (limit {limit})")
            }
            Refusal::TableFull => f.write_str("too many sources tracked"),
        }
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
    /// [`Refusal::TableFull`]); nothing was recorded.
    Untracked,
}

/// Counters of an [`IpTable`], summed over its stripes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpTableStats {
    /// Sources remembered now (at most [`IpLimits::max_sources`]).
    pub sources: usize,
    /// Sources banned now. A ban that just ended counts until the next
    /// call touching its stripe (and at most 1 ms more).
    pub bans_active: usize,
    /// Connections admitted.
    pub admitted: u64,
    /// Connections refused: [`Refusal::Banned`].
    pub refused_banned: u64,
    /// Connections refused: [`Refusal::ConnectRate`].
    pub refused_connect_rate: u64,
    /// Connections refused: [`Refusal::TooManyFromIp`].
    pub refused_too_many: u64,
    /// Connections refused: [`Refusal::TableFull`].
    pub refused_table_full: u64,
    /// Strikes counted (not those against banned or untracked sources).
    pub strikes: u64,
    /// Strikes against new sources the full table could not take.
    pub strikes_untracked: u64,
    /// Bans imposed.
    pub bans: u64,
    /// Sources forgotten to make room for new ones.
    pub evictions: u64,
}

impl IpTableStats {
    fn add(&mut self, other: &IpTableStats) {
        self.sources += other.sources;
        self.bans_active += other.bans_active;
        self.admitted += other.admitted;
        self.refused_banned += other.refused_banned;
        self.refused_connect_rate += other.refused_connect_rate;
        self.refused_too_many += other.refused_too_many;
        self.refused_table_full += other.refused_table_full;
        self.strikes += other.strikes;
        self.strikes_untracked += other.strikes_untracked;
        self.bans += other.bans;
        self.evictions += other.evictions;
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
/// evenly over up to 16 stripes (so one stripe may fill, and start
/// evicting, a little before the whole table does). When a new source
/// arrives at a full stripe, the stripe forgets its **least recently
/// used** source among those that may be forgotten: a source with an open
/// connection or a ban is *pinned* and is never evicted, so a flood of new
/// sources can neither reset a banned source nor lose the count of a
/// connected one. A forgotten source loses only its connect-rate bucket
/// and strikes. If every source in the stripe is pinned, the new source is
/// refused ([`Refusal::TableFull`], counted in
/// [`IpTableStats::refused_table_full`]). Eviction is O(log n): unpinned
/// sources are kept in a `BTreeMap` ordered by last use, pinned ones are
/// not in it at all.
///
/// Memory: an entry is 80 bytes with its key, in a hash map that keeps
/// spare room, plus about 35 bytes in the eviction order while unpinned:
/// measured, 13 MB for a full default table of 65,536 sources (about 200
/// bytes each). The maps keep their size after a flood has passed.
///
/// A ban ends exactly at its end instant: a call at `until − 1 ns` sees the
/// source banned, a call at `until` does not. Ended bans are also cleared
/// through a [`Wheel`] per stripe (1 ms ticks), advanced by the `now` of
/// each call on that stripe, so a banned source that never comes back is
/// unpinned and becomes evictable instead of holding its slot forever.
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
    /// Keyed, so an attacker cannot aim all its sources at one stripe.
    stripe_hasher: RandomState,
    stripes: Box<[Mutex<Stripe>]>,
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
        IpTable {
            limits,
            stripe_hasher: RandomState::new(),
            stripes: (0..stripes)
                .map(|_| Mutex::new(Stripe::new(capacity)))
                .collect(),
        }
    }

    /// The limits in force (after the caps [`new`](IpTable::new) applies).
    pub fn limits(&self) -> &IpLimits {
        &self.limits
    }

    /// Decides whether a connection from `ip` may open at `now`: refused if
    /// the source is banned, then if its connect-rate bucket is empty, then
    /// if it already has `max_conns_per_ip` connections. Otherwise the
    /// connection is counted and the [`Admission`] must be given back to
    /// [`release`](IpTable::release) when it closes.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Admission, Refusal> {
        let source = Source::from(ip);
        let limits = &self.limits;
        let mut stripe = self.stripe(source);
        stripe.expire_bans(now);
        let decision = stripe
            .use_or_insert(
                source,
                || Entry::new(limits, now),
                |entry| entry.admit(source, limits, now),
            )
            .unwrap_or(Err(Refusal::TableFull));
        let counters = &mut stripe.counters;
        match decision {
            Ok(_) => counters.admitted += 1,
            Err(Refusal::Banned { .. }) => counters.refused_banned += 1,
            Err(Refusal::ConnectRate) => counters.refused_connect_rate += 1,
            Err(Refusal::TooManyFromIp { .. }) => counters.refused_too_many += 1,
            Err(Refusal::TableFull) => counters.refused_table_full += 1,
        }
        decision
    }

    /// Uncounts the connection `admission` was given for. Its source is
    /// never evicted while the connection is counted, so it is always
    /// found; were it not, the call would do nothing.
    pub fn release(&self, admission: Admission) {
        let source = admission.source;
        self.stripe(source)
            .use_known(source, |entry| entry.open = entry.open.saturating_sub(1));
    }

    /// Records a protocol error by `ip` at `now`. Strikes count within a
    /// window opened by the first one ([`IpLimits::strike_window`]); the
    /// `ban_after`-th strike within it bans the source for `ban_for` and
    /// resets its strikes. A banned source's strikes are not counted.
    pub fn strike(&self, ip: IpAddr, now: Instant) -> StrikeOutcome {
        let source = Source::from(ip);
        let limits = &self.limits;
        let mut stripe = self.stripe(source);
        stripe.expire_bans(now);
        let outcome = stripe.use_or_insert(
            source,
            || Entry::new(limits, now),
            |entry| entry.strike(limits, now),
        );
        let counters = &mut stripe.counters;
        match outcome {
            Some(StrikeOutcome::Counted { .. }) => counters.strikes += 1,
            Some(StrikeOutcome::Banned { .. }) => {
                counters.strikes += 1;
                counters.bans += 1;
                stripe.arm_ban_timer(source, now + limits.ban_for);
            }
            Some(StrikeOutcome::AlreadyBanned { .. } | StrikeOutcome::Untracked) => {}
            None => counters.strikes_untracked += 1,
        }
        outcome.unwrap_or(StrikeOutcome::Untracked)
    }

    /// Whether `ip`'s source is banned at `now`. A lookup: it neither adds
    /// the source nor counts as a use of it.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        let source = Source::from(ip);
        let mut stripe = self.stripe(source);
        stripe.expire_bans(now);
        stripe
            .entries
            .get(&source)
            .is_some_and(|entry| entry.ban_left(now).is_some())
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
                ..stripe.counters
            });
        }
        total
    }

    fn stripe(&self, source: Source) -> MutexGuard<'_, Stripe> {
        let index = self.stripe_hasher.hash_one(source) as usize % self.stripes.len();
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

/// One source's state.
struct Entry {
    /// The stripe's use counter at this source's last use: its place in the
    /// LRU order (and its key in `Stripe::unpinned_by_use` while unpinned).
    last_use: u64,
    /// `Some` iff the limits have a connect rate.
    connects: Option<TokenBucket>,
    standing: Standing,
    /// Open connections.
    open: u32,
}

/// Strikes and bans: a source is in one state at a time, which keeps the
/// entry small (a ban resets strikes, so the two never coexist).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Standing {
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
    fn new(limits: &IpLimits, now: Instant) -> Entry {
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
    fn admit(
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
    fn strike(&mut self, limits: &IpLimits, now: Instant) -> StrikeOutcome {
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
    fn ban_left(&self, now: Instant) -> Option<Duration> {
        match self.standing {
            Standing::Banned { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    fn in_ban(&self) -> bool {
        matches!(self.standing, Standing::Banned { .. })
    }

    /// Pinned sources are never evicted.
    fn pinned(&self) -> bool {
        self.open > 0 || self.in_ban()
    }
}

struct Stripe {
    entries: HashMap<Source, Entry>,
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
    counters: IpTableStats,
}

impl Stripe {
    fn new(capacity: usize) -> Stripe {
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
    fn use_or_insert<R>(
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
    fn use_known<R>(&mut self, source: Source, change: impl FnOnce(&mut Entry) -> R) -> Option<R> {
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

    fn arm_ban_timer(&mut self, source: Source, until: Instant) {
        if let Some(timers) = &mut self.ban_timers {
            timers.arm(until, source);
        }
    }

    /// Clears the bans that ended by `now`: they stop counting as active,
    /// and a source with no open connection becomes evictable again, at
    /// its old place in the LRU order (an ended ban is not a use).
    fn expire_bans(&mut self, now: Instant) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const NS: Duration = Duration::from_nanos(1);
    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn no_rate() -> IpLimits {
        IpLimits {
            connect_rate: None,
            ..IpLimits::default()
        }
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
    }

    /// A distinct /64 per `n`, with varying low bits.
    fn v6(n: u32) -> IpAddr {
        let prefix = 0x2001_0db8_0000_0000_u64 | u64::from(n);
        IpAddr::V6(Ipv6Addr::from(
            (u128::from(prefix) << 64) | (u128::from(n) * 7919),
        ))
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Source>(), 9);
        assert_eq!(std::mem::size_of::<Standing>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        assert_eq!(std::mem::size_of::<(Source, Entry)>(), 80);
    }

    #[test]
    fn table_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<IpTable>();
    }

    #[test]
    fn counts_up_to_the_cap_and_back() {
        let table = IpTable::new(IpLimits {
            max_conns_per_ip: 3,
            ..no_rate()
        });
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let t0 = Instant::now();
        let held: Vec<_> = (0..3).map(|_| table.admit(a, t0).unwrap()).collect();
        assert_eq!(table.open_connections(a), 3);
        assert_eq!(table.admit(a, t0), Err(Refusal::TooManyFromIp { limit: 3 }));
        // Another source is counted on its own.
        let other = table.admit(b, t0).unwrap();
        assert_eq!(other.source().to_string(), "192.0.2.2");
        assert_eq!(table.open_connections(b), 1);
        for (released, admission) in held.into_iter().enumerate() {
            table.release(admission);
            assert_eq!(table.open_connections(a), 2 - released as u32);
        }
        let again = table.admit(a, t0).unwrap();
        assert_eq!(table.open_connections(a), 1);
        table.release(again);
        table.release(other);
        assert_eq!(table.open_connections(a), 0);
        assert_eq!(table.open_connections(b), 0);
        let stats = table.stats();
        assert_eq!((stats.admitted, stats.refused_too_many), (5, 1));
        assert_eq!(stats.sources, 2);
    }

    #[test]
    fn zero_cap_means_no_cap() {
        let table = IpTable::new(IpLimits {
            max_conns_per_ip: 0,
            ..no_rate()
        });
        let t0 = Instant::now();
        let held: Vec<_> = (0..1000)
            .map(|_| table.admit(ip("192.0.2.1"), t0).unwrap())
            .collect();
        assert_eq!(table.open_connections(ip("192.0.2.1")), 1000);
        held.into_iter().for_each(|a| table.release(a));
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let table = IpTable::new(IpLimits {
            max_conns_per_ip: 2,
            ..no_rate()
        });
        let t0 = Instant::now();
        let one = table.admit(ip("2001:db8:1:2::1"), t0).unwrap();
        let two = table
            .admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0)
            .unwrap();
        assert_eq!(one, two);
        assert_eq!(
            table.admit(ip("2001:db8:1:2:abcd::7"), t0),
            Err(Refusal::TooManyFromIp { limit: 2 })
        );
        // The neighbouring /64 is another source.
        let three = table.admit(ip("2001:db8:1:3::1"), t0).unwrap();
        assert_eq!(table.open_connections(ip("2001:db8:1:2::99")), 2);
        // IPv4 peers seen through a dual-stack socket count as IPv4.
        let mapped = table.admit(ip("::ffff:192.0.2.9"), t0).unwrap();
        assert_eq!(table.open_connections(ip("192.0.2.9")), 1);
        assert_eq!(table.open_connections(ip("::ffff:192.0.2.10")), 0);
        for admission in [one, two, three, mapped] {
            table.release(admission);
        }
        assert_eq!(table.open_connections(ip("2001:db8:1:2::")), 0);
    }

    #[test]
    fn connect_rate_refuses_then_refills() {
        let table = IpTable::new(IpLimits {
            connect_rate: Some(Rate::per_second(10).with_burst(3)), // a token every 100 ms
            ..IpLimits::default()
        });
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let t0 = Instant::now();
        for _ in 0..3 {
            let admission = table.admit(a, t0).unwrap();
            table.release(admission); // a closed connection still spent its token
        }
        assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
        assert_eq!(
            table.admit(a, t0 + 100 * MS - NS),
            Err(Refusal::ConnectRate)
        );
        // Other sources have their own bucket.
        table.release(table.admit(b, t0).unwrap());
        let refilled = table.admit(a, t0 + 100 * MS).unwrap();
        assert_eq!(table.admit(a, t0 + 100 * MS), Err(Refusal::ConnectRate));
        table.release(refilled);
        assert_eq!(table.stats().refused_connect_rate, 3);
    }

    #[test]
    fn a_refused_attempt_still_spends_a_token() {
        let table = IpTable::new(IpLimits {
            max_conns_per_ip: 1,
            connect_rate: Some(Rate::per_second(1).with_burst(2)),
            ..IpLimits::default()
        });
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        let held = table.admit(a, t0).unwrap();
        assert_eq!(table.admit(a, t0), Err(Refusal::TooManyFromIp { limit: 1 }));
        table.release(held);
        assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
    }

    #[test]
    fn strikes_count_within_the_window_only() {
        let table = IpTable::new(IpLimits {
            ban_after: 3,
            strike_window: 10 * SEC,
            ..no_rate()
        });
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        assert_eq!(table.strike(a, t0), StrikeOutcome::Counted { strikes: 1 });
        assert_eq!(
            table.strike(a, t0 + 10 * SEC - NS),
            StrikeOutcome::Counted { strikes: 2 }
        );
        // The window opened at t0 ends at t0 + 10 s: a new one opens.
        let t1 = t0 + 10 * SEC;
        assert_eq!(table.strike(a, t1), StrikeOutcome::Counted { strikes: 1 });
        assert_eq!(
            table.strike(a, t1 + 9 * SEC),
            StrikeOutcome::Counted { strikes: 2 }
        );
        assert!(!table.is_banned(a, t1 + 9 * SEC));
        assert_eq!(table.stats().strikes, 4);
        assert_eq!(table.stats().bans, 0);
    }

    #[test]
    fn ban_at_exactly_ban_after_and_expiry_at_exactly_ban_for() {
        let table = IpTable::new(IpLimits {
            ban_after: 3,
            strike_window: 10 * SEC,
            ban_for: 30 * SEC,
            ..no_rate()
        });
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        assert_eq!(table.strike(a, t0), StrikeOutcome::Counted { strikes: 1 });
        assert_eq!(
            table.strike(a, t0 + SEC),
            StrikeOutcome::Counted { strikes: 2 }
        );
        let banned_at = t0 + 2 * SEC;
        assert_eq!(
            table.strike(a, banned_at),
            StrikeOutcome::Banned { until_in: 30 * SEC }
        );
        let until = banned_at + 30 * SEC;
        assert_eq!(table.stats().bans_active, 1);
        // Banned with no connection open at all.
        assert_eq!(table.open_connections(a), 0);
        assert_eq!(
            table.admit(a, banned_at + 10 * SEC),
            Err(Refusal::Banned { until_in: 20 * SEC })
        );
        assert_eq!(
            table.strike(a, until - NS),
            StrikeOutcome::AlreadyBanned { until_in: NS }
        );
        assert!(table.is_banned(a, until - NS));
        assert_eq!(
            table.admit(a, until - NS),
            Err(Refusal::Banned { until_in: NS })
        );
        assert!(!table.is_banned(a, until));
        assert_eq!(table.stats().bans_active, 0);
        let admitted = table.admit(a, until).unwrap();
        table.release(admitted);
        // Strikes were reset by the ban: counting starts over.
        assert_eq!(
            table.strike(a, until),
            StrikeOutcome::Counted { strikes: 1 }
        );
        let stats = table.stats();
        assert_eq!((stats.bans, stats.refused_banned, stats.strikes), (1, 2, 4));
    }

    #[test]
    fn a_ban_ends_exactly_even_between_timer_ticks() {
        let ban_for = 5 * MS + NS; // off the 1 ms tick: the timer fires after the end
        let table = IpTable::new(IpLimits {
            ban_after: 2,
            ban_for,
            ..no_rate()
        });
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        assert_eq!(table.strike(a, t0), StrikeOutcome::Counted { strikes: 1 });
        assert_eq!(
            table.strike(a, t0),
            StrikeOutcome::Banned { until_in: ban_for }
        );
        let until = t0 + ban_for;
        assert!(table.is_banned(a, until - NS));
        assert!(!table.is_banned(a, until));
        // A strike at the end opens a new window, before the timer fires.
        assert_eq!(
            table.strike(a, until),
            StrikeOutcome::Counted { strikes: 1 }
        );
        assert_eq!(table.stats().bans_active, 0);
        assert_eq!(
            table.strike(a, until),
            StrikeOutcome::Banned { until_in: ban_for }
        );
        assert_eq!(table.stats().bans_active, 1);
        // The first ban's timer fires in between and must not end the second.
        assert!(table.is_banned(a, until + ban_for - NS));
        assert!(!table.is_banned(a, until + ban_for));
        // The count follows the timer, within a tick.
        assert!(!table.is_banned(a, until + ban_for + MS));
        assert_eq!(table.stats().bans_active, 0);
        assert_eq!(table.stats().bans, 2);
    }

    #[test]
    fn ban_after_zero_or_ban_for_zero_never_bans() {
        let t0 = Instant::now();
        for limits in [
            IpLimits {
                ban_after: 0,
                ..no_rate()
            },
            IpLimits {
                ban_for: Duration::ZERO,
                ..no_rate()
            },
        ] {
            let table = IpTable::new(limits);
            for _ in 0..50 {
                assert!(matches!(
                    table.strike(ip("192.0.2.1"), t0),
                    StrikeOutcome::Counted { .. }
                ));
            }
            assert!(!table.is_banned(ip("192.0.2.1"), t0));
        }
    }

    #[test]
    fn evicts_the_least_recently_used_unpinned_source() {
        // One stripe of 3. A source at 1/m burst 1 is refused a second
        // connection while remembered; a forgotten one gets a fresh bucket.
        let table = IpTable::new(IpLimits {
            max_sources: 3,
            connect_rate: Some(Rate::per_minute(1)),
            ..IpLimits::default()
        });
        let t0 = Instant::now();
        let (a, b, c, d) = (
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("192.0.2.3"),
            ip("192.0.2.4"),
        );
        for source in [a, b, c] {
            table.release(table.admit(source, t0).unwrap());
        }
        // A is used again (refused, but a use), so B is now the oldest.
        assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
        table.release(table.admit(d, t0).unwrap());
        assert_eq!(table.stats().evictions, 1);
        assert_eq!(table.stats().sources, 3);
        // B was forgotten, so it gets a fresh bucket; its return evicts C,
        // the oldest now, while A and D are still remembered.
        table.release(table.admit(b, t0).unwrap());
        assert_eq!(table.admit(a, t0), Err(Refusal::ConnectRate));
        assert_eq!(table.admit(d, t0), Err(Refusal::ConnectRate));
        table.release(table.admit(c, t0).unwrap());
        assert_eq!(table.stats().evictions, 3);
    }

    #[test]
    fn a_full_table_of_pinned_sources_refuses_new_ones() {
        let table = IpTable::new(IpLimits {
            max_sources: 2,
            ban_after: 1,
            ..no_rate()
        });
        let t0 = Instant::now();
        let connected = table.admit(ip("192.0.2.1"), t0).unwrap();
        assert!(matches!(
            table.strike(ip("192.0.2.2"), t0),
            StrikeOutcome::Banned { .. }
        ));
        assert_eq!(table.admit(ip("192.0.2.3"), t0), Err(Refusal::TableFull));
        assert_eq!(table.strike(ip("192.0.2.3"), t0), StrikeOutcome::Untracked);
        let stats = table.stats();
        assert_eq!((stats.refused_table_full, stats.strikes_untracked), (1, 1));
        // Known sources still work.
        let second = table.admit(ip("192.0.2.1"), t0).unwrap();
        // Closing the connections unpins the first source: room again.
        table.release(connected);
        table.release(second);
        let third = table.admit(ip("192.0.2.3"), t0).unwrap();
        assert_eq!(table.open_connections(ip("192.0.2.1")), 0);
        assert_eq!(table.stats().evictions, 1);
        // An ended ban unpins too, through the timer, without a visit.
        let ban_end = t0 + table.limits().ban_for;
        assert_eq!(
            table.admit(ip("192.0.2.4"), ban_end - NS),
            Err(Refusal::TableFull)
        );
        table.release(table.admit(ip("192.0.2.4"), ban_end).unwrap());
        assert!(!table.is_banned(ip("192.0.2.2"), ban_end));
        assert_eq!(table.stats().bans_active, 0);
        table.release(third);
    }

    #[test]
    fn stays_bounded_through_100_000_sources_and_keeps_pinned_ones() {
        let table = IpTable::new(IpLimits {
            max_sources: 4096,
            ban_after: 3,
            ..IpLimits::default()
        });
        let t0 = Instant::now();
        let (banned, connected) = (ip("198.51.100.1"), ip("2001:db8:ffff:1::1"));
        for _ in 0..3 {
            let _ = table.strike(banned, t0);
        }
        let held = table.admit(connected, t0).unwrap();
        for n in 0..100_000_u32 {
            let now = t0 + Duration::from_micros(u64::from(n)); // 0.1 s in all
            let source = if n % 2 == 0 { v4(n) } else { v6(n) };
            let admission = table.admit(source, now).unwrap();
            table.release(admission);
            assert!(table.stats().sources <= 4096, "step {n}");
        }
        let end = t0 + SEC / 10;
        assert!(table.is_banned(banned, end));
        assert_eq!(table.open_connections(connected), 1);
        let stats = table.stats();
        assert_eq!(stats.admitted, 100_001);
        assert_eq!(stats.evictions, 100_002 - stats.sources as u64);
        // 100,000 sources fill every one of the 16 stripes of 256.
        assert_eq!(stats.sources, 4096);
        assert_eq!((stats.bans_active, stats.refused_table_full), (1, 0));
        table.release(held);
        assert_eq!(table.open_connections(connected), 0);
    }

    #[test]
    fn threads_admitting_and_releasing_leave_zero() {
        let table = Arc::new(IpTable::new(IpLimits {
            max_conns_per_ip: 5,
            ..no_rate()
        }));
        let sources = [
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("2001:db8::1"),
            ip("2001:db8::2"),
        ];
        let t0 = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut admitted = 0;
                    for round in 0..2_000_usize {
                        let source = sources[(round + thread) % sources.len()];
                        if let Ok(admission) = table.admit(source, t0) {
                            admitted += 1;
                            held.push(admission);
                        }
                        assert!(table.open_connections(source) <= 5);
                        if held.len() > 3 || round % 7 == 0 {
                            held.drain(..).for_each(|a| table.release(a));
                        }
                    }
                    held.into_iter().for_each(|a| table.release(a));
                    admitted
                })
            })
            .collect();
        let admitted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        for source in sources {
            assert_eq!(table.open_connections(source), 0);
        }
        let stats = table.stats();
        assert_eq!(stats.admitted, admitted);
        assert_eq!(stats.admitted + stats.refused_too_many, 16_000);
    }

    #[test]
    fn refusals_read_well() {
        assert_eq!(
            Refusal::Banned {
                until_in: 1500 * MS
            }
            .to_string(),
            "banned for another 1.5s"
        );
        assert_eq!(
            Refusal::TooManyFromIp { limit: 256 }.to_string(),
            "too many connections from this address (limit 256)"
        );
        assert_eq!(Refusal::ConnectRate.to_string(), "connecting too fast");
        assert_eq!(Refusal::TableFull.to_string(), "too many sources tracked");
    }
}
