//! Building and running the gateway.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use common::amqp::Publisher;
use common::gridfs;
use common::jobs::JobStore;
use common::links::LinkSigner;
use common::mp3s::Mp3Store;
use common::videos::VideoStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::jobs::events::JobEvents;
use crate::state::{AppState, AuthUrls};
use crate::{auth, download, jobs, outbox, upload, web};

/// Every route: each area's `router()`, and the service's own (health, readiness, OpenAPI).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(common::health::healthz))
        .route("/openapi.yaml", get(openapi))
        .route("/readyz", get(readyz))
        .merge(auth::router())
        .merge(upload::router())
        .merge(download::router())
        .merge(jobs::router())
        .merge(web::router(&state))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let (mongo, amqp) = tokio::join!(gridfs::ping(state.videos.database()), state.publisher.is_connected());
    match (mongo, amqp) {
        (true, true) => (StatusCode::OK, "ready"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "mongodb unavailable"),
        (_, false) => (StatusCode::SERVICE_UNAVAILABLE, "rabbitmq unavailable"),
    }
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    config: Config,
}

impl Application {
    /// Binds `0.0.0.0:port` (0 picks a free port). Dependencies are connected lazily, so the
    /// gateway starts, and reports not-ready, while they come up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("0.0.0.0", config.port)).await.with_context(|| format!("failed to bind port {}", config.port))?;
        let http = reqwest::Client::builder()
            .timeout(config.dependency_timeout)
            .connect_timeout(config.dependency_timeout)
            .pool_max_idle_per_host(config.auth_pool_max_idle)
            .tcp_nodelay(true)
            .build()
            .context("failed to build the HTTP client")?;
        let mongo = gridfs::client(&config.mongo, config.dependency_timeout, config.mongo_pool_max).await?;
        let publisher = Publisher::new(config.amqp_url.clone(), vec![config.video_queue.clone()], config.dependency_timeout);
        let videos = mongo.database(&config.videos_db);
        let state = AppState {
            jobs: JobStore::new(&videos),
            links: LinkSigner::new(config.link_secret.clone(), &config.public_url, config.link_ttl),
            events: Arc::new(JobEvents::new(config.sse_heartbeat, CancellationToken::new())),
            http,
            auth: Arc::new(AuthUrls::new(&config.auth_address)?),
            videos: VideoStore::new(&videos),
            mp3s: Mp3Store::new(&mongo.database(&config.mp3s_db)),
            publisher: Arc::new(publisher),
            video_queue: config.video_queue.clone(),
            video_queue_max_length: config.video_queue_max_length,
            max_upload_bytes: config.max_upload_bytes,
            trusted_proxy_hops: config.trusted_proxy_hops,
            upload_permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_uploads)),
            quotas: config.quotas.clone(),
            web: Arc::new(web::Web::new(&config)),
        };
        Ok(Self { listener, state, config })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "gateway listening");
        if let Err(e) = self.state.publisher.ensure_connected().await {
            tracing::warn!(error.cause_chain = ?e, "RabbitMQ not reachable yet; will connect on first upload");
        }
        if let Err(e) = self.state.jobs.ensure_indexes().await {
            tracing::warn!(error.cause_chain = ?e, "could not create the jobs indexes now; queries still work without them");
        }
        let sweep =
            tokio::spawn(outbox::run(self.state.clone(), self.config.outbox_interval, self.config.outbox_min_age, shutdown.clone()));
        let videos = self.state.videos.clone();
        tokio::spawn(async move {
            // Without them every quota check reads all of a user's videos, and every outbox
            // sweep of every replica all video documents.
            if let Err(e) = videos.ensure_indexes().await {
                tracing::warn!(error.cause_chain = ?e, "could not create the videos indexes now; quotas and the outbox sweep still work without them");
            }
        });
        let c = &self.config;
        let retention = tokio::spawn(jobs::retention::run(
            self.state.clone(),
            c.retention_interval,
            c.video_retention,
            c.mp3_retention,
            shutdown.clone(),
        ));
        let poller =
            tokio::spawn(jobs::events::run_poller(self.state.jobs.clone(), self.state.events.clone(), c.job_events_poll, shutdown.clone()));
        // Event streams never end by themselves: close them when shutdown starts, so that the
        // HTTP drain is not held up by followers.
        let events = self.state.events.clone();
        let closer = shutdown.clone();
        tokio::spawn(async move {
            closer.cancelled().await;
            events.close();
        });
        let app = common::http::with_tracing(router(self.state.clone()));
        let result = common::http::serve(self.listener, app, &self.config.http, shutdown, self.config.shutdown_grace).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), sweep).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), retention).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
        result
    }
}

/// The OpenAPI document of this service (kept in docs/openapi/ and checked by the schemathesis test).
async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/yaml")], include_str!("../../../docs/openapi/gateway.yaml"))
}
