//! RabbitMQ definitions for mp3converter: an administrator and one user per service, each allowed
//! only its own queues, with salted SHA-256 password hashes (never the passwords). `xtask pods up`
//! applies the permissions with rabbitmqctl on the host's broker; `xtask rabbitmq-definitions`
//! prints the definitions file the cluster's broker loads (scripts/minikube-up.sh,
//! manifests/secret-templates/rabbitmq-definitions.yaml).
//!
//! What each service may touch (configure = declare, write = publish, read = consume), through the
//! default exchange (`amq.default`) only: the gateway its video queue; the converter the video and
//! mp3 queues; the notification the mp3 queue. Each queue Q comes with Q.retry and Q.dead.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The services that talk to the broker, in the order of the definitions.
pub const SERVICES: [&str; 3] = ["gateway", "converter", "notification"];

/// Options of `xtask rabbitmq-definitions`.
#[derive(clap::Args)]
pub struct Options {
    #[arg(long, default_value = "admin")]
    admin_user: String,
    #[arg(long)]
    admin_password: Option<String>,
    /// A service user's password (gateway, converter, notification); repeat for each.
    #[arg(long = "password", value_name = "SERVICE=PW")]
    passwords: Vec<String>,
    #[arg(long, default_value = "/")]
    vhost: String,
    #[arg(long, default_value = "video")]
    video_queue: String,
    #[arg(long, default_value = "mp3")]
    mp3_queue: String,
    /// Prefix of the service users' names.
    #[arg(long, default_value = "")]
    user_prefix: String,
    /// Print `USER CONFIGURE WRITE READ` lines instead of the definitions.
    #[arg(long)]
    permissions_only: bool,
}

/// `^(amq\.default|Q(\.retry|\.dead)?|...)$` for the queues given.
pub fn queues_regex(queues: &[&str]) -> String {
    let alts: Vec<String> = queues.iter().map(|q| format!(r"{}(\.retry|\.dead)?", escape(q))).collect();
    format!(r"^(amq\.default|{})$", alts.join("|"))
}

/// A literal in a regular expression (the characters Python's `re.escape` escapes).
fn escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if "()[]{}?*+-|^$\\.&~# \t\n\r\x0b\x0c".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// Each service and the regex of the queues it may configure, write and read.
pub fn service_permissions(video: &str, mp3: &str) -> [(&'static str, String); 3] {
    [("gateway", queues_regex(&[video])), ("converter", queues_regex(&[video, mp3])), ("notification", queues_regex(&[mp3]))]
}

/// rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)), a 4-byte salt.
pub fn password_hash(password: &str) -> String {
    let mut salt = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut salt);
    let digest = Sha256::new().chain_update(salt).chain_update(password.as_bytes()).finalize();
    B64.encode([salt.as_slice(), digest.as_slice()].concat())
}

#[derive(Serialize)]
struct User {
    name: String,
    password_hash: String,
    hashing_algorithm: &'static str,
    tags: &'static str,
}

#[derive(Serialize)]
struct Permission {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

#[derive(Serialize)]
struct Vhost {
    name: String,
}

#[derive(Serialize)]
struct Definitions {
    users: Vec<User>,
    vhosts: Vec<Vhost>,
    permissions: Vec<Permission>,
}

/// What `xtask rabbitmq-definitions` prints.
pub fn render(opts: &Options) -> anyhow::Result<String> {
    let queues = (opts.video_queue.as_str(), opts.mp3_queue.as_str());
    if opts.permissions_only {
        let perms = service_permissions(queues.0, queues.1);
        return Ok(perms.iter().map(|(svc, rx)| format!("{}{svc} {rx} {rx} {rx}\n", opts.user_prefix)).collect());
    }
    let mut passwords = BTreeMap::new();
    for pair in &opts.passwords {
        let (svc, pw) = pair.split_once('=').with_context(|| format!("--password {pair:?}: expected SERVICE=PW"))?;
        passwords.insert(svc, pw.to_owned());
    }
    let Some(admin_pw) = opts.admin_password.as_deref() else {
        let mut missing: Vec<&str> = SERVICES.into_iter().filter(|s| !passwords.contains_key(s)).collect();
        missing.push("admin");
        bail!("no password for {}", missing.join(", "));
    };
    definitions((&opts.admin_user, admin_pw), &passwords, &opts.vhost, queues, &opts.user_prefix)
}

/// The definitions file (JSON): the administrator `admin` (name, password), one user per
/// service named `<user_prefix><service>` with its password of `passwords`, in `vhost`, for the
/// video and mp3 queues of `queues`.
pub fn definitions(
    admin: (&str, &str),
    passwords: &BTreeMap<&str, String>,
    vhost: &str,
    queues: (&str, &str),
    user_prefix: &str,
) -> anyhow::Result<String> {
    let missing: Vec<&str> = SERVICES.into_iter().filter(|s| !passwords.contains_key(s)).collect();
    if !missing.is_empty() {
        bail!("no password for {}", missing.join(", "));
    }
    if std::iter::once(admin.1).chain(passwords.values().map(String::as_str)).any(|pw| pw.chars().count() < 16 || pw == "guest") {
        bail!("every password must be at least 16 characters (generate them)");
    }
    let user = |name: String, pw: &str, tags| User {
        name,
        password_hash: password_hash(pw),
        hashing_algorithm: "rabbit_password_hashing_sha256",
        tags,
    };
    let permission = |user: String, rx: &str| Permission {
        user,
        vhost: vhost.to_owned(),
        configure: rx.to_owned(),
        write: rx.to_owned(),
        read: rx.to_owned(),
    };
    let mut defs = Definitions {
        users: vec![user(admin.0.to_owned(), admin.1, "administrator")],
        vhosts: vec![Vhost { name: vhost.to_owned() }],
        permissions: vec![permission(admin.0.to_owned(), ".*")],
    };
    for (svc, rx) in service_permissions(queues.0, queues.1) {
        let name = format!("{user_prefix}{svc}");
        defs.users.push(user(name.clone(), &passwords[svc], ""));
        defs.permissions.push(permission(name, &rx));
    }
    // One-space indentation, as the definitions files made so far.
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b" "));
    defs.serialize(&mut ser)?;
    Ok(String::from_utf8(out)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_its_own_queues_only() {
        let [(_, gateway), (_, converter), (_, notification)] = service_permissions("video", "mp3");
        assert_eq!(gateway, r"^(amq\.default|video(\.retry|\.dead)?)$");
        assert_eq!(converter, r"^(amq\.default|video(\.retry|\.dead)?|mp3(\.retry|\.dead)?)$");
        assert_eq!(notification, r"^(amq\.default|mp3(\.retry|\.dead)?)$");
        assert_eq!(queues_regex(&["a.b-c"]), r"^(amq\.default|a\.b\-c(\.retry|\.dead)?)$");
    }

    #[test]
    fn definitions_refuse_short_or_missing_passwords() {
        let long = |s: &str| s.repeat(20);
        let mut pw: BTreeMap<&str, String> = SERVICES.into_iter().map(|s| (s, long(s))).collect();
        let json: serde_json::Value =
            serde_json::from_str(&definitions(("admin", &long("a")), &pw, "/", ("video", "mp3"), "").unwrap()).unwrap();
        assert_eq!(json["users"].as_array().unwrap().len(), 4);
        assert_eq!(json["permissions"][3]["read"], r"^(amq\.default|mp3(\.retry|\.dead)?)$");
        assert!(definitions(("admin", "short"), &pw, "/", ("video", "mp3"), "").is_err());
        pw.remove("converter");
        assert!(definitions(("admin", &long("a")), &pw, "/", ("video", "mp3"), "").is_err());
    }

    #[test]
    fn hash_is_salted_sha256_of_the_password() {
        let raw = B64.decode(password_hash("a-long-enough-password")).unwrap();
        assert_eq!(raw.len(), 36);
        let (salt, digest) = raw.split_at(4);
        assert_eq!(digest, Sha256::new().chain_update(salt).chain_update(b"a-long-enough-password").finalize().as_slice());
    }
}
