//! Environment lookup. Services build their typed config from an [`Env`], never from
//! `std::env` directly, so tests can hand them an explicit set of variables.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;

/// A start-up configuration problem; the message always names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("invalid value for environment variable {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A snapshot of environment variables. It remembers which names were looked up, so a test
/// can check that code and deployment files agree on every name.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    looked_up: Arc<Mutex<BTreeSet<String>>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: show names only.
        let mut names: Vec<_> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// The process environment (the one place that reads `std::env`).
    pub fn from_process() -> Self {
        Self { vars: std::env::vars().collect(), ..Self::default() }
    }

    /// An explicit set of variables (tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), ..Self::default() }
    }

    /// Sets or replaces one variable.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// The raw value; an empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.looked_up.lock().expect("env lock").insert(name.to_owned());
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every name looked up so far, set or not.
    pub fn looked_up(&self) -> BTreeSet<String> {
        self.looked_up.lock().expect("env lock").clone()
    }

    /// The names that are set.
    pub fn names(&self) -> BTreeSet<String> {
        self.vars.keys().cloned().collect()
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).map(str::to_owned).ok_or(ConfigError::Missing(name))
    }

    pub fn required_secret(&self, name: &'static str) -> Result<SecretString, ConfigError> {
        self.required(name).map(SecretString::from)
    }

    pub fn string_or(&self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn secret_or(&self, name: &'static str, default: &str) -> SecretString {
        SecretString::from(self.string_or(name, default))
    }

    /// Parses `name` if set, else returns `default`.
    pub fn parse_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: format!("{e} (got {raw:?})") }),
        }
    }

    pub fn seconds_or(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_or(name, default).map(Duration::from_secs)
    }

    pub fn millis_or(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_or(name, default).map(Duration::from_millis)
    }

    /// A duration: a number of seconds, or with a unit `s`, `m`, `h` or `d` (`7d`, `36h`).
    pub fn duration_or(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(raw) = self.get(name) else { return Ok(default) };
        let raw = raw.trim();
        let (digits, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => raw.split_at(i),
            None => (raw, "s"),
        };
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        match digits.parse::<u64>() {
            Ok(n) if scale > 0 => Ok(Duration::from_secs(n.saturating_mul(scale))),
            _ => Err(ConfigError::Invalid { name, reason: format!("expected seconds or a number with s, m, h or d (got {raw:?})") }),
        }
    }

    pub fn bool_or(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::Invalid { name, reason: format!("expected true or false, got {v:?}") }),
        }
    }
}

/// `AMQP_URL`, the broker (may hold a password). Each service reads only the names it uses, so
/// the deployment files can be checked against the code name by name.
pub fn amqp_url(env: &Env) -> SecretString {
    env.secret_or("AMQP_URL", "amqp://guest:guest@rabbitmq:5672/%2f")
}

/// `VIDEO_QUEUE`, the queue of uploaded videos.
pub fn video_queue(env: &Env) -> String {
    env.string_or("VIDEO_QUEUE", "video")
}

/// `MP3_QUEUE`, the queue of finished mp3s (and failure notices).
pub fn mp3_queue(env: &Env) -> String {
    env.string_or("MP3_QUEUE", "mp3")
}

/// `MONGODB_VIDEOS_DB`, the GridFS database of uploaded videos.
pub fn videos_db(env: &Env) -> String {
    env.string_or("MONGODB_VIDEOS_DB", "videos")
}

/// `MONGODB_MP3S_DB`, the GridFS database of mp3s.
pub fn mp3s_db(env: &Env) -> String {
    env.string_or("MONGODB_MP3S_DB", "mp3s")
}

/// The MongoDB server.
#[derive(Clone, Debug)]
pub struct MongoSettings {
    /// `MONGODB_URI`; may hold a password.
    pub uri: SecretString,
}

impl MongoSettings {
    pub fn from_env(env: &Env) -> Self {
        Self { uri: env.secret_or("MONGODB_URI", "mongodb://host.minikube.internal:27017") }
    }
}

/// Retry policy of a consumer: bounded attempts with exponential backoff.
#[derive(Clone, Debug)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub base_delay: Duration,
    /// `MAX_REDELIVERIES`: how many times a message may come back unsettled (its consumer
    /// died: OOM-killed, SIGKILLed, lost its connection or shut down holding it) before it is
    /// dead-lettered instead of being handled again.
    pub max_redeliveries: u32,
}

impl RetrySettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_attempts = env.parse_or("MAX_ATTEMPTS", 5u32)?;
        if max_attempts == 0 {
            return Err(ConfigError::Invalid { name: "MAX_ATTEMPTS", reason: "must be at least 1".into() });
        }
        Ok(Self {
            max_attempts,
            base_delay: env.millis_or("RETRY_BASE_MS", 1000)?,
            max_redeliveries: env.parse_or("MAX_REDELIVERIES", 3u32)?,
        })
    }

    /// Delay before attempt `next_attempt` (2, 3, ...): base, 2*base, 4*base ..., capped at 10 min.
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(16);
        self.base_delay.saturating_mul(1 << exp).min(Duration::from_secs(600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_invalid_name_the_variable() {
        let env = Env::from_pairs([("PORT", "eighty")]);
        let e = env.required("JWT_SECRET").unwrap_err();
        assert_eq!(e.to_string(), "missing required environment variable JWT_SECRET");
        let e = env.parse_or::<u16>("PORT", 1).unwrap_err();
        assert!(e.to_string().starts_with("invalid value for environment variable PORT"), "{e}");
    }

    #[test]
    fn empty_counts_as_unset_and_defaults_apply() {
        let env = Env::from_pairs([("VIDEO_QUEUE", "")]);
        assert_eq!(video_queue(&env), "video");
        assert_eq!(mp3_queue(&env), "mp3");
    }

    #[test]
    fn debug_never_shows_values() {
        let env = Env::from_pairs([("JWT_SECRET", "hunter2hunter2")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("JWT_SECRET") && !shown.contains("hunter2"), "{shown}");
        let m = MongoSettings::from_env(&Env::from_pairs([("MONGODB_URI", "mongodb://u:topsecret@h")]));
        assert!(!format!("{m:?}").contains("topsecret"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetrySettings { max_attempts: 5, base_delay: Duration::from_millis(100), max_redeliveries: 3 };
        assert_eq!(r.delay_before(2), Duration::from_millis(100));
        assert_eq!(r.delay_before(3), Duration::from_millis(200));
        assert_eq!(r.delay_before(5), Duration::from_millis(800));
        assert_eq!(r.delay_before(100), Duration::from_secs(600));
    }

    #[test]
    fn durations_take_units() {
        let env = Env::from_pairs([("A", "90"), ("B", "7d"), ("C", "36h"), ("D", "5m"), ("E", "7 days"), ("F", "d")]);
        let d = |n| env.duration_or(n, Duration::ZERO);
        assert_eq!(d("A").unwrap(), Duration::from_secs(90));
        assert_eq!(d("B").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(d("C").unwrap(), Duration::from_secs(36 * 3600));
        assert_eq!(d("D").unwrap(), Duration::from_secs(300));
        assert!(d("E").is_err() && d("F").is_err());
        assert_eq!(env.duration_or("G", Duration::from_secs(3)).unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn bools() {
        let env = Env::from_pairs([("A", "TRUE"), ("B", "off"), ("C", "maybe")]);
        assert!(env.bool_or("A", false).unwrap());
        assert!(!env.bool_or("B", true).unwrap());
        assert!(env.bool_or("C", true).is_err());
        assert!(env.bool_or("D", true).unwrap());
    }
}
