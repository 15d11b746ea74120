//! The auth service in-process on a database of its own, and the requests the tests make.

use auth::{Application, Config};
use testkit::{test_env, AuthDb, Names, Service};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running auth service and its private database.
pub struct TestApp {
    pub base: String,
    pub db: AuthDb,
    _stop: DropGuard,
}

/// Starts auth on a free port with a fresh database (migrated), `extra` added to its environment.
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let db = AuthDb::create().await.unwrap();
    let env = test_env(Service::Auth, 0, &Names::new(), Some(&db), 0).extend(extra.iter().copied());
    let app = Application::build(Config::from_env(&env.to_env()).unwrap()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    TestApp { base, db, _stop: stop.drop_guard() }
}

impl TestApp {
    /// `POST /login` with HTTP Basic credentials.
    pub async fn login(&self, user: &str, pass: &str) -> reqwest::Response {
        reqwest::Client::new().post(format!("{}/login", self.base)).basic_auth(user, Some(pass)).send().await.unwrap()
    }

    /// `POST /validate` with a bearer token.
    pub async fn validate(&self, token: &str) -> reqwest::Response {
        reqwest::Client::new().post(format!("{}/validate", self.base)).bearer_auth(token).send().await.unwrap()
    }

    /// Adds a user with the auth binary's user command.
    pub fn add_user(&self, email: &str, password: &str, admin: bool) -> anyhow::Result<()> {
        testkit::add_user(&self.db, email, password, admin)
    }
}
