//! Admission: what a connection must pass right after `accept`, before it
//! gets a slot or any memory. One gate, shared by every shard: the
//! server-wide connection count and the per-source table (caps, connect
//! rates, strikes, bans), which trusted sources skip.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::limit::{Admission, IpLimits, IpTable, Refusal, StrikeOutcome, Trusted};

use crate::metrics::METRICS_RESERVE;

#[derive(Debug)]
pub(crate) struct Gate {
    open: AtomicUsize,
    max_conns: usize,
    /// Connections held from the metrics reserve.
    reserved: AtomicUsize,
    /// Shared with the metrics endpoint.
    pub(crate) sources: Arc<IpTable>,
    trusted: Trusted,
}

/// A connection's place in the counts, given back to [`Gate::release`]
/// when it closes.
#[derive(Debug)]
#[must_use = "give the pass back to Gate::release when the connection closes"]
pub(crate) struct Pass(Counted);

#[derive(Debug)]
enum Counted {
    /// Against `max_conns`, and against its source unless trusted (`None`:
    /// the per-source table never saw it).
    Open(Option<Admission>),
    /// Against the metrics reserve only.
    Reserved,
}

impl Pass {
    pub(crate) fn is_trusted(&self) -> bool {
        matches!(self.0, Counted::Open(None))
    }
}

impl Gate {
    pub(crate) fn new(max_conns: Option<usize>, limits: IpLimits, trusted: Trusted) -> Gate {
        Gate {
            open: AtomicUsize::new(0),
            max_conns: max_conns.unwrap_or(usize::MAX),
            reserved: AtomicUsize::new(0),
            sources: Arc::new(IpTable::new(limits)),
            trusted,
        }
    }

    /// Lets a connection from `ip` in, counting it, or says why not. The
    /// pass goes with the connection and back to [`release`](Self::release).
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<Pass, Refusal> {
        // Optimistic: count it, and take it back if that went past the cap.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_conns {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        if self.trusted.contains(ip) {
            return Ok(Pass(Counted::Open(None)));
        }
        match self.sources.admit(ip, now) {
            Ok(admission) => Ok(Pass(Counted::Open(Some(admission)))),
            Err(refusal) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                Err(refusal)
            }
        }
    }

    /// Gives a connection a place under `max_conns` only: an outbound
    /// one (the per-source limits are for peers that connect to us, not
    /// for the addresses we connect to), or one from a PROXY peer until
    /// its header names the client ([`readmit`](Self::readmit)).
    pub(crate) fn admit_unattributed(&self) -> Result<Pass, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_conns {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        Ok(Pass(Counted::Open(None)))
    }

    /// Trades an unattributed pass for one counted against `ip`, or says
    /// why `ip` may not connect (the pass is given back either way).
    pub(crate) fn readmit(&self, pass: Pass, ip: IpAddr, now: Instant) -> Result<Pass, Refusal> {
        self.release(pass);
        self.admit(ip, now)
    }

    /// Lets a connection to the metrics endpoint in from its reserve
    /// ([`METRICS_RESERVE`]), whatever the other limits say.
    pub(crate) fn admit_reserved(&self) -> Result<Pass, Refusal> {
        if self.reserved.fetch_add(1, Ordering::AcqRel) >= METRICS_RESERVE {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        Ok(Pass(Counted::Reserved))
    }

    /// A connection admitted with `pass` closed (or never opened).
    pub(crate) fn release(&self, pass: Pass) {
        match pass.0 {
            Counted::Open(admission) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                if let Some(admission) = admission {
                    self.sources.release(admission);
                }
            }
            Counted::Reserved => {
                self.reserved.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// A protocol error or limit violation by `ip`; `None` for a trusted
    /// source, whose strikes never count towards a ban.
    pub(crate) fn strike(&self, ip: IpAddr, now: Instant) -> Option<StrikeOutcome> {
        (!self.trusted.contains(ip)).then(|| self.sources.strike(ip, now))
    }

    /// Whether `ip` skips the per-source limits.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.contains(ip)
    }
}

/// Why a connection was refused, in the operator's terms: the limit, its
/// value, and the setting that changes it (the `serve` flag).
pub(crate) struct Explained<'a> {
    pub(crate) reason: Refusal,
    pub(crate) gate: &'a Gate,
}

impl std::fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limits = self.gate.sources.limits();
        let exempt = "or --trusted to exempt a network";
        match self.reason {
            Refusal::ServerFull => write!(
                f,
                "the server is full ({} connections; --max-conns)",
                self.gate.max_conns
            ),
            Refusal::TooManyFromIp { .. } => write!(
                f,
                "{} connections from this address already (--max-conns-per-ip, {exempt})",
                limits.max_conns_per_ip
            ),
            Refusal::ConnectRate => match limits.connect_rate {
                Some(rate) => write!(f, "connecting faster than {rate} (--conn-rate, {exempt})"),
                None => f.write_str("connecting too fast"),
            },
            Refusal::Banned { .. } => write!(
                f,
                "banned: {} strikes within {:?} ban for {:?} (--ban-after, --strike-window, --ban-for, {exempt})",
                limits.ban_after, limits.strike_window, limits.ban_for
            ),
            Refusal::Busy => write!(
                f,
                "the per-source table ({} addresses) is full of connected ones and new \
                 addresses beyond {} are refused (IpLimits::max_sources, untracked_rate)",
                limits.max_sources,
                limits.untracked_rate.map_or("none".into(), |r| r.to_string())
            ),
            Refusal::NoDescriptors => f.write_str("out of file descriptors"),
        }
    }
}
