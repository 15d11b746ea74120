//! SIGTERM: a consumer finishes the job it holds within the grace period, or returns it to the
//! queue when the grace period is over; it never loses it.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::message::JobMessage;
use mongodb::bson::{doc, oid::ObjectId, Document};
use testkit::{free_port, media, take_message, wait_ok, Media, Names, Proc};

/// An ffmpeg that waits `delay` seconds (after leaving a marker that it started) before the
/// real conversion, so a test can stop the converter in the middle of a job.
fn slow_ffmpeg(dir: &std::path::Path, delay: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let marker = dir.join("started");
    let script = dir.join("ffmpeg");
    std::fs::write(&script, format!("#!/bin/sh\ntouch '{}'\nsleep {delay}\nexec ffmpeg \"$@\"\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, marker)
}

async fn start_converter(names: &Names, ffmpeg: &std::path::Path, grace: &str) -> Proc {
    let health = free_port();
    let mut env = names.env();
    env.extend([
        ("HEALTH_PORT".to_owned(), health.to_string()),
        ("FFMPEG_PATH".to_owned(), ffmpeg.display().to_string()),
        ("SHUTDOWN_GRACE_SECONDS".to_owned(), grace.to_owned()),
        ("CONVERTER_CONCURRENCY".to_owned(), "1".to_owned()),
    ]);
    let p = Proc::spawn("converter", &env).unwrap();
    wait_ok(&format!("http://127.0.0.1:{health}/readyz"), Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    p
}

async fn queue_job(names: &Names) -> ObjectId {
    let client = names.mongo().await;
    let id = ObjectId::new();
    let file = tokio::fs::File::open(media(Media::Mkv, 2)).await.unwrap();
    common::gridfs::upload(&common::gridfs::bucket(&client.database(&names.videos_db)), id, "v", doc! {"username": "a@example.com"}, file)
        .await
        .unwrap();
    let (conn, ch) = testkit::amqp_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    common::amqp::declare_topology(&conn, &names.video_queue).await.unwrap();
    let body = JobMessage::new_video(id.to_hex(), "a@example.com").to_json();
    common::amqp::publish_confirmed(&ch, &names.video_queue, &body, common::amqp::json_properties(Default::default())).await.unwrap();
    id
}

async fn wait_for(path: &std::path::Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_exit(p: &mut Proc, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{} did not exit in {timeout:?}:\n{}", p.name, p.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let status = wait_exit(&mut converter, Duration::from_secs(20));
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
    let status = wait_exit(&mut converter, Duration::from_secs(10));
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
        let mut env = names.env();
        env.extend([
            ("HEALTH_PORT".to_owned(), free_port().to_string()),
            ("FFMPEG_PATH".to_owned(), ffmpeg.display().to_string()),
            ("CONVERTER_CONCURRENCY".to_owned(), "1".to_owned()),
            ("MAX_REDELIVERIES".to_owned(), "2".to_owned()),
        ]);
        let mut converter = Proc::spawn("converter", &env).unwrap();
        spawned += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if converter.child.try_wait().unwrap().is_some() {
                break;
            }
            if let Some(dead) = take_message(&ch, &dead_q, Duration::from_millis(200)).await {
                break 'outer (dead, converter);
            }
            assert!(Instant::now() < deadline, "converter {spawned} neither died nor dead-lettered:\n{}", converter.log_text());
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
