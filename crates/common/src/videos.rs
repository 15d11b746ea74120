//! The videos store: uploaded videos as GridFS files in the videos database, each with its
//! owner, name, content type and whether its message was published. The only module that
//! names the files collection's fields for videos.

use std::time::SystemTime;

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::gridfs::FilesCollectionDocument;
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::email::Email;
use crate::gridfs::{self, UploadError};
use crate::ids::VideoId;

const OWNER: &str = "metadata.username";
const QUEUED: &str = "metadata.queued";
const UPLOADED: &str = "uploadDate";

/// GridFS chunk size of uploaded videos. An upload streaming holds about three of them (the
/// driver's chunk buffer, the serialized chunk waiting for a pool connection, our read buffer)
/// besides its connection's 64 KiB buffer: measured (xtask concurrent-uploads), 1 MiB chunks
/// cost ~1.8 MiB per upload, 256 KiB ~1.1 MiB, 64 KiB ~0.65 MiB. Only the converter reads
/// videos, whole, so small chunks cost little there; mp3s, which downloads serve, keep
/// [`gridfs::CHUNK_SIZE`].
pub const CHUNK_SIZE: u32 = 64 * 1024;

/// A video file's `metadata` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoMeta {
    /// The owner's email.
    pub username: String,
    /// The client's file name (cleaned).
    pub filename: String,
    pub content_type: String,
    /// Set once the video's message is confirmed by the broker; the outbox sweep announces
    /// videos where it is still false.
    pub queued: bool,
}

/// A video stored within a quota window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upload {
    pub video: VideoId,
    pub bytes: u64,
    pub at: DateTime,
}

/// A stored video whose message was never confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unannounced {
    pub video: VideoId,
    /// `None` when the stored owner is not an email address (nobody to convert it for).
    pub owner: Option<Email>,
}

/// The kind of [`VideoStore`].
#[derive(Debug)]
pub enum Videos {}

/// The videos database's GridFS files (the jobs store lives in the same database).
pub type VideoStore = gridfs::Store<Videos>;

impl VideoStore {
    /// The indexes of the quota's per-owner query and of the outbox sweep (best effort for
    /// callers: both queries work without them, slower).
    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        let by_owner = IndexModel::builder().keys(doc! {OWNER: 1, UPLOADED: 1}).build();
        let unqueued = IndexModel::builder().keys(doc! {QUEUED: 1, UPLOADED: 1}).build();
        self.files().create_indexes([by_owner, unqueued]).await.context("failed to create the videos indexes")?;
        Ok(())
    }

    /// Streams `reader` into a new video of `owner` (not yet queued); see
    /// [`gridfs::upload_with_chunk_size`]. Returns its id and length.
    pub async fn store<R: AsyncRead + Unpin>(
        &self,
        owner: &Email,
        filename: &str,
        content_type: &str,
        reader: R,
    ) -> Result<(VideoId, u64), UploadError> {
        let meta =
            VideoMeta { username: owner.to_string(), filename: filename.to_owned(), content_type: content_type.to_owned(), queued: false };
        let metadata = mongodb::bson::to_document(&meta).expect("VideoMeta is a document");
        let id = VideoId::new(mongodb::bson::oid::ObjectId::new());
        let bytes =
            gridfs::upload_with_chunk_size(&gridfs::bucket(self.database()), id.oid(), filename, metadata, reader, CHUNK_SIZE).await?;
        Ok((id, bytes))
    }

    /// Records that the video's message was confirmed.
    pub async fn mark_queued(&self, video: VideoId) -> anyhow::Result<()> {
        self.files().update_one(doc! {"_id": video.oid()}, doc! {"$set": {QUEUED: true}}).await?;
        Ok(())
    }

    /// Videos stored before `cutoff` whose message was never confirmed.
    pub async fn unannounced_before(&self, cutoff: SystemTime) -> anyhow::Result<Vec<Unannounced>> {
        let filter = doc! {QUEUED: false, UPLOADED: {"$lte": DateTime::from_system_time(cutoff)}};
        let files: Vec<Document> = self.files().find(filter).projection(doc! {"_id": 1, OWNER: 1}).await?.try_collect().await?;
        Ok(files
            .iter()
            .filter_map(|file| {
                let video = VideoId::new(file.get_object_id("_id").ok()?);
                let owner = file.get_document("metadata").ok()?.get_str("username").ok()?.parse().ok();
                Some(Unannounced { video, owner })
            })
            .collect())
    }

    /// The videos `owner` stored since `since`.
    pub async fn uploads_since(&self, owner: &str, since: SystemTime) -> anyhow::Result<Vec<Upload>> {
        let recent: Vec<Document> = self
            .files()
            .find(doc! {OWNER: owner, UPLOADED: {"$gte": DateTime::from_system_time(since)}})
            .projection(doc! {"_id": 1, "length": 1, UPLOADED: 1})
            .await?
            .try_collect()
            .await?;
        Ok(recent
            .iter()
            .filter_map(|file| {
                let (id, at) = (file.get_object_id("_id").ok()?, file.get_datetime(UPLOADED).ok()?);
                Some(Upload { video: VideoId::new(id), bytes: length(file), at: *at })
            })
            .collect())
    }

    /// How many videos `owner` has stored.
    pub async fn count_of(&self, owner: &str) -> anyhow::Result<u64> {
        Ok(self.files().count_documents(doc! {OWNER: owner}).await?)
    }

    /// The video's files document, if it is stored.
    pub async fn find(&self, video: VideoId) -> anyhow::Result<Option<FilesCollectionDocument>> {
        gridfs::find_file(self.database(), doc! {"_id": video.oid()}).await
    }

    /// Removes the video; one already gone is fine (and chunks left by an interrupted delete
    /// are removed).
    pub async fn delete(&self, video: VideoId) -> anyhow::Result<()> {
        gridfs::delete(self.database(), Bson::ObjectId(video.oid())).await
    }
}

/// GridFS writes `length` as a 64- or 32-bit integer depending on the writer.
fn length(file: &Document) -> u64 {
    file.get_i64("length").map(|l| l as u64).or_else(|_| file.get_i32("length").map(|l| l as u64)).unwrap_or(0)
}
