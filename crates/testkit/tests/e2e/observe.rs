//! Observability against the four running binaries: `/metrics` moves with real work, one
//! `traceparent` is followed through every service's logs, and a real Prometheus scrapes them.

use std::time::Duration;

use testkit::{
    fid_from_mail, media, metric, poll_until, scrape, take_message, unique, unique_email, wait_for_mails, wait_metric, Media, Stack,
};

const WAIT: Duration = Duration::from_secs(120);

fn urls(stack: &Stack) -> [(&'static str, String); 4] {
    [
        ("auth", format!("http://127.0.0.1:{}/metrics", stack.auth_port)),
        ("gateway", format!("http://127.0.0.1:{}/metrics", stack.gateway_port)),
        ("converter", format!("http://127.0.0.1:{}/metrics", stack.converter_health)),
        ("notification", format!("http://127.0.0.1:{}/metrics", stack.notification_health)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_work_in_every_service() {
    let stack = Stack::start(&[]).await.expect("stack starts");
    let [(_, auth), (_, gateway), (_, converter), (_, notification)] = urls(&stack);
    let client = reqwest::Client::new();
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();

    let video = media(Media::Mkv, 3);
    let (status, body) = stack.upload(&token, &video).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "success!"), "{}", stack.logs());
    let text = tempfile::Builder::new().suffix(".mkv").tempfile().unwrap();
    std::fs::write(text.path(), b"this is not a video, whatever its name says").unwrap();
    let (status, _) = stack.upload(&token, text.path()).await.unwrap();
    assert_eq!(status, 415);
    let probe = client.get(stack.gateway_url(&format!("/wp-admin/{}", unique()))).send().await.unwrap();
    assert_eq!(probe.status(), 404);

    let mails = wait_for_mails(&owner, 1, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    let fid = fid_from_mail(&mails[0].text).expect("fid in the mail");
    let mp3 = client.get(stack.gateway_url(&format!("/download?fid={fid}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(mp3.status(), 200);
    let mp3_len = mp3.bytes().await.unwrap().len() as f64;

    // Gateway: requests by route pattern and status, uploads by outcome, bytes both ways.
    let req = "http_requests_total";
    let g = wait_metric(&gateway, req, &[("method", "GET"), ("route", "/download"), ("status", "200")], 1.0, WAIT).await.unwrap();
    assert_eq!(metric(&g, req, &[("method", "POST"), ("route", "/upload"), ("status", "200")]), Some(1.0), "{g}");
    assert_eq!(metric(&g, req, &[("method", "POST"), ("route", "/upload"), ("status", "415")]), Some(1.0), "{g}");
    assert_eq!(metric(&g, req, &[("method", "POST"), ("route", "/login"), ("status", "200")]), Some(1.0), "{g}");
    assert_eq!(metric(&g, req, &[("method", "GET"), ("route", "unmatched"), ("status", "404")]), Some(1.0), "{g}");
    assert_eq!(metric(&g, req, &[("route", "/metrics")]), None, "scrapes are not counted: {g}");
    assert_eq!(
        metric(&g, "http_request_duration_seconds_count", &[("method", "POST"), ("route", "/upload"), ("status", "200")]),
        Some(1.0),
        "{g}"
    );
    let upload_seconds = metric(&g, "http_request_duration_seconds_sum", &[("route", "/upload"), ("status", "200")]).unwrap();
    assert!(upload_seconds > 0.0 && upload_seconds < 60.0, "{upload_seconds}");
    assert!(
        metric(&g, "http_request_duration_seconds_bucket", &[("route", "/upload"), ("status", "200"), ("le", "+Inf")]) == Some(1.0),
        "a histogram with buckets: {g}"
    );
    assert_eq!(metric(&g, "mp3converter_uploads_total", &[("outcome", "accepted")]), Some(1.0), "{g}");
    assert_eq!(metric(&g, "mp3converter_uploads_total", &[("outcome", "refused"), ("reason", "unsupported_media")]), Some(1.0), "{g}");
    assert_eq!(metric(&g, "mp3converter_upload_bytes_total", &[]), Some(std::fs::metadata(&video).unwrap().len() as f64), "{g}");
    assert_eq!(metric(&g, "mp3converter_download_bytes_total", &[]), Some(mp3_len), "{g}");

    // Auth: every protected request was validated (two uploads, one download), one login.
    let a = scrape(&auth).await.unwrap();
    assert_eq!(metric(&a, req, &[("method", "POST"), ("route", "/validate"), ("status", "200")]), Some(3.0), "{a}");
    assert_eq!(metric(&a, req, &[("method", "POST"), ("route", "/login"), ("status", "200")]), Some(1.0), "{a}");

    // Converter: one job done, one conversion timed, its speed known.
    let video_queue = stack.names.video_queue.as_str();
    let c = wait_metric(&converter, "mp3converter_jobs_total", &[("queue", video_queue), ("outcome", "done")], 1.0, WAIT).await.unwrap();
    assert_eq!(metric(&c, "mp3converter_conversion_duration_seconds_count", &[]), Some(1.0), "{c}");
    assert_eq!(metric(&c, "mp3converter_conversion_speed_ratio_count", &[]), Some(1.0), "{c}");
    assert!(metric(&c, "mp3converter_conversion_speed_ratio_sum", &[]).unwrap() > 0.0, "{c}");
    assert_eq!(metric(&c, "mp3converter_jobs_total", &[("outcome", "failed")]), None, "{c}");

    // Notification: one job, one "ready" mail sent, the time from upload to mail measured.
    let mp3_queue = stack.names.mp3_queue.as_str();
    let n = wait_metric(&notification, "mp3converter_jobs_total", &[("queue", mp3_queue), ("outcome", "done")], 1.0, WAIT).await.unwrap();
    assert_eq!(metric(&n, "mp3converter_emails_total", &[("kind", "ready"), ("outcome", "sent")]), Some(1.0), "{n}");
    assert_eq!(metric(&n, "mp3converter_upload_to_email_seconds_count", &[]), Some(1.0), "{n}");
    let waited = metric(&n, "mp3converter_upload_to_email_seconds_sum", &[]).unwrap();
    assert!((0.0..WAIT.as_secs_f64() + 2.0).contains(&waited), "{waited}");

    // No label names a user, a file or a path a client made up.
    for (text, service) in [(&g, "gateway"), (&a, "auth"), (&c, "converter"), (&n, "notification")] {
        for secret in [owner.as_str(), fid.as_str(), "wp-admin"] {
            assert!(!text.contains(secret), "{service} metrics mention {secret}:\n{text}");
        }
    }
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

/// The JSON log lines of one service that carry `trace_id` in any of their spans.
fn lines_with_trace(log: &str, trace_id: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["spans"].as_array().is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == trace_id)) || v["span"]["trace_id"] == trace_id
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_traceparent_is_followed_through_all_four_services() {
    // The per-request line (common::http, debug) is the one auth writes for a /validate.
    let stack = Stack::start(&[("LOG_FORMAT", "json"), ("RUST_LOG", "info,common::http=debug")]).await.expect("stack starts");
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    let client = reqwest::Client::new();
    let upload = |path: std::path::PathBuf, traceparent: String| {
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(std::fs::read(&path).unwrap()).file_name("clip.mp4"));
        client.post(stack.gateway_url("/upload")).bearer_auth(&token).header("traceparent", traceparent).multipart(form).send()
    };

    // A good upload: the mail says ready.
    let good = "0af7651916cd43dd8448eb211c80319c";
    let resp = upload(media(Media::Mp4, 2), format!("00-{good}-b7ad6b7169203331-01")).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", stack.logs());
    // A video without audio: dead-lettered by the converter, the owner told by mail.
    let silent = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = upload(media(Media::SilentMp4, 2), format!("00-{silent}-00f067aa0ba902b7-01")).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", stack.logs());
    let mails = wait_for_mails(&owner, 2, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    assert_eq!(mails.len(), 2);

    // The dead letter keeps the upload's trace.
    let (_conn, ch) = testkit::amqp_channel().await.unwrap();
    let dead = take_message(&ch, &common::amqp::dead_queue(&stack.names.video_queue), Duration::from_secs(20)).await.expect("dead letter");
    let tp = dead.header_str("traceparent").expect("the dead letter carries a traceparent");
    assert!(tp.starts_with(&format!("00-{silent}-")), "{tp}");

    // The last lines (the notifier's record of the mail) may still be on their way to the file.
    let expect = [
        ("gateway", good, "upload stored and queued"),
        ("converter", good, "mp3 stored"),
        ("notification", good, "mail sent"),
        ("gateway", silent, "upload stored and queued"),
        ("converter", silent, "dead-lettering message"),
        ("notification", silent, "mail sent"),
    ];
    for (service, trace_id, message) in expect {
        let proc_ = [&stack.gateway, &stack.converter, &stack.notification].into_iter().find(|p| p.name == service).unwrap();
        poll_until(&format!("{service}: a {message:?} line with trace {trace_id}"), Duration::from_secs(20), || {
            std::future::ready(
                lines_with_trace(&proc_.log_text(), trace_id).iter().any(|l| l["fields"]["message"] == message).then_some(()),
            )
        })
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", stack.logs()));
    }
    // Auth validated both uploads within their traces.
    for trace_id in [good, silent] {
        let lines = lines_with_trace(&stack.auth.log_text(), trace_id);
        assert!(lines.iter().any(|l| l["span"]["path"] == "/validate"), "auth: no /validate line in trace {trace_id}:\n{}", stack.logs());
    }

    // Every line that names one of these uploads' videos carries that upload's trace id.
    for service in [&stack.gateway, &stack.converter, &stack.notification] {
        let log = service.log_text();
        for trace_id in [good, silent] {
            let videos: Vec<String> = lines_with_trace(&log, trace_id)
                .iter()
                .filter_map(|l| l["fields"]["video_fid"].as_str().or(l["span"]["video_fid"].as_str()).map(str::to_owned))
                .collect();
            for video in videos {
                for line in log.lines().filter(|l| l.contains(&video)) {
                    assert!(line.contains(trace_id), "{}: a line about video {video} without trace {trace_id}: {line}", service.name);
                }
            }
        }
        // Logs are JSON throughout when asked.
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "{}: not JSON: {line}", service.name);
        }
    }
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_four_services() {
    let prometheus = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    let stack = Stack::start(&[]).await.expect("stack starts");
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> =
        urls(&stack).iter().map(|(_, url)| url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned()).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mp3converter\n    static_configs:\n      - targets: {targets:?}\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = testkit::free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = std::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{prometheus} does not start ({e}): scripts/deps.sh installs Debian's prometheus"));
    // Killed on every path, also when an assertion fails.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = KillOnDrop(child);

    // Some traffic, so that the request metrics exist.
    let client = reqwest::Client::new();
    let token = stack.user_token(&unique_email(), true).await.unwrap();
    let resp = client.get(stack.gateway_url("/download?fid=0123456789abcdef01234567")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let query = |q: &'static str| {
        let client = client.clone();
        async move {
            let url = format!("http://127.0.0.1:{port}/api/v1/query");
            let resp = client.get(url).query(&[("query", q)]).send().await.ok()?;
            resp.json::<serde_json::Value>().await.ok()
        }
    };
    let value = |v: &Option<serde_json::Value>| {
        v.as_ref().and_then(|v| v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()))
    };
    let seen = std::sync::Mutex::new(None);
    let polled = poll_until("prometheus sees four healthy targets", Duration::from_secs(60), || async {
        // All four targets up, and the 404 download (counted by the gateway) stored.
        let up = query("sum(up{job=\"mp3converter\"})").await;
        let downloads = query("sum(http_requests_total{route=\"/download\",status=\"404\"})").await;
        let done = value(&up) == Some(4.0) && value(&downloads) == Some(1.0);
        *seen.lock().unwrap() = Some((up, downloads));
        done.then_some(())
    })
    .await;
    if let Err(e) = polled {
        panic!("{e}: {:?}\n{}", seen.lock().unwrap(), std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default());
    }
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_the_otlp_collector_in_the_callers_trace() {
    // A stand-in OTLP/HTTP collector: keeps every body posted to /v1/traces.
    let received: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body.to_vec());
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let stack =
        Stack::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")]).await.expect("stack starts");
    let owner = unique_email();
    let token = stack.user_token(&owner, true).await.unwrap();
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(std::fs::read(media(Media::Mp4, 2)).unwrap()).file_name("clip.mp4"));
    let resp = reqwest::Client::new()
        .post(stack.gateway_url("/upload"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-eee19b7ec3c1b174-01"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", stack.logs());
    wait_for_mails(&owner, 1, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));

    // Protobuf carries the trace id as its 16 raw bytes; each export is one process's, under its
    // resource attribute service.name (a KeyValue: key, then an AnyValue holding a string).
    let raw: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let service_name = |svc: &str| {
        let mut kv = b"\x0a\x0cservice.name\x12".to_vec();
        kv.extend([svc.len() as u8 + 2, 0x0a, svc.len() as u8]);
        kv.extend(svc.as_bytes());
        kv
    };
    let missing = || {
        let bodies = received.lock().unwrap().clone();
        let missing: Vec<&str> = ["auth", "gateway", "converter", "notification"]
            .into_iter()
            .filter(|svc| !bodies.iter().any(|b| has(b, &raw) && has(b, &service_name(svc))))
            .collect();
        (missing, bodies.len())
    };
    let polled = poll_until(&format!("a span of trace {trace_id} from every service"), Duration::from_secs(30), || {
        std::future::ready(missing().0.is_empty().then_some(()))
    })
    .await;
    if let Err(e) = polled {
        let (missing, exports) = missing();
        panic!("{e}: none from {missing:?} among {exports} exports\n{}", stack.logs());
    }
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}
