//! The gateway in-process, with a real auth service, MongoDB and RabbitMQ.

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, Document};
use testkit::{media, take_message, unique_email, Media};

mod helpers;
mod jobs;

use helpers::{spawn_app, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stores_the_file_with_its_owner_and_queues_the_contract_message() {
    let gw = spawn_app(&[]).await;
    let bytes = std::fs::read(media(Media::Mkv, 2)).unwrap();
    let (status, body) = gw.upload("../../secret/\tmy clip.mkv", bytes.clone()).await;
    assert_eq!((status, body.as_str()), (200, "success!"));

    let files = gw.video_files().await;
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let meta = file.get_document("metadata").unwrap();
    assert_eq!(meta.get_str("username").unwrap(), gw.email);
    assert_eq!(meta.get_str("filename").unwrap(), "my clip.mkv", "path and control characters stripped");
    assert!(meta.get_bool("queued").unwrap());
    assert_eq!(file.get_i64("length").unwrap_or_else(|_| file.get_i32("length").unwrap() as i64) as usize, bytes.len());
    let id = file.get_object_id("_id").unwrap();

    // The stored bytes are the uploaded bytes.
    let stored = gateway_read_all(&gw, id).await;
    assert_eq!(stored, bytes);

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let msg = take_message(&ch, &gw.names.video_queue, Duration::from_secs(5)).await.expect("message queued");
    assert_eq!(msg.json(), serde_json::json!({"video_fid": id.to_hex(), "mp3_fid": null, "username": gw.email}));
    assert_eq!(msg.properties.delivery_mode(), &Some(2), "persistent");
    testkit::delete_queues(&[&gw.names.video_queue]).await;
}

async fn gateway_read_all(gw: &TestApp, id: ObjectId) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let file = common::gridfs::find_file(gw.state.videos.database(), doc! {"_id": id}).await.unwrap().unwrap();
    let chunks: Vec<bytes::Bytes> =
        common::gridfs::read_range(gw.state.videos.database(), &file, 0, file.length - 1).try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_answers_503_and_stores_nothing() {
    // A broker address where nothing listens.
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", testkit::free_port());
    let gw = spawn_app(&[("AMQP_URL", &dead), ("DEPENDENCY_TIMEOUT_SECONDS", "2")]).await;
    let started = std::time::Instant::now();
    let (status, body) = gw.upload("a.mkv", std::fs::read(media(Media::Mkv, 2)).unwrap()).await;
    assert_eq!((status, body.as_str()), (503, "service unavailable; try again later"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(gw.video_files().await.is_empty(), "nothing stored for an upload that could not be announced");
    let ready = reqwest::get(format!("{}/readyz", gw.base)).await.unwrap();
    assert_eq!((ready.status().as_u16(), ready.text().await.unwrap().as_str()), (503, "rabbitmq unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sweep_announces_videos_whose_publish_never_happened() {
    let gw = spawn_app(&[]).await;
    // A video as a gateway that crashed after storing it would leave it.
    let id = ObjectId::new();
    let bucket = common::gridfs::bucket(gw.state.videos.database());
    let meta = doc! {"username": &gw.email, "filename": "a.mkv", "queued": false};
    common::gridfs::upload(&bucket, id, "a.mkv", meta, &b"\x1aE\xdf\xa3 not really"[..]).await.unwrap();
    // Its job, made before the publish, holds the options the upload asked for.
    let options = common::jobs::OutputOptions { bitrate: Some("192k".into()), ..Default::default() };
    gw.state.jobs.create(&common::jobs::JobDoc::queued(common::ids::VideoId::new(id), &gw.email, "a.mkv", options)).await.unwrap();

    // Too young: left alone (its upload request may still be publishing).
    assert_eq!(gateway::outbox::sweep_once(&gw.state, Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(gateway::outbox::sweep_once(&gw.state, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(gateway::outbox::sweep_once(&gw.state, Duration::ZERO).await.unwrap(), 0, "announced once");

    let (_c, ch) = testkit::amqp_channel().await.unwrap();
    let msg = take_message(&ch, &gw.names.video_queue, Duration::from_secs(5)).await.expect("announced");
    assert_eq!(msg.json()["video_fid"], id.to_hex());
    assert_eq!(msg.json()["username"], gw.email.as_str());
    assert_eq!(msg.json()["options"]["bitrate"], "192k", "announced with the options asked for at upload");

    // The sweep's query is served by an index, made when the gateway starts.
    let files = gw.state.videos.database().collection::<Document>("fs.files");
    testkit::eventually("the outbox index", Duration::from_secs(10), || async {
        files.list_index_names().await.unwrap().iter().any(|n| n == "metadata.queued_1_uploadDate_1").then_some(())
    })
    .await;
    testkit::delete_queues(&[&gw.names.video_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_support_ranges_and_etags() {
    let gw = spawn_app(&[]).await;
    let id = ObjectId::new();
    let bucket = common::gridfs::bucket(gw.state.mp3s.database());
    // Three chunks and a bit, so ranges cross chunk boundaries.
    let data: Vec<u8> = (0..(3 * common::gridfs::CHUNK_SIZE as usize + 100)).map(|i| (i % 251) as u8).collect();
    common::gridfs::upload(&bucket, id, "x.mp3", doc! {"username": &gw.email}, &data[..]).await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/download?fid={id}", gw.base);

    let full = client.get(&url).bearer_auth(&gw.token).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let etag = full.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(full.bytes().await.unwrap().as_ref(), &data[..]);

    let start = common::gridfs::CHUNK_SIZE as usize - 10;
    let end = 2 * common::gridfs::CHUNK_SIZE as usize + 10;
    let part = client.get(&url).bearer_auth(&gw.token).header("range", format!("bytes={start}-{end}")).send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes {start}-{end}/{}", data.len()).as_str());
    assert_eq!(part.bytes().await.unwrap().as_ref(), &data[start..=end]);

    let tail = client.get(&url).bearer_auth(&gw.token).header("range", "bytes=-50").header("if-range", &etag).send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &data[data.len() - 50..]);

    // A stale If-Range gets the whole file again.
    let stale = client.get(&url).bearer_auth(&gw.token).header("range", "bytes=0-9").header("if-range", "\"old\"").send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap().len(), data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_fail_on_missing_or_damaged_chunks() {
    use futures_util::TryStreamExt;
    let gw = spawn_app(&[]).await;
    let db = gw.state.videos.database();
    // Two and a half chunks of distinct bytes.
    let bytes: Vec<u8> = (0..common::gridfs::CHUNK_SIZE as usize * 5 / 2).map(|i| (i % 251) as u8).collect();
    let id = ObjectId::new();
    common::gridfs::upload(&common::gridfs::bucket(db), id, "x.mkv", doc! {}, &bytes[..]).await.unwrap();
    let read = |start: u64, end: u64| async move {
        let file = common::gridfs::find_file(db, doc! {"_id": id}).await.unwrap().unwrap();
        common::gridfs::read_range(db, &file, start, end).try_collect::<Vec<bytes::Bytes>>().await.map(|c| c.concat())
    };
    let len = bytes.len() as u64;
    assert_eq!(read(0, len - 1).await.unwrap(), bytes);
    assert_eq!(read(1_000_000, 2_200_000).await.unwrap(), &bytes[1_000_000..=2_200_000]);

    let chunks = db.collection::<Document>("fs.chunks");
    // A short middle chunk is an error, not a shorter body.
    chunks
        .update_one(
            doc! {"files_id": id, "n": 1},
            doc! {"$set": {"data": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] }}},
        )
        .await
        .unwrap();
    let err = read(0, len - 1).await.unwrap_err();
    assert!(err.to_string().contains("chunk 1 has 3 bytes"), "{err}");
    // A missing middle chunk is an error, not the next chunk's bytes in its place.
    chunks.delete_one(doc! {"files_id": id, "n": 1}).await.unwrap();
    let err = read(0, len - 1).await.unwrap_err();
    assert!(err.to_string().contains("chunk 1 is missing"), "{err}");
    // So is a missing last chunk, even for a range that starts after the gap.
    chunks.delete_one(doc! {"files_id": id, "n": 2}).await.unwrap();
    let err = read(len - 10, len - 1).await.unwrap_err();
    assert!(err.to_string().contains("chunk 2 is missing"), "{err}");
    // The first chunk alone still reads.
    assert_eq!(read(0, 99).await.unwrap(), &bytes[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_x_forwarded_for_does_not_escape_the_per_address_login_limit() {
    // No trusted proxy (the default): the gateway passes its peer's address, never the client's claim.
    let gw = spawn_app(&[]).await;
    let client = reqwest::Client::new();
    let login = |i: usize| {
        client
            .post(format!("{}/login", gw.base))
            .basic_auth(unique_email(), Some("wrong"))
            .header("x-forwarded-for", format!("198.51.100.{}", i % 250))
            .send()
    };
    // The auth service's default: 50 failures per address in the window.
    for i in 0..50 {
        assert_eq!(login(i).await.unwrap().status(), 401);
    }
    let blocked = login(50).await.unwrap();
    assert_eq!(blocked.status(), 429, "a new X-Forwarded-For each time must not reset the count");
    assert!(blocked.headers().contains_key("retry-after"));
}
