//! Instants to ticks and back, the wheel's only contact with time.
//!
//! Converting is on the hot path of every `arm`, so when the tick divides a
//! second it multiplies by a precomputed reciprocal instead of dividing;
//! anything else, or a span past 584 years, takes the exact slow path.

use std::time::{Duration, Instant};

use super::wheel::Wheel;

pub(super) const NANOS_PER_SEC: u64 = 1_000_000_000;

impl<T> Wheel<T> {
    /// `t - origin` in ticks, rounded up or down; saturates at `u64::MAX`.
    #[inline]
    pub(super) fn ticks(&self, t: Instant, up: bool) -> u64 {
        let d = t.saturating_duration_since(self.origin);
        if self.per_sec != 0 {
            let sub = u64::from(d.subsec_nanos());
            let q = match self.recip {
                0 => sub,
                r => ((u128::from(r) * u128::from(sub)) >> 64) as u64,
            };
            let round = u64::from(up && sub != q * self.tick_ns);
            if let Some(ticks) = d.as_secs().checked_mul(self.per_sec) {
                // `q + round <= per_sec`, so this only fails near u64::MAX.
                if let Some(ticks) = ticks.checked_add(q + round) {
                    return ticks;
                }
            }
        }
        self.ticks_slow(d, up)
    }

    fn ticks_slow(&self, d: Duration, up: bool) -> u64 {
        // u64 nanoseconds cover 584 years; only beyond that pay for u128.
        let ns = d
            .as_secs()
            .checked_mul(NANOS_PER_SEC)
            .and_then(|ns| ns.checked_add(u64::from(d.subsec_nanos())));
        match ns {
            // Cannot overflow: the quotient is below `u64::MAX` unless
            // `tick_ns == 1`, and then there is no remainder.
            Some(ns) => ns / self.tick_ns + u64::from(up && !ns.is_multiple_of(self.tick_ns)),
            None => {
                let (ns, tick) = (d.as_nanos(), u128::from(self.tick_ns));
                let ticks = ns / tick + u128::from(up && !ns.is_multiple_of(tick));
                u64::try_from(ticks).unwrap_or(u64::MAX)
            }
        }
    }

    pub(super) fn instant(&self, ticks: u64) -> Option<Instant> {
        let ns = u128::from(ticks) * u128::from(self.tick_ns);
        let secs = u64::try_from(ns / u128::from(NANOS_PER_SEC)).ok()?;
        let nanos = (ns % u128::from(NANOS_PER_SEC)) as u32;
        self.origin.checked_add(Duration::new(secs, nanos))
    }
}
