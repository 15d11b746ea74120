//! How each service is started: the one definition of the environment each binary reads, used by
//! [`crate::Stack`] and by the benchmark (`crates/xtask`). A service gets exactly the variables
//! it reads (docs/configuration.md), so a variable added to a service is added here once.

use std::path::Path;
use std::process::Command;

use crate::{AuthDb, Names};

/// The four service binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Auth,
    Gateway,
    Converter,
    Notification,
}

impl Service {
    pub const ALL: [Service; 4] = [Service::Auth, Service::Gateway, Service::Converter, Service::Notification];

    /// The package and binary name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Gateway => "gateway",
            Service::Converter => "converter",
            Service::Notification => "notification",
        }
    }

    /// The variable naming the port `/readyz` answers on: the HTTP port of auth and the
    /// gateway, the health port of the two consumers.
    pub fn port_var(self) -> &'static str {
        match self {
            Service::Auth | Service::Gateway => "PORT",
            Service::Converter | Service::Notification => "HEALTH_PORT",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the shared servers are.
#[derive(Clone, Debug)]
pub struct Servers {
    pub amqp_url: String,
    pub mongo_uri: String,
    /// An SMTP sink that takes mail without TLS or authentication (maildev).
    pub smtp_host: String,
    pub smtp_port: String,
}

impl Servers {
    /// The servers of the test environment (`TEST_*` variables, local defaults).
    pub fn from_test_env() -> Self {
        Self { amqp_url: crate::amqp_url(), mongo_uri: crate::mongo_uri(), smtp_host: crate::smtp_host(), smtp_port: crate::smtp_port() }
    }
}

/// What a set of services needs to find the servers, each other and its own data.
#[derive(Clone, Copy)]
pub struct Wiring<'a> {
    pub servers: &'a Servers,
    pub names: &'a Names,
    /// The auth service's database and application user.
    pub mysql: &'a AuthDb,
    pub jwt_secret: &'a str,
    /// Where the gateway finds auth (127.0.0.1).
    pub auth_port: u16,
    /// `PUBLIC_URL` of the gateway and the notifier: the base of signed download links (a
    /// local address, so the built-in development link key is accepted).
    pub public_url: &'a str,
}

/// The environment one service binary starts with: built from a [`Wiring`], then adjusted
/// with [`ServiceEnv::set`]. Nothing is inherited from the caller's environment except `PATH`
/// and `HOME` (see [`ServiceEnv::command`]).
#[derive(Clone, Debug)]
pub struct ServiceEnv {
    service: Service,
    vars: Vec<(String, String)>,
}

impl ServiceEnv {
    /// `service` listening (HTTP or health) on `port` of 127.0.0.1.
    pub fn new(service: Service, port: u16, wiring: Wiring<'_>) -> Self {
        let Wiring { servers, names, mysql, jwt_secret, auth_port, public_url } = wiring;
        let mut env = Self { service, vars: Vec::new() };
        env = env.set(service.port_var(), port);
        let broker_and_store = [
            ("AMQP_URL", servers.amqp_url.as_str()),
            ("MONGODB_URI", servers.mongo_uri.as_str()),
            ("MONGODB_MP3S_DB", names.mp3s_db.as_str()),
        ];
        match service {
            Service::Auth => {
                env = env.extend(mysql.env()).set("JWT_SECRET", jwt_secret);
            }
            Service::Gateway => {
                env = env
                    .set("AUTH_SVC_ADDRESS", format!("127.0.0.1:{auth_port}"))
                    .extend(broker_and_store)
                    .set("MONGODB_VIDEOS_DB", &names.videos_db)
                    .set("VIDEO_QUEUE", &names.video_queue)
                    .set("PUBLIC_URL", public_url);
            }
            Service::Converter => {
                env = env
                    .extend(broker_and_store)
                    .set("MONGODB_VIDEOS_DB", &names.videos_db)
                    .set("VIDEO_QUEUE", &names.video_queue)
                    .set("MP3_QUEUE", &names.mp3_queue);
            }
            Service::Notification => {
                env = env.extend(broker_and_store).set("MP3_QUEUE", &names.mp3_queue).set("PUBLIC_URL", public_url).extend([
                    ("SMTP_HOST", servers.smtp_host.as_str()),
                    ("SMTP_PORT", servers.smtp_port.as_str()),
                    ("SMTP_TLS", "none"),
                    ("SMTP_AUTH", "false"),
                    ("GMAIL_ADDRESS", "mp3converter@localhost"),
                ]);
            }
        }
        env
    }

    /// Sets (or replaces) one variable.
    pub fn set(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        let (name, value) = (name.into(), value.to_string());
        match self.vars.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
        self
    }

    /// Sets (or replaces) several variables, in order.
    pub fn extend<K: Into<String>, V: ToString>(self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        vars.into_iter().fold(self, |env, (k, v)| env.set(k, v))
    }

    pub fn service(&self) -> Service {
        self.service
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The variables as a [`common::Env`], for a service built in-process (`Config::from_env`).
    pub fn to_env(&self) -> common::Env {
        common::Env::from_pairs(self.vars.iter().cloned())
    }

    /// The port `/readyz` answers on.
    pub fn port(&self) -> u16 {
        self.get(self.service.port_var()).and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// `http://127.0.0.1:<port>` of the service's HTTP or health server.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    pub fn ready_url(&self) -> String {
        format!("{}/readyz", self.base_url())
    }

    /// A command running `bin` with exactly this environment, plus the caller's `PATH` and
    /// `HOME` (ffmpeg is found on `PATH`) and `RUST_LOG=info` unless set here.
    pub fn command(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("RUST_LOG", "info");
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring_parts() -> (Servers, Names, AuthDb) {
        let servers = Servers {
            amqp_url: "amqp://broker".into(),
            mongo_uri: "mongodb://store".into(),
            smtp_host: "127.0.0.9".into(),
            smtp_port: "2525".into(),
        };
        let db = AuthDb { database: "db1".into(), user: "u1".into(), password: "p1".into() };
        (servers, Names::new(), db)
    }

    #[test]
    fn each_service_gets_what_it_reads() {
        let (servers, names, db) = wiring_parts();
        let w = Wiring {
            servers: &servers,
            names: &names,
            mysql: &db,
            jwt_secret: "s3cret",
            auth_port: 4000,
            public_url: "http://127.0.0.1:4001",
        };
        let auth = ServiceEnv::new(Service::Auth, 5001, w);
        assert_eq!(auth.get("PORT"), Some("5001"));
        assert_eq!(auth.get("MYSQL_DB"), Some("db1"));
        assert_eq!(auth.get("JWT_SECRET"), Some("s3cret"));
        assert_eq!(auth.get("AMQP_URL"), None);

        let gw = ServiceEnv::new(Service::Gateway, 8001, w);
        assert_eq!(gw.get("AUTH_SVC_ADDRESS"), Some("127.0.0.1:4000"));
        assert_eq!(gw.get("VIDEO_QUEUE"), Some(names.video_queue.as_str()));
        assert_eq!(gw.get("MONGODB_URI"), Some("mongodb://store"));
        assert_eq!(gw.get("JWT_SECRET"), None);
        assert_eq!(gw.ready_url(), "http://127.0.0.1:8001/readyz");

        let conv = ServiceEnv::new(Service::Converter, 8002, w);
        assert_eq!(conv.get("HEALTH_PORT"), Some("8002"));
        assert_eq!(conv.get("MP3_QUEUE"), Some(names.mp3_queue.as_str()));
        assert_eq!(conv.get("MONGODB_VIDEOS_DB"), Some(names.videos_db.as_str()));
        assert_eq!(conv.port(), 8002);

        let notif = ServiceEnv::new(Service::Notification, 8003, w);
        assert_eq!(notif.get("SMTP_HOST"), Some("127.0.0.9"));
        assert_eq!(notif.get("SMTP_TLS"), Some("none"));
        assert_eq!(notif.get("VIDEO_QUEUE"), None);
    }

    #[test]
    fn set_replaces_and_command_clears_the_environment() {
        let (servers, names, db) = wiring_parts();
        let w = Wiring { servers: &servers, names: &names, mysql: &db, jwt_secret: "s", auth_port: 1, public_url: "http://127.0.0.1:2" };
        let env = ServiceEnv::new(Service::Converter, 1, w).set("HEALTH_PORT", 7).set("CONVERTER_CONCURRENCY", 1);
        assert_eq!(env.port(), 7);
        assert_eq!(env.vars().iter().filter(|(k, _)| k == "HEALTH_PORT").count(), 1);
        let cmd = env.command(Path::new("/bin/true"));
        let vars: Vec<_> =
            cmd.get_envs().map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned()))).collect();
        assert!(vars.contains(&("CONVERTER_CONCURRENCY".into(), Some("1".into()))));
        assert!(vars.iter().any(|(k, _)| k == "RUST_LOG"));
    }
}
