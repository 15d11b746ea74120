//! W3C trace context (`traceparent`) carried from the gateway to auth (an HTTP header) and
//! through the queues (an AMQP message header) to the converter and the notifier, so that one
//! upload has one `trace_id` in every service's log lines.
//!
//! The context of the work in hand lives in a task-local, set by the HTTP layer
//! ([`crate::http::with_tracing`]) and the consumer loop around each request or job; outgoing
//! calls ([`crate::amqp::Publisher::publish`], [`inject`] for reqwest) read it from there, so
//! handlers pass nothing around.

use std::fmt;
use std::future::Future;

use lapin::types::{AMQPValue, FieldTable, LongString};
use rand::Rng;

/// The header name, in HTTP and in AMQP message headers.
pub const TRACEPARENT: &str = "traceparent";

/// One position in a trace: the trace and the span (the caller's, for outgoing calls).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace (sampled), for work that arrived without one.
    pub fn new_root() -> Self {
        let mut rng = rand::thread_rng();
        Self { trace_id: rng.gen_range(1..=u128::MAX), span_id: rng.gen_range(1..=u64::MAX), flags: 1 }
    }

    /// The same trace, a new span of ours under the caller's.
    pub fn child(&self) -> Self {
        Self { span_id: rand::thread_rng().gen_range(1..=u64::MAX), ..*self }
    }

    /// Parses a version-00 `traceparent`; anything malformed (or the all-zero ids the
    /// specification forbids) is `None`, and the receiver starts a trace of its own.
    /// Later versions are read by their first four fields, as the specification asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
        Some(Self { trace_id, span_id, flags: u8::from_str_radix(flags, 16).ok()? })
    }

    /// The context of incoming work: the sender's trace continued, or a new one.
    pub fn continue_or_start(traceparent: Option<&str>) -> Self {
        Self::continue_from(traceparent.and_then(Self::parse))
    }

    /// The context of incoming work whose sender's context is `parent`: a child of it, or a new
    /// trace.
    pub fn continue_from(parent: Option<Self>) -> Self {
        parent.map_or_else(Self::new_root, |parent| parent.child())
    }

    /// `00-<trace id>-<span id>-<flags>`
    pub fn traceparent(&self) -> String {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex_into(&self.trace_id.to_be_bytes(), &mut out[3..35]);
        hex_into(&self.span_id.to_be_bytes(), &mut out[36..52]);
        hex_into(&[self.flags], &mut out[53..]);
        ascii(&out).to_owned()
    }

    /// The 32 hex digits every log line of the trace carries.
    pub fn trace_id(&self) -> String {
        self.trace_id_hex().to_string()
    }

    /// The trace id as 32 hex digits when displayed, without making a string first.
    pub fn trace_id_hex(&self) -> impl fmt::Display {
        struct Hex([u8; 32]);
        impl fmt::Display for Hex {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(ascii(&self.0))
            }
        }
        let mut out = [0; 32];
        hex_into(&self.trace_id.to_be_bytes(), &mut out);
        Hex(out)
    }

    /// The 16 hex digits of this span.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// As an OpenTelemetry remote span context (the parent of an exported span).
    pub fn to_otel(&self) -> opentelemetry::trace::SpanContext {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        SpanContext::new(TraceId::from(self.trace_id), SpanId::from(self.span_id), TraceFlags::new(self.flags), true, TraceState::default())
    }

    /// The context of an exported span.
    pub fn from_otel(span: &opentelemetry::trace::SpanContext) -> Self {
        Self {
            trace_id: u128::from_be_bytes(span.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(span.span_id().to_bytes()),
            flags: span.trace_flags().to_u8(),
        }
    }

    /// Runs `work` with this context as the current one.
    pub fn scope<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, work)
    }
}

/// `bytes` as lower-case hex digits into `out`, exactly twice as long: into a buffer rather than
/// with `{:032x}`, whose formatting machinery showed in the profile of every request.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    hex::encode_to_slice(bytes, out).expect("the callers size `out` for their integers");
}

/// Text made only of ASCII (hex digits and dashes).
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The context of the request or job in hand, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// Adds the current `traceparent` to an outgoing HTTP request.
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    // A constant name: from a `&str`, a non-standard header name is parsed and copied each time.
    const NAME: reqwest::header::HeaderName = reqwest::header::HeaderName::from_static(TRACEPARENT);
    match current() {
        Some(ctx) => request.header(NAME, ctx.traceparent()),
        None => request,
    }
}

/// Adds the current `traceparent` to AMQP message headers, unless they carry one already
/// (a retried or dead-lettered message keeps the one it arrived with).
pub fn inject_amqp(headers: &mut FieldTable) {
    if headers.inner().contains_key(TRACEPARENT) {
        return;
    }
    if let Some(ctx) = current() {
        headers.insert(TRACEPARENT.into(), AMQPValue::LongString(LongString::from(ctx.traceparent().into_bytes())));
    }
}

/// The `traceparent` of a delivery, if it has a readable one.
pub fn from_amqp(headers: Option<&FieldTable>) -> Option<String> {
    match headers?.inner().get(TRACEPARENT)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_w3c_example() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(tp).unwrap();
        assert_eq!(ctx.traceparent(), tp);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = ctx.child();
        assert_eq!(child.trace_id(), ctx.trace_id());
        assert_ne!(child.span_id(), ctx.span_id());
        assert_eq!(TraceContext::continue_or_start(Some(tp)).trace_id(), ctx.trace_id());
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad:?}");
        }
        // A later version with more fields is read by its first four.
        assert!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
        let fresh = TraceContext::continue_or_start(Some("garbage"));
        assert_eq!(fresh.trace_id().len(), 32);
        assert_ne!(fresh.trace_id(), "0".repeat(32));
    }

    #[tokio::test]
    async fn current_is_scoped_and_amqp_headers_keep_theirs() {
        assert!(current().is_none());
        let ctx = TraceContext::new_root();
        let mut fresh = FieldTable::default();
        let mut kept = FieldTable::default();
        kept.insert(TRACEPARENT.into(), AMQPValue::LongString("00-11111111111111111111111111111111-2222222222222222-01".into()));
        ctx.scope(async {
            assert_eq!(current(), Some(ctx));
            inject_amqp(&mut fresh);
            inject_amqp(&mut kept);
        })
        .await;
        assert_eq!(from_amqp(Some(&fresh)), Some(ctx.traceparent()));
        assert_eq!(from_amqp(Some(&kept)).unwrap(), "00-11111111111111111111111111111111-2222222222222222-01");
        assert!(current().is_none());
    }
}
