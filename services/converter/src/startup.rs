//! Building and running the converter.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::amqp::Publisher;
use common::consumer::{self, ConsumerSettings};
use common::{gridfs, health};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::job::Converter;

pub struct Application {
    converter: Arc<Converter>,
    ready: Arc<AtomicBool>,
    health_port: u16,
    health_task: tokio::task::JoinHandle<()>,
    stop_health: CancellationToken,
}

impl Application {
    /// Starts the health server (port 0 picks a free one) and prepares the clients.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mongo = gridfs::client(&config.mongo, std::time::Duration::from_secs(10), (config.concurrency as u32 * 2).max(4)).await?;
        let publisher = Publisher::new(config.amqp_url.clone(), vec![config.mp3_queue.clone()], std::time::Duration::from_secs(10));
        let converter = Arc::new(Converter {
            videos: mongo.database(&config.videos_db),
            mp3s: mongo.database(&config.mp3s_db),
            publisher: Arc::new(publisher),
            config,
        });
        let ready = Arc::new(AtomicBool::new(false));
        let stop_health = CancellationToken::new();
        let (health_port, health_task) = health::serve(converter.config.health_port, ready.clone(), stop_health.clone()).await?;
        Ok(Self { converter, ready, health_port, health_task, stop_health })
    }

    pub fn health_port(&self) -> u16 {
        self.health_port
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Err(e) = self.converter.ensure_indexes().await {
            tracing::warn!(error.cause_chain = ?e, "could not ensure the mp3 index now; duplicates are still caught by lookup");
        }
        let c = &self.converter.config;
        let settings = ConsumerSettings {
            amqp_url: c.amqp_url.clone(),
            queue: c.video_queue.clone(),
            prefetch: c.prefetch,
            concurrency: c.concurrency,
            retry: c.retry.clone(),
            grace: c.shutdown_grace,
        };
        consumer::run(settings, self.converter.clone(), shutdown, self.ready.clone()).await;
        self.stop_health.cancel();
        let _ = self.health_task.await;
        Ok(())
    }
}
