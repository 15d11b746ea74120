//! Retention: uploaded videos are removed `VIDEO_RETENTION` after their job ended, mp3s
//! `MP3_RETENTION` after their job was done; a job whose files are all gone becomes `expired`
//! (its record stays, so the owner still sees what happened; its link answers 410). Tombstones
//! of deleted jobs are purged a day later. Every replica may sweep: each step is idempotent.

use std::time::{Duration, SystemTime};

use common::jobs::JobState;
use mongodb::bson::DateTime;
use tokio_util::sync::CancellationToken;

use super::{remove_files, remove_mp3s, remove_video};
use crate::state::AppState;

/// Jobs handled per step and sweep; the next sweep takes the rest.
const BATCH: i64 = 500;

/// How long a deleted job's tombstone is kept (a converter still holding the job must be able
/// to see that it was cancelled; conversions are bounded by FFMPEG_TIMEOUT_SECONDS).
const TOMBSTONE_AGE: Duration = Duration::from_secs(86_400);

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub videos_removed: usize,
    pub mp3s_expired: usize,
    pub tombstones_purged: u64,
}

fn before(age: Duration) -> DateTime {
    DateTime::from_system_time(SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
}

pub async fn sweep_once(state: &AppState, video_retention: Duration, mp3_retention: Duration) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    for job in state.jobs.ended_before(JobState::Done, before(mp3_retention), BATCH).await? {
        remove_files(state, &job).await?;
        state.jobs.mark_expired(job.video(), JobState::Done).await?;
        tracing::info!(job = %job.id, "mp3 retention over: files removed, job expired");
        swept.mp3s_expired += 1;
    }
    for job in state.jobs.sources_to_remove(before(video_retention), BATCH).await? {
        remove_video(state, job.video()).await?;
        state.jobs.mark_source_removed(job.video()).await?;
        if job.state == JobState::Failed {
            // Nothing of a failed job is left.
            state.jobs.mark_expired(job.video(), JobState::Failed).await?;
        }
        swept.videos_removed += 1;
    }
    let cutoff = before(TOMBSTONE_AGE);
    for job in state.jobs.deleted_before(cutoff, BATCH).await? {
        remove_video(state, job.video()).await?;
        remove_mp3s(state, &job).await?;
    }
    swept.tombstones_purged = state.jobs.purge_deleted(cutoff).await?;
    Ok(swept)
}

/// Runs [`sweep_once`] every `interval` until shutdown.
pub async fn run(state: AppState, interval: Duration, video_retention: Duration, mp3_retention: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match sweep_once(&state, video_retention, mp3_retention).await {
            Ok(s) if s != Swept::default() => tracing::info!(?s, "retention sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.cause_chain = ?e, "retention sweep failed; will retry"),
        }
    }
}
