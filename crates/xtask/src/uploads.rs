//! `xtask concurrent-uploads`: the gateway's memory under many concurrent uploads (issue 13,
//! point 12), run by `scripts/bench.sh --uploads`.

use std::time::{Duration, Instant};

use anyhow::Context;

#[derive(clap::Args)]
pub struct Options {
    /// Uploads sent at the same moment.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Seconds of generated test video (40 s is about 0.9 MB).
    #[arg(long, default_value_t = 40)]
    seconds: u32,
    /// Seconds to wait for each upload and for all conversions.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Measure memory only; don't wait for the conversions.
    #[arg(long)]
    memory_only: bool,
}

/// `--count` uploads of one small video at the same moment (each tried
/// again after `Retry-After` when refused with 503, as a client should) against a
/// freshly started stack (the four binaries next to this one, isolated databases and queues,
/// `BENCH_SERVICE_ENV="A=1 B=2"` added to every service). Measures the gateway's RSS before and
/// its peak during the burst (`VmHWM`, reset just before), then waits until every accepted
/// upload has exactly one mp3. Returns the figures as one JSON object.
pub async fn run(opts: Options) -> anyhow::Result<serde_json::Value> {
    let Options { count, seconds, timeout, memory_only } = opts;
    let timeout = Duration::from_secs(timeout);
    let extra_raw = std::env::var("BENCH_SERVICE_ENV").unwrap_or_default();
    let extra: Vec<(&str, &str)> = extra_raw.split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
    let video = std::fs::read(testkit::media(testkit::Media::Mkv, seconds)).context("generate the test video")?;
    let stack = testkit::Stack::start(&extra).await?;
    let email = testkit::unique_email();
    let token = stack.user_token(&email, true).await?;
    let pid = stack.gateway.child.id();
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(timeout).build()?;
    // Warm-up: one upload, so the idle figure includes the pools every upload uses.
    let boundary = "benchboundary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mkv\"\r\n\r\n").into_bytes();
    body.extend_from_slice(&video);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let body = bytes::Bytes::from(body);
    let send = |client: reqwest::Client, body: bytes::Bytes| {
        let (url, token) = (stack.gateway_url("/upload"), token.clone());
        async move {
            // A client as the API asks: a 503 is tried again after its Retry-After.
            let mut refused = 0u32;
            loop {
                let resp = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                    .body(body.clone())
                    .send()
                    .await?;
                let status = resp.status().as_u16();
                let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                match (status, wait) {
                    (503, Some(secs)) if refused < 20 => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                    }
                    _ => return Ok::<(u16, u32), reqwest::Error>((status, refused)),
                }
            }
        }
    };
    anyhow::ensure!(send(client.clone(), body.clone()).await?.0 == 200, "the warm-up upload failed:\n{}", stack.logs());
    let (idle, _) = testkit::memory_kib(pid)?;
    testkit::reset_peak(pid)?;
    let started = Instant::now();
    let results = futures_util::future::join_all((0..count).map(|_| send(client.clone(), body.clone()))).await;
    let burst = started.elapsed();
    let (_, peak) = testkit::memory_kib(pid)?;
    let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
    let mut retried_503 = 0;
    for r in &results {
        let key = match r {
            Ok((s, refused)) => {
                retried_503 += refused;
                s.to_string()
            }
            Err(e) => format!("error: {e}"),
        };
        *statuses.entry(key).or_default() += 1;
    }
    let accepted = statuses.get("200").copied().unwrap_or(0) + 1;

    // Every accepted upload (the warm-up too) converted exactly once.
    let mongo = stack.names.mongo().await;
    let videos = common::videos::VideoStore::new(&mongo.database(&stack.names.videos_db));
    let mp3s = common::mp3s::Mp3Store::new(&mongo.database(&stack.names.mp3s_db));
    let stored = videos.count_of(&email).await?;
    // `--memory-only`: skip waiting for the conversions (quick memory experiments).
    let deadline = if memory_only { Instant::now() } else { Instant::now() + timeout };
    let converted = loop {
        let n = mp3s.count_of(&email).await?;
        if n >= stored || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let all_done = started.elapsed();
    let ids = mp3s.sources_of(&email).await?;
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    let out = serde_json::json!({
        "count": count,
        "video_bytes": video.len(),
        "statuses": statuses,
        "answers_503_then_retried": retried_503,
        "accepted": accepted,
        "stored": stored,
        "converted": converted,
        "converted_exactly_once": converted == stored && distinct.len() == ids.len() && stored == accepted as u64,
        "gateway_idle_rss_kib": idle,
        "gateway_peak_rss_kib": peak,
        "gateway_peak_above_idle_kib": peak.saturating_sub(idle),
        "burst_seconds": burst.as_secs_f64(),
        "all_converted_seconds": all_done.as_secs_f64(),
    });
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
    let _ = mongo.database(&stack.names.videos_db).drop().await;
    let _ = mongo.database(&stack.names.mp3s_db).drop().await;
    Ok(out)
}
