//! The converter in-process on queues and GridFS databases of its own, and what the tests do
//! to it: store a video, queue a job, count the mp3s.

use std::time::Duration;

use converter::{Application, Config};
use mongodb::bson::{doc, oid::ObjectId, Document};
use testkit::{test_env, Names, Service};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running converter with its names and databases.
pub struct TestApp {
    pub names: Names,
    pub videos: mongodb::Database,
    pub mp3s: mongodb::Database,
    _stop: DropGuard,
}

/// Starts a converter (two conversions at once) with fresh names, `extra` added to its
/// environment, and waits until it is ready.
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    common::telemetry::init();
    let names = Names::new();
    let env = test_env(Service::Converter, 0, &names, None, 0).set("CONVERTER_CONCURRENCY", 2).extend(extra.iter().copied());
    let app = Application::build(Config::from_env(&env.to_env()).unwrap()).await.unwrap();
    let health = app.health_port();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    testkit::wait_ok(&format!("http://127.0.0.1:{health}/readyz"), Duration::from_secs(20)).await.unwrap();
    let client = names.mongo().await;
    TestApp { videos: client.database(&names.videos_db), mp3s: client.database(&names.mp3s_db), names, _stop: stop.drop_guard() }
}

impl TestApp {
    /// Stores the file at `path` as a video of `owner`, as the gateway does; returns its id.
    pub async fn put_video(&self, path: &std::path::Path, owner: &str) -> ObjectId {
        let id = ObjectId::new();
        let file = tokio::fs::File::open(path).await.unwrap();
        common::gridfs::upload(&common::gridfs::bucket(&self.videos), id, "v", doc! {"username": owner}, file).await.unwrap();
        id
    }

    /// Queues `body` on the video queue, as the gateway does.
    pub async fn publish_video(&self, body: &[u8]) {
        testkit::publish(&self.names.video_queue, body).await.unwrap();
    }

    /// The mp3s stored so far.
    pub async fn mp3_count(&self) -> u64 {
        self.mp3s.collection::<Document>("fs.files").count_documents(doc! {}).await.unwrap()
    }
}
