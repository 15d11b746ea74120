//! The benchmark: the four services against baselines measured in the same run on the same
//! servers (docs/performance.md explains each figure):
//!
//! - upload: `POST /upload` of a large file vs. the same bytes streamed into GridFS directly;
//!   gateway peak and idle RSS
//! - download: `GET /download` of that file vs. a direct driver read; gateway peak RSS; a Range
//!   request must get 206
//! - conversion: converter time per job (video message published -> mp3 message) vs. the bare
//!   ffmpeg command line on the same file; the mp3 stream copy
//! - throughput: 20 videos queued at once, one converter vs. two competing ones
//! - hot paths (wrk): auth `POST /validate`; the gateway's authenticated path; a whole small
//!   download vs. the MongoDB floor of its queries
//! - footprint: idle RSS of each service; start-up to ready
//!
//! It generates its own media, starts its own SecantusDB (unless given a MongoDB), the release
//! binaries with their environment from `testkit::ServiceEnv`, and removes what it made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mongodb::bson::oid::ObjectId;
use testkit::{AuthDb, Names, Servers, Service, ServiceEnv, Wiring};

use crate::report::{Mode, Report};
use crate::system::{self, join, median, mib, status_kib, Spawned};
use crate::tools::{self, JobQueues, ReadMode};

/// A part of the benchmark, for running a subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Section {
    Footprint,
    Upload,
    Download,
    Hot,
    Conversion,
    Throughput,
    /// The cost of the request metrics and trace context on the hot paths, against a build
    /// without them (`--uninstrumented`). Runs only when named.
    Instrumentation,
}

/// What the command line chose.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// quick: 256 MiB, 60 s video only, one throughput round, 3 s wrk runs (~2-3 min);
    /// full: 1 GiB, 60 s and 10 min videos, three throughput rounds (~9-11 min).
    #[arg(value_enum, default_value = "full")]
    pub mode: Mode,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, env = "BENCH_REPS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,
    /// Parts to run (default: all).
    #[arg(long, env = "BENCH_SECTIONS", value_enum, value_delimiter = ',')]
    pub sections: Vec<Section>,
    /// Measure against this MongoDB instead of a throwaway SecantusDB.
    #[arg(long, env = "BENCH_MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,
    /// RabbitMQ (a vhost the run may declare and delete queues in).
    #[arg(long, env = "BENCH_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", hide_env_values = true)]
    pub amqp_url: String,
    /// Keep the work directory (media, logs) under /tmp afterwards.
    #[arg(long, env = "BENCH_KEEP", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub keep: bool,
    /// Also record perf profiles of the gateway and SecantusDB during the hot section.
    #[arg(long, env = "BENCH_PERF", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub perf: bool,
    /// Extra variables for every service, "A=1 B=2" (to A/B-test a setting).
    #[arg(long, env = "BENCH_SERVICE_ENV", default_value = "")]
    pub service_env: String,
    /// Binary of auth (default target/release/auth; to compare a patched build).
    #[arg(long, env = "BENCH_AUTH_BIN")]
    pub auth_bin: Option<PathBuf>,
    #[arg(long, env = "BENCH_GATEWAY_BIN")]
    pub gateway_bin: Option<PathBuf>,
    #[arg(long, env = "BENCH_CONVERTER_BIN")]
    pub converter_bin: Option<PathBuf>,
    #[arg(long, env = "BENCH_NOTIFICATION_BIN")]
    pub notification_bin: Option<PathBuf>,
    /// A directory with `auth` and `gateway` built from the same sources without request
    /// metrics and trace context (`scripts/bench.sh --instrumentation` builds it), for the
    /// instrumentation section.
    #[arg(long, env = "BENCH_UNINSTRUMENTED")]
    pub uninstrumented: Option<PathBuf>,
    /// Pairs of wrk runs (uninstrumented, instrumented) per path in the instrumentation section.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/results.json")]
    pub json: PathBuf,
    /// Where the printed table is also written (default .dev/bench-<mode>.txt).
    #[arg(long)]
    pub table: Option<PathBuf>,
}

/// The sizes of a run.
struct Params {
    big_mib: u64,
    conv_seconds: Vec<u32>,
    copy_seconds: u32,
    tp_reps: u32,
    tp_configs: Vec<Throughput>,
    wrk_secs: u32,
    idle_settle: u32,
}

const TP_JOBS: usize = 20;
const WRK_CONNS: usize = 16;

/// How many converters compete in a throughput round, and at which concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Throughput {
    /// One converter at the default concurrency (cores).
    One,
    /// Two converters, cores/2 each: the same total parallelism.
    TwoHalf,
    /// Two converters at the default concurrency each.
    TwoFull,
}

impl Throughput {
    fn name(self) -> &'static str {
        match self {
            Throughput::One => "one",
            Throughput::TwoHalf => "two1",
            Throughput::TwoFull => "twoN",
        }
    }
}

impl Params {
    fn of(mode: Mode, reps: u32) -> Self {
        match mode {
            Mode::Quick => Self {
                big_mib: 256,
                conv_seconds: vec![60],
                copy_seconds: 60,
                tp_reps: 1,
                tp_configs: vec![Throughput::One, Throughput::TwoHalf],
                wrk_secs: 3,
                idle_settle: 1,
            },
            Mode::Full => Self {
                big_mib: 1024,
                conv_seconds: vec![60, 600],
                copy_seconds: 600,
                tp_reps: reps,
                tp_configs: vec![Throughput::One, Throughput::TwoHalf, Throughput::TwoFull],
                wrk_secs: 10,
                idle_settle: 2,
            },
        }
    }
}

/// Everything a run made, so that it can be removed.
#[derive(Default)]
struct Made {
    queues: Vec<String>,
    mongo_dbs: Vec<String>,
    auth_db: Option<AuthDb>,
}

/// One run of the benchmark.
pub struct Bench {
    opts: Options,
    p: Params,
    reps: usize,
    run_id: String,
    work: PathBuf,
    logs: PathBuf,
    media: PathBuf,
    servers: Servers,
    mongo: Option<mongodb::Client>,
    mongo_server: Option<Spawned>,
    made: Made,
    report: Report,
    jwt: String,
    email: String,
    password: String,
    auth_port: u16,
    auth: Option<Spawned>,
    /// The `Authorization: Bearer` header in a file for curl (`-H @file`), so the token never
    /// shows on a command line.
    auth_header: PathBuf,
    token: String,
    big: PathBuf,
    big_bytes: u64,
    dl_db: String,
    big_fid: Option<ObjectId>,
    small_fid: Option<ObjectId>,
    job_median: HashMap<u32, f64>,
    bare_median: HashMap<u32, f64>,
    clk_tck: f64,
    cores: usize,
}

/// The outcome of [`Bench::run`]: the report, and whether any figure missed its target.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let mut bench = Bench::new(opts)?;
    eprintln!("[bench] mode {}, {} repetitions, work directory {}", bench.opts.mode.name(), bench.reps, bench.work.display());
    let outcome = tokio::select! {
        r = bench.measure() => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    bench.clean_up(outcome.is_ok()).await;
    outcome?;
    Ok(bench.report)
}

impl Bench {
    fn new(opts: Options) -> anyhow::Result<Self> {
        let run_id = testkit::unique();
        let work = std::env::temp_dir().join(format!("mp3c-bench-{run_id}"));
        let (logs, media) = (work.join("logs"), work.join("media"));
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&media)?;
        let p = Params::of(opts.mode, opts.reps);
        let mut report = Report::new("bench", Some(opts.mode), opts.reps as usize);
        report.machine = system::machine();
        Ok(Self {
            reps: opts.reps as usize,
            servers: Servers {
                amqp_url: opts.amqp_url.clone(),
                mongo_uri: opts.mongodb_uri.clone().unwrap_or_default(),
                smtp_host: "127.0.0.1".into(),
                smtp_port: "1025".into(),
            },
            p,
            jwt: format!("bench-only-jwt-secret-{run_id}-0123456789abcdefghijklmnop"),
            email: format!("bench-{run_id}@example.com"),
            password: format!("Bench-{run_id}-pw"),
            auth_header: work.join("auth-header"),
            run_id,
            logs,
            media,
            work,
            mongo: None,
            mongo_server: None,
            made: Made::default(),
            report,
            auth_port: 0,
            auth: None,
            token: String::new(),
            big: PathBuf::new(),
            big_bytes: 0,
            dl_db: String::new(),
            big_fid: None,
            small_fid: None,
            job_median: HashMap::new(),
            bare_median: HashMap::new(),
            clk_tck: system::clock_ticks_per_second(),
            cores: system::cores(),
            opts,
        })
    }

    fn wants(&self, s: Section) -> bool {
        let all = self.opts.sections.is_empty() && s != Section::Instrumentation;
        all || self.opts.sections.contains(&s)
    }

    fn mongo(&self) -> &mongodb::Client {
        self.mongo.as_ref().expect("MongoDB is connected before any section runs")
    }

    fn db(&self, name: &str) -> mongodb::Database {
        self.mongo().database(name)
    }

    /// A MongoDB database name of this run (recorded for clean-up).
    fn mdb(&mut self, name: &str) -> String {
        let n = format!("b{}_{name}", self.run_id);
        self.made.mongo_dbs.push(n.clone());
        n
    }

    /// A queue name of this run (recorded for clean-up).
    fn queue(&mut self, name: &str) -> String {
        let n = format!("bench-{}-{name}", self.run_id);
        self.made.queues.push(n.clone());
        n
    }

    fn names(videos_db: &str, mp3s_db: &str, video_queue: &str, mp3_queue: &str) -> Names {
        Names {
            videos_db: videos_db.to_owned(),
            mp3s_db: mp3s_db.to_owned(),
            video_queue: video_queue.to_owned(),
            mp3_queue: mp3_queue.to_owned(),
        }
    }

    fn bin_of(&self, service: Service) -> PathBuf {
        let chosen = match service {
            Service::Auth => &self.opts.auth_bin,
            Service::Gateway => &self.opts.gateway_bin,
            Service::Converter => &self.opts.converter_bin,
            Service::Notification => &self.opts.notification_bin,
        };
        chosen.clone().unwrap_or_else(|| release_bin(service.name()))
    }

    /// Starts `service` on a fresh port with exactly its environment (`ServiceEnv`), plus
    /// `extra` and `--service-env`; output to `log` (default logs/<service>.log, appended).
    fn spawn(&self, service: Service, port: u16, names: &Names, extra: &[(&str, String)], log: Option<&Path>) -> anyhow::Result<Spawned> {
        let env = self.service_env(service, port, self.auth_port, names, extra)?;
        let default_log = self.logs.join(format!("{}.log", service.name()));
        let log = log.unwrap_or(&default_log);
        Spawned::start(service.name(), env.command(&self.bin_of(service)), log, log != default_log.as_path())
    }

    /// The environment of `service` on `port`, whose auth is on `auth_port`, plus `extra` and
    /// `--service-env`.
    fn service_env(
        &self,
        service: Service,
        port: u16,
        auth_port: u16,
        names: &Names,
        extra: &[(&str, String)],
    ) -> anyhow::Result<ServiceEnv> {
        let db = self.made.auth_db.as_ref().context("the auth database is made first")?;
        // Download links in the benchmark's mails are never followed: any local address will do.
        let wiring = Wiring { servers: &self.servers, names, mysql: db, jwt_secret: &self.jwt, auth_port, public_url: "http://127.0.0.1" };
        Ok(ServiceEnv::new(service, port, wiring)
            .extend(extra.iter().map(|(k, v)| (*k, v.clone())))
            .extend(self.opts.service_env.split_whitespace().filter_map(|kv| kv.split_once('='))))
    }

    /// ms from the spawn until `url` answers 200 (fails after 30 s, pointing at the log).
    async fn wait_ready(&self, proc_: &Spawned, url: &str) -> anyhow::Result<f64> {
        tools::wait_ready(url, proc_.started, Duration::from_secs(30))
            .await
            .with_context(|| format!("{} did not become ready; log {}", proc_.name, proc_.log.display()))
    }

    /// A fresh gateway, ready.
    async fn start_gateway(&self, videos_db: &str, mp3s_db: &str, video_queue: &str) -> anyhow::Result<(Spawned, String)> {
        let port = testkit::free_port();
        let gw = self.spawn(Service::Gateway, port, &Self::names(videos_db, mp3s_db, video_queue, "-"), &[], None)?;
        let url = format!("http://127.0.0.1:{port}");
        self.wait_ready(&gw, &format!("{url}/readyz")).await?;
        Ok((gw, url))
    }

    async fn measure(&mut self) -> anyhow::Result<()> {
        self.start_mongo().await?;
        self.made.auth_db = Some(AuthDb::create_named("bench_").await.context("create the auth database (MariaDB as root over TCP)")?);
        self.make_media().await?;
        self.auth_port = testkit::free_port();
        self.footprint().await?;
        self.set_up_user().await?;
        if self.wants(Section::Upload) {
            self.upload().await?;
        }
        if self.wants(Section::Download) {
            self.download().await?;
        }
        if self.wants(Section::Hot) {
            self.hot().await?;
        }
        if self.wants(Section::Conversion) {
            self.conversion().await?;
        }
        if self.wants(Section::Throughput) {
            self.throughput().await?;
        }
        if self.wants(Section::Instrumentation) {
            self.instrumentation().await?;
        }
        if let Some(auth) = self.auth.take() {
            auth.stop().await;
        }
        self.report.machine.load_end = system::load_average();
        Ok(())
    }

    /// A throwaway SecantusDB on a free port (or the given server).
    async fn start_mongo(&mut self) -> anyhow::Result<()> {
        if let Some(uri) = &self.opts.mongodb_uri {
            let client = tools::mongo(uri).await?;
            ensure!(common::gridfs::ping(&client.database("admin")).await, "BENCH_MONGODB_URI does not answer a ping");
            self.report.mongodb = "given by BENCH_MONGODB_URI".into();
            self.mongo = Some(client);
            return Ok(());
        }
        let port = testkit::free_port();
        let data = self.work.join("secantus-data");
        std::fs::create_dir_all(&data)?;
        let mut cmd = std::process::Command::new("python3");
        // Short oplog retention: SecantusDB keeps a copy of every GridFS chunk written in its oplog.
        cmd.args(["-m", "secantus", "--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"])
            .arg(&data)
            .args(["--oplog-retention-seconds", "30", "--log-level", "WARNING"])
            .current_dir(&self.work);
        let mut server = Spawned::start("secantusd", cmd, &self.logs.join("secantusd.log"), true)?;
        let uri = format!("mongodb://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            if !server.alive() {
                bail!("SecantusDB exited (scripts/deps.sh installs it; or set BENCH_MONGODB_URI); log {}", server.log.display());
            }
            if let Ok(c) = tools::mongo(&uri).await {
                if common::gridfs::ping(&c.database("admin")).await {
                    break c;
                }
            }
            ensure!(Instant::now() < deadline, "SecantusDB on 127.0.0.1:{port} did not answer within 60 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let version = system::run(
            "python3",
            tokio::process::Command::new("python3").args(["-c", "import importlib.metadata as m; print(m.version('secantusdb'))"]),
        )
        .await
        .map_or_else(|_| "?".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        self.report.mongodb = format!("SecantusDB {version} (Python), throwaway, 127.0.0.1:{port}");
        self.servers.mongo_uri = uri;
        self.mongo = Some(client);
        self.mongo_server = Some(server);
        Ok(())
    }

    async fn make_media(&mut self) -> anyhow::Result<()> {
        eprintln!("[bench] generating media in {}", self.media.display());
        let m = |name: &str| self.media.join(name).to_string_lossy().into_owned();
        // The 60 s video, and the same with an MP3 track (the stream-copy case).
        system::video_60s(&self.media.join("video-60.mkv")).await?;
        system::ffmpeg(&[
            "-i",
            &m("video-60.mkv"),
            "-map",
            "0",
            "-c:v",
            "copy",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "192k",
            &m("mp3audio-60.mkv"),
        ])
        .await?;
        // Longer versions are the 60 s ones looped (stream copy: seconds to make).
        let mut lengths = self.p.conv_seconds.clone();
        lengths.push(self.p.copy_seconds);
        for s in lengths.into_iter().filter(|s| *s != 60) {
            let loops = (s / 60 - 1).to_string();
            for kind in ["video", "mp3audio"] {
                let out = m(&format!("{kind}-{s}.mkv"));
                if !Path::new(&out).exists() {
                    system::ffmpeg(&["-stream_loop", &loops, "-i", &m(&format!("{kind}-60.mkv")), "-c", "copy", &out]).await?;
                }
            }
        }
        // The big upload: the 60 s video looped up to the size (real, already-compressed media).
        self.big = self.media.join("big.mkv");
        if self.wants(Section::Upload) || self.wants(Section::Download) {
            let limit = (self.p.big_mib * 1024 * 1024).to_string();
            system::ffmpeg(&["-stream_loop", "-1", "-i", &m("video-60.mkv"), "-c", "copy", "-fs", &limit, &m("big.mkv")]).await?;
            self.big_bytes = std::fs::metadata(&self.big)?.len();
        }
        // A small mp3 for the request-rate test (1 s: one GridFS chunk).
        system::ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "libmp3lame", "-q:a", "4", &m("small.mp3")]).await?;
        let size = |n: &str| std::fs::metadata(self.media.join(n)).map_or(0, |m| m.len());
        let line =
            format!("media: big {} bytes; video-60 {} bytes; small.mp3 {} bytes", self.big_bytes, size("video-60.mkv"), size("small.mp3"));
        self.report.raw(line);
        Ok(())
    }

    fn big_label(&self) -> String {
        format!("{:.0} MiB", mib(self.big_bytes as f64))
    }

    /// Each service spawned fresh REPS times: ms to ready, then VmRSS once idle.
    async fn footprint(&mut self) -> anyhow::Result<()> {
        if !self.wants(Section::Footprint) {
            return Ok(());
        }
        eprintln!("[bench] == idle footprint and start-up to ready");
        let (vq, mq, vdb, mdb) = (self.queue("foot-video"), self.queue("foot-mp3"), self.mdb("foot_videos"), self.mdb("foot_mp3s"));
        let names = Self::names(&vdb, &mdb, &vq, &mq);
        for service in Service::ALL {
            let (mut readies, mut rsss) = (Vec::new(), Vec::new());
            for _ in 0..self.reps {
                let port = if service == Service::Auth { self.auth_port } else { testkit::free_port() };
                let proc_ = self.spawn(service, port, &names, &[], None)?;
                let url = format!("http://127.0.0.1:{port}/readyz");
                readies.push(self.wait_ready(&proc_, &url).await?);
                // Idle: ready, after its start-up work settled and one readiness probe per second.
                for _ in 0..self.p.idle_settle {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = reqwest::get(&url).await;
                }
                rsss.push(status_kib(proc_.pid(), "VmRSS")? as f64);
                proc_.stop().await;
            }
            self.report.raw(format!("startup {service} ms: {}; idle VmRSS kB: {}", join(&readies, 1), join(&rsss, 0)));
            for (r, m) in readies.iter().zip(&rsss) {
                self.report.sample(&format!("{service}.startup_ms"), *r);
                self.report.sample(&format!("{service}.idle_rss_kib"), *m);
            }
            let rss = mib(median(&rsss) * 1024.0);
            let ready = median(&readies);
            self.report.row(format!("{service}: idle RSS"), format!("{rss:.1} MiB"), None, None, Some("< 30 MiB"), rss < 30.0);
            self.report.row(
                format!("{service}: start-up to ready"),
                format!("{ready:.0} ms"),
                None,
                None,
                Some("< 1000 ms"),
                ready < 1000.0,
            );
        }
        Ok(())
    }

    /// Auth (kept up), a user and its token, the files to download.
    async fn set_up_user(&mut self) -> anyhow::Result<()> {
        let names = Self::names(&self.mdb("setup_videos"), &self.mdb("setup_mp3s"), &self.queue("setup-video"), "-");
        let auth = self.spawn(Service::Auth, self.auth_port, &names, &[], None)?;
        self.wait_ready(&auth, &format!("http://127.0.0.1:{}/readyz", self.auth_port)).await?;
        self.auth = Some(auth);
        let db = self.made.auth_db.as_ref().context("auth database")?;
        testkit::add_user(db, &self.email, &self.password, true).context("auth user add")?;
        // A token through a gateway, as a client logs in.
        let (gw, url) = self.start_gateway(&names.videos_db, &names.mp3s_db, &names.video_queue).await?;
        let resp = reqwest::Client::new().post(format!("{url}/login")).basic_auth(&self.email, Some(&self.password)).send().await?;
        ensure!(resp.status().is_success(), "login through the gateway answered {}", resp.status());
        self.token = resp.text().await?;
        gw.stop().await;
        std::fs::write(&self.auth_header, format!("Authorization: Bearer {}\n", self.token))?;

        self.dl_db = self.mdb("dl_mp3s");
        let db = self.db(&self.dl_db);
        if self.wants(Section::Download) {
            self.big_fid = tools::put(&db, &self.big, Some(&self.email), 1).await?.pop();
        }
        self.small_fid = tools::put(&db, &self.media.join("small.mp3"), Some(&self.email), 1).await?.pop();
        Ok(())
    }

    /// curl with the token header; `-w FORMAT` printed fields, split on spaces.
    async fn curl(&self, args: &[&str], write_out: &str) -> anyhow::Result<Vec<String>> {
        let header = format!("@{}", self.auth_header.display());
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "-H", &header, "-w", write_out]).args(args);
        let out = system::run("curl", &mut cmd).await?;
        Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect())
    }

    async fn upload(&mut self) -> anyhow::Result<()> {
        eprintln!("[bench] == upload: {} through POST /upload vs. straight into GridFS", self.big_label());
        let vq = self.queue("upload-video");
        let (mut gw_rates, mut base_rates, mut hwms, mut idles, mut ratios) = (vec![], vec![], vec![], vec![], vec![]);
        for r in 0..self.reps {
            // A fresh gateway per repetition (VmHWM counts from process start); the order of
            // gateway and baseline alternates so that a slow phase of the server does not
            // always hit the same side.
            let gdb = self.mdb(&format!("up_gw{r}"));
            let mp3s = self.mdb("up_mp3s");
            let (gw, url) = self.start_gateway(&gdb, &mp3s, &vq).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            idles.push(status_kib(gw.pid(), "VmRSS")? as f64);
            let mut gw = Some(gw);
            let mut sent = String::new();
            let order = if r % 2 == 1 { [true, false] } else { [false, true] };
            for gateway_side in order {
                if gateway_side {
                    let gw = gw.take().context("one gateway run per repetition")?;
                    let body = self.work.join("upload.out");
                    let file = format!("file=@{};type=video/x-matroska", self.big.display());
                    let out = self
                        .curl(
                            &["-o", &body.to_string_lossy(), "-H", "Expect:", "-F", &file, &format!("{url}/upload")],
                            "%{http_code} %{time_total} %{size_upload}",
                        )
                        .await?;
                    let [code, secs, size] = &out[..] else { bail!("curl printed {out:?}") };
                    if code != "200" {
                        let text = std::fs::read_to_string(&body).unwrap_or_default();
                        bail!("upload answered {code}: {}", text.chars().take(300).collect::<String>());
                    }
                    sent = size.clone();
                    hwms.push(status_kib(gw.pid(), "VmHWM")? as f64);
                    gw_rates.push(mib(self.big_bytes as f64) / secs.parse::<f64>()?);
                    gw.stop().await;
                    tools::drop_databases(self.mongo(), std::slice::from_ref(&gdb)).await?;
                } else {
                    let db = self.mdb(&format!("up_base{r}"));
                    let t = tools::upload(&self.db(&db), &self.big).await.context("baseline upload")?;
                    ensure!(t.bytes == self.big_bytes, "baseline stored {} bytes, expected {}", t.bytes, self.big_bytes);
                    base_rates.push(t.mib_per_sec());
                    tools::drop_databases(self.mongo(), &[db]).await?;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let (g, b) = (gw_rates[r], base_rates[r]);
            ratios.push(g / b);
            self.report.raw(format!(
                "upload rep {r}: gateway {g:.1} MiB/s (multipart body {sent} bytes), baseline {b:.1} MiB/s, ratio {:.3}, VmHWM {:.0} kB",
                g / b,
                hwms[r]
            ));
        }
        for (name, v) in [("upload.gateway_mib_s", &gw_rates), ("upload.baseline_mib_s", &base_rates), ("upload.vmhwm_kib", &hwms)] {
            v.iter().for_each(|x| self.report.sample(name, *x));
        }
        let (gw, base, ratio) = (median(&gw_rates), median(&base_rates), median(&ratios));
        let label = self.big_label();
        self.report.row(
            format!("upload {label}: gateway throughput"),
            format!("{gw:.1} MiB/s"),
            Some(format!("{base:.1} MiB/s")),
            Some(ratio),
            Some(">= 0.80x"),
            ratio >= 0.8,
        );
        let hwm = mib(median(&hwms) * 1024.0);
        self.report.row("upload: gateway peak RSS (VmHWM)", format!("{hwm:.1} MiB"), None, None, Some("< 64 MiB"), hwm < 64.0);
        self.report.info("upload: gateway idle RSS before it", format!("{:.1} MiB", mib(median(&idles) * 1024.0)));
        Ok(())
    }

    async fn download(&mut self) -> anyhow::Result<()> {
        eprintln!("[bench] == download: {} through GET /download vs. a direct driver read", self.big_label());
        let fid = self.big_fid.context("the big file is stored")?;
        let db = self.db(&self.dl_db);
        let (vdb, vq) = (self.mdb("dl_videos"), self.queue("dl-video"));
        let (mut gw_rates, mut base_rates, mut range_rates, mut hwms, mut ratios) = (vec![], vec![], vec![], vec![], vec![]);
        let mut range = (String::new(), String::new());
        for r in 0..self.reps {
            let base = tools::download(&db, fid, ReadMode::Driver).await.context("baseline download")?;
            ensure!(base.bytes == self.big_bytes, "baseline read {} bytes, expected {}", base.bytes, self.big_bytes);
            base_rates.push(base.mib_per_sec());
            range_rates.push(tools::download(&db, fid, ReadMode::Range).await.context("read_range download")?.mib_per_sec());

            let (gw, url) = self.start_gateway(&vdb, &self.dl_db, &vq).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let out = self
                .curl(&["-o", "/dev/null", &format!("{url}/download?fid={fid}")], "%{http_code} %{time_total} %{size_download}")
                .await?;
            let [code, secs, bytes] = &out[..] else { bail!("curl printed {out:?}") };
            ensure!(code == "200" && bytes.parse::<u64>()? == self.big_bytes, "download answered {code} with {bytes} bytes");
            hwms.push(status_kib(gw.pid(), "VmHWM")? as f64);
            gw_rates.push(mib(self.big_bytes as f64) / secs.parse::<f64>()?);
            ratios.push(gw_rates[r] / base_rates[r]);
            self.report.raw(format!(
                "download rep {r}: ratio {:.3}, gateway {:.1} MiB/s, driver {:.1} MiB/s, read_range {:.1} MiB/s, VmHWM {:.0} kB",
                ratios[r], gw_rates[r], base_rates[r], range_rates[r], hwms[r]
            ));
            if r == 0 {
                let out = self
                    .curl(&["-o", "/dev/null", "-r", "1000-2023", &format!("{url}/download?fid={fid}")], "%{http_code} %{size_download}")
                    .await?;
                let [code, size] = &out[..] else { bail!("curl printed {out:?}") };
                range = (code.clone(), size.clone());
                self.report.raw(format!("download Range 1000-2023: {code} {size}"));
            }
            gw.stop().await;
        }
        for (name, v) in [
            ("download.gateway_mib_s", &gw_rates),
            ("download.driver_mib_s", &base_rates),
            ("download.read_range_mib_s", &range_rates),
            ("download.vmhwm_kib", &hwms),
        ] {
            v.iter().for_each(|x| self.report.sample(name, *x));
        }
        let (gw, base, ratio, direct) = (median(&gw_rates), median(&base_rates), median(&ratios), median(&range_rates));
        let label = self.big_label();
        self.report.row(
            format!("download {label}: gateway throughput"),
            format!("{gw:.1} MiB/s"),
            Some(format!("{base:.1} MiB/s")),
            Some(ratio),
            Some(">= 0.80x"),
            ratio >= 0.8,
        );
        self.report.row(
            "download: read_range (gateway's reader), direct",
            format!("{direct:.1} MiB/s"),
            Some(format!("{base:.1} MiB/s")),
            Some(direct / base),
            None,
            true,
        );
        let hwm = mib(median(&hwms) * 1024.0);
        self.report.row("download: gateway peak RSS (VmHWM)", format!("{hwm:.1} MiB"), None, None, Some("< 64 MiB"), hwm < 64.0);
        let ok = range.0 == "206" && range.1 == "1024";
        self.report.row(
            "download: Range bytes=1000-2023",
            format!("{}, {} bytes", range.0, range.1),
            None,
            None,
            Some("206, 1024 bytes"),
            ok,
        );
        Ok(())
    }

    /// CPU ticks of the processes a request goes through.
    fn cpu_split(&self, gateway: Option<&Spawned>) -> Vec<(&'static str, u64)> {
        let mut split = Vec::new();
        if let Some(m) = &self.mongo_server {
            split.push(("secantusd", system::cpu_ticks(m.pid())));
        }
        if let Some(g) = gateway {
            split.push(("gateway", system::cpu_ticks(g.pid())));
        }
        if let Some(a) = &self.auth {
            split.push(("auth", system::cpu_ticks(a.pid())));
        }
        split
    }

    fn cpu_per_request(&self, before: &[(&str, u64)], after: &[(&str, u64)], requests: f64) -> String {
        after
            .iter()
            .zip(before)
            .map(|((name, b), (_, a))| format!("{name} {:.3} ms", 1000.0 * b.saturating_sub(*a) as f64 / self.clk_tck / requests.max(1.0)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One wrk run: requests/s, p99 ms, non-2xx count.
    async fn wrk(&self, url: &str, script: Option<&Path>) -> anyhow::Result<Wrk> {
        let mut cmd = tokio::process::Command::new("wrk");
        cmd.args(["-t2", &format!("-c{WRK_CONNS}"), &format!("-d{}s", self.p.wrk_secs), "--latency"]);
        if let Some(s) = script {
            cmd.arg("-s").arg(s);
        }
        let out = system::run("wrk", cmd.arg(url)).await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(self.logs.join("wrk.log"))?;
        std::io::Write::write_all(&mut log, text.as_bytes())?;
        Wrk::parse(&text).with_context(|| format!("unreadable wrk output for {url}"))
    }

    /// Medians over REPS wrk runs, with CPU per request in the raw lines.
    async fn rate_of(&mut self, label: &str, url: &str, script: Option<&Path>, gateway: Option<&Spawned>) -> anyhow::Result<Wrk> {
        let c0 = self.cpu_split(gateway);
        let (mut rates, mut p99s, mut bad, mut requests) = (vec![], vec![], 0, 0.0);
        for _ in 0..self.reps {
            let w = self.wrk(url, script).await?;
            rates.push(w.rate);
            p99s.push(w.p99_ms);
            bad += w.non_2xx;
            requests += w.rate * f64::from(self.p.wrk_secs);
        }
        let c1 = self.cpu_split(gateway);
        let cpu = self.cpu_per_request(&c0, &c1, requests);
        self.report.raw(format!(
            "wrk {label}: req/s {}; p99 ms {}; non-2xx {bad}; CPU per request: {cpu}",
            join(&rates, 2),
            join(&p99s, 2)
        ));
        rates.iter().for_each(|x| self.report.sample(&format!("wrk {label} req/s"), *x));
        Ok(Wrk { rate: median(&rates).round(), p99_ms: median(&p99s), non_2xx: bad })
    }

    async fn hot(&mut self) -> anyhow::Result<()> {
        eprintln!("[bench] == request rates: {WRK_CONNS} connections, {}s x {}", self.p.wrk_secs, self.reps);
        let (bearer, validate) = self.wrk_scripts()?;
        let (vdb, vq) = (self.mdb("hot_videos"), self.queue("hot-video"));
        let (gw, gw_url) = self.start_gateway(&vdb, &self.dl_db, &vq).await?;
        let small = self.small_fid.context("small.mp3 is stored")?;
        let small_url = format!("{gw_url}/download?fid={small}");
        let resp = reqwest::Client::new().get(&small_url).bearer_auth(&self.token).send().await?;
        ensure!(resp.status().is_success(), "small download answered {}", resp.status());

        let auth_url = format!("http://127.0.0.1:{}", self.auth_port);
        let floor = self.rate_of("auth GET /healthz", &format!("{auth_url}/healthz"), None, Some(&gw)).await?;
        let v = self.rate_of("auth POST /validate", &format!("{auth_url}/validate"), Some(validate.as_path()), Some(&gw)).await?;
        self.report.row(
            "auth POST /validate",
            format!("{:.0} req/s (p99 {:.2} ms)", v.rate, v.p99_ms),
            Some(format!("{:.0} req/s /healthz", floor.rate)),
            Some(v.rate / floor.rate),
            Some(">= 15000 req/s"),
            v.rate >= 15000.0 && v.non_2xx == 0,
        );
        // The authenticated request path: the token validated through auth over kept-alive
        // connections, then the handler (no fid: 400, so no database work).
        let a = self
            .rate_of("gateway GET /download (no fid: auth hop only, 400)", &format!("{gw_url}/download"), Some(bearer.as_path()), Some(&gw))
            .await?;
        self.report.row(
            "gateway authenticated path (auth hop, 400)",
            format!("{:.0} req/s (p99 {:.2} ms)", a.rate, a.p99_ms),
            None,
            None,
            Some(">= 5000 req/s"),
            a.rate >= 5000.0,
        );
        if self.opts.perf {
            self.profile("auth-hop", &gw, &format!("{gw_url}/download"), &bearer).await?;
        }

        let c0 = self.cpu_split(Some(&gw));
        let f = tools::find_rate(&self.db(&self.dl_db), small, &self.email, WRK_CONNS, f64::from(self.p.wrk_secs))
            .await
            .context("find-rate")?;
        let c1 = self.cpu_split(Some(&gw));
        let cpu = self.cpu_per_request(&c0, &c1, f.per_sec * f64::from(self.p.wrk_secs));
        self.report.raw(format!(
            "find-rate (MongoDB floor of a small download): {:.1} req/s, p50 {:.3} ms, p99 {:.3} ms; CPU per request: {cpu}",
            f.per_sec, f.p50_ms, f.p99_ms
        ));
        let d = self.rate_of("gateway GET /download small mp3", &small_url, Some(bearer.as_path()), Some(&gw)).await?;
        if self.opts.perf {
            self.profile("download", &gw, &small_url, &bearer).await?;
        }
        // A whole small download adds two MongoDB queries per request: its rate is the
        // database's, so the target is on the gateway's share (the floor measured alongside).
        self.report.row(
            "gateway GET /download (small owned mp3)",
            format!("{:.0} req/s (p99 {:.2} ms)", d.rate, d.p99_ms),
            Some(format!("{:.0} req/s MongoDB", f.per_sec)),
            Some(d.rate / f.per_sec),
            Some(">= 0.80x"),
            d.rate >= 0.8 * f.per_sec && d.non_2xx == 0,
        );
        gw.stop().await;
        Ok(())
    }

    /// wrk scripts sending the token: as a bearer header (the gateway), and as `POST /validate`.
    fn wrk_scripts(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let bearer = self.work.join("bearer.lua");
        std::fs::write(&bearer, format!("wrk.headers[\"Authorization\"] = \"Bearer {}\"\n", self.token))?;
        let validate = self.work.join("validate.lua");
        std::fs::write(&validate, format!("wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"Bearer {}\"\n", self.token))?;
        Ok((bearer, validate))
    }

    /// The cost of the request metrics and trace context (issue 12): auth and the gateway as
    /// built against the same sources built without them (`--uninstrumented`), both pairs
    /// running side by side. On each hot path, wrk runs alternate between the two (A B, B A,
    /// ...) so that each after/before ratio compares runs seconds apart: this machine's speed
    /// drifts by 20 % and more within a minute, more than the cost being measured. A path's
    /// figure is the median of `--rounds` such pairs.
    async fn instrumentation(&mut self) -> anyhow::Result<()> {
        struct Build {
            label: &'static str,
            auth: Spawned,
            gateway: Spawned,
            auth_url: String,
            gateway_url: String,
        }
        let dir = self.opts.uninstrumented.clone().context("the instrumentation section needs --uninstrumented DIR")?;
        let (vdb, vq) = (self.mdb("cost_videos"), self.queue("cost-video"));
        let names = Self::names(&vdb, &self.dl_db, &vq, "-");
        let mut builds = Vec::new();
        for (label, auth_bin, gateway_bin) in [
            ("uninstrumented", dir.join("auth"), dir.join("gateway")),
            ("instrumented", self.bin_of(Service::Auth), self.bin_of(Service::Gateway)),
        ] {
            ensure!(auth_bin.is_file() && gateway_bin.is_file(), "{} or {} is missing", auth_bin.display(), gateway_bin.display());
            let (auth_port, gateway_port) = (testkit::free_port(), testkit::free_port());
            let start = |service: Service, port: u16, bin: &Path| -> anyhow::Result<Spawned> {
                let log = self.logs.join(format!("{service}-{label}.log"));
                Spawned::start(
                    &format!("{service} ({label})"),
                    self.service_env(service, port, auth_port, &names, &[])?.command(bin),
                    &log,
                    true,
                )
            };
            let (auth_url, gateway_url) = (format!("http://127.0.0.1:{auth_port}"), format!("http://127.0.0.1:{gateway_port}"));
            let auth = start(Service::Auth, auth_port, &auth_bin)?;
            self.wait_ready(&auth, &format!("{auth_url}/readyz")).await?;
            let gateway = start(Service::Gateway, gateway_port, &gateway_bin)?;
            self.wait_ready(&gateway, &format!("{gateway_url}/readyz")).await?;
            builds.push(Build { label, auth, gateway, auth_url, gateway_url });
        }
        let pairs = self.opts.rounds as usize;
        eprintln!("[bench] == instrumentation cost: {pairs} pairs of {}s wrk runs per path, {WRK_CONNS} connections", self.p.wrk_secs);
        let (bearer, validate) = self.wrk_scripts()?;
        // (figure, the URL and wrk script of a build, whether the issue's target applies: the
        // floor is shown for scale)
        type Target = fn(&Build) -> String;
        let paths: [(&str, Target, Option<&Path>, bool); 3] = [
            ("auth GET /healthz (HTTP floor)", |b| format!("{}/healthz", b.auth_url), None, false),
            ("auth POST /validate", |b| format!("{}/validate", b.auth_url), Some(validate.as_path()), true),
            ("gateway authenticated path (auth hop, 400)", |b| format!("{}/download", b.gateway_url), Some(bearer.as_path()), true),
        ];
        for (figure, url, script, targeted) in paths {
            let (mut rates, mut ratios) = ([Vec::new(), Vec::new()], Vec::new());
            // CPU ticks of (gateway, auth) and requests, per build
            let mut cpu = [(0u64, 0u64, 0.0f64); 2];
            for pair in 0..pairs {
                for b in if pair % 2 == 0 { [0, 1] } else { [1, 0] } {
                    let build = &builds[b];
                    let ticks = || (system::cpu_ticks(build.gateway.pid()), system::cpu_ticks(build.auth.pid()));
                    let t0 = ticks();
                    let w = self.wrk(&url(build), script).await?;
                    let t1 = ticks();
                    rates[b].push(w.rate);
                    cpu[b].0 += t1.0.saturating_sub(t0.0);
                    cpu[b].1 += t1.1.saturating_sub(t0.1);
                    cpu[b].2 += w.rate * f64::from(self.p.wrk_secs);
                }
                ratios.push(rates[1][pair] / rates[0][pair]);
            }
            let ratio = median(&ratios);
            let us = |ticks: u64, requests: f64| 1e6 * ticks as f64 / self.clk_tck / requests.max(1.0);
            let cpu_line = |b: usize| format!("gateway {:.1} µs, auth {:.1} µs", us(cpu[b].0, cpu[b].2), us(cpu[b].1, cpu[b].2));
            for (b, build) in builds.iter().enumerate() {
                self.report.raw(format!("{figure}, {}: req/s {}; CPU per request {}", build.label, join(&rates[b], 0), cpu_line(b)));
                rates[b].iter().for_each(|r| self.report.sample(&format!("{} {figure} req/s", build.label), *r));
            }
            self.report.raw(format!("{figure}: after/before per pair {} (median {ratio:.3})", join(&ratios, 3)));
            let value = format!("{:.0} req/s", median(&rates[1]));
            let baseline = Some(format!("{:.0} req/s uninstr.", median(&rates[0])));
            self.report.row(
                format!("instrumentation: {figure}"),
                value,
                baseline,
                Some(ratio),
                targeted.then_some(">= 0.95x"),
                ratio >= 0.95,
            );
            if self.opts.perf {
                for build in &builds {
                    let targets = [("gateway", build.gateway.pid()), ("auth", build.auth.pid())];
                    let what =
                        format!("{}-{}", build.label, figure.split_whitespace().take(3).collect::<Vec<_>>().join("-").replace('/', ""));
                    self.profile_of(&what, &targets, &url(build), script).await?;
                }
            }
        }
        for build in builds {
            build.gateway.stop().await;
            build.auth.stop().await;
        }
        Ok(())
    }

    /// Flat `perf` profiles of the gateway, auth and SecantusDB during one more wrk run
    /// (logs/perf-<what>-<process>.txt).
    async fn profile(&self, what: &str, gw: &Spawned, url: &str, script: &Path) -> anyhow::Result<()> {
        let mut targets = vec![("gateway", gw.pid())];
        if let Some(a) = &self.auth {
            targets.push(("auth", a.pid()));
        }
        if let Some(m) = &self.mongo_server {
            targets.push(("mongo", m.pid()));
        }
        self.profile_of(what, &targets, url, Some(script)).await
    }

    /// Flat `perf` profiles of `targets` (name, pid) during one more wrk run
    /// (logs/perf-<what>-<name>.txt).
    async fn profile_of(&self, what: &str, targets: &[(&str, u32)], url: &str, script: Option<&Path>) -> anyhow::Result<()> {
        let mut recorders = Vec::new();
        for (name, pid) in targets {
            let data = self.work.join(format!("perf-{what}-{name}.data"));
            let child = tokio::process::Command::new("perf")
                .args(["record", "-F", "1999", "-p", &pid.to_string(), "-o"])
                .arg(&data)
                .args(["--", "sleep", &self.p.wrk_secs.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let Ok(child) = child else {
                eprintln!("[bench] perf is not available; no profiles");
                return Ok(());
            };
            recorders.push((name, data, child));
        }
        self.wrk(url, script).await?;
        for (name, data, mut child) in recorders {
            let _ = child.wait().await;
            let out = tokio::process::Command::new("perf")
                .args(["report", "--stdio", "--no-children", "--sort", "dso,symbol", "-i"])
                .arg(&data)
                .output()
                .await?;
            let text: Vec<&str> =
                std::str::from_utf8(&out.stdout).unwrap_or("").lines().filter(|l| !l.starts_with('#') && !l.is_empty()).take(150).collect();
            std::fs::write(self.logs.join(format!("perf-{what}-{name}.txt")), text.join("\n"))?;
        }
        eprintln!("[bench] perf profiles in {}", self.logs.display());
        Ok(())
    }

    /// Seconds of the converter's exact ffmpeg command line on `file` (re-encode or copy).
    async fn ffmpeg_secs(&self, file: &Path, copy: bool) -> anyhow::Result<f64> {
        let codec: &[&str] = if copy { &["-c:a", "copy"] } else { &["-c:a", "libmp3lame", "-q:a", "4"] };
        let input = file.to_string_lossy();
        let out = self.work.join("bare.mp3");
        let mut args = vec!["-i", &input, "-map", "0:a:0", "-vn", "-sn", "-dn"];
        args.extend_from_slice(codec);
        let out = out.to_string_lossy();
        args.extend_from_slice(&["-f", "mp3", &out]);
        let t = Instant::now();
        system::ffmpeg(&args).await?;
        Ok(t.elapsed().as_secs_f64())
    }

    async fn bare_secs(&self, file: &Path, copy: bool) -> anyhow::Result<Vec<f64>> {
        let mut v = Vec::with_capacity(self.reps);
        for _ in 0..self.reps {
            v.push(self.ffmpeg_secs(file, copy).await?);
        }
        Ok(v)
    }

    /// REPS fresh copies of `file` (so the converter's "mp3 already made" shortcut never
    /// applies), converted one after the other: seconds per job, and the first copy's id.
    async fn job_secs(&self, videos_db: &str, video_queue: &str, mp3_queue: &str, file: &Path) -> anyhow::Result<(Vec<f64>, ObjectId)> {
        let ids = tools::put(&self.db(videos_db), file, None, self.reps).await?;
        let queues = JobQueues { amqp_url: &self.servers.amqp_url, video_queue, mp3_queue };
        let jobs = tools::jobs(&queues, &self.email, &ids, false, Duration::from_secs(1800))
            .await
            .with_context(|| format!("conversion jobs (logs in {})", self.logs.display()))?;
        Ok((jobs.each, ids[0]))
    }

    async fn conversion(&mut self) -> anyhow::Result<()> {
        eprintln!("[bench] == conversion: converter per job vs. bare ffmpeg");
        let (vq, mq, vdb, mdb) = (self.queue("conv-video"), self.queue("conv-mp3"), self.mdb("conv_videos"), self.mdb("conv_mp3s"));
        let port = testkit::free_port();
        let tmp = self.work.to_string_lossy().into_owned();
        let converter = self.spawn(Service::Converter, port, &Self::names(&vdb, &mdb, &vq, &mq), &[("TMPDIR", tmp)], None)?;
        self.wait_ready(&converter, &format!("http://127.0.0.1:{port}/readyz")).await?;
        let mut rows = Vec::new();
        for s in self.p.conv_seconds.clone() {
            let video = self.media.join(format!("video-{s}.mkv"));
            let bare = self.bare_secs(&video, false).await?;
            let (jobs, first) = self.job_secs(&vdb, &vq, &mq, &video).await?;
            self.report.raw(format!("conversion {s}s: ffmpeg {} s; converter jobs {} s", join(&bare, 3), join(&jobs, 3)));
            let (b, j) = (median(&bare), median(&jobs));
            self.job_median.insert(s, j);
            self.bare_median.insert(s, b);
            rows.push((
                format!("convert {s} s video: converter per job"),
                format!("{j:.3} s"),
                Some(format!("{b:.3} s ffmpeg")),
                Some(j / b),
                Some("<= 1.10x"),
                j / b <= 1.10,
            ));
            // Where a job's time goes: its steps one by one, outside the converter (one run each).
            let t_read = tools::download(&self.db(&vdb), first, ReadMode::Range).await?.secs;
            let t = Instant::now();
            system::run(
                "ffprobe",
                tokio::process::Command::new("ffprobe")
                    .args(["-v", "error", "-print_format", "json", "-show_streams", "-show_format", "--"])
                    .arg(&video),
            )
            .await?;
            let t_probe = t.elapsed().as_secs_f64();
            let scratch = self.mdb("conv_scratch");
            let t_store = tools::upload(&self.db(&scratch), &self.work.join("bare.mp3")).await?.secs;
            let sum = t_read + t_probe + b + t_store;
            self.report.raw(format!(
                "conversion {s}s steps: read video from GridFS {t_read:.3} s, ffprobe {t_probe:.3} s, ffmpeg {b:.3} s, store mp3 {t_store:.3} s; sum {sum:.3} s vs job {j:.3} s"
            ));
            rows.push(("  steps: read+probe+ffmpeg+store".to_owned(), format!("{sum:.2} s"), None, None, None, true));
        }
        let copy_s = self.p.copy_seconds;
        if !self.job_median.contains_key(&copy_s) {
            let (jobs, _) = self.job_secs(&vdb, &vq, &mq, &self.media.join(format!("video-{copy_s}.mkv"))).await?;
            self.job_median.insert(copy_s, median(&jobs));
        }
        let copy_file = self.media.join(format!("mp3audio-{copy_s}.mkv"));
        let bare = self.bare_secs(&copy_file, true).await?;
        let (jobs, _) = self.job_secs(&vdb, &vq, &mq, &copy_file).await?;
        self.report.raw(format!("stream copy {copy_s}s: ffmpeg -c:a copy {} s; converter jobs {} s", join(&bare, 3), join(&jobs, 3)));
        let (j, reencode) = (median(&jobs), self.job_median[&copy_s]);
        rows.push((
            format!("mp3-audio {copy_s} s video: job (stream copy)"),
            format!("{j:.3} s"),
            Some(format!("{reencode:.3} s re-encode")),
            Some(j / reencode),
            Some("<= 0.50x"),
            j / reencode <= 0.5,
        ));
        rows.push(("mp3-audio: bare ffmpeg -c:a copy".to_owned(), format!("{:.3} s", median(&bare)), None, None, None, true));
        for (f, v, b, r, t, pass) in rows {
            self.report.row(f, v, b, r, t, pass);
        }
        converter.stop().await;
        Ok(())
    }

    /// One throughput round: seconds to the 20th mp3, the converters' CPU (with ffmpeg) in % of
    /// all cores, the machine's busy %, and the jobs each converter did.
    async fn throughput_round(&mut self, cfg: Throughput, rep: u32, videos_db: &str, ids: &[ObjectId]) -> anyhow::Result<(f64, f64, f64)> {
        let name = cfg.name();
        let (vq, mq, mdb) = (
            self.queue(&format!("tp-{name}-{rep}-video")),
            self.queue(&format!("tp-{name}-{rep}-mp3")),
            self.mdb(&format!("tp_{name}_{rep}_mp3s")),
        );
        let names = Self::names(videos_db, &mdb, &vq, &mq);
        let (count, concurrency) = match cfg {
            Throughput::One => (1, None),
            Throughput::TwoHalf => (2, Some((self.cores / 2).max(1))),
            Throughput::TwoFull => (2, None),
        };
        let mut procs = Vec::new();
        for i in 0..count {
            let port = testkit::free_port();
            let mut extra = vec![("TMPDIR", self.work.to_string_lossy().into_owned())];
            if let Some(c) = concurrency {
                extra.push(("CONVERTER_CONCURRENCY", c.to_string()));
            }
            let log = self.logs.join(format!("converter-tp-{i}.log"));
            procs.push((self.spawn(Service::Converter, port, &names, &extra, Some(&log))?, port));
        }
        for (p, port) in &procs {
            self.wait_ready(p, &format!("http://127.0.0.1:{port}/readyz")).await?;
        }
        let cpu = |procs: &[(Spawned, u16)]| procs.iter().map(|(p, _)| system::cpu_ticks(p.pid())).sum::<u64>();
        let (c0, s0) = (cpu(&procs), system::machine_ticks());
        let queues = JobQueues { amqp_url: &self.servers.amqp_url, video_queue: &vq, mp3_queue: &mq };
        let jobs = tools::jobs(&queues, &self.email, ids, true, Duration::from_secs(1800)).await.context("throughput jobs")?;
        let (c1, s1) = (cpu(&procs), system::machine_ticks());
        let split: Vec<String> = procs
            .iter()
            .map(|(p, _)| std::fs::read_to_string(&p.log).unwrap_or_default().matches("mp3 stored").count().to_string())
            .collect();
        for (p, _) in procs {
            p.stop().await;
        }
        let secs = jobs.total;
        let util = 100.0 * (c1 - c0) as f64 / self.clk_tck / (secs * self.cores as f64);
        let busy = 100.0 * (s1.0 - s0.0) as f64 / (s1.1 - s0.1).max(1) as f64;
        self.report.raw(format!(
            "throughput {name} rep {rep}: {secs:.6}s, converters' CPU {util:.0}% of {} cores, machine busy {busy:.0}%, jobs per process: {}",
            self.cores,
            split.join(" ")
        ));
        Ok((secs, util.round(), busy.round()))
    }

    async fn throughput(&mut self) -> anyhow::Result<()> {
        eprintln!("[bench] == throughput: {TP_JOBS} videos queued at once");
        let vdb = self.mdb("tp_videos");
        let ids = tools::put(&self.db(&vdb), &self.media.join("video-60.mkv"), None, TP_JOBS).await?;
        let mut results: HashMap<Throughput, (f64, f64, f64)> = HashMap::new();
        for cfg in self.p.tp_configs.clone() {
            let (mut times, mut cpus, mut busys) = (vec![], vec![], vec![]);
            for rep in 0..self.p.tp_reps {
                let (t, c, b) = self.throughput_round(cfg, rep, &vdb, &ids).await?;
                times.push(t);
                cpus.push(c);
                busys.push(b);
                self.report.sample(&format!("throughput.{}_secs", cfg.name()), t);
            }
            results.insert(cfg, (median(&times), median(&cpus), median(&busys)));
        }
        let bare60 = match self.bare_median.get(&60) {
            Some(b) => *b,
            None => median(&self.bare_secs(&self.media.join("video-60.mkv"), false).await?),
        };
        let cores = self.cores;
        let ideal = TP_JOBS as f64 * bare60 / cores as f64;
        let one = results[&Throughput::One];
        self.report.row(
            format!("{TP_JOBS} x 60 s: 1 converter (concurrency {cores})"),
            format!("{:.1} s, CPU {:.0}%", one.0, one.1),
            Some(format!("{ideal:.1} s ffmpeg/cores")),
            Some(one.0 / ideal),
            None,
            true,
        );
        self.report.info("  machine busy during it (all processes)", format!("{:.0}%", one.2));
        for (cfg, conc) in [(Throughput::TwoHalf, (cores / 2).max(1)), (Throughput::TwoFull, cores)] {
            if let Some(two) = results.get(&cfg) {
                self.report.row(
                    format!("{TP_JOBS} x 60 s: 2 converters x concurrency {conc}"),
                    format!("{:.1} s, CPU {:.0}%", two.0, two.1),
                    Some(format!("{:.1} s 1 conv.", one.0)),
                    Some(two.0 / one.0),
                    Some("<= 1.05x"),
                    two.0 <= 1.05 * one.0,
                );
            }
        }
        Ok(())
    }

    /// Stops what the run started and removes what it made (best effort, each step logged).
    async fn clean_up(&mut self, succeeded: bool) {
        if let Some(auth) = self.auth.take() {
            auth.stop().await;
        }
        if !self.made.queues.is_empty() {
            if let Err(e) = tools::delete_queues(&self.servers.amqp_url, &self.made.queues).await {
                eprintln!("[bench] could not delete the queues of this run: {e:#}");
            }
        }
        if let Some(db) = self.made.auth_db.take() {
            if let Err(e) = db.drop_all().await {
                eprintln!("[bench] could not drop MySQL database {}: {e:#}", db.database);
            }
        }
        match (self.mongo_server.take(), &self.mongo) {
            // A throwaway server goes with its data directory.
            (Some(server), _) => server.stop().await,
            (None, Some(client)) => {
                if let Err(e) = tools::drop_databases(client, &self.made.mongo_dbs).await {
                    eprintln!("[bench] could not drop the MongoDB databases of this run: {e:#}");
                }
            }
            (None, None) => {}
        }
        let _ = std::fs::remove_dir_all(self.work.join("secantus-data"));
        let _ = std::fs::remove_dir_all(&self.media);
        if self.opts.keep || !succeeded {
            eprintln!("[bench] work directory kept: {} (logs in {})", self.work.display(), self.logs.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wrk {
    pub rate: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

impl Wrk {
    /// From wrk's `--latency` report.
    pub fn parse(text: &str) -> Option<Self> {
        let mut rate = None;
        let (mut p99, mut bad) = (0.0, 0);
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("Requests/sec:") {
                rate = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
                bad = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("99%") {
                let v = v.trim();
                let split = v.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(v.len());
                let (num, unit) = v.split_at(split);
                let num: f64 = num.parse().ok()?;
                p99 = match unit {
                    "us" => num / 1000.0,
                    "s" => num * 1000.0,
                    "m" => num * 60_000.0,
                    _ => num,
                };
            }
        }
        Some(Self { rate: rate?, p99_ms: p99, non_2xx: bad })
    }
}

/// `target/release/<name>` of this workspace (the benchmark measures release builds).
pub fn release_bin(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"), PathBuf::from);
    target.join("release").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline of the instrumentation section must still apply to the sources it patches.
    #[test]
    fn the_uninstrumented_patch_applies() {
        let out = std::process::Command::new("git")
            .current_dir(testkit::repo_root())
            .args(["apply", "--check", "crates/xtask/uninstrumented.patch"])
            .output()
            .expect("git runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn wrk_reports_are_read() {
        let text = "Running 3s test @ http://127.0.0.1:1/healthz
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   451.12us  300.00us   9.00ms   90.00%
  Latency Distribution
     50%  400.00us
     75%  500.00us
     90%  700.00us
     99%    2.64ms
  129231 requests in 3.00s, 10.00MB read
  Non-2xx or 3xx responses: 129231
Requests/sec:  43076.99
Transfer/sec:      3.33MB
";
        assert_eq!(Wrk::parse(text), Some(Wrk { rate: 43076.99, p99_ms: 2.64, non_2xx: 129231 }));
        let us = text.replace("2.64ms", "850.00us").replace("  Non-2xx or 3xx responses: 129231\n", "");
        assert_eq!(Wrk::parse(&us), Some(Wrk { rate: 43076.99, p99_ms: 0.85, non_2xx: 0 }));
        assert_eq!(Wrk::parse("wrk: connection refused"), None);
    }
}
