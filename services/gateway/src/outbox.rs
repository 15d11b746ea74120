//! Repairs the gap between "video stored" and "message published": a gateway that dies in
//! between leaves a video whose metadata still says `queued: false`. The sweep announces such
//! videos once they are old enough that no upload request can still be handling them.

use std::time::{Duration, SystemTime};

use common::ids::VideoId;
use common::message::JobMessage;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::IndexModel;
use tokio_util::sync::CancellationToken;

use crate::startup::AppState;
use crate::upload::{mark_queued, QUEUED_FIELD};

/// Announces every unqueued video older than `min_age`; returns how many were announced.
pub async fn sweep_once(state: &AppState, min_age: Duration) -> anyhow::Result<usize> {
    let cutoff = DateTime::from_system_time(SystemTime::now() - min_age);
    let files = state.videos.collection::<Document>("fs.files");
    let mut cursor =
        files.find(doc! {QUEUED_FIELD: false, "uploadDate": {"$lte": cutoff}}).projection(doc! {"_id": 1, "metadata.username": 1}).await?;
    let mut announced = 0;
    while let Some(file) = cursor.try_next().await? {
        let (Ok(oid), Ok(meta)) = (file.get_object_id("_id"), file.get_document("metadata")) else { continue };
        let Ok(username) = meta.get_str("username") else { continue };
        let video = VideoId::new(oid);
        let message = JobMessage::new_video(video.to_string(), username);
        state.publisher.publish(&state.video_queue, &message.to_json(), Default::default()).await?;
        mark_queued(state, video).await;
        metrics::counter!(common::metrics::OUTBOX_REPUBLISHED).increment(1);
        tracing::warn!(video_fid = %video, "announced a video whose upload never published its message");
        announced += 1;
    }
    Ok(announced)
}

/// Runs [`sweep_once`] every `interval` until shutdown.
pub async fn run(state: AppState, interval: Duration, min_age: Duration, shutdown: CancellationToken) {
    // Without an index every sweep of every replica would read all video documents.
    let index = IndexModel::builder().keys(doc! {QUEUED_FIELD: 1, "uploadDate": 1}).build();
    if let Err(e) = state.videos.collection::<Document>("fs.files").create_index(index).await {
        tracing::warn!(error.cause_chain = ?e, "could not create the outbox index now; the sweep still works without it");
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = sweep_once(&state, min_age).await {
            tracing::warn!(error.cause_chain = ?e, "outbox sweep failed; will retry");
        }
    }
}
