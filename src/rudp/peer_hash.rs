//! The peer table's hash: a keyed folded multiply (foldhash's step), far
//! cheaper than SipHash for a socket address, which the server hashes
//! several times per datagram.
//!
//! The keys come from the endpoint's secret (see `CookieJar::table_key`),
//! so a client cannot choose addresses that collide without knowing it;
//! and a peer enters the table only from an address proven by a cookie,
//! at most `Config::max_peers_per_source` per source.

use std::hash::{BuildHasher, Hasher};

/// Builds [`PeerHasher`]s with the table's two keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerHash {
    keys: [u64; 2],
}

impl PeerHash {
    pub(crate) fn new(keys: [u64; 2]) -> PeerHash {
        // An odd multiplier keeps every step a bijection of the state.
        PeerHash {
            keys: [keys[0], keys[1] | 1],
        }
    }
}

impl BuildHasher for PeerHash {
    type Hasher = PeerHasher;

    fn build_hasher(&self) -> PeerHasher {
        PeerHasher {
            state: self.keys[0],
            multiplier: self.keys[1],
        }
    }
}

/// One hash in progress: each word written is folded in with a 64 × 64 →
/// 128-bit multiply whose halves are xored.
#[derive(Debug)]
pub(crate) struct PeerHasher {
    state: u64,
    multiplier: u64,
}

impl PeerHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(self.multiplier);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for PeerHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length goes in too, so "a" and "a\0" differ.
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        // One more round, so the last word written reaches every bit.
        let product = u128::from(self.state) * u128::from(self.multiplier.rotate_left(32) | 1);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn addresses_spread_and_keys_change_the_hash() {
        let hash = PeerHash::new([0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321]);
        let other = PeerHash::new([1, 3]);
        let addrs: Vec<SocketAddr> = (0..4096u16)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .chain((0..=255u8).map(|last| SocketAddr::from(([10, 0, 0, last], 9))))
            .chain(["[::1]:9".parse().unwrap(), "[::2]:9".parse().unwrap()])
            .collect();
        let hashes: HashSet<u64> = addrs.iter().map(|a| hash.hash_one(a)).collect();
        assert_eq!(hashes.len(), addrs.len(), "no two addresses collide");
        // The low 12 bits (what a table of 4096 buckets uses) spread too:
        // no bucket holds more than a handful of the 4096 ports.
        let mut buckets = vec![0u32; 4096];
        for a in &addrs[..4096] {
            buckets[(hash.hash_one(a) & 4095) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| n <= 8),
            "{:?}",
            buckets.iter().max()
        );
        let a = addrs[0];
        assert_ne!(hash.hash_one(a), other.hash_one(a));
        assert_eq!(hash.hash_one(a), hash.hash_one(a));
    }

    #[test]
    fn byte_strings_of_different_lengths_differ() {
        let hash = PeerHash::new([5, 7]);
        let one = |bytes: &[u8]| {
            let mut h = hash.build_hasher();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(one(b"a"), one(b"a\0"));
        assert_ne!(one(b"abcdefgh"), one(b"abcdefgh\0"));
    }
}
