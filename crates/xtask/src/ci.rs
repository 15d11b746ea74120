//! Every test, as `scripts/test.sh` runs it once it has installed what they need, started the
//! dependencies and built the binaries (`xtask test [RUNNER ARGS...]`): the test environment,
//! the deployment checks, cargo-deny, the two test runner phases and the containerised phase.
//!
//! Test environment given to every step (each keeps a value already set by the caller):
//! - `TEST_MYSQL_URL`: mysql://root@127.0.0.1:3306, or a password-less `mp3c_test` user (made
//!   through the socket) when root is refused over TCP
//! - `TEST_AMQP_URL`: amqp://guest:guest@127.0.0.1:5672/%2f
//! - `TEST_MONGODB_URI`: `$MONGODB_URI`, else mongodb://127.0.0.1:27017
//! - `TEST_SMTP_HOST` 127.0.0.1, `TEST_SMTP_PORT` 1025
//! - `TEST_MAILDEV_URL`: http://127.0.0.1:1080 (maildev REST API: GET /email, DELETE /email/all)

use std::process::ExitCode;

use sqlx::{Connection, Executor, MySqlConnection, Row};
use tokio::process::Command;

use crate::procs::Dev;

#[derive(clap::Args)]
pub struct Options {
    /// Arguments for the test runner (cargo nextest run, or cargo test), e.g. `-p auth`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    runner_args: Vec<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn flag(name: &str, values: &[&str]) -> bool {
    var(name).is_some_and(|v| values.contains(&v.as_str()))
}

pub async fn run(opts: Options) -> ExitCode {
    let dev = Dev::new("test");
    // TEST_STOP_DEPS=1 (the default when CI=true) stops, at the end, the dependencies this run
    // started: those on record now that were not before scripts/deps.sh ran (MP3C_DEPS_BEFORE,
    // the names in .dev/pids then).
    let stop_deps = var("TEST_STOP_DEPS").map_or_else(|| flag("CI", &["true", "1"]), |v| v == "1");
    // Without MP3C_DEPS_BEFORE, deps.sh did not run as part of this run: it started nothing.
    let started_now: Vec<_> = match std::env::var("MP3C_DEPS_BEFORE") {
        Ok(before) => {
            let was_recorded = |d: &str| before.split_whitespace().any(|f| f == format!("{d}.pid") || f == format!("{d}.started"));
            dev.recorded_deps().into_iter().filter(|d| !was_recorded(d)).collect()
        }
        Err(_) => Vec::new(),
    };

    let code = tokio::select! {
        code = phases(&dev, opts) => code.unwrap_or_else(|e| dev.fail(&e)),
        _ = tokio::signal::ctrl_c() => ExitCode::from(130),
    };
    if stop_deps {
        // Quietly: the test runner's summary should stay the last lines of the output.
        let quiet = dev.quiet();
        for dep in started_now {
            quiet.stop_dep(dep).await;
        }
    }
    code
}

async fn phases(dev: &Dev, opts: Options) -> anyhow::Result<ExitCode> {
    let root = testkit::repo_root();
    let env = test_env(dev).await?;
    let cmd = |program: &str, args: &[&str]| {
        let mut c = Command::new(program);
        c.args(args).envs(env.iter().map(|(k, v)| (k, v))).current_dir(&root).kill_on_drop(true);
        c
    };
    // Exit status of a step (1 when it could not start, 128 + n when a signal ended it).
    let status = |mut c: Command| async move {
        match c.status().await {
            Ok(s) => s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
            Err(e) => {
                eprintln!("[test] could not run {:?}: {e}", c.as_std().get_program());
                1
            }
        }
    };

    // Deployment checks first, so the runner's summary closes the output.
    let mut deploy = 0;
    if root.join("scripts/check-deploy.sh").is_file() && var("SKIP_DEPLOY_CHECKS").as_deref() != Some("1") {
        dev.log("scripts/check-deploy.sh");
        deploy = status(cmd("bash", &["scripts/check-deploy.sh"])).await;
        if deploy != 0 {
            dev.log(format!("DEPLOY CHECKS FAILED (exit {deploy}); running the tests anyway"));
        }
    }

    // Supply chain: licenses, bans and sources of every crate. The RustSec advisory database is
    // a GitHub repository, unreachable from this project's machines; DENY_ADVISORIES=1 where it
    // is reachable checks advisories too.
    let mut checks = vec!["licenses", "bans", "sources"];
    if var("DENY_ADVISORIES").as_deref() == Some("1") {
        checks.push("advisories");
    }
    dev.log(format!("cargo deny check {}", checks.join(" ")));
    let deny = status(cmd("cargo", &[&["deny", "--log-level", "error", "check"][..], &checks[..]].concat())).await;

    // Two phases: everything else in parallel, then the fault tests (names starting `fault_`)
    // one at a time, since they stop and restart the shared broker, database and mail servers.
    let extra: Vec<&str> = opts.runner_args.iter().map(String::as_str).collect();
    let nextest = cmd("cargo", &["nextest", "--version"]).stdout(std::process::Stdio::null()).status().await.is_ok_and(|s| s.success());
    let runs: [Vec<&str>; 2] = if nextest {
        let run = ["nextest", "run", "--workspace", "--no-fail-fast", "-E"];
        [
            [&run[..], &["not test(/fault_/)"], &extra[..]].concat(),
            [&run[..], &["test(/fault_/)", "--test-threads", "1", "--no-tests=pass"], &extra[..]].concat(),
        ]
    } else {
        dev.log("cargo-nextest not found; using cargo test");
        let run = ["test", "--workspace", "--no-fail-fast", "--"];
        [[&run[..], &["--skip", "fault_"], &extra[..]].concat(), [&run[..], &["fault_", "--test-threads", "1"], &extra[..]].concat()]
    };
    let mut tests = 0;
    for args in runs {
        let code = status(cmd("cargo", &args)).await;
        if code != 0 {
            tests = code;
        }
    }

    // The containerised phase, last, after the fault tests have restarted the shared servers:
    // the images from docker/Dockerfile, manifests/ in podman, the tutorial flow against them.
    // CI never skips it; SKIP_CONTAINERS=1 skips it on a developer's machine.
    let mut pods = 0;
    if var("SKIP_CONTAINERS").as_deref() == Some("1") && !flag("CI", &["true", "1"]) {
        dev.log("SKIP_CONTAINERS=1: containerised phase skipped");
    } else {
        dev.log("containerised phase: scripts/pods-test.sh");
        pods = status(cmd("bash", &["scripts/pods-test.sh"])).await;
        if pods != 0 {
            dev.log(format!("CONTAINERISED PHASE FAILED (exit {pods})"));
        }
    }

    let failed =
        [(pods, "scripts/pods-test.sh"), (deny, "cargo deny"), (deploy, "scripts/check-deploy.sh")].into_iter().find(|(c, _)| *c != 0);
    let code = match failed {
        Some((code, what)) => {
            dev.log(format!("{what} failed (exit {code})"));
            code
        }
        None => tests,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// The `TEST_*` variables, and the clean-up of the MySQL databases and users earlier runs left.
async fn test_env(dev: &Dev) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mysql_url = match var("TEST_MYSQL_URL") {
        Some(url) => url,
        None => crate::mysql::admin_url().await?,
    };
    let or = |name: &str, default: &str| var(name).unwrap_or_else(|| default.to_owned());
    let mongo = or("MONGODB_URI", "mongodb://127.0.0.1:27017");
    let env = vec![
        ("TEST_MYSQL_URL", mysql_url),
        ("TEST_AMQP_URL", or("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")),
        ("TEST_MONGODB_URI", or("TEST_MONGODB_URI", &mongo)),
        ("TEST_SMTP_HOST", or("TEST_SMTP_HOST", "127.0.0.1")),
        ("TEST_SMTP_PORT", or("TEST_SMTP_PORT", "1025")),
        ("TEST_MAILDEV_URL", or("TEST_MAILDEV_URL", "http://127.0.0.1:1080")),
    ];
    let shown: Vec<String> =
        env.iter().map(|(k, v)| if *k == "TEST_MONGODB_URI" { format!("{k}=<set>") } else { format!("{k}={v}") }).collect();
    dev.log(shown.join(" "));
    // Each test makes its own MySQL database and user (auth_t_*); drop those of earlier runs.
    if let Err(e) = drop_test_databases(&env[0].1).await {
        dev.log(format!("could not drop old test databases (continuing): {e:#}"));
    }
    Ok(env)
}

async fn drop_test_databases(url: &str) -> anyhow::Result<()> {
    let mut conn = MySqlConnection::connect(url).await?;
    let dbs = conn.fetch_all(r"SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'auth\_t\_%'").await?;
    for db in dbs {
        conn.execute(format!("DROP DATABASE `{}`", db.try_get::<String, _>(0)?).as_str()).await?;
    }
    // Converted: MariaDB's mysql.user gives the names as BINARY, which sqlx does not decode as
    // a String: the old test users were never dropped.
    let users = conn
        .fetch_all(r"SELECT CONVERT(user USING utf8mb4), CONVERT(host USING utf8mb4) FROM mysql.user WHERE user LIKE 'auth\_t\_%'")
        .await?;
    for u in users {
        conn.execute(format!("DROP USER '{}'@'{}'", u.try_get::<String, _>(0)?, u.try_get::<String, _>(1)?).as_str()).await?;
    }
    Ok(())
}
