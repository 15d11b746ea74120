//! The measurements taken straight against the servers: the direct-to-MongoDB baselines the
//! services are compared with, job timing over the queues, readiness timing, clean-up.
//!
//! `upload` uses `common::gridfs::upload`, the very function the gateway streams into;
//! `download` with [`ReadMode::Driver`] reads with the driver's GridFS download stream and with
//! [`ReadMode::Range`] with `common::gridfs::read_range` (what the gateway serves from).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use common::amqp::{self, Publisher};
use common::config::MongoSettings;
use common::gridfs;
use common::message::{Conversion, Mp3Notice, VideoJob};
use futures_util::{AsyncReadExt as _, StreamExt, TryStreamExt};
use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use mongodb::bson::{doc, oid::ObjectId, Bson};
use mongodb::{Client, Database};
use secrecy::SecretString;

/// A client with the gateway's settings (pool of 32, fail-fast timeouts).
pub async fn mongo(uri: &str) -> anyhow::Result<Client> {
    let settings = MongoSettings { uri: SecretString::from(uri.to_owned()) };
    gridfs::client(&settings, Duration::from_secs(30), 32).await
}

/// Seconds and bytes of one timed transfer.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub secs: f64,
    pub bytes: u64,
}

impl Transfer {
    pub fn mib_per_sec(self) -> f64 {
        crate::system::mib(self.bytes as f64) / self.secs
    }
}

/// Stores a local file `count` times (setup, not timed); `username` makes it that user's.
pub async fn put(db: &Database, path: &Path, username: Option<&str>, count: usize) -> anyhow::Result<Vec<ObjectId>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file").to_owned();
    let mut metadata = doc! {"content_type": "application/octet-stream"};
    if let Some(user) = username {
        metadata.insert("username", user);
    }
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let file = tokio::fs::File::open(path).await.with_context(|| format!("open {}", path.display()))?;
        let id = ObjectId::new();
        gridfs::upload(&gridfs::bucket(db), id, &name, metadata.clone(), file).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Baseline of the gateway's upload: the same bytes through the same streaming function.
pub async fn upload(db: &Database, path: &Path) -> anyhow::Result<Transfer> {
    gridfs::ping(db).await.then_some(()).context("MongoDB does not answer")?;
    let file = tokio::fs::File::open(path).await.with_context(|| format!("open {}", path.display()))?;
    let start = Instant::now();
    let bytes = gridfs::upload(&gridfs::bucket(db), ObjectId::new(), "bench", doc! {}, file).await?;
    Ok(Transfer { secs: start.elapsed().as_secs_f64(), bytes })
}

/// How [`download`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadMode {
    /// The driver's GridFS download stream.
    Driver,
    /// `common::gridfs::read_range`, as the gateway serves.
    Range,
}

/// Baseline of the gateway's download: read the whole file, discard it.
pub async fn download(db: &Database, id: ObjectId, mode: ReadMode) -> anyhow::Result<Transfer> {
    gridfs::ping(db).await.then_some(()).context("MongoDB does not answer")?;
    let start = Instant::now();
    let mut bytes = 0u64;
    match mode {
        ReadMode::Driver => {
            let mut stream = gridfs::bucket(db).open_download_stream(Bson::ObjectId(id)).await?;
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
            }
        }
        ReadMode::Range => {
            let file = gridfs::find_file(db, doc! {"_id": id}).await?.context("no such file")?;
            let mut chunks = std::pin::pin!(gridfs::read_range(db, &file, 0, file.length.saturating_sub(1)));
            while let Some(b) = chunks.try_next().await? {
                bytes += b.len() as u64;
            }
        }
    }
    Ok(Transfer { secs: start.elapsed().as_secs_f64(), bytes })
}

/// Requests per second and latency percentiles.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The MongoDB floor of `GET /download?fid=` on a small file: the same two queries the gateway
/// makes (the owned file's document, then its chunks), from `concurrency` clients for `secs`.
pub async fn find_rate(db: &Database, id: ObjectId, user: &str, concurrency: usize, secs: f64) -> anyhow::Result<Rate> {
    let mp3 = common::ids::Mp3Id::new(id);
    common::mp3s::Mp3Store::new(db).find_owned(mp3, user).await?.context("no such owned file")?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (store, db, user) = (common::mp3s::Mp3Store::new(db), db.clone(), user.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let file = store.find_owned(mp3, &user).await?.context("file vanished")?;
                let mut chunks = std::pin::pin!(gridfs::read_range(&db, &file, 0, file.length.saturating_sub(1)));
                while chunks.try_next().await?.is_some() {}
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 * p).ceil() as usize).saturating_sub(1)).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    Ok(Rate { per_sec: all.len() as f64 / elapsed, p50_ms: pct(0.50), p99_ms: pct(0.99) })
}

/// Seconds of each job, and of all of them.
#[derive(Clone, Debug)]
pub struct Jobs {
    pub each: Vec<f64>,
    pub total: f64,
}

/// Where [`jobs`] publishes and listens.
pub struct JobQueues<'a> {
    pub amqp_url: &'a str,
    pub video_queue: &'a str,
    pub mp3_queue: &'a str,
}

/// Publishes video messages as the gateway does and times until each mp3 message appears.
/// Sequential (`burst` false): one job at a time, each timed from its own publish. Burst: all
/// published at once, each timed from the first publish.
pub async fn jobs(q: &JobQueues<'_>, user: &str, ids: &[ObjectId], burst: bool, timeout: Duration) -> anyhow::Result<Jobs> {
    let url = SecretString::from(q.amqp_url.to_owned());
    let publisher = Publisher::new(url.clone(), vec![q.video_queue.to_owned()], Duration::from_secs(30));
    publisher.ensure_connected().await?;
    let conn = amqp::connect(&url).await?;
    let ch = conn.create_channel().await?;
    amqp::declare_topology(&conn, q.mp3_queue).await?;
    let mut deliveries =
        ch.basic_consume(q.mp3_queue, "bench", BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await?;
    let owner: common::email::Email = user.parse().with_context(|| format!("{user:?} is not an email address"))?;
    let publish = |id: ObjectId| {
        let body = VideoJob::new(common::ids::VideoId::new(id), owner.clone(), Default::default()).to_json();
        let publisher = &publisher;
        async move { publisher.publish(q.video_queue, &body, FieldTable::default()).await }
    };
    let first = Instant::now();
    let mut each = Vec::with_capacity(ids.len());
    if burst {
        for id in ids {
            publish(*id).await?;
        }
        let mut pending: HashSet<ObjectId> = ids.iter().copied().collect();
        while !pending.is_empty() {
            let video = next_done(&mut deliveries, timeout).await?;
            if pending.remove(&video.oid()) {
                each.push(first.elapsed().as_secs_f64());
            }
        }
    } else {
        for id in ids {
            let t = Instant::now();
            publish(*id).await?;
            while next_done(&mut deliveries, timeout).await?.oid() != *id {}
            each.push(t.elapsed().as_secs_f64());
        }
    }
    let total = first.elapsed().as_secs_f64();
    let _ = conn.close(0, "done").await;
    Ok(Jobs { each, total })
}

/// The video of the next mp3 message; a failure notice is an error.
async fn next_done(deliveries: &mut lapin::Consumer, timeout: Duration) -> anyhow::Result<common::ids::VideoId> {
    let d = tokio::time::timeout(timeout, deliveries.next()).await.map_err(|_| anyhow!("no mp3 message within {timeout:?}"))?;
    let d = d.context("the broker closed the consumer")??;
    let notice = Mp3Notice::decode(&d.data).context("unreadable mp3 message")?;
    match notice.outcome {
        Conversion::Ready { .. } => Ok(notice.job.video),
        Conversion::Failed { failure } => bail!("job for video {} failed: {failure}", notice.job.video),
    }
}

/// Polls `url` every 5 ms until it answers 200; the ms since `since` (taken just before the
/// service was spawned).
pub async fn wait_ready(url: &str, since: Instant, timeout: Duration) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == reqwest::StatusCode::OK {
                return Ok(since.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if start.elapsed() > timeout {
            bail!("{url} not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Drops databases (best effort per name; the first error is returned).
pub async fn drop_databases(client: &Client, names: &[String]) -> anyhow::Result<()> {
    let mut first_error = None;
    for name in names {
        if let Err(e) = client.database(name).drop().await {
            first_error.get_or_insert(anyhow::Error::new(e).context(format!("drop {name}")));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes queues with their `.retry` and `.dead` companions (a missing one is no error).
pub async fn delete_queues(amqp_url: &str, queues: &[String]) -> anyhow::Result<()> {
    let conn = amqp::connect(&SecretString::from(amqp_url.to_owned())).await?;
    for q in queues {
        for name in [q.clone(), amqp::retry_queue(q), amqp::dead_queue(q)] {
            // A missing queue closes the channel: use a fresh one per delete.
            let ch = conn.create_channel().await?;
            let _ = ch.queue_delete(&name, QueueDeleteOptions::default()).await;
        }
    }
    let _ = conn.close(0, "done").await;
    Ok(())
}
