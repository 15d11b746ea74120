//! `xtask pods up`: render manifests/ with kustomize through a small generated overlay and run
//! the result with `podman kube play`, using the four images `xtask images` built. Waits until
//! every probe of every Deployment answers, then prints the gateway's URL and the tutorial's curl
//! flow. `xtask pods down` removes it all.
//!
//! The overlay (.dev/pods/<name>/overlay/kustomization.yaml, written on every run) changes only
//! what a laptop container runtime lacks, each patch listed there with its reason:
//!   - hostNetwork and one replica: there is no cluster network, Service or DNS; the host's
//!     MariaDB, RabbitMQ, MongoDB and maildev listen on 127.0.0.1 only, reachable from the host's
//!     network namespace; each service's port moves to a free one on 127.0.0.1 (PORT/HEALTH_PORT
//!     and the containerPort its probes name), never 8080/5000, which a dev-up may hold
//!   - the host's servers instead of the cluster's: MYSQL_HOST, MONGODB_URI, AUTH_SVC_ADDRESS,
//!     the AMQP host, and maildev instead of Gmail (SMTP_*)
//!   - isolation on the shared servers: a MySQL database and user, a RabbitMQ vhost with one user
//!     per service (limited to its queues), MongoDB databases, all named after <name>
//!   - Secrets: the base has none (manifests/secret-templates/ lists them); values generated here,
//!     handed to podman as podman secrets (`podman kube play` 4.3 does not take Secret objects)
//!   - emptyDir volumes renamed per service (podman makes a named volume of each)
//!
//! Every image, securityContext, envFrom, probe, resource and other setting stays as the base has
//! it. Services, Ingresses, autoscalers, PodDisruptionBudgets, NetworkPolicies and the RabbitMQ
//! StatefulSet are not run (podman has no such objects; the host's broker stands in).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use testkit::manifests;

use super::{log, play, port_taken, rabbitmqctl, run_with_input, secret, Instance, Name, Podman, SERVICES};

const ME: &str = "pods-up";

#[derive(clap::Args)]
pub struct Options {
    /// Instance name: prefixes pods, secrets, volumes, the MySQL database/user, the RabbitMQ
    /// vhost/users and the MongoDB databases.
    #[arg(long, default_value = Name::DEFAULT)]
    pub name: Name,
    /// Don't add the tutorial's demo user (georgio@email.com / Admin123).
    #[arg(long)]
    pub no_demo_user: bool,
    /// The gateway's port on 127.0.0.1 (each port: 0 picks a free one).
    #[arg(long, env = "PODS_GATEWAY_PORT", default_value_t = 28080)]
    pub gateway_port: u16,
    /// auth's port.
    #[arg(long, env = "PODS_AUTH_PORT", default_value_t = 25000)]
    pub auth_port: u16,
    /// The converter's health port.
    #[arg(long, env = "PODS_CONVERTER_PORT", default_value_t = 28081)]
    pub converter_port: u16,
    /// The notification service's health port.
    #[arg(long, env = "PODS_NOTIFICATION_PORT", default_value_t = 28082)]
    pub notification_port: u16,
    /// Seconds to wait for every probe.
    #[arg(long, env = "PODS_READY_TIMEOUT", default_value_t = 180)]
    pub ready_timeout: u64,
    /// The MongoDB to use.
    #[arg(long, env = "MONGODB_URI", default_value = "mongodb://127.0.0.1:27017", hide_env_values = true)]
    pub mongodb_uri: String,
}

/// The generated secrets of one instance.
struct Secrets {
    mysql: String,
    jwt: String,
    link: String,
    amqp: BTreeMap<&'static str, String>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let name = &opts.name;
    let root = testkit::repo_root();
    let podman = Podman::setup()?;
    if super::engine() != "podman" {
        log(ME, "a Docker engine answers, but kube play needs podman: using podman");
    }
    for svc in SERVICES {
        if !podman.ok(&["image", "exists", &format!("mp3converter/{svc}:dev")]) {
            bail!("image mp3converter/{svc}:dev is missing: run scripts/images.sh first");
        }
    }
    if !Command::new("bash").arg(root.join("scripts/deps.sh")).stdin(std::process::Stdio::null()).status().is_ok_and(|s| s.success()) {
        bail!("scripts/deps.sh failed");
    }

    let state = name.state_dir();
    if state.is_dir() {
        log(ME, format!("an earlier {name} is recorded: removing it first"));
        super::down::run(name).await?;
    }
    std::fs::create_dir_all(&state).with_context(|| format!("create {}", state.display()))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;

    let or_free = |p: u16| if p == 0 { testkit::free_port() } else { p };
    let ports: BTreeMap<&str, u16> = [
        ("auth", or_free(opts.auth_port)),
        ("gateway", or_free(opts.gateway_port)),
        ("converter", or_free(opts.converter_port)),
        ("notification", or_free(opts.notification_port)),
    ]
    .into();
    for (svc, port) in &ports {
        if port_taken(*port) {
            bail!("127.0.0.1:{port} (for {svc}) is taken; set PODS_{}_PORT (0 = any free port)", svc.to_uppercase());
        }
    }

    let id = name.id();
    let secrets = Secrets {
        mysql: secret(32),
        jwt: secret(32),
        link: secret(32),
        amqp: crate::rabbitmq::SERVICES.into_iter().map(|s| (s, secret(32))).collect(),
    };
    // The queue names the ConfigMaps give (the overlay keeps them; the vhost isolates them).
    let base = manifests::load_base(&manifests::dir())?;
    let queue = |cm: &str, key: &str| -> anyhow::Result<String> {
        manifests::configmap_data(&base, cm).and_then(|mut d| d.remove(key)).with_context(|| format!("{cm} sets no {key}"))
    };
    let (video_q, mp3_q) = (queue("gateway-configmap", "VIDEO_QUEUE")?, queue("notification-configmap", "MP3_QUEUE")?);
    // Recorded first, so `pods down` can clean up even when a later step fails.
    Instance { id: id.clone(), mongo: opts.mongodb_uri.clone(), gateway_port: ports["gateway"], auth_port: ports["auth"] }.write(name)?;

    // --- the host's servers: a database, a vhost, users of this instance only -------------------
    log(ME, format!("MySQL: database and user {id} (generated password)"));
    if !run_with_input(&mut crate::mysql::client(), &mysql_setup(&id, &secrets.mysql)?) {
        bail!("could not create the MySQL database {id}");
    }

    log(ME, format!("RabbitMQ: vhost {name}, one user per service limited to its queues (generated passwords)"));
    let vhost = name.to_string();
    let listed =
        || super::run_checked("rabbitmqctl list_vhosts", Command::new("rabbitmqctl").args(["-q", "list_vhosts"])).map(|o| o.stdout);
    if !rabbitmqctl(&["add_vhost", &vhost]) && !listed().is_ok_and(|out| String::from_utf8_lossy(&out).lines().any(|l| l == vhost)) {
        bail!("rabbitmqctl add_vhost {name} failed");
    }
    // The permissions the cluster's definitions give (crate::rabbitmq), in the vhost.
    for (svc, rx) in crate::rabbitmq::service_permissions(&video_q, &mp3_q) {
        let user = format!("{name}-{svc}");
        rabbitmqctl(&["delete_user", &user]);
        if !run_with_input(Command::new("rabbitmqctl").args(["-q", "add_user", &user]), &secrets.amqp[svc]) {
            bail!("rabbitmqctl add_user {user} failed");
        }
        if !rabbitmqctl(&["set_permissions", "-p", &vhost, &user, &rx, &rx, &rx]) {
            bail!("rabbitmqctl set_permissions {user} failed");
        }
    }

    // --- the overlay ------------------------------------------------------------------------------
    let overlay = state.join("overlay");
    std::fs::create_dir_all(&overlay)?;
    // Canonical, as the root is: the relative path counts real folders, not `..` segments.
    let overlay = overlay.canonicalize().with_context(|| format!("resolve {}", overlay.display()))?;
    let rel = super::relative(&root.join("manifests"), &overlay);
    crate::write(&overlay.join("kustomization.yaml"), &kustomization(name, &rel.display().to_string(), &ports, &opts.mongodb_uri))?;
    write_private(&overlay.join("secrets.yaml"), &secrets_yaml(name, &secrets))?;

    log(ME, format!("kubectl kustomize {}", overlay.display()));
    let rendered = super::run_checked("kubectl kustomize", Command::new("kubectl").arg("kustomize").arg(&overlay))?;
    write_private(&state.join("rendered.yaml"), &String::from_utf8_lossy(&rendered.stdout))?;

    // --- what podman runs: our four Deployments and their ConfigMaps; Secrets as podman secrets ---
    let objects = manifests::parse(&String::from_utf8_lossy(&rendered.stdout), "rendered overlay")?;
    let split = play::split(&objects).context("rendering for podman failed")?;
    let mut recorded = String::new();
    for (sname, data) in &split.secrets {
        let file = state.join(format!("secret-{sname}.json"));
        write_private(&file, &serde_json::to_string(data)?)?;
        podman.ok(&["secret", "rm", sname]);
        let made = podman.output(&["secret", "create", sname, &file.display().to_string()]);
        std::fs::remove_file(&file)?;
        made?;
        writeln!(recorded, "{sname}")?;
        crate::write(&state.join("secrets"), &recorded)?;
    }
    let play_file = state.join("play.yaml");
    crate::write(&play_file, &split.play_yaml()?)?;

    log(ME, format!("podman kube play ({} Deployments)", split.deployments()));
    let out =
        podman.cmd().args(["kube", "play"]).arg(&play_file).stdin(std::process::Stdio::null()).output().context("run podman kube play")?;
    let play_log = [out.stdout, out.stderr].concat();
    std::fs::write(state.join("play.log"), &play_log)?;
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&play_log));
        bail!("podman kube play failed; remove what was made with scripts/pods-down.sh --name {name}");
    }

    // --- ready: every probe of every Deployment answers ---------------------------------------------
    let deadline = Instant::now() + Duration::from_secs(opts.ready_timeout);
    let client = reqwest::Client::new();
    for p in play::probes(&split.keep)? {
        let url = format!("http://127.0.0.1:{}{}", p.port, p.path);
        loop {
            let answered = client.get(&url).timeout(Duration::from_secs(3)).send().await.is_ok_and(|r| r.status().is_success());
            if answered {
                break;
            }
            let container = name.container(&p.service);
            let status = podman.output(&["inspect", "--format", "{{.State.Status}}", &container]).map(|s| s.trim().to_owned());
            let status = status.unwrap_or_else(|_| "missing".into());
            if status != "running" || Instant::now() > deadline {
                podman.show_logs(&container, 40);
                bail!(
                    "{}: {} probe {url} did not answer 200 (container {status}); scripts/pods-down.sh --name {name} removes it",
                    p.service,
                    p.kind
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        log(ME, format!("{}: {} probe {} answers on 127.0.0.1:{}", p.service, p.kind, p.path, p.port));
    }

    play::inspect(&podman, name, &split.keep).context("a container does not run as its manifest says")?;
    // Auth is ready once it has applied its migrations: the demo user's table exists now.
    if !opts.no_demo_user && !run_with_input(&mut crate::mysql::client(), &demo_user_sql(&root, &id)?) {
        bail!("could not add the demo user to the MySQL database {id}");
    }

    let gw = format!("http://127.0.0.1:{}", ports["gateway"]);
    let demo = if opts.no_demo_user {
        format!("EMAIL:PASSWORD  # add one: podman exec -i {} auth user add EMAIL", name.container("auth"))
    } else {
        "georgio@email.com:Admin123".to_owned()
    };
    println!(
        "
mp3converter runs in podman from manifests/ (instance {name}): gateway {gw}

  TOKEN=$(curl -s -X POST {gw}/login -u {demo})
  curl -X POST -F 'file=@./test.mkv' -H \"Authorization: Bearer $TOKEN\" {gw}/upload
  # the mail arrives at http://127.0.0.1:1080 : \"mp3 file_id: <fid> is now ready!\"
  curl --output out.mp3 -H \"Authorization: Bearer $TOKEN\" \"{gw}/download?fid=<fid>\"

Logs: podman logs {}  (also -auth, -converter, -notification)
Tear down: scripts/pods-down.sh --name {name}",
        name.container("gateway")
    );
    Ok(())
}

/// A file only its owner may read (it holds generated secrets).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    // A file left by an earlier run keeps its mode: make sure.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(|| format!("chmod {}", path.display()))
}

/// The statement of `sql` that starts with `start`, through its `;`.
fn statement<'a>(sql: &'a str, start: &str, file: &str) -> anyhow::Result<&'a str> {
    let mut lines = sql.split_inclusive('\n').scan(0, |offset, line| {
        let at = *offset;
        *offset += line.len();
        Some((at, line))
    });
    let from = lines.find(|(_, l)| l.starts_with(start)).map(|(at, _)| at).with_context(|| format!("{file} has no {start}"))?;
    let len = sql[from..].find(';').with_context(|| format!("{file}: {start} does not end"))? + 1;
    Ok(&sql[from..from + len])
}

/// The SQL that makes the instance's database and its user, with the rights auth needs to apply
/// its migrations when it starts (the tables are the migrations', not made here).
fn mysql_setup(id: &str, password: &str) -> anyhow::Result<String> {
    let mut sql = format!("CREATE DATABASE IF NOT EXISTS `{id}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n");
    for host in ["127.0.0.1", "localhost"] {
        writeln!(sql, "CREATE USER IF NOT EXISTS '{id}'@'{host}' IDENTIFIED BY '{password}';")?;
        writeln!(sql, "ALTER USER '{id}'@'{host}' IDENTIFIED BY '{password}';")?;
        writeln!(sql, "GRANT {} ON `{id}`.* TO '{id}'@'{host}';", testkit::AUTH_GRANTS)?;
    }
    Ok(sql)
}

/// dev-seed.sql's demo user, into the instance's database (whose table auth has made by then).
fn demo_user_sql(root: &Path, id: &str) -> anyhow::Result<String> {
    let seed = std::fs::read_to_string(root.join("dev-seed.sql")).context("read dev-seed.sql")?;
    Ok(format!("USE `{id}`;\n{}\n", statement(&seed, "INSERT IGNORE INTO `user`", "dev-seed.sql")?))
}

/// The overlay: the base, the generated Secrets, and the patches of the module's doc.
fn kustomization(name: &Name, base: &str, ports: &BTreeMap<&str, u16>, mongo: &str) -> String {
    let id = name.id();
    let mut k = format!(
        "# Written by `xtask pods up` on every run (never committed: it holds generated secrets).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
# podman's names are global: pods, volumes and secrets carry the instance's name.
namePrefix: {name}-
resources:
  - {base}
  # The Secrets the base leaves to the deployer (manifests/secret-templates/), generated here.
  - secrets.yaml
patches:
"
    );
    for svc in SERVICES {
        let _ = write!(
            k,
            "  # podman: no cluster network; the host's servers listen on 127.0.0.1 only.
  - target: {{kind: Deployment, name: {svc}}}
    patch: |-
      - {{op: add, path: /spec/replicas, value: 1}}
      - {{op: add, path: /spec/template/spec/hostNetwork, value: true}}
      - {{op: replace, path: /spec/template/spec/containers/0/ports/0/containerPort, value: {port}}}
      - {{op: replace, path: /spec/template/spec/volumes/0/name, value: {name}-{svc}-tmp}}
      - {{op: replace, path: /spec/template/spec/containers/0/volumeMounts/0/name, value: {name}-{svc}-tmp}}
",
            port = ports[svc]
        );
    }
    let (auth, gateway, converter, notification) = (ports["auth"], ports["gateway"], ports["converter"], ports["notification"]);
    let _ = write!(
        k,
        "  # The host's servers, this instance's database, vhost and users; ports moved.
  - target: {{kind: ConfigMap, name: auth-configmap}}
    patch: |-
      - {{op: replace, path: /data/PORT, value: \"{auth}\"}}
      - {{op: replace, path: /data/MYSQL_HOST, value: 127.0.0.1}}
      - {{op: replace, path: /data/MYSQL_USER, value: {id}}}
      - {{op: replace, path: /data/MYSQL_DB, value: {id}}}
  - target: {{kind: ConfigMap, name: gateway-configmap}}
    patch: |-
      - {{op: replace, path: /data/PORT, value: \"{gateway}\"}}
      - {{op: replace, path: /data/AUTH_SVC_ADDRESS, value: \"127.0.0.1:{auth}\"}}
      - {{op: replace, path: /data/MONGODB_URI, value: \"{mongo}\"}}
      - {{op: replace, path: /data/MONGODB_VIDEOS_DB, value: {id}_videos}}
      - {{op: replace, path: /data/MONGODB_MP3S_DB, value: {id}_mp3s}}
      # No proxy in front of it here: the peer address is the client's.
      - {{op: replace, path: /data/TRUSTED_PROXY_HOPS, value: \"0\"}}
  - target: {{kind: ConfigMap, name: converter-configmap}}
    patch: |-
      - {{op: replace, path: /data/HEALTH_PORT, value: \"{converter}\"}}
      - {{op: replace, path: /data/MONGODB_URI, value: \"{mongo}\"}}
      - {{op: replace, path: /data/MONGODB_VIDEOS_DB, value: {id}_videos}}
      - {{op: replace, path: /data/MONGODB_MP3S_DB, value: {id}_mp3s}}
  - target: {{kind: ConfigMap, name: notification-configmap}}
    patch: |-
      - {{op: replace, path: /data/HEALTH_PORT, value: \"{notification}\"}}
      - {{op: replace, path: /data/MONGODB_URI, value: \"{mongo}\"}}
      - {{op: replace, path: /data/MONGODB_MP3S_DB, value: {id}_mp3s}}
      # maildev on the host instead of Gmail: no TLS, no login.
      - {{op: replace, path: /data/SMTP_HOST, value: 127.0.0.1}}
      - {{op: replace, path: /data/SMTP_PORT, value: \"1025\"}}
      - {{op: replace, path: /data/SMTP_TLS, value: none}}
      - {{op: replace, path: /data/SMTP_AUTH, value: \"false\"}}
"
    );
    k
}

/// The four Secrets the base leaves to the deployer, with this instance's values.
fn secrets_yaml(name: &Name, s: &Secrets) -> String {
    let amqp = |svc: &str| format!("amqp://{name}-{svc}:{}@127.0.0.1:5672/{name}", s.amqp[svc]);
    let secret = |sname: &str, app: &str, kv: &[(&str, String)]| {
        let mut y = format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {sname}\n  namespace: mp3converter\n  labels:\n    app: {app}\ntype: Opaque\nstringData:\n"
        );
        for (k, v) in kv {
            let _ = writeln!(y, "  {k}: \"{v}\"");
        }
        y
    };
    [
        secret("auth-secret", "auth", &[("MYSQL_PASSWORD", s.mysql.clone()), ("JWT_SECRET", s.jwt.clone())]),
        secret("gateway-secret", "gateway", &[("AMQP_URL", amqp("gateway")), ("DOWNLOAD_LINK_SECRET", s.link.clone())]),
        secret("converter-secret", "converter", &[("AMQP_URL", amqp("converter"))]),
        // maildev takes no login (SMTP_AUTH=false): no password.
        secret(
            "notification-secret",
            "notification",
            &[
                ("AMQP_URL", amqp("notification")),
                ("GMAIL_ADDRESS", format!("{name}@mp3converter.local")),
                ("GMAIL_PASSWORD", String::new()),
                ("DOWNLOAD_LINK_SECRET", s.link.clone()),
            ],
        ),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_whole_statements_from_the_sql_files() {
        let sql = "-- CREATE TABLE in a comment\nCREATE TABLE IF NOT EXISTS `user` (\n  id INT\n);\nSELECT 1;";
        assert_eq!(statement(sql, "CREATE TABLE", "x").unwrap(), "CREATE TABLE IF NOT EXISTS `user` (\n  id INT\n);");
        assert!(statement(sql, "INSERT", "x").is_err());
    }

    #[test]
    fn the_overlay_renders_with_the_base() {
        let name: Name = "mp3c-unit".parse().unwrap();
        let ports = SERVICES.into_iter().zip([1001, 1002, 1003, 1004]).collect();
        let s = Secrets {
            mysql: "m".into(),
            jwt: "j".into(),
            link: "l".into(),
            amqp: crate::rabbitmq::SERVICES.into_iter().map(|s| (s, s.to_owned())).collect(),
        };
        let k: serde_yaml::Value =
            serde_yaml::from_str(&kustomization(&name, "../manifests", &ports, "mongodb://127.0.0.1:27017")).unwrap();
        assert_eq!(k["namePrefix"], "mp3c-unit-");
        assert_eq!(k["patches"].as_sequence().unwrap().len(), 8);
        let secrets = manifests::parse(&secrets_yaml(&name, &s), "secrets").unwrap();
        assert_eq!(secrets.len(), 4);
        assert_eq!(secrets[1]["stringData"]["AMQP_URL"], "amqp://mp3c-unit-gateway:gateway@127.0.0.1:5672/mp3c-unit");
    }
}
