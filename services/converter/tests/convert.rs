//! The converter in-process against real RabbitMQ, MongoDB and ffmpeg.

use std::time::Duration;

use common::message::JobMessage;
use converter::{Application, Config};
use mongodb::bson::{doc, oid::ObjectId, Document};
use testkit::{media, take_message, Media, Names};
use tokio_util::sync::{CancellationToken, DropGuard};

struct Running {
    names: Names,
    videos: mongodb::Database,
    mp3s: mongodb::Database,
    _stop: DropGuard,
}

async fn start() -> Running {
    common::telemetry::init();
    let names = Names::new();
    let mut env = testkit::env_of(&[&names.env()]);
    env.set("HEALTH_PORT", "0").set("CONVERTER_CONCURRENCY", "2");
    let app = Application::build(Config::from_env(&env).unwrap()).await.unwrap();
    let health = app.health_port();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    testkit::wait_ok(&format!("http://127.0.0.1:{health}/readyz"), Duration::from_secs(20)).await.unwrap();
    let client = names.mongo().await;
    Running { videos: client.database(&names.videos_db), mp3s: client.database(&names.mp3s_db), names, _stop: stop.drop_guard() }
}

async fn put_video(r: &Running, path: &std::path::Path, owner: &str) -> ObjectId {
    let id = ObjectId::new();
    let file = tokio::fs::File::open(path).await.unwrap();
    common::gridfs::upload(&common::gridfs::bucket(&r.videos), id, "v", doc! {"username": owner}, file).await.unwrap();
    id
}

async fn publish(queue: &str, body: &[u8]) {
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    common::amqp::publish_confirmed(&ch, queue, body, common::amqp::json_properties(Default::default())).await.unwrap();
}

async fn mp3_count(r: &Running) -> u64 {
    r.mp3s.collection::<Document>("fs.files").count_documents(doc! {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converts_once_even_when_the_message_is_delivered_twice() {
    let r = start().await;
    let src = media(Media::Mp4, 3);
    let video = put_video(&r, &src, "owner@example.com").await;
    let msg = JobMessage::new_video(video.to_hex(), "owner@example.com").to_json();
    publish(&r.names.video_queue, &msg).await;

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let first = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(30)).await.expect("mp3 announced");
    let first = first.json();
    assert_eq!(first["video_fid"], video.to_hex());
    assert_eq!(first["username"], "owner@example.com");
    let mp3_fid = first["mp3_fid"].as_str().unwrap().to_owned();

    let file = common::gridfs::find_file(&r.mp3s, doc! {"_id": ObjectId::parse_str(&mp3_fid).unwrap()}).await.unwrap().unwrap();
    let meta = file.metadata.unwrap();
    assert_eq!(meta.get_str("username").unwrap(), "owner@example.com");
    assert_eq!(meta.get_str("video_fid").unwrap(), video.to_hex());
    assert!(file.length > 10_000, "a 3 s mp3 has some size: {}", file.length);

    // Redelivery: the same mp3 is announced again, no second file.
    publish(&r.names.video_queue, &msg).await;
    let again = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(30)).await.expect("announced again");
    assert_eq!(again.json()["mp3_fid"], mp3_fid.as_str());
    assert_eq!(mp3_count(&r).await, 1);
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconvertible_videos_are_dead_lettered_with_a_reason_and_the_owner_told() {
    let r = start().await;
    let silent = put_video(&r, &media(Media::SilentMp4, 2), "owner@example.com").await;
    let junk_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk_path.path(), [&b"\0\0\0\x20ftypisom"[..], &[0x5a; 4096]].concat()).unwrap();
    let junk = put_video(&r, junk_path.path(), "owner@example.com").await;
    for v in [silent, junk] {
        publish(&r.names.video_queue, &JobMessage::new_video(v.to_hex(), "owner@example.com").to_json()).await;
    }
    publish(&r.names.video_queue, b"this is not json").await;

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let dead_q = common::amqp::dead_queue(&r.names.video_queue);
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let dead = take_message(&ch, &dead_q, Duration::from_secs(30)).await.expect("dead-lettered");
        reasons.push(dead.header_str("x-failure-reason").unwrap());
    }
    reasons.sort();
    assert!(reasons[0].starts_with("malformed message"), "{reasons:?}");
    assert_eq!(reasons[1], "the uploaded file is not a video or audio file ffmpeg can read");
    assert_eq!(reasons[2], "the video has no audio track");

    // The two with an owner produce failure notices for the notifier.
    let mut notices = Vec::new();
    for _ in 0..2 {
        let n = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(10)).await.expect("failure notice").json();
        assert_eq!(n["mp3_fid"], serde_json::Value::Null);
        notices.push(n["error"].as_str().unwrap().to_owned());
    }
    notices.sort();
    assert_eq!(notices, vec!["the uploaded file is not a video or audio file ffmpeg can read", "the video has no audio track"]);
    assert_eq!(mp3_count(&r).await, 0);

    // The queue is not blocked: a good video after them converts.
    let good = put_video(&r, &media(Media::Mkv, 2), "owner@example.com").await;
    publish(&r.names.video_queue, &JobMessage::new_video(good.to_hex(), "owner@example.com").to_json()).await;
    let ok = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(30)).await.expect("good video converted").json();
    assert_eq!(ok["video_fid"], good.to_hex());
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_audio_is_copied_not_reencoded() {
    let r = start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.mkv");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-c:a", "libmp3lame", "-b:a", "96k"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    let video = put_video(&r, &src, "owner@example.com").await;
    publish(&r.names.video_queue, &JobMessage::new_video(video.to_hex(), "owner@example.com").to_json()).await;
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let msg = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(30)).await.expect("announced").json();
    let fid = ObjectId::parse_str(msg["mp3_fid"].as_str().unwrap()).unwrap();
    let file = common::gridfs::find_file(&r.mp3s, doc! {"_id": fid}).await.unwrap().unwrap();
    // 3 s at 96 kb/s is ~36 kB; lame's VBR q4 re-encode of a pure tone would differ a lot.
    let expected = 3.0 * 96_000.0 / 8.0;
    assert!((file.length as f64 - expected).abs() < expected * 0.1, "{} bytes, expected about {expected}", file.length);
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}

#[tokio::test]
async fn refuses_to_start_without_ffmpeg() {
    let names = Names::new();
    let mut env = testkit::env_of(&[&names.env()]);
    env.set("HEALTH_PORT", "0").set("FFMPEG_PATH", "/nonexistent/ffmpeg");
    let err = Application::build(Config::from_env(&env).unwrap()).await.err().expect("start-up refused");
    assert_eq!(err.to_string(), "/nonexistent/ffmpeg not found; install ffmpeg or set FFMPEG_PATH/FFPROBE_PATH");
}
