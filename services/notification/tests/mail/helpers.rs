//! The notifier in-process on queues of its own, sending to the test SMTP server (maildev).

use std::time::Duration;

use common::message::JobMessage;
use notification::{Application, Config};
use testkit::{test_env, Names, Service};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running notifier and its names.
pub struct TestApp {
    pub names: Names,
    _stop: DropGuard,
}

/// Starts a notifier with fresh names, `extra` added to its environment, and waits until it is
/// ready.
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let names = Names::new();
    let env = test_env(Service::Notification, 0, &names, None, 0).extend(extra.iter().copied());
    let app = Application::build(Config::from_env(&env.to_env()).unwrap()).await.unwrap();
    let health = app.health_port();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    testkit::wait_ok(&format!("http://127.0.0.1:{health}/readyz"), Duration::from_secs(20)).await.unwrap();
    TestApp { names, _stop: stop.drop_guard() }
}

impl TestApp {
    /// Queues `msg` on the mp3 queue, as the converter does.
    pub async fn publish(&self, msg: &JobMessage) {
        testkit::publish(&self.names.mp3_queue, &msg.to_json()).await.unwrap();
    }
}
