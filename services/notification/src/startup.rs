//! Building and running the notifier.

use std::sync::Arc;
use std::time::Duration;

use common::consumer::{ConsumerService, ConsumerSettings};
use common::gridfs;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mail::{transport, Notifier};

pub struct Application {
    service: ConsumerService<Notifier>,
}

impl Application {
    /// Starts the health server (port 0 picks a free one) and prepares the clients.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mongo = gridfs::client(&config.mongo, Duration::from_secs(10), 8).await?;
        let notifier = Arc::new(Notifier {
            transport: transport(&config.smtp)?,
            from: config.smtp.from.clone(),
            sent: mongo.database(&config.mp3s_db).collection("sent_mails"),
            links: Some(common::links::LinkSigner::new(config.link_secret.clone(), &config.public_url, config.link_ttl)),
            // A whole send is several SMTP commands, each bounded by the SMTP timeout.
            send_timeout: config.smtp.timeout * 2,
        });
        let settings = ConsumerSettings {
            amqp_url: config.amqp_url.clone(),
            queue: config.mp3_queue.clone(),
            prefetch: config.prefetch,
            concurrency: usize::from(config.prefetch),
            retry: config.retry.clone(),
            grace: config.shutdown_grace,
        };
        Ok(Self { service: ConsumerService::start(notifier, settings, config.health_port).await? })
    }

    pub fn health_port(&self) -> u16 {
        self.service.health_port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run_until_stopped(shutdown).await;
        Ok(())
    }
}
