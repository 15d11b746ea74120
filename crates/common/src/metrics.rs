//! Prometheus metrics: one recorder per process (the `metrics` facade is process-wide by
//! design), rendered in the text format by each service's `GET /metrics`, and the names of the
//! pipeline metrics, so that every service spells them the same way.
//!
//! Label values are always bounded: methods, route patterns, status codes, queue names from
//! the configuration, and fixed outcome and reason words. Never user names, ids or file names.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `http_requests_total{method, route, status}`
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// `http_request_duration_seconds{method, route, status}` (until the response head is ready;
/// a streamed body's transfer time is not included).
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
/// `mp3converter_uploads_total{outcome="accepted"|"refused", reason}`
pub const UPLOADS: &str = "mp3converter_uploads_total";
/// Bytes of videos stored by accepted uploads.
pub const UPLOAD_BYTES: &str = "mp3converter_upload_bytes_total";
/// Bytes of mp3s sent by downloads.
pub const DOWNLOAD_BYTES: &str = "mp3converter_download_bytes_total";
/// `mp3converter_jobs_total{queue, outcome="done"|"retried"|"failed"|"dead_lettered"}`: one
/// outcome per handled delivery; `failed` is a permanent failure (dead-lettered at once),
/// `dead_lettered` a transient one that ran out of attempts.
pub const JOBS: &str = "mp3converter_jobs_total";
/// `mp3converter_conversion_duration_seconds{mode="copy"|"reencode"}`: video read, converted
/// and the mp3 stored.
pub const CONVERSION_DURATION: &str = "mp3converter_conversion_duration_seconds";
/// Seconds of audio converted per second of conversion.
pub const CONVERSION_SPEED: &str = "mp3converter_conversion_speed_ratio";
/// From the upload (the video id's time stamp, to the second) to the "ready" mail accepted by
/// the SMTP server.
pub const UPLOAD_TO_EMAIL: &str = "mp3converter_upload_to_email_seconds";
/// `mp3converter_emails_total{kind="ready"|"failed", outcome="sent"|"duplicate"|"retried"|"refused"}`
pub const EMAILS: &str = "mp3converter_emails_total";
/// Videos announced by the gateway's outbox sweep (their upload never published).
pub const OUTBOX_REPUBLISHED: &str = "mp3converter_outbox_republished_total";
/// `mp3converter_dependency_reconnects_total{dependency="rabbitmq"}`: connections re-opened
/// after one was lost.
pub const RECONNECTS: &str = "mp3converter_dependency_reconnects_total";

/// Buckets of the request histogram: a token check takes about a millisecond, an upload of a
/// large video minutes.
const HTTP_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Buckets of conversion and upload-to-mail times: seconds to an hour.
const PIPELINE_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];
/// Buckets of the conversion speed: a stream copy runs at hundreds of times real time, a
/// re-encode at tens.
const SPEED_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// The process's recorder, installed on first use. Histograms are kept as buckets (not
/// summaries) so that Prometheus can aggregate them over replicas.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), HTTP_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CONVERSION_DURATION.to_owned()), PIPELINE_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(UPLOAD_TO_EMAIL.to_owned()), PIPELINE_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CONVERSION_SPEED.to_owned()), SPEED_BUCKETS))
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            // Only this function installs a recorder, once; reaching this is a bug elsewhere.
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        // Histogram samples wait in per-metric buffers until a render or an upkeep folds them
        // into the buckets: without upkeep, a process nobody scrapes would grow them forever.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("failed to start the metrics upkeep thread");
        handle
    })
}

/// Installs the recorder now, so that metrics recorded before the first scrape are kept.
pub fn init() {
    handle();
}

/// `GET /metrics`: the Prometheus text exposition format.
pub async fn render() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle().render())
}

/// Counts a dependency connection re-opened after a loss.
pub fn reconnected(dependency: &'static str) {
    metrics::counter!(RECONNECTS, "dependency" => dependency).increment(1);
}
