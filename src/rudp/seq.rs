//! Wrapping 32-bit sequence numbers, compared by serial number arithmetic
//! (RFC 1982): `a` is before `b` when `b - a`, wrapped, is below 2^31.

use std::fmt;

/// A packet sequence number.
///
/// ```
/// use sockloop::rudp::Seq;
///
/// let last = Seq(u32::MAX);
/// assert_eq!(last.next(), Seq(0));
/// assert!(last.before(Seq(0))); // wrapping: MAX comes before 0
/// assert_eq!(Seq(2).since(last), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u32);

impl Seq {
    /// The sequence number after this one.
    pub fn next(self) -> Seq {
        self.plus(1)
    }

    /// This number moved `n` ahead.
    pub fn plus(self, n: u32) -> Seq {
        Seq(self.0.wrapping_add(n))
    }

    /// How far `self` is ahead of `earlier` (negative: behind).
    pub fn since(self, earlier: Seq) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// Whether `self` comes strictly before `other`.
    pub fn before(self, other: Seq) -> bool {
        other.since(self) > 0
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_across_the_wrap() {
        let near = Seq(u32::MAX - 1);
        assert!(near.before(near.next()));
        assert!(near.before(near.plus(3)));
        assert!(!near.plus(3).before(near));
        assert!(!near.before(near));
        assert_eq!(near.plus(3), Seq(1));
        assert_eq!(Seq(1).since(near), 3);
        assert_eq!(near.since(Seq(1)), -3);
        // Half the space away is ambiguous (both "behind"): windows stay
        // far smaller than 2^31.
        assert!(Seq(0).before(Seq((1 << 31) - 1)));
        assert_eq!(Seq(1 << 31).since(Seq(0)), i32::MIN);
        assert!(!Seq(0).before(Seq(1 << 31)) && !Seq(1 << 31).before(Seq(0)));
    }
}
