//! `GET /download?fid=`: stream the caller's own mp3 out of GridFS, with HTTP ranges so
//! interrupted downloads resume and players can seek.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::ids::Mp3Id;
use common::jobs::JobState;
use futures_util::TryStreamExt;
use mongodb::gridfs::FilesCollectionDocument;
use serde::Deserialize;
use tracing::instrument;

use crate::auth::AuthUser;
use crate::error::{from_mongo, GatewayError};
use crate::state::AppState;

/// `GET /download?fid=` (the signed link, `/jobs/<id>/download`, is the jobs area's route).
pub fn router() -> Router<AppState> {
    Router::new().route("/download", get(download))
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    fid: Option<String>,
}

#[instrument(skip_all, fields(user, fid))]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<DownloadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let claims = user.require_admin()?;
    let raw = query.ok().and_then(|Query(q)| q.fid).filter(|f| !f.is_empty()).ok_or(GatewayError::FidRequired)?;
    let fid: Mp3Id = raw.parse().map_err(|_| GatewayError::InvalidFid)?;
    tracing::Span::current().record("user", claims.username.as_str()).record("fid", tracing::field::display(fid));

    // Ownership is part of the query: someone else's mp3, an unknown id and a video id (which
    // lives in another database) all look the same: not found.
    let file = state.mp3s.find_owned(fid, &claims.username).await.map_err(from_mongo)?.ok_or(GatewayError::NotFound)?;
    serve_mp3(&state, &file, &fid.to_string(), &headers)
}

#[derive(Deserialize)]
pub struct LinkQuery {
    expires: Option<String>,
    sig: Option<String>,
}

/// `GET /jobs/<id>/download?expires=&sig=`: the job's mp3 through a signed link, without a
/// token (mail clients, `<audio>` elements). Ranges as for `/download`.
#[instrument(skip_all, fields(job))]
pub async fn by_link(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    query: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let id = crate::jobs::parse_id(&raw)?;
    tracing::Span::current().record("job", tracing::field::display(id));
    let (expires, sig) = query.map(|Query(q)| (q.expires, q.sig)).unwrap_or_default();
    state.links.verify(id, expires.as_deref(), sig.as_deref()).map_err(GatewayError::BadLink)?;
    let job = state.jobs.get(id).await.map_err(from_mongo)?.ok_or(GatewayError::NotFound)?;
    let mp3 = match job.state {
        JobState::Done => job.mp3().ok_or(GatewayError::NotFound)?,
        JobState::Expired => {
            return Err(GatewayError::Gone("this mp3 was deleted at the end of its retention period; upload the video again".into()))
        }
        _ => return Err(GatewayError::NotFound),
    };
    let file = state.mp3s.find(mp3).await.map_err(from_mongo)?.ok_or(GatewayError::NotFound)?;
    serve_mp3(&state, &file, &mp3.to_string(), &headers)
}

/// Streams an mp3 (whole, or the one range asked for) as `<name>.mp3`.
fn serve_mp3(state: &AppState, file: &FilesCollectionDocument, name: &str, headers: &HeaderMap) -> Result<Response, GatewayError> {
    let length = file.length;
    let etag = format!("\"{name}-{length}\"");

    let if_range_ok = headers.get(header::IF_RANGE).map(|v| v.to_str().is_ok_and(|v| v == etag)).unwrap_or(true);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if if_range_ok => parse_range(spec, length)?,
        _ => None,
    };

    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "audio/mpeg")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.mp3\""));
    let (status, start, end) = match range {
        Some((start, end)) => {
            resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{length}"));
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        None => (StatusCode::OK, 0, length.saturating_sub(1)),
    };
    let body = if length == 0 {
        Body::empty()
    } else {
        // Counted as the chunks go out, so an interrupted download counts what was sent.
        let sent = metrics::counter!(common::metrics::DOWNLOAD_BYTES);
        Body::from_stream(state.mp3s.read_range(file, start, end).inspect_ok(move |chunk| sent.increment(chunk.len() as u64)))
    };
    let content_length = if length == 0 { 0 } else { end - start + 1 };
    resp.status(status)
        .header(header::CONTENT_LENGTH, HeaderValue::from(content_length))
        .body(body)
        .map_err(|e| GatewayError::Internal(e.into()))
}

/// Parses a single `bytes=` range against `length`. Ours rather than `http-range-header`: that
/// crate validates and returns multi-range sets, which we answer as "send everything", so
/// the adapter around it would be as long as this function. `Ok(None)` means "ignore the header and
/// send everything" (other units, several ranges, syntax errors, as RFC 9110 allows);
/// an unsatisfiable range is an error (416).
pub fn parse_range(spec: &str, length: u64) -> Result<Option<(u64, u64)>, GatewayError> {
    let Some(set) = spec.trim().strip_prefix("bytes=") else { return Ok(None) };
    if set.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = set.trim().split_once('-') else { return Ok(None) };
    let (first, last) = (first.trim(), last.trim());
    let unsatisfiable = GatewayError::RangeNotSatisfiable { length };
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        // bytes=-N: the last N bytes
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 || length == 0 {
                return Err(unsatisfiable);
            }
            (length.saturating_sub(suffix), length - 1)
        }
        (Ok(start), Err(_)) if last.is_empty() => (start, length.saturating_sub(1)),
        (Ok(start), Ok(end)) if end >= start => (start, end.min(length.saturating_sub(1))),
        _ => return Ok(None),
    };
    if range.0 >= length {
        return Err(unsatisfiable);
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000).unwrap(), Some((0, 99)));
        assert_eq!(parse_range("bytes=500-", 1000).unwrap(), Some((500, 999)));
        assert_eq!(parse_range("bytes=-100", 1000).unwrap(), Some((900, 999)));
        assert_eq!(parse_range("bytes=-5000", 1000).unwrap(), Some((0, 999)));
        assert_eq!(parse_range("bytes=900-5000", 1000).unwrap(), Some((900, 999)));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 1000).unwrap(), None);
        assert_eq!(parse_range("bytes=9-2", 1000).unwrap(), None);
        assert_eq!(parse_range("bytes=abc", 1000).unwrap(), None);
        assert!(matches!(parse_range("bytes=1000-", 1000), Err(GatewayError::RangeNotSatisfiable { length: 1000 })));
        assert!(matches!(parse_range("bytes=-0", 1000), Err(GatewayError::RangeNotSatisfiable { .. })));
    }
}
