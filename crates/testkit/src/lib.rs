//! Helpers for integration and end-to-end tests. Every test gets its own MySQL database and
//! user, its own queue names, its own MongoDB databases and its own mail recipients, so tests
//! run in parallel against the one set of real servers that `scripts/deps.sh` starts.
//!
//! Server locations come from `TEST_*` variables (set by `scripts/test.sh`), with the local
//! defaults.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lapin::options::{BasicGetOptions, QueuePurgeOptions};
use secrecy::SecretString;
use serde::Deserialize;
use sqlx::{Connection, Executor, MySqlConnection};

pub mod manifests;
mod service_env;
pub use service_env::{Servers, Service, ServiceEnv, Wiring};

/// The variable `name`, or `default` when it is unset or empty.
pub fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

pub fn mysql_admin_url() -> String {
    var_or("TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
}
pub fn amqp_url() -> String {
    var_or("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}
pub fn mongo_uri() -> String {
    var_or("TEST_MONGODB_URI", "mongodb://127.0.0.1:27017")
}
pub fn smtp_host() -> String {
    var_or("TEST_SMTP_HOST", "127.0.0.1")
}
pub fn smtp_port() -> String {
    var_or("TEST_SMTP_PORT", "1025")
}
pub fn maildev_url() -> String {
    var_or("TEST_MAILDEV_URL", "http://127.0.0.1:1080")
}

/// Polls `check` every 100 ms until it returns `Some`, or fails naming `what` once `timeout` has
/// passed (`check` runs at least once, and once more at the deadline). The one poll-until loop of
/// the tests: waiting for a message, a mail, a port, a metric, a file, a process.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let past = Instant::now() >= deadline;
        if let Some(v) = check().await {
            return Ok(v);
        }
        if past {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// [`poll_until`] for a test body: panics with the message instead of returning it.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_until(what, timeout, check).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// A short random suffix for names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A fresh, unique email address for a test user.
pub fn unique_email() -> String {
    format!("user-{}@example.com", unique())
}

/// A 48-byte development JWT secret.
pub const JWT_SECRET: &str = "test-only-jwt-secret-0123456789-abcdefghijklmnop";

/// The rights of the auth service's MySQL user on its database (as dev-seed.sql and
/// docs/deploy.md grant them): rows, and the DDL of its own migrations.
pub const AUTH_GRANTS: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX";

/// Applies the auth service's migrations (services/auth/migrations/, the one definition of its
/// schema) to `database` on the server of `admin_url` (`mysql://root@127.0.0.1:3306`), as the
/// service does when it starts. The local set-up runs it on `auth` after init.sql and before
/// dev-seed.sql, whose rows need the tables.
pub async fn migrate_auth(admin_url: &str, database: &str) -> anyhow::Result<()> {
    use std::str::FromStr;
    let options = sqlx::mysql::MySqlConnectOptions::from_str(admin_url).context("a MySQL URL")?.database(database);
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("connect to MySQL database {database}"))?;
    auth::migrate(&pool).await.with_context(|| format!("apply the auth migrations to {database}"))?;
    pool.close().await;
    Ok(())
}

/// A private auth database with its own application user.
pub struct AuthDb {
    pub database: String,
    pub user: String,
    pub password: String,
}

impl AuthDb {
    pub async fn create() -> anyhow::Result<Self> {
        Self::create_named("auth_t_").await
    }

    /// A database and user named `<prefix><random>`. `scripts/test.sh` drops every `auth_t_*`
    /// database left by earlier runs, so tools that run beside the tests (the benchmark) use
    /// another prefix.
    pub async fn create_named(prefix: &str) -> anyhow::Result<Self> {
        let id = unique();
        let db = Self { database: format!("{prefix}{id}"), user: format!("{prefix}{id}"), password: format!("pw-{id}") };
        let mut conn = MySqlConnection::connect(&mysql_admin_url()).await.context("connect to MariaDB as admin (TEST_MYSQL_URL)")?;
        conn.execute(format!("CREATE DATABASE `{}`", db.database).as_str()).await?;
        for host in ["%", "localhost"] {
            conn.execute(format!("CREATE USER '{}'@'{host}' IDENTIFIED BY '{}'", db.user, db.password).as_str()).await?;
            conn.execute(format!("GRANT {AUTH_GRANTS} ON `{}`.* TO '{}'@'{host}'", db.database, db.user).as_str()).await?;
        }
        migrate_auth(&mysql_admin_url(), &db.database).await?;
        Ok(db)
    }

    /// The database `init.sql` creates and the application user `dev-seed.sql` adds for local
    /// development (its DEVELOPMENT PLACEHOLDER password, never a deployment's).
    pub fn init_sql() -> Self {
        Self { database: "auth".into(), user: "auth_user".into(), password: "Auth123".into() }
    }

    /// Drops the database and its user.
    pub async fn drop_all(&self) -> anyhow::Result<()> {
        let mut conn = MySqlConnection::connect(&mysql_admin_url()).await.context("connect to MariaDB as admin (TEST_MYSQL_URL)")?;
        conn.execute(format!("DROP DATABASE IF EXISTS `{}`", self.database).as_str()).await?;
        for host in ["%", "localhost"] {
            conn.execute(format!("DROP USER IF EXISTS '{}'@'{host}'", self.user).as_str()).await?;
        }
        Ok(())
    }

    /// The `MYSQL_*` variables of the auth service for this database.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("MYSQL_HOST", "127.0.0.1".to_owned()),
            ("MYSQL_PORT", "3306".to_owned()),
            ("MYSQL_USER", self.user.clone()),
            ("MYSQL_PASSWORD", self.password.clone()),
            ("MYSQL_DB", self.database.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Isolated names for one test's pipeline: queues and GridFS databases.
#[derive(Clone, Debug)]
pub struct Names {
    pub video_queue: String,
    pub mp3_queue: String,
    pub videos_db: String,
    pub mp3s_db: String,
}

impl Names {
    pub fn new() -> Self {
        let id = unique();
        Self {
            video_queue: format!("video-{id}"),
            mp3_queue: format!("mp3-{id}"),
            videos_db: format!("videos_{id}"),
            mp3s_db: format!("mp3s_{id}"),
        }
    }

    pub async fn mongo(&self) -> mongodb::Client {
        mongodb::Client::with_uri_str(mongo_uri()).await.expect("mongo client")
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

/// The environment of `service` listening on `port` with a test's `names` on the test servers
/// ([`ServiceEnv`], as [`Stack`] starts them). `db` and `auth_port` are the auth service's
/// database and port, for a test that runs auth or the gateway; others pass `None` and 0.
pub fn test_env(service: Service, port: u16, names: &Names, db: Option<&AuthDb>, auth_port: u16) -> ServiceEnv {
    // Read only by auth, which is never started without a database.
    let no_db = AuthDb { database: String::new(), user: String::new(), password: String::new() };
    let servers = Servers::from_test_env();
    let wiring = Wiring {
        servers: &servers,
        names,
        mysql: db.unwrap_or(&no_db),
        jwt_secret: JWT_SECRET,
        auth_port,
        // A local base URL: the development link key is accepted.
        public_url: "http://127.0.0.1:8080",
    };
    ServiceEnv::new(service, port, wiring)
}

/// Opens a channel on the test broker.
pub async fn amqp_channel() -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
    let conn = common::amqp::connect(&SecretString::from(amqp_url())).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

/// Publishes one persistent JSON message to `queue` (declared first, with its retry and dead-letter
/// queues, as the services declare it) and waits for the broker's confirm.
pub async fn publish(queue: &str, body: &[u8]) -> anyhow::Result<()> {
    let (conn, ch) = amqp_channel().await?;
    ch.confirm_select(Default::default()).await?;
    common::amqp::declare_topology(&conn, queue).await?;
    common::amqp::publish_confirmed(&ch, queue, body, common::amqp::json_properties(Default::default())).await?;
    let _ = conn.close(200, "published").await;
    Ok(())
}

/// A message taken from a queue: body and headers.
pub struct Taken {
    pub body: Vec<u8>,
    pub properties: lapin::BasicProperties,
}

impl Taken {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    pub fn header_str(&self, name: &str) -> Option<String> {
        let h = self.properties.headers().as_ref()?;
        match h.inner().get(name)? {
            lapin::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// Polls `queue` until a message is there (acked on take) or `timeout` passes. A missing
/// queue is declared first (durable, no arguments, as the services declare dead-letter
/// queues), since getting from a missing queue would close the channel; an existing one is
/// left as it is (a work queue may carry a length bound, and redeclaring it without would fail).
pub async fn take_message(ch: &lapin::Channel, queue: &str, timeout: Duration) -> Option<Taken> {
    let (conn, check) = amqp_channel().await.expect("broker reachable");
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    if check.queue_declare(queue, passive, Default::default()).await.is_err() {
        let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(queue, durable, Default::default()).await.expect("declare queue");
    }
    let _ = conn.close(200, "checked").await;
    poll_until(queue, timeout, || async {
        let msg = ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.ok()??;
        Some(Taken { body: msg.delivery.data.clone(), properties: msg.delivery.properties.clone() })
    })
    .await
    .ok()
}

/// Removes a test's queues (best effort).
pub async fn delete_queues(names: &[&str]) {
    if let Ok((_c, ch)) = amqp_channel().await {
        for q in names {
            for name in [q.to_string(), common::amqp::retry_queue(q), common::amqp::dead_queue(q)] {
                let _ = ch.queue_purge(&name, QueuePurgeOptions::default()).await;
                let _ = ch.queue_delete(&name, Default::default()).await;
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MailAddress {
    pub address: String,
}

/// A mail as maildev's REST API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub subject: String,
    #[serde(default)]
    pub text: String,
    pub to: Vec<MailAddress>,
    #[serde(default)]
    pub from: Vec<MailAddress>,
}

/// Every mail maildev holds for `to`.
pub async fn mails_to(to: &str) -> anyhow::Result<Vec<Mail>> {
    let all: Vec<Mail> = reqwest::get(format!("{}/email", maildev_url())).await?.error_for_status()?.json().await?;
    Ok(all.into_iter().filter(|m| m.to.iter().any(|a| a.address.eq_ignore_ascii_case(to))).collect())
}

/// Waits until at least `count` mails for `to` arrived; returns them.
pub async fn wait_for_mails(to: &str, count: usize, timeout: Duration) -> anyhow::Result<Vec<Mail>> {
    let seen = std::sync::Mutex::new(0);
    poll_until(&format!("{count} mail(s) for {to}"), timeout, || async {
        let mails = mails_to(to).await.unwrap_or_default();
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = mails.len();
        (mails.len() >= count).then_some(mails)
    })
    .await
    .with_context(|| format!("{} arrived", seen.lock().unwrap_or_else(|p| p.into_inner())))
}

/// Kinds of generated test media.
#[derive(Clone, Copy, Debug)]
pub enum Media {
    /// Matroska: MPEG-4 part 2 video, AAC audio.
    Mkv,
    /// MP4: MPEG-4 part 2 video, AAC audio, moov atom first.
    Mp4,
    /// A video without any audio track.
    SilentMp4,
}

fn media_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

/// Generates (once per process) a small test video of `seconds` with ffmpeg's lavfi sources:
/// a test pattern and a 440 Hz tone.
pub fn media(kind: Media, seconds: u32) -> PathBuf {
    let (name, args): (String, Vec<String>) = match kind {
        Media::Mkv => (format!("test-{seconds}.mkv"), vec!["-c:v".into(), "mpeg4".into(), "-c:a".into(), "aac".into()]),
        Media::Mp4 => (
            format!("test-{seconds}.mp4"),
            vec!["-c:v".into(), "mpeg4".into(), "-c:a".into(), "aac".into(), "-movflags".into(), "+faststart".into()],
        ),
        Media::SilentMp4 => (format!("silent-{seconds}.mp4"), vec!["-c:v".into(), "mpeg4".into(), "-an".into()]),
    };
    let path = media_dir().join(&name);
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if path.exists() {
        return path;
    }
    let tmp = media_dir().join(format!("partial-{name}"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]).args([
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=duration={seconds}:size=160x120:rate=10"),
    ]);
    if !matches!(kind, Media::SilentMp4) {
        cmd.args(["-f", "lavfi", "-i", &format!("sine=frequency=440:duration={seconds}")]);
    }
    cmd.args(&args).args(["-shortest"]).arg(&tmp);
    let status = cmd.status().expect("ffmpeg runs (install it: scripts/deps.sh)");
    assert!(status.success(), "ffmpeg failed to generate {name}");
    std::fs::rename(&tmp, &path).expect("rename media");
    path
}

/// What ffprobe says of a file: (format name, first audio codec, duration in seconds).
pub fn probe(path: &Path) -> anyhow::Result<(String, Option<String>, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(path)
        .output()
        .context("ffprobe runs")?;
    if !out.status.success() {
        bail!("ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let format = v["format"]["format_name"].as_str().unwrap_or_default().to_owned();
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let audio = v["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == "audio").and_then(|s| s["codec_name"].as_str().map(str::to_owned)));
    Ok((format, audio, duration))
}

/// Duration of the first audio stream, measured by decoding it (containers such as Matroska
/// don't state per-stream durations).
pub fn audio_duration(path: &Path) -> anyhow::Result<f64> {
    let out =
        Command::new("ffmpeg").args(["-nostdin", "-hide_banner", "-i"]).arg(path).args(["-map", "0:a:0", "-f", "null", "-"]).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let time = stderr.rsplit("time=").next().context("no time= in ffmpeg output")?;
    let hms: Vec<f64> = time.split_whitespace().next().unwrap_or("").split(':').filter_map(|p| p.parse().ok()).collect();
    match hms[..] {
        [h, m, s] => Ok(h * 3600.0 + m * 60.0 + s),
        _ => bail!("unreadable ffmpeg time in {stderr}"),
    }
}

/// The repository's root (where this crate was compiled from).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Without `..` segments, so that printed and relative paths read as the folders they are.
    root.canonicalize().unwrap_or(root)
}

/// Where cargo put the workspace's binaries.
pub fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let path = target.join(profile).join(name);
    assert!(path.exists(), "{} missing: run `cargo build --workspace --bins` first (scripts/test.sh does)", path.display());
    path
}

/// A child process of a test (a service binary, or a server of its own), its output in a log
/// file, stopped when dropped: SIGKILL, or SIGTERM first with [`Proc::stop_on_drop`].
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
    /// How long a drop waits after SIGTERM before SIGKILL (zero: SIGKILL at once).
    drop_grace: Duration,
}

impl Proc {
    /// Starts `cmd` (its environment as the caller set it), output to a log file.
    pub fn start(cmd: &mut Command, name: &str) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!("mp3c-{name}-{}.log", unique()));
        let out = std::fs::File::create(&log)?;
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self { child, name: name.to_owned(), log, drop_grace: Duration::ZERO })
    }

    /// Starts a service binary with exactly `env` ([`ServiceEnv::command`]).
    pub fn service(env: &ServiceEnv) -> anyhow::Result<Self> {
        let name = env.service().name();
        Self::start(&mut env.command(&bin_path(name)), name)
    }

    /// Starts the workspace binary `name` with exactly the variables `env` (and `PATH`,
    /// `RUST_LOG=info`).
    pub fn spawn(name: &str, env: &[(String, String)]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin_path(name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)));
        Self::start(&mut cmd, name)
    }

    /// Dropping stops the process as [`Proc::stop`] does, with `grace`.
    pub fn stop_on_drop(mut self, grace: Duration) -> Self {
        self.drop_grace = grace;
        self
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited (its status if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit on its own; panics with its log after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let what = format!("{} exits", self.name);
        match poll_until(&what, timeout, || std::future::ready(self.exited())).await {
            Ok(status) => status,
            Err(e) => panic!("{e}:\n{}", self.log_text()),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.terminate();
        let what = format!("{} exits", self.name);
        if poll_until(&what, grace, || std::future::ready(self.exited())).await.is_err() {
            self.kill();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.drop_grace.is_zero() && self.exited().is_none() {
            self.terminate();
            let deadline = Instant::now() + self.drop_grace;
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }
}

/// A free TCP port on localhost (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    poll_until(&format!("{url} answers 200"), timeout, || async {
        client.get(url).timeout(Duration::from_secs(2)).send().await.ok().filter(|r| r.status().is_success()).map(drop)
    })
    .await
}

/// Creates a user in an auth database through the auth binary's user command.
pub fn add_user(db: &AuthDb, email: &str, password: &str, admin: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin_path("auth"));
    cmd.args(["user", "add", email]);
    if !admin {
        cmd.arg("--no-admin");
    }
    let out = cmd.env_clear().envs(db.env()).env("AUTH_USER_PASSWORD", password).output()?;
    if !out.status.success() {
        bail!("auth user add failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The four service binaries running against isolated databases and queues.
pub struct Stack {
    pub db: AuthDb,
    pub names: Names,
    pub auth_port: u16,
    pub gateway_port: u16,
    pub converter_health: u16,
    pub notification_health: u16,
    pub auth: Proc,
    pub gateway: Proc,
    pub converter: Proc,
    pub notification: Proc,
    /// The variables `start` added for every service.
    extra: Vec<(String, String)>,
}

impl Stack {
    /// Starts auth, gateway, converter and notification and waits until each is ready.
    /// `extra` adds or overrides variables for every service.
    pub async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let db = AuthDb::create().await?;
        let names = Names::new();
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (auth_port, gateway_port, converter_health, notification_health) = (free_port(), free_port(), free_port(), free_port());
        let env = |service: Service, port: u16| Self::env_of(&db, &names, auth_port, gateway_port, &extra, service, port);
        let auth = Proc::service(&env(Service::Auth, auth_port))?;
        let gateway = Proc::service(&env(Service::Gateway, gateway_port))?;
        let converter = Proc::service(&env(Service::Converter, converter_health))?;
        let notification = Proc::service(&env(Service::Notification, notification_health))?;
        let stack = Self {
            db,
            names,
            auth_port,
            gateway_port,
            converter_health,
            notification_health,
            auth,
            gateway,
            converter,
            notification,
            extra,
        };
        for (url, proc_) in [
            (format!("http://127.0.0.1:{auth_port}/readyz"), &stack.auth),
            (format!("http://127.0.0.1:{gateway_port}/readyz"), &stack.gateway),
            (format!("http://127.0.0.1:{converter_health}/readyz"), &stack.converter),
            (format!("http://127.0.0.1:{notification_health}/readyz"), &stack.notification),
        ] {
            if let Err(e) = wait_ok(&url, Duration::from_secs(30)).await {
                bail!("{e}; {} log:\n{}", proc_.name, proc_.log_text());
            }
        }
        Ok(stack)
    }

    /// The environment `start` gave `service`, listening on `port`: for starting another one.
    pub fn env(&self, service: Service, port: u16) -> ServiceEnv {
        Self::env_of(&self.db, &self.names, self.auth_port, self.gateway_port, &self.extra, service, port)
    }

    fn env_of(
        db: &AuthDb,
        names: &Names,
        auth_port: u16,
        gateway_port: u16,
        extra: &[(String, String)],
        service: Service,
        port: u16,
    ) -> ServiceEnv {
        let servers = Servers::from_test_env();
        let public_url = format!("http://127.0.0.1:{gateway_port}");
        let wiring = Wiring { servers: &servers, names, mysql: db, jwt_secret: JWT_SECRET, auth_port, public_url: &public_url };
        ServiceEnv::new(service, port, wiring).extend(extra.iter().cloned())
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway_port)
    }

    /// Adds a user and logs in through the gateway; returns the token.
    pub async fn user_token(&self, email: &str, admin: bool) -> anyhow::Result<String> {
        add_user(&self.db, email, "Password123!", admin)?;
        let resp = reqwest::Client::new().post(self.gateway_url("/login")).basic_auth(email, Some("Password123!")).send().await?;
        if !resp.status().is_success() {
            bail!("login failed: {}", resp.status());
        }
        Ok(resp.text().await?)
    }

    /// Uploads a file as multipart field `file`; returns status and body.
    pub async fn upload(&self, token: &str, path: &Path) -> anyhow::Result<(u16, String)> {
        let bytes = std::fs::read(path)?;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
        let resp = reqwest::Client::new().post(self.gateway_url("/upload")).bearer_auth(token).multipart(form).send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// Logs of all four services (for assertion messages).
    pub fn logs(&self) -> String {
        [&self.auth, &self.gateway, &self.converter, &self.notification]
            .iter()
            .map(|p| format!("===== {} =====\n{}", p.name, p.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The mp3 id in a "mp3 file_id: <fid> is now ready!" mail.
pub fn fid_from_mail(text: &str) -> Option<String> {
    let rest = text.split("mp3 file_id: ").nth(1)?;
    let fid: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    (fid.len() == 24).then_some(fid)
}

/// A process's memory as `/proc/<pid>/status` shows it, in KiB: (`VmRSS`, `VmHWM` = peak RSS).
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in /proc status"))?;
        line.split_whitespace().nth(1).context("no value")?.parse().context("not a number")
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS, so the next peak is measured from
/// now (Linux `clear_refs` 5).
pub fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("write /proc clear_refs")
}

/// An HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The header block, lower-cased names.
    pub headers: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (with a `Content-Length` body, as ours all have) from `rd`.
pub async fn read_response<R: tokio::io::AsyncRead + Unpin>(rd: &mut R) -> anyhow::Result<RawResponse> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = rd.read(&mut tmp).await?;
        if n == 0 {
            bail!("connection closed before a response ({} bytes read)", buf.len());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).context("no status")?.parse()?;
    let mut resp = RawResponse { status, headers: head.split_once("\r\n").map_or("", |(_, h)| h).to_owned(), body: String::new() };
    let len: usize = resp.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = rd.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    resp.body = String::from_utf8_lossy(&body).into_owned();
    Ok(resp)
}

/// Sends `head` (request line and headers, ending in an empty line) and then the body pieces
/// `chunks` (HTTP chunked encoding when `chunked`), while reading the answer at the same time:
/// a server may answer, and close, before the body ends, as ours do for refused uploads.
pub async fn send_streaming(
    port: u16,
    head: String,
    chunks: impl Iterator<Item = Vec<u8>> + Send + 'static,
    chunked: bool,
    timeout: Duration,
) -> anyhow::Result<RawResponse> {
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for c in chunks {
            if chunked {
                wr.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
                wr.write_all(&c).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(&c).await?;
            }
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        // Keep the write half open until the answer is read.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let resp = tokio::time::timeout(timeout, read_response(&mut rd)).await;
    writer.abort();
    resp.map_err(|_| anyhow::anyhow!("no response within {timeout:?}"))?
}

/// The Prometheus text a service serves at `url` (its `/metrics`).
pub async fn scrape(url: &str) -> anyhow::Result<String> {
    let resp = reqwest::Client::new().get(url).timeout(Duration::from_secs(5)).send().await?;
    if !resp.status().is_success() {
        bail!("{url} answered {}", resp.status());
    }
    Ok(resp.text().await?)
}

/// The sum of the samples of `name` whose labels include all of `labels` (`None` when there is
/// none), read from Prometheus text. Label values are compared as written (our values hold no
/// escapes).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let have: Vec<(&str, &str)> = label_text
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('=').map(|(k, v)| (k.trim_matches(','), v.trim_matches('"'))))
            .collect();
        if labels.iter().all(|want| have.contains(want)) {
            let v: f64 = value.trim().split(' ').next().unwrap_or("").parse().ok()?;
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Polls `url` until `metric(name, labels)` equals `expected` or `timeout` passes; returns the
/// last text read (for assertion messages) or the error naming what was seen.
pub async fn wait_metric(url: &str, name: &str, labels: &[(&str, &str)], expected: f64, timeout: Duration) -> anyhow::Result<String> {
    let last = std::sync::Mutex::new(Ok(String::new()));
    let found = poll_until(&format!("{name}{labels:?} at {url} to be {expected}"), timeout, || async {
        let scraped = scrape(url).await;
        let done = scraped.as_ref().ok().filter(|text| metric(text, name, labels) == Some(expected)).cloned();
        *last.lock().unwrap_or_else(|p| p.into_inner()) = scraped;
        done
    })
    .await;
    match (found, last.into_inner().unwrap_or_else(|p| p.into_inner())) {
        (Ok(text), _) => Ok(text),
        (Err(e), Ok(text)) => Err(e.context(format!("it is {:?}:\n{text}", metric(&text, name, labels)))),
        (Err(_), Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_text() {
        let text = "# TYPE a counter\na{method=\"GET\",route=\"/x\",status=\"200\"} 3\na{method=\"GET\",route=\"/y\",status=\"200\"} 4\nab 9\nb 1.5\n";
        assert_eq!(metric(text, "a", &[("route", "/x")]), Some(3.0));
        assert_eq!(metric(text, "a", &[("method", "GET")]), Some(7.0));
        assert_eq!(metric(text, "a", &[("method", "POST")]), None);
        assert_eq!(metric(text, "b", &[]), Some(1.5));
        assert_eq!(metric(text, "c", &[]), None);
    }
}
