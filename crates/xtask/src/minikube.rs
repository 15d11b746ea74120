//! `xtask minikube up|down`: mp3converter on a local minikube (docs/deploy.md).
//!
//! `up` starts minikube if needed, builds the four images inside its Docker, creates the Secrets
//! with generated values, applies the manifests, waits for the rollouts, and prints the
//! /etc/hosts line and the tutorial's curl flow. Safe to run again: it keeps the Secrets it
//! generated before (RabbitMQ and MySQL only read their credentials on first start) and
//! restarts the services so rebuilt :dev images are picked up. `down` removes what `up` (or
//! `kubectl apply -k manifests/`) deployed. scripts/minikube-up.sh and minikube-down.sh run these.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{json, Value};

use crate::deploy::on_path;

/// The Kubernetes a new cluster runs: minikube v1.37's default, the version `xtask check-deploy`
/// validates the manifests for.
pub const K8S_VERSION: &str = "1.34.0";
const NS: &str = "mp3converter";
const SERVICES: [&str; 4] = ["auth", "gateway", "converter", "notification"];

#[derive(clap::Subcommand)]
pub enum Minikube {
    /// Deploy to minikube: start it, build the images, make the Secrets, apply, wait.
    #[command(after_help = UP_ENV)]
    Up(Up),
    /// Remove what `up` deployed; by default the namespace mp3converter with everything in it.
    Down(Down),
}

const UP_ENV: &str = "Environment:
  MINIKUBE_K8S_VERSION  Kubernetes version for a new cluster (default 1.34.0, the one
                        `xtask check-deploy` validates; \"default\" = minikube's choice)
  MINIKUBE_START_ARGS   more arguments for a new cluster, e.g. \"--cpus=4 --memory=6g\"
  MYSQL_PASSWORD        the MySQL password of auth-configmap's MYSQL_USER on the host's MySQL
                        (default: the one already deployed; with --in-cluster-db generated).
                        Without either, the host path stops: no known password is deployed
  GMAIL_ADDRESS, GMAIL_PASSWORD   sender account and app password for the notification mail";

#[derive(clap::Args)]
pub struct Up {
    /// Run MySQL and MongoDB in the cluster (manifests/components/in-cluster-db) instead of using
    /// the ones on the minikube host (host.minikube.internal).
    #[arg(long)]
    in_cluster_db: bool,
    /// Scale the converter on queue length (manifests/components/keda; KEDA must already be
    /// installed in the cluster).
    #[arg(long)]
    keda: bool,
    /// Have cert-manager issue the ingress certificate (manifests/components/cert-manager;
    /// cert-manager must already be installed) instead of a self-signed one made here.
    #[arg(long)]
    cert_manager: bool,
    /// (With --in-cluster-db) add the tutorial's demo user georgio@email.com/Admin123
    /// (dev-seed.sql): a public password, for a throwaway cluster only.
    #[arg(long)]
    demo_user: bool,
    /// Do not rebuild the images.
    #[arg(long)]
    no_build: bool,
}

#[derive(clap::Args)]
pub struct Down {
    /// Delete the workloads, Services, Ingresses, ConfigMaps, autoscalers and policies, but keep
    /// the namespace, the Secrets and the PersistentVolumeClaims, so the next `up` finds its
    /// broker (and databases) as they were.
    #[arg(long)]
    keep_data: bool,
    /// Then stop minikube (minikube stop); the cluster and its images remain.
    #[arg(long)]
    stop: bool,
}

/// Runs `up` or `down`; errors are printed as the scripts printed them.
pub fn run(command: Minikube) -> ExitCode {
    let (tag, result) = match command {
        Minikube::Up(up) => ("minikube-up", self::up(&up)),
        Minikube::Down(down) => ("minikube-down", self::down(&down)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[{tag}] error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

macro_rules! log {
    ($tag:literal, $($arg:tt)*) => { eprintln!(concat!("[", $tag, "] {}"), format_args!($($arg)*)) };
}

/// The components of manifests/components/ a deployment with these choices applies.
pub struct Components {
    pub in_cluster_db: bool,
    pub keda: bool,
    pub cert_manager: bool,
}

pub fn components(c: &Components) -> Vec<&'static str> {
    let mut list = Vec::new();
    list.extend(c.in_cluster_db.then_some("in-cluster-db"));
    list.extend(c.keda.then_some("keda"));
    list.extend(c.cert_manager.then_some("cert-manager"));
    // Last: drops any Secret labelled as a placeholder, so applying never overwrites the ones
    // created here (the base ships none; this guards against one coming back).
    list.push("script-secrets");
    list
}

// --- running commands ------------------------------------------------------------------------

fn kubectl() -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.args(["-n", NS]);
    cmd
}

/// Whether the command succeeds; its output is discarded.
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Its standard output, if it succeeds.
fn stdout_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs it with the terminal's stderr (and stdout unless `quiet`); fails on a non-zero exit.
fn run_cmd(cmd: &mut Command, quiet: bool) -> anyhow::Result<()> {
    if quiet {
        cmd.stdout(Stdio::null());
    }
    let status = cmd.status().with_context(|| format!("run {:?}", cmd.get_program()))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

/// `kubectl apply -f -` of one object, given on standard input (never on a command line,
/// which other users can read in the process list).
fn apply(object: &Value) -> anyhow::Result<()> {
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("run kubectl apply")?;
    child.stdin.take().context("kubectl's stdin")?.write_all(object.to_string().as_bytes())?;
    let status = child.wait()?;
    ensure!(status.success(), "kubectl apply of {} {} failed", object["kind"], object["metadata"]["name"]);
    Ok(())
}

/// Whether minikube's API server runs (`minikube status` exits non-zero when it does not, but
/// still prints the state).
fn minikube_running() -> bool {
    Command::new("minikube")
        .args(["status", "--format", "{{.APIServer}}"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Running"))
}

fn has_crd(name: &str) -> bool {
    succeeds(Command::new("kubectl").args(["get", "crd", name]))
}

// --- up ---------------------------------------------------------------------------------------

fn up(opts: &Up) -> anyhow::Result<()> {
    let root = testkit::repo_root();
    let need =
        |program: &str, hint: &str| if on_path(program) { Ok(()) } else { Err(anyhow::anyhow!("{program} is not installed: {hint}")) };
    need("minikube", "see https://minikube.sigs.k8s.io/docs/start/")?;
    need("kubectl", "see https://kubernetes.io/docs/tasks/tools/ (or use 'minikube kubectl --')")?;
    need("docker", "the Docker CLI is needed to build inside minikube's Docker (https://docs.docker.com/engine/install/)")?;
    if !opts.no_build && !succeeds(Command::new("docker").args(["buildx", "version"])) {
        bail!("docker buildx (BuildKit) is missing: docker/Dockerfile uses cache mounts; install the docker-buildx plugin");
    }

    // The cluster.
    let k8s_version = std::env::var("MINIKUBE_K8S_VERSION").unwrap_or_else(|_| K8S_VERSION.into());
    if minikube_running() {
        log!("minikube-up", "minikube is running");
    } else {
        let start_args = start_args(&k8s_version, &std::env::var("MINIKUBE_START_ARGS").unwrap_or_default());
        log!("minikube-up", "starting minikube {}", start_args.join(" "));
        run_cmd(Command::new("minikube").arg("start").args(&start_args), false)?;
    }
    run_cmd(Command::new("kubectl").args(["config", "use-context", "minikube"]), true)?;
    let server_minor = stdout_of(Command::new("kubectl").args(["version", "-o", "json"])).and_then(|v| server_minor(&v));
    let wanted_minor = k8s_version.split('.').nth(1).unwrap_or_default();
    if let Some(minor) = server_minor.filter(|m| k8s_version != "default" && m != wanted_minor) {
        log!(
            "minikube-up",
            "warning: the cluster runs Kubernetes 1.{minor}; the manifests are validated for {k8s_version} and the newest schema (xtask check-deploy)"
        );
    }
    log!("minikube-up", "enabling the ingress and metrics-server addons");
    for addon in ["ingress", "metrics-server"] {
        run_cmd(Command::new("minikube").args(["addons", "enable", addon]), true)?;
    }
    if opts.keda && !has_crd("scaledobjects.keda.sh") {
        bail!(
            "--keda: KEDA is not installed (no CRD scaledobjects.keda.sh). Install it first, e.g.\n  helm repo add kedacore https://kedacore.github.io/charts && helm install keda kedacore/keda -n keda --create-namespace"
        );
    }

    // The images.
    if !opts.no_build {
        log!("minikube-up", "building images inside minikube's Docker");
        let docker_env = stdout_of(Command::new("minikube").args(["docker-env", "--shell", "bash"])).context(
            "minikube docker-env failed: images can only be built in a cluster using the docker runtime (minikube start --container-runtime=docker)",
        )?;
        // The same build step CI runs (scripts/images.sh), here with minikube's Docker engine.
        run_cmd(
            Command::new("bash").arg(root.join("scripts/images.sh")).envs(docker_exports(&docker_env)).env("MP3C_ENGINE", "docker"),
            false,
        )?;
    }

    // The namespace and the Secrets.
    run_cmd(Command::new("kubectl").args(["apply", "-f"]).arg(root.join("manifests/namespace/namespace.yaml")), true)?;
    let secrets = Secrets::gather(&root, opts)?;
    for spec in secrets.specs() {
        apply(&secret_object(&spec))?;
        log!("minikube-up", "secret/{}: {}", spec.name, spec.data.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(" "));
    }
    // The ingress certificate: cert-manager's, or a self-signed one made here (kept while valid).
    if !opts.cert_manager && !succeeds(kubectl().args(["get", "secret", "mp3converter-tls"])) {
        self_signed_certificate()?;
    }
    if opts.cert_manager && !has_crd("certificates.cert-manager.io") {
        bail!("--cert-manager: cert-manager is not installed (no CRD certificates.cert-manager.io); see https://cert-manager.io/docs/installation/");
    }
    if opts.in_cluster_db {
        // The schema: init.sql itself (kustomize may not read files outside manifests/); the demo
        // user of dev-seed.sql only when asked for.
        let read = |f: &str| std::fs::read_to_string(root.join(f)).with_context(|| format!("read {f}"));
        let mut files = vec![("init.sql".to_owned(), read("init.sql")?)];
        if opts.demo_user {
            files.push(("zz-demo-user.sql".to_owned(), demo_user_sql(&read("dev-seed.sql")?)));
        }
        apply(&labelled(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": files.into_iter().collect::<BTreeMap<_, _>>()}),
            "mysql-initdb",
            "mysql",
            false,
        ))?;
    }

    // The kustomization.
    let components = components(&Components { in_cluster_db: opts.in_cluster_db, keda: opts.keda, cert_manager: opts.cert_manager });
    let dir = root.join(".dev/minikube");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let header = "# Written by `xtask minikube up` (scripts/minikube-up.sh) on every run; applied with kubectl apply -k.\n";
    std::fs::write(dir.join("kustomization.yaml"), crate::deploy::kustomization(header, "../..", &components))?;
    log!("minikube-up", "kubectl apply -k .dev/minikube (manifests/ + {})", components.join(" "));
    run_cmd(Command::new("kubectl").args(["apply", "-k"]).arg(&dir), false)?;
    // Same :dev tag, new image: a restart is the only way pods pick up a rebuild (and new Secrets).
    run_cmd(kubectl().args(["rollout", "restart", "deployment"]).args(SERVICES), true)?;

    // Wait.
    let mut resources = vec!["statefulset/rabbitmq".to_owned()];
    if opts.in_cluster_db {
        resources.extend(["statefulset/mysql".to_owned(), "statefulset/mongo".to_owned()]);
    }
    resources.extend(SERVICES.iter().map(|s| format!("deployment/{s}")));
    for resource in &resources {
        if run_cmd(kubectl().args(["rollout", "status", resource, "--timeout=10m"]), false).is_err() {
            let _ = kubectl().args(["get", "pods", "-o", "wide"]).stdout(Stdio::inherit()).status();
            bail!(
                "{resource} did not become ready. Look at: kubectl -n {NS} describe {resource}; kubectl -n {NS} logs {resource}
  auth not ready: is MySQL reachable at MYSQL_HOST with init.sql applied and MYSQL_PASSWORD right (or use --in-cluster-db)?
  gateway/converter/notification not ready: is MongoDB reachable at MONGODB_URI (host: mongod --bind_ip_all)?"
            );
        }
    }
    let ip = stdout_of(Command::new("minikube").arg("ip")).unwrap_or_default();
    print!("{}", up_message(ip.trim(), opts.in_cluster_db && opts.demo_user));
    Ok(())
}

/// `minikube start`'s arguments: the Kubernetes version ("default": minikube's) and more.
fn start_args(k8s_version: &str, more: &str) -> Vec<String> {
    let mut args = Vec::new();
    if k8s_version != "default" {
        args.push(format!("--kubernetes-version=v{k8s_version}"));
    }
    args.extend(more.split_whitespace().map(str::to_owned));
    args
}

/// The server's minor version from `kubectl version -o json` ("34" of "34+").
fn server_minor(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    let minor: String = v["serverVersion"]["minor"].as_str()?.chars().take_while(char::is_ascii_digit).collect();
    Some(minor).filter(|m| !m.is_empty())
}

/// The variables `minikube docker-env --shell bash` exports (`export NAME="VALUE"`).
fn docker_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The value deployed now in a Secret, or nothing.
fn secret_value(name: &str, key: &str) -> String {
    let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
    stdout_of(kubectl().args(["get", "secret", name, "-o", &template])).unwrap_or_default()
}

/// The value kept if `keep` accepts it, else a new random one of `bytes` bytes.
fn kept(current: String, keep: impl Fn(&str) -> bool, bytes: usize) -> String {
    if keep(&current) {
        current
    } else {
        random_hex(bytes)
    }
}

fn long(min: usize) -> impl Fn(&str) -> bool {
    move |s| s.chars().count() >= min
}

/// A key of at least 32 characters that is not one of the former placeholders.
fn real_key(s: &str) -> bool {
    s.chars().count() >= 32 && !s.starts_with("dev-placeholder-")
}

/// The password of `amqp://USER:PASSWORD@...` when USER is the service's own user.
fn amqp_password(service: &str, url: &str) -> Option<String> {
    let rest = url.strip_prefix(&format!("amqp://{service}:"))?;
    rest.split_once('@').map(|(pw, _)| pw.to_owned())
}

/// The password of `mongodb://mp3converter:PASSWORD@...`.
fn mongo_app_password(uri: &str) -> Option<String> {
    uri.strip_prefix("mongodb://mp3converter:")?.split_once('@').map(|(pw, _)| pw.to_owned())
}

/// The `USE auth;` lines and the demo user's INSERT statement of dev-seed.sql.
fn demo_user_sql(seed: &str) -> String {
    let mut out = String::new();
    let mut on = false;
    for line in seed.lines() {
        if line.starts_with("USE auth;") {
            out.push_str(line);
            out.push('\n');
        }
        on |= line.starts_with("INSERT IGNORE INTO `user`");
        if on {
            out.push_str(line);
            out.push('\n');
            if line.contains(';') {
                break;
            }
        }
    }
    out
}

/// A value of a ConfigMap of the base manifests (e.g. auth-configmap's MYSQL_USER).
fn config_value(root: &Path, file: &str, key: &str) -> anyhow::Result<String> {
    let objects = testkit::manifests::load_file(&root.join("manifests").join(file))?;
    let value = objects.iter().filter_map(|o| o.get("data")?.get(key)).next().with_context(|| format!("manifests/{file} has no {key}"))?;
    Ok(value.as_str().map_or_else(|| serde_yaml::to_string(value).unwrap_or_default().trim().to_owned(), str::to_owned))
}

/// Every generated value, kept from the Secrets deployed before where there are any (the
/// databases read theirs only when they first initialise their volumes). None is ever a value
/// printed in the repository.
struct Secrets {
    amqp: BTreeMap<&'static str, String>,
    rabbit_admin: String,
    definitions: String,
    jwt: String,
    link: String,
    mysql: String,
    mysql_root: Option<String>,
    mysql_db: String,
    mysql_user: String,
    gmail: (String, String),
    /// (root password, application password) of the in-cluster MongoDB.
    mongo: Option<(String, String)>,
}

/// One Secret to create or update: name, its `app` label, and its keys and values.
struct SecretSpec {
    name: &'static str,
    app: &'static str,
    data: Vec<(String, String)>,
}

impl Secrets {
    fn gather(root: &Path, opts: &Up) -> anyhow::Result<Self> {
        let mut amqp = BTreeMap::new();
        for svc in ["gateway", "converter", "notification"] {
            let deployed = amqp_password(svc, &secret_value(&format!("{svc}-secret"), "AMQP_URL")).unwrap_or_default();
            amqp.insert(svc, kept(deployed, long(16), 24));
        }
        let rabbit_admin = kept(secret_value("rabbitmq-definitions", "admin-password"), long(16), 24);
        // RabbitMQ loads these definitions at every boot: an administrator and one user per
        // service, limited to its queues; no guest user.
        let video_queue = config_value(root, "gateway/configmap.yaml", "VIDEO_QUEUE")?;
        let mp3_queue = config_value(root, "notification/configmap.yaml", "MP3_QUEUE")?;
        let definitions = crate::rabbitmq::definitions(("admin", &rabbit_admin), &amqp, "/", (&video_queue, &mp3_queue), "")
            .context("could not write the RabbitMQ definitions")?;
        // Signed download links: one key for the gateway (checks them) and notification (mails them).
        let jwt = kept(secret_value("auth-secret", "JWT_SECRET"), real_key, 48);
        let link = kept(secret_value("gateway-secret", "DOWNLOAD_LINK_SECRET"), real_key, 48);
        let mysql_user = config_value(root, "auth/configmap.yaml", "MYSQL_USER")?;
        let mut mysql =
            std::env::var("MYSQL_PASSWORD").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| secret_value("auth-secret", "MYSQL_PASSWORD"));
        if mysql.is_empty() {
            ensure!(
                opts.in_cluster_db,
                "MYSQL_PASSWORD is not set: give the password of {mysql_user} on the host's MySQL (create that user with one of your own, docs/deploy.md), or use --in-cluster-db"
            );
            mysql = random_hex(24);
        }
        let from_env_or = |var: &str, key: &str| {
            std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| secret_value("notification-secret", key))
        };
        let gmail = (from_env_or("GMAIL_ADDRESS", "GMAIL_ADDRESS"), from_env_or("GMAIL_PASSWORD", "GMAIL_PASSWORD"));
        if gmail.0.is_empty() || gmail.1.is_empty() {
            log!(
                "minikube-up",
                "warning: GMAIL_ADDRESS / GMAIL_PASSWORD not set: notification will not start until notification-secret has them"
            );
        }
        let (mongo, mysql_root) = if opts.in_cluster_db {
            let app = kept(mongo_app_password(&secret_value("gateway-secret", "MONGODB_URI")).unwrap_or_default(), long(16), 24);
            let root_pw = kept(secret_value("mongo-secret", "MONGO_INITDB_ROOT_PASSWORD"), long(16), 24);
            let mysql_root =
                kept(secret_value("mysql-secret", "MYSQL_ROOT_PASSWORD"), |s| !s.is_empty() && !s.starts_with("dev-placeholder-"), 24);
            (Some((root_pw, app)), Some(mysql_root))
        } else {
            (None, None)
        };
        let mysql_db = config_value(root, "auth/configmap.yaml", "MYSQL_DB")?;
        Ok(Self { amqp, rabbit_admin, definitions, jwt, link, mysql, mysql_root, mysql_db, mysql_user, gmail, mongo })
    }

    /// The Secrets to create, in order.
    fn specs(&self) -> Vec<SecretSpec> {
        let pairs = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
        let amqp_url = |svc: &str| format!("amqp://{svc}:{}@rabbitmq:5672/%2f", self.amqp[svc]);
        let mut specs = Vec::new();
        let mut mongo_uri = Vec::new();
        if let Some((root_pw, app_pw)) = &self.mongo {
            specs.push(SecretSpec {
                name: "mongo-secret",
                app: "mongo",
                data: pairs(&[
                    ("MONGO_INITDB_ROOT_USERNAME", "admin"),
                    ("MONGO_INITDB_ROOT_PASSWORD", root_pw),
                    ("MONGO_APP_USERNAME", "mp3converter"),
                    ("MONGO_APP_PASSWORD", app_pw),
                ]),
            });
            mongo_uri.push(("MONGODB_URI".to_owned(), format!("mongodb://mp3converter:{app_pw}@mongo:27017/?authSource=admin")));
        }
        let with_mongo = |mut data: Vec<(String, String)>| {
            data.extend(mongo_uri.iter().cloned());
            data
        };
        specs.push(SecretSpec {
            name: "rabbitmq-definitions",
            app: "rabbitmq",
            data: pairs(&[("definitions.json", &self.definitions), ("admin-password", &self.rabbit_admin)]),
        });
        specs.push(SecretSpec {
            name: "auth-secret",
            app: "auth",
            data: pairs(&[("MYSQL_PASSWORD", &self.mysql), ("JWT_SECRET", &self.jwt)]),
        });
        specs.push(SecretSpec {
            name: "gateway-secret",
            app: "gateway",
            data: with_mongo(pairs(&[("AMQP_URL", &amqp_url("gateway")), ("DOWNLOAD_LINK_SECRET", &self.link)])),
        });
        specs.push(SecretSpec {
            name: "converter-secret",
            app: "converter",
            data: with_mongo(pairs(&[("AMQP_URL", &amqp_url("converter"))])),
        });
        specs.push(SecretSpec {
            name: "notification-secret",
            app: "notification",
            data: with_mongo(pairs(&[
                ("AMQP_URL", &amqp_url("notification")),
                ("GMAIL_ADDRESS", &self.gmail.0),
                ("GMAIL_PASSWORD", &self.gmail.1),
                ("DOWNLOAD_LINK_SECRET", &self.link),
            ])),
        });
        if let Some(root_pw) = &self.mysql_root {
            // The image creates MYSQL_USER with MYSQL_PASSWORD (ALL on MYSQL_DATABASE) before init.sql.
            specs.push(SecretSpec {
                name: "mysql-secret",
                app: "mysql",
                data: pairs(&[
                    ("MYSQL_ROOT_PASSWORD", root_pw),
                    ("MYSQL_DATABASE", &self.mysql_db),
                    ("MYSQL_USER", &self.mysql_user),
                    ("MYSQL_PASSWORD", &self.mysql),
                ]),
            });
        }
        specs
    }
}

/// The object with its namespace and labels: `app`, part-of mp3converter and (for the Secrets
/// generated here) managed-by minikube-up.
fn labelled(mut object: Value, name: &str, app: &str, managed: bool) -> Value {
    let mut labels = json!({"app": app, "app.kubernetes.io/part-of": "mp3converter"});
    if managed {
        labels["mp3converter.dev/managed-by"] = json!("minikube-up");
    }
    object["metadata"] = json!({"name": name, "namespace": NS, "labels": labels});
    object
}

fn secret_object(spec: &SecretSpec) -> Value {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let data: BTreeMap<&str, String> = spec.data.iter().map(|(k, v)| (k.as_str(), b64(v))).collect();
    labelled(json!({"apiVersion": "v1", "kind": "Secret", "data": data}), spec.name, spec.app, true)
}

/// secret/mp3converter-tls: a self-signed certificate for mp3converter.com, made by openssl in a
/// private temporary folder.
fn self_signed_certificate() -> anyhow::Result<()> {
    ensure!(on_path("openssl"), "openssl is needed to make the ingress certificate (or use --cert-manager)");
    log!("minikube-up", "making a self-signed certificate for mp3converter.com (secret/mp3converter-tls)");
    let dir = tempfile::tempdir().context("a temporary folder")?;
    let (key, crt): (PathBuf, PathBuf) = (dir.path().join("tls.key"), dir.path().join("tls.crt"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj", "/CN=mp3converter.com"])
        .args(["-addext", "subjectAltName=DNS:mp3converter.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ensure!(made, "openssl could not make the certificate");
    let b64 = |p: &Path| std::fs::read(p).map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    let object =
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": {"tls.crt": b64(&crt)?, "tls.key": b64(&key)?}});
    apply(&labelled(object, "mp3converter-tls", "gateway", false))
}

/// What `up` prints at the end: the /etc/hosts line, the tutorial's flow, RabbitMQ's console.
fn up_message(ip: &str, demo_user: bool) -> String {
    let user_hint = if demo_user {
        "the demo user (--demo-user, dev-seed.sql): -u georgio@email.com:Admin123".to_owned()
    } else {
        format!("a user of yours: kubectl -n {NS} exec -i deploy/auth -- auth user add you@example.com  (password on stdin)")
    };
    format!(
        r#"
mp3converter is up in namespace {NS}.

1. Make the ingress host resolve (once), e.g.:
     echo "{ip} mp3converter.com" | sudo tee -a /etc/hosts
   (with the docker driver on macOS or Windows, run 'minikube tunnel' and use 127.0.0.1 instead)

2. The tutorial's flow over HTTPS ({user_hint}; the certificate is self-signed unless
   --cert-manager with a real issuer, hence -k):
     TOKEN=$(curl -sk -X POST https://mp3converter.com/login -u EMAIL:PASSWORD)
     curl -k -X POST -F 'file=@./test.mkv' -H "Authorization: Bearer $TOKEN" https://mp3converter.com/upload
     # an email arrives at the uploader's address: "mp3 file_id: <fid> is now ready!"
     curl -k --output out.mp3 -H "Authorization: Bearer $TOKEN" "https://mp3converter.com/download?fid=<fid>"

3. RabbitMQ management (not on the ingress): kubectl -n {NS} port-forward svc/rabbitmq 15672
   then http://127.0.0.1:15672, user admin, password:
     kubectl -n {NS} get secret rabbitmq-definitions -o go-template='{{{{index .data "admin-password" | base64decode}}}}'

Tear down: scripts/minikube-down.sh [--keep-data] [--stop]
"#
    )
}

// --- down -------------------------------------------------------------------------------------

fn down(opts: &Down) -> anyhow::Result<()> {
    let root = testkit::repo_root();
    ensure!(on_path("minikube"), "minikube is not installed");
    ensure!(on_path("kubectl"), "kubectl is not installed");
    if !minikube_running() {
        log!("minikube-down", "minikube is not running: nothing to delete");
    } else {
        run_cmd(Command::new("kubectl").args(["config", "use-context", "minikube"]), true)?;
        if !succeeds(Command::new("kubectl").args(["get", "namespace", NS])) {
            log!("minikube-down", "namespace {NS} does not exist: nothing to delete");
        } else if opts.keep_data {
            let kinds = keep_data_kinds(has_crd("scaledobjects.keda.sh"));
            log!("minikube-down", "deleting {kinds} labelled app.kubernetes.io/part-of=mp3converter (Secrets and volumes kept)");
            run_cmd(
                kubectl().args(["delete", &kinds, "-l", "app.kubernetes.io/part-of=mp3converter", "--ignore-not-found", "--wait"]),
                false,
            )?;
        } else {
            log!("minikube-down", "deleting namespace {NS} (everything in it, data included)");
            run_cmd(Command::new("kubectl").args(["delete", "namespace", NS, "--ignore-not-found", "--wait", "--timeout=5m"]), false)?;
        }
    }
    let dir = root.join(".dev/minikube");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    if opts.stop {
        log!("minikube-down", "stopping minikube");
        run_cmd(Command::new("minikube").arg("stop"), false)?;
    }
    log!("minikube-down", "done");
    Ok(())
}

/// What `down --keep-data` deletes: everything but the namespace, Secrets and volume claims.
fn keep_data_kinds(keda: bool) -> String {
    let mut kinds =
        "deployments,statefulsets,services,ingresses,configmaps,horizontalpodautoscalers,poddisruptionbudgets,networkpolicies".to_owned();
    if keda {
        kinds.push_str(",scaledobjects.keda.sh,triggerauthentications.keda.sh");
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(in_cluster_db: bool) -> Secrets {
        Secrets {
            amqp: ["gateway", "converter", "notification"].into_iter().map(|s| (s, format!("{s}-password-0123456789"))).collect(),
            rabbit_admin: "admin-password-0123456789".into(),
            definitions: "{}".into(),
            jwt: "j".repeat(96),
            link: "l".repeat(96),
            mysql: "mysql-password".into(),
            mysql_root: in_cluster_db.then(|| "root-password".into()),
            mysql_db: "auth".into(),
            mysql_user: "auth_user".into(),
            gmail: ("me@gmail.com".into(), "app password".into()),
            mongo: in_cluster_db.then(|| ("mongo-root".into(), "mongo-app-password".into())),
        }
    }

    fn keys(spec: &SecretSpec) -> Vec<&str> {
        spec.data.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn the_secrets_of_each_deployment() {
        let host = secrets(false).specs();
        let names: Vec<&str> = host.iter().map(|s| s.name).collect();
        assert_eq!(names, ["rabbitmq-definitions", "auth-secret", "gateway-secret", "converter-secret", "notification-secret"]);
        assert_eq!(keys(&host[2]), ["AMQP_URL", "DOWNLOAD_LINK_SECRET"]);
        assert_eq!(host[3].data[0].1, "amqp://converter:converter-password-0123456789@rabbitmq:5672/%2f");

        let in_cluster = secrets(true).specs();
        let names: Vec<&str> = in_cluster.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "mongo-secret",
                "rabbitmq-definitions",
                "auth-secret",
                "gateway-secret",
                "converter-secret",
                "notification-secret",
                "mysql-secret"
            ]
        );
        let uri = "mongodb://mp3converter:mongo-app-password@mongo:27017/?authSource=admin";
        for spec in &in_cluster[3..6] {
            assert!(spec.data.iter().any(|(k, v)| k == "MONGODB_URI" && v == uri), "{}", spec.name);
        }
        assert_eq!(keys(&in_cluster[6]), ["MYSQL_ROOT_PASSWORD", "MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD"]);
    }

    #[test]
    fn a_secret_object_carries_base64_values_and_labels() {
        let spec = SecretSpec { name: "auth-secret", app: "auth", data: vec![("JWT_SECRET".into(), "s3cret".into())] };
        let object = secret_object(&spec);
        assert_eq!(object["data"]["JWT_SECRET"], "czNjcmV0");
        assert_eq!(object["metadata"]["namespace"], NS);
        assert_eq!(object["metadata"]["labels"]["mp3converter.dev/managed-by"], "minikube-up");
        assert_eq!(object["metadata"]["labels"]["app"], "auth");
    }

    #[test]
    fn deployed_values_are_kept_or_replaced() {
        assert_eq!(amqp_password("gateway", "amqp://gateway:pw0123456789abcdef@rabbitmq:5672/%2f").as_deref(), Some("pw0123456789abcdef"));
        assert_eq!(amqp_password("gateway", "amqp://converter:pw@rabbitmq:5672/%2f"), None);
        assert_eq!(mongo_app_password("mongodb://mp3converter:abc@mongo:27017/?authSource=admin").as_deref(), Some("abc"));
        assert_eq!(kept("short".into(), long(16), 24).len(), 48);
        assert_eq!(kept("a-password-long-enough".into(), long(16), 24), "a-password-long-enough");
        assert!(!real_key(&format!("dev-placeholder-{}", "x".repeat(40))));
        assert_ne!(random_hex(24), random_hex(24));
    }

    #[test]
    fn the_kustomization_lists_the_chosen_components_then_script_secrets() {
        let all = components(&Components { in_cluster_db: true, keda: true, cert_manager: true });
        assert_eq!(all, ["in-cluster-db", "keda", "cert-manager", "script-secrets"]);
        assert_eq!(components(&Components { in_cluster_db: false, keda: true, cert_manager: false }), ["keda", "script-secrets"]);
    }

    #[test]
    fn command_output_is_read() {
        assert_eq!(start_args("1.34.0", "--cpus=4  --memory=6g"), ["--kubernetes-version=v1.34.0", "--cpus=4", "--memory=6g"]);
        assert!(start_args("default", "").is_empty());
        let version = r#"{"clientVersion": {"minor": "33"}, "serverVersion": {"major": "1", "minor": "34+"}}"#;
        assert_eq!(server_minor(version).as_deref(), Some("34"));
        let env = "export DOCKER_TLS_VERIFY=\"1\"\nexport DOCKER_HOST=\"tcp://192.168.49.2:2376\"\n# To point your shell ...\n";
        assert_eq!(
            docker_exports(env),
            [("DOCKER_TLS_VERIFY".into(), "1".into()), ("DOCKER_HOST".into(), "tcp://192.168.49.2:2376".into())]
        );
        assert!(keep_data_kinds(true).ends_with(",triggerauthentications.keda.sh"));
    }

    #[test]
    fn the_demo_user_comes_from_dev_seed() {
        let seed = "-- x\nUSE auth;\nCREATE USER x;\n-- INSERT IGNORE keeps\nINSERT IGNORE INTO `user` (email) VALUES (\n  'georgio@email.com'\n);\nOTHER;\n";
        assert_eq!(demo_user_sql(seed), "USE auth;\nINSERT IGNORE INTO `user` (email) VALUES (\n  'georgio@email.com'\n);\n");
        let real = std::fs::read_to_string(testkit::repo_root().join("dev-seed.sql")).unwrap();
        assert!(demo_user_sql(&real).contains("georgio@email.com"));
    }
}
