//! Stateless handshake cookies: an HMAC over the client's address and the
//! current key epoch. The server remembers nothing between the cookie it
//! sends and the hello that brings it back; the MAC proves it minted it,
//! for that address, recently.
//!
//! Each epoch has its own key, derived from a secret with HMAC, so keys
//! rotate every epoch without any randomness at run time. A cookie is good
//! in the epoch it was minted in and the next one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::hmac;

use super::packet::Cookie;

/// Why a cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CookieError {
    /// Minted more than one epoch ago (or in the future).
    Expired,
    /// Not minted by this server for this address.
    Forged,
}

/// Mints and checks cookies.
#[derive(Debug)]
pub(crate) struct CookieJar {
    secret: hmac::Key,
    origin: Instant,
    period: Duration,
    /// The newest epoch's key, cached: a flood of hellos costs one MAC each.
    current: (u32, hmac::Key),
}

impl CookieJar {
    /// `secret` should be random (32 bytes); `period` is the key lifetime.
    pub(crate) fn new(secret: &[u8; 32], now: Instant, period: Duration) -> CookieJar {
        let secret = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let current = (0, epoch_key(&secret, 0));
        CookieJar {
            secret,
            origin: now,
            period: period.max(Duration::from_millis(1)),
            current,
        }
    }

    fn epoch(&self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        (elapsed / self.period.as_nanos()) as u32
    }

    fn key(&mut self, epoch: u32) -> hmac::Key {
        if epoch != self.current.0 {
            let key = epoch_key(&self.secret, epoch);
            if epoch > self.current.0 {
                self.current = (epoch, key.clone());
            }
            return key;
        }
        self.current.1.clone()
    }

    /// The two keys of the peer table's hash (`peer_hash`): derived from
    /// the secret, so no one can predict which addresses collide.
    pub(crate) fn table_keys(&self) -> [u64; 2] {
        let tag = hmac::sign(&self.secret, b"rudp peer table");
        let word = |at: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&tag.as_ref()[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        [word(0), word(8)]
    }

    pub(crate) fn mint(&mut self, now: Instant, addr: SocketAddr) -> Cookie {
        let epoch = self.epoch(now);
        let tag = hmac::sign(&self.key(epoch), &message(addr, epoch));
        let mut mac = [0; 32];
        mac.copy_from_slice(tag.as_ref());
        Cookie { epoch, mac }
    }

    pub(crate) fn verify(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        cookie: &Cookie,
    ) -> Result<(), CookieError> {
        let epoch = self.epoch(now);
        if cookie.epoch > epoch || epoch - cookie.epoch > 1 {
            return Err(CookieError::Expired);
        }
        let key = self.key(cookie.epoch);
        // Constant time: a forger learns nothing from how long this takes.
        hmac::verify(&key, &message(addr, cookie.epoch), &cookie.mac)
            .map_err(|_| CookieError::Forged)
    }
}

fn epoch_key(secret: &hmac::Key, epoch: u32) -> hmac::Key {
    let mut input = b"sockloop rudp cookie key ".to_vec();
    input.extend_from_slice(&epoch.to_be_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(secret, &input).as_ref())
}

/// What the MAC covers: the address (family, IP, port) and the epoch.
fn message(addr: SocketAddr, epoch: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    match addr {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn good_for_its_epoch_and_the_next_only() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(&[1; 32], t0, 10 * SECOND);
        let client = addr("127.0.0.1:5000");
        let cookie = jar.mint(t0 + 9 * SECOND, client);
        assert_eq!(cookie.epoch, 0);
        assert_eq!(jar.verify(t0 + 9 * SECOND, client, &cookie), Ok(()));
        assert_eq!(jar.verify(t0 + 19 * SECOND, client, &cookie), Ok(()));
        assert_eq!(
            jar.verify(t0 + 20 * SECOND, client, &cookie),
            Err(CookieError::Expired)
        );
        // Minting in a later epoch rotates the key; old cookies still check.
        let later = jar.mint(t0 + 15 * SECOND, client);
        assert_eq!(later.epoch, 1);
        assert_ne!(later.mac, cookie.mac);
        assert_eq!(jar.verify(t0 + 15 * SECOND, client, &cookie), Ok(()));
    }

    #[test]
    fn forged_or_moved_cookies_fail() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(&[1; 32], t0, 10 * SECOND);
        let client = addr("127.0.0.1:5000");
        let cookie = jar.mint(t0, client);
        for other in ["127.0.0.1:5001", "127.0.0.2:5000", "[::1]:5000"] {
            assert_eq!(
                jar.verify(t0, addr(other), &cookie),
                Err(CookieError::Forged),
                "{other}"
            );
        }
        let mut flipped = cookie;
        flipped.mac[31] ^= 1;
        assert_eq!(jar.verify(t0, client, &flipped), Err(CookieError::Forged));
        let future = Cookie { epoch: 1, ..cookie };
        assert_eq!(jar.verify(t0, client, &future), Err(CookieError::Expired));
        // Another server's secret: forged.
        let mut other = CookieJar::new(&[2; 32], t0, 10 * SECOND);
        assert_eq!(other.verify(t0, client, &cookie), Err(CookieError::Forged));
    }
}
