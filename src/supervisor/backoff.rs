//! How long a crashed worker waits before it is started again.

use std::time::Duration;

/// The first delay, after a crash of a worker that had been healthy.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay: the doubling stops here.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// A worker that ran this long before it died starts over at
/// [`FIRST_DELAY`].
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// One worker's restart delays: 1 s, doubling up to 30 s, back to 1 s once
/// it ran 60 s before dying. Time is passed in; it reads no clock.
///
/// ```
/// use std::time::Duration;
/// use sockloop::supervisor::Backoff;
///
/// let mut backoff = Backoff::default();
/// let quick = Duration::from_millis(10);
/// assert_eq!(backoff.after_crash(quick), Duration::from_secs(1));
/// assert_eq!(backoff.after_crash(quick), Duration::from_secs(2));
/// assert_eq!(backoff.after_crash(Duration::from_secs(60)), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The delay before restarting a worker that died after running for
    /// `up`; the next delay doubles.
    pub fn after_crash(&mut self, up: Duration) -> Duration {
        if up >= HEALTHY_AFTER {
            self.next = FIRST_DELAY;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_and_reset_after_a_healthy_run() {
        let mut backoff = Backoff::default();
        let quick = Duration::from_secs(59);
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.after_crash(quick).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff.after_crash(HEALTHY_AFTER), FIRST_DELAY);
        assert_eq!(backoff.after_crash(quick), Duration::from_secs(2));
    }
}
