//! The suite on this machine (`xtask dev-up`, `xtask dev-down`; `scripts/dev-up.sh` and
//! `scripts/dev-down.sh` start the dependencies and build first): the auth schema and the
//! development accounts, secrets kept in `.dev/`, the four services started with
//! [`testkit::ServiceEnv`] (the one definition the tests and the benchmark use too) and recorded
//! as `scripts/_lib.sh` records its daemons, an optional Prometheus with the suite's alert rules.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use testkit::{var_or, AuthDb, Names, Servers, Service, ServiceEnv, Wiring};

use crate::procs::{tcp_open, Dev, STOP_ORDER};

/// Signed links in mails and job JSON point at the local gateway, so they work from this machine.
const PUBLIC_URL: &str = "http://127.0.0.1:8080";

#[derive(clap::Args)]
pub struct UpOptions {
    /// Run the debug binaries (target/debug) instead of the release ones.
    #[arg(long)]
    debug: bool,
    /// Also start a Prometheus on 127.0.0.1:9090 (env PROMETHEUS_PORT) scraping the four
    /// services' /metrics every 5 s, with the suite's alert rules.
    #[arg(long)]
    prometheus: bool,
}

#[derive(clap::Args)]
pub struct DownOptions {
    /// Keep the dependencies (maildev, MongoDB server, ...) running.
    #[arg(long)]
    services_only: bool,
    /// Also delete the state directory (.dev/: data, logs, JWT secret, maildev install).
    #[arg(long, conflicts_with = "services_only")]
    purge: bool,
}

/// The port each service answers `/readyz` on (the HTTP port of auth and the gateway).
fn port(service: Service) -> u16 {
    match service {
        Service::Auth => 5000,
        Service::Gateway => 8080,
        Service::Converter => 8081,
        Service::Notification => 8082,
    }
}

pub async fn up(opts: UpOptions) -> ExitCode {
    let dev = Dev::new("dev-up");
    dev.exit(start(&dev, opts).await)
}

async fn start(dev: &Dev, opts: UpOptions) -> anyhow::Result<()> {
    apply_schema().await?;
    dev.log("applied init.sql, auth's migrations and dev-seed.sql (database auth, user auth_user, demo user georgio@email.com)");
    // Made once, kept across runs: auth's JWT secret, and the download-link key that the
    // gateway and the notifier share.
    let jwt_secret = make_secret(dev, "jwt_secret", "a JWT secret")?;
    let link_secret = make_secret(dev, "download_link_secret", "a download-link key")?;

    let root = testkit::repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()).map_or_else(|| root.join("target"), PathBuf::from);
    let bin_dir = root.join(target).join(if opts.debug { "debug" } else { "release" });
    for s in Service::ALL {
        let bin = bin_dir.join(s.name());
        ensure!(bin.is_file(), "binary {} not found (build it, or drop --no-build)", bin.display());
    }

    // Stop every old instance first, so that ports are free and nothing talks to an old binary.
    for name in STOP_ORDER {
        dev.stop_recorded(name, Duration::from_secs(30)).await;
    }
    for s in Service::ALL {
        let p = port(s);
        if tcp_open(p) {
            bail!("port {p} (for {s}) is in use by a process dev-up did not start; find it with: ss -ltnp 'sport = :{p}'");
        }
    }
    let servers = Servers {
        amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        mongo_uri: var_or("MONGODB_URI", "mongodb://127.0.0.1:27017"),
        smtp_host: "127.0.0.1".into(),
        smtp_port: "1025".into(),
    };
    // Queue and database names: the caller's variables win, as they always did for dev-up.
    let names = Names {
        video_queue: var_or("VIDEO_QUEUE", "video"),
        mp3_queue: var_or("MP3_QUEUE", "mp3"),
        videos_db: var_or("MONGODB_VIDEOS_DB", "videos"),
        mp3s_db: var_or("MONGODB_MP3S_DB", "mp3s"),
    };
    let mysql = AuthDb::init_sql();
    let wiring = Wiring {
        servers: &servers,
        names: &names,
        mysql: &mysql,
        jwt_secret: &jwt_secret,
        auth_port: port(Service::Auth),
        public_url: PUBLIC_URL,
    };
    for s in Service::ALL {
        // The caller's environment, then these: secrets never appear on a command line.
        let mut env =
            ServiceEnv::new(s, port(s), wiring).set("RUST_LOG", var_or("RUST_LOG", "info")).set("NO_COLOR", var_or("NO_COLOR", "1"));
        // The link key signs (gateway) and is put in mails (notification); the others never see it.
        if matches!(s, Service::Gateway | Service::Notification) {
            env = env.set("DOWNLOAD_LINK_SECRET", &link_secret);
        }
        let bin = bin_dir.join(s.name());
        dev.start_bg(s.name(), &bin.to_string_lossy(), &[bin.as_os_str()], env.vars())?;
    }
    let client = reqwest::Client::new();
    for s in Service::ALL {
        let url = format!("http://127.0.0.1:{}/readyz", port(s));
        dev.wait_until(&format!("{s} ({url})"), Duration::from_secs(60), s.name(), || crate::procs::http_ok(&client, &url)).await?;
        let pid = dev.pid_of(s.name()).unwrap_or_default();
        dev.log(format!("{s} is ready (pid {pid}, log {})", dev.log_file(s.name()).display()));
    }

    let prometheus_note = if opts.prometheus { start_prometheus(dev, &client).await? } else { String::new() };
    let video = test_video(dev);
    print!("{}", welcome(dev, &video, &prometheus_note));
    Ok(())
}

/// The auth database as the services expect it: init.sql (the database), auth's migrations
/// (its tables, applied as auth applies them at start), then dev-seed.sql (the application user
/// and the demo user, whose rows need the tables).
async fn apply_schema() -> anyhow::Result<()> {
    let root = testkit::repo_root();
    crate::mysql::run(&std::fs::read_to_string(root.join("init.sql"))?, "init.sql")?;
    testkit::migrate_auth(&crate::mysql::admin_url().await?, "auth").await.context("auth's migrations")?;
    crate::mysql::run(&std::fs::read_to_string(root.join("dev-seed.sql"))?, "dev-seed.sql")
}

/// `.dev/<file>`: 48 random bytes (base64), readable by its owner only, made unless it
/// already holds one. Returns its content.
fn make_secret(dev: &Dev, file: &str, what: &str) -> anyhow::Result<String> {
    let path = dev.dir.join(file);
    if let Some(secret) = std::fs::read_to_string(&path).ok().filter(|s| !s.is_empty()) {
        return Ok(secret.trim().to_owned());
    }
    let mut bytes = [0u8; 48];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let secret = base64::engine::general_purpose::STANDARD.encode(bytes);
    let tmp = path.with_extension("tmp");
    std::fs::create_dir_all(&dev.dir)?;
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
    dev.log(format!("generated {what} in {}", path.display()));
    Ok(secret)
}

/// A Prometheus beside the suite; returns the line dev-up prints about it.
async fn start_prometheus(dev: &Dev, client: &reqwest::Client) -> anyhow::Result<String> {
    let prom_port: u16 = var_or("PROMETHEUS_PORT", "9090").parse().context("PROMETHEUS_PORT is not a port")?;
    let dir = dev.dir.join("prometheus");
    std::fs::create_dir_all(dir.join("data"))?;
    ensure!(!tcp_open(prom_port), "port {prom_port} (for prometheus) is in use; set PROMETHEUS_PORT to another one");
    // The alert rules are the PrometheusRule's groups.
    let rule_files = match crate::alerts::write_rules(&dir.join("rules")) {
        Ok(rules) => format!("rule_files: [\"{}\"]", rules.file.display()),
        Err(e) => {
            dev.log(format!("alert rules not loaded ({e:#})"));
            String::new()
        }
    };
    // The labels the alerts and the dashboard group by, as the Prometheus Operator sets them.
    let targets: String = Service::ALL
        .iter()
        .map(|s| format!("      - targets: [\"127.0.0.1:{}\"]\n        labels: {{ namespace: mp3converter, container: {s} }}\n", port(*s)))
        .collect();
    let config = dir.join("prometheus.yml");
    let yaml = format!(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n{rule_files}\nscrape_configs:\n  - job_name: mp3converter\n    static_configs:\n{targets}"
    );
    crate::write(&config, &yaml)?;
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{prom_port}"),
    ];
    let argv: Vec<&OsStr> = [OsStr::new("prometheus")].into_iter().chain(args.iter().map(OsStr::new)).collect();
    dev.start_bg("prometheus", &config.to_string_lossy(), &argv, &[])?;
    let url = format!("http://127.0.0.1:{prom_port}/-/ready");
    dev.wait_until(&format!("prometheus ({url})"), Duration::from_secs(60), "prometheus", || crate::procs::http_ok(client, &url)).await?;
    Ok(format!("  prometheus    http://127.0.0.1:{prom_port}   (targets: /targets, alerts: /alerts; try rate(http_requests_total[1m]))\n"))
}

/// `.dev/test.mkv`: a small video with an audio track, made once when ffmpeg is there.
fn test_video(dev: &Dev) -> PathBuf {
    let video = dev.dir.join("test.mkv");
    if std::fs::metadata(&video).is_ok_and(|m| m.len() > 0) {
        return video;
    }
    let tmp = dev.dir.join("test.mkv.tmp.mkv");
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y", "-nostdin", "-f", "lavfi", "-i", "testsrc=duration=5:size=320x240:rate=25"]);
    ffmpeg.args(["-f", "lavfi", "-i", "sine=frequency=440:duration=5", "-shortest"]);
    ffmpeg.args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac"]).arg(&tmp);
    match ffmpeg.status() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(s) if s.success() && std::fs::rename(&tmp, &video).is_ok() => {}
        _ => dev.log(format!("could not make {} (ffmpeg failed); use any video with an audio track", video.display())),
    }
    video
}

fn welcome(dev: &Dev, video: &Path, prometheus_note: &str) -> String {
    let (logs, video, dir) = (dev.dir.join("logs").display().to_string(), video.display(), dev.dir.display());
    format!(
        r#"
mp3converter is up:
  auth          http://127.0.0.1:5000   log {logs}/auth.log
  gateway       http://127.0.0.1:8080   log {logs}/gateway.log
  converter     http://127.0.0.1:8081/readyz   log {logs}/converter.log
  notification  http://127.0.0.1:8082/readyz   log {logs}/notification.log
  mail          http://127.0.0.1:1080   (maildev: every mail the notification service sends)
  web page      {PUBLIC_URL}/   (log in as georgio@email.com, password Admin123)
  metrics       http://127.0.0.1:5000/metrics  :8080/metrics  :8081/metrics  :8082/metrics
{prometheus_note}

Try the tutorial's flow:
  TOKEN=$(curl -s -X POST http://127.0.0.1:8080/login -u georgio@email.com:Admin123)
  curl -X POST -F 'file=@{video}' -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/upload
  # a mail "mp3 file_id: <fid> is now ready!" arrives at http://127.0.0.1:1080
  curl --output out.mp3 -X GET -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:8080/download?fid=<fid>"

Follow a job (the same upload asking for JSON answers 202 with the job and its Location):
  JOB=$(curl -s -X POST -H 'Accept: application/json' -F 'file=@{video}' -F bitrate=192k \
    -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/upload | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
  curl -N -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/jobs/$JOB/events   # live: queued, converting + progress, done
  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/jobs/$JOB          # download_url: a signed link, no token needed
  curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:8080/jobs?limit=5"        # your jobs, newest first
  curl -X DELETE -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/jobs/$JOB    # removes the job, its video and mp3

Stop with scripts/dev-down.sh (--purge also deletes {dir}).
"#
    )
}

pub async fn down(opts: DownOptions) -> ExitCode {
    let dev = Dev::new("dev-down");
    dev.exit(stop(&dev, opts).await)
}

async fn stop(dev: &Dev, opts: DownOptions) -> anyhow::Result<()> {
    if !dev.dir.is_dir() {
        dev.log(format!("nothing to do: {} does not exist", dev.dir.display()));
        return Ok(());
    }
    for name in STOP_ORDER {
        dev.stop_recorded(name, Duration::from_secs(30)).await;
    }
    if !opts.services_only {
        for dep in crate::procs::DEPS {
            dev.stop_dep(dep).await;
        }
    }
    if opts.purge {
        let dir = dev.dir.canonicalize()?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if dir == Path::new("/") || Some(&dir) == home.as_ref() || testkit::repo_root() == dir {
            bail!("refusing to delete {} (MP3C_DEV_DIR points at it)", dir.display());
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("delete {}", dir.display()))?;
        dev.log(format!("deleted {}", dir.display()));
    }
    dev.log("done");
    Ok(())
}
