//! `POST /upload`: stream exactly one file from the multipart body into GridFS, then announce it
//! on the video queue with a confirmed publish.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request, State};
use axum::http::header;
use common::claims::Claims;
use common::gridfs::{self, UploadError};
use common::ids::VideoId;
use common::message::JobMessage;
use futures_util::{Stream, StreamExt, TryStreamExt};
use mongodb::bson::{doc, oid::ObjectId, Bson};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::io::StreamReader;
use tracing::{info, instrument};

use crate::auth::AuthUser;
use crate::error::{from_mongo, GatewayError};
use crate::sniff;
use crate::startup::AppState;

/// Metadata field set once the video's message is confirmed by the broker; the outbox sweep
/// announces files where it is still false.
pub const QUEUED_FIELD: &str = "metadata.queued";

/// How much of a refused upload's body is read and discarded before answering, and for how
/// long: a client still sending its body when the connection closes sees a reset instead of
/// our answer, so small refused uploads are drained; large ones are cut off.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

#[instrument(skip_all, fields(user))]
pub async fn upload(State(state): State<AppState>, request: Request) -> Result<&'static str, GatewayError> {
    let (mut parts, body) = request.into_parts();
    let shared = SharedBody::new(body);
    let result = async {
        let claims = AuthUser::from_request_parts(&mut parts, &state).await?.require_admin()?;
        tracing::Span::current().record("user", claims.username.as_str());
        let request = Request::from_parts(parts, Body::from_stream(shared.clone()));
        store_and_announce(&state, &claims, request).await
    }
    .await;
    match &result {
        Ok(_) => metrics::counter!(common::metrics::UPLOADS, "outcome" => "accepted").increment(1),
        Err(e) => {
            metrics::counter!(common::metrics::UPLOADS, "outcome" => "refused", "reason" => e.reason()).increment(1);
            shared.drain(DRAIN_BYTES, DRAIN_TIME).await;
        }
    }
    result
}

async fn store_and_announce(state: &AppState, claims: &Claims, request: Request) -> Result<&'static str, GatewayError> {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.max_upload_bytes + 64 * 1024) {
        // Larger than the limit plus any multipart framing: refuse before reading a byte.
        return Err(GatewayError::TooLarge { limit: state.max_upload_bytes });
    }
    // With MongoDB or RabbitMQ unreachable, answer 503 within the dependency timeout, before
    // reading the body: a failed GridFS write waits that long twice (the write, then the
    // driver's clean-up of the partial file), and a video stored while the broker is away
    // would be deleted again once its publish fails.
    let ping = state.videos.run_command(doc! {"ping": 1}).await;
    ping.map_err(|e| from_mongo(anyhow::Error::new(e).context("MongoDB is unreachable")))?;
    state.publisher.ensure_connected().await.map_err(|e| GatewayError::Unavailable(e.context("RabbitMQ is unreachable")))?;
    let mut multipart = Multipart::from_request(request, state).await.map_err(|_| GatewayError::ExactlyOneFile)?;

    let mut stored: Option<VideoId> = None;
    let result = async {
        while let Some(field) = multipart.next_field().await.map_err(|e| GatewayError::BadMultipart(e.body_text()))? {
            let Some(raw_name) = field.file_name() else { continue };
            if stored.is_some() {
                return Err(GatewayError::ExactlyOneFile);
            }
            let filename = clean_filename(raw_name);
            let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
            let reader = StreamReader::new(field.map_err(io::Error::other));
            let id = store(state, claims, &filename, &content_type, reader).await?;
            stored = Some(id);
        }
        stored.ok_or(GatewayError::ExactlyOneFile)
    }
    .await;
    let video = match result {
        Ok(video) => video,
        Err(e) => {
            if let Some(video) = stored {
                delete_video(state, video).await;
            }
            return Err(e);
        }
    };

    let message = JobMessage::new_video(video.to_string(), claims.username.clone());
    if let Err(e) = state.publisher.publish(&state.video_queue, &message.to_json(), Default::default()).await {
        delete_video(state, video).await;
        return Err(GatewayError::Unavailable(e.context("failed to announce the upload")));
    }
    mark_queued(state, video).await;
    info!(video_fid = %video, "upload stored and queued");
    Ok("success!")
}

/// The request body, shared so that what the handler left unread can be drained afterwards.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<BodyDataStream>>);

impl SharedBody {
    fn new(body: Body) -> Self {
        Self(Arc::new(Mutex::new(body.into_data_stream())))
    }

    async fn drain(&self, max_bytes: usize, max_time: Duration) {
        let mut this = self.clone();
        let _ = tokio::time::timeout(max_time, async move {
            let mut seen = 0;
            while let Some(Ok(chunk)) = this.next().await {
                seen += chunk.len();
                if seen > max_bytes {
                    break;
                }
            }
        })
        .await;
    }
}

impl Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Only one reader polls at a time (the handler, then the drain): never contended.
        let mut inner = self.0.lock().expect("body lock");
        Pin::new(&mut *inner).poll_next(cx)
    }
}

/// Streams one file into GridFS after checking its first bytes; nothing is stored for a file
/// that is not audio or video, or that is larger than the limit.
async fn store<R: AsyncRead + Unpin + Send>(
    state: &AppState,
    claims: &Claims,
    filename: &str,
    content_type: &str,
    mut reader: R,
) -> Result<VideoId, GatewayError> {
    let mut head = Vec::with_capacity(sniff::PREFIX_LEN);
    (&mut reader).take(sniff::PREFIX_LEN as u64).read_to_end(&mut head).await.map_err(source_error)?;
    if !sniff::is_media(&head) {
        return Err(GatewayError::UnsupportedMedia);
    }
    let limited = Limited { inner: io::Cursor::new(head).chain(reader), remaining: state.max_upload_bytes };
    let id = ObjectId::new();
    let metadata = doc! {
        "username": &claims.username,
        "filename": filename,
        "content_type": content_type,
        "queued": false,
    };
    match gridfs::upload(&gridfs::bucket(&state.videos), id, filename, metadata, limited).await {
        Ok(bytes) => {
            metrics::counter!(common::metrics::UPLOAD_BYTES).increment(bytes);
            Ok(VideoId::new(id))
        }
        Err(UploadError::Source(e)) if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) => {
            Err(GatewayError::TooLarge { limit: state.max_upload_bytes })
        }
        Err(UploadError::Source(e)) => Err(source_error(e)),
        Err(UploadError::Store(e)) => Err(from_mongo(e)),
    }
}

fn source_error(e: io::Error) -> GatewayError {
    GatewayError::BadMultipart(format!("the upload was interrupted: {e}"))
}

async fn delete_video(state: &AppState, video: VideoId) {
    if let Err(e) = gridfs::bucket(&state.videos).delete(Bson::ObjectId(video.oid())).await {
        // The outbox sweep would announce it later; the converter then processes it.
        tracing::error!(error.cause_chain = ?e, video_fid = %video, "failed to delete an unannounced video");
    }
}

/// Records that the video's message was confirmed (best effort: if this fails, the outbox sweep
/// announces it again and the converter's idempotence absorbs the duplicate).
pub async fn mark_queued(state: &AppState, video: VideoId) {
    let files = state.videos.collection::<mongodb::bson::Document>("fs.files");
    if let Err(e) = files.update_one(doc! {"_id": video.oid()}, doc! {"$set": {QUEUED_FIELD: true}}).await {
        tracing::warn!(error.cause_chain = ?e, video_fid = %video, "failed to mark video as queued");
    }
}

/// The client's file name, kept only as metadata: no path, no control characters, bounded.
pub fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "upload".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// The error a [`Limited`] reader fails with.
#[derive(Debug, thiserror::Error)]
#[error("upload exceeds the size limit")]
struct TooLarge;

/// Fails with [`TooLarge`] once more than `remaining` bytes were read.
struct Limited<R> {
    inner: R,
    remaining: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Read at most one byte past the limit into a sub-buffer, so an oversized read can be
        // refused without handing the caller any of it (as tokio's `Take` does).
        let max = usize::try_from(this.remaining.saturating_add(1)).unwrap_or(usize::MAX).min(buf.remaining());
        let mut sub = buf.take(max);
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
        let n = sub.filled().len();
        if n as u64 > this.remaining {
            return Poll::Ready(Err(io::Error::other(TooLarge)));
        }
        // SAFETY: `sub` covers the start of `buf`'s unfilled part and the inner reader
        // initialised its first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        this.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_never_paths() {
        assert_eq!(clean_filename("test.mkv"), "test.mkv");
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\Users\\x\\clip.mp4"), "clip.mp4");
        assert_eq!(clean_filename("a\r\nb\0.mp4"), "ab.mp4");
        assert_eq!(clean_filename(".."), "upload");
        assert_eq!(clean_filename(""), "upload");
        assert_eq!(clean_filename(&"x".repeat(1000)).len(), 255);
    }

    #[tokio::test]
    async fn limited_reader_fails_past_the_limit() {
        let mut ok = Limited { inner: &b"12345"[..], remaining: 5 };
        let mut out = Vec::new();
        ok.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"12345");
        let mut over = Limited { inner: &b"123456"[..], remaining: 5 };
        let err = over.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(err.get_ref().unwrap().is::<TooLarge>());
    }
}
