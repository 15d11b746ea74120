//! Fault injection, end to end (issue 3, "never lose a job, never loop on one"): the broker
//! restarted under load, a converter SIGKILLed in the middle of a conversion, poison messages
//! and files, the SMTP server away for a while, the MongoDB server stopped and restarted, and a
//! job delivered twice. Each test counts what came out (uploads accepted, mp3s in GridFS, mails,
//! dead letters), prints the counts on a line starting `FAULT-COUNTS` and asserts on them.
//!
//! Every test is named `fault_*`: scripts/test.sh runs them one at a time after the parallel
//! tests, because some of them stop a shared server. A guard restarts what a test stopped when
//! it is dropped, so the server comes back even when the test fails, and every test runs under
//! a time limit (the guards also drop when the limit cancels the test).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::amqp;
use common::message::JobMessage;
use futures_util::TryStreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use mongodb::bson::{doc, oid::ObjectId, Document};
use testkit::{eventually, free_port, media, take_message, unique, unique_email, wait_ok, Media, Names, Proc, Service, Stack};
use tokio::task::JoinSet;

const READY_SUBJECT: &str = "MP3 Download";
const FAILED_SUBJECT: &str = "MP3 Download failed";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs a test body under a hard time limit. On timeout the body is dropped, and with it every
/// guard and service process it holds.
async fn within<F: Future<Output = ()>>(limit: Duration, test: F) {
    if tokio::time::timeout(limit, test).await.is_err() {
        panic!("the test did not finish within {limit:?}");
    }
}

/// The state directory of scripts/deps.sh (where maildev is installed).
fn dev_dir() -> PathBuf {
    std::env::var_os("MP3C_DEV_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev"))
}

fn rabbitmqctl() -> Command {
    let sbin = Path::new("/usr/sbin/rabbitmqctl");
    Command::new(if sbin.exists() { sbin } else { Path::new("rabbitmqctl") })
}

/// `host:port` of the test broker, from its URL.
fn amqp_addr() -> String {
    let url = testkit::amqp_url();
    let rest = url.rsplit('@').next().unwrap_or(&url).trim_start_matches("amqp://");
    rest.split('/').next().unwrap_or("127.0.0.1:5672").to_owned()
}

/// Messages in each queue, ready plus unacknowledged (what AMQP's passive declare can't tell).
fn queue_depths() -> HashMap<String, u64> {
    let out = rabbitmqctl().args(["-q", "list_queues", "name", "messages"]).output().expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
        })
        .collect()
}

/// Waits until the pipeline is idle: nothing ready, unacked or waiting for a retry in the video
/// and mp3 queues, twice in a row. Counting before that could miss a late duplicate.
async fn wait_idle(names: &Names, timeout: Duration) {
    let queues =
        [names.video_queue.clone(), amqp::retry_queue(&names.video_queue), names.mp3_queue.clone(), amqp::retry_queue(&names.mp3_queue)];
    let mut quiet = 0;
    eventually("the pipeline is idle", timeout, || {
        let depths = tokio::task::block_in_place(queue_depths);
        let busy: Vec<_> = queues.iter().filter(|q| depths.get(*q).copied().unwrap_or(0) > 0).cloned().collect();
        quiet = if busy.is_empty() { quiet + 1 } else { 0 };
        async move { (quiet >= 2).then_some(()) }
    })
    .await;
}

/// Messages waiting in the dead-letter queue of `queue`.
async fn dead_letters(queue: &str) -> u32 {
    let (_c, ch) = testkit::amqp_channel().await.expect("broker reachable");
    let passive = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
    ch.queue_declare(&amqp::dead_queue(queue), passive, FieldTable::default()).await.map(|q| q.message_count()).unwrap_or(0)
}

/// Every mp3 in the test's GridFS database (files documents).
async fn mp3_files(mongo: &mongodb::Client, names: &Names) -> Vec<Document> {
    let files = mongo.database(&names.mp3s_db).collection::<Document>("fs.files");
    files.find(doc! {}).await.expect("list mp3s").try_collect().await.expect("read mp3s")
}

/// Mails by subject, as one maildev's REST API (`base`) shows them for `to`.
async fn mails_at(base: &str, to: &str) -> Vec<testkit::Mail> {
    let Ok(resp) = reqwest::get(format!("{base}/email")).await else { return Vec::new() };
    let all: Vec<testkit::Mail> = resp.json().await.unwrap_or_default();
    all.into_iter().filter(|m| m.to.iter().any(|a| a.address.eq_ignore_ascii_case(to))).collect()
}

fn with_subject<'a>(mails: &'a [testkit::Mail], subject: &str) -> Vec<&'a testkit::Mail> {
    mails.iter().filter(|m| m.subject == subject).collect()
}

/// What a test observed; printed for the report, then asserted on.
#[derive(Debug, Default)]
struct Counts {
    uploads_accepted: usize,
    uploads_refused: usize,
    uploads_timed_out: usize,
    mp3s: usize,
    mails_ready: usize,
    mails_failed: usize,
    dead_video: u32,
    dead_mp3: u32,
}

impl Counts {
    fn print(&self, test: &str) {
        println!(
            "FAULT-COUNTS {test}: uploads_accepted={} uploads_refused_5xx={} uploads_timed_out={} mp3s={} \
             emails_ready={} emails_failed={} dead_lettered_video={} dead_lettered_mp3={}",
            self.uploads_accepted,
            self.uploads_refused,
            self.uploads_timed_out,
            self.mp3s,
            self.mails_ready,
            self.mails_failed,
            self.dead_video,
            self.dead_mp3
        );
    }
}

/// Counts the outputs of a stack for one owner (mails at the shared maildev unless `maildev`).
async fn observe(mongo: &mongodb::Client, names: &Names, owner: &str, maildev: Option<&str>) -> Counts {
    let base = maildev.map(str::to_owned).unwrap_or_else(testkit::maildev_url);
    let mails = mails_at(&base, owner).await;
    Counts {
        mp3s: mp3_files(mongo, names).await.len(),
        mails_ready: with_subject(&mails, READY_SUBJECT).len(),
        mails_failed: with_subject(&mails, FAILED_SUBJECT).len(),
        dead_video: dead_letters(&names.video_queue).await,
        dead_mp3: dead_letters(&names.mp3_queue).await,
        ..Counts::default()
    }
}

/// The mp3 ids named in "ready" mails.
fn ready_fids(mails: &[testkit::Mail]) -> BTreeSet<String> {
    with_subject(mails, READY_SUBJECT).iter().filter_map(|m| testkit::fid_from_mail(&m.text)).collect()
}

fn mp3_ids(files: &[Document]) -> BTreeSet<String> {
    files.iter().filter_map(|f| f.get_object_id("_id").ok()).map(|id| id.to_hex()).collect()
}

fn multipart(bytes: Vec<u8>, name: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()))
}

/// `n` pseudo-random bytes (xorshift; the content only has to be meaningless).
fn noise(n: usize) -> Vec<u8> {
    let mut x = u64::from_str_radix(&unique()[..12], 16).unwrap_or(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// RabbitMQ's application stopped (`rabbitmqctl stop_app`: the node stays up, so `start_app`
/// brings back the same durable queues and persistent messages). Started again when dropped.
struct BrokerOutage {
    over: bool,
}

impl BrokerOutage {
    fn begin() -> Self {
        let out = rabbitmqctl().arg("stop_app").output().expect("rabbitmqctl runs");
        let outage = Self { over: false };
        assert!(out.status.success(), "rabbitmqctl stop_app failed: {}", String::from_utf8_lossy(&out.stderr));
        outage
    }

    /// Starts the broker and waits until it accepts connections again.
    fn end(&mut self) {
        if std::mem::replace(&mut self.over, true) {
            return;
        }
        let out = rabbitmqctl().arg("start_app").output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("rabbitmqctl start_app failed: {out:?}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = amqp_addr();
        while std::net::TcpStream::connect(&addr).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        self.end();
    }
}

// ---------------------------------------------------------------------------------------------
// 1. RabbitMQ restarted while uploads are in flight
// ---------------------------------------------------------------------------------------------

/// How one upload ended (the payloads are shown through `Debug` in assertion messages).
#[derive(Debug)]
#[allow(dead_code)]
enum UploadResult {
    Status(u16, Option<String>, Duration),
    TimedOut,
    Failed(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rabbitmq_restart() {
    within(Duration::from_secs(150), async {
        // Conversions that take a second at least, so that jobs are in the converter's hands
        // (unacked) when the broker goes away.
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("ffmpeg");
        std::fs::write(&wrapper, "#!/bin/sh\nsleep 1\nexec ffmpeg \"$@\"\n").unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wrapper_s = wrapper.display().to_string();
        let stack = Stack::start(&[("FFMPEG_PATH", wrapper_s.as_str())]).await.expect("stack starts");
        let mongo = stack.names.mongo().await;
        let owner = unique_email();
        let token = stack.user_token(&owner, true).await.unwrap();
        let video = std::fs::read(media(Media::Mkv, 2)).unwrap();
        // Far above DEPENDENCY_TIMEOUT_SECONDS: an upload that needs it hung.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

        // 20 uploads: 14 one every 350 ms (before and during the outage), then 6 once the
        // broker is back.
        let (restarted, restarted_rx) = tokio::sync::watch::channel(false);
        let mut uploads = JoinSet::new();
        for i in 0..20u64 {
            let (client, url, token, video) = (client.clone(), stack.gateway_url("/upload"), token.clone(), video.clone());
            let mut restarted_rx = restarted_rx.clone();
            uploads.spawn(async move {
                if i < 14 {
                    tokio::time::sleep(Duration::from_millis(350 * i)).await;
                } else {
                    let _ = restarted_rx.wait_for(|up| *up).await;
                    tokio::time::sleep(Duration::from_millis(200 * (i - 14))).await;
                }
                let t = Instant::now();
                let form = multipart(video, &format!("clip-{i}.mkv"));
                let result = match client.post(url).bearer_auth(token).multipart(form).send().await {
                    Ok(resp) => {
                        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
                        UploadResult::Status(resp.status().as_u16(), retry_after, t.elapsed())
                    }
                    Err(e) if e.is_timeout() => UploadResult::TimedOut,
                    Err(e) => UploadResult::Failed(format!("{e:#}")),
                };
                (t, result)
            });
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut outage = tokio::task::block_in_place(BrokerOutage::begin);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        tokio::task::block_in_place(|| outage.end());
        let back = Instant::now();
        restarted.send_replace(true);

        let mut counts = Counts::default();
        let mut others = Vec::new();
        let mut after_restart = 0;
        while let Some(r) = uploads.join_next().await {
            let (started, result) = r.unwrap();
            if started > back {
                // The gateway's publisher reconnects by itself.
                assert!(matches!(result, UploadResult::Status(200, ..)), "upload after the restart: {result:?}\n{}", stack.logs());
                after_restart += 1;
            }
            match result {
                UploadResult::Status(200, _, _) => counts.uploads_accepted += 1,
                UploadResult::Status(s, retry_after, took) if s >= 500 => {
                    counts.uploads_refused += 1;
                    assert_eq!((s, retry_after.as_deref()), (503, Some("5")), "refused as unavailable, with Retry-After");
                    assert!(took < Duration::from_secs(12), "refused quickly, not after {took:?}");
                }
                UploadResult::TimedOut => counts.uploads_timed_out += 1,
                other => others.push(other),
            }
        }
        assert!(others.is_empty(), "unexpected answers: {others:?}\n{}", stack.logs());
        assert_eq!(counts.uploads_timed_out, 0, "no upload may hang\n{}", stack.logs());
        assert!(counts.uploads_refused > 0, "the outage was hit by some uploads");
        assert_eq!(after_restart, 6, "uploads after the restart");

        // Every accepted upload gets its mp3 and its mail, after the consumers reconnected.
        let accepted = counts.uploads_accepted;
        eventually("a ready mail for every accepted upload", Duration::from_secs(90), || {
            let owner = owner.clone();
            async move {
                let mails = testkit::mails_to(&owner).await.unwrap_or_default();
                (with_subject(&mails, READY_SUBJECT).len() >= accepted).then_some(())
            }
        })
        .await;
        wait_idle(&stack.names, Duration::from_secs(60)).await;

        let observed = observe(&mongo, &stack.names, &owner, None).await;
        counts = Counts { uploads_accepted: counts.uploads_accepted, uploads_refused: counts.uploads_refused, ..observed };
        counts.print("fault_rabbitmq_restart");
        let (converter_log, notifier_log) = (stack.converter.log_text(), stack.notification.log_text());
        println!(
            "FAULT-COUNTS fault_rabbitmq_restart: uploads after the restart={after_restart} (all accepted); \
             consumer reconnect attempts: converter={} notifier={}; redeliveries found already done: mp3s={} mails={}",
            converter_log.matches("consumer lost its connection").count(),
            notifier_log.matches("consumer lost its connection").count(),
            converter_log.matches("mp3 already made for this video").count(),
            notifier_log.matches("mail already sent").count(),
        );
        let files = mp3_files(&mongo, &stack.names).await;
        let videos: BTreeSet<_> =
            files.iter().filter_map(|f| f.get_document("metadata").ok()?.get_str("video_fid").ok().map(str::to_owned)).collect();
        let mails = testkit::mails_to(&owner).await.unwrap();
        assert_eq!(counts.mp3s, accepted, "one mp3 per accepted upload\n{}", stack.logs());
        assert_eq!(videos.len(), accepted, "each mp3 from a different video");
        assert_eq!(counts.mails_ready, accepted, "one mail per accepted upload\n{}", stack.logs());
        assert_eq!(ready_fids(&mails), mp3_ids(&files), "the mails name exactly the mp3s made");
        // A refused upload's video is deleted. If the broker took its message just before it
        // went away (the confirm lost with the connection), the converter finds no video and
        // tells the owner; nothing else may fail.
        assert!(counts.dead_video as usize <= counts.uploads_refused, "{counts:?}");
        assert_eq!(counts.mails_failed, counts.dead_video as usize, "{counts:?}");
        assert_eq!(counts.dead_mp3, 0, "{counts:?}");
        if counts.dead_video > 0 {
            let (_c, ch) = testkit::amqp_channel().await.unwrap();
            while let Some(dead) = take_message(&ch, &amqp::dead_queue(&stack.names.video_queue), Duration::from_millis(200)).await {
                let reason = dead.header_str(amqp::REASON_HEADER).unwrap_or_default();
                assert!(reason.starts_with("video ") && reason.ends_with(" not found"), "{reason}");
            }
        }
        testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. A converter SIGKILLed in the middle of a conversion
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_converter_sigkill() {
    within(Duration::from_secs(120), async {
        // The first ffmpeg reads its input at the input's own pace (-re) and writes each packet
        // out at once (-flush_packets 1, an output option: put before the last argument):
        // converting 20 s of audio takes 20 s, so the converter can be killed while ffmpeg is
        // half-way through writing the mp3. Later runs go at full speed.
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("ffmpeg-pids");
        let wrapper = dir.path().join("ffmpeg");
        let script = format!(
            r#"#!/bin/sh
if [ -e '{p}' ]; then exec ffmpeg "$@"; fi
echo $$ >> '{p}'
n=$#; i=0
for a; do
  shift; i=$((i + 1))
  if [ "$i" -eq "$n" ]; then set -- "$@" -flush_packets 1; fi
  set -- "$@" "$a"
done
exec ffmpeg -re "$@"
"#,
            p = pids.display()
        );
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let staging = dir.path().join("tmp");
        std::fs::create_dir(&staging).unwrap();
        let (wrapper_s, staging_s) = (wrapper.display().to_string(), staging.display().to_string());
        let extra = [("FFMPEG_PATH", wrapper_s.as_str()), ("TMPDIR", staging_s.as_str()), ("CONVERTER_CONCURRENCY", "1")];

        let mut stack = Stack::start(&extra).await.expect("stack starts");
        let mongo = stack.names.mongo().await;
        let owner = unique_email();
        let token = stack.user_token(&owner, true).await.unwrap();
        let (status, body) = stack.upload(&token, &media(Media::Mkv, 20)).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "success!"));

        // Wait until ffmpeg has written part of the mp3, then SIGKILL the converter.
        let partial = eventually("ffmpeg is writing the mp3", Duration::from_secs(30), || {
            let staging = staging.clone();
            async move {
                let mut entries = std::fs::read_dir(&staging).ok()?.flatten();
                let dir = entries.find(|e| e.file_name().to_string_lossy().starts_with("mp3converter-"))?;
                let len = std::fs::metadata(dir.path().join("reencoded.mp3")).ok()?.len();
                (len >= 8 * 1024).then_some(len)
            }
        })
        .await;
        stack.converter.kill();
        // The killed converter's ffmpeg lives on (nobody is left to kill it); stop it so it
        // can't touch anything the next converter does.
        let first_ffmpeg = std::fs::read_to_string(&pids).unwrap();
        for pid in first_ffmpeg.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        assert_eq!(mp3_files(&mongo, &stack.names).await.len(), 0, "killed before storing the mp3");

        // A new converter with the same environment finishes the job.
        let env = stack.env(Service::Converter, free_port());
        stack.converter = Proc::service(&env).unwrap();
        wait_ok(&env.ready_url(), Duration::from_secs(20)).await.unwrap();
        testkit::wait_for_mails(&owner, 1, Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
        wait_idle(&stack.names, Duration::from_secs(30)).await;

        let counts = Counts { uploads_accepted: 1, ..observe(&mongo, &stack.names, &owner, None).await };
        counts.print("fault_converter_sigkill");
        println!("FAULT-COUNTS fault_converter_sigkill: partial mp3 at kill = {partial} bytes");
        assert_eq!((counts.mp3s, counts.mails_ready, counts.mails_failed), (1, 1, 0), "{counts:?}\n{}", stack.logs());
        assert_eq!((counts.dead_video, counts.dead_mp3), (0, 0));
        assert_eq!(std::fs::read_to_string(&pids).unwrap().lines().count(), 1, "the killed converter's ffmpeg was the paced one");
        let files = mp3_files(&mongo, &stack.names).await;
        let mails = testkit::mails_to(&owner).await.unwrap();
        assert_eq!(ready_fids(&mails), mp3_ids(&files));
        testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. Poison messages and files
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_poison_inputs() {
    within(Duration::from_secs(120), async {
        let stack = Stack::start(&[]).await.expect("stack starts");
        let mongo = stack.names.mongo().await;
        let owner = unique_email();
        let token = stack.user_token(&owner, true).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();

        testkit::publish(&stack.names.video_queue, b"\x00\xffthis is { not JSON").await.unwrap();
        let unknown = ObjectId::new();
        testkit::publish(&stack.names.video_queue, &JobMessage::new_video(unknown.to_hex(), owner.clone()).to_json()).await.unwrap();
        // An MP4 signature, so the gateway's content check lets it through, then noise.
        let junk = dir.path().join("junk.mp4");
        std::fs::write(&junk, [&b"\0\0\0\x20ftypisom"[..], &noise(256 * 1024)].concat()).unwrap();
        for path in [junk, media(Media::SilentMp4, 2), media(Media::Mp4, 2)] {
            let (status, body) = stack.upload(&token, &path).await.unwrap();
            assert_eq!((status, body.as_str()), (200, "success!"), "{}", path.display());
        }

        // All four poisons are dead-lettered, each with its reason, within a bounded time.
        let dead_4 = || async { (dead_letters(&stack.names.video_queue).await >= 4).then_some(()) };
        eventually("4 dead letters", Duration::from_secs(45), dead_4).await;
        let dead_after = t0.elapsed();
        // The good video, queued after them, is converted and mailed; so are the failure notices.
        eventually("1 ready and 3 failure mails", Duration::from_secs(45), || {
            let owner = owner.clone();
            async move {
                let mails = testkit::mails_to(&owner).await.unwrap_or_default();
                (!with_subject(&mails, READY_SUBJECT).is_empty() && with_subject(&mails, FAILED_SUBJECT).len() >= 3).then_some(())
            }
        })
        .await;
        wait_idle(&stack.names, Duration::from_secs(30)).await;

        let counts = Counts { uploads_accepted: 3, ..observe(&mongo, &stack.names, &owner, None).await };
        counts.print("fault_poison_inputs");
        println!("FAULT-COUNTS fault_poison_inputs: all dead-lettered {:.1}s after the first poison", dead_after.as_secs_f64());
        assert_eq!(counts.dead_video, 4, "{counts:?}\n{}", stack.logs());
        assert_eq!((counts.mp3s, counts.mails_ready, counts.mails_failed, counts.dead_mp3), (1, 1, 3, 0), "{counts:?}\n{}", stack.logs());

        let (_c, ch) = testkit::amqp_channel().await.unwrap();
        let mut reasons = Vec::new();
        for _ in 0..4 {
            let dead_q = amqp::dead_queue(&stack.names.video_queue);
            let dead = take_message(&ch, &dead_q, Duration::from_secs(5)).await.expect("dead letter");
            let attempt = dead.properties.headers().as_ref().and_then(|h| h.inner().get(amqp::ATTEMPT_HEADER).cloned());
            assert!(attempt.is_some(), "dead letters carry their attempt count");
            reasons.push(dead.header_str(amqp::REASON_HEADER).expect("x-failure-reason"));
        }
        reasons.sort();
        println!("FAULT-COUNTS fault_poison_inputs: reasons = {reasons:?}");
        assert!(reasons[0].starts_with("malformed message: "), "{reasons:?}");
        assert_eq!(reasons[1], "the uploaded file is not a video or audio file ffmpeg can read", "{reasons:?}");
        assert_eq!(reasons[2], "the video has no audio track", "{reasons:?}");
        assert_eq!(reasons[3], format!("video {unknown} not found"), "{reasons:?}");

        let mails = testkit::mails_to(&owner).await.unwrap();
        let failed: Vec<_> = with_subject(&mails, FAILED_SUBJECT).iter().map(|m| m.text.clone()).collect();
        // The owner gets each class's fixed sentence (the dead-letter header keeps the id).
        let told = [reasons[1].as_str(), reasons[2].as_str(), common::message::Failure::VideoMissing.user_text()];
        for reason in told {
            assert_eq!(
                failed.iter().filter(|t| t.contains(&format!("Reason: {reason}"))).count(),
                1,
                "one mail for {reason:?}: {failed:?}"
            );
        }
        testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. The SMTP server down for a while
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_smtp_down() {
    within(Duration::from_secs(120), async {
        // The notifier's own SMTP port, where nothing listens until a second maildev starts.
        let (smtp, web) = (free_port(), free_port());
        let smtp_s = smtp.to_string();
        let stack =
            Stack::start(&[("SMTP_PORT", smtp_s.as_str()), ("RETRY_BASE_MS", "200"), ("MAX_ATTEMPTS", "10")]).await.expect("stack starts");
        let mongo = stack.names.mongo().await;
        let owner = unique_email();
        let token = stack.user_token(&owner, true).await.unwrap();
        let (status, _) = stack.upload(&token, &media(Media::Mp4, 2)).await.unwrap();
        assert_eq!(status, 200);

        // The notifier fails to reach the server a few times and keeps the message.
        let failures = |log: &str| log.matches("transient failure; will retry").count();
        eventually("the notifier retried 3 times", Duration::from_secs(30), || {
            let n = failures(&stack.notification.log_text());
            async move { (n >= 3).then_some(()) }
        })
        .await;
        assert_eq!(dead_letters(&stack.names.mp3_queue).await, 0);

        let maildev = dev_dir().join("node/node_modules/.bin/maildev");
        assert!(maildev.exists(), "{} missing: run scripts/deps.sh", maildev.display());
        let mut cmd = Command::new(&maildev);
        cmd.args(["--smtp", &smtp_s, "--web", &web.to_string(), "--ip", "127.0.0.1", "--web-ip", "127.0.0.1"]);
        let server = Proc::start(&mut cmd, "maildev").unwrap().stop_on_drop(Duration::from_secs(5));
        let base = format!("http://127.0.0.1:{web}");
        let arrived = eventually("the mail arrives once the server is up", Duration::from_secs(45), || {
            let (base, owner) = (base.clone(), owner.clone());
            async move { (!mails_at(&base, &owner).await.is_empty()).then_some(()) }
        });
        arrived.await;
        wait_idle(&stack.names, Duration::from_secs(30)).await;

        let counts = Counts { uploads_accepted: 1, ..observe(&mongo, &stack.names, &owner, Some(&base)).await };
        counts.print("fault_smtp_down");
        let retries = failures(&stack.notification.log_text());
        println!("FAULT-COUNTS fault_smtp_down: notifier retries before the server came = {retries}");
        assert_eq!(
            (counts.mp3s, counts.mails_ready, counts.mails_failed),
            (1, 1, 0),
            "{counts:?}\n{}\n{}",
            stack.logs(),
            server.log_text()
        );
        assert_eq!((counts.dead_video, counts.dead_mp3), (0, 0), "{counts:?}");
        let files = mp3_files(&mongo, &stack.names).await;
        assert_eq!(ready_fids(&mails_at(&base, &owner).await), mp3_ids(&files));
        assert!(testkit::mails_to(&owner).await.unwrap().is_empty(), "nothing went to the shared maildev");
        testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. The MongoDB server stopped and restarted
// ---------------------------------------------------------------------------------------------

/// A SecantusDB (MongoDB-compatible) server of the test's own, on `port` with `storage`.
fn start_mongo(port: u16, storage: &Path, run_dir: &Path) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "secantus", "--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"])
        .arg(storage)
        .args(["--oplog-retention-seconds", "30", "--log-level", "WARNING"])
        // Away from any ./secantusd.toml.
        .current_dir(run_dir);
    Proc::start(&mut cmd, "secantusd").unwrap().stop_on_drop(Duration::from_secs(5))
}

async fn mongo_up(uri: &str, timeout: Duration) {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    eventually("MongoDB answers a ping", timeout, || {
        let db = client.database("admin");
        async move { db.run_command(doc! {"ping": 1}).await.ok().map(|_| ()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_mongodb_restart() {
    within(Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("data");
        let port = free_port();
        let uri = format!("mongodb://127.0.0.1:{port}");
        let mut server = start_mongo(port, &storage, dir.path());
        mongo_up(&uri, Duration::from_secs(30)).await;

        let stack = Stack::start(&[("MONGODB_URI", uri.as_str())]).await.expect("stack starts");
        let mongo = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let owner = unique_email();
        let token = stack.user_token(&owner, true).await.unwrap();
        let clip = media(Media::Mp4, 2);
        let mut counts = Counts::default();
        let (status, _) = stack.upload(&token, &clip).await.unwrap();
        assert_eq!(status, 200);
        counts.uploads_accepted += 1;
        let mail = testkit::wait_for_mails(&owner, 1, Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
        let first_fid = testkit::fid_from_mail(&mail[0].text).expect("fid in mail");

        server.stop(Duration::from_secs(10)).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let timed = |req: reqwest::RequestBuilder| async move {
            let t = Instant::now();
            let resp = req.send().await.expect("the gateway answers");
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            (resp.status().as_u16(), retry_after, t.elapsed())
        };
        let bytes = std::fs::read(&clip).unwrap();
        let (upload, download, ready) = tokio::join!(
            timed(client.post(stack.gateway_url("/upload")).bearer_auth(&token).multipart(multipart(bytes.clone(), "down.mp4"))),
            timed(client.get(stack.gateway_url(&format!("/download?fid={first_fid}"))).bearer_auth(&token)),
            timed(client.get(stack.gateway_url("/readyz"))),
        );
        println!("FAULT-COUNTS fault_mongodb_restart: while down upload={upload:?} download={download:?} readyz={ready:?}");
        let limit = Duration::from_secs(10);
        assert_eq!((upload.0, upload.1.as_deref()), (503, Some("5")), "upload while MongoDB is down\n{}", stack.logs());
        assert_eq!((download.0, download.1.as_deref()), (503, Some("5")), "download while MongoDB is down\n{}", stack.logs());
        assert_eq!(ready.0, 503, "readiness while MongoDB is down");
        let body = client.get(stack.gateway_url("/readyz")).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "mongodb unavailable");
        for (what, took) in [("upload", upload.2), ("download", download.2), ("readyz", ready.2)] {
            assert!(took <= limit, "{what} answered after {took:?}, more than {limit:?}");
        }
        counts.uploads_refused += 1;

        // Same port, same storage: the gateway recovers by itself.
        let _server = start_mongo(port, &storage, dir.path());
        mongo_up(&uri, Duration::from_secs(30)).await;
        let t = Instant::now();
        eventually("an upload succeeds again", Duration::from_secs(30), || {
            let req = client.post(stack.gateway_url("/upload")).bearer_auth(&token).multipart(multipart(bytes.clone(), "again.mp4"));
            async move { (req.send().await.ok()?.status() == 200).then_some(()) }
        })
        .await;
        println!("FAULT-COUNTS fault_mongodb_restart: upload accepted again {:.1}s after MongoDB answered", t.elapsed().as_secs_f64());
        counts.uploads_accepted += 1;
        let resp = client.get(stack.gateway_url(&format!("/download?fid={first_fid}"))).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), 200, "the mp3 made before the restart is still there");
        assert!(!resp.bytes().await.unwrap().is_empty());
        assert_eq!(client.get(stack.gateway_url("/readyz")).send().await.unwrap().status(), 200);
        testkit::wait_for_mails(&owner, 2, Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
        wait_idle(&stack.names, Duration::from_secs(30)).await;

        let observed = observe(&mongo, &stack.names, &owner, None).await;
        let counts = Counts { uploads_accepted: counts.uploads_accepted, uploads_refused: counts.uploads_refused, ..observed };
        counts.print("fault_mongodb_restart");
        assert_eq!((counts.mp3s, counts.mails_ready, counts.mails_failed), (2, 2, 0), "{counts:?}\n{}", stack.logs());
        assert_eq!((counts.dead_video, counts.dead_mp3), (0, 0), "{counts:?}");
        testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 6. The same job delivered twice
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_duplicate_delivery_makes_one_result() {
    within(Duration::from_secs(90), async {
        let stack = Stack::start(&[]).await.expect("stack starts");
        let mongo = stack.names.mongo().await;
        let owner = unique_email();
        let video = ObjectId::new();
        let file = tokio::fs::File::open(media(Media::Mkv, 2)).await.unwrap();
        let videos = mongo.database(&stack.names.videos_db);
        common::gridfs::upload(&common::gridfs::bucket(&videos), video, "v.mkv", doc! {"username": &owner}, file).await.unwrap();
        // Back to back, so two converters' slots (or two notifier slots) hold them at once.
        let msg = JobMessage::new_video(video.to_hex(), owner.clone()).to_json();
        testkit::publish(&stack.names.video_queue, &msg).await.unwrap();
        testkit::publish(&stack.names.video_queue, &msg).await.unwrap();

        testkit::wait_for_mails(&owner, 1, Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
        wait_idle(&stack.names, Duration::from_secs(30)).await;
        let counts = observe(&mongo, &stack.names, &owner, None).await;
        counts.print("fault_duplicate_delivery_makes_one_result");
        assert_eq!((counts.mp3s, counts.mails_ready, counts.mails_failed), (1, 1, 0), "{counts:?}\n{}", stack.logs());
        assert_eq!((counts.dead_video, counts.dead_mp3), (0, 0), "{counts:?}");
        testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
    })
    .await;
}
