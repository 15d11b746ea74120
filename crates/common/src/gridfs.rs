//! GridFS: a client tuned to fail fast when MongoDB is away, streaming uploads from any
//! `AsyncRead`, and streaming (ranged) reads straight from the chunks collection.

use std::time::Duration;

use anyhow::Context;
use futures_util::{AsyncWriteExt as _, Stream, TryStreamExt};
use mongodb::bson::{doc, oid::ObjectId, Binary, Bson, Document};
use mongodb::error::{ErrorKind, GridFsErrorKind};
use mongodb::gridfs::{FilesCollectionDocument, GridFsBucket};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::MongoSettings;

/// Chunk size of new files: 1 MiB keeps the number of inserts low without large buffers.
pub const CHUNK_SIZE: u32 = 1024 * 1024;

/// A client whose operations give up after `timeout` when no server answers, so callers can
/// report "unavailable" instead of hanging. The driver reconnects by itself afterwards.
pub async fn client(settings: &MongoSettings, timeout: Duration, max_pool: u32) -> anyhow::Result<Client> {
    let mut opts = ClientOptions::parse(settings.uri.expose_secret()).await.context("invalid MONGODB_URI")?;
    opts.server_selection_timeout = Some(timeout);
    opts.connect_timeout = Some(timeout);
    opts.max_pool_size = Some(max_pool);
    opts.app_name = Some("mp3converter".into());
    Client::with_options(opts).context("failed to create the MongoDB client")
}

/// True when the server answers a ping.
pub async fn ping(db: &Database) -> bool {
    db.run_command(doc! {"ping": 1}).await.is_ok()
}

pub fn bucket(db: &Database) -> GridFsBucket {
    db.gridfs_bucket(None)
}

/// Why a streamed upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The source failed (client went away, size limit, ...); the partial file was removed.
    #[error("reading the upload failed")]
    Source(#[source] std::io::Error),
    /// MongoDB failed; the partial file was removed as far as possible.
    #[error("storing the upload failed")]
    Store(#[source] anyhow::Error),
}

/// Streams `reader` into a new GridFS file with id `id` in [`CHUNK_SIZE`] chunks; see
/// [`upload_with_chunk_size`].
pub async fn upload<R: AsyncRead + Unpin>(
    bucket: &GridFsBucket,
    id: ObjectId,
    filename: &str,
    metadata: Document,
    reader: R,
) -> Result<u64, UploadError> {
    upload_with_chunk_size(bucket, id, filename, metadata, reader, CHUNK_SIZE).await
}

/// Streams `reader` into a new GridFS file with id `id`; on any error the partial file is
/// aborted (its chunks deleted). Returns the stored length. Memory use is about twice
/// `chunk_size` (the driver's chunk buffer, and its copy in the insert message while one is
/// sent) plus a read buffer of at most 64 KiB, whatever the file size.
pub async fn upload_with_chunk_size<R: AsyncRead + Unpin>(
    bucket: &GridFsBucket,
    id: ObjectId,
    filename: &str,
    metadata: Document,
    mut reader: R,
    chunk_size: u32,
) -> Result<u64, UploadError> {
    let mut stream = bucket
        .open_upload_stream(filename)
        .id(Bson::ObjectId(id))
        .chunk_size_bytes(chunk_size)
        .metadata(metadata)
        .await
        .context("failed to open GridFS upload stream")
        .map_err(UploadError::Store)?;
    let mut buf = vec![0u8; (chunk_size as usize).clamp(4096, 64 * 1024)];
    let chunk = chunk_size.max(1) as u64;
    let mut total = 0u64;
    let result: Result<(), UploadError> = async {
        loop {
            // Never past a chunk boundary: the driver buffers writes until it holds a chunk, and a
            // write overshooting it would double that buffer's capacity for the whole upload.
            let room = (chunk - total % chunk).min(buf.len() as u64) as usize;
            let n = reader.read(&mut buf[..room]).await.map_err(UploadError::Source)?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).await.map_err(|e| store_error(e, "failed to write to GridFS"))?;
            total += n as u64;
        }
        stream.close().await.map_err(|e| store_error(e, "failed to finish the GridFS file"))
    }
    .await;
    if let Err(e) = result {
        match stream.abort().await {
            Ok(()) => {}
            // A failed write or close already removed the chunks (or tried to, see store_error).
            Err(abort) if matches!(*abort.kind, ErrorKind::GridFs(GridFsErrorKind::UploadStreamClosed)) => {}
            Err(abort) => tracing::warn!(error.cause_chain = ?abort, file_id = %id, "failed to abort partial GridFS upload"),
        }
        return Err(e);
    }
    Ok(total)
}

/// The driver's error out of the `io::Error` the upload stream wraps it in: `io::Error` hides
/// its inner error from `anyhow`'s cause chain, and callers classify driver errors (an
/// unreachable server is "unavailable", not "internal"). When the stream's own clean-up failed
/// too, the write's error is the cause reported; the clean-up's is logged.
fn store_error(e: std::io::Error, what: &'static str) -> UploadError {
    let driver = e.get_ref().and_then(|inner| inner.downcast_ref::<mongodb::error::Error>()).cloned();
    let cause = match driver {
        Some(m) => match &*m.kind {
            ErrorKind::GridFs(GridFsErrorKind::AbortError { original_error: Some(original), delete_error, .. }) => {
                tracing::warn!(error.cause_chain = ?delete_error, "failed to remove the chunks of a failed GridFS upload");
                anyhow::Error::new(original.clone())
            }
            _ => anyhow::Error::new(m),
        },
        None => anyhow::Error::new(e),
    };
    UploadError::Store(cause.context(what))
}

/// The files-collection document matching `filter`, if any.
pub async fn find_file(db: &Database, filter: Document) -> anyhow::Result<Option<FilesCollectionDocument>> {
    bucket(db).find_one(filter).await.context("failed to query GridFS files")
}

/// The GridFS files of one database, as a store of one kind `K` (the [`crate::videos`] and
/// [`crate::mp3s`] modules name the kinds and add their operations). Cheap to clone.
#[derive(Debug)]
pub struct Store<K> {
    db: Database,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self { db: self.db.clone(), kind: std::marker::PhantomData }
    }
}

impl<K> Store<K> {
    pub fn new(db: &Database) -> Self {
        Self { db: db.clone(), kind: std::marker::PhantomData }
    }

    /// The database itself (for what else lives there, and raw checks in tests).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The files collection; only the store modules use it.
    pub(crate) fn files(&self) -> mongodb::Collection<Document> {
        self.db.collection("fs.files")
    }

    /// Bytes `start..=end` of a stored file; see [`read_range`].
    pub fn read_range(
        &self,
        file: &FilesCollectionDocument,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
        read_range(&self.db, file, start, end)
    }
}

/// Deletes a file; one already gone is fine (its chunks left by an interrupted delete are
/// removed).
pub async fn delete(db: &Database, id: Bson) -> anyhow::Result<()> {
    match bucket(db).delete(id.clone()).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(&*e.kind, ErrorKind::GridFs(GridFsErrorKind::FileNotFound { .. })) => {
            db.collection::<Document>("fs.chunks").delete_many(doc! {"files_id": id}).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct ChunkData {
    n: i64,
    data: Binary,
}

/// Streams bytes `start..=end` of `file` in order, reading only the chunks that hold them
/// (`end` < `file.length`). A chunk that is missing, out of place or of the wrong size is an
/// error, never silently shifted or truncated data.
pub fn read_range(
    db: &Database,
    file: &FilesCollectionDocument,
    start: u64,
    end: u64,
) -> impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let chunks = db.collection::<ChunkData>("fs.chunks");
    let chunk = u64::from(file.chunk_size_bytes.max(1));
    let length = file.length;
    let (first, last) = (start / chunk, end / chunk);
    let filter = doc! {"files_id": file.id.clone(), "n": {"$gte": first as i64, "$lte": last as i64}};
    let to_io = |e: mongodb::error::Error| std::io::Error::other(e);
    futures_util::stream::try_unfold((Chunks::NotOpened(chunks, filter), first), move |(chunks, n)| async move {
        if n > last {
            return Ok(None);
        }
        let mut cursor = match chunks {
            Chunks::Open(cursor) => cursor,
            // 4 chunks (4 MiB) a batch: the next batch is fetched while these are sent, and
            // peak memory stays a few chunks whatever the file size.
            Chunks::NotOpened(coll, filter) => Box::new(
                coll.find(filter).sort(doc! {"n": 1}).projection(doc! {"_id": 0, "n": 1, "data": 1}).batch_size(4).await.map_err(to_io)?,
            ),
        };
        let data = match cursor.try_next().await.map_err(to_io)? {
            Some(ChunkData { n: got, data }) if got == n as i64 => data.bytes,
            _ => return Err(std::io::Error::other(format!("GridFS chunk {n} is missing"))),
        };
        let chunk_start = n * chunk;
        let expected = chunk.min(length.saturating_sub(chunk_start));
        if data.len() as u64 != expected {
            return Err(std::io::Error::other(format!("GridFS chunk {n} has {} bytes, expected {expected}", data.len())));
        }
        let from = start.saturating_sub(chunk_start) as usize;
        let to = (end + 1 - chunk_start).min(expected) as usize;
        Ok(Some((bytes::Bytes::from(data).slice(from..to), (Chunks::Open(cursor), n + 1))))
    })
}

/// Where a [`read_range`] stream stands: the query not sent yet, or its cursor.
enum Chunks {
    NotOpened(mongodb::Collection<ChunkData>, Document),
    Open(Box<mongodb::Cursor<ChunkData>>),
}
