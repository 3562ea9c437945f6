//! Admission: what a connection must pass right after `accept`, before it
//! gets a slot or any memory. One gate, shared by every shard: the
//! server-wide connection count and the per-source table (caps, connect
//! rates, strikes, bans), which trusted sources skip.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::limit::{Admission, IpLimits, IpTable, Refusal, Source, StrikeOutcome, Trusted};

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

    /// The pass as a connection keeps it, without its source: that is
    /// the connection's peer address `ip`, the one it was admitted for.
    pub(crate) fn hold(self, ip: IpAddr) -> HeldPass {
        HeldPass(match self.0 {
            Counted::Open(None) => Held::Unattributed,
            Counted::Open(Some(admission)) => {
                debug_assert!(
                    admission.source() == Source::from(ip),
                    "held for another address"
                );
                match admission.is_tracked() {
                    true => Held::Tracked,
                    false => Held::Untracked,
                }
            }
            Counted::Reserved => Held::Reserved,
        })
    }
}

/// A [`Pass`] in one byte instead of ten, as a connection's slab entry
/// holds it: its source is the connection's peer address, given back to
/// [`unhold`](Self::unhold).
#[derive(Debug)]
#[must_use = "give the pass back to Gate::release when the connection closes"]
pub(crate) struct HeldPass(Held);

#[derive(Debug)]
enum Held {
    Unattributed,
    Tracked,
    Untracked,
    Reserved,
}

impl HeldPass {
    /// The pass again, for the address `ip` it was held with.
    pub(crate) fn unhold(self, ip: IpAddr) -> Pass {
        let counted =
            |tracked| Counted::Open(Some(Admission::reassemble(Source::from(ip), tracked)));
        Pass(match self.0 {
            Held::Unattributed => Counted::Open(None),
            Held::Tracked => counted(true),
            Held::Untracked => counted(false),
            Held::Reserved => Counted::Reserved,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_pass_releases_what_the_pass_counted() {
        let gate = Gate::new(Some(10), IpLimits::default(), Trusted::none());
        let now = Instant::now();
        let ips: [IpAddr; 3] = [
            "192.0.2.7".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "::ffff:192.0.2.8".parse().unwrap(),
        ];
        for ip in ips {
            let held = gate.admit(ip, now).unwrap().hold(ip);
            assert_eq!(gate.sources.open_connections(ip), 1);
            assert_eq!(gate.open.load(Ordering::Acquire), 1);
            gate.release(held.unhold(ip));
            assert_eq!(gate.sources.open_connections(ip), 0);
            assert_eq!(gate.open.load(Ordering::Acquire), 0);
        }
        let reserved = gate.admit_reserved().unwrap().hold(ips[0]);
        assert_eq!(gate.reserved.load(Ordering::Acquire), 1);
        gate.release(reserved.unhold(ips[0]));
        assert_eq!(gate.reserved.load(Ordering::Acquire), 0);
        let unattributed = gate.admit_unattributed().unwrap().hold(ips[1]);
        let pass = unattributed.unhold(ips[1]);
        assert!(pass.is_trusted());
        gate.release(pass);
        assert_eq!(gate.open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_held_pass_is_one_byte() {
        assert_eq!(std::mem::size_of::<Option<HeldPass>>(), 1);
        assert_eq!(std::mem::size_of::<Option<Pass>>(), 10);
    }
}
