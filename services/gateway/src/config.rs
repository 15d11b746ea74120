//! The gateway's configuration, loaded once from the environment.

use std::time::Duration;

use common::config::{self, MongoSettings};
use common::{ConfigError, Env};
use secrecy::SecretString;

#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    /// `AUTH_SVC_ADDRESS`, host:port of the auth service.
    pub auth_address: String,
    pub mongo: MongoSettings,
    pub videos_db: String,
    pub mp3s_db: String,
    pub mongo_pool_max: u32,
    /// `AMQP_URL`
    pub amqp_url: SecretString,
    pub video_queue: String,
    /// `VIDEO_QUEUE_MAX_LENGTH`: uploads waiting for a converter before new ones are refused
    /// with 503 (see `common::config::video_queue_max_length`).
    pub video_queue_max_length: Option<u32>,
    /// Largest accepted upload in bytes.
    pub max_upload_bytes: u64,
    /// How long a request waits on auth, MongoDB or RabbitMQ before answering 503.
    pub dependency_timeout: Duration,
    pub auth_pool_max_idle: usize,
    /// `TRUSTED_PROXY_HOPS`: how many proxies in front of the gateway append to
    /// `X-Forwarded-For` (1 behind the ingress). The client address that logins are
    /// rate-limited by is taken that many entries from the right; 0 trusts no header.
    pub trusted_proxy_hops: usize,
    /// How often the outbox sweep looks for stored but unannounced videos.
    pub outbox_interval: Duration,
    /// How old an unannounced video must be before the sweep announces it (younger ones may
    /// still be in the middle of their upload request).
    pub outbox_min_age: Duration,
    pub shutdown_grace: Duration,
    /// Server connection bounds and timeouts.
    pub http: common::http::HttpSettings,
    /// `MAX_CONCURRENT_UPLOADS`: uploads this replica streams at once; more get 503 with
    /// `Retry-After` (each holds a few hundred KiB of buffers while it streams).
    pub max_concurrent_uploads: usize,
    /// Per-user limits, shared by every replica (counted in MongoDB).
    pub quotas: Quotas,
}

/// Per-user upload limits; 0 turns one off.
#[derive(Clone, Debug)]
pub struct Quotas {
    /// `QUOTA_MAX_IN_FLIGHT`: a user's uploads stored but not yet converted.
    pub max_in_flight: u64,
    /// `QUOTA_BYTES_PER_DAY`: bytes a user may upload in any 24 hours.
    pub bytes_per_day: u64,
    /// `QUOTA_IN_FLIGHT_WINDOW_SECONDS`: an upload without an mp3 stops counting as in flight
    /// after this long (its job has failed or given up by then: keep it above the converter's
    /// job deadline).
    pub in_flight_window: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth_address = env.required("AUTH_SVC_ADDRESS")?;
        if auth_address.contains('/') || !auth_address.contains(':') {
            return Err(ConfigError::Invalid { name: "AUTH_SVC_ADDRESS", reason: format!("expected host:port, got {auth_address:?}") });
        }
        Ok(Self {
            port: env.parse_or("PORT", 8080)?,
            auth_address,
            mongo: MongoSettings::from_env(env),
            videos_db: config::videos_db(env),
            mp3s_db: config::mp3s_db(env),
            mongo_pool_max: env.parse_or("MONGODB_POOL_MAX", 32)?,
            amqp_url: config::amqp_url(env),
            video_queue: config::video_queue(env),
            video_queue_max_length: config::video_queue_max_length(env)?,
            max_upload_bytes: env.parse_or("MAX_UPLOAD_BYTES", 2 * 1024 * 1024 * 1024)?,
            dependency_timeout: env.seconds_or("DEPENDENCY_TIMEOUT_SECONDS", 5)?,
            auth_pool_max_idle: env.parse_or("AUTH_POOL_MAX_IDLE", 32)?,
            trusted_proxy_hops: env.parse_or("TRUSTED_PROXY_HOPS", 0)?,
            outbox_interval: env.seconds_or("OUTBOX_INTERVAL_SECONDS", 30)?,
            outbox_min_age: env.seconds_or("OUTBOX_MIN_AGE_SECONDS", 120)?,
            shutdown_grace: env.seconds_or("SHUTDOWN_GRACE_SECONDS", 20)?,
            http: common::http::HttpSettings::from_env(env)?,
            max_concurrent_uploads: match env.parse_or("MAX_CONCURRENT_UPLOADS", 128)? {
                0 => return Err(ConfigError::Invalid { name: "MAX_CONCURRENT_UPLOADS", reason: "must be positive".into() }),
                n => n,
            },
            quotas: Quotas {
                max_in_flight: env.parse_or("QUOTA_MAX_IN_FLIGHT", 10)?,
                bytes_per_day: env.parse_or("QUOTA_BYTES_PER_DAY", 20 * 1024 * 1024 * 1024)?,
                in_flight_window: env.seconds_or("QUOTA_IN_FLIGHT_WINDOW_SECONDS", 6 * 3600)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_original_deployment() {
        let c = Config::from_env(&Env::from_pairs([("AUTH_SVC_ADDRESS", "auth:5000")])).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.video_queue, "video");
        assert_eq!(c.videos_db, "videos");
        assert_eq!(c.max_upload_bytes, 2 << 30);
    }

    #[test]
    fn auth_address_is_required_and_checked() {
        let e = Config::from_env(&Env::default()).unwrap_err().to_string();
        assert!(e.contains("AUTH_SVC_ADDRESS"), "{e}");
        let e = Config::from_env(&Env::from_pairs([("AUTH_SVC_ADDRESS", "http://auth:5000/")])).unwrap_err().to_string();
        assert!(e.contains("host:port"), "{e}");
    }
}
