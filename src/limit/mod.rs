//! Limits: rates, per-source caps, strikes and bans, as pure state.
//!
//! Nothing here touches a socket or reads the clock: every call takes the
//! caller's `now`, which is what lets the tests walk a virtual clock to
//! the exact nanosecond a token comes back or a ban ends. The event loop
//! asks; these types answer and count.
//!
//! - [`Rate`] (`50/s:100`, `600/m`, parsed by [`parse_rate`]) and
//!   [`TokenBucket`], 24 bytes of exact integer state, cheap enough for one
//!   per connection and one per source (module [`bucket`]).
//! - [`IpTable`], the per-source table shared by all shards: open
//!   connections against a cap, a connect-rate bucket, strikes and bans,
//!   bounded by [`IpLimits::max_sources`] with least-recently-used
//!   eviction that never forgets a connected or banned source (module
//!   [`ip`]).
//! - [`SourceRates`], per-source datagram buckets in a bounded table
//!   (module [`sources`]).
//! - [`Trusted`], the networks (loopback by default) that skip every
//!   per-source limit (module [`trusted`]).
//! - [`Suppressor`], one log line per source per interval with a count of
//!   what was held back (module [`suppress`]).
//!
//! Every table is bounded, and says what happens at the bound.
//!
//! # The accept path, sketched
//!
//! ```
//! use std::net::IpAddr;
//! use std::time::{Duration, Instant};
//! use sockloop::limit::{IpLimits, IpTable, Source, Suppressor};
//!
//! let table = IpTable::new(IpLimits::default()); // one, shared by the shards
//! let mut refusals = Suppressor::new(Duration::from_secs(10), 1024); // one per shard
//!
//! let now = Instant::now(); // the loop's reading for this iteration
//! let peer: IpAddr = "203.0.113.9".parse().unwrap();
//! match table.admit(peer, now) {
//!     Ok(admission) => {
//!         // Keep `admission` with the connection; when it closes:
//!         table.release(admission);
//!     }
//!     Err(refusal) => {
//!         // Close the socket at once, and log a little.
//!         if let Some(suppressed) = refusals.note(Source::from(peer), now) {
//!             log::warn!("refused {peer}: {refusal} ({suppressed} more suppressed)");
//!         }
//!     }
//! }
//! ```

pub mod bucket;
pub mod ip;
mod refusal;
pub mod sources;
pub mod suppress;
pub mod trusted;

pub use bucket::{parse_rate, Rate, TokenBucket, MAX_PER_MINUTE_BURST};
pub use ip::{Admission, IpLimits, IpTable, IpTableStats, Prefix, Source, StrikeOutcome};
pub use refusal::Refusal;
pub use sources::SourceRates;
pub use suppress::Suppressor;
pub use trusted::{Cidr, Trusted};
