//! Pipeline figures of the release build (`scripts/bench.sh --pipeline`): time from upload to the
//! "ready" email for a 60-second video (median of N runs), and the gateway's peak resident
//! memory (VmHWM of a fresh process) while it streams a large upload into GridFS. Runs the four
//! binaries against isolated queues and databases on the shared local servers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use testkit::{AuthDb, Names, Servers, Service, ServiceEnv, Wiring};

use crate::report::Report;
use crate::run::release_bin;
use crate::system::{self, median, mib, status_kib, Spawned};
use crate::tools;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Upload-to-email runs for the 60 s video (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Size of the large upload in MB.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_mb: u64,
    /// The MongoDB the services use.
    #[arg(long, env = "MONGODB_URI", default_value = "mongodb://127.0.0.1:27017", hide_env_values = true)]
    pub mongodb_uri: String,
    #[arg(long, env = "BENCH_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", hide_env_values = true)]
    pub amqp_url: String,
    /// maildev's REST API (the SMTP sink on 127.0.0.1:1025 is the notification service's).
    #[arg(long, default_value = "http://127.0.0.1:1080")]
    pub maildev_url: String,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/pipeline.json")]
    pub json: PathBuf,
}

struct Stack {
    names: Names,
    db: AuthDb,
    work: PathBuf,
    procs: Vec<Spawned>,
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let id = testkit::unique();
    let work = std::env::temp_dir().join(format!("mp3c-bench-pipeline-{id}"));
    std::fs::create_dir_all(&work)?;
    let names = Names {
        video_queue: format!("video-bp{id}"),
        mp3_queue: format!("mp3-bp{id}"),
        videos_db: format!("videos_bp{id}"),
        mp3s_db: format!("mp3s_bp{id}"),
    };
    let db = AuthDb::create_named("bench_").await.context("create the auth database (MariaDB as root over TCP)")?;
    let mut stack = Stack { names, db, work, procs: Vec::new() };
    let outcome = tokio::select! {
        r = measure(&opts, &mut stack) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    for p in stack.procs.drain(..) {
        p.stop().await;
    }
    let _ = stack.db.drop_all().await;
    if let Ok(client) = tools::mongo(&opts.mongodb_uri).await {
        let _ = tools::drop_databases(&client, &[stack.names.videos_db.clone(), stack.names.mp3s_db.clone()]).await;
    }
    let _ = tools::delete_queues(&opts.amqp_url, &[stack.names.video_queue.clone(), stack.names.mp3_queue.clone()]).await;
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&stack.work);
    } else {
        eprintln!("[bench] logs kept in {}", stack.work.display());
    }
    outcome
}

async fn measure(opts: &Options, stack: &mut Stack) -> anyhow::Result<Report> {
    let mut report = Report::new("pipeline", None, opts.runs as usize);
    report.machine = system::machine();
    report.mongodb = "the shared server (MONGODB_URI)".into();
    let servers = Servers {
        amqp_url: opts.amqp_url.clone(),
        mongo_uri: opts.mongodb_uri.clone(),
        smtp_host: "127.0.0.1".into(),
        smtp_port: "1025".into(),
    };
    let jwt = format!("bench-only-jwt-secret-{}-0123456789abcdef", testkit::unique());
    let (auth_port, gw_port) = (testkit::free_port(), testkit::free_port());
    let public_url = format!("http://127.0.0.1:{gw_port}");
    let wiring = Wiring { servers: &servers, names: &stack.names, mysql: &stack.db, jwt_secret: &jwt, auth_port, public_url: &public_url };
    let work = stack.work.clone();
    let spawn = |service: Service, port: u16| {
        let env = ServiceEnv::new(service, port, wiring).set("RUST_LOG", "warn");
        Spawned::start(service.name(), env.command(&release_bin(service.name())), &work.join(format!("{service}.log")), false)
    };
    let mut ports = vec![(Service::Auth, auth_port), (Service::Gateway, gw_port)];
    ports.extend([Service::Converter, Service::Notification].map(|s| (s, testkit::free_port())));
    for (service, port) in &ports {
        let p = spawn(*service, *port)?;
        tools::wait_ready(&format!("http://127.0.0.1:{port}/readyz"), p.started, Duration::from_secs(30))
            .await
            .with_context(|| format!("{service} not ready; logs in {}", stack.work.display()))?;
        stack.procs.push(p);
    }
    let gw_url = format!("http://127.0.0.1:{gw_port}");

    let email = format!("bench-{}@example.com", testkit::unique());
    testkit::add_user(&stack.db, &email, "Password123", true)?;
    let resp = reqwest::Client::new().post(format!("{gw_url}/login")).basic_auth(&email, Some("Password123")).send().await?;
    ensure!(resp.status().is_success(), "login answered {}", resp.status());
    let header = stack.work.join("auth-header");
    std::fs::write(&header, format!("Authorization: Bearer {}\n", resp.text().await?))?;
    let mails = || async {
        let all: Vec<serde_json::Value> = reqwest::get(format!("{}/email", opts.maildev_url)).await?.error_for_status()?.json().await?;
        anyhow::Ok(all.iter().filter(|m| m["to"].as_array().is_some_and(|to| to.iter().any(|a| a["address"] == email.as_str()))).count())
    };

    let v60 = stack.work.join("v60.mkv");
    system::video_60s(&v60).await?;
    let upload = |file: PathBuf| {
        let (header, url) = (format!("@{}", header.display()), format!("{gw_url}/upload"));
        async move {
            let mut cmd = tokio::process::Command::new("curl");
            cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", &header, "-F"])
                .arg(format!("file=@{}", file.display()))
                .arg(url);
            let out = system::run("curl", &mut cmd).await?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };

    // --- upload to email, 60 s video ---
    let mut latencies = Vec::new();
    for _ in 0..opts.runs {
        let before = mails().await?;
        let t0 = Instant::now();
        let code = upload(v60.clone()).await?;
        ensure!(code == "200", "upload answered {code}");
        while mails().await? <= before {
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("no mail within 120 s; logs in {}", stack.work.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        latencies.push(t0.elapsed().as_secs_f64());
        report.sample("upload_to_email_secs", t0.elapsed().as_secs_f64());
    }

    // --- gateway memory, large upload ---
    let loops = (opts.upload_mb * 1_000_000 / std::fs::metadata(&v60)?.len()).to_string();
    let big = stack.work.join("big.mkv");
    system::ffmpeg(&["-stream_loop", &loops, "-i", &v60.to_string_lossy(), "-c", "copy", &big.to_string_lossy()]).await?;
    let size = std::fs::metadata(&big)?.len();
    // A fresh gateway, so its high-water mark is this upload's.
    let at = stack.procs.iter().position(|p| p.name == "gateway").context("gateway runs")?;
    stack.procs.remove(at).stop().await;
    let gw = spawn(Service::Gateway, gw_port)?;
    tools::wait_ready(&format!("{gw_url}/readyz"), gw.started, Duration::from_secs(30)).await?;
    let gw_pid = gw.pid();
    stack.procs.push(gw);
    let idle = status_kib(gw_pid, "VmRSS")? as f64;
    let t0 = Instant::now();
    let code = upload(big).await?;
    let secs = t0.elapsed().as_secs_f64();
    ensure!(code == "200", "large upload answered {code}; logs in {}", stack.work.display());
    let peak = status_kib(gw_pid, "VmHWM")? as f64;

    let m = &report.machine;
    println!("\n{:<46} {} cores, {} GiB", "machine", m.cores, m.memory_mib / 1024);
    let lat = format!("{:.2} s (runs: {})", median(&latencies), system::join(&latencies, 2));
    println!("{:<46} {lat}", format!("upload -> email, 60 s video (median of {})", opts.runs));
    println!("{:<46} {:.1} MiB", "gateway idle RSS (fresh process)", idle / 1024.0);
    println!("{:<46} {:.1} MiB", format!("gateway peak RSS, {} MB upload", size / 1_000_000), peak / 1024.0);
    println!("{:<46} {secs:.2} s, {:.0} MB/s", "that upload took", size as f64 / secs / 1e6);

    report.info(format!("upload -> email, 60 s video (median of {})", opts.runs), lat);
    report.info("gateway idle RSS (fresh process)", format!("{:.1} MiB", mib(idle * 1024.0)));
    report.info(format!("gateway peak RSS, {} MB upload", size / 1_000_000), format!("{:.1} MiB", mib(peak * 1024.0)));
    report.info("that upload took", format!("{secs:.2} s, {:.0} MB/s", size as f64 / secs / 1e6));
    report.machine.load_end = system::load_average();
    Ok(report)
}
