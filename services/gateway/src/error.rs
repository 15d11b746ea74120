//! The gateway's errors and the responses they become.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The auth service refused the request: its status and body are passed through.
    #[error("{body}")]
    Auth { status: StatusCode, body: String },
    #[error("not authorized")]
    NotAuthorized,
    /// A state-changing request carried the session cookie but came from another site (or could
    /// not show it did not): refused so another page can't act with the user's session.
    #[error("cross-site request refused")]
    CrossSite,
    #[error("exactly 1 file required")]
    ExactlyOneFile,
    #[error("malformed multipart body: {0}")]
    BadMultipart(String),
    #[error("fid is required")]
    FidRequired,
    #[error("invalid fid: expected a 24-character hexadecimal id")]
    InvalidFid,
    #[error("file not found")]
    NotFound,
    #[error("file too large: the limit is {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("too many form fields: at most {max} parts")]
    TooManyParts { max: usize },
    #[error("form field {name:?} too large: the limit is {limit} bytes")]
    FieldTooLarge { name: String, limit: usize },
    /// A per-user quota: the message says which, `retry_after` when it frees up.
    #[error("{message}")]
    Quota { message: String, retry_after: u64 },
    /// This replica streams as many uploads as it may (`MAX_CONCURRENT_UPLOADS`).
    #[error("too many uploads in progress; try again later")]
    Busy,
    /// `VIDEO_QUEUE_MAX_LENGTH` uploads are waiting for a converter.
    #[error("too many videos are waiting for conversion; try again later")]
    QueueFull,
    #[error("unsupported file type: upload an audio or video file")]
    UnsupportedMedia,
    #[error("invalid job id: expected a 24-character hexadecimal id")]
    InvalidJobId,
    #[error("job not found")]
    JobNotFound,
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// An upload's output option (multipart text field) is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidOption { field: &'static str, reason: String },
    /// A signed download link that was altered or is incomplete.
    #[error("{0}")]
    BadLink(common::links::LinkError),
    /// Gone for good: an expired link, or an mp3 removed after its retention period.
    #[error("{0}")]
    Gone(String),
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { length: u64 },
    /// A dependency (auth, MongoDB, RabbitMQ) did not answer in time.
    #[error("service unavailable; try again later")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl GatewayError {
    /// A fixed word naming the kind of error: the `reason` label of refused uploads.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::Auth { status, .. } if *status == StatusCode::UNAUTHORIZED => "unauthenticated",
            GatewayError::Auth { status, .. } if *status == StatusCode::FORBIDDEN => "forbidden",
            GatewayError::Auth { .. } => "auth_refused",
            GatewayError::NotAuthorized => "not_admin",
            GatewayError::CrossSite => "cross_site",
            GatewayError::ExactlyOneFile => "not_one_file",
            GatewayError::BadMultipart(_) => "bad_multipart",
            GatewayError::FidRequired | GatewayError::InvalidFid => "bad_fid",
            GatewayError::NotFound | GatewayError::JobNotFound => "not_found",
            GatewayError::InvalidJobId => "bad_job_id",
            GatewayError::InvalidQuery(_) => "bad_query",
            GatewayError::InvalidOption { .. } => "bad_option",
            GatewayError::BadLink(_) => "bad_link",
            GatewayError::Gone(_) => "gone",
            GatewayError::TooLarge { .. } => "too_large",
            GatewayError::TooManyParts { .. } => "too_many_parts",
            GatewayError::FieldTooLarge { .. } => "field_too_large",
            GatewayError::Quota { .. } => "quota",
            GatewayError::Busy => "busy",
            GatewayError::QueueFull => "queue_full",
            GatewayError::UnsupportedMedia => "unsupported_media",
            GatewayError::RangeNotSatisfiable { .. } => "bad_range",
            GatewayError::Unavailable(_) => "unavailable",
            GatewayError::Internal(_) => "internal",
        }
    }
}

/// Seconds a client is told to wait when a dependency is down.
pub const RETRY_AFTER_SECS: u32 = 5;

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = match &self {
            GatewayError::Auth { status, .. } => *status,
            GatewayError::NotAuthorized => StatusCode::UNAUTHORIZED,
            GatewayError::CrossSite => StatusCode::FORBIDDEN,
            GatewayError::ExactlyOneFile
            | GatewayError::BadMultipart(_)
            | GatewayError::TooManyParts { .. }
            | GatewayError::FidRequired
            | GatewayError::InvalidFid
            | GatewayError::InvalidJobId
            | GatewayError::InvalidQuery(_)
            | GatewayError::InvalidOption { .. } => StatusCode::BAD_REQUEST,
            GatewayError::FieldTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Quota { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Busy | GatewayError::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::NotFound | GatewayError::JobNotFound => StatusCode::NOT_FOUND,
            GatewayError::BadLink(common::links::LinkError::Expired) | GatewayError::Gone(_) => StatusCode::GONE,
            GatewayError::BadLink(common::links::LinkError::Tampered) => StatusCode::FORBIDDEN,
            GatewayError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            GatewayError::Unavailable(e) => tracing::warn!(error.cause_chain = ?e, "dependency unavailable"),
            GatewayError::Internal(e) => tracing::error!(error.cause_chain = ?e, "request failed"),
            _ => {}
        }
        let mut resp = (status, self.to_string()).into_response();
        match &self {
            GatewayError::Unavailable(_) | GatewayError::Busy | GatewayError::QueueFull => {
                resp.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            }
            GatewayError::Quota { retry_after, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, (*retry_after).max(1).into());
            }
            GatewayError::RangeNotSatisfiable { length } => {
                if let Ok(v) = format!("bytes */{length}").parse() {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// MongoDB errors: unreachable servers are 503, the rest 500.
pub fn from_mongo(e: anyhow::Error) -> GatewayError {
    let unavailable = e.chain().any(|cause| {
        cause.downcast_ref::<mongodb::error::Error>().is_some_and(|m| {
            use mongodb::error::ErrorKind;
            matches!(*m.kind, ErrorKind::Io(_) | ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. })
                || m.contains_label("RetryableWriteError")
        })
    });
    if unavailable {
        GatewayError::Unavailable(e)
    } else {
        GatewayError::Internal(e)
    }
}
