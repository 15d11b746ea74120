//! The token generation of each account as `/validate` checks it (a password change or a
//! removal moves the account past every token issued before), read from MySQL and kept for a
//! short while. Read on every check, it cost each `/validate` three database round trips (the
//! pool pings a connection when handing it out and again when taking it back), which held the
//! endpoint to 8-11k requests/s on this machine.
//!
//! What the cache can delay, and for how long: a token revoked by a password change or a
//! removal may still validate on a replica for up to `TOKEN_GENERATION_CACHE_MS` (default
//! 1000; 0 reads MySQL on every check). Nothing else is delayed:
//! - a token newer than the cached generation (issued after a change this replica has not
//!   read yet, e.g. the first login after a password change) makes it read again, so it is
//!   never refused;
//! - a token older than the cached generation is refused without a read (generations only
//!   grow);
//! - an account MySQL does not know is not cached: each check of its tokens reads again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::MySqlPool;

/// Accounts whose generation is kept at most; past that, expired entries are dropped, and
/// if all are fresh, all of them (a burst of distinct accounts costs reads, not memory).
const MAX_ACCOUNTS: usize = 100_000;

pub struct Generations {
    ttl: Duration,
    /// email -> (generation, when it was read)
    read: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Generations {
    /// Generations kept for `ttl` (zero: none kept).
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, read: Mutex::default() }
    }

    /// Whether a token of `email` with `generation` is current: not revoked since it was issued.
    pub async fn is_current(&self, pool: &MySqlPool, email: &str, generation: u32) -> Result<bool, sqlx::Error> {
        match self.cached(email) {
            Some(current) if current == generation => return Ok(true),
            Some(current) if current > generation => return Ok(false),
            // Unknown here, expired, or older than the token: ask MySQL.
            _ => {}
        }
        let current: Option<u32> =
            sqlx::query_scalar("SELECT token_generation FROM `user` WHERE email = ?").bind(email).fetch_optional(pool).await?;
        if let Some(current) = current {
            self.keep(email, current);
        }
        Ok(current == Some(generation))
    }

    fn cached(&self, email: &str) -> Option<u32> {
        let read = self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        read.get(email).filter(|(_, at)| at.elapsed() < self.ttl).map(|(generation, _)| *generation)
    }

    fn keep(&self, email: &str, generation: u32) {
        if self.ttl.is_zero() {
            return;
        }
        let mut read = self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if read.len() >= MAX_ACCOUNTS && !read.contains_key(email) {
            read.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if read.len() >= MAX_ACCOUNTS {
                read.clear();
            }
        }
        read.insert(email.to_owned(), (generation, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_generations_expire_and_stay_bounded() {
        let g = Generations::new(Duration::from_millis(50));
        g.keep("a@example.com", 3);
        assert_eq!(g.cached("a@example.com"), Some(3));
        assert_eq!(g.cached("b@example.com"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(g.cached("a@example.com"), None, "an expired generation is read again");

        for i in 0..MAX_ACCOUNTS + 10 {
            g.keep(&format!("{i}@example.com"), 1);
        }
        assert!(g.read.lock().unwrap().len() <= MAX_ACCOUNTS);
        assert_eq!(g.cached(&format!("{}@example.com", MAX_ACCOUNTS + 9)), Some(1), "the newest entry is kept");

        let off = Generations::new(Duration::ZERO);
        off.keep("a@example.com", 3);
        assert_eq!(off.cached("a@example.com"), None, "a zero lifetime keeps nothing");
    }
}
