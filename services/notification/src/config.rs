//! The notifier's configuration, loaded once from the environment.

use std::time::Duration;

use common::config::{self, MongoSettings, RetrySettings};
use common::email::Email;
use common::{ConfigError, Env};
use secrecy::SecretString;

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text (a local test server only).
    None,
    /// Plain connection upgraded with STARTTLS (Gmail on 587, the original's setting).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Sender address, and the SMTP user name when `password` is set.
    pub from: Email,
    /// `None` sends without logging in.
    pub password: Option<SecretString>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub health_port: u16,
    /// `AMQP_URL`
    pub amqp_url: SecretString,
    pub mp3_queue: String,
    /// Where the log of sent mails lives (database `MONGODB_MP3S_DB`).
    pub mongo: MongoSettings,
    pub mp3s_db: String,
    pub smtp: SmtpSettings,
    pub retry: RetrySettings,
    pub prefetch: u16,
    pub shutdown_grace: Duration,
    /// `PUBLIC_URL`: the gateway as users reach it (base of the link in the "ready" mail).
    pub public_url: String,
    /// `DOWNLOAD_LINK_SECRET`: the gateway's link key (the same value in both services).
    pub link_secret: SecretString,
    /// `DOWNLOAD_LINK_TTL`: how long the mailed link works.
    pub link_ttl: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let tls = match env.string_or("SMTP_TLS", "starttls").to_ascii_lowercase().as_str() {
            "none" => TlsMode::None,
            "starttls" => TlsMode::StartTls,
            "tls" => TlsMode::Tls,
            other => {
                return Err(ConfigError::Invalid { name: "SMTP_TLS", reason: format!("expected none, starttls or tls, got {other:?}") })
            }
        };
        let from = env
            .required("GMAIL_ADDRESS")?
            .parse()
            .map_err(|_| ConfigError::Invalid { name: "GMAIL_ADDRESS", reason: "not a valid email address".into() })?;
        let password = if env.bool_or("SMTP_AUTH", true)? { Some(env.required_secret("GMAIL_PASSWORD")?) } else { None };
        if password.is_some() && tls == TlsMode::None {
            return Err(ConfigError::Invalid {
                name: "SMTP_TLS",
                reason: "none would send GMAIL_PASSWORD unencrypted; use starttls or tls, or SMTP_AUTH=false".into(),
            });
        }
        let public_url = env.string_or("PUBLIC_URL", "http://mp3converter.com").trim_end_matches('/').to_owned();
        let link_secret = env.secret_or("DOWNLOAD_LINK_SECRET", common::links::DEVELOPMENT_SECRET);
        common::links::check_settings(&link_secret, &public_url)
            .map_err(|reason| ConfigError::Invalid { name: "DOWNLOAD_LINK_SECRET", reason })?;
        Ok(Self {
            public_url,
            link_secret,
            link_ttl: env.duration_or("DOWNLOAD_LINK_TTL", Duration::from_secs(7 * 86_400))?,
            health_port: env.parse_or("HEALTH_PORT", 8082)?,
            amqp_url: config::amqp_url(env),
            mp3_queue: config::mp3_queue(env),
            mongo: MongoSettings::from_env(env),
            mp3s_db: config::mp3s_db(env),
            smtp: SmtpSettings {
                host: env.string_or("SMTP_HOST", "smtp.gmail.com"),
                port: env.parse_or("SMTP_PORT", 587)?,
                tls,
                from,
                password,
                timeout: env.seconds_or("SMTP_TIMEOUT_SECONDS", 30)?,
            },
            retry: RetrySettings::from_env(env)?,
            prefetch: env.parse_or("NOTIFICATION_PREFETCH", 8)?,
            shutdown_grace: env.seconds_or("SHUTDOWN_GRACE_SECONDS", 20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reproduce_the_original() {
        let e = Config::from_env(&Env::from_pairs([("GMAIL_ADDRESS", "me@gmail.com"), ("GMAIL_PASSWORD", "app-password")])).unwrap_err();
        assert!(e.to_string().contains("DOWNLOAD_LINK_SECRET"), "the development link key is refused for a public URL: {e}");
        let c = Config::from_env(&Env::from_pairs([
            ("GMAIL_ADDRESS", "me@gmail.com"),
            ("GMAIL_PASSWORD", "app-password"),
            ("DOWNLOAD_LINK_SECRET", "a-generated-key-of-at-least-32-bytes"),
        ]))
        .unwrap();
        assert_eq!(c.public_url, "http://mp3converter.com");
        assert_eq!((c.smtp.host.as_str(), c.smtp.port, c.smtp.tls), ("smtp.gmail.com", 587, TlsMode::StartTls));
        assert_eq!(c.mp3_queue, "mp3");
        assert!(!format!("{c:?}").contains("app-password"));
    }

    #[test]
    fn names_what_is_wrong() {
        let e = Config::from_env(&Env::from_pairs([("GMAIL_ADDRESS", "me@gmail.com")])).unwrap_err();
        assert!(e.to_string().contains("GMAIL_PASSWORD"));
        let e = Config::from_env(&Env::from_pairs([("GMAIL_ADDRESS", "me@gmail.com"), ("SMTP_AUTH", "false"), ("SMTP_TLS", "ssl")]))
            .unwrap_err();
        assert!(e.to_string().contains("SMTP_TLS"));
        let e = Config::from_env(&Env::from_pairs([("GMAIL_ADDRESS", "me@gmail.com"), ("GMAIL_PASSWORD", "pw"), ("SMTP_TLS", "none")]))
            .unwrap_err();
        assert!(e.to_string().contains("SMTP_TLS") && e.to_string().contains("unencrypted"), "{e}");
        let e = Config::from_env(&Env::from_pairs([("GMAIL_ADDRESS", "nope"), ("SMTP_AUTH", "false")])).unwrap_err();
        assert!(e.to_string().contains("GMAIL_ADDRESS"));
    }
}
