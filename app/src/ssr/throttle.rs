//! Slows down password guessing: after [`FREE_FAILURES`] failed logins for one user name
//! from one client address (or [`FREE_FAILURES_PER_ADDRESS`] from one address for any
//! names, which many people may share), each further attempt from there must wait twice
//! as long as the last (up to [`MAX_WAIT`]). Keyed by address as well as name, so that
//! someone guessing a colleague's password delays only themselves: the colleague logs
//! in from their own address at once (no lock-out). A success clears the count. Kept
//! in memory per worker: a restart forgives, which is acceptable for a delay.
//!
//! [`Bursts`] keeps anonymous failures from growing the audit log without bound.

use super::audit::Event;
use std::collections::{BTreeSet, HashMap};
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

/// Anonymous failures (wrong passwords, throttled logins, wrong trigger tokens) in the
/// audit log, one entry per burst: the first failure of a burst from one address is
/// written at once (so an alert sees it), the rest are counted and written as one
/// summary when the burst has been quiet for a while or has lasted long
/// ([`Bursts::due`]). An anonymous client can add at most a few entries per burst
/// however fast it tries (an IPv6 client counts by its /64); past [`MAX_OPEN`] open
/// bursts or [`NEW_PER_MINUTE`] new ones in a minute, the rest are counted in one
/// shared burst.
pub struct Bursts {
    open: Mutex<HashMap<String, Burst>>,
    /// Bursts opened in the current minute (start, count): past [`NEW_PER_MINUTE`],
    /// new ones share one burst, so even a client with many addresses adds at most that
    /// many entries a minute.
    window: Mutex<(Instant, usize)>,
    /// A burst ends after this long without a failure.
    pub quiet: Duration,
}

impl Default for Bursts {
    fn default() -> Self {
        Bursts::new(Duration::from_secs(60))
    }
}

pub const MAX_OPEN: usize = 1000;
/// Bursts (so first entries) opened per minute before new ones share one.
pub const NEW_PER_MINUTE: usize = 60;
/// A burst older than this is summarised even if it goes on.
pub const LONGEST: Duration = Duration::from_secs(600);

struct Burst {
    /// The first event, which was written; the summary reuses its action and address.
    first: Event,
    started: Instant,
    last: Instant,
    /// Failures after the first, not written yet.
    more: u64,
    /// User names tried (at most [`NAMES`] kept).
    names: BTreeSet<String>,
    names_dropped: u64,
}

const NAMES: usize = 10;

impl Bursts {
    pub fn new(quiet: Duration) -> Bursts {
        Bursts {
            open: Mutex::default(),
            window: Mutex::new((Instant::now(), 0)),
            quiet,
        }
    }

    /// Counts `event` (a failure by someone not logged in, from `event.address`).
    /// `true`: the first of its burst, to be written now; `false`: counted for the
    /// summary.
    pub fn record(&self, event: &Event) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = format!("{}|{}", event.action, super::client::group(&event.address));
        if !open.contains_key(&key) {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            if window.0.elapsed() >= Duration::from_secs(60) {
                *window = (Instant::now(), 0);
            }
            if open.len() >= MAX_OPEN || window.1 >= NEW_PER_MINUTE {
                key = format!("{}|*", event.action);
            } else {
                window.1 += 1;
            }
        }
        let now = Instant::now();
        match open.get_mut(&key) {
            Some(b) => {
                b.more += 1;
                b.last = now;
                if b.names.len() < NAMES {
                    b.names.insert(event.username.clone());
                } else if !b.names.contains(&event.username) {
                    b.names_dropped += 1;
                }
                false
            }
            None => {
                let mut first = event.clone();
                if key.ends_with("|*") {
                    first.address = "(many addresses)".into();
                }
                open.insert(
                    key,
                    Burst {
                        first,
                        started: now,
                        last: now,
                        more: 0,
                        names: BTreeSet::from([event.username.clone()]),
                        names_dropped: 0,
                    },
                );
                true
            }
        }
    }

    /// Closes the burst of `action` from `address` now (a login that succeeded after
    /// failures): its summary, if it had more than its first failure.
    pub fn close(&self, action: &str, address: &str) -> Option<Event> {
        let burst = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("{action}|{}", super::client::group(address)))?;
        summary(burst)
    }

    /// Closes the bursts quiet for `quiet` (normally [`Bursts::quiet`]; or older than
    /// [`LONGEST`]; all with `quiet` zero) and returns the summary entries to write for those that had more
    /// than their first failure.
    pub fn due(&self, quiet: Duration) -> Vec<Event> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let done: Vec<String> = open
            .iter()
            .filter(|(_, b)| b.last.elapsed() >= quiet || b.started.elapsed() >= LONGEST)
            .map(|(k, _)| k.clone())
            .collect();
        done.iter()
            .filter_map(|key| open.remove(key))
            .filter_map(summary)
            .collect()
    }
}

/// The entry that sums up a burst after its first failure; none if it had only that.
fn summary(b: Burst) -> Option<Event> {
    if b.more == 0 {
        return None;
    }
    let mut names: Vec<String> = b.names.into_iter().collect();
    if b.names_dropped > 0 {
        names.push(format!("and {} more names", b.names_dropped));
    }
    Some(Event {
        user_id: None,
        username: b.first.username.clone(),
        detail: format!(
            "{} more like this from {} over {} s (user names: {})",
            b.more,
            b.first.address,
            b.last.duration_since(b.started).as_secs(),
            names.join(", ")
        ),
        ..b.first
    })
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

    fn failure(address: &str, user: &str) -> Event {
        Event {
            user_id: None,
            username: user.into(),
            address: address.into(),
            action: "login".into(),
            target: format!("user {user}"),
            outcome: crate::model::Outcome::Failed,
            detail: "Invalid user name or password.".into(),
        }
    }

    #[test]
    fn a_burst_writes_its_first_failure_and_one_summary() {
        let b = Bursts::default();
        assert!(b.record(&failure("6.6.6.6", "admin")));
        for i in 0..500 {
            assert!(!b.record(&failure("6.6.6.6", &format!("user{i}"))));
        }
        assert!(
            b.record(&failure("7.7.7.7", "admin")),
            "another address, its own burst"
        );
        assert!(b.due(Duration::from_secs(60)).is_empty(), "still going");
        let summaries = b.due(Duration::ZERO);
        assert_eq!(summaries.len(), 1, "one summary; the lone failure had none");
        let s = &summaries[0];
        assert_eq!(
            (s.action.as_str(), s.address.as_str()),
            ("login", "6.6.6.6")
        );
        assert!(s.detail.starts_with("500 more like this"), "{}", s.detail);
        assert!(s.detail.contains("and 491 more names"), "{}", s.detail);
        assert!(
            b.record(&failure("6.6.6.6", "admin")),
            "a new burst after the summary"
        );
    }

    #[test]
    fn a_spray_of_addresses_shares_one_burst_past_the_cap() {
        let b = Bursts::default();
        let written = (0..5000)
            .filter(|i| b.record(&failure(&format!("10.0.{}.{}", i / 256, i % 256), "admin")))
            .count();
        assert_eq!(
            written,
            NEW_PER_MINUTE + 1,
            "a minute's worth, then one shared burst"
        );
        let b = Bursts::default();
        let v6 = (0..500)
            .filter(|i| b.record(&failure(&format!("2001:db8:0:1::{i:x}"), "admin")))
            .count();
        assert_eq!(v6, 1, "one /64 is one client");
    }
}
