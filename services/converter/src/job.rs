//! One conversion: video in GridFS -> temporary file -> ffmpeg -> mp3 in GridFS -> message on
//! the mp3 queue. Redelivered videos find the mp3 already made for them, so each video yields
//! exactly one mp3.

use std::sync::Arc;
use std::time::Duration;

use common::amqp::Publisher;
use common::consumer::{self, Handler, Job, Outcome};
use common::email::Email;
use common::gridfs::UploadError;
use common::ids::{Mp3Id, VideoId};
use common::jobs::{JobState, JobStore, OutputOptions, Tracked};
use common::message::{Failure, VideoJob};
use common::mp3s::Mp3Store;
use common::videos::VideoStore;
use futures_util::TryStreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tracing::{info, instrument};

use crate::config::Config;
use crate::ffmpeg::{self, FfError};

pub struct Converter {
    pub config: Config,
    pub videos: VideoStore,
    pub mp3s: Mp3Store,
    pub publisher: Arc<Publisher>,
    /// The jobs the gateway created for each upload (state, progress, cancellation).
    pub jobs: JobStore,
}

/// How often a converting job's progress is written (and its cancellation looked for).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Without a progress change to write, every this many ticks the job is read to see whether it
/// was deleted (a read is cheaper than a write).
const CANCEL_CHECK_TICKS: u32 = 3;

/// Why a tracked conversion stopped early.
#[derive(Debug)]
struct Cancelled;

/// Reports a converting job's progress, throttled to one write per `PROGRESS_EVERY` (and only
/// when the whole percentage changed), and notices when the job was deleted.
struct Tracker<'a> {
    jobs: &'a JobStore,
    video: VideoId,
    position: watch::Receiver<f64>,
    /// Seconds of audio the output will have (the probed duration, cut as asked).
    length: Option<f64>,
    written: i32,
    idle_ticks: u32,
    /// MongoDB writes made for this job (state changes and progress).
    writes: u32,
}

impl Tracker<'_> {
    async fn tick(&mut self) -> Result<(), Cancelled> {
        let percent = self.length.map(|len| ((*self.position.borrow() / len) * 100.0).floor().clamp(0.0, 99.0) as i32);
        let state = match percent {
            Some(p) if p != self.written => {
                self.written = p;
                self.idle_ticks = 0;
                self.writes += 1;
                self.jobs.set_progress(self.video, p).await.map(|t| t == Tracked::Cancelled)
            }
            _ => {
                self.idle_ticks += 1;
                if self.idle_ticks < CANCEL_CHECK_TICKS {
                    return Ok(());
                }
                self.idle_ticks = 0;
                self.jobs.get(self.video).await.map(|j| j.is_some_and(|j| j.state == JobState::Deleted))
            }
        };
        match state {
            Ok(true) => Err(Cancelled),
            Ok(false) => Ok(()),
            // MongoDB hiccups don't stop a conversion; progress resumes with the next tick.
            Err(e) => {
                tracing::debug!(error.cause_chain = ?e, "progress update failed");
                Ok(())
            }
        }
    }

    /// Runs `work` while ticking; a deleted job drops `work` (killing its ffmpeg).
    async fn supervise<F: std::future::Future>(&mut self, work: F) -> Result<F::Output, Cancelled> {
        let mut work = std::pin::pin!(work);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = ticks.tick() => self.tick().await?,
            }
        }
    }
}

/// Runs `work` under the tracker when the job is tracked.
async fn tracked<F: std::future::Future>(tracker: &mut Option<Tracker<'_>>, work: F) -> Result<F::Output, Outcome> {
    match tracker {
        Some(t) => t.supervise(work).await.map_err(|Cancelled| {
            info!("job deleted while converting: ffmpeg stopped, nothing stored");
            Outcome::Done
        }),
        None => Ok(work.await),
    }
}

impl Converter {
    /// One mp3 per video, even when two deliveries of it race (see [`Mp3Store::ensure_indexes`]).
    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        self.mp3s.ensure_indexes().await
    }

    async fn remove_mp3(&self, mp3: Mp3Id) {
        if let Err(e) = self.mp3s.delete(mp3).await {
            tracing::warn!(error.cause_chain = ?e, mp3_fid = %mp3, "failed to remove the mp3 of a deleted job");
        }
    }

    /// Converts the video; `track` says whether it has a job to report to. `Err(Outcome::Done)`
    /// means the job was deleted meanwhile: nothing is stored or announced.
    #[instrument(skip_all, fields(video_fid = %video))]
    async fn convert(&self, video: VideoId, owner: &Email, options: &OutputOptions, track: bool) -> Result<Mp3Id, Outcome> {
        // The cause goes to the log only; the reason (also the dead-letter header once the
        // retries run out) names what failed, without driver or OS text.
        let retry = |what: &str, e: anyhow::Error| {
            tracing::warn!(error.cause_chain = ?e, "{what}");
            Outcome::Retry(what.to_owned())
        };
        let fail = |f: Failure| Outcome::Fail(f.user_text().to_owned());
        if let Some(mp3) = self.mp3s.made_from(video).await.map_err(|e| retry("MongoDB unavailable", e))? {
            info!(mp3_fid = %mp3, "mp3 already made for this video");
            return Ok(mp3);
        }
        let file = self
            .videos
            .find(video)
            .await
            .map_err(|e| retry("MongoDB unavailable", e))?
            .ok_or_else(|| Outcome::Fail(format!("video {video} not found")))?;
        let started = std::time::Instant::now();
        // Nothing else bounds a job: a timeout is a permanent failure, since the same file
        // would time out again.
        let timeout = self.config.job_deadline;

        // The directory (and everything in it) is removed when `dir` drops, on every path.
        let dir = tempfile::Builder::new()
            .prefix("mp3converter-")
            .tempdir_in(&self.config.tmp_dir)
            .map_err(|e| retry("cannot create a temporary directory", e.into()))?;
        let input = dir.path().join("video");

        let mut out = tokio::fs::File::create(&input).await.map_err(|e| retry("cannot write the temporary file", e.into()))?;
        let mut chunks = std::pin::pin!(self.videos.read_range(&file, 0, file.length.saturating_sub(1)));
        if file.length > 0 {
            while let Some(bytes) = chunks.try_next().await.map_err(|e| retry("failed to read the video", e.into()))? {
                out.write_all(&bytes).await.map_err(|e| retry("cannot write the temporary file", e.into()))?;
            }
        }
        out.flush().await.map_err(|e| retry("cannot write the temporary file", e.into()))?;
        drop(out);

        // The re-encode starts alongside ffprobe: for the usual source (AAC and the like) the
        // probe's time is then hidden behind the encode. When the probe says the audio already
        // is MP3, or that there is nothing to convert, the encode is dropped (and its ffmpeg
        // killed: kill_on_drop).
        let reencoded = dir.path().join("reencoded.mp3");
        let (position_tx, position) = watch::channel(0.0);
        let mut tracker = track.then(|| Tracker { jobs: &self.jobs, video, position, length: None, written: 0, idle_ticks: 0, writes: 1 });
        // Boxed, not pinned on the stack, so that it can be dropped before the stream copy.
        let mut encode =
            Box::pin(ffmpeg::convert(&self.config.ffmpeg, &input, &reencoded, false, options, track.then(|| position_tx.clone()), timeout));
        let mut probe = std::pin::pin!(ffmpeg::probe(&self.config.ffprobe, &input, timeout));
        let mut encoded = None;
        let probe = tracked(&mut tracker, async {
            loop {
                tokio::select! {
                    p = &mut probe => break p,
                    e = &mut encode, if encoded.is_none() => encoded = Some(e),
                }
            }
        })
        .await?;
        let probe = match probe {
            Ok(p) => p,
            Err(e @ (FfError::Failed { .. } | FfError::BadProbe(_) | FfError::TooMuchOutput { .. })) => {
                // Also every playlist and reference format: not on ffmpeg's input whitelist.
                tracing::warn!(error = %e, "ffprobe refused the upload");
                return Err(fail(Failure::NotMedia));
            }
            Err(e @ FfError::TimedOut { .. }) => {
                tracing::warn!(error = %e, "ffprobe ran out of the job's time");
                return Err(fail(Failure::TooLong));
            }
            Err(e) => return Err(retry("ffprobe failed", e.into())),
        };
        let Some(codec) = probe.audio_codec else {
            return Err(fail(Failure::NoAudio));
        };
        if let (Some(start), Some(duration)) = (options.start, probe.audio_seconds) {
            if start >= duration {
                tracing::info!(start, duration, "the cut starts past the end of the audio");
                return Err(fail(Failure::CutPastEnd));
            }
        }
        if let (Some(t), Some(duration)) = (tracker.as_mut(), probe.audio_seconds) {
            let length = options.end.unwrap_or(duration).min(duration) - options.start.unwrap_or(0.0);
            t.length = Some(length.max(0.001));
            t.writes += 1;
            if let Ok(Tracked::Cancelled) = self.jobs.set_duration(video, duration).await {
                info!("job deleted while converting: nothing stored");
                return Err(Outcome::Done);
            }
        }
        let copy = codec == "mp3" && !options.requires_reencode();
        let (result, output) = if copy {
            drop(encode);
            let copied = dir.path().join("copied.mp3");
            let progress = track.then(|| position_tx.clone());
            (tracked(&mut tracker, ffmpeg::convert(&self.config.ffmpeg, &input, &copied, true, options, progress, timeout)).await?, copied)
        } else {
            let result = match encoded {
                Some(done) => done,
                None => tracked(&mut tracker, encode).await?,
            };
            (result, reencoded.clone())
        };
        if let Some(t) = &tracker {
            info!(progress_writes = t.writes, "conversion finished");
        }
        match result {
            Ok(()) => {}
            Err(e @ FfError::Failed { .. }) => {
                // ffmpeg's own words (paths, internals) go to the log; the owner is told what happened.
                tracing::warn!(error = %e, "ffmpeg could not convert the audio track");
                return Err(fail(Failure::BadAudio));
            }
            Err(e @ FfError::TimedOut { .. }) => {
                tracing::warn!(error = %e, "ffmpeg ran out of the job's time");
                return Err(fail(Failure::TooLong));
            }
            Err(e) => return Err(retry("ffmpeg did not finish", e.into())),
        }
        if track && matches!(self.jobs.get(video).await, Ok(Some(j)) if j.state == JobState::Deleted) {
            info!("job deleted while converting: nothing stored");
            return Err(Outcome::Done);
        }

        let mp3 = tokio::fs::File::open(&output).await.map_err(|e| retry("cannot read the mp3", e.into()))?;
        match self.mp3s.store(owner, video, mp3).await {
            Ok((id, bytes)) => {
                info!(mp3_fid = %id, bytes, copied = copy, "mp3 stored");
                let took = started.elapsed().as_secs_f64();
                let mode = if copy { "copy" } else { "reencode" };
                metrics::histogram!(common::metrics::CONVERSION_DURATION, "mode" => mode).record(took);
                if let Some(audio) = probe.audio_seconds.filter(|_| took > 0.0) {
                    metrics::histogram!(common::metrics::CONVERSION_SPEED, "mode" => mode).record(audio / took);
                }
                Ok(id)
            }
            Err(UploadError::Store(e)) => {
                // A racing delivery may have stored it first (unique index): use that one.
                match self.mp3s.made_from(video).await {
                    Ok(Some(mp3)) => Ok(mp3),
                    _ => Err(retry("failed to store the mp3", e)),
                }
            }
            Err(UploadError::Source(e)) => Err(retry("cannot read the mp3", e.into())),
        }
    }
}

impl Handler for Converter {
    type Message = VideoJob;

    async fn handle(&self, msg: &VideoJob, _job: &Job) -> Outcome {
        let video = msg.video;
        // A job still queued or converting is tracked; one already done or failed (a
        // redelivery after a crash) and a video without a job go the idempotent way: the mp3
        // made before is found and announced again.
        let track = match self.jobs.get(video).await {
            Err(e) => {
                tracing::warn!(error.cause_chain = ?e, "cannot read the job");
                return Outcome::Retry("MongoDB unavailable".into());
            }
            Ok(Some(job)) if job.state == JobState::Deleted => {
                info!(video_fid = %video, "job deleted before its conversion; nothing to do");
                return Outcome::Done;
            }
            Ok(Some(job)) if matches!(job.state, JobState::Queued | JobState::Converting) => {
                match self.jobs.start_converting(video).await {
                    Ok(Tracked::Updated) => true,
                    Ok(_) => return Outcome::Retry("the job changed while starting; looking again".into()),
                    Err(e) => {
                        tracing::warn!(error.cause_chain = ?e, "cannot start the job");
                        return Outcome::Retry("MongoDB unavailable".into());
                    }
                }
            }
            Ok(_) => false,
        };
        // One deadline for the whole job (GridFS reads and writes included), under the
        // broker's consumer timeout; dropping the job kills its ffmpeg.
        let deadline = self.config.job_deadline;
        let mp3 = match tokio::time::timeout(deadline, self.convert(video, &msg.owner, &msg.options, track)).await {
            Ok(Ok(mp3)) => mp3,
            Ok(Err(outcome)) => return outcome,
            Err(_) => {
                tracing::warn!(video_fid = %video, ?deadline, "job deadline passed");
                return Outcome::Fail(Failure::TooLong.user_text().to_owned());
            }
        };
        if track {
            match self.jobs.finish_done(video, mp3).await {
                Ok(Tracked::Cancelled) => {
                    // Deleted at the last moment: the gateway removes mp3s made from the video,
                    // and so do we; no "ready" mail.
                    self.remove_mp3(mp3).await;
                    info!(video_fid = %video, "job deleted as its mp3 was stored; mp3 removed");
                    return Outcome::Done;
                }
                Ok(_) => {}
                Err(e) => return Outcome::Retry(format!("failed to record the finished job: {e:#}")),
            }
        }
        let done = msg.clone().ready(mp3);
        match self.publisher.publish(&self.config.mp3_queue, &done.to_json(), Default::default()).await {
            Ok(()) => Outcome::Done,
            // On the next try the mp3 is found and only the publish is repeated.
            Err(e) => Outcome::Retry(format!("failed to announce the mp3: {e:#}")),
        }
    }

    /// Tells the owner (through the notifier) that their video could not be converted, with
    /// the fixed sentence of the failure's class: the reasons of retries that ran out name
    /// internals, so they become "internal error".
    async fn on_dead_letter(&self, msg: &VideoJob, _job: &Job, reason: &str) -> anyhow::Result<()> {
        let failure = if reason.starts_with(consumer::REDELIVERY_LIMIT_REASON) {
            Failure::Unprocessable
        } else if reason.starts_with("video ") && reason.ends_with(" not found") {
            Failure::VideoMissing
        } else {
            Failure::from_text(reason)
        };
        if let Some(existing) = self.jobs.get(msg.video).await? {
            if existing.state == JobState::Deleted {
                // Its owner deleted it: nobody to tell.
                return Ok(());
            }
            self.jobs.finish_failed(msg.video, failure.user_text()).await?;
        }
        let notice = msg.clone().failed(failure);
        self.publisher.publish(&self.config.mp3_queue, &notice.to_json(), Default::default()).await
    }
}
