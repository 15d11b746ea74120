//! The benchmark of mp3converter, in the style of rust-analyzer's xtask: orchestration and
//! arithmetic in Rust, typed results written as JSON, the tables of `docs/performance.md`
//! rendered from that JSON. `scripts/bench.sh` installs what is missing and runs `xtask bench`.
//!
//! ```text
//! xtask bench [quick|full]   the benchmark (table on stdout, target/bench/results.json)
//! xtask pipeline             upload-to-email latency and the gateway's memory on a large upload
//! xtask render               docs/performance.md's generated section from results.json
//! xtask concurrent-uploads   the gateway's memory under many concurrent uploads (issue 13)
//! xtask pods up|down|test    the manifests in podman against the host's servers, the tutorial flow
//! xtask images               the four images from docker/Dockerfile
//! xtask manifest-env SERVICE the environment (or probes) the manifests give SERVICE
//! xtask rabbitmq-definitions the broker's users and permissions (JSON)
//! xtask dev-up|dev-down      the suite on this machine (scripts/dev-up.sh, scripts/dev-down.sh)
//! xtask test [ARGS]          every test (scripts/test.sh installs and builds, then runs it)
//! xtask alert-rules DIR      the alert rules as a Prometheus rules file, checked
//! xtask put|upload|download|find-rate|jobs|wait-ready|drop|amqp-clean
//!                            single measurements and clean-up, for ad-hoc runs
//! ```

mod alerts;

mod ci;
mod deploy;
mod dev;
mod manifest_env;
mod minikube;
mod mysql;
mod pipeline;
mod pods;
mod procs;
mod rabbitmq;
mod report;
mod run;
mod system;
mod tools;
mod uploads;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use mongodb::bson::oid::ObjectId;

use crate::report::Report;

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "The tasks of mp3converter: the benchmark against same-run baselines, service environments, local orchestration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the services against same-run baselines and print a table of figure, value,
    /// baseline, ratio, target and PASS/FAIL. Exit status: 0 when every figure passes, 3 when
    /// one misses its target, 1 when the run itself failed (its work directory is kept then).
    Bench(run::Options),
    /// Upload-to-email time of a 60 s video and the gateway's peak RSS on a large upload.
    Pipeline(pipeline::Options),
    /// Render a results file as the markdown section of docs/performance.md.
    Render {
        #[arg(long, default_value = "target/bench/results.json")]
        input: PathBuf,
        /// Replace the generated section of this document (between the bench:begin and
        /// bench:end markers) instead of printing it.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Store a local file COUNT times; prints one file id per line.
    Put {
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        username: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Stream a file into GridFS as the gateway does; prints "<seconds> <bytes>".
    Upload {
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        file: PathBuf,
    },
    /// Read a whole GridFS file; prints "<seconds> <bytes>".
    Download {
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        id: ObjectId,
        #[arg(long, value_enum, default_value = "driver")]
        mode: tools::ReadMode,
    },
    /// The MongoDB floor of a small download; prints "<req/s> <p50 ms> <p99 ms>".
    FindRate {
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        id: ObjectId,
        #[arg(long)]
        username: String,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Publish video messages and time each job to its mp3 message; prints per-job seconds,
    /// then "total <seconds>".
    Jobs {
        #[arg(long)]
        amqp: String,
        #[arg(long)]
        video_queue: String,
        #[arg(long)]
        mp3_queue: String,
        #[arg(long)]
        username: String,
        #[arg(long, value_delimiter = ',')]
        ids: Vec<ObjectId>,
        #[arg(long)]
        burst: bool,
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Poll URL every 5 ms until it answers 200; prints the ms it took.
    WaitReady {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// The gateway's memory under many concurrent uploads of one small video, each accepted
    /// upload converted exactly once; prints one JSON line.
    ConcurrentUploads(uploads::Options),
    /// Drop MongoDB databases.
    Drop {
        #[arg(long)]
        uri: String,
        #[arg(long, value_delimiter = ',')]
        db: Vec<String>,
    },
    /// Run the Kubernetes manifests in containers on this machine (podman kube play): up, down,
    /// and the containerised test phase.
    Pods {
        #[command(subcommand)]
        task: pods::Task,
    },
    /// Build the four images from docker/Dockerfile (mp3converter/<service>:dev) and print their
    /// sizes.
    Images(pods::images::Options),
    /// Print the environment (or the probes) the Kubernetes manifests give a service.
    ManifestEnv(manifest_env::Options),
    /// Print RabbitMQ definitions (JSON): an administrator and one user per service, each allowed
    /// only its own queues, with salted SHA-256 password hashes.
    RabbitmqDefinitions(rabbitmq::Options),
    /// Delete queues with their .retry and .dead companions.
    AmqpClean {
        #[arg(long)]
        amqp: String,
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
    },
    /// Start the suite locally (scripts/dev-up.sh runs deps.sh and builds first): init.sql and
    /// dev-seed.sql, secrets in .dev/, the four services (restarted when running), their
    /// readiness, an optional Prometheus, a test video, then how to try it.
    DevUp(dev::UpOptions),
    /// Stop what dev-up and scripts/deps.sh started, and only that (by the pids in .dev/pids/).
    DevDown(dev::DownOptions),
    /// Every test after scripts/test.sh has installed, started and built what they need: the
    /// deployment checks, cargo-deny, the tests (fault_* one at a time), the containerised phase.
    Test(ci::Options),
    /// Write the PrometheusRule's groups as a Prometheus rules file DIR/alerts.rules.yaml (with
    /// its promtool unit tests beside it) and check that every alert and dashboard panel reads
    /// a metric something exports and every alert has a unit test. Exit status 1 on a problem.
    AlertRules { dir: PathBuf },
    /// Static checks of docker/, manifests/ and scripts/ (no cluster, no Docker engine): one
    /// PASS/FAIL line per check, exit status 1 if any failed. scripts/check-deploy.sh installs
    /// the tools and runs this.
    CheckDeploy(deploy::Options),
    /// Deploy to a local minikube, or remove the deployment (docs/deploy.md).
    Minikube {
        #[command(subcommand)]
        command: minikube::Minikube,
    },
}

/// A MongoDB database.
#[derive(clap::Args)]
struct Db {
    #[arg(long)]
    uri: String,
    #[arg(long)]
    db: String,
}

impl Db {
    async fn open(&self) -> anyhow::Result<mongodb::Database> {
        Ok(tools::mongo(&self.uri).await?.database(&self.db))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match dispatch(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Bench(opts) => {
            let (json, mode) = (opts.json.clone(), opts.mode);
            let table = opts.table.clone().unwrap_or_else(|| dev_dir().join(format!("bench-{}.txt", mode.name())));
            let report = run::run(opts).await?;
            let text = report.table();
            print!("{text}");
            write(&table, &text)?;
            write(&json, &serde_json::to_string_pretty(&report)?)?;
            eprintln!("[bench] table in {}, results in {}", table.display(), json.display());
            Ok(if report.failed() { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        Command::Pipeline(opts) => {
            let json = opts.json.clone();
            let report = pipeline::run(opts).await?;
            write(&json, &serde_json::to_string_pretty(&report)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { input, write: target } => {
            let text = std::fs::read_to_string(&input).with_context(|| format!("read {} (run `xtask bench` first)", input.display()))?;
            let report: Report = serde_json::from_str(&text).with_context(|| format!("{} is not a results file", input.display()))?;
            let section = report.markdown();
            match target {
                None => print!("{section}"),
                Some(doc) => {
                    let old = std::fs::read_to_string(&doc).with_context(|| format!("read {}", doc.display()))?;
                    write(&doc, &report::splice(&old, &section)?)?;
                    eprintln!("[bench] {} updated from {}", doc.display(), input.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Put { db, file, username, count } => {
            for id in tools::put(&db.open().await?, &file, username.as_deref(), count).await? {
                println!("{id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Upload { db, file } => {
            let t = tools::upload(&db.open().await?, &file).await?;
            println!("{:.6} {}", t.secs, t.bytes);
            Ok(ExitCode::SUCCESS)
        }
        Command::Download { db, id, mode } => {
            let t = tools::download(&db.open().await?, id, mode).await?;
            println!("{:.6} {}", t.secs, t.bytes);
            Ok(ExitCode::SUCCESS)
        }
        Command::FindRate { db, id, username, concurrency, secs } => {
            let r = tools::find_rate(&db.open().await?, id, &username, concurrency, secs).await?;
            println!("{:.1} {:.3} {:.3}", r.per_sec, r.p50_ms, r.p99_ms);
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs { amqp, video_queue, mp3_queue, username, ids, burst, timeout } => {
            let queues = tools::JobQueues { amqp_url: &amqp, video_queue: &video_queue, mp3_queue: &mp3_queue };
            let jobs = tools::jobs(&queues, &username, &ids, burst, Duration::from_secs(timeout)).await?;
            for t in &jobs.each {
                println!("{t:.6}");
            }
            println!("total {:.6}", jobs.total);
            Ok(ExitCode::SUCCESS)
        }
        Command::WaitReady { url, timeout } => {
            println!("{:.1}", tools::wait_ready(&url, Instant::now(), Duration::from_secs(timeout)).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::ConcurrentUploads(opts) => {
            println!("{}", uploads::run(opts).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Drop { uri, db } => {
            tools::drop_databases(&tools::mongo(&uri).await?, &db).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pods { task } => pods::run(task).await,
        Command::Images(opts) => {
            pods::images::build(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ManifestEnv(opts) => {
            print!("{}", manifest_env::render(&opts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::RabbitmqDefinitions(opts) => {
            print!("{}", rabbitmq::render(&opts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::AmqpClean { amqp, queues } => {
            tools::delete_queues(&amqp, &queues).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DevUp(opts) => Ok(dev::up(opts).await),
        Command::DevDown(opts) => Ok(dev::down(opts).await),
        Command::Test(opts) => Ok(ci::run(opts).await),
        Command::AlertRules { dir } => {
            let rules = alerts::write_rules(&dir)?;
            for p in &rules.problems {
                println!("{p}");
            }
            println!("{}", rules.summary());
            Ok(if rules.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::CheckDeploy(opts) => deploy::run(opts),
        Command::Minikube { command } => Ok(minikube::run(command)),
    }
}

/// The repository's `.dev` directory (`MP3C_DEV_DIR` as the scripts use it).
fn dev_dir() -> PathBuf {
    std::env::var_os("MP3C_DEV_DIR").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev"), PathBuf::from)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
