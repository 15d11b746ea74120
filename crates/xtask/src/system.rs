//! What the benchmark reads from the machine (`/proc`) and the processes it starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::report::Machine;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// User and system time of `pid` and of the children it reaped (ffmpeg), in clock ticks:
/// fields 14-17 of `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command name (field 2) may hold spaces: count from the ')' that closes it, after
    // which comes field 3.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after.split_whitespace().skip(11).take(4).filter_map(|f| f.parse::<u64>().ok()).sum()
}

/// Busy and total clock ticks of the whole machine (`cpu` line of `/proc/stat`: busy is all
/// but idle and iowait).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux whenever it can't be asked).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cores: cores(),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(": ").map(|(_, m)| m.to_owned()))
            .unwrap_or_default(),
        memory_mib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k / 1024),
        load_start: load_average(),
        load_end: String::new(),
    }
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Numbers joined by spaces with `decimals` places, for the raw lines.
pub fn join(values: &[f64], decimals: usize) -> String {
    values.iter().map(|v| format!("{v:.decimals$}")).collect::<Vec<_>>().join(" ")
}

pub fn mib(bytes: f64) -> f64 {
    bytes / 1_048_576.0
}

/// Now, UTC, as `YYYY-MM-DD HH:MM:SS`.
pub fn now_utc() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

/// The commit measured, when run from a git checkout.
pub fn git_head() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

/// A process the benchmark started: its output goes to a log file; it is killed if dropped
/// (so an error or Ctrl-C leaves nothing running) and stopped politely by [`Spawned::stop`].
pub struct Spawned {
    pub name: String,
    pub child: tokio::process::Child,
    pub log: PathBuf,
    /// Taken just before the spawn: readiness is timed from here.
    pub started: Instant,
}

impl Spawned {
    /// Starts `cmd` with stdout and stderr appended to `log` (truncated first when `fresh`).
    pub fn start(name: &str, cmd: std::process::Command, log: &Path, fresh: bool) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(!fresh).write(true).truncate(fresh).open(log)?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self { name: name.to_owned(), child, log: log.to_owned(), started })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // `kill` rather than libc: the workspace forbids unsafe code.
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Runs a command to completion, failing with its stderr when it fails.
pub async fn run(what: &str, cmd: &mut tokio::process::Command) -> anyhow::Result<std::process::Output> {
    let out = cmd.stdin(Stdio::null()).output().await.with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// `ffmpeg -nostdin -hide_banner -loglevel error -y ARGS`.
/// The benchmark's 60 s video: 640x360 25 fps MPEG-4 with a stereo 44.1 kHz AAC track (tones
/// plus noise, so the encoder has real work).
pub async fn video_60s(path: &std::path::Path) -> anyhow::Result<()> {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=60",
        "-f",
        "lavfi",
        "-i",
        "aevalsrc=sin(440*2*PI*t)+0.2*random(0)|sin(660*2*PI*t)+0.2*random(1):s=44100:d=60",
        "-c:v",
        "mpeg4",
        "-b:v",
        "1M",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-shortest",
        &path.to_string_lossy(),
    ])
    .await
}

pub async fn ffmpeg(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]).args(args);
    run("ffmpeg", &mut cmd).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn proc_readings_of_this_process() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(status_kib(me, "VmHWM").unwrap() >= status_kib(me, "VmRSS").unwrap() / 2);
        assert!(status_kib(me, "NoSuchField").is_err());
        // Burn a little CPU so the counter moves off zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_ticks(me) > 0);
        let (busy, total) = machine_ticks();
        assert!(total > busy && busy > 0);
        assert!(now_utc().len() == 19);
    }
}
