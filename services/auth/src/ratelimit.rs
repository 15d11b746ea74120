//! Failed-login limiting per key (an email or a client address) over a fixed window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Counts failures per key; a key with `max` failures in the current window is blocked until
/// the window ends. Uses tokio's clock so tests can pause time.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Entries kept before expired ones are swept, bounding memory under a flood of keys.
const SWEEP_AT: usize = 10_000;

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window, entries: Mutex::new(HashMap::new()) }
    }

    /// `Some(seconds to wait)` when `key` is blocked now.
    pub fn blocked(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("limiter lock");
        let (count, started) = entries.get(key)?;
        let ends = *started + self.window;
        (*count >= self.max && ends > now).then(|| (ends - now).as_secs_f64().ceil() as u64)
    }

    pub fn record_failure(&self, key: &str) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("limiter lock");
        if entries.len() >= SWEEP_AT {
            let window = self.window;
            entries.retain(|_, (_, started)| *started + window > now);
        }
        let entry = entries.entry(key.to_owned()).or_insert((0, now));
        if entry.1 + self.window <= now {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn reset(&self, key: &str) {
        self.entries.lock().expect("limiter lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blocks_after_max_until_window_ends() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
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
}
