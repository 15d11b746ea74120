//! Building and running the notifier.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::consumer::{self, ConsumerSettings};
use common::{gridfs, health};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mail::{transport, Notifier};

pub struct Application {
    config: Config,
    notifier: Arc<Notifier>,
    ready: Arc<AtomicBool>,
    health_port: u16,
    health_task: tokio::task::JoinHandle<()>,
    stop_health: CancellationToken,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mongo = gridfs::client(&config.mongo, std::time::Duration::from_secs(10), 8).await?;
        let notifier = Arc::new(Notifier {
            transport: transport(&config.smtp)?,
            from: config.smtp.from.clone(),
            sent: mongo.database(&config.mp3s_db).collection("sent_mails"),
            // A whole send is several SMTP commands, each bounded by the SMTP timeout.
            send_timeout: config.smtp.timeout * 2,
        });
        let ready = Arc::new(AtomicBool::new(false));
        let stop_health = CancellationToken::new();
        let (health_port, health_task) = health::serve(config.health_port, ready.clone(), stop_health.clone()).await?;
        Ok(Self { config, notifier, ready, health_port, health_task, stop_health })
    }

    pub fn health_port(&self) -> u16 {
        self.health_port
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let c = &self.config;
        let settings = ConsumerSettings {
            amqp_url: c.amqp_url.clone(),
            queue: c.mp3_queue.clone(),
            prefetch: c.prefetch,
            concurrency: usize::from(c.prefetch),
            retry: c.retry.clone(),
            grace: c.shutdown_grace,
        };
        consumer::run(settings, self.notifier.clone(), shutdown, self.ready.clone()).await;
        self.stop_health.cancel();
        let _ = self.health_task.await;
        Ok(())
    }
}
