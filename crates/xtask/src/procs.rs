//! The processes the local tasks start, recorded exactly as `scripts/_lib.sh` records the
//! dependencies `scripts/deps.sh` starts, so that either side can stop what the other started.
//!
//! State lives in one repo-relative directory (gitignored): `MP3C_DEV_DIR`, default `<repo>/.dev`
//! - `pids/<name>.pid`: the pid of a process we started (and only those)
//! - `pids/<name>.match`: a string its `/proc/<pid>/cmdline` must contain, so that a recycled pid
//!   is never mistaken for ours
//! - `pids/<name>.started`: RabbitMQ, started with `-detached` (no pid of ours)
//! - `logs/<name>.log`: its stdout and stderr

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The dependencies `scripts/deps.sh` may start, in the order they are stopped.
pub const DEPS: [&str; 5] = ["maildev", "secantusd", "mongod", "rabbitmq", "mariadb"];
/// What dev-up starts, in the order it is stopped: the gateway first (no new work comes in),
/// auth last (the gateway needs it to drain).
pub const STOP_ORDER: [&str; 5] = ["prometheus", "gateway", "converter", "notification", "auth"];

/// The state directory, and the name every message is prefixed with (`[dev-up] ...`).
pub struct Dev {
    pub dir: PathBuf,
    me: &'static str,
    quiet: bool,
}

impl Dev {
    pub fn new(me: &'static str) -> Self {
        let dir =
            std::env::var_os("MP3C_DEV_DIR").filter(|d| !d.is_empty()).map_or_else(|| testkit::repo_root().join(".dev"), PathBuf::from);
        Self { dir, me, quiet: false }
    }

    /// The same directory, with messages suppressed (clean-up after the test runner's summary).
    pub fn quiet(&self) -> Self {
        Self { dir: self.dir.clone(), me: self.me, quiet: true }
    }

    pub fn log(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("[{}] {msg}", self.me);
        }
    }

    /// `[me] error: ...` and exit status 1, as the scripts' `die`.
    pub fn fail(&self, e: &anyhow::Error) -> std::process::ExitCode {
        eprintln!("[{}] error: {e:#}", self.me);
        std::process::ExitCode::FAILURE
    }

    /// The exit status of a task that either succeeds or fails as [`Dev::fail`] reports.
    pub fn exit(&self, result: anyhow::Result<()>) -> std::process::ExitCode {
        result.map_or_else(|e| self.fail(&e), |()| std::process::ExitCode::SUCCESS)
    }

    pub fn pid_file(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join("pids").join(format!("{name}.{ext}"))
    }

    pub fn log_file(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// The recorded pid of `name` if that process is alive (not a zombie) and still ours.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file(name, "pid")).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        if status.lines().any(|l| l.starts_with("State:") && l[6..].trim_start().starts_with('Z')) {
            return None;
        }
        if let Ok(matches) = std::fs::read_to_string(self.pid_file(name, "match")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let matches = matches.trim_end_matches('\n');
            if !matches.is_empty() && !cmdline.contains(matches) {
                return None;
            }
        }
        Some(pid)
    }

    /// Runs `argv` detached (its own session, stdin /dev/null, output appended to
    /// `logs/<name>.log`) with `envs` added to this environment, and records its pid.
    #[allow(clippy::zombie_processes, reason = "detached on purpose: it outlives us, and init reaps it")]
    pub fn start_bg(&self, name: &str, matches: &str, argv: &[&OsStr], envs: &[(String, String)]) -> anyhow::Result<u32> {
        let (pids, log) = (self.dir.join("pids"), self.log_file(name));
        for dir in [&pids, &self.dir.join("logs")] {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let pid_file = self.pid_file(name, "pid");
        let _ = std::fs::remove_file(&pid_file);
        std::fs::write(self.pid_file(name, "match"), format!("{matches}\n"))?;
        let mut out = OpenOptions::new().create(true).append(true).open(&log).with_context(|| format!("open {}", log.display()))?;
        let words: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
        writeln!(out, "\n===== {} starting: {}", now(), words.join(" "))?;
        // `setsid` execs the program itself (a child is never a process group leader), so the
        // pid recorded is the program's own; its own session keeps it alive past our terminal.
        let child = Command::new("setsid")
            .args(argv)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("could not start {name}; see {}", log.display()))?;
        let tmp = pid_file.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{}\n", child.id()))?;
        std::fs::rename(&tmp, &pid_file)?;
        // Returned once setsid has exec'd the program and the pid is ours by its command line:
        // before (and, mid-exec, during) that exec /proc shows setsid's or an empty command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        let execed = || std::fs::read_to_string(format!("/proc/{}/comm", child.id())).is_ok_and(|c| c.trim_end() != "setsid");
        while !execed() || self.pid_of(name) != Some(child.id()) {
            anyhow::ensure!(Instant::now() < deadline, "{name} (pid {}) did not start; see {}", child.id(), self.log_file(name).display());
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(child.id())
    }

    /// SIGTERM the recorded process, SIGKILL it after `timeout`, forget it.
    pub async fn stop_recorded(&self, name: &str, timeout: Duration) {
        if let Some(pid) = self.pid_of(name) {
            self.log(format!("stopping {name} (pid {pid})"));
            signal("TERM", pid);
            let deadline = Instant::now() + timeout;
            while self.pid_of(name).is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if self.pid_of(name).is_some() {
                self.log(format!("{name} did not stop within {}s; sending SIGKILL", timeout.as_secs()));
                signal("KILL", pid);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let _ = std::fs::remove_file(self.pid_file(name, "pid"));
        let _ = std::fs::remove_file(self.pid_file(name, "match"));
    }

    /// Stops a dependency if deps.sh started it: RabbitMQ (no pid of ours: started with
    /// `-detached`) with rabbitmqctl, the others by pid, with time for MariaDB and mongod to
    /// flush.
    pub async fn stop_dep(&self, name: &str) {
        if name != "rabbitmq" {
            return self.stop_recorded(name, Duration::from_secs(60)).await;
        }
        let started = self.pid_file(name, "started");
        if started.exists() {
            self.log("stopping rabbitmq (started by deps.sh)");
            let path = format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default());
            let ok = Command::new("rabbitmqctl").arg("shutdown").env("PATH", path).output().is_ok_and(|o| o.status.success());
            if !ok {
                self.log("rabbitmqctl shutdown failed (already stopped?)");
            }
            let _ = std::fs::remove_file(started);
        }
    }

    /// The dependencies deps.sh started and still has on record.
    pub fn recorded_deps(&self) -> Vec<&'static str> {
        DEPS.into_iter().filter(|d| self.pid_file(d, "pid").exists() || self.pid_file(d, "started").exists()).collect()
    }

    /// Polls `check` every 0.25 s until it holds. Fails after `timeout`, or at once when the
    /// process recorded as `name` has died, showing the end of its log.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, name: &str, check: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let (deadline, log) = (Instant::now() + timeout, self.log_file(name));
        while !check().await {
            if self.pid_of(name).is_none() {
                show_log_tail(&log);
                bail!("{what}: the process exited before it answered; log: {}", log.display());
            }
            if Instant::now() >= deadline {
                show_log_tail(&log);
                bail!("{what} did not answer within {}s; log: {}", timeout.as_secs(), log.display());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

fn signal(name: &str, pid: u32) {
    // `kill` rather than libc: the workspace forbids unsafe code.
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// The local time as `date '+%F %T'` prints it (UTC where the offset is unknown).
fn now() -> String {
    let t = Command::new("date").arg("+%F %T").output().ok().filter(|o| o.status.success());
    t.map_or_else(crate::system::now_utc, |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Does something accept connections on 127.0.0.1:`port` (1 s limit)?
pub fn tcp_open(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).is_ok()
}

/// Does `url` answer 2xx within 2 s?
pub async fn http_ok(client: &reqwest::Client, url: &str) -> bool {
    client.get(url).timeout(Duration::from_secs(2)).send().await.is_ok_and(|r| r.status().is_success())
}

pub fn show_log_tail(log: &Path) {
    let Ok(text) = std::fs::read_to_string(log) else { return };
    if text.is_empty() {
        return;
    }
    let lines: Vec<_> = text.lines().collect();
    eprintln!("----- last 30 lines of {} -----", log.display());
    for line in &lines[lines.len().saturating_sub(30)..] {
        eprintln!("{line}");
    }
    eprintln!("-----");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_started_process_is_recorded_matched_and_stopped() {
        let dir = std::env::temp_dir().join(format!("xtask-procs-{}", std::process::id()));
        let dev = Dev { dir: dir.clone(), me: "test", quiet: true };
        let pid = dev.start_bg("sleeper", "sleep 30", &[OsStr::new("sleep"), OsStr::new("30")], &[]).unwrap();
        assert_eq!(dev.pid_of("sleeper"), Some(pid));
        std::fs::write(dev.pid_file("sleeper", "match"), "not-this-command\n").unwrap();
        assert_eq!(dev.pid_of("sleeper"), None, "a pid whose command line does not match is not ours");
        std::fs::write(dev.pid_file("sleeper", "match"), "sleep 30\n").unwrap();
        dev.stop_recorded("sleeper", Duration::from_secs(5)).await;
        assert!(!dev.pid_file("sleeper", "pid").exists());
        assert!(std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| s.contains("zombie")));
        assert!(std::fs::read_to_string(dev.log_file("sleeper")).unwrap().contains("starting: sleep 30"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
