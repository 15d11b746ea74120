//! Server-Sent Events of job changes. Each gateway process runs one poller that reads the jobs
//! changed since its last look (an indexed query on `updated_at`, every `JOB_EVENTS_POLL_MS`,
//! and only while someone is following) and fans them out to its subscribers through a
//! broadcast channel. Every replica sees every change, whichever replica or converter made it,
//! with one query per poll whatever the number of followers. (SecantusDB, the MongoDB-compatible
//! server of development and CI, has no change streams; polling works with any server.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use common::ids::VideoId;
use common::jobs::{JobDoc, JobStore};
use mongodb::bson::{oid::ObjectId, DateTime};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::{parse_id, view};
use crate::auth::AuthUser;
use crate::error::{from_mongo, GatewayError};
use crate::state::AppState;

/// How far back each poll looks beyond the newest change it has seen: a write stamped by its
/// writer's clock can land that much later than a newer one (write latency, clock skew between
/// hosts). Changes seen twice are recognised by their version.
const OVERLAP: Duration = Duration::from_millis(2000);

/// Most changes read per poll; more are read on the next poll.
const POLL_BATCH: i64 = 5000;

/// Changes a slow subscriber may fall behind before it re-reads its jobs from the store.
const CHANNEL_CAPACITY: usize = 4096;

/// The fan-out point of one gateway process.
pub struct JobEvents {
    tx: broadcast::Sender<Arc<JobDoc>>,
    shutdown: CancellationToken,
    heartbeat: Duration,
}

impl JobEvents {
    pub fn new(heartbeat: Duration, shutdown: CancellationToken) -> Self {
        Self { tx: broadcast::channel(CHANNEL_CAPACITY).0, shutdown, heartbeat }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<JobDoc>> {
        self.tx.subscribe()
    }

    /// Ends every open stream (graceful shutdown would otherwise wait for them).
    pub fn close(&self) {
        self.shutdown.cancel();
    }
}

/// Polls the store for changes until shutdown and publishes each new version of a job once.
pub async fn run_poller(store: JobStore, events: Arc<JobEvents>, every: Duration, shutdown: CancellationToken) {
    let overlap_ms = OVERLAP.as_millis() as i64;
    let mut seen: HashMap<ObjectId, (i64, DateTime)> = HashMap::new();
    let mut newest = DateTime::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if events.tx.receiver_count() == 0 {
            // Nobody follows: no reads. A new follower reads the current state itself.
            newest = DateTime::now();
            seen.clear();
            continue;
        }
        let since = DateTime::from_millis(newest.timestamp_millis() - overlap_ms);
        let changed = match events_since(&store, since).await {
            Ok(c) => c,
            Err(e) => {
                if !failing {
                    tracing::warn!(error.cause_chain = ?e, "job change poll failed; retrying");
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        for job in changed {
            newest = newest.max(job.updated_at);
            let fresh = seen.get(&job.id).is_none_or(|(version, _)| job.version > *version);
            if fresh {
                seen.insert(job.id, (job.version, job.updated_at));
                let _ = events.tx.send(Arc::new(job));
            }
        }
        let horizon = newest.timestamp_millis() - 2 * overlap_ms;
        seen.retain(|_, (_, at)| at.timestamp_millis() >= horizon);
    }
}

async fn events_since(store: &JobStore, since: DateTime) -> anyhow::Result<Vec<JobDoc>> {
    store.changed_since(since, POLL_BATCH).await
}

fn event(job: &JobDoc, state: &AppState) -> Event {
    Event::default().event("job").id(format!("{}-{}", job.id.to_hex(), job.version)).data(view(job, &state.links).to_string())
}

/// The response around a stream: heartbeat comments, and no buffering by nginx.
fn sse(rx: mpsc::Receiver<Event>, heartbeat: Duration) -> Response {
    let stream = futures_util::StreamExt::map(ReceiverStream::new(rx), Ok::<Event, Infallible>);
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")).into_response();
    resp.headers_mut().insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    resp
}

/// What a stream forwards: one job, or every job of an owner.
#[derive(Clone)]
enum Follow {
    One(VideoId),
    All,
}

/// Feeds a stream from the broadcast channel until the followed job reaches a final state (one
/// job), the client goes away, or the gateway shuts down.
async fn forward(
    state: AppState,
    owner: String,
    follow: Follow,
    mut rx: broadcast::Receiver<Arc<JobDoc>>,
    tx: mpsc::Sender<Event>,
    initial: Vec<JobDoc>,
) {
    let mut last = HashMap::new();
    for job in &initial {
        last.insert(job.id, job.version);
        if tx.send(event(job, &state)).await.is_err() {
            return;
        }
        if matches!(follow, Follow::One(_)) && job.state.is_final() {
            return;
        }
    }
    let shutdown = state.events.shutdown.clone();
    loop {
        let job = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            r = rx.recv() => r,
        };
        let jobs: Vec<Arc<JobDoc>> = match job {
            Ok(job) => vec![job],
            Err(broadcast::error::RecvError::Closed) => return,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Fell behind: read the current state instead of the missed changes.
                tracing::warn!(missed, "event subscriber lagged; re-reading its jobs");
                let current = match &follow {
                    Follow::One(id) => state.jobs.get(*id).await.map(|j| j.into_iter().collect()),
                    Follow::All => state.jobs.active(&owner).await,
                };
                match current {
                    Ok(jobs) => jobs.into_iter().map(Arc::new).collect(),
                    Err(_) => continue,
                }
            }
        };
        for job in jobs {
            let wanted = job.owner == owner
                && match &follow {
                    Follow::One(id) => job.id == id.oid(),
                    Follow::All => true,
                };
            if !wanted || last.get(&job.id).is_some_and(|v| *v >= job.version) {
                continue;
            }
            last.insert(job.id, job.version);
            if tx.send(event(&job, &state)).await.is_err() {
                return;
            }
            if matches!(follow, Follow::One(_)) && job.state.is_final() {
                return;
            }
        }
    }
}

/// `GET /jobs/<id>/events`: the job now, then every change; ends after a final state.
#[instrument(skip_all, fields(user, job))]
pub async fn one_job(State(state): State<AppState>, user: AuthUser, Path(raw): Path<String>) -> Result<Response, GatewayError> {
    let id = parse_id(&raw)?;
    let owner = user.0.username;
    tracing::Span::current().record("user", owner.as_str()).record("job", tracing::field::display(id));
    // Subscribed before the read, so that no change between the two is lost.
    let rx = state.events.subscribe();
    let job = state.jobs.get_owned(id, &owner).await.map_err(from_mongo)?.ok_or(GatewayError::JobNotFound)?;
    let (tx, out) = mpsc::channel(16);
    tokio::spawn(forward(state.clone(), owner, Follow::One(id), rx, tx, vec![job]));
    Ok(sse(out, state.events.heartbeat))
}

/// `GET /jobs/events`: the caller's unfinished jobs now, then every change of any of their jobs.
#[instrument(skip_all, fields(user))]
pub async fn all_jobs(State(state): State<AppState>, user: AuthUser) -> Result<Response, GatewayError> {
    let owner = user.0.username;
    tracing::Span::current().record("user", owner.as_str());
    let rx = state.events.subscribe();
    let active = state.jobs.active(&owner).await.map_err(from_mongo)?;
    let (tx, out) = mpsc::channel(64);
    tokio::spawn(forward(state.clone(), owner, Follow::All, rx, tx, active));
    Ok(sse(out, state.events.heartbeat))
}
