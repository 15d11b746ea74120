//! HTTP plumbing shared by auth and gateway: request ids and trace context in spans, request
//! metrics, `GET /metrics`, and a bounded drain.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Instrument;

use crate::trace::{TraceContext, TRACEPARENT};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `route` label of requests no route matched: a fixed word, so that scanners probing
/// random paths can't create new time series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Adds to every route an `x-request-id` (kept when the client sent one, echoed in the
/// response), the request's trace context (the caller's `traceparent` continued, or a new
/// trace), a tracing span carrying both, and the request metrics; then adds `GET /metrics`
/// (itself neither traced nor counted: scrapes would drown the requests).
pub fn with_tracing(router: Router) -> Router {
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        // The span is the one `observe` opened around the request.
        .layer(TraceLayer::new_for_http().make_span_with(|_: &Request<_>| tracing::Span::current()))
        .layer(middleware::from_fn(observe))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .route("/metrics", get(crate::metrics::render))
}

/// Opens the request's span in its trace (the span for log lines, the task-local for outgoing
/// calls) and records `http_requests_total` and `http_request_duration_seconds`.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let parent = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
    let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
        trace_id = tracing::field::Empty
    );
    let ctx = crate::telemetry::enter_trace(&span, parent);
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = ctx.scope(next.run(req)).instrument(span).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route.unwrap_or_else(|| UNMATCHED_ROUTE.to_owned())),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::histogram!(crate::metrics::HTTP_DURATION, &labels).record(start.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::HTTP_REQUESTS, &labels).increment(1);
    response
}

/// The standard methods by name; anything else (any token is a valid method) is `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
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
