//! Talking to the auth service: forwarding logins, and the `AuthUser` extractor that validates
//! the caller's token through `/validate` as the original gateway does.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::claims::Claims;
use tracing::instrument;

use crate::error::GatewayError;
use crate::startup::AppState;

/// The caller, as the auth service vouches for them.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl AuthUser {
    /// Upload and download need the `admin` claim, as in the original.
    pub fn require_admin(self) -> Result<Claims, GatewayError> {
        if self.0.admin {
            Ok(self.0)
        } else {
            Err(GatewayError::NotAuthorized)
        }
    }
}

fn unavailable(e: reqwest::Error) -> GatewayError {
    GatewayError::Unavailable(anyhow::Error::new(e).context("auth service unavailable"))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(authorization) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(GatewayError::Auth { status: StatusCode::UNAUTHORIZED, body: "missing credentials".into() });
        };
        let resp = state
            .http
            .post(format!("{}/validate", state.auth_url))
            .header(header::AUTHORIZATION, authorization.clone())
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if status == StatusCode::OK {
            let claims = resp
                .json::<Claims>()
                .await
                .map_err(|e| GatewayError::Internal(anyhow::Error::new(e).context("auth sent unreadable claims")))?;
            return Ok(AuthUser(claims));
        }
        let body = resp.text().await.map_err(unavailable)?;
        if status.is_server_error() {
            return Err(GatewayError::Unavailable(anyhow::anyhow!("auth answered {status}: {body}")));
        }
        Err(GatewayError::Auth { status, body })
    }
}

/// `POST /login`: the auth service's answer, status and body, passed through.
#[instrument(skip_all)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let mut req = state.http.post(format!("{}/login", state.auth_url));
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, v.clone());
    }
    // Let auth rate-limit by the real client, not by the gateway's address.
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{chain}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let resp = req.header("x-forwarded-for", forwarded).send().await.map_err(unavailable)?;
    let mut out = Response::builder().status(resp.status());
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let body = resp.bytes().await.map_err(unavailable)?;
    Ok(out.body(Body::from(body)).map_err(|e| GatewayError::Internal(e.into()))?.into_response())
}
