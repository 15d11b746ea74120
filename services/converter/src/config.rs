//! The converter's configuration, loaded once from the environment.

use std::path::PathBuf;
use std::time::Duration;

use common::config::{self, MongoSettings, RetrySettings};
use common::{ConfigError, Env};
use secrecy::SecretString;

#[derive(Clone, Debug)]
pub struct Config {
    pub health_port: u16,
    pub mongo: MongoSettings,
    pub videos_db: String,
    pub mp3s_db: String,
    /// `AMQP_URL`
    pub amqp_url: SecretString,
    pub video_queue: String,
    pub mp3_queue: String,
    /// Conversions run at once.
    pub concurrency: usize,
    pub prefetch: u16,
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub ffmpeg_timeout: Duration,
    pub retry: RetrySettings,
    /// Where videos and mp3s are staged while converting.
    pub tmp_dir: PathBuf,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let concurrency: usize = env.parse_or("CONVERTER_CONCURRENCY", cores)?;
        if concurrency == 0 {
            return Err(ConfigError::Invalid { name: "CONVERTER_CONCURRENCY", reason: "must be at least 1".into() });
        }
        let prefetch = env.parse_or("CONVERTER_PREFETCH", u16::try_from(concurrency).unwrap_or(u16::MAX))?;
        Ok(Self {
            health_port: env.parse_or("HEALTH_PORT", 8081)?,
            mongo: MongoSettings::from_env(env),
            videos_db: config::videos_db(env),
            mp3s_db: config::mp3s_db(env),
            amqp_url: config::amqp_url(env),
            video_queue: config::video_queue(env),
            mp3_queue: config::mp3_queue(env),
            concurrency,
            prefetch: prefetch.max(1),
            ffmpeg: env.string_or("FFMPEG_PATH", "ffmpeg").into(),
            ffprobe: env.string_or("FFPROBE_PATH", "ffprobe").into(),
            ffmpeg_timeout: env.seconds_or("FFMPEG_TIMEOUT_SECONDS", 900)?,
            retry: RetrySettings::from_env(env)?,
            tmp_dir: env.string_or("TMPDIR", "/tmp").into(),
            shutdown_grace: env.seconds_or("SHUTDOWN_GRACE_SECONDS", 20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = Config::from_env(&Env::default()).unwrap();
        assert!(c.concurrency >= 1);
        assert_eq!(c.prefetch as usize, c.concurrency);
        assert_eq!(c.video_queue, "video");
        assert_eq!(c.mp3_queue, "mp3");
        let e = Config::from_env(&Env::from_pairs([("CONVERTER_CONCURRENCY", "0")])).unwrap_err();
        assert!(e.to_string().contains("CONVERTER_CONCURRENCY"));
    }
}
