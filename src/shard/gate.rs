//! Admission: what a connection must pass right after `accept`, before it
//! gets a slot or any memory. One gate, shared by every shard: the
//! server-wide connection count and the per-source table (caps, connect
//! rates, strikes, bans).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::limit::{self, Admission, IpLimits, IpTable, StrikeOutcome};
use crate::service::Refusal;

#[derive(Debug)]
pub(crate) struct Gate {
    open: AtomicUsize,
    max_conns: usize,
    pub(crate) sources: IpTable,
}

impl Gate {
    pub(crate) fn new(max_conns: Option<usize>, limits: IpLimits) -> Gate {
        Gate {
            open: AtomicUsize::new(0),
            max_conns: max_conns.unwrap_or(usize::MAX),
            sources: IpTable::new(limits),
        }
    }

    /// Lets a connection from `ip` in, counting it, or says why not. The
    /// admission goes with the connection and back to [`release`](Self::release).
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<Admission, Refusal> {
        // Optimistic: count it, and take it back if that went past the cap.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_conns {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        self.sources.admit(ip, now).map_err(|refusal| {
            self.open.fetch_sub(1, Ordering::AcqRel);
            match refusal {
                limit::Refusal::Banned { .. } => Refusal::Banned,
                limit::Refusal::ConnectRate => Refusal::ConnectRate,
                limit::Refusal::TooManyFromIp { .. } => Refusal::TooManyFromIp,
                // Every tracked source is connected or banned: no room to
                // judge a new one, so it waits like any other overflow.
                limit::Refusal::TableFull => Refusal::ServerFull,
            }
        })
    }

    /// A connection admitted with `admission` closed (or never opened).
    pub(crate) fn release(&self, admission: Admission) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.sources.release(admission);
    }

    /// A protocol error or limit violation by `ip`.
    pub(crate) fn strike(&self, ip: IpAddr, now: Instant) -> StrikeOutcome {
        self.sources.strike(ip, now)
    }
}
