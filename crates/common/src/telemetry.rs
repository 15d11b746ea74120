//! One tracing set-up for every service: log lines (text or JSON), the metrics recorder, and
//! OTLP span export when it is asked for.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::trace::TraceContext;

/// The span exporter's provider, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (flushed at exit).
static OTLP: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber: `RUST_LOG` (default `info`) and `LOG_FORMAT` (`text`|`json`),
/// and the metrics recorder. Reading these variables here is deliberate: logging must work
/// before config loads. Every line written inside a request or job span carries the span's
/// fields, `trace_id` among them (in JSON, in the `spans` list).
///
/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set (an OTLP/HTTP collector, e.g. `http://collector:4318`),
/// spans are also exported there in batches, under the program's name as `service.name`; the
/// exporter reads the other standard `OTEL_*` variables itself. Unset, no exporter exists and
/// spans cost what they cost without it.
pub fn init() {
    crate::metrics::init();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|v| !v.trim().is_empty()).and_then(|_| match otlp_provider() {
        Ok(provider) => Some(provider),
        Err(e) => {
            // Not fatal: the service works without its spans exported.
            eprintln!("warning: OTLP span export disabled: {e:#}");
            None
        }
    });
    let otel_layer = otlp.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("mp3converter")));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = if json {
        registry.with(fmt::layer().json().with_current_span(true)).try_init()
    } else {
        // Colours only on a terminal: escape codes in a log file or `kubectl logs` are noise,
        // and formatting them into every span's fields costs CPU on every request.
        registry.with(fmt::layer().with_target(true).with_ansi(std::io::stdout().is_terminal())).try_init()
    };
    // A second init (tests) is harmless, and keeps the first exporter.
    if result.is_ok() {
        if let Some(provider) = otlp {
            let _ = OTLP.set(provider);
        }
    }
}

fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    use anyhow::Context as _;
    let service = std::env::args()
        .next()
        .and_then(|arg0| std::path::Path::new(&arg0).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "mp3converter".to_owned());
    // The endpoint and its headers come from the standard OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().context("failed to build the OTLP span exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
        .build())
}

/// Whether spans are exported (OTLP configured and its exporter built).
pub fn exporting() -> bool {
    OTLP.get().is_some()
}

/// Opens an `info` span named `$name` with the given fields and a `trace_id`, for a request or
/// job whose sender's trace context is `$parent` (`Option<TraceContext>`): that trace
/// continued, or a new one. Evaluates to `(Span, TraceContext)`.
///
/// Without export, the context is made first and the span is born with its `trace_id`: one
/// formatting of the span's fields. With export, the exported span's ids are the context (same
/// trace; its span id is what outgoing calls name as their parent), known only once the span
/// exists, so `trace_id` is recorded afterwards ([`enter_trace`]).
macro_rules! trace_span {
    ($parent:expr, $name:literal, $($field:tt)*) => {{
        let parent: Option<$crate::trace::TraceContext> = $parent;
        if $crate::telemetry::exporting() {
            let span = ::tracing::info_span!($name, $($field)*, trace_id = ::tracing::field::Empty);
            let ctx = $crate::telemetry::enter_trace(&span, parent);
            (span, ctx)
        } else {
            let ctx = $crate::trace::TraceContext::continue_from(parent);
            (::tracing::info_span!($name, $($field)*, trace_id = %ctx.trace_id_hex()), ctx)
        }
    }};
}
pub(crate) use trace_span;

/// The trace context of an exported span `span` (see [`trace_span`]): the sender's trace
/// (`parent`) continued, or the exporter's new one; recorded as the span's `trace_id`.
pub(crate) fn enter_trace(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    let mut ctx = TraceContext::continue_from(parent);
    if let Some(parent) = parent {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent.to_otel()));
    }
    let exported = span.context().span().span_context().clone();
    if exported.is_valid() {
        ctx = TraceContext::from_otel(&exported);
    }
    span.record("trace_id", tracing::field::display(ctx.trace_id_hex()));
    ctx
}

/// Sends the spans still buffered (called on the way out of `main`).
pub fn flush() {
    if let Some(provider) = OTLP.get() {
        let _ = provider.shutdown();
    }
}

/// The `main` of a service binary whose `Application` has the usual `build(Config)` and
/// `run_until_stopped(token)`: telemetry, the configuration from the environment, build, run
/// until SIGTERM or SIGINT, one exit status (`service_main!(gateway::Application, gateway::Config);`).
#[macro_export]
macro_rules! service_main {
    ($app:ty, $config:ty) => {
        #[tokio::main]
        async fn main() -> std::process::ExitCode {
            $crate::telemetry::init();
            let run = async {
                let app = <$app>::build(<$config>::from_env(&$crate::Env::from_process())?).await?;
                app.run_until_stopped($crate::shutdown::token_on_signal()).await
            };
            $crate::telemetry::exit_on_error(run.await)
        }
    };
}

/// Runs a service's `main` body; a failure is printed as one line with its cause chain
/// (never a backtrace or a config value) and exits with status 1.
pub fn exit_on_error(result: anyhow::Result<()>) -> std::process::ExitCode {
    flush();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
