//! `POST /upload`: stream exactly one file from the multipart body into GridFS, then announce it
//! on the video queue with a confirmed publish.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::claims::Claims;
use common::email::Email;
use common::gridfs::UploadError;
use common::ids::VideoId;
use common::jobs::JobDoc;
use common::message::VideoJob;
use futures_util::{Stream, StreamExt, TryStreamExt};
use mongodb::bson::doc;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::io::StreamReader;
use tracing::{info, instrument};

use crate::auth::AuthUser;
use crate::error::{from_mongo, GatewayError};
use crate::jobs::{self, options::OptionsBuilder};
use crate::state::AppState;
use crate::{quota, sniff};

/// How much of a refused upload's body is read and discarded before answering, and for how
/// long: a client still sending its body when the connection closes sees a reset instead of
/// our answer, so small refused uploads are drained; large ones are cut off.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Bytes the multipart parser may take in without handing anything out: it buffers while it
/// looks for a boundary or for the end of a part's headers, so a body showing neither would
/// otherwise grow it without end.
pub const MAX_FRAMING_BYTES: usize = 64 * 1024;
/// Parts a form may have (the file and a few settings).
pub const MAX_PARTS: usize = 16;
/// Size of a form field that is not the file (settings such as a bitrate).
pub const MAX_FIELD_BYTES: usize = 16 * 1024;

/// The form's fields other than the file, in order (bounded by [`MAX_PARTS`] and
/// [`MAX_FIELD_BYTES`]); unknown names are kept and ignored.
pub type FormFields = Vec<(String, Bytes)>;

/// `POST /upload`.
pub fn router() -> Router<AppState> {
    // The body limit is ours (MAX_UPLOAD_BYTES, enforced while streaming), not axum's 2 MB.
    Router::new().route("/upload", post(upload).layer(DefaultBodyLimit::disable()))
}

#[instrument(skip_all, fields(user))]
pub async fn upload(State(state): State<AppState>, request: Request) -> Result<Response, GatewayError> {
    let (mut parts, body) = request.into_parts();
    let wants_json = crate::jobs::wants_json(&parts.headers);
    let shared = SharedBody::new(body);
    let result = async {
        let claims = AuthUser::from_request_parts(&mut parts, &state).await?.require_admin()?;
        tracing::Span::current().record("user", claims.username.as_str());
        // Held until the answer: bounds the buffers of uploads streaming at once.
        let _permit = state.upload_permits.clone().try_acquire_owned().map_err(|_| GatewayError::Busy)?;
        let request = Request::from_parts(parts, Body::empty());
        store_and_announce(&state, &claims, request, &shared).await
    }
    .await;
    match &result {
        Ok(_) => metrics::counter!(common::metrics::UPLOADS, "outcome" => "accepted").increment(1),
        Err(e) => {
            metrics::counter!(common::metrics::UPLOADS, "outcome" => "refused", "reason" => e.reason()).increment(1);
            shared.drain(DRAIN_BYTES, DRAIN_TIME).await;
        }
    }
    let job = result?;
    if !wants_json {
        // The original's clients: exactly what the tutorial's gateway answered.
        return Ok("success!".into_response());
    }
    // A client that asked for JSON gets the job it can follow.
    let location = format!("/jobs/{}", job.id.to_hex());
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(crate::jobs::view(&job, &state.links))).into_response())
}

async fn store_and_announce(state: &AppState, claims: &Claims, request: Request, body: &SharedBody) -> Result<JobDoc, GatewayError> {
    // Auth issues tokens only for email addresses (it parses the login's).
    let owner: Email = claims
        .username
        .parse()
        .map_err(|e| GatewayError::Internal(anyhow::Error::new(e).context("auth vouched for a username that is not an email address")))?;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.max_upload_bytes + 64 * 1024) {
        // Larger than the limit plus any multipart framing: refuse before reading a byte.
        return Err(GatewayError::TooLarge { limit: state.max_upload_bytes });
    }
    // With MongoDB or RabbitMQ unreachable, answer 503 within the dependency timeout, before
    // reading the body: a failed GridFS write waits that long twice (the write, then the
    // driver's clean-up of the partial file), and a video stored while the broker is away
    // would be deleted again once its publish fails.
    let ping = state.videos.database().run_command(doc! {"ping": 1}).await;
    ping.map_err(|e| from_mongo(anyhow::Error::new(e).context("MongoDB is unreachable")))?;
    state.publisher.ensure_connected().await.map_err(|e| GatewayError::Unavailable(e.context("RabbitMQ is unreachable")))?;
    if let Some(max) = state.video_queue_max_length {
        // The backlog is bounded here, not by the broker: a full queue would drop the retries
        // dead-lettered back into it. Replicas racing may pass the bound by a few, never lose one.
        let depth = state
            .publisher
            .queue_depth(&state.video_queue)
            .await
            .map_err(|e| GatewayError::Unavailable(e.context("RabbitMQ is unreachable")))?;
        if depth >= max {
            return Err(GatewayError::QueueFull);
        }
    }
    let allowed_today = quota::check_before(&state.quotas, &quota::usage(state, &claims.username, &state.quotas).await?)?;

    let progress = Progress::default();
    let guarded = Guarded { inner: body.clone(), progress: progress.clone(), limit: MAX_FRAMING_BYTES };
    let (parts, _) = request.into_parts();
    let request = Request::from_parts(parts, Body::from_stream(guarded));
    let mut multipart = Multipart::from_request(request, state).await.map_err(|_| GatewayError::ExactlyOneFile)?;

    let mut stored: Option<VideoId> = None;
    let mut fields = FormFields::new();
    let result = async {
        let (video, filename) = read_form(state, &owner, &mut multipart, &progress, allowed_today, &mut stored, &mut fields).await?;
        let video = check_quota_after(state, claims, video).await?;
        let options = output_options(&fields)?;
        // The job exists before the message: a converter never sees a video without its job.
        let job = JobDoc::queued(video, &claims.username, &filename, options);
        state.jobs.create(&job).await.map_err(from_mongo)?;
        Ok(job)
    }
    .await;
    let job = match result {
        Ok(job) => job,
        Err(e) => {
            if let Some(video) = stored {
                delete_video(state, video).await;
            }
            return Err(e);
        }
    };
    let video = job.video();

    let message = VideoJob::new(video, owner, job.options.clone());
    if let Err(e) = state.publisher.publish(&state.video_queue, &message.to_json(), Default::default()).await {
        delete_video(state, video).await;
        if let Err(e) = state.jobs.mark_deleted(video, &claims.username).await {
            tracing::warn!(error.cause_chain = ?e, video_fid = %video, "failed to remove the job of an unannounced upload");
        }
        return Err(GatewayError::Unavailable(e.context("failed to announce the upload")));
    }
    mark_queued(state, video).await;
    info!(video_fid = %video, fields = fields.len(), "upload stored and queued");
    Ok(job)
}

/// The output options among the form's text fields (before or after the file); other names
/// are ignored.
fn output_options(fields: &FormFields) -> Result<common::jobs::OutputOptions, GatewayError> {
    let mut options = OptionsBuilder::default();
    for (name, value) in fields {
        let Some(name) = jobs::options::FIELDS.into_iter().find(|f| f == name) else { continue };
        if value.len() > jobs::options::MAX_VALUE_LEN {
            return Err(GatewayError::InvalidOption { field: name, reason: "value too long".into() });
        }
        let value = std::str::from_utf8(value).map_err(|_| GatewayError::InvalidOption { field: name, reason: "not UTF-8 text".into() })?;
        options.set(name, value)?;
    }
    options.finish()
}

/// Reads the whole form: exactly one file, stored as it streams in, and at most a few small
/// other fields (collected into `fields`). A second file is refused whatever either contains,
/// so a first file that is not media is read to its end before its 415 is given.
async fn read_form(
    state: &AppState,
    owner: &Email,
    multipart: &mut Multipart,
    progress: &Progress,
    allowed_today: u64,
    stored: &mut Option<VideoId>,
    fields: &mut FormFields,
) -> Result<(VideoId, String), GatewayError> {
    let mut files = 0;
    let mut stored_name = String::new();
    let mut parts = 0;
    let mut refused: Option<GatewayError> = None;
    loop {
        let next = multipart.next_field().await;
        let field = match next {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) if progress.tripped() => {
                return Err(GatewayError::BadMultipart(format!("no part boundary or end of part headers within {MAX_FRAMING_BYTES} bytes")))
            }
            Err(e) => return Err(GatewayError::BadMultipart(e.body_text())),
        };
        progress.mark();
        parts += 1;
        if parts > MAX_PARTS {
            return Err(GatewayError::TooManyParts { max: MAX_PARTS });
        }
        let name = field.name().unwrap_or("").chars().take(64).collect::<String>();
        let Some(raw_name) = field.file_name() else {
            let value = read_field(field, progress, &name).await?;
            fields.push((name, value));
            continue;
        };
        files += 1;
        if files > 1 {
            return Err(GatewayError::ExactlyOneFile);
        }
        let filename = clean_filename(raw_name);
        let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
        let marking = progress.clone();
        let mut reader = StreamReader::new(
            field
                .map_ok(move |chunk| {
                    marking.mark();
                    chunk
                })
                .map_err(io::Error::other),
        );
        match store(state, owner, &filename, &content_type, &mut reader, allowed_today).await {
            Ok(id) => {
                *stored = Some(id);
                stored_name = filename;
            }
            Err(GatewayError::UnsupportedMedia) => {
                // Read on: a second file after it is still "exactly 1 file required".
                let mut rest = (&mut reader).take(state.max_upload_bytes);
                tokio::io::copy(&mut rest, &mut tokio::io::sink()).await.map_err(|e| source_error(e, progress))?;
                refused = Some(GatewayError::UnsupportedMedia);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    stored.map(|id| (id, stored_name)).ok_or(GatewayError::ExactlyOneFile)
}

/// A form field that is not a file, read whole up to [`MAX_FIELD_BYTES`].
async fn read_field(mut field: axum::extract::multipart::Field<'_>, progress: &Progress, name: &str) -> Result<Bytes, GatewayError> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, progress))? {
        progress.mark();
        if value.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(GatewayError::FieldTooLarge { name: name.to_owned(), limit: MAX_FIELD_BYTES });
        }
        value.extend_from_slice(&chunk);
    }
    Ok(value.into())
}

fn multipart_error(e: axum::extract::multipart::MultipartError, progress: &Progress) -> GatewayError {
    if progress.tripped() {
        GatewayError::BadMultipart(format!("no part boundary or end of part headers within {MAX_FRAMING_BYTES} bytes"))
    } else {
        GatewayError::BadMultipart(e.body_text())
    }
}

/// With the upload stored, counts again: uploads racing on other replicas are refused here.
async fn check_quota_after(state: &AppState, claims: &Claims, video: VideoId) -> Result<VideoId, GatewayError> {
    quota::check_after(&state.quotas, &quota::usage(state, &claims.username, &state.quotas).await?)?;
    Ok(video)
}

/// Progress of the multipart parser, shared between the body it reads ([`Guarded`]) and the
/// handler, which marks every part and chunk the parser hands out.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<ProgressState>>);

#[derive(Default)]
struct ProgressState {
    /// Bytes fed to the parser since it last handed something out.
    unconsumed: usize,
    /// The guard paused once at the limit, to let the parser hand out what it holds.
    paused: bool,
    tripped: bool,
}

impl Progress {
    fn mark(&self) {
        let mut s = self.0.lock().expect("progress lock");
        s.unconsumed = 0;
        s.paused = false;
    }

    fn tripped(&self) -> bool {
        self.0.lock().expect("progress lock").tripped
    }
}

/// The body as the multipart parser sees it: once [`MAX_FRAMING_BYTES`] went in with nothing
/// coming out, it pauses once (the parser then hands out the data it holds, if any) and then
/// fails, so the parser's buffer stays bounded whatever the body.
struct Guarded {
    inner: SharedBody,
    progress: Progress,
    limit: usize,
}

impl Stream for Guarded {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        {
            let mut s = self.progress.0.lock().expect("progress lock");
            if s.unconsumed >= self.limit {
                if s.paused {
                    s.tripped = true;
                    return Poll::Ready(Some(Err(io::Error::other("multipart framing exceeds its limit"))));
                }
                s.paused = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        if let Some(Ok(chunk)) = &item {
            self.progress.0.lock().expect("progress lock").unconsumed += chunk.len();
        }
        Poll::Ready(item.map(|r| r.map_err(io::Error::other)))
    }
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
    owner: &Email,
    filename: &str,
    content_type: &str,
    reader: &mut R,
    allowed_today: u64,
) -> Result<VideoId, GatewayError> {
    let mut head = Vec::with_capacity(sniff::PREFIX_LEN);
    (&mut *reader).take(sniff::PREFIX_LEN as u64).read_to_end(&mut head).await.map_err(|e| source_error(e, &Progress::default()))?;
    if !sniff::is_media(&head) {
        return Err(GatewayError::UnsupportedMedia);
    }
    // The daily quota cuts a stream short too, answered as a quota (429), not as "too large".
    let by_quota = allowed_today < state.max_upload_bytes;
    let limited = Limited { inner: io::Cursor::new(head).chain(reader), remaining: state.max_upload_bytes.min(allowed_today) };
    match state.videos.store(owner, filename, content_type, limited).await {
        Ok((id, bytes)) => {
            metrics::counter!(common::metrics::UPLOAD_BYTES).increment(bytes);
            Ok(id)
        }
        Err(UploadError::Source(e)) if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) => {
            if by_quota {
                let usage = quota::usage(state, owner.as_str(), &state.quotas).await?;
                Err(quota::bytes_error(&state.quotas, &usage))
            } else {
                Err(GatewayError::TooLarge { limit: state.max_upload_bytes })
            }
        }
        Err(UploadError::Source(e)) => Err(source_error(e, &Progress::default())),
        Err(UploadError::Store(e)) => Err(from_mongo(e)),
    }
}

fn source_error(e: io::Error, progress: &Progress) -> GatewayError {
    if progress.tripped() {
        return GatewayError::BadMultipart(format!("no part boundary or end of part headers within {MAX_FRAMING_BYTES} bytes"));
    }
    GatewayError::BadMultipart(format!("the upload was interrupted: {e}"))
}

async fn delete_video(state: &AppState, video: VideoId) {
    if let Err(e) = state.videos.delete(video).await {
        // The outbox sweep would announce it later; the converter then processes it.
        tracing::error!(error.cause_chain = ?e, video_fid = %video, "failed to delete an unannounced video");
    }
}

/// Records that the video's message was confirmed (best effort: if this fails, the outbox sweep
/// announces it again and the converter's idempotence absorbs the duplicate).
async fn mark_queued(state: &AppState, video: VideoId) {
    if let Err(e) = state.videos.mark_queued(video).await {
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
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n as u64 > this.remaining {
            // Take the read back, so the caller is handed none of an oversized read.
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::other(TooLarge)));
        }
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
