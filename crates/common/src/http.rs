//! HTTP plumbing shared by auth and gateway: request ids in spans and a bounded drain.

use std::future::IntoFuture;
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderName, Request};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds an `x-request-id` (kept when the client sent one, echoed in the response) and a
/// tracing span per request carrying it.
pub fn with_tracing(router: Router) -> Router {
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The listener with `TCP_NODELAY` on every accepted connection: a streamed response goes out
/// as a headers write then small body writes, which Nagle's algorithm would hold back for the
/// client's delayed ACK (~40 ms per request).
pub fn no_delay(listener: tokio::net::TcpListener) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "failed to set TCP_NODELAY");
        }
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

/// Runs an axum server whose graceful shutdown is tied to `shutdown`; once shutdown starts,
/// requests in flight get `grace` to finish before the connections are dropped.
pub async fn serve_with_grace<S>(server: S, shutdown: CancellationToken, grace: Duration) -> anyhow::Result<()>
where
    S: IntoFuture<Output = std::io::Result<()>>,
{
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("HTTP server failed"),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("HTTP server failed while draining"),
        Err(_) => {
            tracing::warn!(?grace, "grace period over; dropping open connections");
            Ok(())
        }
    }
}
