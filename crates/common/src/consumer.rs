//! The consumer loop shared by the converter and the notifier: manual acks after the work is
//! durably done, bounded concurrency, retries through a TTL queue with exponential backoff,
//! dead-lettering with a reason, reconnection with backoff, graceful shutdown, and the health
//! port that goes with it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_util::{FutureExt as _, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::amqp;
use crate::config::RetrySettings;
use crate::trace::TraceContext;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The work is durably done: ack.
    Done,
    /// A transient failure: try again later (dead-lettered once attempts run out).
    Retry(String),
    /// A permanent failure: dead-letter now with this reason.
    Fail(String),
}

/// The start of the reason of a message dead-lettered because it kept coming back unsettled.
pub const REDELIVERY_LIMIT_REASON: &str = "redelivered too many times without being settled";

/// One delivery as a handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub body: Vec<u8>,
    /// 1 on the first try.
    pub attempt: u32,
}

/// What a delivery's body decodes into before a handler sees it (the typed messages of
/// [`crate::message`]). A body that does not decode is dead-lettered with the error as its
/// reason, without reaching the handler.
pub trait Decode: Sized + Send + Sync + 'static {
    type Error: std::fmt::Display + Send + Sync;
    fn decode(body: &[u8]) -> Result<Self, Self::Error>;
}

/// For handlers that read the body themselves (`job.body`).
impl Decode for () {
    type Error = std::convert::Infallible;
    fn decode(_: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The work a consumer does.
pub trait Handler: Send + Sync + 'static {
    /// What the queue carries.
    type Message: Decode;

    fn handle(&self, message: &Self::Message, job: &Job) -> impl Future<Output = Outcome> + Send;

    /// Called before a message that decoded is dead-lettered (e.g. to tell the owner). An error
    /// puts the message back on the queue so the notice is not lost.
    fn on_dead_letter(&self, _message: &Self::Message, _job: &Job, _reason: &str) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// How a consumer runs.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub amqp_url: SecretString,
    pub queue: String,
    pub prefetch: u16,
    /// Jobs handled at once.
    pub concurrency: usize,
    pub retry: RetrySettings,
    /// After shutdown is requested, how long jobs in hand may take before they are abandoned
    /// (and their messages return to the queue).
    pub grace: Duration,
}

/// Consumes until `shutdown` is cancelled, reconnecting whenever the broker goes away.
/// `ready` is true while a consumer is attached to the queue.
pub async fn run<H: Handler>(settings: ConsumerSettings, handler: Arc<H>, shutdown: CancellationToken, ready: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        let attached = Arc::new(AtomicBool::new(false));
        let result = session(&settings, &handler, &shutdown, &ready, &attached).await;
        ready.store(false, Ordering::SeqCst);
        match result {
            Ok(()) => break,
            Err(e) => {
                if attached.load(Ordering::SeqCst) {
                    backoff = Duration::from_millis(500);
                }
                error!(error.cause_chain = ?e, queue = %settings.queue, retry_in = ?backoff, "consumer lost its connection");
                crate::metrics::reconnected("rabbitmq");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    info!(queue = %settings.queue, "consumer stopped");
}

async fn session<H: Handler>(
    settings: &ConsumerSettings,
    handler: &Arc<H>,
    shutdown: &CancellationToken,
    ready: &AtomicBool,
    attached: &AtomicBool,
) -> anyhow::Result<()> {
    let conn = amqp::connect(&settings.amqp_url).await?;
    let ch = amqp::confirm_channel(&conn).await?;
    amqp::declare_topology(&conn, &settings.queue).await?;
    ch.basic_qos(settings.prefetch, BasicQosOptions::default()).await.context("failed to set prefetch")?;
    let tag = format!("mp3converter-{}", std::process::id());
    let mut deliveries = ch
        .basic_consume(&settings.queue, &tag, BasicConsumeOptions::default(), FieldTable::default())
        .await
        .with_context(|| format!("failed to consume from {}", settings.queue))?;
    info!(queue = %settings.queue, prefetch = settings.prefetch, concurrency = settings.concurrency, "consuming");
    ready.store(true, Ordering::SeqCst);
    attached.store(true, Ordering::SeqCst);

    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = deliveries.next() => match next {
                None => break Err(anyhow!("the broker closed the consumer")),
                Some(Err(e)) => break Err(anyhow::Error::new(e).context("delivery failed")),
                Some(Ok(delivery)) => {
                    let (ch, handler, permits, settings) = (ch.clone(), handler.clone(), permits.clone(), settings.clone());
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        let Ok(_permit) = permits.acquire_owned().await else { return };
                        // Don't start a job whose outcome can't be settled or that shutdown
                        // forbids: the message goes back to the queue with the channel.
                        if shutdown.is_cancelled() || !ch.status().connected() {
                            return;
                        }
                        process(&settings, &ch, handler.as_ref(), delivery).await;
                    });
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    error!(error = %e, "a job task ended abnormally");
                }
            }
        }
    };
    ready.store(false, Ordering::SeqCst);

    if outcome.is_ok() {
        // Graceful: take no more work.
        let _ = ch.basic_cancel(&tag, BasicCancelOptions::default()).await;
    }
    // Let the jobs in hand finish within the grace period, also when the connection is gone:
    // their work is durable even if their ack can no longer reach the broker (the redelivery
    // then finds it done), whereas a job cut off half-way (a mail sent but not yet recorded)
    // could be done twice.
    if !tasks.is_empty() {
        info!(in_flight = tasks.len(), grace = ?settings.grace, "draining");
        let drained = tokio::time::timeout(settings.grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(abandoned = tasks.len(), "grace period over; returning unfinished jobs to the queue");
        }
    }
    // Abandoned jobs are dropped (their child processes killed); closing the channel returns
    // their unacked messages to the queue.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let _ = ch.close(200, "bye").await;
    let _ = conn.close(200, "bye").await;
    outcome
}

async fn process<H: Handler>(settings: &ConsumerSettings, ch: &Channel, handler: &H, delivery: Delivery) {
    let attempt = amqp::attempt_of(&delivery.properties);
    let job = Job { body: delivery.data.clone(), attempt };
    let message = H::Message::decode(&job.body);
    // The trace the message arrived with (the upload's), or a new one for a message without.
    let parent = crate::trace::from_amqp(delivery.properties.headers().as_ref()).as_deref().and_then(TraceContext::parse);
    let (span, ctx) = crate::telemetry::trace_span!(parent, "job", queue = %settings.queue, delivery_tag = delivery.delivery_tag, attempt);
    let work = async {
        // A delivery that comes back unsettled may be one whose handling kills its consumer
        // (OOM, a crash in ffmpeg's parent): handled again as it is, it would kill consumer
        // after consumer forever. Its count is first made durable in a copy at the back of the
        // queue (the original acked), and past the bound the message is dead-lettered unhandled.
        // Counting in the message works for the classic queues of a running deployment, where
        // a quorum queue's `x-delivery-limit` would need the queue recreated.
        if delivery.redelivered {
            let returns = amqp::redeliveries_of(&delivery.properties) + 1;
            let (settled, label) = if returns > settings.retry.max_redeliveries {
                let reason = format!("{REDELIVERY_LIMIT_REASON} ({returns} times)");
                (dead_letter(settings, ch, handler, message.as_ref().ok(), &job, &reason).await, Some("dead_lettered"))
            } else {
                warn!(returns, "message came back unsettled; requeued with its count");
                let headers = amqp::headers_with_count(&delivery.properties, amqp::REDELIVERIES_HEADER, returns);
                (amqp::publish_confirmed(ch, &settings.queue, &job.body, delivery.properties.clone().with_headers(headers)).await, None)
            };
            return settle(settings, ch, &job, delivery, settled, label).await;
        }
        // A handler that panics on some input must not leave its message unsettled (holding a
        // prefetch slot until the connection closes) nor crash-loop on it: it is a poison message.
        let outcome = match &message {
            Ok(message) => match std::panic::AssertUnwindSafe(handler.handle(message, &job)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Fail("internal error while processing the message".into()),
            },
            Err(e) => Outcome::Fail(e.to_string()),
        };
        let message = message.as_ref().ok();
        let label = match &outcome {
            Outcome::Done => "done",
            Outcome::Retry(_) if attempt < settings.retry.max_attempts => "retried",
            Outcome::Retry(_) => "dead_lettered",
            Outcome::Fail(_) => "failed",
        };
        let settled = match outcome {
            Outcome::Done => Ok(()),
            Outcome::Retry(reason) if attempt < settings.retry.max_attempts => {
                let delay = settings.retry.delay_before(attempt + 1);
                warn!(%reason, ?delay, "transient failure; will retry");
                // The copy keeps the delivery's headers, its traceparent among them.
                let mut headers = amqp::headers_with_count(&delivery.properties, amqp::ATTEMPT_HEADER, attempt + 1);
                crate::trace::inject_amqp(&mut headers);
                let props = amqp::json_properties(headers).with_expiration(delay.as_millis().to_string().into());
                amqp::publish_confirmed(ch, &amqp::retry_queue(&settings.queue), &job.body, props).await
            }
            Outcome::Retry(reason) => {
                dead_letter(settings, ch, handler, message, &job, &format!("gave up after {attempt} attempts: {reason}")).await
            }
            Outcome::Fail(reason) => dead_letter(settings, ch, handler, message, &job, &reason).await,
        };
        settle(settings, ch, &job, delivery, settled, Some(label)).await
    };
    // What the job publishes (the mp3 message, a failure notice, its retry, its dead letter)
    // carries the same trace, with this job as the parent span.
    ctx.scope(work).instrument(span).await
}

/// Acks a delivery whose outcome was recorded (`settled`), counting it under `outcome`, or
/// hands it back.
async fn settle(
    settings: &ConsumerSettings,
    ch: &Channel,
    job: &Job,
    delivery: Delivery,
    settled: anyhow::Result<()>,
    outcome: Option<&'static str>,
) {
    match settled {
        Ok(()) => {
            if let Some(outcome) = outcome {
                metrics::counter!(crate::metrics::JOBS, "queue" => settings.queue.clone(), "outcome" => outcome).increment(1);
            }
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                // The broker will redeliver; handlers are idempotent.
                warn!(error.cause_chain = ?e, "ack failed");
            }
        }
        Err(e) if !ch.status().connected() => {
            // The channel died with the connection; the broker redelivers the message.
            warn!(error.cause_chain = ?e, "connection lost before the message was settled; it will be redelivered");
        }
        Err(e) => {
            // Paused first, so a message whose outcome can't be recorded (a notice that can't
            // be published, say) does not come straight back and redo its work in a tight loop.
            let pause = settings.retry.delay_before(job.attempt + 1);
            error!(error.cause_chain = ?e, ?pause, "could not settle the message; returning it to the queue");
            tokio::time::sleep(pause).await;
            let _ = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        }
    }
}

async fn dead_letter<H: Handler>(
    settings: &ConsumerSettings,
    ch: &Channel,
    handler: &H,
    message: Option<&H::Message>,
    job: &Job,
    reason: &str,
) -> anyhow::Result<()> {
    error!(%reason, "dead-lettering message");
    if let Some(message) = message {
        handler.on_dead_letter(message, job, reason).await.context("failed to report the failure")?;
    }
    let mut headers = amqp::attempt_headers(job.attempt);
    headers.insert(amqp::REASON_HEADER.into(), amqp::reason_value(reason));
    crate::trace::inject_amqp(&mut headers);
    amqp::publish_confirmed(ch, &amqp::dead_queue(&settings.queue), &job.body, amqp::json_properties(headers)).await
}

/// A consumer with its health port (`/healthz`, and `/readyz` true while attached to the queue):
/// what the converter and the notifier run.
pub struct ConsumerService<H> {
    handler: Arc<H>,
    settings: ConsumerSettings,
    ready: Arc<AtomicBool>,
    health_port: u16,
    health_task: tokio::task::JoinHandle<()>,
    stop_health: CancellationToken,
}

impl<H: Handler> ConsumerService<H> {
    /// Binds the health port (0 picks a free one); consuming starts with `run_until_stopped`.
    pub async fn start(handler: Arc<H>, settings: ConsumerSettings, health_port: u16) -> anyhow::Result<Self> {
        let ready = Arc::new(AtomicBool::new(false));
        let stop_health = CancellationToken::new();
        let (health_port, health_task) = crate::health::serve(health_port, ready.clone(), stop_health.clone()).await?;
        Ok(Self { handler, settings, ready, health_port, health_task, stop_health })
    }

    pub fn health_port(&self) -> u16 {
        self.health_port
    }

    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// Consumes until `shutdown`, then drains (see [`run`]) and closes the health port.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        run(self.settings, self.handler, shutdown, self.ready).await;
        self.stop_health.cancel();
        let _ = self.health_task.await;
    }
}
