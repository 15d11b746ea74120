//! The auth database's schema: the sqlx migrations in `services/auth/migrations/`, the one place
//! it is written. The service applies them when it starts ([`migrate_until_done`]); tests and
//! development set-ups apply the same ones with [`migrate`] (`init.sql` makes only the database).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

/// The migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Applies the migrations not yet applied. Safe to run from several replicas at once: sqlx holds
/// a MySQL `GET_LOCK` on the database while it migrates. The user needs CREATE, ALTER and INDEX
/// on the database besides the row rights.
pub async fn migrate(pool: &MySqlPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// Applies the migrations, retrying every few seconds while MySQL is unreachable (the service
/// starts, and reports not-ready, before MySQL is up), until done or `shutdown`. `done` turns
/// true once the schema is current; readiness waits for it.
pub async fn migrate_until_done(pool: MySqlPool, done: Arc<AtomicBool>, shutdown: CancellationToken) {
    loop {
        match migrate(&pool).await {
            Ok(()) => {
                tracing::info!("database schema is current");
                done.store(true, Ordering::Release);
                return;
            }
            Err(e) => tracing::warn!(error.cause_chain = ?anyhow::Error::from(e), "applying the database migrations failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
