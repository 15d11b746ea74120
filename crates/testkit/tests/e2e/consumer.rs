//! The shared consumer loop against the real broker: what it does with a handler that panics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::config::RetrySettings;
use common::consumer::{self, ConsumerSettings, Handler, Job, Outcome};
use secrecy::SecretString;
use testkit::{amqp_channel, amqp_url, eventually, take_message, unique};
use tokio_util::sync::CancellationToken;

/// Panics on the body `boom`, counts everything else as done.
struct Fragile {
    done: AtomicUsize,
    notices: AtomicUsize,
}

impl Handler for Fragile {
    type Message = ();

    async fn handle(&self, (): &(), job: &Job) -> Outcome {
        assert!(job.body != b"boom", "a handler bug triggered by this input");
        self.done.fetch_add(1, Ordering::SeqCst);
        Outcome::Done
    }

    async fn on_dead_letter(&self, (): &(), _job: &Job, _reason: &str) -> anyhow::Result<()> {
        self.notices.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// One message at a time on `queue`, three attempts `base_delay` apart.
fn settings(queue: &str, base_delay: Duration) -> ConsumerSettings {
    ConsumerSettings {
        amqp_url: SecretString::from(amqp_url()),
        queue: queue.to_owned(),
        prefetch: 1,
        concurrency: 1,
        retry: RetrySettings { max_attempts: 3, base_delay, max_redeliveries: 3 },
        grace: Duration::from_secs(5),
    }
}

/// Runs the consumer loop with `handler` until the returned token is cancelled; returns once it
/// has attached to its queue.
async fn attach<H: Handler>(
    settings: ConsumerSettings,
    handler: Arc<H>,
) -> (CancellationToken, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consumer::run(settings, handler, stop.clone(), ready.clone()));
    eventually("the consumer attaches", Duration::from_secs(20), || std::future::ready(ready.load(Ordering::SeqCst).then_some(()))).await;
    (stop, ready, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_dead_letters_its_message_and_goes_on() {
    let queue = format!("panic-{}", unique());
    let settings = settings(&queue, Duration::from_millis(100));
    let handler = Arc::new(Fragile { done: AtomicUsize::new(0), notices: AtomicUsize::new(0) });
    let (stop, ready, consumer) = attach(settings, handler.clone()).await;

    let (conn, ch) = amqp_channel().await.unwrap();
    let publish_ch = common::amqp::confirm_channel(&conn).await.unwrap();
    for body in [&b"boom"[..], b"fine"] {
        common::amqp::publish_confirmed(&publish_ch, &queue, body, common::amqp::json_properties(Default::default())).await.unwrap();
    }

    // The poison message is dead-lettered with a reason (prefetch 1: had it stayed unsettled,
    // the good one behind it would never have been delivered).
    let dead = take_message(&ch, &common::amqp::dead_queue(&queue), Duration::from_secs(20)).await.expect("dead-lettered");
    assert_eq!(dead.body, b"boom");
    assert_eq!(dead.header_str(common::amqp::REASON_HEADER).as_deref(), Some("internal error while processing the message"));
    eventually("the message behind the poison one is handled", Duration::from_secs(20), || {
        std::future::ready((handler.done.load(Ordering::SeqCst) >= 1).then_some(()))
    })
    .await;
    assert_eq!(handler.notices.load(Ordering::SeqCst), 1, "the owner is told once");
    assert!(ready.load(Ordering::SeqCst), "still consuming");

    stop.cancel();
    consumer.await.unwrap();
    testkit::delete_queues(&[&queue]).await;
}

/// Fails transiently every time, noting the trace each attempt (and the dead-letter notice) ran in.
struct Flaky {
    seen: std::sync::Mutex<Vec<String>>,
}

impl Handler for Flaky {
    type Message = ();

    async fn handle(&self, (): &(), _job: &Job) -> Outcome {
        self.seen.lock().unwrap().push(common::trace::current().map(|c| c.trace_id()).unwrap_or_default());
        Outcome::Retry("the database is away".into())
    }

    async fn on_dead_letter(&self, (): &(), _job: &Job, _reason: &str) -> anyhow::Result<()> {
        self.seen.lock().unwrap().push(common::trace::current().map(|c| c.trace_id()).unwrap_or_default());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_the_dead_letter_keep_the_trace_and_are_counted() {
    common::metrics::init();
    let queue = format!("trace-{}", unique());
    let settings = settings(&queue, Duration::from_millis(50));
    let handler = Arc::new(Flaky { seen: Default::default() });
    let (stop, _ready, consumer) = attach(settings, handler.clone()).await;

    let (conn, ch) = amqp_channel().await.unwrap();
    let publish_ch = common::amqp::confirm_channel(&conn).await.unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        common::trace::TRACEPARENT.into(),
        lapin::types::AMQPValue::LongString(format!("00-{trace_id}-b7ad6b7169203331-01").into()),
    );
    common::amqp::publish_confirmed(&publish_ch, &queue, b"{}", common::amqp::json_properties(headers)).await.unwrap();

    let dead = take_message(&ch, &common::amqp::dead_queue(&queue), Duration::from_secs(20)).await.expect("dead-lettered");
    let tp = dead.header_str(common::trace::TRACEPARENT).expect("the dead letter carries a traceparent");
    assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
    assert_ne!(tp, format!("00-{trace_id}-b7ad6b7169203331-01"), "the parent span is the consumer's, not the publisher's");
    assert_eq!(*handler.seen.lock().unwrap(), vec![trace_id.to_owned(); 4], "three attempts and the notice, all in one trace");

    // Counted once settled, just after the dead letter is confirmed.
    let dead_lettered = [("queue", queue.as_str()), ("outcome", "dead_lettered")];
    let text = eventually("the dead letter is counted", Duration::from_secs(20), || {
        let text = common::metrics::handle().render();
        std::future::ready((testkit::metric(&text, "mp3converter_jobs_total", &dead_lettered) == Some(1.0)).then_some(text))
    })
    .await;
    assert_eq!(testkit::metric(&text, "mp3converter_jobs_total", &[("queue", &queue), ("outcome", "retried")]), Some(2.0), "{text}");
    assert_eq!(testkit::metric(&text, "mp3converter_jobs_total", &[("queue", &queue), ("outcome", "done")]), None, "{text}");

    stop.cancel();
    consumer.await.unwrap();
    testkit::delete_queues(&[&queue]).await;
}
