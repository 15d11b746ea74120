use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mongodb::bson::{doc, Document};
use serde_json::Value;
use testkit::{media, poll_until, probe, unique_email, wait_for_mails, Media, Stack};
use tokio::sync::mpsc;

/// Uploads with `Accept: application/json` and text fields; returns status and body.
async fn upload_job(stack: &Stack, token: &str, path: &Path, fields: &[(&'static str, &'static str)]) -> (u16, String) {
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(*k, *v);
    }
    form = form.part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
    let resp = reqwest::Client::new()
        .post(stack.gateway_url("/upload"))
        .bearer_auth(token)
        .header("accept", "application/json")
        .multipart(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn job_id(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["id"].as_str().unwrap().to_owned()
}

async fn job(stack: &Stack, token: &str, id: &str) -> (u16, Value) {
    let resp = reqwest::Client::new().get(stack.gateway_url(&format!("/jobs/{id}"))).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls the job until `pred` holds (or panics after `timeout`).
async fn wait_job(stack: &Stack, token: &str, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let last = std::sync::Mutex::new(None);
    let polled = poll_until(&format!("job {id} gets there"), timeout, || async {
        let (status, j) = job(stack, token, id).await;
        let done = (status == 200 && pred(&j)).then(|| j.clone());
        *last.lock().unwrap() = Some((status, j));
        done
    })
    .await;
    polled.unwrap_or_else(|e| panic!("{e}; last {:?}\n{}", last.lock().unwrap(), stack.logs()))
}

/// The `job` events of a stream, until the server ends it.
fn follow(resp: reqwest::Response) -> mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if block.lines().any(|l| l == "event: job") {
                    if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                        let _ = tx.send(serde_json::from_str(data).unwrap());
                    }
                }
            }
        }
    });
    rx
}

async fn mp3_count(stack: &Stack) -> u64 {
    let client = stack.names.mongo().await;
    client.database(&stack.names.mp3s_db).collection::<Document>("fs.files").count_documents(doc! {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_conversion_reports_its_states_and_progress_and_mails_a_working_link() {
    let stack = Stack::start(&[]).await.expect("stack starts");
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    // Long enough (and encoded at LAME's slowest quality) that ffmpeg runs for several seconds.
    let src = media(Media::Mkv, 1200);
    let started = Instant::now();
    let (status, body) = upload_job(&stack, &token, &src, &[("quality", "0")]).await;
    assert_eq!(status, 202, "{body}\n{}", stack.logs());
    let id = job_id(&body);
    let resp = reqwest::Client::new().get(stack.gateway_url(&format!("/jobs/{id}/events"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = follow(resp);
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(300), events.recv()).await.expect("events keep coming") {
        seen.push(e);
    }
    let elapsed = started.elapsed();
    let states: Vec<&str> = seen.iter().map(|e| e["state"].as_str().unwrap()).collect();
    let mut distinct = states.clone();
    distinct.dedup();
    assert!(matches!(distinct[..], ["queued", "converting", "done"] | ["converting", "done"]), "{states:?}\n{}", stack.logs());
    let progress: Vec<i64> = seen.iter().filter(|e| e["state"] == "converting").map(|e| e["progress"].as_i64().unwrap()).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {progress:?}");
    assert!(progress.iter().any(|p| *p > 0 && *p < 100), "progress seen between 0 and 100: {progress:?}\n{}", stack.logs());
    let last = seen.last().unwrap();
    assert_eq!((last["state"].as_str(), last["progress"].as_i64()), (Some("done"), Some(100)));
    let duration = last["duration_seconds"].as_f64().unwrap();
    assert!((duration - 1200.0).abs() < 1.0, "probed duration {duration}");

    // MongoDB writes made for this job: its version counts them.
    let client = stack.names.mongo().await;
    let doc = client.database(&stack.names.videos_db).collection::<Document>("jobs").find_one(doc! {}).await.unwrap().unwrap();
    let writes = doc.get_i64("version").unwrap_or_else(|_| i64::from(doc.get_i32("version").unwrap()));
    let per_minute = writes as f64 / elapsed.as_secs_f64() * 60.0;
    println!(
        "JOB-WRITES {writes} writes over {:.1} s ({per_minute:.0}/min), {} events, progress {progress:?}",
        elapsed.as_secs_f64(),
        seen.len()
    );
    // At most one progress write a second, plus the few state changes (created, converting with
    // its duration, done): a short conversion's rate per minute is dominated by the latter.
    let allowed = elapsed.as_secs_f64().ceil() as i64 + 5;
    assert!(writes <= allowed, "progress writes are throttled to one a second: {writes} writes in {elapsed:?} ({per_minute:.0}/min)");

    // The mail keeps the original line and adds a link that works without a token, with ranges.
    let mails = wait_for_mails(&owner, 1, Duration::from_secs(60)).await.unwrap();
    let mp3 = last["mp3_fid"].as_str().unwrap();
    assert!(mails[0].text.contains(&format!("mp3 file_id: {mp3} is now ready!")), "{}", mails[0].text);
    let link = mails[0].text.lines().find(|l| l.starts_with("http://")).unwrap_or_else(|| panic!("no link in {}", mails[0].text));
    assert!(link.starts_with(&stack.gateway_url(&format!("/jobs/{id}/download?expires="))), "{link}");
    let bytes = reqwest::get(link).await.unwrap();
    assert_eq!(bytes.status(), 200);
    let bytes = bytes.bytes().await.unwrap();
    let part = reqwest::Client::new().get(link).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_options_are_applied_by_ffmpeg() {
    let stack = Stack::start(&[]).await.expect("stack starts");
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    let src = media(Media::Mkv, 8);
    let (status, body) = upload_job(&stack, &token, &src, &[("bitrate", "96k"), ("start", "2"), ("end", "00:00:05.500")]).await;
    assert_eq!(status, 202, "{body}");
    let id = job_id(&body);
    let done = wait_job(&stack, &token, &id, Duration::from_secs(120), |j| j["state"] == "done" || j["state"] == "failed").await;
    assert_eq!(done["state"], "done", "{done}");
    let url = done["download_url"].as_str().unwrap();
    let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    let out = tempfile::Builder::new().suffix(".mp3").tempfile().unwrap();
    std::fs::write(out.path(), &bytes).unwrap();
    let (format, codec, duration) = probe(out.path()).unwrap();
    assert_eq!((format.as_str(), codec.as_deref()), ("mp3", Some("mp3")));
    assert!((duration - 3.5).abs() < 0.15, "cut 2..5.5 lasts 3.5 s, got {duration}");
    let bitrate = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries", "stream=bit_rate", "-of", "csv=p=0"])
        .arg(out.path())
        .output()
        .unwrap();
    let bitrate = String::from_utf8_lossy(&bitrate.stdout).trim().to_owned();
    assert_eq!(bitrate, "96000", "constant bitrate as asked");
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_converting_job_kills_its_conversion_and_nothing_is_stored_or_mailed() {
    let stack = Stack::start(&[]).await.expect("stack starts");
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    let (status, body) = upload_job(&stack, &token, &media(Media::Mkv, 1200), &[("quality", "0")]).await;
    assert_eq!(status, 202, "{body}");
    let id = job_id(&body);
    wait_job(&stack, &token, &id, Duration::from_secs(120), |j| j["state"] == "converting").await;
    let del = reqwest::Client::new().delete(stack.gateway_url(&format!("/jobs/{id}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(job(&stack, &token, &id).await.0, 404);

    // The converter notices within its progress tick and stops.
    poll_until("the converter stops", Duration::from_secs(30), || {
        std::future::ready(stack.converter.log_text().contains("job deleted while converting").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", stack.logs()));
    // Its message was acked (the queue drains) and nothing was stored or mailed.
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let q = ch
        .queue_declare(
            &stack.names.video_queue,
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    assert_eq!(mp3_count(&stack).await, 0, "no mp3 stored for a cancelled job");
    assert!(testkit::mails_to(&owner).await.unwrap().is_empty(), "no mail for a cancelled job");

    // A finished job is deleted with its mp3, and its link stops working.
    let (_, body) = upload_job(&stack, &token, &media(Media::Mkv, 2), &[]).await;
    let done = job_id(&body);
    let finished = wait_job(&stack, &token, &done, Duration::from_secs(120), |j| j["state"] == "done").await;
    assert_eq!(mp3_count(&stack).await, 1);
    let link = finished["download_url"].as_str().unwrap().to_owned();
    let del = reqwest::Client::new().delete(stack.gateway_url(&format!("/jobs/{done}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(mp3_count(&stack).await, 0);
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 404);
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}
