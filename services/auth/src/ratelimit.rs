//! Throttling password guessing without handing strangers a lockout.
//!
//! `/login` keeps three counters of failures:
//! - per (account, client address): after a few free failures each further attempt from that
//!   pair must wait twice as long as the previous one (1 s, 2 s, 4 s, ... up to the window).
//!   Someone else's failures never slow the owner's own address.
//! - per client address, across accounts: a fixed number per window, then 429 until it ends.
//! - per account, across addresses: a fixed number per window, then 429, except for addresses
//!   that logged in to that account successfully before ([`KnownAddresses`]): a distributed
//!   guesser is stopped, the owner on a known address is not.
//!
//! Each map holds at most `max_keys` entries (expired ones are swept first, then the oldest go),
//! so a flood of made-up emails or addresses can't grow the service. A hand-written map rather
//! than `governor`: governor's keyed limiters count requests at a steady rate, while these
//! count failures only and need the progressive delay and the known-address exemption.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How a [`FailureLimiter`] answers once failures pile up.
#[derive(Clone, Copy, Debug)]
pub enum Policy {
    /// `max` failures per window, then blocked until the window (started by the first
    /// failure) ends.
    Fixed { max: u32 },
    /// `free` failures, then each further attempt waits `base * 2^(failures - free)` after the
    /// last failure (capped at the window); the count restarts after a quiet window.
    Backoff { free: u32, base: Duration },
}

#[derive(Clone, Copy)]
struct Entry {
    count: u32,
    started: Instant,
    last: Instant,
}

/// Failure counts per key (tokio's clock, so tests can pause time).
pub struct FailureLimiter {
    policy: Policy,
    window: Duration,
    max_keys: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl FailureLimiter {
    pub fn new(policy: Policy, window: Duration, max_keys: usize) -> Self {
        Self { policy, window, max_keys: max_keys.max(1), entries: Mutex::new(HashMap::new()) }
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        match self.policy {
            Policy::Fixed { .. } => e.started + self.window <= now,
            Policy::Backoff { .. } => e.last + self.window <= now,
        }
    }

    /// `Some(seconds to wait)` when `key` may not try now.
    pub fn blocked(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("limiter lock");
        let e = entries.get(key).filter(|e| !self.expired(e, now))?;
        let until = match self.policy {
            Policy::Fixed { max } => (e.count >= max).then(|| e.started + self.window)?,
            Policy::Backoff { free, base } => {
                let over = e.count.checked_sub(free)?;
                e.last + base.saturating_mul(1u32 << over.min(20)).min(self.window)
            }
        };
        (until > now).then(|| (until - now).as_secs_f64().ceil() as u64)
    }

    pub fn record_failure(&self, key: &str) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("limiter lock");
        if !entries.contains_key(key) {
            make_room(&mut entries, self.max_keys, |e| self.expired(e, now), |e| e.last);
        }
        let fresh = Entry { count: 0, started: now, last: now };
        let entry = entries.entry(key.to_owned()).or_insert(fresh);
        if self.expired(entry, now) {
            *entry = fresh;
        }
        entry.count += 1;
        entry.last = now;
    }

    pub fn reset(&self, key: &str) {
        self.entries.lock().expect("limiter lock").remove(key);
    }

    /// Keys held (the tests check the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().expect("limiter lock").len()
    }
}

/// Drops expired entries, then the oldest tenth, when `map` is full.
fn make_room<V>(map: &mut HashMap<String, V>, max: usize, expired: impl Fn(&V) -> bool, age: impl Fn(&V) -> Instant) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !expired(v));
    if map.len() < max {
        return;
    }
    let mut ages: Vec<Instant> = map.values().map(&age).collect();
    let cut = (max / 10).max(1).min(ages.len() - 1);
    let (_, nth, _) = ages.select_nth_unstable(cut);
    let cutoff = *nth;
    map.retain(|_, v| age(v) > cutoff);
}

/// (account, address) pairs that logged in successfully within `ttl`: the per-account limit
/// doesn't apply to them.
pub struct KnownAddresses {
    ttl: Duration,
    max_keys: usize,
    entries: Mutex<HashMap<String, Instant>>,
}

impl KnownAddresses {
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self { ttl, max_keys: max_keys.max(1), entries: Mutex::new(HashMap::new()) }
    }

    pub fn remember(&self, key: &str) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("known lock");
        if !entries.contains_key(key) {
            let ttl = self.ttl;
            make_room(&mut entries, self.max_keys, |at| *at + ttl <= now, |at| *at);
        }
        entries.insert(key.to_owned(), now);
    }

    pub fn contains(&self, key: &str) -> bool {
        let now = Instant::now();
        self.entries.lock().expect("known lock").get(key).is_some_and(|at| *at + self.ttl > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fixed_blocks_after_max_until_window_ends() {
        let l = FailureLimiter::new(Policy::Fixed { max: 3 }, Duration::from_secs(60), 100);
        for _ in 0..2 {
            l.record_failure("a");
        }
        assert_eq!(l.blocked("a"), None);
        l.record_failure("a");
        assert_eq!(l.blocked("a"), Some(60));
        assert_eq!(l.blocked("b"), None);
        tokio::time::advance(Duration::from_secs(45)).await;
        assert_eq!(l.blocked("a"), Some(15));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(l.blocked("a"), None);
        l.record_failure("a");
        assert_eq!(l.blocked("a"), None, "a new window starts from zero");
        l.reset("a");
        assert_eq!(l.blocked("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_then_forgets_after_a_quiet_window() {
        let l = FailureLimiter::new(Policy::Backoff { free: 2, base: Duration::from_secs(1) }, Duration::from_secs(60), 100);
        l.record_failure("k");
        l.record_failure("k");
        assert_eq!(l.blocked("k"), Some(1), "third failure and on: wait 1 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.blocked("k"), None);
        l.record_failure("k");
        assert_eq!(l.blocked("k"), Some(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        l.record_failure("k");
        assert_eq!(l.blocked("k"), Some(4));
        for _ in 0..20 {
            l.record_failure("k");
        }
        assert_eq!(l.blocked("k"), Some(60), "capped at the window");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(l.blocked("k"), None);
        l.record_failure("k");
        assert_eq!(l.blocked("k"), None, "counting restarted after a quiet window");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_the_newest_stay() {
        let l = FailureLimiter::new(Policy::Fixed { max: 1 }, Duration::from_secs(600), 1000);
        for i in 0..10_000 {
            l.record_failure(&format!("flood-{i}"));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(l.len() <= 1000, "{} entries", l.len());
        assert!(l.blocked("flood-9999").is_some(), "the newest entries are kept");
        let k = KnownAddresses::new(Duration::from_secs(60), 10);
        for i in 0..100 {
            k.remember(&format!("a|{i}"));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(k.entries.lock().unwrap().len() <= 10);
        assert!(k.contains("a|99"));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!k.contains("a|99"));
    }
}
