//! The Kubernetes manifests and the code agree: every variable a service reads is set by its
//! ConfigMap/Secret and nothing set there goes unread; the four binaries, started natively with
//! exactly the manifests' environment (cluster host names mapped to local addresses, listen
//! ports moved to free ones, SMTP pointed at the local test server), run the tutorial flow; and
//! the probes' paths answer on the ports the manifests name.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::Env;
use testkit::{fid_from_mail, free_port, manifests, media, unique_email, wait_for_mails, wait_ok, Proc};

const SERVICES: [&str; 4] = ["auth", "gateway", "converter", "notification"];

fn manifest_env(service: &str, maps: &[String]) -> Vec<(String, String)> {
    let maps = manifests::HostMap::parse(maps).unwrap();
    manifests::service_env(service, &maps).unwrap_or_else(|e| panic!("manifests::service_env {service}: {e:#}")).into_iter().collect()
}

/// The Secrets' values: the manifests carry none (manifests/secret-templates/ names their keys,
/// the deployer creates them), so a test supplies its own for every key, as a deploy script does.
fn fill_secrets(env: &mut [(String, String)]) {
    // Only the Secrets' keys: an empty ConfigMap value (OTEL_EXPORTER_OTLP_ENDPOINT) means "off".
    for (k, v) in env.iter_mut().filter(|(_, v)| v.is_empty()) {
        *v = match k.as_str() {
            "JWT_SECRET" | "DOWNLOAD_LINK_SECRET" => format!("manifests-test-{}", time_and_pid_hex()),
            // dev-seed.sql's development password of auth_user (the test applies it).
            "MYSQL_PASSWORD" => "Auth123".to_owned(),
            "AMQP_URL" => testkit::amqp_url(),
            "GMAIL_ADDRESS" => "manifests-test@example.com".to_owned(),
            "GMAIL_PASSWORD" => "manifests-test-password".to_owned(),
            _ => continue,
        };
    }
}

/// A value no other run of this test makes: the time in nanoseconds and the process id, in hex.
fn time_and_pid_hex() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    format!("{:032x}{:08x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos(), std::process::id())
}

/// `(kind, path, port)` of each probe of a service's Deployment.
fn probes(service: &str) -> Vec<(String, String, u16)> {
    let objects = manifests::load_base(&manifests::dir()).unwrap();
    manifests::probes(&objects, service)
        .unwrap()
        .into_iter()
        .map(|p| match p.action {
            manifests::ProbeAction::Http { path, port } => (p.kind.name().to_owned(), path, port),
            other => panic!("{service}: {} probe is not httpGet: {other:?}", p.kind.name()),
        })
        .collect()
}

/// Loads a service's config from `env` (as its `main` does).
fn load_config(service: &str, env: &Env) -> Result<(), common::ConfigError> {
    match service {
        "auth" => auth::Config::from_env(env).map(drop),
        "gateway" => gateway::Config::from_env(env).map(drop),
        "converter" => converter::Config::from_env(env).map(drop),
        "notification" => notification::Config::from_env(env).map(drop),
        other => panic!("unknown service {other}"),
    }
}

#[test]
fn code_and_manifests_agree_on_every_variable() {
    // Read by the logging and tracing set-up before any config, not through `Env`.
    let logging: BTreeSet<String> = ["RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT"].map(String::from).into();
    let mut problems = Vec::new();
    for service in SERVICES {
        let mut pairs = manifest_env(service, &[]);
        fill_secrets(&mut pairs);
        let env = Env::from_pairs(pairs);
        if let Err(e) = load_config(service, &env) {
            problems.push(format!("{service}: the manifests' values don't load: {e}"));
            continue;
        }
        let (read, set) = (env.looked_up(), env.names());
        for name in read.difference(&set) {
            problems.push(format!("{service} reads {name}, which its manifests don't set"));
        }
        for name in set.difference(&read).filter(|n| !logging.contains(*n)) {
            problems.push(format!("{service}'s manifests set {name}, which the code never reads"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_run_the_tutorial_flow_with_the_manifests_environment() {
    // The manifests point at the host's MySQL with init.sql, the auth migrations (and, here, the
    // development auth_user of dev-seed.sql) applied, as the original does.
    let mut conn: sqlx::MySqlConnection = sqlx::Connection::connect(&testkit::mysql_admin_url()).await.unwrap();
    sqlx::raw_sql(include_str!("../../../../init.sql")).execute(&mut conn).await.expect("init.sql applies");
    testkit::migrate_auth(&testkit::mysql_admin_url(), "auth").await.expect("the auth migrations apply");
    sqlx::raw_sql(include_str!("../../../../dev-seed.sql")).execute(&mut conn).await.expect("dev-seed.sql applies");

    let local = |extra: Vec<String>| {
        let mut maps = vec!["host.minikube.internal=127.0.0.1".to_owned(), "rabbitmq=127.0.0.1".to_owned()];
        maps.extend(extra);
        maps
    };
    let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
    let port_var = |s: &str| if matches!(s, "auth" | "gateway") { "PORT" } else { "HEALTH_PORT" };
    let mut procs = Vec::new();
    for (service, port) in SERVICES.iter().zip(&ports) {
        let mut env = manifest_env(service, &local(vec![format!("auth=127.0.0.1:{}", ports[0])]));
        fill_secrets(&mut env);
        // Probes must name the port the service listens on.
        let declared: u16 = env.iter().find(|(k, _)| k == port_var(service)).map(|(_, v)| v.parse().unwrap()).unwrap();
        for (kind, path, probe_port) in probes(service) {
            assert_eq!(probe_port, declared, "{service} {kind} probe {path} targets {probe_port}, the service listens on {declared}");
        }
        env.retain(|(k, _)| k != port_var(service));
        env.push((port_var(service).to_owned(), port.to_string()));
        if *service == "notification" {
            // Gmail is outside the cluster; the local test server stands in for it.
            env.retain(|(k, _)| !k.starts_with("SMTP_"));
            env.extend([
                ("SMTP_HOST".to_owned(), testkit::smtp_host()),
                ("SMTP_PORT".to_owned(), testkit::smtp_port()),
                ("SMTP_TLS".to_owned(), "none".to_owned()),
                ("SMTP_AUTH".to_owned(), "false".to_owned()),
            ]);
        }
        procs.push(Proc::spawn(service, &env).unwrap());
    }
    for ((service, port), p) in SERVICES.iter().zip(&ports).zip(&procs) {
        for (kind, path, _) in probes(service) {
            wait_ok(&format!("http://127.0.0.1:{port}{path}"), Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{service} {kind} probe: {e}\n{}", p.log_text()));
        }
    }

    // A user, added with the auth binary and the auth manifests' MySQL settings.
    let email = unique_email();
    let mut auth_env = manifest_env("auth", &local(vec![]));
    fill_secrets(&mut auth_env);
    let out = Command::new(testkit::bin_path("auth"))
        .args(["user", "add", &email])
        .env_clear()
        .envs(auth_env)
        .env("AUTH_USER_PASSWORD", "Password123!")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let gw = format!("http://127.0.0.1:{}", ports[1]);
    let client = reqwest::Client::new();
    let token = client.post(format!("{gw}/login")).basic_auth(&email, Some("Password123!")).send().await.unwrap().text().await.unwrap();
    let bytes = std::fs::read(media(testkit::Media::Mkv, 3)).unwrap();
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name("test.mkv"));
    let resp = client.post(format!("{gw}/upload")).bearer_auth(&token).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let logs = || procs.iter().map(|p| format!("== {}\n{}", p.name, p.log_text())).collect::<String>();
    let mails = wait_for_mails(&email, 1, Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let fid = fid_from_mail(&mails[0].text).unwrap();
    let mp3 = client.get(format!("{gw}/download?fid={fid}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(mp3.status(), 200);
    assert!(mp3.bytes().await.unwrap().len() > 1000);
}
