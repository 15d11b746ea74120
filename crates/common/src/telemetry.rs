//! One tracing set-up for every service.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::trace::TraceContext;

/// Installs the global subscriber: `RUST_LOG` (default `info`) and `LOG_FORMAT` (`text`|`json`),
/// and the metrics recorder. Reading these two variables here is deliberate: logging must work
/// before config loads. Every line written inside a request or job span carries the span's
/// fields, `trace_id` among them (in JSON, in the `spans` list).
pub fn init() {
    crate::metrics::init();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(fmt::layer().json().with_current_span(true)).try_init()
    } else {
        registry.with(fmt::layer().with_target(true)).try_init()
    };
    // A second init (tests) is harmless.
    let _ = result;
}

/// The trace context of a request or job whose span is `span`: the sender's trace (`parent`)
/// continued, or a new one. Records it as the span's `trace_id` field.
pub fn enter_trace(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    let ctx = parent.map_or_else(TraceContext::new_root, |p| p.child());
    span.record("trace_id", tracing::field::display(ctx.trace_id()));
    ctx
}

/// Runs a service's `main` body; a failure is printed as one line with its cause chain
/// (never a backtrace or a config value) and exits with status 1.
pub fn exit_on_error(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
