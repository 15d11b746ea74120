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
    /// with 503 and `Retry-After`; `0` for no bound.
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
    /// `PUBLIC_URL`: how clients reach the gateway; the base of signed download links.
    pub public_url: String,
    /// `DOWNLOAD_LINK_SECRET`: HMAC key of signed download links (shared with notification).
    pub link_secret: SecretString,
    /// `DOWNLOAD_LINK_TTL`: how long a signed link works.
    pub link_ttl: Duration,
    /// `VIDEO_RETENTION`: how long an uploaded video is kept after its job ended.
    pub video_retention: Duration,
    /// `MP3_RETENTION`: how long an mp3 is kept after its job is done.
    pub mp3_retention: Duration,
    /// `RETENTION_INTERVAL`: how often the retention sweep runs.
    pub retention_interval: Duration,
    /// `JOB_EVENTS_POLL_MS`: how often the change poller reads MongoDB while someone follows.
    pub job_events_poll: Duration,
    /// `SSE_HEARTBEAT_SECONDS`: comment lines that keep idle event streams open through proxies.
    pub sse_heartbeat: Duration,
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
    /// Behind TLS the browser session cookie must never travel over plain HTTP.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth_address = env.required("AUTH_SVC_ADDRESS")?;
        if auth_address.contains('/') || !auth_address.contains(':') {
            return Err(ConfigError::Invalid { name: "AUTH_SVC_ADDRESS", reason: format!("expected host:port, got {auth_address:?}") });
        }
        let public_url = public_url(env)?;
        let link_secret = env.secret_or("DOWNLOAD_LINK_SECRET", common::links::DEVELOPMENT_SECRET);
        common::links::check_settings(&link_secret, &public_url)
            .map_err(|reason| ConfigError::Invalid { name: "DOWNLOAD_LINK_SECRET", reason })?;
        Ok(Self {
            port: env.parse_or("PORT", 8080)?,
            auth_address,
            mongo: MongoSettings::from_env(env),
            videos_db: config::videos_db(env),
            mp3s_db: config::mp3s_db(env),
            mongo_pool_max: env.parse_or("MONGODB_POOL_MAX", 32)?,
            amqp_url: config::amqp_url(env),
            video_queue: config::video_queue(env),
            video_queue_max_length: Some(env.parse_or("VIDEO_QUEUE_MAX_LENGTH", 10_000u32)?).filter(|n| *n > 0),
            max_upload_bytes: env.parse_or("MAX_UPLOAD_BYTES", 2 * 1024 * 1024 * 1024)?,
            dependency_timeout: env.seconds_or("DEPENDENCY_TIMEOUT_SECONDS", 5)?,
            auth_pool_max_idle: env.parse_or("AUTH_POOL_MAX_IDLE", 32)?,
            trusted_proxy_hops: env.parse_or("TRUSTED_PROXY_HOPS", 0)?,
            outbox_interval: env.seconds_or("OUTBOX_INTERVAL_SECONDS", 30)?,
            outbox_min_age: env.seconds_or("OUTBOX_MIN_AGE_SECONDS", 120)?,
            shutdown_grace: env.seconds_or("SHUTDOWN_GRACE_SECONDS", 20)?,
            public_url,
            link_secret,
            link_ttl: env.duration_or("DOWNLOAD_LINK_TTL", Duration::from_secs(7 * 86_400))?,
            // Sources are the large files (up to MAX_UPLOAD_BYTES) and are only needed until the
            // mp3 is made; a day leaves time to look into a failure.
            video_retention: env.duration_or("VIDEO_RETENTION", Duration::from_secs(86_400))?,
            // As long as the link in the "ready" mail works: the link never outlives its file.
            mp3_retention: env.duration_or("MP3_RETENTION", Duration::from_secs(7 * 86_400))?,
            retention_interval: env.duration_or("RETENTION_INTERVAL", Duration::from_secs(300))?,
            job_events_poll: env.millis_or("JOB_EVENTS_POLL_MS", 250)?,
            sse_heartbeat: env.seconds_or("SSE_HEARTBEAT_SECONDS", 15)?,
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

/// `PUBLIC_URL`, defaulting to the ingress host of manifests/gateway/ingress.yaml.
fn public_url(env: &Env) -> Result<String, ConfigError> {
    let raw = env.get("PUBLIC_URL").unwrap_or("http://mp3converter.com");
    let url = raw.trim_end_matches('/');
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(url.to_owned()),
        _ => Err(ConfigError::Invalid { name: "PUBLIC_URL", reason: format!("expected http(s)://host[:port], got {raw:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_original_deployment() {
        let c = Config::from_env(&Env::from_pairs([("AUTH_SVC_ADDRESS", "auth:5000"), ("PUBLIC_URL", "http://localhost:8080")])).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.video_queue, "video");
        assert_eq!(c.videos_db, "videos");
        assert_eq!(c.max_upload_bytes, 2 << 30);
        assert!(!c.secure_cookies());
    }

    #[test]
    fn public_url_sets_cookie_security_and_is_checked() {
        let key = "k".repeat(40);
        let with = |v: &str| {
            Config::from_env(&Env::from_pairs([
                ("AUTH_SVC_ADDRESS", "auth:5000"),
                ("PUBLIC_URL", v),
                ("DOWNLOAD_LINK_SECRET", key.as_str()),
            ]))
        };
        let c = with("https://mp3.example.com/").unwrap();
        assert_eq!(c.public_url, "https://mp3.example.com");
        assert!(c.secure_cookies());
        for bad in ["mp3.example.com", "ftp://x", "https://", "https://x/path"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("PUBLIC_URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_development_link_secret_is_refused_for_a_public_url() {
        let base = [("AUTH_SVC_ADDRESS", "auth:5000")];
        let e = Config::from_env(&Env::from_pairs(base)).unwrap_err().to_string();
        assert!(e.contains("DOWNLOAD_LINK_SECRET") && e.contains("development"), "{e}");
        let local =
            Config::from_env(&Env::from_pairs([("AUTH_SVC_ADDRESS", "auth:5000"), ("PUBLIC_URL", "http://127.0.0.1:8080/")])).unwrap();
        assert_eq!(local.public_url, "http://127.0.0.1:8080");
        assert_eq!(local.mp3_retention, Duration::from_secs(7 * 86_400));
        let key = "k".repeat(40);
        let c = Config::from_env(&Env::from_pairs([("AUTH_SVC_ADDRESS", "auth:5000"), ("DOWNLOAD_LINK_SECRET", key.as_str())])).unwrap();
        assert_eq!(c.public_url, "http://mp3converter.com");
    }

    #[test]
    fn auth_address_is_required_and_checked() {
        let e = Config::from_env(&Env::default()).unwrap_err().to_string();
        assert!(e.contains("AUTH_SVC_ADDRESS"), "{e}");
        let e = Config::from_env(&Env::from_pairs([("AUTH_SVC_ADDRESS", "http://auth:5000/")])).unwrap_err().to_string();
        assert!(e.contains("host:port"), "{e}");
    }
}
