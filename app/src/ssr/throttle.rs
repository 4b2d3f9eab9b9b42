//! Slows down password guessing: after [`FREE_FAILURES`] failed logins for one user name
//! (or [`FREE_FAILURES_PER_ADDRESS`] from one address, which many people may share),
//! each further attempt must wait twice as long as the last (up to [`MAX_WAIT`]). A success clears the user name's count. Kept in memory per worker: a
//! restart forgives, which is acceptable for a delay (not a lockout).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FREE_FAILURES: u32 = 5;
pub const FREE_FAILURES_PER_ADDRESS: u32 = 30;
pub const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    fn wait_for(key: &str, count: u32) -> Duration {
        let free = if key.starts_with("ip:") {
            FREE_FAILURES_PER_ADDRESS
        } else {
            FREE_FAILURES
        };
        if count < free {
            return Duration::ZERO;
        }
        let exp = (count - free).min(16);
        Duration::from_secs(1u64 << exp).min(MAX_WAIT)
    }

    /// How long `keys` must still wait before another attempt, if at all.
    pub fn check(&self, keys: &[String]) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| map.get(k).map(|v| (k, v)))
            .filter_map(|(k, (count, last))| Self::wait_for(k, *count).checked_sub(last.elapsed()))
            .filter(|d| !d.is_zero())
            .max()
    }

    pub fn failed(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            // Bounded memory under a spray of names: forget entries that no longer delay.
            map.retain(|k, (c, last)| Self::wait_for(k, *c) > last.elapsed());
        }
        for k in keys {
            let e = map.entry(k.clone()).or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_starts_after_the_free_failures_and_doubles() {
        let t = Throttle::default();
        let k = vec!["user:ann".to_string()];
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(&k);
        }
        assert_eq!(t.check(&k), None);
        t.failed(&k);
        assert!(t.check(&k).unwrap() <= Duration::from_secs(1));
        t.failed(&k);
        assert!(t.check(&k).unwrap() > Duration::from_secs(1));
        t.succeeded("user:ann");
        assert_eq!(t.check(&k), None);
    }
}
