//! The retransmission timeout of RFC 6298: smoothed RTT and its variation
//! from samples, clamped, and doubled on a timeout (the connection does it
//! only when the peer is silent) until a fresh sample arrives. Karn's rule (no samples from retransmitted packets) is
//! the caller's: it only passes samples of packets sent once.

use std::time::Duration;

/// RTT estimate and the RTO derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Current RTO, backoff included.
    rto: Duration,
    /// The RTO before any sample, clamped.
    initial: Duration,
    min: Duration,
    max: Duration,
}

/// The clock granularity `G` of RFC 6298: the timer wheel's tick.
const GRANULARITY: Duration = Duration::from_millis(1);

impl RttEstimator {
    /// Before any sample the RTO is `initial` (RFC 6298: 1 s), clamped.
    pub fn new(initial: Duration, min: Duration, max: Duration) -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min, max),
            initial: initial.clamp(min, max),
            min,
            max,
        }
    }

    /// Takes an RTT sample of a packet sent exactly once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sockloop::rudp::RttEstimator;
    ///
    /// let ms = Duration::from_millis;
    /// let mut rtt = RttEstimator::new(ms(1000), ms(10), ms(60_000));
    /// rtt.sample(ms(100));
    /// assert_eq!(rtt.rto(), ms(300)); // SRTT + 4 * RTTVAR = 100 + 4 * 50
    /// ```
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let error = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + error) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        // A fresh sample also ends any backoff.
        self.rto = self.computed();
    }

    fn computed(&self) -> Duration {
        match self.srtt {
            Some(srtt) => (srtt + (self.rttvar * 4).max(GRANULARITY)).clamp(self.min, self.max),
            None => self.initial,
        }
    }

    /// A retransmission timer expired: double the RTO, up to the maximum.
    pub fn back_off(&mut self) {
        self.rto = (self.rto * 2).min(self.max);
    }

    /// New data was acknowledged: the backoff ends, as in Linux, even
    /// without a sample (every packet acknowledged may have been resent,
    /// and Karn's rule would otherwise keep the RTO backed off for good).
    pub fn reset_backoff(&mut self) {
        self.rto = self.computed();
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed RTT, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rfc_6298_arithmetic_exactly() {
        let mut rtt = RttEstimator::new(ms(1000), ms(1), ms(60_000));
        assert_eq!((rtt.rto(), rtt.srtt()), (ms(1000), None));
        rtt.sample(ms(100)); // SRTT 100, RTTVAR 50
        assert_eq!((rtt.srtt(), rtt.rto()), (Some(ms(100)), ms(300)));
        rtt.sample(ms(200)); // RTTVAR = (150 + 100) / 4 = 62.5; SRTT = (700 + 200) / 8 = 112.5
        assert_eq!(rtt.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(rtt.rto(), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn backoff_doubles_to_the_max_and_a_sample_resets_it() {
        let mut rtt = RttEstimator::new(ms(1000), ms(200), ms(3000));
        rtt.back_off();
        assert_eq!(rtt.rto(), ms(2000));
        rtt.back_off();
        rtt.back_off();
        assert_eq!(rtt.rto(), ms(3000));
        rtt.sample(ms(10));
        assert_eq!(rtt.rto(), ms(200), "clamped to the minimum");
    }

    #[test]
    fn new_data_acknowledged_ends_the_backoff() {
        let mut rtt = RttEstimator::new(ms(1000), ms(100), ms(60_000));
        rtt.sample(ms(100)); // RTO 300
        rtt.back_off();
        rtt.back_off();
        assert_eq!(rtt.rto(), ms(1200));
        rtt.reset_backoff();
        assert_eq!(rtt.rto(), ms(300));
        // Before any sample: back to the initial RTO.
        let mut fresh = RttEstimator::new(ms(500), ms(100), ms(60_000));
        fresh.back_off();
        fresh.reset_backoff();
        assert_eq!(fresh.rto(), ms(500));
    }

    #[test]
    fn converges_to_a_steady_rtt() {
        let mut rtt = RttEstimator::new(ms(1000), ms(1), ms(60_000));
        for _ in 0..100 {
            rtt.sample(ms(40));
        }
        assert_eq!(rtt.srtt(), Some(ms(40)));
        // RTTVAR decays towards 0, so the RTO approaches SRTT + G.
        assert!(rtt.rto() <= ms(42), "{:?}", rtt.rto());
    }
}
