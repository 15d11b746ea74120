//! Building and running the auth service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::MySqlPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MysqlSettings};
use crate::generations::Generations;
use crate::password;
use crate::routes::{router, AppState, LoginLimits};
use crate::token::Keys;

/// A pool that connects lazily, so the service starts (and reports not-ready) while MySQL is
/// still coming up, and gives up on a connection after a few seconds instead of hanging.
pub fn pool(mysql: &MysqlSettings) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(mysql.pool_max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(mysql.connect_options())
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    grace: Duration,
    http: common::http::HttpSettings,
}

impl Application {
    /// Binds `0.0.0.0:port` (0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("0.0.0.0", config.port)).await.with_context(|| format!("failed to bind port {}", config.port))?;
        let dummy = password::hash(SecretString::from(uuid_like())).await?;
        let state = AppState {
            pool: pool(&config.mysql),
            keys: Keys::new(&config.jwt_secret, config.jwt_ttl),
            limits: Arc::new(LoginLimits::new(&config)),
            dummy_hash: Arc::new(dummy),
            hash_permits: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()).max(2))),
            schema_ready: Arc::default(),
            generations: Arc::new(Generations::new(config.token_generation_cache)),
        };
        Ok(Self { listener, state, grace: config.shutdown_grace, http: config.http })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` is cancelled, then drains requests in flight (bounded by the
    /// grace period).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "auth listening");
        let migrations = tokio::spawn(crate::schema::migrate_until_done(
            self.state.pool.clone(),
            self.state.schema_ready.clone(),
            shutdown.child_token(),
        ));
        let app = common::http::with_tracing(router(self.state.clone()));
        let served = common::http::serve(self.listener, app, &self.http, shutdown, self.grace).await;
        // Not aborted: a migration cut off half-way would leave the database marked dirty. It
        // ends on its own (the pool gives up on an unreachable MySQL within seconds).
        let _ = migrations.await;
        served?;
        self.state.pool.close().await;
        Ok(())
    }
}

/// Random text for the dummy hash (never a real password).
fn uuid_like() -> String {
    use rand::Rng;
    rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(32).map(char::from).collect()
}
