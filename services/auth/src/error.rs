//! The auth service's errors and the responses they become.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials")]
    MissingCredentials,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid authorization header: expected 'Bearer <token>'")]
    MalformedAuthorization,
    #[error("not authorized")]
    NotAuthorized,
    #[error("too many failed logins; try again later")]
    RateLimited { retry_after_secs: u64 },
    /// MySQL did not answer in time.
    #[error("service unavailable; try again later")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                AuthError::Unavailable(anyhow::Error::new(e).context("MySQL unavailable"))
            }
            other => AuthError::Internal(anyhow::Error::new(other).context("MySQL query failed")),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = match &self {
            AuthError::MissingCredentials | AuthError::InvalidCredentials | AuthError::MalformedAuthorization => StatusCode::UNAUTHORIZED,
            AuthError::NotAuthorized => StatusCode::FORBIDDEN,
            AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &self {
            AuthError::Unavailable(e) => tracing::warn!(error.cause_chain = ?e, "dependency unavailable"),
            AuthError::Internal(e) => tracing::error!(error.cause_chain = ?e, "request failed"),
            _ => {}
        }
        let body = self.to_string();
        let mut resp = (status, body).into_response();
        let retry_after = match &self {
            AuthError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            AuthError::Unavailable(_) => Some(5),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, secs.max(1).into());
        }
        resp
    }
}
