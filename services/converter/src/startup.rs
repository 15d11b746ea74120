//! Building and running the converter.

use std::sync::Arc;
use std::time::Duration;

use common::amqp::Publisher;
use common::consumer::{ConsumerService, ConsumerSettings};
use common::gridfs;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::job::Converter;

pub struct Application {
    service: ConsumerService<Converter>,
}

impl Application {
    /// Starts the health server (port 0 picks a free one) and prepares the clients.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        for program in [&config.ffmpeg, &config.ffprobe] {
            crate::ffmpeg::ensure_executable(program)?;
        }
        let mongo = gridfs::client(&config.mongo, Duration::from_secs(10), (config.concurrency as u32 * 2).max(4)).await?;
        let publisher = Publisher::new(config.amqp_url.clone(), vec![config.mp3_queue.clone()], Duration::from_secs(10));
        let settings = ConsumerSettings {
            amqp_url: config.amqp_url.clone(),
            queue: config.video_queue.clone(),
            prefetch: config.prefetch,
            concurrency: config.concurrency,
            retry: config.retry.clone(),
            grace: config.shutdown_grace,
        };
        let health_port = config.health_port;
        let converter = Arc::new(Converter {
            jobs: common::jobs::JobStore::new(&mongo.database(&config.videos_db)),
            videos: common::videos::VideoStore::new(&mongo.database(&config.videos_db)),
            mp3s: common::mp3s::Mp3Store::new(&mongo.database(&config.mp3s_db)),
            publisher: Arc::new(publisher),
            config,
        });
        Ok(Self { service: ConsumerService::start(converter, settings, health_port).await? })
    }

    pub fn health_port(&self) -> u16 {
        self.service.health_port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Err(e) = self.service.handler().ensure_indexes().await {
            tracing::warn!(error.cause_chain = ?e, "could not ensure the mp3 index now; duplicates are still caught by lookup");
        }
        self.service.run_until_stopped(shutdown).await;
        Ok(())
    }
}
