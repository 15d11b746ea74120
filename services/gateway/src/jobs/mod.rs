//! Jobs: every upload is a job its owner can follow. `GET /jobs`, `GET /jobs/<id>`,
//! `DELETE /jobs/<id>`, the event streams (`events`), signed download links and the retention
//! sweep. The state itself lives in MongoDB (`common::jobs`), so every replica answers alike.

pub(crate) mod events;
pub(crate) mod options;
pub mod retention;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::ids::VideoId;
use common::jobs::{Cursor, JobDoc, JobState};
use common::links::LinkSigner;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::instrument;

use crate::auth::AuthUser;
use crate::error::{from_mongo, GatewayError};
use crate::state::AppState;

/// Page size of `GET /jobs` when `limit` is absent, and its largest value.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/events", get(events::all_jobs))
        .route("/jobs/{id}", get(one).delete(delete))
        .route("/jobs/{id}/events", get(events::one_job))
        .route("/jobs/{id}/download", get(crate::download::by_link))
}

fn rfc3339(t: mongodb::bson::DateTime) -> Value {
    t.try_to_rfc3339_string().map_or(Value::Null, Value::String)
}

/// A job as clients see it: every field present (null when not known yet).
pub fn view(job: &JobDoc, links: &LinkSigner) -> Value {
    let done = job.state == JobState::Done;
    json!({
        "id": job.id.to_hex(),
        "state": job.state.as_str(),
        "progress": job.progress,
        "filename": job.filename,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "duration_seconds": job.duration_seconds,
        "mp3_fid": job.mp3_fid.filter(|_| done || job.state == JobState::Expired).map(|m| m.to_hex()),
        "download_url": done.then(|| links.url(job.video())),
        "error": job.error,
        "options": job.options,
    })
}

/// A job id from the path: malformed is 400, as a malformed `fid` is for download.
pub fn parse_id(raw: &str) -> Result<VideoId, GatewayError> {
    raw.parse().map_err(|_| GatewayError::InvalidJobId)
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    state: Option<String>,
}

#[instrument(skip_all, fields(user))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, GatewayError> {
    let owner = user.0.username;
    tracing::Span::current().record("user", owner.as_str());
    let Query(q) = query.map_err(|e| GatewayError::InvalidQuery(e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(GatewayError::InvalidQuery(format!("limit must be a number from 1 to {MAX_LIMIT}"))),
        },
    };
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| GatewayError::InvalidQuery("cursor is not one this API returned".into()))?),
    };
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            JobState::parse_public(s)
                .ok_or_else(|| GatewayError::InvalidQuery("state must be one of queued, converting, done, failed, expired".into()))?,
        ),
    };
    let (jobs, next) = state.jobs.list(&owner, filter, cursor, limit).await.map_err(from_mongo)?;
    let jobs: Vec<Value> = jobs.iter().map(|j| view(j, &state.links)).collect();
    Ok(Json(json!({"jobs": jobs, "next": next.map(|c| c.encode())})))
}

#[instrument(skip_all, fields(user, job))]
async fn one(State(state): State<AppState>, user: AuthUser, Path(raw): Path<String>) -> Result<Json<Value>, GatewayError> {
    let id = parse_id(&raw)?;
    let owner = user.0.username;
    tracing::Span::current().record("user", owner.as_str()).record("job", tracing::field::display(id));
    let job = state.jobs.get_owned(id, &owner).await.map_err(from_mongo)?.ok_or(GatewayError::JobNotFound)?;
    Ok(Json(view(&job, &state.links)))
}

/// `DELETE /jobs/<id>`: the job becomes a tombstone first (so a converter working on it stops
/// and stores nothing), then its video and mp3 are removed.
#[instrument(skip_all, fields(user, job))]
async fn delete(State(state): State<AppState>, user: AuthUser, Path(raw): Path<String>) -> Result<Response, GatewayError> {
    let id = parse_id(&raw)?;
    let owner = user.0.username;
    tracing::Span::current().record("user", owner.as_str()).record("job", tracing::field::display(id));
    let job = state.jobs.mark_deleted(id, &owner).await.map_err(from_mongo)?.ok_or(GatewayError::JobNotFound)?;
    // The job is gone for its owner from here on (a repeated DELETE is a 404), so a removal
    // that fails now (a slow or briefly unreachable MongoDB with a large video) must not turn
    // into an error the client can't act on: it is tried again in the background, and the
    // retention sweep removes what is left with the tombstone.
    if let Err(e) = remove_files(&state, &job).await {
        tracing::warn!(error.cause_chain = ?e, "job deleted; removing its files failed, trying again in the background");
        tokio::spawn(remove_files_later(state.clone(), job.clone()));
    }
    tracing::info!(was = job.state.as_str(), "job deleted");
    Ok((StatusCode::NO_CONTENT, HeaderMap::new()).into_response())
}

/// Removes a deleted job's files, a few times with growing pauses.
async fn remove_files_later(state: AppState, job: JobDoc) {
    for pause in [1u64, 5, 30, 120] {
        tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
        match remove_files(&state, &job).await {
            Ok(()) => return tracing::info!(job = %job.id, "files of a deleted job removed"),
            Err(e) => tracing::warn!(error.cause_chain = ?e, job = %job.id, "removing the files of a deleted job failed again"),
        }
    }
}

/// Deletes a job's video and every mp3 made from it (a converter racing the delete may have
/// stored one under a new id). Missing files are fine: deletes are repeated by the sweep.
pub async fn remove_files(state: &AppState, job: &JobDoc) -> anyhow::Result<()> {
    remove_video(state, job.video()).await?;
    remove_mp3s(state, job).await
}

pub async fn remove_video(state: &AppState, video: VideoId) -> anyhow::Result<()> {
    state.videos.delete(video).await
}

pub async fn remove_mp3s(state: &AppState, job: &JobDoc) -> anyhow::Result<()> {
    let mut ids = state.mp3s.all_made_from(job.video()).await?;
    ids.extend(job.mp3());
    for id in ids {
        state.mp3s.delete(id).await?;
    }
    Ok(())
}

/// True when the client asked for JSON (`Accept: application/json`): `POST /upload` then
/// answers 202 with the job instead of the original's `success!`.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")))
}
