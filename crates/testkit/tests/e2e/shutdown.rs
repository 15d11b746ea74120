//! SIGTERM: a consumer finishes the job it holds within the grace period, or returns it to the
//! queue when the grace period is over; it never loses it.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::message::JobMessage;
use mongodb::bson::{doc, oid::ObjectId, Document};
use testkit::{eventually, free_port, media, take_message, test_env, wait_ok, Media, Names, Proc, Service, ServiceEnv};

/// An ffmpeg that waits `delay` seconds (after leaving a marker that it started) before the
/// real conversion, so a test can stop the converter in the middle of a job.
fn slow_ffmpeg(dir: &std::path::Path, delay: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let marker = dir.join("started");
    let script = dir.join("ffmpeg");
    std::fs::write(&script, format!("#!/bin/sh\ntouch '{}'\nsleep {delay}\nexec ffmpeg \"$@\"\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, marker)
}

/// The environment of a converter of the test's own that runs `ffmpeg`, one job at a time.
fn converter_env(names: &Names, ffmpeg: &std::path::Path) -> ServiceEnv {
    test_env(Service::Converter, free_port(), names, None, 0).set("FFMPEG_PATH", ffmpeg.display()).set("CONVERTER_CONCURRENCY", 1)
}

async fn start_converter(names: &Names, ffmpeg: &std::path::Path, grace: &str) -> Proc {
    let env = converter_env(names, ffmpeg).set("SHUTDOWN_GRACE_SECONDS", grace);
    let p = Proc::service(&env).unwrap();
    wait_ok(&env.ready_url(), Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    p
}

async fn queue_job(names: &Names) -> ObjectId {
    let client = names.mongo().await;
    let id = ObjectId::new();
    let file = tokio::fs::File::open(media(Media::Mkv, 2)).await.unwrap();
    common::gridfs::upload(&common::gridfs::bucket(&client.database(&names.videos_db)), id, "v", doc! {"username": "a@example.com"}, file)
        .await
        .unwrap();
    testkit::publish(&names.video_queue, &JobMessage::new_video(id.to_hex(), "a@example.com").to_json()).await.unwrap();
    id
}

async fn wait_for(path: &std::path::Path, timeout: Duration) {
    eventually(&format!("{} appears", path.display()), timeout, || std::future::ready(path.exists().then_some(()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_job_in_hand_finish() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let (ffmpeg, started) = slow_ffmpeg(dir.path(), 2);
    let mut converter = start_converter(&names, &ffmpeg, "20").await;
    let video = queue_job(&names).await;
    wait_for(&started, Duration::from_secs(20)).await;
    converter.terminate();
    let status = converter.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{}", converter.log_text());

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let done = take_message(&ch, &names.mp3_queue, Duration::from_secs(5)).await.expect("the job finished during the drain");
    assert_eq!(done.json()["video_fid"], video.to_hex());
    assert!(take_message(&ch, &names.video_queue, Duration::from_millis(500)).await.is_none(), "acked, not returned");
    testkit::delete_queues(&[&names.video_queue, &names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_returns_the_job_when_the_grace_period_is_over() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let (ffmpeg, started) = slow_ffmpeg(dir.path(), 60);
    let mut converter = start_converter(&names, &ffmpeg, "1").await;
    let video = queue_job(&names).await;
    wait_for(&started, Duration::from_secs(20)).await;
    let t = Instant::now();
    converter.terminate();
    let status = converter.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", converter.log_text());
    assert!(t.elapsed() < Duration::from_secs(5), "stopped within the grace period: {:?}", t.elapsed());

    // The job is back on the queue, untouched, for the next converter.
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let back = take_message(&ch, &names.video_queue, Duration::from_secs(5)).await.expect("job returned to the queue");
    assert_eq!(back.json()["video_fid"], video.to_hex());
    let mp3s = names.mongo().await.database(&names.mp3s_db).collection::<Document>("fs.files").count_documents(doc! {}).await.unwrap();
    assert_eq!(mp3s, 0);
    testkit::delete_queues(&[&names.video_queue, &names.mp3_queue]).await;
}

/// A message whose handling kills its converter (as an OOM kill would) comes back unsettled
/// to the next converter, again and again. It is handled at most `MAX_REDELIVERIES` + 1 times,
/// then dead-lettered with its reason and the owner told. Converters are spawned here and
/// SIGKILLed by their "ffmpeg"; no shared server is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_its_converter_is_dead_lettered_after_the_redelivery_bound() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let kills = dir.path().join("kills");
    let ffmpeg = dir.path().join("ffmpeg");
    std::fs::write(&ffmpeg, format!("#!/bin/sh\necho killed >> '{}'\nkill -KILL $PPID\nexit 1\n", kills.display())).unwrap();
    std::fs::set_permissions(&ffmpeg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let video = queue_job(&names).await;

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let dead_q = common::amqp::dead_queue(&names.video_queue);
    let mut spawned = 0;
    // The converter that dead-letters the message lives until the end of the test.
    let (dead, _survivor) = 'outer: loop {
        assert!(spawned < 8, "the message killed {spawned} converters and is still not dead-lettered");
        let mut converter = Proc::service(&converter_env(&names, &ffmpeg).set("MAX_REDELIVERIES", 2)).unwrap();
        spawned += 1;
        // The converter dies (`None`: spawn the next) or dead-letters the message.
        let what = format!("converter {spawned} dies or dead-letters");
        let dead = testkit::poll_until(&what, Duration::from_secs(30), || {
            let died = converter.exited().is_some();
            let (ch, dead_q) = (&ch, &dead_q);
            async move {
                match died {
                    true => Some(None),
                    false => take_message(ch, dead_q, Duration::from_millis(200)).await.map(Some),
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", converter.log_text()));
        if let Some(dead) = dead {
            break 'outer (dead, converter);
        }
    };
    let reason = dead.header_str("x-failure-reason").unwrap();
    assert!(reason.starts_with(common::consumer::REDELIVERY_LIMIT_REASON), "{reason}");
    assert_eq!(dead.json()["video_fid"], video.to_hex());
    // Handled once, then twice more after coming back: three converters killed, the fourth
    // dead-lettered it without handling it.
    assert_eq!(std::fs::read_to_string(&kills).unwrap().lines().count(), 3);
    assert_eq!(spawned, 4);
    let notice = take_message(&ch, &names.mp3_queue, Duration::from_secs(10)).await.expect("owner told").json();
    assert_eq!(notice["error"], common::message::Failure::Unprocessable.user_text());
    assert!(take_message(&ch, &names.video_queue, Duration::from_millis(500)).await.is_none(), "nothing left to redeliver");
    testkit::delete_queues(&[&names.video_queue, &names.mp3_queue]).await;
}
