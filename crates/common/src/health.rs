//! The health port of the consumers: `/healthz` (the process runs), `/readyz` (attached to
//! its queue; MongoDB and SMTP outages show as retried jobs, not here) and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds `0.0.0.0:port` (0 picks a free port) and returns the bound port and the server task.
pub async fn serve(port: u16, ready: Arc<AtomicBool>, shutdown: CancellationToken) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    use anyhow::Context;
    let listener = TcpListener::bind(("0.0.0.0", port)).await.with_context(|| format!("failed to bind health port {port}"))?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ready)
        .route("/metrics", get(crate::metrics::render));
    // Probes only: the default connection bounds and timeouts need no settings of their own.
    let settings = crate::http::HttpSettings::default();
    let task = tokio::spawn(async move {
        let _ = crate::http::serve(listener, app, &settings, shutdown, std::time::Duration::from_secs(1)).await;
    });
    Ok((port, task))
}
