//! `POST /login`, `POST /validate` and the health endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

use crate::config::Config;
use crate::error::AuthError;
use crate::generations::Generations;
use crate::password;
use crate::ratelimit::{FailureLimiter, KnownAddresses, Policy};
use crate::token::Keys;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub pool: MySqlPool,
    pub keys: Keys,
    pub limits: Arc<LoginLimits>,
    /// A hash verified when the email is unknown, so both failures take the same time.
    pub dummy_hash: Arc<String>,
    /// Bounds the argon2 checks running at once (each takes ~19 MiB and a core for ~20 ms), so
    /// a burst of logins queues instead of exhausting memory.
    pub hash_permits: Arc<tokio::sync::Semaphore>,
    /// True once the migrations are applied ([`crate::schema::migrate_until_done`]).
    pub schema_ready: Arc<std::sync::atomic::AtomicBool>,
    /// The accounts' token generations, as `/validate` checks them.
    pub generations: Arc<Generations>,
}

/// The failed-login counters (see [`crate::ratelimit`] for why three).
pub struct LoginLimits {
    by_pair: FailureLimiter,
    by_address: FailureLimiter,
    by_account: FailureLimiter,
    known: KnownAddresses,
}

/// How long a successful login exempts its address from the per-account limit.
const KNOWN_ADDRESS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl LoginLimits {
    pub fn new(c: &Config) -> Self {
        let keys = c.login_limiter_max_keys;
        Self {
            by_pair: FailureLimiter::new(Policy::Backoff { free: c.login_max_failures, base: c.login_backoff_base }, c.login_window, keys),
            by_address: FailureLimiter::new(Policy::Fixed { max: c.login_max_failures_per_address }, c.login_window, keys),
            by_account: FailureLimiter::new(Policy::Fixed { max: c.login_max_failures_per_account }, c.login_window, keys),
            known: KnownAddresses::new(KNOWN_ADDRESS_TTL, keys),
        }
    }
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
fn address_set_by_gateway(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| peer.ip().to_string())
}

/// A row of the `user` table, as login needs it.
#[derive(sqlx::FromRow)]
struct UserRow {
    id: i32,
    email: String,
    password: String,
    admin: bool,
    token_generation: u32,
}

#[instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    let (username, password) = basic_credentials(&headers).ok_or(AuthError::MissingCredentials)?;
    let address = address_set_by_gateway(&headers, peer);
    let limits = &state.limits;
    if let Some(wait) = limits.by_address.blocked(&address) {
        return Err(AuthError::RateLimited { retry_after_secs: wait });
    }

    // The address as stored goes into the token, not as typed: the column's collation matches
    // `Georgio@Email.com` to `georgio@email.com`, and ownership and mail follow the token.
    let user = match username.parse::<Email>() {
        Ok(email) => {
            sqlx::query_as::<_, UserRow>("SELECT id, email, password, admin, token_generation FROM `user` WHERE email = ?")
                .bind(email.as_str())
                .fetch_optional(&state.pool)
                .await?
        }
        Err(_) => None,
    };
    // Counted per stored row: every spelling the collation maps to one account shares its
    // counter. Unknown names have no account to protect; the per-address limit covers them.
    let account = match &user {
        Some(u) => format!("id:{}", u.id),
        // Bounded: a 4 KB "email" must not become a 4 KB key in every limiter.
        None => format!("unknown:{}", username.chars().take(254).collect::<String>().to_lowercase()),
    };
    let pair = format!("{account}|{address}");
    let account_wait = limits.by_account.blocked(&account).filter(|_| !limits.known.contains(&pair));
    if let Some(wait) = limits.by_pair.blocked(&pair).max(account_wait) {
        return Err(AuthError::RateLimited { retry_after_secs: wait });
    }

    // Unknown users are checked against a dummy hash: same work, same answer, same time.
    let hash = user.as_ref().map_or_else(|| (*state.dummy_hash).clone(), |u| u.password.clone());
    let matches = {
        let _permit = state.hash_permits.acquire().await.map_err(|e| AuthError::Internal(e.into()))?;
        password::verify(password, hash).await.map_err(AuthError::Internal)?
    };
    match user {
        Some(u) if matches => {
            limits.by_pair.reset(&pair);
            limits.known.remember(&pair);
            let token = state.keys.issue(&u.email, u.admin, u.token_generation).map_err(AuthError::Internal)?;
            tracing::info!(user = %u.email, "login succeeded");
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response())
        }
        _ => {
            limits.by_pair.record_failure(&pair);
            limits.by_account.record_failure(&account);
            limits.by_address.record_failure(&address);
            tracing::info!(client = %address, "login failed");
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
    let (claims, generation) = state.keys.verify(token).ok_or(AuthError::NotAuthorized)?;
    // A password change or removal moves the account past the tokens issued before it.
    if !state.generations.is_current(&state.pool, &claims.username, generation).await? {
        return Err(AuthError::NotAuthorized);
    }
    Ok(Json(claims))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if !state.schema_ready.load(std::sync::atomic::Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "database schema not applied yet");
    }
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
