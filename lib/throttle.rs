//! Failed-attempt throttling: after `max_failures` failures of one key within `window`, the key
//! is refused until the window has passed since its last failure. A success clears the key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle<K> {
    max_failures: u32,
    window: Duration,
    map: Mutex<HashMap<K, (u32, Instant)>>,
}

/// Above this many tracked keys, expired entries are swept before a new one is added.
const SWEEP_AT: usize = 10_000;

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Throttle {
            max_failures,
            window,
            map: Mutex::new(HashMap::new()),
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
        let Ok(mut m) = self.map.lock() else { return };
        if m.len() >= SWEEP_AT {
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
        let t = Throttle::new(1, Duration::from_millis(30));
        t.failed(&1);
        assert!(!t.allowed(&1));
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.allowed(&1));
    }
}
