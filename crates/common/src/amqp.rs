//! RabbitMQ: connecting on tokio, the queue topology every service declares identically, and
//! confirmed publishing through a connection that heals itself after a broker restart.

use std::time::Duration;

use anyhow::{anyhow, Context};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

/// Header carrying how many times a message has been tried (1 on first delivery).
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header on dead-lettered messages: why the message was given up.
pub const REASON_HEADER: &str = "x-failure-reason";
/// Header counting how many times a message came back unsettled (its consumer died).
pub const REDELIVERIES_HEADER: &str = "x-redeliveries";

/// Opens a connection driven by the tokio runtime.
pub async fn connect(url: &SecretString) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name("mp3converter".into());
    Connection::connect(url.expose_secret(), props).await.context("failed to connect to RabbitMQ")
}

/// Opens a channel in publisher-confirm mode.
pub async fn confirm_channel(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = conn.create_channel().await.context("failed to open an AMQP channel")?;
    ch.confirm_select(ConfirmSelectOptions::default()).await.context("failed to enable publisher confirms")?;
    Ok(ch)
}

/// The retry queue of `queue`: messages wait there for their TTL, then return to `queue`.
pub fn retry_queue(queue: &str) -> String {
    format!("{queue}.retry")
}

/// The dead-letter queue of `queue`: messages given up, with their reason.
pub fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Declares `queue` with its retry and dead-letter queues.
///
/// A work queue that exists already is used as it is: RabbitMQ refuses to redeclare a queue
/// with other arguments, so a queue made by hand in the original deployment (the tutorial
/// creates them in the management UI) would otherwise stop every service. Work queues carry no
/// length bound: a full queue would drop the retries and redeliveries dead-lettered back into
/// it (classic queues dead-letter at most once), so the gateway bounds the backlog instead,
/// before it accepts an upload ([`Publisher::queue_depth`]).
pub async fn declare_topology(conn: &Connection, queue: &str) -> anyhow::Result<()> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    // A passive declare of a missing queue closes its channel, hence a channel of its own.
    let check = conn.create_channel().await.context("failed to open an AMQP channel")?;
    let exists =
        check.queue_declare(queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.is_ok();
    if check.status().connected() {
        let _ = check.close(200, "checked").await;
    }
    let ch = conn.create_channel().await.context("failed to open an AMQP channel")?;
    if !exists {
        ch.queue_declare(queue, durable, FieldTable::default()).await.with_context(|| format!("failed to declare queue {queue}"))?;
    }
    let mut retry_args = FieldTable::default();
    // Expired retries go back to the work queue through the default exchange.
    retry_args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    retry_args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
    let retry = retry_queue(queue);
    ch.queue_declare(&retry, durable, retry_args).await.with_context(|| format!("failed to declare queue {retry}"))?;
    let dead = dead_queue(queue);
    ch.queue_declare(&dead, durable, FieldTable::default()).await.with_context(|| format!("failed to declare queue {dead}"))?;
    let _ = ch.close(200, "declared").await;
    Ok(())
}

/// Properties of a persistent JSON message with the given headers.
pub fn json_properties(headers: FieldTable) -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type(ShortString::from("application/json")).with_headers(headers)
}

pub fn attempt_headers(attempt: u32) -> FieldTable {
    let mut h = FieldTable::default();
    h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    h
}

/// Reads the attempt count of a delivery (1 when absent).
pub fn attempt_of(props: &BasicProperties) -> u32 {
    count_header(props, ATTEMPT_HEADER).unwrap_or(1).max(1)
}

/// How many times a delivery came back unsettled before (0 when absent).
pub fn redeliveries_of(props: &BasicProperties) -> u32 {
    count_header(props, REDELIVERIES_HEADER).unwrap_or(0)
}

fn count_header(props: &BasicProperties, name: &str) -> Option<u32> {
    props.headers().as_ref().and_then(|h| h.inner().get(name)).and_then(|v| match v {
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    })
}

/// A delivery's headers with `name` set to `count`: a copy of a message keeps what else it
/// carries (its other counters, trace context).
pub fn headers_with_count(props: &BasicProperties, name: &str, count: u32) -> FieldTable {
    let mut h = props.headers().clone().unwrap_or_default();
    h.insert(name.into(), AMQPValue::LongUInt(count));
    h
}

pub fn reason_value(reason: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(reason.as_bytes().to_vec()))
}

/// Publishes to `queue` via the default exchange and waits for the broker's confirm. An
/// unroutable message (queue missing) or a nack is an error.
pub async fn publish_confirmed(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) -> anyhow::Result<()> {
    let confirm = ch
        .basic_publish("", queue, BasicPublishOptions { mandatory: true, ..Default::default() }, body, props)
        .await
        .with_context(|| format!("failed to publish to queue {queue}"))?
        .await
        .with_context(|| format!("no confirm for the publish to queue {queue}"))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(anyhow!("the broker could not route the message to queue {queue}")),
        Confirmation::Nack(_) => Err(anyhow!("the broker refused (nacked) the message for queue {queue}")),
        Confirmation::NotRequested => Err(anyhow!("channel is not in confirm mode")),
    }
}

/// A publisher that keeps one connection and confirm channel, reconnecting on demand when the
/// broker went away, and declares the topology of the queues it publishes to on each connect.
pub struct Publisher {
    url: SecretString,
    queues: Vec<String>,
    timeout: Duration,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    /// Nothing is opened until the first publish (or [`Publisher::ensure_connected`]).
    pub fn new(url: SecretString, queues: Vec<String>, timeout: Duration) -> Self {
        Self { url, queues, timeout, state: Mutex::new(None) }
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let mut state = self.state.lock().await;
        if let Some((conn, ch)) = state.as_ref() {
            if conn.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
            tracing::warn!("AMQP connection lost; reconnecting");
            crate::metrics::reconnected("rabbitmq");
        }
        discard(&mut state);
        let conn = connect(&self.url).await?;
        let ch = confirm_channel(&conn).await?;
        for q in &self.queues {
            declare_topology(&conn, q).await?;
        }
        *state = Some((conn, ch.clone()));
        Ok(ch)
    }

    /// Connects now (start-up check); errors are returned, not retried.
    pub async fn ensure_connected(&self) -> anyhow::Result<()> {
        tokio::time::timeout(self.timeout, self.channel()).await.map_err(|_| anyhow!("timed out connecting to RabbitMQ"))?.map(|_| ())
    }

    /// Messages ready in `queue` (one of this publisher's), within the timeout.
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<u32> {
        let attempt = async {
            let ch = self.channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            let q = ch
                .queue_declare(queue, passive, FieldTable::default())
                .await
                .with_context(|| format!("failed to inspect queue {queue}"))?;
            anyhow::Ok(q.message_count())
        };
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| anyhow!("timed out inspecting queue {queue}"))?
    }

    /// True when a healthy connection is open now (readiness).
    pub async fn is_connected(&self) -> bool {
        self.ensure_connected().await.is_ok()
    }

    /// Publishes a persistent JSON message and waits for the confirm, within the timeout. The
    /// message carries the current trace context (`traceparent`) unless `headers` has one.
    pub async fn publish(&self, queue: &str, body: &[u8], mut headers: FieldTable) -> anyhow::Result<()> {
        crate::trace::inject_amqp(&mut headers);
        let attempt = async {
            let ch = self.channel().await?;
            publish_confirmed(&ch, queue, body, json_properties(headers)).await
        };
        let result =
            tokio::time::timeout(self.timeout, attempt).await.map_err(|_| anyhow!("timed out publishing to queue {queue}")).and_then(|r| r);
        if result.is_err() {
            // The next publish starts from a fresh connection.
            discard(&mut *self.state.lock().await);
        }
        result
    }
}

/// Closes and forgets a connection that is no longer trusted. lapin keeps a connection (and
/// its heartbeats) running until it is closed, so merely dropping it would leak it whenever
/// it is still alive, e.g. after a publish that timed out.
fn discard(state: &mut Option<(Connection, Channel)>) {
    if let Some((conn, _)) = state.take() {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "reconnecting")).await;
        });
    }
}
