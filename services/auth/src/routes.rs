//! `POST /login`, `POST /validate` and the health endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::claims::Claims;
use common::email::Email;
use secrecy::SecretString;
use sqlx::MySqlPool;
use tracing::instrument;

use crate::error::AuthError;
use crate::password;
use crate::ratelimit::FailureLimiter;
use crate::token::Keys;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub pool: MySqlPool,
    pub keys: Keys,
    pub by_email: Arc<FailureLimiter>,
    pub by_address: Arc<FailureLimiter>,
    /// A hash verified when the email is unknown, so both failures take the same time.
    pub dummy_hash: Arc<String>,
    /// Bounds the argon2 checks running at once (each takes ~19 MiB and a core for ~20 ms), so
    /// a burst of logins queues instead of exhausting memory.
    pub hash_permits: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/validate", post(validate))
        .route("/healthz", get(common::health::healthz))
        .route("/openapi.yaml", get(openapi))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Credentials from `Authorization: Basic base64(email:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, SecretString)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_owned(), SecretString::from(pass.to_owned())))
}

/// The client's address: the last `X-Forwarded-For` entry (the one the gateway set; auth is
/// reached only through it), else the peer.
fn client_address(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| peer.ip().to_string())
}

#[instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    let (username, password) = basic_credentials(&headers).ok_or(AuthError::MissingCredentials)?;
    let email_key = username.to_ascii_lowercase();
    let address_key = client_address(&headers, peer);
    if let Some(wait) = state.by_email.blocked(&email_key).max(state.by_address.blocked(&address_key)) {
        return Err(AuthError::RateLimited { retry_after_secs: wait });
    }

    // The address as stored goes into the token, not as typed: the column's collation matches
    // `Georgio@Email.com` to `georgio@email.com`, and ownership and mail follow the token.
    let user = match username.parse::<Email>() {
        Ok(email) => {
            sqlx::query_as::<_, (String, String, bool)>("SELECT email, password, admin FROM `user` WHERE email = ?")
                .bind(email.as_str())
                .fetch_optional(&state.pool)
                .await?
        }
        Err(_) => None,
    };
    // Unknown users are checked against a dummy hash: same work, same answer, same time.
    let (hash, admin) = user.as_ref().map_or_else(|| ((*state.dummy_hash).clone(), false), |(_, h, a)| (h.clone(), *a));
    let matches = {
        let _permit = state.hash_permits.acquire().await.map_err(|e| AuthError::Internal(e.into()))?;
        password::verify(password, hash).await.map_err(AuthError::Internal)?
    };
    match user {
        Some((email, _, _)) if matches => {
            state.by_email.reset(&email_key);
            let token = state.keys.issue(&email, admin).map_err(AuthError::Internal)?;
            tracing::info!(user = %email, "login succeeded");
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response())
        }
        _ => {
            state.by_email.record_failure(&email_key);
            state.by_address.record_failure(&address_key);
            tracing::info!(client = %address_key, "login failed");
            Err(AuthError::InvalidCredentials)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(AuthError::MissingCredentials)?;
    let value = value.to_str().map_err(|_| AuthError::MalformedAuthorization)?.trim();
    if value.is_empty() {
        return Err(AuthError::MissingCredentials);
    }
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(AuthError::MalformedAuthorization),
    }
}

#[instrument(skip_all)]
async fn validate(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Claims>, AuthError> {
    let token = bearer_token(&headers)?;
    state.keys.verify(token).map(Json).ok_or(AuthError::NotAuthorized)
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: MySQL unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "mysql unavailable")
        }
    }
}

/// The OpenAPI document of this service (kept in docs/openapi/ and checked by the schemathesis test).
async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/yaml")], include_str!("../../../docs/openapi/auth.yaml"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn parses_basic() {
        let (u, _) = basic_credentials(&with_auth("Basic Z2Vvcmdpb0BlbWFpbC5jb206QWRtaW4xMjM=")).unwrap();
        assert_eq!(u, "georgio@email.com");
        assert!(basic_credentials(&with_auth("Bearer abc")).is_none());
        assert!(basic_credentials(&with_auth("Basic !!!")).is_none());
        assert!(basic_credentials(&HeaderMap::new()).is_none());
    }

    #[test]
    fn bearer_rules() {
        assert_eq!(bearer_token(&with_auth("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&with_auth("bearer  abc ")).unwrap(), "abc");
        assert!(matches!(bearer_token(&HeaderMap::new()), Err(AuthError::MissingCredentials)));
        assert!(matches!(bearer_token(&with_auth("")), Err(AuthError::MissingCredentials)));
        assert!(matches!(bearer_token(&with_auth("abc")), Err(AuthError::MalformedAuthorization)));
        assert!(matches!(bearer_token(&with_auth("Basic abc")), Err(AuthError::MalformedAuthorization)));
        assert!(matches!(bearer_token(&with_auth("Bearer ")), Err(AuthError::MalformedAuthorization)));
    }
}
