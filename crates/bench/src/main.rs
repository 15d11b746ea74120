//! Helpers of `scripts/bench.sh`: the direct-to-MongoDB baselines the services are compared
//! with, job timing over the queues, readiness timing and clean-up. Each subcommand prints its
//! figures on stdout, one item per line, for the script to parse:
//!
//! ```text
//! bench put        --uri U --db D --file F [--username E] [--count N]   -> one file id per line
//! bench upload     --uri U --db D --file F                              -> "<seconds> <bytes>"
//! bench download   --uri U --db D --id ID [--mode driver|range]         -> "<seconds> <bytes>"
//! bench find-rate  --uri U --db D --id ID --username E [--concurrency 16] [--secs 5]
//!                                                                       -> "<req/s> <p50 ms> <p99 ms>"
//! bench jobs       --amqp A --video-queue Q --mp3-queue M --username E --ids a,b,c [--burst]
//!                                                     -> per-job seconds, then "total <seconds>"
//! bench wait-ready --url URL --since-ns T [--timeout 30]                -> ms from T to 200
//! bench drop       --uri U --db a,b                  (drops the databases)
//! bench amqp-clean --amqp A --queues a,b             (deletes the queues with .retry and .dead)
//! ```
//!
//! `upload` uses `common::gridfs::upload`, the very function the gateway streams into;
//! `download --mode driver` reads with the driver's GridFS download stream and `--mode range`
//! with `common::gridfs::read_range` (what the gateway serves from).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use common::amqp::{self, Publisher};
use common::config::MongoSettings;
use common::gridfs;
use common::message::JobMessage;
use futures_util::{AsyncReadExt as _, StreamExt, TryStreamExt};
use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use mongodb::bson::{doc, oid::ObjectId, Bson};
use mongodb::Database;
use secrecy::SecretString;

struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse(raw: &[String]) -> anyhow::Result<Self> {
        let (mut values, mut flags) = (HashMap::new(), Vec::new());
        let mut it = raw.iter().peekable();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else { bail!("unexpected argument {a:?}") };
            match it.peek() {
                Some(v) if !v.starts_with("--") => {
                    values.insert(name.to_owned(), it.next().cloned().unwrap_or_default());
                }
                _ => flags.push(name.to_owned()),
            }
        }
        Ok(Self { values, flags })
    }
    fn get(&self, name: &str) -> anyhow::Result<&str> {
        self.values.get(name).map(String::as_str).ok_or_else(|| anyhow!("--{name} is required"))
    }
    fn or<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.values.get(name) {
            Some(v) => v.parse().map_err(|_| anyhow!("invalid --{name} {v:?}")),
            None => Ok(default),
        }
    }
    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

async fn database(args: &Args, db: &str) -> anyhow::Result<Database> {
    let settings = MongoSettings { uri: SecretString::from(args.get("uri")?.to_owned()) };
    // Same client settings as the gateway (pool of 32, fail-fast timeouts).
    let client = gridfs::client(&settings, Duration::from_secs(30), 32).await?;
    Ok(client.database(db))
}

fn oid(s: &str) -> anyhow::Result<ObjectId> {
    s.parse().with_context(|| format!("{s:?} is not an ObjectId"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let result = match raw.split_first() {
        Some((cmd, rest)) => match Args::parse(rest) {
            Ok(args) => run(cmd, &args).await,
            Err(e) => Err(e),
        },
        None => Err(anyhow!("usage: bench <put|upload|download|find-rate|jobs|wait-ready|drop|amqp-clean> [--option value]...")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cmd: &str, args: &Args) -> anyhow::Result<()> {
    match cmd {
        "put" => put(args).await,
        "upload" => upload(args).await,
        "download" => download(args).await,
        "find-rate" => find_rate(args).await,
        "jobs" => jobs(args).await,
        "wait-ready" => wait_ready(args).await,
        "drop" => {
            for name in args.get("db")?.split(',').filter(|s| !s.is_empty()) {
                database(args, name).await?.drop().await.with_context(|| format!("drop {name}"))?;
            }
            Ok(())
        }
        "amqp-clean" => amqp_clean(args).await,
        other => bail!("unknown subcommand {other:?}"),
    }
}

/// Stores a local file `count` times (setup, not timed).
async fn put(args: &Args) -> anyhow::Result<()> {
    let db = database(args, args.get("db")?).await?;
    let path = args.get("file")?;
    let count: usize = args.or("count", 1)?;
    let name = std::path::Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or("file").to_owned();
    let mut metadata = doc! {"content_type": "application/octet-stream"};
    if let Some(user) = args.values.get("username") {
        metadata.insert("username", user.clone());
    }
    for _ in 0..count {
        let file = tokio::fs::File::open(path).await.with_context(|| format!("open {path}"))?;
        let id = ObjectId::new();
        gridfs::upload(&gridfs::bucket(&db), id, &name, metadata.clone(), file).await?;
        println!("{id}");
    }
    Ok(())
}

/// Baseline of the gateway's upload: the same bytes through the same streaming function.
async fn upload(args: &Args) -> anyhow::Result<()> {
    let db = database(args, args.get("db")?).await?;
    gridfs::ping(&db).await.then_some(()).context("MongoDB does not answer")?;
    let path = args.get("file")?;
    let file = tokio::fs::File::open(path).await.with_context(|| format!("open {path}"))?;
    let start = Instant::now();
    let bytes = gridfs::upload(&gridfs::bucket(&db), ObjectId::new(), "bench", doc! {}, file).await?;
    println!("{:.6} {bytes}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Baseline of the gateway's download: read the whole file, discard it.
async fn download(args: &Args) -> anyhow::Result<()> {
    let db = database(args, args.get("db")?).await?;
    gridfs::ping(&db).await.then_some(()).context("MongoDB does not answer")?;
    let id = oid(args.get("id")?)?;
    let start = Instant::now();
    let mut bytes = 0u64;
    match args.values.get("mode").map(String::as_str).unwrap_or("driver") {
        "driver" => {
            let mut stream = gridfs::bucket(&db).open_download_stream(Bson::ObjectId(id)).await?;
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
            }
        }
        "range" => {
            let file = gridfs::find_file(&db, doc! {"_id": id}).await?.context("no such file")?;
            let mut chunks = std::pin::pin!(gridfs::read_range(&db, &file, 0, file.length.saturating_sub(1)));
            while let Some(b) = chunks.try_next().await? {
                bytes += b.len() as u64;
            }
        }
        other => bail!("unknown --mode {other:?}"),
    }
    println!("{:.6} {bytes}", start.elapsed().as_secs_f64());
    Ok(())
}

/// The MongoDB floor of `GET /download?fid=` on a small file: the same two queries the gateway
/// makes (the owned file's document, then its chunks), from `concurrency` clients for `secs`.
async fn find_rate(args: &Args) -> anyhow::Result<()> {
    let db = database(args, args.get("db")?).await?;
    let id = oid(args.get("id")?)?;
    let user = args.get("username")?.to_owned();
    let concurrency: usize = args.or("concurrency", 16)?;
    let secs: f64 = args.or("secs", 5.0)?;
    gridfs::find_file(&db, doc! {"_id": id, "metadata.username": &user}).await?.context("no such owned file")?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (db, user) = (db.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let file = gridfs::find_file(&db, doc! {"_id": id, "metadata.username": &user}).await?.context("file vanished")?;
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
    println!("{:.1} {:.3} {:.3}", all.len() as f64 / elapsed, pct(0.50), pct(0.99));
    Ok(())
}

/// Publishes video messages as the gateway does and times until each mp3 message appears.
/// Sequential (default): one job at a time, each timed from its own publish. `--burst`: all
/// published at once, each timed from the first publish.
async fn jobs(args: &Args) -> anyhow::Result<()> {
    let url = SecretString::from(args.get("amqp")?.to_owned());
    let video_queue = args.get("video-queue")?.to_owned();
    let mp3_queue = args.get("mp3-queue")?.to_owned();
    let user = args.get("username")?.to_owned();
    let ids: Vec<String> = args.get("ids")?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let timeout = Duration::from_secs(args.or("timeout", 1800)?);
    let burst = args.flag("burst");

    let publisher = Arc::new(Publisher::new(url.clone(), vec![video_queue.clone()], Duration::from_secs(30)));
    publisher.ensure_connected().await?;
    let conn = amqp::connect(&url).await?;
    let ch = conn.create_channel().await?;
    amqp::declare_topology(&conn, &mp3_queue, None).await?;
    let mut deliveries =
        ch.basic_consume(&mp3_queue, "bench", BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await?;
    let first = Instant::now();
    if burst {
        for id in &ids {
            publisher.publish(&video_queue, &JobMessage::new_video(id.clone(), user.clone()).to_json(), FieldTable::default()).await?;
        }
        let mut pending: std::collections::HashSet<&String> = ids.iter().collect();
        let mut times = Vec::new();
        while !pending.is_empty() {
            let msg = next_done(&mut deliveries, timeout).await?;
            if pending.remove(&msg.video_fid) {
                times.push(first.elapsed().as_secs_f64());
            }
        }
        for t in &times {
            println!("{t:.6}");
        }
    } else {
        for id in &ids {
            let t = Instant::now();
            publisher.publish(&video_queue, &JobMessage::new_video(id.clone(), user.clone()).to_json(), FieldTable::default()).await?;
            loop {
                let msg = next_done(&mut deliveries, timeout).await?;
                if &msg.video_fid == id {
                    break;
                }
            }
            println!("{:.6}", t.elapsed().as_secs_f64());
        }
    }
    println!("total {:.6}", first.elapsed().as_secs_f64());
    let _ = conn.close(0, "done").await;
    Ok(())
}

/// Polls `url` every 5 ms until it answers 200; prints the ms since `since-ns` (a wall-clock
/// time in ns, e.g. `date +%s%N` taken just before the service was spawned).
async fn wait_ready(args: &Args) -> anyhow::Result<()> {
    let url = args.get("url")?;
    let since: u128 = args.or("since-ns", 0)?;
    let timeout = Duration::from_secs(args.or("timeout", 30)?);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == reqwest::StatusCode::OK {
                break;
            }
        }
        if start.elapsed() > timeout {
            bail!("{url} not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let ms = if since > 0 { now.saturating_sub(since) as f64 / 1e6 } else { start.elapsed().as_secs_f64() * 1000.0 };
    println!("{ms:.1}");
    Ok(())
}

/// The next mp3 message; a failure notice (no `mp3_fid`) is an error.
async fn next_done(deliveries: &mut lapin::Consumer, timeout: Duration) -> anyhow::Result<JobMessage> {
    let d = tokio::time::timeout(timeout, deliveries.next()).await.map_err(|_| anyhow!("no mp3 message within {timeout:?}"))?;
    let d = d.context("the broker closed the consumer")??;
    let msg: JobMessage = serde_json::from_slice(&d.data).context("unreadable mp3 message")?;
    if msg.mp3_fid.is_none() {
        bail!("job for video {} failed: {}", msg.video_fid, msg.error.unwrap_or_default());
    }
    Ok(msg)
}

async fn amqp_clean(args: &Args) -> anyhow::Result<()> {
    let conn = amqp::connect(&SecretString::from(args.get("amqp")?.to_owned())).await?;
    for q in args.get("queues")?.split(',').filter(|s| !s.is_empty()) {
        for name in [q.to_owned(), amqp::retry_queue(q), amqp::dead_queue(q)] {
            // A missing queue closes the channel: use a fresh one per delete.
            let ch = conn.create_channel().await?;
            let _ = ch.queue_delete(&name, QueueDeleteOptions::default()).await;
        }
    }
    let _ = conn.close(0, "done").await;
    Ok(())
}
