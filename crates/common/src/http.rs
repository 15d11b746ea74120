//! HTTP plumbing shared by auth, gateway and the consumers' health ports: request ids and trace
//! context in spans, request metrics, `GET /metrics`, and a server whose connections are bounded
//! in number and in time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::HeaderName;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::future::BoxFuture;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics::{Counter, Histogram};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::Instrument;

use crate::trace::{TraceContext, TRACEPARENT};
use crate::{ConfigError, Env};

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
        .layer(ObserveLayer)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .route("/metrics", get(crate::metrics::render))
}

/// The request metrics' handles by route, then method and status. Looking a labelled metric up
/// in the recorder builds and hashes its key (three owned label values) twice a request; the
/// handles, once made, are reused. Bounded like the labels: routes are patterns, methods and
/// statuses fixed sets. One per process, as the recorder is: a static rather than an `Arc` in
/// every service, which axum clones (and drops) on every request.
#[derive(Default)]
struct RequestMetrics(std::sync::RwLock<HashMap<String, ByMethodAndStatus>>);

static REQUEST_METRICS: std::sync::LazyLock<RequestMetrics> = std::sync::LazyLock::new(RequestMetrics::default);

/// One route's handles: (method, status) -> (`http_requests_total`, `http_request_duration_seconds`).
type ByMethodAndStatus = HashMap<(&'static str, u16), (Counter, Histogram)>;

impl RequestMetrics {
    fn record(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let record = |(counter, histogram): &(Counter, Histogram)| {
            histogram.record(seconds);
            counter.increment(1);
        };
        if let Some(handles) = self.0.read().ok().as_ref().and_then(|m| m.get(route)?.get(&(method, status))) {
            return record(handles);
        }
        let labels = [("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
        let handles =
            (metrics::counter!(crate::metrics::HTTP_REQUESTS, &labels), metrics::histogram!(crate::metrics::HTTP_DURATION, &labels));
        record(&handles);
        if let Ok(mut m) = self.0.write() {
            m.entry(route.to_owned()).or_default().insert((method, status), handles);
        }
    }
}

/// The layer of [`Observe`].
#[derive(Clone)]
struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// Runs each request inside its span and its trace (the span for log lines, the task-local for
/// outgoing calls), records `http_requests_total` and `http_request_duration_seconds`, and
/// logs server errors. A plain service rather than `middleware::from_fn` and tower-http's
/// `TraceLayer`: those box the inner service per request and wrap the response body, a cost
/// the hot paths (auth's `/validate`, the gateway's authenticated routes) pay on every call.
#[derive(Clone)]
struct Observe<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let start = Instant::now();
        let parent = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
        let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
        let (span, ctx) =
            crate::telemetry::trace_span!(parent, "request", method = %req.method(), path = %req.uri().path(), request_id = %id);
        let method = method_label(req.method());
        let route = req.extensions().get::<MatchedPath>().cloned();
        let response = self.inner.call(req);
        let work = async move {
            let Ok(response) = response.await;
            let status = response.status();
            let elapsed = start.elapsed();
            let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            REQUEST_METRICS.record(method, route, status.as_u16(), elapsed.as_secs_f64());
            let latency_ms = elapsed.as_millis();
            if status.is_server_error() {
                tracing::error!(status = status.as_u16(), latency_ms, "response failed");
            } else {
                tracing::debug!(status = status.as_u16(), latency_ms, "finished processing request");
            }
            Ok(response)
        };
        Box::pin(ctx.scope(work.instrument(span)))
    }
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

/// Largest read (and write) buffer of one connection.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// What a client may hold of a server: how long it may take to send headers or pause in a
/// body, and how many connections are served at once.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// `HTTP_HEADER_TIMEOUT_SECONDS`: time to send a request's headers, counted from the
    /// connection's start or, on a kept-alive connection, from the previous response; so it is
    /// also the idle keep-alive timeout. The connection is closed when it passes.
    pub header_timeout: Duration,
    /// `HTTP_BODY_IDLE_TIMEOUT_SECONDS`: longest pause between two pieces of a request body
    /// (a stalled upload fails after it instead of holding its memory and permit forever).
    pub body_idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: connections served at once; further ones wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), body_idle_timeout: Duration::from_secs(30), max_connections: 1024 }
    }
}

impl HttpSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        let s = Self {
            header_timeout: env.seconds_or("HTTP_HEADER_TIMEOUT_SECONDS", d.header_timeout.as_secs())?,
            body_idle_timeout: env.seconds_or("HTTP_BODY_IDLE_TIMEOUT_SECONDS", d.body_idle_timeout.as_secs())?,
            max_connections: env.parse_or("HTTP_MAX_CONNECTIONS", d.max_connections)?,
        };
        for (name, zero) in [
            ("HTTP_HEADER_TIMEOUT_SECONDS", s.header_timeout.is_zero()),
            ("HTTP_BODY_IDLE_TIMEOUT_SECONDS", s.body_idle_timeout.is_zero()),
            ("HTTP_MAX_CONNECTIONS", s.max_connections == 0),
        ] {
            if zero {
                return Err(ConfigError::Invalid { name, reason: "must be positive".into() });
            }
        }
        Ok(s)
    }
}

/// Serves `router` on `listener` (HTTP/1.1) until `shutdown` is cancelled, then lets requests
/// in flight finish for up to `grace` before dropping the connections.
///
/// `axum::serve` sets no timer, so hyper's header-read timeout never fires there and a client
/// that sends half a header holds its connection forever; this loop sets one, bounds the
/// connections with a semaphore taken before `accept` (mini-redis's model), and times out idle
/// request bodies. Handlers can extract `ConnectInfo<SocketAddr>`. HTTP/2 is not offered: no
/// client of ours speaks cleartext HTTP/2, and HTTP/1's timeouts are the ones that close
/// half-open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let app = router.layer(RequestBodyTimeoutLayer::new(settings.body_idle_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's read buffer grows to ~400 KiB on a fast upload, per connection; 64 KiB keeps
    // uploads at full speed and still allows 64 KiB of request headers.
    http.timer(TokioTimer::new()).header_read_timeout(settings.header_timeout).max_buf_size(MAX_BUF_SIZE);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.context("connection semaphore closed")?,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // A streamed response goes out as a headers write then small body writes, which
        // Nagle's algorithm would hold back for the client's delayed ACK (~40 ms a request).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "failed to set TCP_NODELAY");
        }
        let service = app.clone().map_request(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                // Timeouts, resets and malformed requests end here: the client's doing.
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; dropping open connections"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_checks() {
        let s = HttpSettings::from_env(&Env::default()).unwrap();
        assert_eq!(s.header_timeout, Duration::from_secs(10));
        assert_eq!(s.max_connections, 1024);
        let e = HttpSettings::from_env(&Env::from_pairs([("HTTP_MAX_CONNECTIONS", "0")])).unwrap_err().to_string();
        assert!(e.contains("HTTP_MAX_CONNECTIONS"), "{e}");
    }
}
