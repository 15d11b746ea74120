//! The tutorial's own flow, end to end, against the four running binaries and the real
//! MariaDB, RabbitMQ, MongoDB-compatible server, SMTP server and ffmpeg.

use std::time::Duration;

use testkit::{audio_duration, fid_from_mail, media, probe, unique_email, wait_for_mails, Media, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_flow_mkv_and_mp4_end_to_end() {
    let stack = Stack::start(&[]).await.expect("stack starts");
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    assert_eq!(token.split('.').count(), 3, "login returns a raw JWT: {token}");

    let sources = [media(Media::Mkv, 6), media(Media::Mp4, 4)];
    for src in &sources {
        let (status, body) = stack.upload(&token, src).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "success!"), "{}", stack.logs());
    }

    let mails = wait_for_mails(&owner, 2, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    assert_eq!(mails.len(), 2);
    let client = reqwest::Client::new();
    let mut durations = Vec::new();
    let mut fids = Vec::new();
    for mail in &mails {
        assert_eq!(mail.subject, "MP3 Download");
        let fid = fid_from_mail(&mail.text).unwrap_or_else(|| panic!("no fid in {:?}", mail.text));
        assert!(mail.text.contains(&format!("mp3 file_id: {fid} is now ready!")));
        let resp = client.get(stack.gateway_url(&format!("/download?fid={fid}"))).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "audio/mpeg");
        assert_eq!(resp.headers()["content-disposition"], format!("attachment; filename=\"{fid}.mp3\"").as_str());
        let declared: usize = resp.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.len(), declared);
        let out = tempfile::Builder::new().suffix(".mp3").tempfile().unwrap();
        std::fs::write(out.path(), &bytes).unwrap();
        let (format, codec, duration) = probe(out.path()).unwrap();
        assert_eq!(format, "mp3");
        assert_eq!(codec.as_deref(), Some("mp3"));
        durations.push(duration);
        fids.push(fid);
    }
    // Each mp3 lasts as long as one of the sources' audio (within 0.5 s), and both sources
    // are covered.
    let mut expected: Vec<f64> = sources.iter().map(|s| audio_duration(s).unwrap()).collect();
    for d in durations {
        let i = expected.iter().position(|e| (e - d).abs() <= 0.5).unwrap_or_else(|| panic!("mp3 of {d}s matches no source {expected:?}"));
        expected.remove(i);
    }

    // A second user can't download the first user's mp3, and can't tell it exists: the answer is
    // the one an unknown id gets.
    let other_email = unique_email();
    let other = stack.user_token(&other_email, true).await.unwrap();
    let unknown = client.get(stack.gateway_url("/download?fid=0123456789abcdef01234567")).bearer_auth(&other).send().await.unwrap();
    let unknown = (unknown.status(), unknown.text().await.unwrap());
    let mut before = Vec::new();
    for fid in &fids {
        let resp = client.get(stack.gateway_url(&format!("/download?fid={fid}"))).bearer_auth(&other).send().await.unwrap();
        assert_eq!((resp.status(), resp.text().await.unwrap()), unknown);
        before.push(
            client.get(stack.gateway_url(&format!("/download?fid={fid}"))).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap(),
        );
    }
    assert_eq!(unknown.0, 404);
    // Nor overwrite them: the second user's upload (same file name) makes a new mp3 of their own,
    // and the first user's mp3s are byte for byte what they were.
    let (status, _) = stack.upload(&other, &sources[0]).await.unwrap();
    assert_eq!(status, 200);
    let theirs = wait_for_mails(&other_email, 1, Duration::from_secs(120)).await.unwrap();
    let their_fid = fid_from_mail(&theirs[0].text).unwrap();
    assert!(!fids.contains(&their_fid));
    for (fid, bytes) in fids.iter().zip(&before) {
        let now =
            client.get(stack.gateway_url(&format!("/download?fid={fid}"))).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&now, bytes);
    }
    assert_eq!(wait_for_mails(&owner, 2, Duration::from_secs(1)).await.unwrap().len(), 2, "no mail about the other user's file");
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

/// The attack of issue 13: an upload that is an ID3 tag (which the gateway's sniffer takes for
/// audio) followed by an HLS playlist naming a media file on the converter's disk. It used to
/// come back as an mp3 of that file with a "ready" mail; now its owner gets the "not media"
/// failure mail, and no mp3 exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id3_tagged_playlist_upload_gets_the_not_media_mail_not_the_named_file() {
    let stack = Stack::start(&[]).await.expect("stack starts");
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    let named = media(Media::Mkv, 3);
    let playlist = format!("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{}\n#EXT-X-ENDLIST\n", named.display());
    let upload = tempfile::Builder::new().suffix(".mp3").tempfile().unwrap();
    std::fs::write(upload.path(), [&b"ID3\x04\x00\x00\x00\x00\x00\x0a\0\0\0\0\0\0\0\0\0\0"[..], playlist.as_bytes()].concat()).unwrap();
    let (status, body) = stack.upload(&token, upload.path()).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "success!"), "the sniffer accepts it as audio: {}", stack.logs());

    let mails = wait_for_mails(&owner, 1, Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    assert_eq!(mails[0].subject, "MP3 Download failed", "{}", mails[0].text);
    assert!(mails[0].text.contains(&format!("Reason: {}", common::message::Failure::NotMedia.user_text())), "{}", mails[0].text);
    let mp3s = stack.names.mongo().await.database(&stack.names.mp3s_db).collection::<mongodb::bson::Document>("fs.files");
    assert_eq!(mp3s.count_documents(mongodb::bson::doc! {}).await.unwrap(), 0);
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

/// A bounded backlog: once `VIDEO_QUEUE_MAX_LENGTH` uploads wait for a converter, the gateway
/// answers 503 with `Retry-After` and keeps nothing of the next upload; the uploads accepted
/// before stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_video_queue_answers_503_with_retry_after_and_loses_nothing_accepted() {
    let mut stack = Stack::start(&[("VIDEO_QUEUE_MAX_LENGTH", "2")]).await.expect("stack starts");
    // No converter: uploads stay in the queue.
    stack.converter.kill();
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    let src = media(Media::Mp4, 2);
    for _ in 0..2 {
        let (status, body) = stack.upload(&token, &src).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "success!"), "{}", stack.logs());
    }
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(std::fs::read(&src).unwrap()).file_name("third.mp4"));
    let resp = reqwest::Client::new().post(stack.gateway_url("/upload")).bearer_auth(&token).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 503, "{}", stack.logs());
    assert!(resp.headers().contains_key("retry-after"), "{:?}", resp.headers());

    // Two videos stored (the refused one deleted), two messages waiting, in order.
    let videos = stack.names.mongo().await.database(&stack.names.videos_db).collection::<mongodb::bson::Document>("fs.files");
    assert_eq!(videos.count_documents(mongodb::bson::doc! {}).await.unwrap(), 2);
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    for _ in 0..2 {
        let msg =
            testkit::take_message(&ch, &stack.names.video_queue, Duration::from_secs(5)).await.expect("accepted upload queued").json();
        let id = mongodb::bson::oid::ObjectId::parse_str(msg["video_fid"].as_str().unwrap()).unwrap();
        assert_eq!(videos.count_documents(mongodb::bson::doc! {"_id": id}).await.unwrap(), 1, "{msg}");
    }
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

/// Jobs (issue 15) through the four running binaries: state and progress events of a real
/// conversion, output options checked with ffprobe, the signed link in the mail, and delete
/// before and during conversion.
mod jobs;
