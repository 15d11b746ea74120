//! Talking to the auth service: forwarding logins, and the `AuthUser` extractor that validates
//! the caller's token through `/validate` as the original gateway does.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::claims::Claims;
use tracing::instrument;

use crate::error::GatewayError;
use crate::state::AppState;
use crate::web::session;

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

pub(crate) fn unavailable(e: reqwest::Error) -> GatewayError {
    GatewayError::Unavailable(anyhow::Error::new(e).context("auth service unavailable"))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let missing = || GatewayError::Auth { status: StatusCode::UNAUTHORIZED, body: "missing credentials".into() };
        // The API's clients send the header; the web page's browser sends its session cookie.
        let authorization = match parts.headers.get(header::AUTHORIZATION) {
            Some(v) => v.clone(),
            None => {
                let token = session::token(&parts.headers).ok_or_else(missing)?;
                if !parts.method.is_safe() && !session::same_origin(&parts.headers, &parts.uri, &state.web.public_url) {
                    return Err(GatewayError::CrossSite);
                }
                session::bearer(&token).ok_or_else(missing)?
            }
        };
        let resp = common::trace::inject(state.http.post(state.auth.validate.clone()))
            .header(header::AUTHORIZATION, authorization)
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

/// The client's address: the peer, or behind `hops` trusted proxies, the entry they appended to
/// `X-Forwarded-For` (`hops` from the right of the header followed by the peer). Entries left
/// of that were written by the client and are ignored, so a client can't pick the address its
/// failed logins are counted against.
pub fn address_behind_trusted_proxies(headers: &HeaderMap, peer: SocketAddr, hops: usize) -> String {
    let peer = peer.ip().to_string();
    if hops == 0 {
        return peer;
    }
    let chain: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    // With fewer entries than trusted hops, the left-most one is the best we know.
    chain.get(chain.len().saturating_sub(hops)).map_or(peer, |a| (*a).to_owned())
}

/// `POST /login`, forwarded to the auth service.
pub fn router() -> Router<AppState> {
    Router::new().route("/login", post(login))
}

/// `POST /login`: the auth service's answer, status and body, passed through.
#[instrument(skip_all)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let mut req = common::trace::inject(state.http.post(state.auth.login.clone()));
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, v.clone());
    }
    // Let auth rate-limit by the real client, not by the gateway's address.
    let client = address_behind_trusted_proxies(&headers, peer, state.trusted_proxy_hops);
    let resp = req.header("x-forwarded-for", client).send().await.map_err(unavailable)?;
    let mut out = Response::builder().status(resp.status());
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let body = resp.bytes().await.map_err(unavailable)?;
    Ok(out.body(Body::from(body)).map_err(|e| GatewayError::Internal(e.into()))?.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_hops_name_the_client() {
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        // Directly exposed: whatever the client claims, the peer is the client.
        assert_eq!(address_behind_trusted_proxies(&headers(&["1.2.3.4"]), peer, 0), "10.0.0.9");
        // Behind one proxy (the ingress), which appended the real client to the client's own claims.
        assert_eq!(address_behind_trusted_proxies(&headers(&["6.6.6.6, 203.0.113.7"]), peer, 1), "203.0.113.7");
        assert_eq!(address_behind_trusted_proxies(&headers(&["6.6.6.6", "203.0.113.7"]), peer, 1), "203.0.113.7");
        assert_eq!(address_behind_trusted_proxies(&headers(&["6.6.6.6, 203.0.113.7, 10.0.0.2"]), peer, 2), "203.0.113.7");
        assert_eq!(address_behind_trusted_proxies(&headers(&["203.0.113.7"]), peer, 3), "203.0.113.7");
        assert_eq!(address_behind_trusted_proxies(&headers(&[]), peer, 1), "10.0.0.9");
    }
}
