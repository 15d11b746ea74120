//! The mp3s store: converted mp3s as GridFS files in the mp3s database, each with its owner
//! and the video it was made from (unique: one mp3 per video). The only module that names
//! the files collection's fields for mp3s.

use anyhow::Context;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::gridfs::FilesCollectionDocument;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::email::Email;
use crate::gridfs::{self, UploadError};
use crate::ids::{Mp3Id, VideoId};

const OWNER: &str = "metadata.username";
const SOURCE: &str = "metadata.video_fid";

/// An mp3 file's `metadata` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mp3Meta {
    /// The owner's email (the video's owner).
    pub username: String,
    /// The id of the video it was made from (24 hex digits).
    pub video_fid: String,
    pub content_type: String,
}

/// The kind of [`Mp3Store`].
#[derive(Debug)]
pub enum Mp3s {}

/// The mp3s database's GridFS files (the notifier's sent-mail log lives in the same database).
pub type Mp3Store = gridfs::Store<Mp3s>;

impl Mp3Store {
    /// A unique index on the source video makes a second mp3 for the same video impossible,
    /// even when two deliveries of it race.
    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        let index = IndexModel::builder()
            .keys(doc! {SOURCE: 1})
            .options(IndexOptions::builder().unique(true).sparse(true).name("video_fid_unique".to_owned()).build())
            .build();
        self.files().create_index(index).await.context("failed to create the mp3 index")?;
        Ok(())
    }

    /// Streams `reader` into the mp3 of `video`, owned by `owner`, named `<video>.mp3`. Fails
    /// with [`UploadError::Store`] when one was stored for the video already (unique index).
    pub async fn store<R: AsyncRead + Unpin>(&self, owner: &Email, video: VideoId, reader: R) -> Result<(Mp3Id, u64), UploadError> {
        let meta = Mp3Meta { username: owner.to_string(), video_fid: video.to_string(), content_type: "audio/mpeg".to_owned() };
        let metadata = mongodb::bson::to_document(&meta).expect("Mp3Meta is a document");
        let id = ObjectId::new();
        let bytes = gridfs::upload(&gridfs::bucket(self.database()), id, &format!("{video}.mp3"), metadata, reader).await?;
        Ok((Mp3Id::new(id), bytes))
    }

    /// The mp3 made from `video`, if one was.
    pub async fn made_from(&self, video: VideoId) -> anyhow::Result<Option<Mp3Id>> {
        let found = gridfs::find_file(self.database(), doc! {SOURCE: video.to_string()}).await?;
        Ok(found.and_then(|f| f.id.as_object_id()).map(Mp3Id::new))
    }

    /// Every mp3 made from `video` (a converter racing a delete may have stored one under a
    /// new id).
    pub async fn all_made_from(&self, video: VideoId) -> anyhow::Result<Vec<Mp3Id>> {
        let files: Vec<Document> =
            self.files().find(doc! {SOURCE: video.to_string()}).projection(doc! {"_id": 1}).await?.try_collect().await?;
        Ok(files.iter().filter_map(|d| d.get_object_id("_id").ok()).map(Mp3Id::new).collect())
    }

    /// How many of `videos` have their mp3.
    pub async fn count_made_from(&self, videos: &[VideoId]) -> anyhow::Result<u64> {
        let ids: Vec<String> = videos.iter().map(|v| v.to_string()).collect();
        Ok(self.files().count_documents(doc! {SOURCE: {"$in": ids}}).await?)
    }

    /// The mp3's files document when it belongs to `owner`: someone else's mp3, an unknown id
    /// and a video id (which lives in another database) all look the same.
    pub async fn find_owned(&self, mp3: Mp3Id, owner: &str) -> anyhow::Result<Option<FilesCollectionDocument>> {
        gridfs::find_file(self.database(), doc! {"_id": mp3.oid(), OWNER: owner}).await
    }

    /// The mp3's files document, whoever owns it.
    pub async fn find(&self, mp3: Mp3Id) -> anyhow::Result<Option<FilesCollectionDocument>> {
        gridfs::find_file(self.database(), doc! {"_id": mp3.oid()}).await
    }

    /// How many mp3s `owner` has.
    pub async fn count_of(&self, owner: &str) -> anyhow::Result<u64> {
        Ok(self.files().count_documents(doc! {OWNER: owner}).await?)
    }

    /// The videos `owner`'s mp3s were made from, one entry per mp3 (empty for an mp3 without).
    pub async fn sources_of(&self, owner: &str) -> anyhow::Result<Vec<String>> {
        let files: Vec<Document> = self.files().find(doc! {OWNER: owner}).projection(doc! {SOURCE: 1}).await?.try_collect().await?;
        Ok(files
            .iter()
            .map(|d| d.get_document("metadata").ok().and_then(|m| m.get_str("video_fid").ok()).unwrap_or_default().to_owned())
            .collect())
    }

    /// Removes the mp3; one already gone is fine.
    pub async fn delete(&self, mp3: Mp3Id) -> anyhow::Result<()> {
        gridfs::delete(self.database(), Bson::ObjectId(mp3.oid())).await
    }
}
