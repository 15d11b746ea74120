//! The notifier in-process against real RabbitMQ, MongoDB and an SMTP server (maildev).

use std::time::Duration;

use common::message::JobMessage;
use testkit::{mails_to, take_message, unique_email, wait_for_mails};

mod helpers;

use helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mails_the_owner_once_per_mp3() {
    let app = spawn_app(&[]).await;
    let names = &app.names;
    let to = unique_email();
    let msg = JobMessage { mp3_fid: Some("65f0c0ffee0123456789abcd".into()), ..JobMessage::new_video("65f0c0ffee0123456789abce", &to) };
    app.publish(&msg).await;
    let mails = wait_for_mails(&to, 1, Duration::from_secs(20)).await.unwrap();
    assert_eq!(mails[0].subject, "MP3 Download");
    // The original's line, verbatim, then the signed link to the job (the video's id).
    assert_eq!(mails[0].text.lines().next(), Some("mp3 file_id: 65f0c0ffee0123456789abcd is now ready!"), "{}", mails[0].text);
    assert!(mails[0].text.contains("http://127.0.0.1:8080/jobs/65f0c0ffee0123456789abce/download?expires="), "{}", mails[0].text);
    assert_eq!(mails[0].from[0].address, "mp3converter@localhost");

    // A redelivered message sends nothing new.
    app.publish(&msg).await;
    let marker = unique_email();
    let other =
        JobMessage { mp3_fid: Some("65f0c0ffee0123456789abcf".into()), ..JobMessage::new_video("65f0c0ffee0123456789abce", &marker) };
    app.publish(&other).await;
    wait_for_mails(&marker, 1, Duration::from_secs(20)).await.unwrap();
    assert_eq!(mails_to(&to).await.unwrap().len(), 1, "no duplicate mail");
    testkit::delete_queues(&[&names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_the_owner_when_conversion_failed() {
    let app = spawn_app(&[]).await;
    let names = &app.names;
    let to = unique_email();
    let msg = JobMessage { error: Some("the video has no audio track".into()), ..JobMessage::new_video("65f0c0ffee0123456789abce", &to) };
    app.publish(&msg).await;
    let mails = wait_for_mails(&to, 1, Duration::from_secs(20)).await.unwrap();
    assert_eq!(mails[0].subject, "MP3 Download failed");
    assert!(
        mails[0].text.contains("65f0c0ffee0123456789abce") && mails[0].text.contains("the video has no audio track"),
        "{}",
        mails[0].text
    );
    testkit::delete_queues(&[&names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_mails_carry_a_fixed_reason_never_driver_text() {
    let app = spawn_app(&[]).await;
    let names = &app.names;
    // Each class's sentence arrives as it is; a reason with driver/OS detail (what an older
    // converter sent once its retries ran out) arrives as the internal-error sentence.
    let leaked = "gave up after 5 attempts: MongoDB unavailable: Kind: I/O error: Connection refused (os error 111), labels: {}";
    let cases = [
        (common::message::Failure::TooLong.user_text(), common::message::Failure::TooLong.user_text()),
        (common::message::Failure::NotMedia.user_text(), common::message::Failure::NotMedia.user_text()),
        (leaked, "an internal error stopped the conversion; please try again later"),
    ];
    for (error, expected) in cases {
        let to = unique_email();
        // Its own video id: failure mails are deduplicated per video.
        let video = mongodb::bson::oid::ObjectId::new().to_hex();
        let msg = JobMessage { error: Some(error.into()), ..JobMessage::new_video(&video, &to) };
        app.publish(&msg).await;
        let mails = wait_for_mails(&to, 1, Duration::from_secs(20)).await.unwrap();
        assert_eq!(mails[0].subject, "MP3 Download failed");
        let (body, head) = (mails[0].text.trim(), format!("Your video {video} could not be converted to MP3.\nReason: {expected}"));
        // Sentences that don't say what to do get one "What you can do" line.
        assert!(body == head || body.starts_with(&format!("{head}\nWhat you can do: ")), "for {error:?}: {body}");
        for detail in ["os error", "MongoDB", "Connection refused", "attempts"] {
            assert!(!mails[0].text.contains(detail), "{detail:?} leaked into {:?}", mails[0].text);
        }
    }
    testkit::delete_queues(&[&names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_recipients_and_header_injection_are_dead_lettered() {
    let app = spawn_app(&[]).await;
    let names = &app.names;
    let victim = unique_email();
    let injected = format!("{victim}\r\nBcc: {}", unique_email());
    let msg = JobMessage { mp3_fid: Some("65f0c0ffee0123456789abcd".into()), ..JobMessage::new_video("x", &injected) };
    app.publish(&msg).await;
    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let dead = take_message(&ch, &common::amqp::dead_queue(&names.mp3_queue), Duration::from_secs(20)).await.expect("dead-lettered");
    assert!(dead.header_str("x-failure-reason").unwrap().starts_with("invalid recipient address"));
    assert!(mails_to(&victim).await.unwrap().is_empty());
    testkit::delete_queues(&[&names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_notifier_that_died_mid_send_is_taken_over_after_its_lease() {
    use mongodb::bson::{doc, DateTime, Document};
    use std::time::Instant;

    // SMTP timeout 1 s: a send may take 2 s, a claim is stale after 4 s.
    let app = spawn_app(&[("SMTP_TIMEOUT_SECONDS", "1")]).await;
    let names = &app.names;
    let sent = names.mongo().await.database(&names.mp3s_db).collection::<Document>("sent_mails");
    let (old, fresh) = (unique_email(), unique_email());
    let fids = ["65f0c0ffee0123456789ab01", "65f0c0ffee0123456789ab02"];
    // What a notifier killed between claiming a mail and recording it leaves behind: one claim
    // long past its lease, one just made.
    let now = DateTime::now().timestamp_millis();
    for (to, fid, age_ms) in [(&old, fids[0], 60_000), (&fresh, fids[1], 0)] {
        let claim = doc! {"_id": format!("mp3:{fid}"), "to": to.as_str(), "state": "sending", "at": DateTime::from_millis(now - age_ms)};
        sent.insert_one(claim).await.unwrap();
    }
    let t = Instant::now();
    for (to, fid) in [(&old, fids[0]), (&fresh, fids[1])] {
        let msg = JobMessage { mp3_fid: Some(fid.into()), ..JobMessage::new_video("65f0c0ffee0123456789abce", to) };
        app.publish(&msg).await;
    }
    wait_for_mails(&old, 1, Duration::from_secs(10)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "a stale claim is taken over at once: {:?}", t.elapsed());
    wait_for_mails(&fresh, 1, Duration::from_secs(20)).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(3), "a fresh claim is waited out: {:?}", t.elapsed());
    for fid in fids {
        let record = sent.find_one(doc! {"_id": format!("mp3:{fid}")}).await.unwrap().unwrap();
        assert_eq!(record.get_str("state").unwrap(), "sent");
    }
    assert_eq!(mails_to(&old).await.unwrap().len() + mails_to(&fresh).await.unwrap().len(), 2);
    testkit::delete_queues(&[&names.mp3_queue]).await;
}
