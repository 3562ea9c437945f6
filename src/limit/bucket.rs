//! Token buckets: a [`Rate`] (events per second or per minute, with a
//! burst) and the 24 bytes of [`TokenBucket`] state that enforce it.
//!
//! The arithmetic is exact integers. A token is split into units so that
//! the bucket gains a whole number of units per nanosecond: a rate of
//! `count` per `period` gains `count / g` units per nanosecond and a token
//! costs `period_ns / g` units, `g` being their greatest common divisor.
//! Refilling adds `elapsed_ns × gain` and moves the timestamp to `now`, so
//! nothing is rounded away between calls and a bucket never drifts: a
//! `3/s` bucket gives its third token after exactly one second, however
//! often it was looked at in between.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MIN: u64 = 60 * NANOS_PER_SEC;

/// The largest burst (and so the largest count, which is the default burst)
/// a per-minute rate accepts: `burst × 60 s` in nanoseconds must fit in 64
/// bits. That is 5.1 million a second; write larger rates per second,
/// which take any `u32`.
pub const MAX_PER_MINUTE_BURST: u32 = (u64::MAX / NANOS_PER_MIN) as u32;

/// A sustained rate of `count` events per second or per minute, allowing
/// bursts of up to `burst` events.
///
/// A [`TokenBucket`] enforcing it holds at most `burst` tokens and gains
/// `count` tokens per period, continuously: `600/m` and `10/s` refill at
/// the same speed (one token every 100 ms), they differ only in their
/// default burst (600 and 10). "No limit" is not a `Rate`: it is `None`,
/// which is what [`parse_rate`] returns for `"0"`.
///
/// ```
/// use std::time::Duration;
/// use sockloop::limit::Rate;
///
/// let rate: Rate = "50/s:100".parse()?;
/// assert_eq!(rate, Rate::per_second(50).with_burst(100));
/// assert_eq!((rate.count(), rate.period(), rate.burst()), (50, Duration::from_secs(1), 100));
/// assert_eq!(rate.interval(), Duration::from_millis(20));
/// assert_eq!(rate.to_string(), "50/s:100");
/// assert_eq!(Rate::per_minute(600).to_string(), "600/m");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    burst: u32,
    period_ns: u64,
    /// Units one token is worth: `period_ns / gcd(count, period_ns)`.
    token: u64,
    /// Units gained per nanosecond: `count / gcd(count, period_ns)`.
    gain: u64,
}

impl Rate {
    /// `count` events per second, with a burst of `count`.
    ///
    /// # Panics
    ///
    /// If `count` is 0 (no limit is `None`, not a rate).
    pub const fn per_second(count: u32) -> Rate {
        Rate::new(count, NANOS_PER_SEC)
    }

    /// `count` events per minute, with a burst of `count`.
    ///
    /// # Panics
    ///
    /// If `count` is 0 or above [`MAX_PER_MINUTE_BURST`].
    pub const fn per_minute(count: u32) -> Rate {
        Rate::new(count, NANOS_PER_MIN)
    }

    const fn new(count: u32, period_ns: u64) -> Rate {
        assert!(count > 0, "a rate needs a count of at least 1");
        let divisor = gcd(count as u64, period_ns);
        Rate {
            count,
            burst: 0,
            period_ns,
            token: period_ns / divisor,
            gain: count as u64 / divisor,
        }
        .with_burst(count)
    }

    /// The same rate with bursts of up to `burst` events.
    ///
    /// # Panics
    ///
    /// If `burst` is 0, or above [`MAX_PER_MINUTE_BURST`] on a per-minute
    /// rate.
    pub const fn with_burst(self, burst: u32) -> Rate {
        assert!(burst > 0, "a burst must be at least 1");
        assert!(
            burst as u64 <= u64::MAX / self.period_ns,
            "burst too large for a per-minute rate"
        );
        Rate { burst, ..self }
    }

    /// Events per [`period`](Rate::period).
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// One second or one minute.
    pub const fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// The most events allowed at once, after a quiet spell.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one token takes to come back, rounded up to a nanosecond:
    /// 20 ms for `50/s`, 333,333,334 ns for `3/s`.
    pub const fn interval(&self) -> Duration {
        Duration::from_nanos(self.token.div_ceil(self.gain))
    }

    /// A full bucket, in units. Fits: `burst × token <= burst × period_ns`,
    /// which [`with_burst`](Rate::with_burst) keeps within a `u64`.
    const fn capacity(&self) -> u64 {
        self.burst as u64 * self.token
    }

    /// `n` tokens in units; `None` beyond a full bucket.
    fn cost(&self, n: u32) -> Option<u64> {
        (n <= self.burst).then(|| u64::from(n) * self.token)
    }
}

const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `50/s`, `600/m`, and `:BURST` when the burst is not the count.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.period_ns == NANOS_PER_MIN {
            "m"
        } else {
            "s"
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst != self.count {
            write!(f, ":{}", self.burst)?;
        }
        Ok(())
    }
}

/// Shows the written form, `Rate(50/s:100)`: the internal units mean
/// nothing to a reader.
impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rate({self})")
    }
}

/// Parses `N/s`, `N/m`, `N/s:BURST` or `N/m:BURST`; `"0"` (no limit) is
/// an error here, use [`parse_rate`] where no limit is allowed.
impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        parse_rate(text)?
            .ok_or_else(|| format!("bad rate {text:?}: expected N/s or N/s:BURST, not 0"))
    }
}

/// Parses a rate as the CLI writes it: `50/s` (burst 50), `50/s:100`
/// (burst 100), `600/m` (per minute, burst 600), or `0` for no limit
/// (`Ok(None)`). Surrounding whitespace is ignored; counts and bursts are
/// 1 to 4,294,967,295 ([`MAX_PER_MINUTE_BURST`] per minute).
///
/// ```
/// use sockloop::limit::{parse_rate, Rate};
///
/// assert_eq!(parse_rate("50/s:100"), Ok(Some(Rate::per_second(50).with_burst(100))));
/// assert_eq!(parse_rate("0"), Ok(None));
/// assert_eq!(
///     parse_rate("fast"),
///     Err(r#"bad rate "fast": expected N/s or N/s:BURST (also N/m; 0 for no limit)"#.into())
/// );
/// ```
pub fn parse_rate(text: &str) -> Result<Option<Rate>, String> {
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(None);
    }
    let expected =
        || format!("bad rate {text:?}: expected N/s or N/s:BURST (also N/m; 0 for no limit)");
    let (count, rest) = trimmed.split_once('/').ok_or_else(expected)?;
    let (unit, burst) = match rest.split_once(':') {
        Some((unit, burst)) => (unit, Some(burst)),
        None => (rest, None),
    };
    let period_ns = match unit {
        "s" => NANOS_PER_SEC,
        "m" => NANOS_PER_MIN,
        _ => return Err(expected()),
    };
    let number = |digits: &str, what: &str| -> Result<u32, String> {
        // `u32::from_str` also takes a leading `+`; a rate is plain digits.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(expected());
        }
        match digits.parse::<u32>() {
            Ok(0) => Err(format!(
                "bad rate {text:?}: the {what} must be at least 1 (0 alone means no limit)"
            )),
            Ok(n) if period_ns == NANOS_PER_MIN && n > MAX_PER_MINUTE_BURST => Err(format!(
                "bad rate {text:?}: a per-minute {what} can be at most {MAX_PER_MINUTE_BURST} \
                 (write it per second)"
            )),
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "bad rate {text:?}: the {what} can be at most {}",
                u32::MAX
            )),
        }
    };
    let count = number(count, "count")?;
    let burst = match burst {
        Some(burst) => number(burst, "burst")?,
        None => count,
    };
    Ok(Some(Rate::new(count, period_ns).with_burst(burst)))
}

/// The state of one token bucket: 24 bytes, the level and when it was last
/// brought up to date.
///
/// The [`Rate`] is not stored: every source and every connection of a
/// listener share one, so it lives once in the configuration and is passed
/// to each call. Pass the same rate every time; the level is kept in units
/// of that rate, so another rate would reinterpret it (harmlessly, but
/// meaninglessly). The bucket starts full.
///
/// Time never runs backwards for a bucket: a `now` earlier than the last
/// update (two threads racing with their own clock readings) refills
/// nothing and moves nothing back.
///
/// ```
/// use std::time::{Duration, Instant};
/// use sockloop::limit::{Rate, TokenBucket};
///
/// let rate = Rate::per_second(2); // burst 2, one token every 500 ms
/// let t0 = Instant::now();
/// let mut bucket = TokenBucket::new(&rate, t0);
/// assert!(bucket.take(&rate, t0));
/// assert!(bucket.take(&rate, t0));
/// assert!(!bucket.take(&rate, t0)); // empty
/// assert_eq!(bucket.time_until(&rate, t0, 1), Some(Duration::from_millis(500)));
/// assert!(bucket.take(&rate, t0 + Duration::from_millis(500)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// The level at `updated`, in the rate's units (see the module docs).
    units: u64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket: `rate.burst()` tokens at `now`.
    pub fn new(rate: &Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            units: rate.capacity(),
            updated: now,
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn take(&mut self, rate: &Rate, now: Instant) -> bool {
        self.take_n(rate, now, 1)
    }

    /// Takes `n` tokens if all of them are there at `now`; takes nothing
    /// otherwise. More than `rate.burst()` tokens are never there; zero
    /// tokens always are.
    pub fn take_n(&mut self, rate: &Rate, now: Instant, n: u32) -> bool {
        if now > self.updated {
            self.units = self.level_at(rate, now);
            self.updated = now;
        }
        match rate.cost(n) {
            Some(cost) if cost <= self.units => {
                self.units -= cost;
                true
            }
            _ => false,
        }
    }

    /// Whole tokens there at `now` (at most `rate.burst()`).
    pub fn available(&self, rate: &Rate, now: Instant) -> u32 {
        // At most `burst`, so the division fits a `u32`.
        (self.level_at(rate, now) / rate.token) as u32
    }

    /// How long after `now` `n` tokens will be there (zero if they are
    /// now); `None` if `n` exceeds the burst and so never will be.
    pub fn time_until(&self, rate: &Rate, now: Instant, n: u32) -> Option<Duration> {
        let missing = rate.cost(n)?.saturating_sub(self.level_at(rate, now));
        // Rounded up: the first nanosecond at which the tokens are there.
        Some(Duration::from_nanos(missing.div_ceil(rate.gain)))
    }

    /// The level at `now`, capped at a full bucket. The product is done in
    /// 128 bits, so even centuries of idling at `u32::MAX/s` cannot wrap.
    fn level_at(&self, rate: &Rate, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        let level = u128::from(self.units).saturating_add(elapsed.saturating_mul(rate.gain.into()));
        // The cap fits a u64, so the conversion cannot fail.
        level.min(rate.capacity().into()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const NS: Duration = Duration::from_nanos(1);

    fn rate(text: &str) -> Rate {
        text.parse().unwrap()
    }

    #[test]
    fn state_is_24_bytes() {
        assert_eq!(std::mem::size_of::<TokenBucket>(), 24);
        assert_eq!(std::mem::size_of::<Option<TokenBucket>>(), 24);
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("50/s"), Ok(Some(Rate::per_second(50))));
        assert_eq!(rate("50/s").burst(), 50);
        assert_eq!(rate("50/s:100").burst(), 100);
        assert_eq!(rate("50/s:1").burst(), 1);
        assert_eq!(rate(" 600/m ").interval(), 100 * MS);
        assert_eq!(rate("600/m").burst(), 600);
        assert_eq!(rate("1/m").interval(), Duration::from_secs(60));
        assert_eq!(rate("3/s").interval(), Duration::from_nanos(333_333_334));
        assert_eq!(rate("4294967295/s").count(), u32::MAX);
        assert_eq!(rate("1/m:307445734").burst(), MAX_PER_MINUTE_BURST);
        assert_eq!(parse_rate("0"), Ok(None));
        assert_eq!(parse_rate(" 0 "), Ok(None));
        for text in ["50/s", "50/s:100", "1/m", "600/m:1", "4294967295/s:1"] {
            assert_eq!(rate(text).to_string(), text);
        }
        assert_eq!(rate("7/s:7").to_string(), "7/s");
        assert_eq!(format!("{:?}", rate("7/m:9")), "Rate(7/m:9)");
    }

    #[test]
    fn rejects_bad_rates_with_clear_errors() {
        let expected = |text: &str| {
            format!("bad rate {text:?}: expected N/s or N/s:BURST (also N/m; 0 for no limit)")
        };
        for text in [
            "",
            "x",
            "50",
            "50/",
            "/s",
            "50/h",
            "50/S",
            "50/s:",
            "50/s:x",
            "+5/s",
            "-5/s",
            "5 /s",
            "5/s:+3",
            "1.5/s",
            "50/s:100:2",
            "00",
        ] {
            assert_eq!(parse_rate(text), Err(expected(text)), "{text:?}");
        }
        assert_eq!(
            parse_rate("0/s"),
            Err(r#"bad rate "0/s": the count must be at least 1 (0 alone means no limit)"#.into())
        );
        assert_eq!(
            parse_rate("5/s:0"),
            Err(
                r#"bad rate "5/s:0": the burst must be at least 1 (0 alone means no limit)"#.into()
            )
        );
        assert_eq!(
            parse_rate("4294967296/s"),
            Err(r#"bad rate "4294967296/s": the count can be at most 4294967295"#.into())
        );
        let too_big = "a per-minute burst can be at most 307445734 (write it per second)";
        assert_eq!(
            parse_rate("1/m:307445735"),
            Err(format!(r#"bad rate "1/m:307445735": {too_big}"#))
        );
        assert_eq!(
            "0".parse::<Rate>(),
            Err(r#"bad rate "0": expected N/s or N/s:BURST, not 0"#.into())
        );
    }

    #[test]
    #[should_panic(expected = "a rate needs a count of at least 1")]
    fn zero_count_panics() {
        let _ = Rate::per_second(0);
    }

    #[test]
    fn burst_then_empty_then_one_token_per_interval() {
        let rate = rate("50/s:100"); // a token every 20 ms
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(&rate, t0);
        assert_eq!(bucket.available(&rate, t0), 100);
        for _ in 0..100 {
            assert!(bucket.take(&rate, t0));
        }
        assert!(!bucket.take(&rate, t0));
        assert_eq!(bucket.available(&rate, t0), 0);
        assert_eq!(bucket.time_until(&rate, t0, 1), Some(20 * MS));
        assert_eq!(bucket.time_until(&rate, t0, 3), Some(60 * MS));

        assert!(!bucket.take(&rate, t0 + 20 * MS - NS));
        assert!(bucket.take(&rate, t0 + 20 * MS));
        assert!(!bucket.take(&rate, t0 + 20 * MS));
        assert_eq!(bucket.time_until(&rate, t0 + 30 * MS, 1), Some(10 * MS));
        assert!(bucket.take(&rate, t0 + 40 * MS));
    }

    #[test]
    fn fractional_intervals_do_not_drift() {
        // 3/s: 333,333,333.3 ns a token. Looking often must not lose the
        // thirds: three tokens come back after exactly one second.
        let rate = rate("3/s");
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(&rate, t0);
        assert!(bucket.take_n(&rate, t0, 3));
        assert!(!bucket.take(&rate, t0 + Duration::from_nanos(333_333_333)));
        assert!(bucket.take(&rate, t0 + Duration::from_nanos(333_333_334)));
        for ns in (333_333_335..1_000_000_000).step_by(7_777_777) {
            assert_eq!(bucket.available(&rate, t0 + Duration::from_nanos(ns)), {
                // Tokens minted by `ns`, minus the one taken.
                (ns * 3 / 1_000_000_000 - 1) as u32
            });
            let _ = bucket.take_n(&rate, t0 + Duration::from_nanos(ns), 0);
        }
        assert!(!bucket.take_n(&rate, t0 + Duration::from_nanos(999_999_999), 2));
        assert!(bucket.take_n(&rate, t0 + Duration::from_secs(1), 2));
        assert_eq!(bucket.available(&rate, t0 + Duration::from_secs(1)), 0);
    }

    #[test]
    fn take_n_is_all_or_nothing_and_capped_at_burst() {
        let rate = rate("10/s:5");
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(&rate, t0);
        assert!(!bucket.take_n(&rate, t0, 6));
        assert_eq!(bucket.available(&rate, t0), 5);
        assert!(bucket.take_n(&rate, t0, 4));
        assert!(!bucket.take_n(&rate, t0, 2));
        assert!(bucket.take_n(&rate, t0, 0));
        assert_eq!(bucket.time_until(&rate, t0, 6), None);
        assert_eq!(bucket.time_until(&rate, t0, 0), Some(Duration::ZERO));
        assert_eq!(bucket.time_until(&rate, t0, 5), Some(400 * MS));
        // Refills to the burst and no further.
        assert_eq!(bucket.available(&rate, t0 + 400 * MS), 5);
        assert_eq!(bucket.available(&rate, t0 + Duration::from_secs(10)), 5);
        assert!(bucket.take_n(&rate, t0 + Duration::from_secs(10), 5));
        assert!(!bucket.take(&rate, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn long_idle_does_not_overflow() {
        let t0 = Instant::now();
        let much_later = t0 + Duration::from_secs(1_000_000_000_000); // 31,700 years
        for rate in [
            rate("4294967295/s:4294967295"),
            rate("1/m"),
            rate("7/m:307445734"),
        ] {
            let mut bucket = TokenBucket::new(&rate, t0);
            assert!(bucket.take_n(&rate, t0, rate.burst()));
            assert_eq!(bucket.available(&rate, much_later), rate.burst());
            assert!(bucket.take_n(&rate, much_later, rate.burst()));
            assert!(!bucket.take(&rate, much_later));
        }
    }

    #[test]
    fn one_per_minute() {
        let rate = rate("1/m");
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(&rate, t0);
        assert!(bucket.take(&rate, t0));
        assert!(!bucket.take(&rate, t0 + Duration::from_secs(59)));
        assert_eq!(
            bucket.time_until(&rate, t0 + Duration::from_secs(59), 1),
            Some(Duration::from_secs(1))
        );
        assert!(!bucket.take(&rate, t0 + Duration::from_secs(60) - NS));
        assert!(bucket.take(&rate, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn huge_rates() {
        // u32::MAX per second: 4.29 tokens a nanosecond.
        let rate = rate("4294967295/s");
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(&rate, t0);
        assert_eq!(bucket.available(&rate, t0), u32::MAX);
        assert!(bucket.take_n(&rate, t0, u32::MAX));
        assert_eq!(bucket.available(&rate, t0 + NS), 4);
        assert_eq!(bucket.available(&rate, t0 + 1000 * NS), 4294);
        assert_eq!(bucket.available(&rate, t0 + MS), 4_294_967);
        assert_eq!(
            bucket.time_until(&rate, t0, u32::MAX),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            bucket.available(&rate, t0 + Duration::from_secs(1)),
            u32::MAX
        );
    }

    #[test]
    fn time_running_backwards_refills_nothing() {
        let rate = rate("1/s");
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let mut bucket = TokenBucket::new(&rate, t1);
        assert!(bucket.take(&rate, t1));
        // A racing thread's older reading: no refill, no rewind.
        assert!(!bucket.take(&rate, t0));
        assert!(!bucket.take(&rate, t1 + Duration::from_secs(1) - NS));
        assert!(bucket.take(&rate, t1 + Duration::from_secs(1)));
    }
}
