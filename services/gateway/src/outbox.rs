//! Repairs the gap between "video stored" and "message published": a gateway that dies in
//! between leaves a video whose metadata still says `queued: false`. The sweep announces such
//! videos once they are old enough that no upload request can still be handling them.

use std::time::{Duration, SystemTime};

use common::message::VideoJob;
use common::videos::Unannounced;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Announces every unqueued video older than `min_age`; returns how many were announced.
pub async fn sweep_once(state: &AppState, min_age: Duration) -> anyhow::Result<usize> {
    let mut announced = 0;
    for Unannounced { video, owner } in state.videos.unannounced_before(SystemTime::now() - min_age).await? {
        let Some(owner) = owner else { continue };
        // The options asked for at upload, from the job (made before the publish). A gateway
        // that died before making the job leaves none: then the defaults.
        let options = state.jobs.get(video).await?.map(|job| job.options).unwrap_or_default();
        let message = VideoJob::new(video, owner, options);
        state.publisher.publish(&state.video_queue, &message.to_json(), Default::default()).await?;
        if let Err(e) = state.videos.mark_queued(video).await {
            // The next sweep announces it again; the converter absorbs the duplicate.
            tracing::warn!(error.cause_chain = ?e, video_fid = %video, "failed to mark video as queued");
        }
        metrics::counter!(common::metrics::OUTBOX_REPUBLISHED).increment(1);
        tracing::warn!(video_fid = %video, "announced a video whose upload never published its message");
        announced += 1;
    }
    Ok(announced)
}

/// Runs [`sweep_once`] every `interval` until shutdown.
pub async fn run(state: AppState, interval: Duration, min_age: Duration, shutdown: CancellationToken) {
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
