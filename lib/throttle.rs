//! Failed-attempt throttling: after `max_failures` attempts of one key within `window`, the key
//! is refused until the window has passed since its last counted attempt.
//!
//! Two ways to use it. [`Throttle::begin`] counts an attempt when it *starts*, so attempts
//! running at the same time cannot all slip under the limit; [`Attempt::succeeded`] gives the
//! slot back, and dropping the [`Attempt`] keeps it counted (a failure, or an error on the
//! way). The older pair [`Throttle::allowed`]/[`Throttle::failed`] counts after the fact, for
//! callers whose check is cheap and not worth racing.
//!
//! The table is bounded: past `capacity` keys, expired ones are swept, and if none has
//! expired a new key is refused ([`Refused::Full`]) rather than forgetting a counted one
//! (forgetting would let a flood of other keys reset a victim's count).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle<K> {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    map: Mutex<HashMap<K, (u32, Instant)>>,
}

/// Keys tracked at most unless [`Throttle::with_capacity`] says otherwise.
const DEFAULT_CAPACITY: usize = 16_384;

/// Why [`Throttle::begin`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This key used up its attempts for the window.
    Throttled,
    /// The table holds `capacity` keys, none expired.
    Full,
}

/// One counted attempt; see [`Throttle::begin`].
#[must_use = "dropping the attempt counts it as failed"]
pub struct Attempt<'a, K: Hash + Eq + Clone> {
    throttle: &'a Throttle<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Attempt<'_, K> {
    /// The attempt succeeded: its slot is given back.
    pub fn succeeded(self) {
        self.throttle.give_back(&self.key);
    }
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self::with_capacity(max_failures, window, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(max_failures: u32, window: Duration, capacity: usize) -> Self {
        Throttle {
            max_failures,
            window,
            capacity: capacity.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt of `key` now, or refuses it. `max_failures == 0` never refuses.
    pub fn begin(&self, key: &K) -> Result<Attempt<'_, K>, Refused> {
        let attempt = Attempt {
            throttle: self,
            key: key.clone(),
        };
        if self.max_failures == 0 {
            return Ok(attempt);
        }
        let Ok(mut m) = self.map.lock() else {
            return Err(Refused::Full);
        };
        if !m.contains_key(key) && m.len() >= self.capacity {
            let w = self.window;
            m.retain(|_, (_, t)| t.elapsed() < w);
            if m.len() >= self.capacity {
                return Err(Refused::Full);
            }
        }
        let e = m.entry(key.clone()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            e.0 = 0;
        }
        if e.0 >= self.max_failures {
            return Err(Refused::Throttled);
        }
        e.0 += 1;
        e.1 = Instant::now();
        Ok(attempt)
    }

    fn give_back(&self, key: &K) {
        let Ok(mut m) = self.map.lock() else { return };
        if let Some(e) = m.get_mut(key) {
            e.0 = e.0.saturating_sub(1);
            if e.0 == 0 {
                m.remove(key);
            }
        }
    }

    /// True when `key` may try now.
    pub fn allowed(&self, key: &K) -> bool {
        if self.max_failures == 0 {
            return true;
        }
        let Ok(m) = self.map.lock() else { return false };
        match m.get(key) {
            Some((n, last)) => *n < self.max_failures || last.elapsed() >= self.window,
            None => true,
        }
    }

    pub fn failed(&self, key: &K) {
        if self.max_failures == 0 {
            return;
        }
        let Ok(mut m) = self.map.lock() else { return };
        if !m.contains_key(key) && m.len() >= self.capacity {
            let w = self.window;
            m.retain(|_, (_, t)| t.elapsed() < w);
        }
        let e = m.entry(key.clone()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, key: &K) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_and_clears_on_success() {
        let t = Throttle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(t.allowed(&"a"));
            t.failed(&"a");
        }
        assert!(!t.allowed(&"a"));
        assert!(t.allowed(&"b"));
        t.succeeded(&"a");
        assert!(t.allowed(&"a"));
    }

    #[test]
    fn window_expires() {
        // Windows far longer than any pause between two statements of a loaded machine.
        let t = Throttle::new(1, Duration::from_millis(500));
        t.failed(&1);
        assert!(!t.allowed(&1));
        std::thread::sleep(Duration::from_millis(600));
        assert!(t.allowed(&1));
    }

    #[test]
    fn attempts_count_when_they_start() {
        let t = Throttle::new(2, Duration::from_secs(60));
        // Two in flight at once use up the limit before either has an answer.
        let a = t.begin(&"u").unwrap();
        let b = t.begin(&"u").unwrap();
        assert_eq!(t.begin(&"u").err(), Some(Refused::Throttled));
        a.succeeded();
        let c = t.begin(&"u").unwrap();
        drop(b); // failed: stays counted
        drop(c);
        assert_eq!(t.begin(&"u").err(), Some(Refused::Throttled));
        assert!(t.begin(&"v").is_ok());
    }

    #[test]
    fn full_table_refuses_new_keys_until_entries_expire() {
        let t = Throttle::with_capacity(5, Duration::from_millis(500), 2);
        drop(t.begin(&1).unwrap());
        drop(t.begin(&2).unwrap());
        assert_eq!(t.begin(&3).err(), Some(Refused::Full));
        drop(t.begin(&1).unwrap()); // a known key still counts
        std::thread::sleep(Duration::from_millis(600));
        assert!(t.begin(&3).is_ok());
    }
}
