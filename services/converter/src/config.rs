//! The converter's configuration, loaded once from the environment.

use std::path::PathBuf;
use std::time::Duration;

use common::config::{self, MongoSettings, RetrySettings};
use common::{ConfigError, Env};
use secrecy::SecretString;

/// The longest job deadline allowed: a minute under RabbitMQ's default `consumer_timeout`
/// (30 min since 3.8.15; a delivery unacked for longer gets its channel closed and is
/// redelivered), leaving time to store and announce the mp3.
pub const MAX_JOB_DEADLINE: Duration = Duration::from_secs(29 * 60);

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
    /// `JOB_DEADLINE_SECONDS`: how long one conversion may take in all (download, ffprobe,
    /// ffmpeg, upload). Past it the job fails for good: a file too long for the deadline would
    /// only time out again. Kept under the broker's consumer timeout (30 min on RabbitMQ 3.10),
    /// which would otherwise close the channel and redeliver the message.
    pub job_deadline: Duration,
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
        let job_deadline = env.seconds_or("JOB_DEADLINE_SECONDS", 1200)?;
        if job_deadline.is_zero() || job_deadline > MAX_JOB_DEADLINE {
            return Err(ConfigError::Invalid {
                name: "JOB_DEADLINE_SECONDS",
                reason: format!("must be between 1 and {} (under the broker's consumer timeout)", MAX_JOB_DEADLINE.as_secs()),
            });
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
            job_deadline,
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
        assert_eq!(c.job_deadline, Duration::from_secs(1200));
        for bad in ["0", "1741", "3600"] {
            let e = Config::from_env(&Env::from_pairs([("JOB_DEADLINE_SECONDS", bad)])).unwrap_err();
            assert!(e.to_string().contains("JOB_DEADLINE_SECONDS"), "{e}");
        }
    }
}
