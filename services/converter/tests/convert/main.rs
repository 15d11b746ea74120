//! The converter in-process against real RabbitMQ, MongoDB and ffmpeg.

use std::time::Duration;

use common::message::{Failure, JobMessage};
use converter::{Application, Config};
use mongodb::bson::{doc, oid::ObjectId};
use testkit::{media, take_message, test_env, Media, Names, Service};

mod helpers;

use helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converts_once_even_when_the_message_is_delivered_twice() {
    let r = spawn_app(&[]).await;
    let src = media(Media::Mp4, 3);
    let video = r.put_video(&src, "owner@example.com").await;
    let msg = JobMessage::new_video(video.to_hex(), "owner@example.com").to_json();
    r.publish_video(&msg).await;

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
    r.publish_video(&msg).await;
    let again = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(30)).await.expect("announced again");
    assert_eq!(again.json()["mp3_fid"], mp3_fid.as_str());
    assert_eq!(r.mp3_count().await, 1);
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconvertible_videos_are_dead_lettered_with_a_reason_and_the_owner_told() {
    let r = spawn_app(&[]).await;
    let silent = r.put_video(&media(Media::SilentMp4, 2), "owner@example.com").await;
    let junk_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk_path.path(), [&b"\0\0\0\x20ftypisom"[..], &[0x5a; 4096]].concat()).unwrap();
    let junk = r.put_video(junk_path.path(), "owner@example.com").await;
    for v in [silent, junk] {
        r.publish_video(&JobMessage::new_video(v.to_hex(), "owner@example.com").to_json()).await;
    }
    r.publish_video(b"this is not json").await;

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
    assert_eq!(r.mp3_count().await, 0);

    // The queue is not blocked: a good video after them converts.
    let good = r.put_video(&media(Media::Mkv, 2), "owner@example.com").await;
    r.publish_video(&JobMessage::new_video(good.to_hex(), "owner@example.com").to_json()).await;
    let ok = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(30)).await.expect("good video converted").json();
    assert_eq!(ok["video_fid"], good.to_hex());
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_audio_is_copied_not_reencoded() {
    let r = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.mkv");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-c:a", "libmp3lame", "-b:a", "96k"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    let video = r.put_video(&src, "owner@example.com").await;
    r.publish_video(&JobMessage::new_video(video.to_hex(), "owner@example.com").to_json()).await;
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
    let env = test_env(Service::Converter, 0, &Names::new(), None, 0).set("FFMPEG_PATH", "/nonexistent/ffmpeg");
    let err = Application::build(Config::from_env(&env.to_env()).unwrap()).await.err().expect("start-up refused");
    assert_eq!(err.to_string(), "/nonexistent/ffmpeg not found; install ffmpeg or set FFMPEG_PATH/FFPROBE_PATH");
}

/// Uploads in every format ffmpeg 5.1 reads that names other files or URLs, each naming a
/// real media file on the converter's disk, plain and behind an ID3 tag (which the gateway's
/// sniffer takes for audio). Each must be "not media": dead-lettered with that reason and the
/// owner told, never an mp3 of the named file. Before the input whitelist, the HLS and DASH
/// ones came back as mp3s of the named file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_and_other_references_are_not_media_and_nothing_they_name_is_read() {
    let r = spawn_app(&[]).await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = |ext: &str, codec: &str| {
        let path = secrets.path().join(format!("secret.{ext}"));
        let ok = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=500:duration=3", "-c:a", codec])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
        path.display().to_string()
    };
    let (ts, m4a, mp3) = (secret("ts", "aac"), secret("m4a", "aac"), secret("mp3", "libmp3lame"));
    let hls = |entry: &str| format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{entry}\n#EXT-X-ENDLIST\n");
    let master = secrets.path().join("media.m3u8");
    std::fs::write(&master, hls(&ts)).unwrap();
    let crafted: Vec<(&str, String)> = vec![
        ("hls", hls(&ts)),
        ("hls file: url", hls(&format!("file:{ts}"))),
        ("hls subfile", hls(&format!("subfile,,start,0,end,0,,:{ts}"))),
        ("hls concat protocol", hls(&format!("concat:{ts}|{ts}"))),
        ("hls mp3 segment", hls(&mp3)),
        ("hls master playlist", format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=64000\n{}\n", master.display())),
        (
            "dash",
            format!(
                r#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT3S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period><AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="64000" codecs="mp4a.40.2"><BaseURL>file:{m4a}</BaseURL></Representation></AdaptationSet></Period></MPD>"#
            ),
        ),
        ("ffconcat", format!("ffconcat version 1.0\nfile '{ts}'\nfile 'file:{mp3}'\n")),
        ("sdp", "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n".to_owned()),
        (
            "imf",
            format!(
                r#"<?xml version="1.0"?><CompositionPlaylist xmlns="http://www.smpte-ra.org/schemas/2067-3/2016"><Id>urn:uuid:0b7bd6a7-4a5b-4d3b-9f2e-0c2c6c0f1a11</Id><ContentTitle>{m4a}</ContentTitle><EditRate>25 1</EditRate></CompositionPlaylist>"#
            ),
        ),
    ];
    // An ID3v2.4 tag of 10 padding bytes in front.
    let id3: &[u8] = b"ID3\x04\x00\x00\x00\x00\x00\x0a\0\0\0\0\0\0\0\0\0\0";
    let mut expected = 0;
    for (name, text) in &crafted {
        for prefix in [&b""[..], id3] {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), [prefix, text.as_bytes()].concat()).unwrap();
            let owner = format!("{}-{}@example.com", name.replace([' ', ':'], "-"), prefix.len());
            let video = r.put_video(file.path(), &owner).await;
            r.publish_video(&JobMessage::new_video(video.to_hex(), &owner).to_json()).await;
            expected += 1;
        }
    }

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let dead_q = common::amqp::dead_queue(&r.names.video_queue);
    for i in 0..expected {
        let dead =
            take_message(&ch, &dead_q, Duration::from_secs(60)).await.unwrap_or_else(|| panic!("only {i} of {expected} dead-lettered"));
        let owner = dead.json()["username"].as_str().unwrap().to_owned();
        assert_eq!(dead.header_str("x-failure-reason").as_deref(), Some(Failure::NotMedia.user_text()), "{owner}");
    }
    let mut told = std::collections::BTreeSet::new();
    for _ in 0..expected {
        let notice = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(10)).await.expect("failure notice").json();
        assert_eq!(notice["mp3_fid"], serde_json::Value::Null, "{notice}");
        assert_eq!(notice["error"], Failure::NotMedia.user_text(), "{notice}");
        told.insert(notice["username"].as_str().unwrap().to_owned());
    }
    assert_eq!(told.len(), expected, "every owner told once: {told:?}");
    assert_eq!(r.mp3_count().await, 0, "no mp3 made from a referenced file");
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}

/// The formats people upload still convert under the input whitelist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_containers_still_convert() {
    let r = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let made: &[(&str, &[&str])] = &[
        ("webm", &["-c:a", "libopus"]),
        ("mov", &["-c:a", "aac"]),
        ("avi", &["-c:a", "libmp3lame"]),
        ("mp3", &["-c:a", "libmp3lame"]),
        ("wav", &["-c:a", "pcm_s16le"]),
        ("ogg", &["-c:a", "libvorbis"]),
        ("flac", &["-c:a", "flac"]),
        ("m4a", &["-c:a", "aac"]),
        ("ts", &["-c:a", "aac"]),
        ("wma", &["-c:a", "wmav2"]),
        ("aac", &["-c:a", "aac"]),
    ];
    let mut sources = vec![media(Media::Mkv, 2), media(Media::Mp4, 2)];
    for (ext, codec) in made {
        let path = dir.path().join(format!("a.{ext}"));
        let ok = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=2"])
            .args(*codec)
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success(), "ffmpeg makes a .{ext}");
        sources.push(path);
    }
    let mut videos = std::collections::BTreeSet::new();
    for src in &sources {
        let video = r.put_video(src, "owner@example.com").await;
        r.publish_video(&JobMessage::new_video(video.to_hex(), "owner@example.com").to_json()).await;
        videos.insert(video.to_hex());
    }
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let mut converted = std::collections::BTreeSet::new();
    for _ in 0..sources.len() {
        let Some(msg) = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(60)).await else { break };
        let msg = msg.json();
        assert!(msg["mp3_fid"].is_string(), "{msg}");
        converted.insert(msg["video_fid"].as_str().unwrap().to_owned());
    }
    assert_eq!(converted, videos, "every container converted: {sources:?}");
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}

/// One deadline for the whole job, after which it fails for good: not retried, dead-lettered
/// with the "too long" reason, and the owner told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_fails_for_good_without_retries() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ffmpeg = dir.path().join("ffmpeg");
    std::fs::write(&ffmpeg, "#!/bin/sh\nexec sleep 120\n").unwrap();
    std::fs::set_permissions(&ffmpeg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ffmpeg = ffmpeg.display().to_string();
    let r = spawn_app(&[("FFMPEG_PATH", &ffmpeg), ("JOB_DEADLINE_SECONDS", "2"), ("MAX_ATTEMPTS", "5"), ("RETRY_BASE_MS", "100")]).await;
    let video = r.put_video(&media(Media::Mkv, 2), "owner@example.com").await;
    let started = std::time::Instant::now();
    r.publish_video(&JobMessage::new_video(video.to_hex(), "owner@example.com").to_json()).await;

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let dead = take_message(&ch, &common::amqp::dead_queue(&r.names.video_queue), Duration::from_secs(30)).await.expect("dead-lettered");
    assert_eq!(dead.header_str("x-failure-reason").as_deref(), Some(Failure::TooLong.user_text()));
    assert_eq!(dead.header_str("x-attempt").as_deref(), Some("LongUInt(1)"), "not retried");
    assert!(started.elapsed() < Duration::from_secs(15), "failed at the deadline: {:?}", started.elapsed());
    let notice = take_message(&ch, &r.names.mp3_queue, Duration::from_secs(10)).await.expect("owner told").json();
    assert_eq!(notice["error"], Failure::TooLong.user_text());
    assert!(take_message(&ch, &common::amqp::retry_queue(&r.names.video_queue), Duration::from_millis(500)).await.is_none());
    assert_eq!(r.mp3_count().await, 0);
    testkit::delete_queues(&[&r.names.video_queue, &r.names.mp3_queue]).await;
}
