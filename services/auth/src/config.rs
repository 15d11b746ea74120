//! The auth service's configuration, loaded once from the environment.

use std::time::Duration;

use common::{ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::MySqlConnectOptions;

/// Shortest `JWT_SECRET` accepted: HS256 keys shorter than the hash output are guessable.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Clone, Debug)]
pub struct MysqlSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    pub database: String,
    pub pool_max: u32,
}

impl MysqlSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            host: env.required("MYSQL_HOST")?,
            port: env.parse_or("MYSQL_PORT", 3306)?,
            user: env.required("MYSQL_USER")?,
            password: env.required_secret("MYSQL_PASSWORD")?,
            database: env.required("MYSQL_DB")?,
            pool_max: env.parse_or("MYSQL_POOL_MAX", 10)?,
        })
    }

    pub fn connect_options(&self) -> MySqlConnectOptions {
        MySqlConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(self.password.expose_secret())
            .database(&self.database)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    pub mysql: MysqlSettings,
    pub jwt_secret: SecretString,
    pub jwt_ttl: Duration,
    /// `LOGIN_MAX_FAILURES`: failed logins per (account, client address) before each further
    /// attempt from that pair waits twice as long as the last (from `login_backoff_base`).
    pub login_max_failures: u32,
    /// `LOGIN_BACKOFF_BASE_MS`: the first wait once `login_max_failures` is reached.
    pub login_backoff_base: Duration,
    /// Failed logins allowed per client address (any account) within `login_window`.
    pub login_max_failures_per_address: u32,
    /// Failed logins allowed per account (any address) within `login_window`; past it only
    /// addresses that logged in to the account before may keep trying.
    pub login_max_failures_per_account: u32,
    pub login_window: Duration,
    /// `LOGIN_LIMITER_MAX_KEYS`: entries each login limiter keeps at most (memory bound).
    pub login_limiter_max_keys: usize,
    /// `TOKEN_GENERATION_CACHE_MS`: how long an account's token generation is kept before
    /// `/validate` reads it again; the longest a revoked token may still validate.
    pub token_generation_cache: Duration,
    /// Server connection bounds and timeouts.
    pub http: common::http::HttpSettings,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let jwt_secret = env.required_secret("JWT_SECRET")?;
        if jwt_secret.expose_secret().len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                reason: format!("must be at least {MIN_SECRET_BYTES} bytes long (generate one with `openssl rand -base64 48`)"),
            });
        }
        let jwt_ttl = env.seconds_or("JWT_TTL_SECONDS", 86_400)?;
        if jwt_ttl.is_zero() {
            return Err(ConfigError::Invalid { name: "JWT_TTL_SECONDS", reason: "must be positive".into() });
        }
        Ok(Self {
            port: env.parse_or("PORT", 5000)?,
            mysql: MysqlSettings::from_env(env)?,
            jwt_secret,
            jwt_ttl,
            login_max_failures: env.parse_or("LOGIN_MAX_FAILURES", 5)?,
            login_backoff_base: env.millis_or("LOGIN_BACKOFF_BASE_MS", 1000)?,
            login_max_failures_per_address: env.parse_or("LOGIN_MAX_FAILURES_PER_ADDRESS", 50)?,
            login_max_failures_per_account: env.parse_or("LOGIN_MAX_FAILURES_PER_ACCOUNT", 100)?,
            login_window: env.seconds_or("LOGIN_WINDOW_SECONDS", 300)?,
            login_limiter_max_keys: env.parse_or("LOGIN_LIMITER_MAX_KEYS", 100_000)?,
            token_generation_cache: env.millis_or("TOKEN_GENERATION_CACHE_MS", 1000)?,
            http: common::http::HttpSettings::from_env(env)?,
            shutdown_grace: env.seconds_or("SHUTDOWN_GRACE_SECONDS", 20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Env {
        Env::from_pairs([
            ("MYSQL_HOST", "db"),
            ("MYSQL_USER", "auth_user"),
            ("MYSQL_PASSWORD", "pw"),
            ("MYSQL_DB", "auth"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
    }

    #[test]
    fn defaults() {
        let c = Config::from_env(&base()).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.mysql.port, 3306);
        assert_eq!(c.jwt_ttl, Duration::from_secs(86_400));
        assert_eq!(c.token_generation_cache, Duration::from_secs(1));
    }

    #[test]
    fn jwt_secret_required_and_long() {
        let mut env = base();
        env.set("JWT_SECRET", "");
        assert_eq!(Config::from_env(&env).unwrap_err().to_string(), "missing required environment variable JWT_SECRET");
        env.set("JWT_SECRET", "short");
        let e = Config::from_env(&env).unwrap_err().to_string();
        assert!(e.contains("JWT_SECRET") && e.contains("at least 32 bytes"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::from_env(&base()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789abcdef") && !shown.contains("\"pw\""), "{shown}");
    }
}
