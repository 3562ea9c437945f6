//! The one seeded generator of the crate: xorshift64*, a few lines and a
//! `u64` of state. The bus draws its reconnect jitter from it; the tests,
//! simulations and benches their inputs, link fates and workloads, each
//! reproducible from its seed.
//!
//! Not for anything that must be unpredictable (cookies and keys use
//! `ring`). Public only so the integration tests and benches can share
//! it; not part of the API.

/// xorshift64* (Vigna): deterministic, fast, good enough to pick data,
/// fates and deadlines. `#[inline]` so a bench pays what it paid for its
/// own copy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`. xorshift stays at zero from a zero
    /// state, so a zero seed is replaced by a fixed non-zero one.
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (never for `p <= 0`). Always draws, so
    /// the sequence does not depend on `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        let u = self.unit();
        p > 0.0 && u < p
    }

    /// In `0..n` (`next_u64() % n`); 0 for `n == 0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below((high - low + 1) as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn reproducible_and_never_stuck_at_zero() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut zero = Rng::new(0);
        assert!((0..100).any(|_| zero.next_u64() != 0));
        let mut r = Rng::new(3);
        assert!((0..1000).all(|_| (2..=5).contains(&r.range(2, 5))));
        assert!((0..1000).all(|_| !r.chance(0.0)));
        assert_eq!(r.below(0), 0);
    }
}
