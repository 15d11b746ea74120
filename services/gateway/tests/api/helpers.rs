//! The gateway in-process with an auth service of its own (also in-process, on a fresh
//! database), fresh queues and GridFS databases, a logged-in admin user, and the requests the
//! tests make.

use futures_util::TryStreamExt;
use gateway::{Application, Config};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use testkit::{add_user, test_env, unique_email, AuthDb, Names, Service};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running gateway and auth service, and the user the tests act as.
pub struct TestApp {
    pub base: String,
    pub names: Names,
    pub state: gateway::AppState,
    /// A token of `email`, an admin.
    pub token: String,
    pub email: String,
    pub auth_db: AuthDb,
    _guards: Vec<DropGuard>,
}

/// Starts auth and the gateway on free ports, `extra` added to the gateway's environment, and
/// logs a new admin user in.
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let db = AuthDb::create().await.unwrap();
    let names = Names::new();
    let auth_env = test_env(Service::Auth, 0, &names, Some(&db), 0);
    let auth_app = auth::Application::build(auth::Config::from_env(&auth_env.to_env()).unwrap()).await.unwrap();
    let auth_port = auth_app.port();
    let stop_auth = CancellationToken::new();
    tokio::spawn(auth_app.run_until_stopped(stop_auth.clone()));

    let env = test_env(Service::Gateway, 0, &names, Some(&db), auth_port).extend(extra.iter().copied());
    let app = Application::build(Config::from_env(&env.to_env()).unwrap()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));

    let mut gw = TestApp {
        base,
        names,
        state,
        token: String::new(),
        email: String::new(),
        auth_db: db,
        _guards: vec![stop.drop_guard(), stop_auth.drop_guard()],
    };
    gw.email = unique_email();
    gw.token = gw.login_new_user(&gw.email).await;
    gw
}

impl TestApp {
    /// Adds `email` as an admin and logs it in through the gateway; returns the token.
    async fn login_new_user(&self, email: &str) -> String {
        add_user(&self.auth_db, email, "Password123!", true).unwrap();
        let resp =
            reqwest::Client::new().post(format!("{}/login", self.base)).basic_auth(email, Some("Password123!")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// A second user of the same gateway: its token.
    pub async fn other_user(&self) -> String {
        self.login_new_user(&unique_email()).await
    }

    /// `POST /upload` of `bytes` as `filename` (multipart field `video`) with the user's token.
    pub async fn upload(&self, filename: &str, bytes: Vec<u8>) -> (u16, String) {
        let form = reqwest::multipart::Form::new().part("video", reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned()));
        let resp =
            reqwest::Client::new().post(format!("{}/upload", self.base)).bearer_auth(&self.token).multipart(form).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// `GET path` with `token`: status and body.
    pub async fn get(&self, token: &str, path: &str) -> (u16, String) {
        let resp = reqwest::Client::new().get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// `GET path` with the user's token, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(&self.token, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The files documents of the stored videos.
    pub async fn video_files(&self) -> Vec<Document> {
        let client = self.names.mongo().await;
        client.database(&self.names.videos_db).collection::<Document>("fs.files").find(doc! {}).await.unwrap().try_collect().await.unwrap()
    }
}
