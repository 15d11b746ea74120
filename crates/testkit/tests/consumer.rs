//! The shared consumer loop against the real broker: what it does with a handler that panics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::config::RetrySettings;
use common::consumer::{self, ConsumerSettings, Handler, Job, Outcome};
use secrecy::SecretString;
use testkit::{amqp_channel, amqp_url, take_message, unique};
use tokio_util::sync::CancellationToken;

/// Panics on the body `boom`, counts everything else as done.
struct Fragile {
    done: AtomicUsize,
    notices: AtomicUsize,
}

impl Handler for Fragile {
    async fn handle(&self, job: &Job) -> Outcome {
        assert!(job.body != b"boom", "a handler bug triggered by this input");
        self.done.fetch_add(1, Ordering::SeqCst);
        Outcome::Done
    }

    async fn on_dead_letter(&self, _job: &Job, _reason: &str) -> anyhow::Result<()> {
        self.notices.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_dead_letters_its_message_and_goes_on() {
    let queue = format!("panic-{}", unique());
    let settings = ConsumerSettings {
        amqp_url: SecretString::from(amqp_url()),
        queue: queue.clone(),
        max_length: None,
        prefetch: 1,
        concurrency: 1,
        retry: RetrySettings { max_attempts: 3, base_delay: Duration::from_millis(100), max_redeliveries: 3 },
        grace: Duration::from_secs(5),
    };
    let handler = Arc::new(Fragile { done: AtomicUsize::new(0), notices: AtomicUsize::new(0) });
    let stop = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consumer::run(settings, handler.clone(), stop.clone(), ready.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ready.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "consumer never attached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    while handler.done.load(Ordering::SeqCst) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the message behind the poison one was not handled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handler.notices.load(Ordering::SeqCst), 1, "the owner is told once");
    assert!(ready.load(Ordering::SeqCst), "still consuming");

    stop.cancel();
    consumer.await.unwrap();
    testkit::delete_queues(&[&queue]).await;
}
