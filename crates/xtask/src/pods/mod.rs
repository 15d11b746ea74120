//! The Kubernetes manifests run in containers on this machine with `podman kube play`, against
//! the host's servers (scripts/deps.sh): `xtask pods up|down|test`.
//!
//! ```text
//! images.rs `xtask images`: the four images from docker/Dockerfile, with Docker or podman
//! up.rs     render manifests/ through a generated overlay, isolate the instance on the shared
//!           servers, play it, wait for every probe
//! down.rs   remove exactly what `up` made for one instance
//! play.rs   what podman is handed (Deployments, ConfigMaps, Secrets as podman secrets) and the
//!           check that every container runs as its manifest says
//! test.rs   the containerised phase of scripts/test.sh: images, up, the tutorial flow, down
//! ```
//!
//! Podman runs with our own containers.conf (runc, cgroupfs, ulimits within the machine's),
//! written by scripts/container-env.sh, which also installs podman; the machine's global
//! configuration is never changed.

mod down;
pub mod images;
mod play;
mod test;
mod up;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;

/// The four Deployments, in the order they are patched and checked.
pub const SERVICES: [&str; 4] = ["auth", "gateway", "converter", "notification"];

#[derive(clap::Subcommand)]
pub enum Task {
    /// Run manifests/ with podman kube play against the host's servers (started by
    /// scripts/deps.sh). Needs the images of `xtask images`. Re-running replaces what an earlier
    /// run of NAME made. Prints the gateway's URL and the tutorial's curl flow.
    Up(up::Options),
    /// Remove what `pods up` made for one instance, and nothing else.
    Down(down::Options),
    /// The containerised phase of scripts/test.sh: build the images, run an instance of its own on
    /// free ports, the tutorial flow against its gateway, and remove it whatever happened.
    Test(test::Options),
}

pub async fn run(command: Task) -> anyhow::Result<ExitCode> {
    match command {
        Task::Up(opts) => up::run(opts).await?,
        Task::Down(opts) => down::run(&opts.name).await?,
        Task::Test(opts) => test::run(opts).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// An instance name: prefixes pods, secrets, volumes, the MySQL database/user, the RabbitMQ
/// vhost/users and the MongoDB databases, so it must be a valid name in all of them.
#[derive(Clone, Debug)]
pub struct Name(String);

impl std::str::FromStr for Name {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.len() <= 31;
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("lowercase letters, digits and '-', at most 31")
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Name {
    /// The default instance of `pods up` / `pods down`.
    pub const DEFAULT: &'static str = "mp3c-pods";

    /// The name where '-' can't stand (MySQL database and user, MongoDB databases).
    pub fn id(&self) -> String {
        self.0.replace('-', "_")
    }

    /// Where `up` records what it made for this instance (secrets included).
    pub fn state_dir(&self) -> PathBuf {
        crate::dev_dir().join("pods").join(&self.0)
    }

    /// The container podman kube play makes for a Deployment (`<deployment>-pod-0` is the pod).
    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}-pod-0-{service}", self.0)
    }
}

/// What `up` recorded first, so `down` can clean up even when a later step failed.
#[derive(Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub mongo: String,
    pub gateway_port: u16,
    pub auth_port: u16,
}

impl Instance {
    fn file(name: &Name) -> PathBuf {
        name.state_dir().join("instance")
    }

    fn write(&self, name: &Name) -> anyhow::Result<()> {
        let text = format!(
            "NAME={name}\nID={}\nMONGO={}\nGATEWAY_PORT={}\nAUTH_PORT={}\n",
            self.id, self.mongo, self.gateway_port, self.auth_port
        );
        crate::write(&Self::file(name), &text)
    }

    /// The record of `name`, or None when there is none.
    pub fn read(name: &Name) -> anyhow::Result<Option<Self>> {
        let path = Self::file(name);
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let field = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).with_context(|| format!("{}: no {key}", path.display()))
        };
        let port = |key: &str| -> anyhow::Result<u16> { field(key)?.parse().with_context(|| format!("{}: {key}", path.display())) };
        let instance = Self {
            id: field("ID")?.to_owned(),
            mongo: field("MONGO")?.to_owned(),
            gateway_port: port("GATEWAY_PORT")?,
            auth_port: port("AUTH_PORT")?,
        };
        if field("NAME")? != name.0 || instance.id != name.id() {
            bail!("{} does not belong to {name}", path.display());
        }
        Ok(Some(instance))
    }
}

/// `[me] message` on stderr, as every script of the project logs.
pub fn log(me: &str, message: impl std::fmt::Display) {
    eprintln!("[{me}] {message}");
}

/// A random secret, 32 bytes as URL-safe base64.
pub fn secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Runs `cmd` to completion; an error with its stderr when it fails.
pub fn run_checked(what: &str, cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// Runs `cmd` with `input` on its stdin and its output discarded; whether it succeeded.
pub fn run_with_input(cmd: &mut Command, input: &str) -> bool {
    use std::io::Write as _;
    let Ok(mut child) = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() else { return false };
    let written = child.stdin.take().is_some_and(|mut stdin| stdin.write_all(input.as_bytes()).is_ok());
    child.wait().is_ok_and(|s| s.success()) && written
}

/// Runs `cmd` with its output discarded; whether it succeeded.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// podman with our containers.conf.
pub struct Podman {
    conf: PathBuf,
}

impl Podman {
    /// Installs podman and its helpers where missing and writes our containers.conf
    /// (scripts/container-env.sh tools, which prints the file's path).
    pub fn setup() -> anyhow::Result<Self> {
        let script = testkit::repo_root().join("scripts/container-env.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("tools")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("run scripts/container-env.sh")?;
        if !out.status.success() {
            bail!("scripts/container-env.sh tools failed");
        }
        let conf = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !conf.is_file() {
            bail!("scripts/container-env.sh tools printed no containers.conf ({})", conf.display());
        }
        Ok(Self { conf })
    }

    /// A podman command line reading our configuration.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        // BUILDAH_LAYERS: podman build keeps intermediate layers, so an unchanged stage is reused.
        cmd.env("CONTAINERS_CONF", &self.conf).env("BUILDAH_LAYERS", "true");
        cmd
    }

    /// `podman ARGS...` to completion, its stdout.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = run_checked(&format!("podman {}", args.join(" ")), self.cmd().args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podman ARGS...`, output discarded; whether it succeeded.
    pub fn ok(&self, args: &[&str]) -> bool {
        succeeds(self.cmd().args(args))
    }

    /// The last `lines` of a container's log, on stderr.
    pub fn show_logs(&self, container: &str, lines: usize) {
        let _ = self
            .cmd()
            .args(["logs", "--tail", &lines.to_string(), container])
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status();
    }
}

/// The container engine `xtask images` builds with: MP3C_ENGINE when set, else docker when a
/// Docker engine answers `docker info`, else podman.
pub fn engine() -> String {
    if let Some(e) = std::env::var("MP3C_ENGINE").ok().filter(|e| !e.is_empty()) {
        return e;
    }
    if succeeds(Command::new("timeout").args(["10", "docker", "info"])) {
        "docker".into()
    } else {
        "podman".into()
    }
}

/// rabbitmqctl, quiet, with stdin closed (it reads stdin otherwise); whether it succeeded.
pub fn rabbitmqctl(args: &[&str]) -> bool {
    succeeds(Command::new("rabbitmqctl").arg("-q").args(args))
}

/// Whether something listens on 127.0.0.1:`port`.
pub fn port_taken(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), std::time::Duration::from_secs(1)).is_ok()
}

/// A path relative to `base` (both absolute, no symlinks between them that matter).
pub fn relative(path: &Path, base: &Path) -> PathBuf {
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel: PathBuf = b[common..].iter().map(|_| "..").collect();
    rel.extend(&p[common..]);
    rel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_everywhere_they_stand() {
        for ok in ["mp3c-pods", "a", "mp3c-test-123"] {
            assert!(ok.parse::<Name>().is_ok(), "{ok}");
        }
        for bad in ["", "Mp3c", "1abc", "a_b", "a.b", &"a".repeat(32)] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
        let name: Name = "mp3c-pods".parse().unwrap();
        assert_eq!(name.id(), "mp3c_pods");
        assert_eq!(name.container("auth"), "mp3c-pods-auth-pod-0-auth");
    }

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        assert_eq!(relative(Path::new("/r/manifests"), Path::new("/r/.dev/pods/x/overlay")), PathBuf::from("../../../../manifests"));
    }
}
