//! The jobs API against a gateway in-process, the real auth service, MongoDB and RabbitMQ. Jobs
//! are moved through their states with the same store operations the converter uses, so these
//! tests see exactly what a converter's writes look like to a client.

use std::time::{Duration, Instant};

use common::ids::{Mp3Id, VideoId};
use common::jobs::{JobDoc, JobState, OutputOptions};
use futures_util::StreamExt;
use mongodb::bson::{doc, oid::ObjectId};
use serde_json::Value;
use testkit::{media, take_message, unique_email, Media};
use tokio::sync::mpsc;

use super::{spawn_app, TestApp};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A job as the gateway would create it, stored directly.
async fn insert_job(gw: &TestApp, owner: &str, filename: &str) -> JobDoc {
    let job = JobDoc::queued(VideoId::new(ObjectId::new()), owner, filename, OutputOptions::default());
    gw.state.jobs.create(&job).await.unwrap();
    job
}

/// Stores `bytes` as the job's mp3 and marks the job done.
async fn finish_with_mp3(gw: &TestApp, job: &JobDoc, bytes: &[u8]) -> Mp3Id {
    let mp3 = ObjectId::new();
    let meta = doc! {"username": &job.owner, "video_fid": job.id.to_hex(), "content_type": "audio/mpeg"};
    common::gridfs::upload(&common::gridfs::bucket(gw.state.mp3s.database()), mp3, "x.mp3", meta, bytes).await.unwrap();
    assert_eq!(gw.state.jobs.start_converting(job.video()).await.unwrap(), common::jobs::Tracked::Updated);
    gw.state.jobs.finish_done(job.video(), Mp3Id::new(mp3)).await.unwrap();
    Mp3Id::new(mp3)
}

/// The path and query of a link whose base is the test default (`PUBLIC_URL` of `Names`).
fn local(gw: &TestApp, url: &str) -> String {
    let path = url.strip_prefix("http://127.0.0.1:8080").unwrap_or_else(|| panic!("link base: {url}"));
    format!("{}{path}", gw.base)
}

/// Reads an event stream in the background: each `job` event with the time it arrived; the
/// channel closes when the server ends the stream.
fn follow(resp: reqwest::Response) -> mpsc::UnboundedReceiver<(Instant, Value)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            let at = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let is_job = block.lines().any(|l| l == "event: job");
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    if is_job && tx.send((at, serde_json::from_str(data).unwrap())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<(Instant, Value)>) -> (Instant, Value) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event within 5 s").expect("stream still open")
}

async fn open_events(gw: &TestApp, token: &str, path: &str) -> reqwest::Response {
    let resp = client().get(format!("{}{path}", gw.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_clients_get_202_and_the_job_while_the_original_clients_still_get_success() {
    let gw = spawn_app(&[]).await;
    let bytes = std::fs::read(media(Media::Mkv, 2)).unwrap();

    let form = reqwest::multipart::Form::new()
        .text("bitrate", "128k")
        .part("video", reqwest::multipart::Part::bytes(bytes.clone()).file_name("clip.mkv"))
        .text("start", "00:00:00.500");
    let resp = client()
        .post(format!("{}/upload", gw.base))
        .bearer_auth(&gw.token)
        .header("accept", "application/json")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/jobs/{id}"));
    assert_eq!(job["state"], "queued");
    assert_eq!(job["progress"], 0);
    assert_eq!(job["filename"], "clip.mkv");
    assert_eq!(job["options"], serde_json::json!({"bitrate": "128k", "start": 0.5}));
    for field in ["duration_seconds", "mp3_fid", "download_url", "error"] {
        assert!(job[field].is_null(), "{field}: {job}");
    }
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'), "RFC 3339: {job}");
    assert_eq!(gw.get_json(&location).await, job, "GET answers the same job");

    // The message carries the options as one added field.
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let msg = take_message(&ch, &gw.names.video_queue, Duration::from_secs(5)).await.expect("queued");
    assert_eq!(msg.json()["video_fid"], id.as_str());
    assert_eq!(msg.json()["options"], serde_json::json!({"bitrate": "128k", "start": 0.5}));

    // The original's client: 200 success!, and its message has exactly the original's fields.
    let (status, body) = gw.upload("plain.mkv", bytes).await;
    assert_eq!((status, body.as_str()), (200, "success!"));
    let msg = take_message(&ch, &gw.names.video_queue, Duration::from_secs(5)).await.expect("queued");
    let mut keys: Vec<String> = msg.json().as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["mp3_fid", "username", "video_fid"]);
    let plain = gw.get_json(&format!("/jobs/{}", msg.json()["video_fid"].as_str().unwrap())).await;
    assert_eq!((plain["state"].as_str(), plain["options"].clone()), (Some("queued"), serde_json::json!({})));
    testkit::delete_queues(&[&gw.names.video_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_option_is_a_400_naming_the_field_and_nothing_is_stored() {
    let gw = spawn_app(&[]).await;
    let bytes = std::fs::read(media(Media::Mkv, 2)).unwrap();
    for (field, value, before_file) in [
        ("bitrate", "100k", true),
        ("bitrate", "999k", false),
        ("quality", "10", false),
        ("start", "-1", true),
        ("end", "00:61:00", false),
        ("end", "1", false), // with start 5 below: end before start
    ] {
        let mut form = reqwest::multipart::Form::new();
        if field == "end" && value == "1" {
            form = form.text("start", "5");
        }
        if before_file {
            form = form.text(field, value);
        }
        form = form.part("video", reqwest::multipart::Part::bytes(bytes.clone()).file_name("a.mkv"));
        if !before_file {
            form = form.text(field, value);
        }
        let resp = client().post(format!("{}/upload", gw.base)).bearer_auth(&gw.token).multipart(form).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 400, "{field}={value}: {body}");
        assert!(body.starts_with(&format!("invalid {field}: ")), "{field}={value}: {body}");
    }
    // Both bitrate and quality: the second names the conflict.
    let form = reqwest::multipart::Form::new()
        .text("bitrate", "128k")
        .text("quality", "2")
        .part("video", reqwest::multipart::Part::bytes(bytes).file_name("a.mkv"));
    let resp = client().post(format!("{}/upload", gw.base)).bearer_auth(&gw.token).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().starts_with("invalid quality: "));

    assert!(gw.video_files().await.is_empty(), "no video kept for a refused upload");
    let list = gw.get_json("/jobs").await;
    assert_eq!(list["jobs"], serde_json::json!([]), "no job for a refused upload");
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    assert!(take_message(&ch, &gw.names.video_queue, Duration::from_millis(500)).await.is_none(), "nothing announced");
    testkit::delete_queues(&[&gw.names.video_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_newest_first_filters_by_state_and_shows_only_the_callers_jobs() {
    let gw = spawn_app(&[]).await;
    let other = unique_email();
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(insert_job(&gw, &gw.email, &format!("f{i}.mkv")).await);
        insert_job(&gw, &other, "theirs.mkv").await;
        // Distinct creation times (milliseconds) make "newest first" checkable.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    gw.state.jobs.finish_failed(mine[1].video(), "the video has no audio track").await.unwrap();
    gw.state.jobs.finish_failed(mine[3].video(), "the video has no audio track").await.unwrap();

    let mut seen = Vec::new();
    let mut path = "/jobs?limit=2".to_owned();
    loop {
        let page = gw.get_json(&path).await;
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 2);
        seen.extend(jobs.iter().map(|j| j["filename"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("/jobs?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["f4.mkv", "f3.mkv", "f2.mkv", "f1.mkv", "f0.mkv"]);

    let failed = gw.get_json("/jobs?state=failed").await;
    let names: Vec<&str> = failed["jobs"].as_array().unwrap().iter().map(|j| j["filename"].as_str().unwrap()).collect();
    assert_eq!(names, ["f3.mkv", "f1.mkv"]);
    assert_eq!(failed["jobs"][0]["error"], "the video has no audio track");
    assert!(failed["next"].is_null());
    assert_eq!(gw.get_json("/jobs").await["jobs"].as_array().unwrap().len(), 5, "default limit 20 covers them");

    for (query, named) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("state=deleted", "state"),
        ("state=bogus", "state"),
        ("cursor=zzz", "cursor"),
    ] {
        let (status, body) = gw.get(&gw.token, &format!("/jobs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(named), "{query}: {body}");
    }
    let (status, _) = client().get(format!("{}/jobs", gw.base)).send().await.map(|r| (r.status().as_u16(), ())).unwrap();
    assert_eq!(status, 401, "a token is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_see_follow_delete_nor_download_a_job() {
    let gw = spawn_app(&[]).await;
    let intruder = gw.other_user().await;
    let job = insert_job(&gw, &gw.email, "mine.mkv").await;
    finish_with_mp3(&gw, &job, b"ID3 mp3 bytes").await;
    let path = format!("/jobs/{}", job.id.to_hex());

    assert_eq!(gw.get(&intruder, &path).await, (404, "job not found".to_owned()));
    assert_eq!(gw.get(&intruder, &format!("{path}/events")).await, (404, "job not found".to_owned()));
    let del = client().delete(format!("{}{path}", gw.base)).bearer_auth(&intruder).send().await.unwrap();
    assert_eq!(del.status(), 404);
    let list = gw.get_json("/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "the owner still has it");
    let theirs = serde_json::from_str::<Value>(&gw.get(&intruder, "/jobs").await.1).unwrap();
    assert_eq!(theirs["jobs"], serde_json::json!([]));
    let mp3 = list["jobs"][0]["mp3_fid"].as_str().unwrap();
    assert_eq!(gw.get(&intruder, &format!("/download?fid={mp3}")).await.0, 404);

    // Unknown and malformed ids answer as download does.
    assert_eq!(gw.get(&gw.token, &format!("/jobs/{}", ObjectId::new().to_hex())).await.0, 404);
    let (status, body) = gw.get(&gw.token, "/jobs/not-an-id").await;
    assert_eq!((status, body.as_str()), (400, "invalid job id: expected a 24-character hexadecimal id"));
    assert_eq!(gw.get(&gw.token, "/jobs/not-an-id/events").await.0, 400);

    // The intruder's stream of all jobs never shows the owner's changes.
    let mut theirs = follow(open_events(&gw, &intruder, "/jobs/events").await);
    let mut mine = follow(open_events(&gw, &gw.token, "/jobs/events").await);
    let second = insert_job(&gw, &gw.email, "second.mkv").await;
    gw.state.jobs.start_converting(second.video()).await.unwrap();
    // (Changes made just before the stream opened may come first.)
    loop {
        let (_, seen) = next_event(&mut mine).await;
        assert_eq!(seen["filename"].as_str().map(|f| f == "mine.mkv" || f == "second.mkv"), Some(true), "{seen}");
        if seen["id"] == second.id.to_hex() {
            break;
        }
    }
    assert!(tokio::time::timeout(Duration::from_secs(2), theirs.recv()).await.is_err(), "no event for someone else's job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_job_within_a_second_and_end_after_its_final_state() {
    let gw = spawn_app(&[]).await;
    let job = insert_job(&gw, &gw.email, "long.mkv").await;
    let mut events = follow(open_events(&gw, &gw.token, &format!("/jobs/{}/events", job.id.to_hex())).await);
    let (_, first) = next_event(&mut events).await;
    assert_eq!((first["state"].as_str(), first["progress"].as_i64()), (Some("queued"), Some(0)));

    let video = job.video();
    gw.state.jobs.start_converting(video).await.unwrap();
    assert_eq!(next_event(&mut events).await.1["state"], "converting");
    gw.state.jobs.set_duration(video, 600.0).await.unwrap();
    assert_eq!(next_event(&mut events).await.1["duration_seconds"], 600.0);

    // State change -> event, as a converter's progress writes (one a second at most) would.
    let mut latencies = Vec::new();
    for percent in 1..=30 {
        let changed = Instant::now();
        gw.state.jobs.set_progress(video, percent).await.unwrap();
        let (at, event) = next_event(&mut events).await;
        assert_eq!(event["progress"], percent);
        latencies.push(at.saturating_duration_since(changed));
        // Not a wait for the gateway: progress writes come about 4 a second at most here, so
        // that the poller sees each change on its own and the latency is measured per change.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    latencies.sort();
    let (median, worst) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    println!("state change -> SSE event over {} changes: median {median:?}, worst {worst:?}", latencies.len());
    assert!(worst < Duration::from_secs(1), "worst latency {worst:?}");

    let mp3 = ObjectId::new();
    gw.state.jobs.finish_done(video, Mp3Id::new(mp3)).await.unwrap();
    let (_, last) = next_event(&mut events).await;
    assert_eq!((last["state"].as_str(), last["progress"].as_i64()), (Some("done"), Some(100)));
    assert_eq!(last["mp3_fid"], mp3.to_hex());
    assert!(last["download_url"].as_str().unwrap().contains(&format!("/jobs/{}/download?expires=", job.id.to_hex())));
    let end = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("the stream ends");
    assert!(end.is_none(), "no event after the final state: {end:?}");

    // A stream opened on a finished job sends it once and ends.
    let mut again = follow(open_events(&gw, &gw.token, &format!("/jobs/{}/events", job.id.to_hex())).await);
    assert_eq!(next_event(&mut again).await.1["state"], "done");
    assert!(tokio::time::timeout(Duration::from_secs(5), again.recv()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_links_download_without_a_token_with_ranges_and_refuse_tampered_or_expired_ones() {
    let gw = spawn_app(&[]).await;
    let job = insert_job(&gw, &gw.email, "song.mkv").await;
    let data: Vec<u8> = (0..(common::gridfs::CHUNK_SIZE as usize + 500)).map(|i| (i % 253) as u8).collect();
    finish_with_mp3(&gw, &job, &data).await;
    let view = gw.get_json(&format!("/jobs/{}", job.id.to_hex())).await;
    let url = local(&gw, view["download_url"].as_str().unwrap());

    let full = client().get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200, "no Authorization needed");
    assert_eq!(full.headers()["content-type"], "audio/mpeg");
    assert_eq!(full.bytes().await.unwrap().as_ref(), &data[..]);
    let part = client().get(&url).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 100-199/{}", data.len()).as_str());
    assert_eq!(part.bytes().await.unwrap().as_ref(), &data[100..200]);

    // Tampered: another signature, another expiry, another job's id, no signature.
    let (base, query) = url.split_once('?').unwrap();
    let sig = query.split('&').find_map(|p| p.strip_prefix("sig=")).unwrap();
    let expires: u64 = query.split('&').find_map(|p| p.strip_prefix("expires=")).unwrap().parse().unwrap();
    let other = insert_job(&gw, &gw.email, "other.mkv").await;
    let flipped = if sig.starts_with('A') { sig.replacen('A', "B", 1) } else { format!("A{}", &sig[1..]) };
    for bad in [
        format!("{base}?expires={expires}&sig={flipped}"),
        format!("{base}?expires={}&sig={sig}", expires + 3600),
        format!("{}/jobs/{}/download?{query}", gw.base, other.id.to_hex()),
        format!("{base}?expires={expires}"),
        base.to_owned(),
    ] {
        let resp = client().get(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{bad}");
        assert_eq!(resp.text().await.unwrap(), "invalid download link: it was altered or is incomplete");
    }
    // Expired: correctly signed, in the past.
    let stale = local(&gw, &gw.state.links.url_expiring(job.video(), 1_000_000));
    let resp = client().get(&stale).send().await.unwrap();
    assert_eq!(resp.status(), 410);
    assert!(resp.text().await.unwrap().contains("expired"));
    assert_eq!(client().get(format!("{}/jobs/nope/download", gw.base)).send().await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_video_mp3_and_job_and_only_for_the_owner() {
    let gw = spawn_app(&[]).await;
    // A queued job from a real upload (video stored, message queued).
    let resp = client()
        .post(format!("{}/upload", gw.base))
        .bearer_auth(&gw.token)
        .header("accept", "application/json")
        .multipart(
            reqwest::multipart::Form::new()
                .part("f", reqwest::multipart::Part::bytes(std::fs::read(media(Media::Mkv, 2)).unwrap()).file_name("a.mkv")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let queued: Value = resp.json().await.unwrap();
    let path = format!("/jobs/{}", queued["id"].as_str().unwrap());
    assert_eq!(gw.video_files().await.len(), 1);
    let del = client().delete(format!("{}{path}", gw.base)).bearer_auth(&gw.token).send().await.unwrap();
    assert_eq!(del.status(), 204);
    assert!(gw.video_files().await.is_empty(), "video removed");
    assert_eq!(gw.get(&gw.token, &path).await.0, 404);
    assert_eq!(client().delete(format!("{}{path}", gw.base)).bearer_auth(&gw.token).send().await.unwrap().status(), 404);

    // A done job: its mp3 goes too, and its link stops working.
    let done = insert_job(&gw, &gw.email, "b.mkv").await;
    let mp3 = finish_with_mp3(&gw, &done, b"ID3 bytes").await;
    let link = local(&gw, &gw.state.links.url(done.video()));
    assert_eq!(client().get(&link).send().await.unwrap().status(), 200);
    let del = client().delete(format!("{}/jobs/{}", gw.base, done.id.to_hex())).bearer_auth(&gw.token).send().await.unwrap();
    assert_eq!(del.status(), 204);
    assert!(common::gridfs::find_file(gw.state.mp3s.database(), doc! {"_id": mp3.oid()}).await.unwrap().is_none(), "mp3 removed");
    assert_eq!(client().get(&link).send().await.unwrap().status(), 404);
    assert_eq!(gw.get_json("/jobs").await["jobs"], serde_json::json!([]));
    testkit::delete_queues(&[&gw.names.video_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_files_and_expires_jobs_whose_links_then_answer_410() {
    let gw = spawn_app(&[]).await;
    let bucket = common::gridfs::bucket(gw.state.videos.database());
    let store = |job: JobDoc| {
        let bucket = bucket.clone();
        async move {
            common::gridfs::upload(&bucket, job.id, "v.mkv", doc! {"username": &job.owner}, &b"video"[..]).await.unwrap();
            job
        }
    };
    let done = store(insert_job(&gw, &gw.email, "done.mkv").await).await;
    let mp3 = finish_with_mp3(&gw, &done, b"ID3 mp3").await;
    let failed = store(insert_job(&gw, &gw.email, "failed.mkv").await).await;
    gw.state.jobs.finish_failed(failed.video(), "the video has no audio track").await.unwrap();
    let running = store(insert_job(&gw, &gw.email, "running.mkv").await).await;
    gw.state.jobs.start_converting(running.video()).await.unwrap();
    let link = local(&gw, &gw.state.links.url(done.video()));

    // Long retention: nothing happens.
    let day = Duration::from_secs(86_400);
    let swept = gateway::jobs::retention::sweep_once(&gw.state, day, day).await.unwrap();
    assert_eq!(swept, Default::default());
    assert_eq!(gw.video_files().await.len(), 3);

    // Sources kept for 0 s after the end, mp3s for a day: the videos of ended jobs go, the
    // done job keeps its mp3; the failed one has nothing left and expires.
    let swept = gateway::jobs::retention::sweep_once(&gw.state, Duration::ZERO, day).await.unwrap();
    assert_eq!((swept.videos_removed, swept.mp3s_expired), (2, 0));
    let left: Vec<ObjectId> = gw.video_files().await.iter().map(|f| f.get_object_id("_id").unwrap()).collect();
    assert_eq!(left, [running.id], "the running job's video stays");
    assert_eq!(gw.get_json(&format!("/jobs/{}", failed.id.to_hex())).await["state"], "expired");
    assert_eq!(client().get(&link).send().await.unwrap().status(), 200, "the mp3 outlives its source");

    let swept = gateway::jobs::retention::sweep_once(&gw.state, Duration::ZERO, Duration::ZERO).await.unwrap();
    assert_eq!(swept.mp3s_expired, 1);
    assert!(common::gridfs::find_file(gw.state.mp3s.database(), doc! {"_id": mp3.oid()}).await.unwrap().is_none());
    let expired = gw.get_json(&format!("/jobs/{}", done.id.to_hex())).await;
    assert_eq!((expired["state"].as_str(), expired["download_url"].is_null()), (Some("expired"), true));
    assert_eq!(expired["filename"], "done.mkv", "the job still shows what happened");
    let gone = client().get(&link).send().await.unwrap();
    assert_eq!(gone.status(), 410);
    assert!(gone.text().await.unwrap().contains("retention"));
    assert_eq!(gw.get_json("/jobs?state=expired").await["jobs"].as_array().unwrap().len(), 2);
    let still = gw.get_json(&format!("/jobs/{}", running.id.to_hex())).await;
    assert_eq!(still["state"], JobState::Converting.as_str());
}
