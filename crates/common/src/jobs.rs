//! The jobs store: one document per upload, in MongoDB collection `jobs` of the videos
//! database, so every replica of every service reads and writes the same state. This module
//! owns the collection and its field names; services only call its operations.
//!
//! A job's `_id` is its video's GridFS id. `version` grows by one on every change, which lets
//! gateways that poll for changes tell a new state from one they already sent.

use std::time::Duration;

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::ids::{Mp3Id, VideoId};

/// The collection, in the videos database.
pub const COLLECTION: &str = "jobs";

/// Where a job stands. `deleted` is a tombstone left by `DELETE /jobs/<id>` so that a
/// converter still working on it knows it was cancelled; the API never shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Converting,
    Done,
    Failed,
    Expired,
    Deleted,
}

impl JobState {
    /// No further change will come (an event stream ends after one of these).
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Expired | JobState::Deleted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Converting => "converting",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Deleted => "deleted",
        }
    }

    /// The states a client may filter on (`?state=`).
    pub fn parse_public(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(JobState::Queued),
            "converting" => Some(JobState::Converting),
            "done" => Some(JobState::Done),
            "failed" => Some(JobState::Failed),
            "expired" => Some(JobState::Expired),
            _ => None,
        }
    }
}

/// What the owner asked of the mp3 (multipart fields at upload). Carried in the job and, as an
/// optional `options` field, in the video message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputOptions {
    /// Constant bitrate, e.g. `"192k"` (64k to 320k).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<String>,
    /// LAME VBR quality, 0 (best) to 9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// Cut: first second of the source to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    /// Cut: second of the source where the audio stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
}

impl OutputOptions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// A stream copy keeps the source's encoding: only possible when no bitrate or quality
    /// was asked for (a cut of an MP3 stream is copied frame-exact).
    pub fn requires_reencode(&self) -> bool {
        self.bitrate.is_some() || self.quality.is_some()
    }
}

/// One job, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The owner's email (the token's `username`).
    pub owner: String,
    pub state: JobState,
    /// 0 to 100.
    pub progress: i32,
    /// As cleaned at upload.
    pub filename: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// When the job reached `done` or `failed` (retention counts from here).
    #[serde(default)]
    pub ended_at: Option<DateTime>,
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    #[serde(default)]
    pub mp3_fid: Option<ObjectId>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub options: OutputOptions,
    /// Grows by one on every change.
    pub version: i64,
    /// The video was removed by the retention sweep (the mp3 may still be there).
    #[serde(default)]
    pub source_removed: bool,
}

impl JobDoc {
    /// A new job in state `queued`.
    pub fn queued(video: VideoId, owner: &str, filename: &str, options: OutputOptions) -> Self {
        let now = DateTime::now();
        Self {
            id: video.oid(),
            owner: owner.to_owned(),
            state: JobState::Queued,
            progress: 0,
            filename: filename.to_owned(),
            created_at: now,
            updated_at: now,
            ended_at: None,
            duration_seconds: None,
            mp3_fid: None,
            error: None,
            options,
            version: 1,
            source_removed: false,
        }
    }

    pub fn video(&self) -> VideoId {
        VideoId::new(self.id)
    }

    pub fn mp3(&self) -> Option<Mp3Id> {
        self.mp3_fid.map(Mp3Id::new)
    }
}

/// How a tracked update went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// The job was updated.
    Updated,
    /// The job exists but was deleted (cancelled) or already ended: stop working on it.
    Cancelled,
    /// No job document: a video uploaded before jobs existed, or stored by another path;
    /// the work goes on untracked.
    Untracked,
}

/// A page of [`JobStore::list`]: the position after the last job, if there may be more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime,
    pub id: ObjectId,
}

impl Cursor {
    /// `<created_at millis>-<id hex>`: opaque to clients.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.created_at.timestamp_millis(), self.id.to_hex())
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (millis, id) = s.split_once('-')?;
        // Within years 1970..=9999: servers (and RFC 3339) handle nothing else.
        let millis: i64 = millis.parse().ok().filter(|m| (0..=253_402_300_799_999).contains(m))?;
        Some(Self { created_at: DateTime::from_millis(millis), id: ObjectId::parse_str(id).ok()? })
    }
}

#[derive(Clone)]
pub struct JobStore {
    jobs: Collection<JobDoc>,
}

fn now() -> DateTime {
    DateTime::now()
}

impl JobStore {
    pub fn new(videos: &Database) -> Self {
        Self { jobs: videos.collection(COLLECTION) }
    }

    /// Owner's list (newest first), state filters, the retention sweep and the change poller.
    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        let models = [
            IndexModel::builder().keys(doc! {"owner": 1, "created_at": -1, "_id": -1}).build(),
            IndexModel::builder().keys(doc! {"state": 1, "ended_at": 1}).build(),
            IndexModel::builder().keys(doc! {"updated_at": 1}).options(IndexOptions::builder().build()).build(),
        ];
        self.jobs.create_indexes(models).await.context("failed to create the jobs indexes")?;
        Ok(())
    }

    pub async fn create(&self, job: &JobDoc) -> anyhow::Result<()> {
        self.jobs.insert_one(job).await.context("failed to store the job")?;
        Ok(())
    }

    /// Any job, tombstones included.
    pub async fn get(&self, id: VideoId) -> anyhow::Result<Option<JobDoc>> {
        self.jobs.find_one(doc! {"_id": id.oid()}).await.context("failed to read the job")
    }

    /// The owner's job, unless deleted: someone else's and unknown ids look the same.
    pub async fn get_owned(&self, id: VideoId, owner: &str) -> anyhow::Result<Option<JobDoc>> {
        self.jobs
            .find_one(doc! {"_id": id.oid(), "owner": owner, "state": {"$ne": JobState::Deleted.as_str()}})
            .await
            .context("failed to read the job")
    }

    /// The owner's jobs, newest first, after `cursor`; returns the page and the next cursor.
    pub async fn list(
        &self,
        owner: &str,
        state: Option<JobState>,
        cursor: Option<Cursor>,
        limit: u32,
    ) -> anyhow::Result<(Vec<JobDoc>, Option<Cursor>)> {
        let mut filter = doc! {"owner": owner};
        match state {
            Some(s) => filter.insert("state", s.as_str()),
            None => filter.insert("state", doc! {"$ne": JobState::Deleted.as_str()}),
        };
        if let Some(c) = cursor {
            filter.insert("$or", vec![doc! {"created_at": {"$lt": c.created_at}}, doc! {"created_at": c.created_at, "_id": {"$lt": c.id}}]);
        }
        // One more than asked tells whether there is a next page.
        let mut jobs: Vec<JobDoc> = self
            .jobs
            .find(filter)
            .sort(doc! {"created_at": -1, "_id": -1})
            .limit(i64::from(limit) + 1)
            .await
            .context("failed to list jobs")?
            .try_collect()
            .await
            .context("failed to list jobs")?;
        let next = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| Cursor { created_at: j.created_at, id: j.id })
        } else {
            None
        };
        Ok((jobs, next))
    }

    /// The owner's jobs that may still change (sent when a stream of all jobs opens).
    pub async fn active(&self, owner: &str) -> anyhow::Result<Vec<JobDoc>> {
        self.jobs
            .find(doc! {"owner": owner, "state": {"$in": vec![JobState::Queued.as_str(), JobState::Converting.as_str()]}})
            .sort(doc! {"created_at": 1})
            .limit(1000)
            .await
            .context("failed to list active jobs")?
            .try_collect()
            .await
            .context("failed to list active jobs")
    }

    /// Applies `set` to the job if it is in one of `from`; tells apart a job that moved on
    /// (or was deleted) from one that never existed.
    async fn transition(&self, id: VideoId, from: &[JobState], mut set: Document) -> anyhow::Result<Tracked> {
        set.insert("updated_at", now());
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let result = self
            .jobs
            .update_one(doc! {"_id": id.oid(), "state": {"$in": from}}, doc! {"$set": set, "$inc": {"version": 1}})
            .await
            .context("failed to update the job")?;
        if result.matched_count == 1 {
            return Ok(Tracked::Updated);
        }
        let exists = self.jobs.count_documents(doc! {"_id": id.oid()}).await.context("failed to read the job")? > 0;
        Ok(if exists { Tracked::Cancelled } else { Tracked::Untracked })
    }

    /// `queued` (or a retried `converting`) -> `converting`, progress 0.
    pub async fn start_converting(&self, id: VideoId) -> anyhow::Result<Tracked> {
        self.transition(id, &[JobState::Queued, JobState::Converting], doc! {"state": JobState::Converting.as_str(), "progress": 0}).await
    }

    /// The source's duration, once ffprobe told it.
    pub async fn set_duration(&self, id: VideoId, seconds: f64) -> anyhow::Result<Tracked> {
        self.transition(id, &[JobState::Converting], doc! {"duration_seconds": seconds}).await
    }

    /// Progress of a converting job (callers throttle: at most about one write a second).
    pub async fn set_progress(&self, id: VideoId, percent: i32) -> anyhow::Result<Tracked> {
        self.transition(id, &[JobState::Converting], doc! {"progress": percent.clamp(0, 100)}).await
    }

    /// -> `done` with its mp3. `Cancelled` means the job was deleted meanwhile: the caller
    /// removes the mp3 and announces nothing.
    pub async fn finish_done(&self, id: VideoId, mp3: Mp3Id) -> anyhow::Result<Tracked> {
        let set = doc! {"state": JobState::Done.as_str(), "progress": 100, "mp3_fid": mp3.oid(), "ended_at": now(), "error": null};
        self.transition(id, &[JobState::Queued, JobState::Converting, JobState::Done], set).await
    }

    /// -> `failed` with a reason the owner can act on.
    pub async fn finish_failed(&self, id: VideoId, error: &str) -> anyhow::Result<Tracked> {
        let set = doc! {"state": JobState::Failed.as_str(), "error": error, "ended_at": now()};
        self.transition(id, &[JobState::Queued, JobState::Converting, JobState::Failed], set).await
    }

    /// Leaves a tombstone of the owner's job (see [`JobState::Deleted`]); returns the job as it
    /// was, or `None` when the owner has no such job.
    pub async fn mark_deleted(&self, id: VideoId, owner: &str) -> anyhow::Result<Option<JobDoc>> {
        let set = doc! {"state": JobState::Deleted.as_str(), "updated_at": now(), "ended_at": now()};
        self.jobs
            .find_one_and_update(
                doc! {"_id": id.oid(), "owner": owner, "state": {"$ne": JobState::Deleted.as_str()}},
                doc! {"$set": set, "$inc": {"version": 1}},
            )
            .await
            .context("failed to delete the job")
    }

    /// -> `expired` (its files were removed by the retention sweep).
    pub async fn mark_expired(&self, id: VideoId, from: JobState) -> anyhow::Result<Tracked> {
        self.transition(id, &[from], doc! {"state": JobState::Expired.as_str()}).await
    }

    /// Jobs in `state` that ended before `cutoff` (retention), oldest first.
    pub async fn ended_before(&self, state: JobState, cutoff: DateTime, limit: i64) -> anyhow::Result<Vec<JobDoc>> {
        self.oldest_ended(doc! {"state": state.as_str(), "ended_at": {"$lt": cutoff}}, limit).await
    }

    /// Ended jobs (done or failed before `cutoff`) whose video is still stored.
    pub async fn sources_to_remove(&self, cutoff: DateTime, limit: i64) -> anyhow::Result<Vec<JobDoc>> {
        let states = vec![JobState::Done.as_str(), JobState::Failed.as_str()];
        self.oldest_ended(doc! {"state": {"$in": states}, "ended_at": {"$lt": cutoff}, "source_removed": {"$ne": true}}, limit).await
    }

    /// Up to `limit` jobs matching `filter`, those that ended first first.
    async fn oldest_ended(&self, filter: mongodb::bson::Document, limit: i64) -> anyhow::Result<Vec<JobDoc>> {
        let found = self.jobs.find(filter).sort(doc! {"ended_at": 1}).limit(limit).await.context("failed to find ended jobs")?;
        found.try_collect().await.context("failed to find ended jobs")
    }

    /// Records that the job's video was removed.
    pub async fn mark_source_removed(&self, id: VideoId) -> anyhow::Result<()> {
        self.jobs.update_one(doc! {"_id": id.oid()}, doc! {"$set": {"source_removed": true}}).await.context("failed to update the job")?;
        Ok(())
    }

    /// Tombstones older than `cutoff` (their files are removed once more before purging).
    pub async fn deleted_before(&self, cutoff: DateTime, limit: i64) -> anyhow::Result<Vec<JobDoc>> {
        self.jobs
            .find(doc! {"state": JobState::Deleted.as_str(), "updated_at": {"$lt": cutoff}})
            .limit(limit)
            .await
            .context("failed to find deleted jobs")?
            .try_collect()
            .await
            .context("failed to find deleted jobs")
    }

    /// Removes tombstones older than `cutoff` for good.
    pub async fn purge_deleted(&self, cutoff: DateTime) -> anyhow::Result<u64> {
        let r = self
            .jobs
            .delete_many(doc! {"state": JobState::Deleted.as_str(), "updated_at": {"$lt": cutoff}})
            .await
            .context("failed to purge deleted jobs")?;
        Ok(r.deleted_count)
    }

    /// Jobs changed at or after `since`, oldest change first (the gateways' change poller).
    pub async fn changed_since(&self, since: DateTime, limit: i64) -> anyhow::Result<Vec<JobDoc>> {
        self.jobs
            .find(doc! {"updated_at": {"$gte": since}})
            .sort(doc! {"updated_at": 1})
            .limit(limit)
            .await
            .context("failed to poll job changes")?
            .try_collect()
            .await
            .context("failed to poll job changes")
    }
}

/// Renders a duration like `7 days` for messages.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s >= 86_400 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 && s >= 3600 => format!("{} hours", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let c = Cursor { created_at: DateTime::from_millis(1_700_000_000_123), id: ObjectId::new() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "x",
            "1-zz",
            "714464859794654-65f0c0ffee0123456789abcd",
            "-1-65f0c0ffee0123456789abcd",
            "abc-65f0c0ffee0123456789abcd",
            "1-65f0c0ffee0123456789abc",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn states_serialise_lowercase_and_deleted_is_not_public() {
        assert_eq!(serde_json::to_value(JobState::Converting).unwrap(), "converting");
        assert_eq!(JobState::parse_public("done"), Some(JobState::Done));
        assert_eq!(JobState::parse_public("deleted"), None);
        assert!(JobState::Expired.is_final() && !JobState::Converting.is_final());
    }
}
