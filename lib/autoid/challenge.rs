//! Stateless v2 challenges: issuing one stores nothing, so no number of requests can fill a
//! table and deny challenges to others.
//!
//! The 32-byte nonce is `r(12) ‖ expiry(4) ‖ tag(16)`: `r` random, `expiry` in tenths of a
//! second since the process started (big-endian), `tag` the first 16 bytes of an HMAC-SHA256
//! under a per-process random key over `r`, the expiry and the client's source group
//! ([`Source`]). The server's ephemeral X25519 key and the byte ranges are derived from the
//! nonce with the same key, so `/v2/verify` recomputes everything from the nonce it gets back.
//!
//! Single use is still enforced: a nonce is remembered in [`Spent`] from its first use until it
//! expires. What bounds that set: only nonces this process issued, to the group presenting
//! them, and not yet expired get in, so one group adds at most what [`Issuer`] lets it have
//! within one TTL; across groups a hard cap holds, and at the cap the entry that expires first
//! is forgotten. Forgetting is harmless: a second answer to a forgotten nonce is sealed to the
//! same client's X25519 share and key K, which only that client holds.
//!
//! Issuing is throttled per source group by [`Issuer`], a token bucket per [`Source`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use zeroize::Zeroizing;

use super::wire::{self, WireError};
use crate::daemon::Source;
use crate::secret::{ct_eq, random_bytes};

pub type Nonce = [u8; wire::V2_NONCE_LEN];

const R_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a nonce is not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("unknown challenge (not issued by this server, or to another address)")]
    Unknown,
    #[error("challenge expired")]
    Expired,
    #[error("challenge already used")]
    Used,
}

/// A MAC key of one key epoch: nonces, the server's X25519 keys and the ranges of the
/// challenges issued in that epoch come from it.
pub type Key = Zeroizing<Vec<u8>>;

/// Mints and checks nonces, and derives each challenge's key and ranges from its nonce.
///
/// The MAC key changes every TTL (a fresh random key per epoch, the last two kept): a nonce
/// is answered within one TTL of its issue, so its epoch's key is still there, and a memory
/// dump of the running process opens at most the sessions of the last two TTLs, as the
/// stored ephemeral keys of pending challenges did.
pub struct Minter {
    keys: Mutex<[(u64, Key); 2]>,
    base: Instant,
    ttl: u64,
}

fn tenths(d: Duration) -> u64 {
    d.as_millis()
        .div_ceil(100)
        .clamp(1, u128::from(u32::MAX) / 4) as u64
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Key {
    let run = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let k = PKey::hmac(key)?;
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &k)?;
        for p in parts {
            s.update(&(p.len() as u32).to_be_bytes())?;
            s.update(p)?;
        }
        s.sign_to_vec()
    };
    // HMAC-SHA256 does not fail short of memory exhaustion; an all-zero MAC then matches no
    // tag (the check computes the same MAC, which fails too, and compares with a stored tag).
    Zeroizing::new(run().unwrap_or_else(|_| vec![0; 32]))
}

fn tag(key: &[u8], r: &[u8], expiry: &[u8], src: Source) -> Key {
    mac(
        key,
        &[
            b"autoid-v2 challenge",
            r,
            expiry,
            src.to_string().as_bytes(),
        ],
    )
}

impl Minter {
    /// A minter with fresh random keys: nonces of an earlier process are unknown to it.
    pub fn new(ttl: Duration) -> Minter {
        Minter {
            keys: Mutex::new([
                (u64::MAX, Zeroizing::new(Vec::new())),
                (u64::MAX, Zeroizing::new(Vec::new())),
            ]),
            base: Instant::now(),
            ttl: tenths(ttl),
        }
    }

    fn now(&self) -> u64 {
        (self.base.elapsed().as_millis() / 100) as u64
    }

    /// The key epoch of a nonce expiring at `exp` (its issue time over the TTL).
    fn epoch_of(&self, exp: u32) -> u64 {
        u64::from(exp).saturating_sub(self.ttl) / self.ttl
    }

    /// The key of `epoch`, made if `create` and it is the newest; None once it was replaced.
    fn key(&self, epoch: u64, create: bool) -> Option<Key> {
        let mut k = self.keys.lock().ok()?;
        if create {
            // Keys older than the previous epoch are wiped even when no nonce of their
            // slot's parity has been minted since (a quiet server keeps no old key).
            for old in k.iter_mut() {
                if old.0 != u64::MAX && old.0.saturating_add(1) < epoch {
                    *old = (u64::MAX, Zeroizing::new(Vec::new()));
                }
            }
        }
        let slot = &mut k[(epoch % 2) as usize];
        if slot.0 != epoch {
            if !create {
                return None;
            }
            *slot = (epoch, Zeroizing::new(random_bytes(32)));
        }
        Some(slot.1.clone())
    }

    /// A new nonce for a client of group `src`, and the key to derive its challenge with.
    pub fn mint(&self, src: Source) -> Option<(Nonce, Key)> {
        let now = self.now();
        let key = self.key(now / self.ttl, true)?;
        let r = random_bytes(R_LEN);
        let exp = u32::try_from(now + self.ttl).ok()?.to_be_bytes();
        let tag = tag(&key, &r, &exp, src);
        let mut n = [0u8; wire::V2_NONCE_LEN];
        n[..R_LEN].copy_from_slice(&r);
        n[R_LEN..R_LEN + 4].copy_from_slice(&exp);
        n[R_LEN + 4..].copy_from_slice(&tag[..TAG_LEN]);
        Some((n, key))
    }

    /// Checks that this process minted `n` for group `src` and that it has not expired;
    /// returns its expiry (for [`Spent`]) and its key.
    pub fn check(&self, n: &Nonce, src: Source) -> Result<(u32, Key), NonceError> {
        let (r, rest) = n.split_at(R_LEN);
        let (exp_b, t) = rest.split_at(4);
        let exp = u32::from_be_bytes([exp_b[0], exp_b[1], exp_b[2], exp_b[3]]);
        let expired = self.now() >= u64::from(exp);
        let Some(key) = self.key(self.epoch_of(exp), false) else {
            return Err(if expired {
                NonceError::Expired
            } else {
                NonceError::Unknown
            });
        };
        let want = tag(&key, r, exp_b, src);
        if !ct_eq(&want[..TAG_LEN], t) {
            return Err(NonceError::Unknown);
        }
        if expired {
            return Err(NonceError::Expired);
        }
        Ok((exp, key))
    }

    /// The server's ephemeral X25519 key of the challenge `n`.
    pub fn ephemeral(key: &[u8], n: &Nonce) -> Result<PKey<Private>, WireError> {
        let seed = mac(key, &[b"autoid-v2 x25519", n]);
        PKey::private_key_from_raw_bytes(&seed, Id::X25519)
            .map_err(|e| WireError::Crypto(e.to_string()))
    }

    /// 16 bytes of the challenge's deterministic randomness number `i`.
    pub fn stream(key: &[u8], n: &Nonce, i: usize) -> [u8; 16] {
        let m = mac(key, &[b"autoid-v2 ranges", n, &(i as u64).to_be_bytes()]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&m[..16]);
        out
    }

    /// Tenths of a second since start: the clock expiries are counted in.
    pub fn clock(&self) -> u32 {
        self.now().min(u64::from(u32::MAX)) as u32
    }
}

/// Nonces already used, each until its expiry; at most `cap` entries.
pub struct Spent {
    cap: usize,
    set: Mutex<BTreeSet<(u32, Nonce)>>,
}

impl Spent {
    pub fn new(cap: usize) -> Spent {
        Spent {
            cap: cap.max(1),
            set: Mutex::new(BTreeSet::new()),
        }
    }

    /// Marks `n` (expiring at `exp`) used; `Err(Used)` if it already was. `now` is
    /// [`Minter::clock`].
    pub fn spend(&self, n: &Nonce, exp: u32, now: u32) -> Result<(), NonceError> {
        let Ok(mut s) = self.set.lock() else {
            return Err(NonceError::Used);
        };
        while s.first().is_some_and(|(e, _)| *e <= now) {
            s.pop_first();
        }
        if !s.insert((exp, *n)) {
            return Err(NonceError::Used);
        }
        while s.len() > self.cap {
            s.pop_first();
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.set.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-source token buckets for issuing challenges: `burst` at once, then `rate` per second
/// (a rate of 0 turns the limit off).
pub struct Issuer {
    burst: f64,
    rate: f64,
    max_sources: usize,
    map: Mutex<HashMap<Source, (f64, Instant)>>,
}

impl Issuer {
    pub fn new(burst: u32, rate: f64, max_sources: usize) -> Issuer {
        Issuer {
            burst: f64::from(burst.max(1)),
            rate: if rate.is_finite() { rate.max(0.0) } else { 0.0 },
            max_sources: max_sources.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `src`; false when its bucket is empty.
    pub fn take(&self, src: Source) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let Ok(mut m) = self.map.lock() else {
            return false;
        };
        let now = Instant::now();
        let (burst, rate) = (self.burst, self.rate);
        let level = |(tokens, at): &(f64, Instant)| {
            (tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst)
        };
        if !m.contains_key(&src) && m.len() >= self.max_sources {
            // A full bucket is the same as none: forget those first. If every source is
            // still busy (a flood from more groups than the cap), start afresh rather than
            // refuse newcomers: issuing is cheap, and the cap only bounds memory.
            m.retain(|_, b| level(b) < burst);
            if m.len() >= self.max_sources {
                m.clear();
            }
        }
        let b = m.entry(src).or_insert((burst, now));
        let tokens = level(b);
        if tokens < 1.0 {
            *b = (tokens, now);
            return false;
        }
        *b = (tokens - 1.0, now);
        true
    }

    pub fn sources(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Source {
        Source::of_ip(s.parse().unwrap())
    }

    #[test]
    fn nonces_are_bound_to_this_process_the_group_and_the_clock() {
        let m = Minter::new(Duration::from_millis(300));
        let (n, key) = m.mint(src("127.0.0.5")).unwrap();
        // 127/8 is one group: another loopback address may answer.
        assert!(m.check(&n, src("127.0.0.1")).is_ok());
        assert_eq!(m.check(&n, src("10.0.0.1")), Err(NonceError::Unknown));
        assert_eq!(
            Minter::new(Duration::from_secs(9)).check(&n, src("127.0.0.1")),
            Err(NonceError::Unknown)
        );
        let mut bad = n;
        bad[3] ^= 1;
        assert_eq!(m.check(&bad, src("127.0.0.1")), Err(NonceError::Unknown));
        // A later expiry written in: the tag no longer matches.
        let mut later = n;
        later[R_LEN + 2] ^= 0x10;
        assert_eq!(m.check(&later, src("127.0.0.1")), Err(NonceError::Unknown));
        // Derivations are deterministic per nonce and differ between nonces.
        let (n2, _) = m.mint(src("127.0.0.5")).unwrap();
        assert_ne!(n, n2);
        assert_eq!(m.check(&n, src("127.0.0.1")).unwrap().1, key);
        let pk = |n: &Nonce| wire::x25519_public(&Minter::ephemeral(&key, n).unwrap()).unwrap();
        assert_eq!(pk(&n), pk(&n));
        assert_ne!(pk(&n), pk(&n2));
        assert_eq!(Minter::stream(&key, &n, 1), Minter::stream(&key, &n, 1));
        assert_ne!(Minter::stream(&key, &n, 1), Minter::stream(&key, &n, 2));
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(m.check(&n, src("127.0.0.1")), Err(NonceError::Expired));
        // Two epochs on, the key itself is gone (a new one was made for newer nonces).
        let _ = m.mint(src("127.0.0.5"));
        std::thread::sleep(Duration::from_millis(350));
        let (n3, _) = m.mint(src("127.0.0.5")).unwrap();
        assert_eq!(m.check(&n, src("127.0.0.1")), Err(NonceError::Expired));
        assert!(m.check(&n3, src("127.0.0.1")).is_ok());
        assert!(m.keys.lock().unwrap().iter().all(|(_, k)| *k != key));
    }

    #[test]
    fn spent_set_refuses_reuse_and_stays_bounded() {
        let s = Spent::new(100);
        let n = |i: u32| {
            let mut n = [0u8; 32];
            n[..4].copy_from_slice(&i.to_be_bytes());
            n
        };
        assert_eq!(s.spend(&n(1), 50, 0), Ok(()));
        assert_eq!(s.spend(&n(1), 50, 0), Err(NonceError::Used));
        // Expired entries go.
        s.spend(&n(2), 10, 0).unwrap();
        s.spend(&n(3), 60, 20).unwrap();
        assert_eq!(s.len(), 2);
        // A flood: never above the cap, the soonest expiring forgotten first.
        for i in 10..100_000 {
            s.spend(&n(i), 1000 + i, 30).unwrap();
        }
        assert_eq!(s.len(), 100);
        assert_eq!(
            s.spend(&n(99_999), 1000 + 99_999, 30),
            Err(NonceError::Used)
        );
    }

    #[test]
    fn issuer_limits_each_group_and_stays_bounded() {
        let i = Issuer::new(3, 0.001, 1000);
        for _ in 0..3 {
            assert!(i.take(src("127.0.0.2")));
        }
        // Every loopback address is the same group; an IPv6 /64 too.
        assert!(!i.take(src("127.0.0.3")));
        assert!(!i.take(src("127.9.9.9")));
        assert!(i.take(src("::1")));
        for _ in 0..2 {
            assert!(i.take(src("2001:db8::1")));
        }
        assert!(i.take(src("2001:db8::ffff")));
        assert!(!i.take(src("2001:db8::2")));
        assert!(i.take(src("2001:db8:0:1::2")));
        // Refill.
        let r = Issuer::new(1, 20.0, 1000);
        assert!(r.take(src("10.0.0.1")));
        assert!(!r.take(src("10.0.0.1")));
        std::thread::sleep(Duration::from_millis(120));
        assert!(r.take(src("10.0.0.1")));
        // Off.
        let off = Issuer::new(1, 0.0, 10);
        assert!((0..100).all(|_| off.take(src("10.0.0.1"))));
        // Many groups: the map never holds more than the cap.
        let b = Issuer::new(2, 0.001, 500);
        for k in 0..5000u32 {
            let ip = std::net::Ipv6Addr::from(u128::from(k) << 64);
            assert!(b.take(Source::of_ip(ip.into())));
            assert!(b.sources() <= 500);
        }
    }
}
