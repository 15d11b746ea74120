//! The web page people use instead of curl: `GET /` (server-rendered; login form or the app),
//! `POST /session` and `POST /logout` (the browser session cookie), and the page's stylesheet and
//! script under `/static/`. The page itself talks to the same API as curl does (upload, jobs,
//! events, download): the session cookie is accepted there beside the Bearer header (`AuthUser`).

mod assets;
pub mod session;

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::CookieJar;

use crate::auth::AuthUser;
use crate::config::Config;
use crate::error::GatewayError;
use crate::state::AppState;

pub use assets::Assets;

/// What the page needs beside the shared clients: assets, the policy, cookie settings.
pub struct Web {
    /// `PUBLIC_URL` without a trailing slash.
    pub public_url: String,
    /// Whether the session cookie carries `Secure` (PUBLIC_URL is https).
    pub secure_cookies: bool,
    pub assets: Assets,
    csp: HeaderValue,
    max_upload_bytes: u64,
}

impl Web {
    pub fn new(config: &Config) -> Self {
        // No inline script or style anywhere: everything the page runs or styles with is one of
        // our own files. Media may also come from PUBLIC_URL, where signed download links point.
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' {public}; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            public = config.public_url
        );
        Self {
            public_url: config.public_url.clone(),
            secure_cookies: config.secure_cookies(),
            assets: Assets::new(),
            csp: HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            max_upload_bytes: config.max_upload_bytes,
        }
    }
}

/// The page's routes, with the security headers every one of their responses carries.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/session", post(session::login))
        .route("/logout", post(session::logout))
        .route("/static/{name}", get(assets::serve))
        .layer(axum::middleware::map_response_with_state(state.web.clone(), security_headers))
}

async fn security_headers(State(web): State<Arc<Web>>, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, web.csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    h.insert(HeaderName::from_static("permissions-policy"), HeaderValue::from_static("camera=(), microphone=(), geolocation=()"));
    if web.secure_cookies {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    resp
}

/// The one HTML page: the login form, or for a signed-in user the upload form and their jobs
/// (filled in and kept current by the script).
#[derive(Template)]
#[template(path = "page.html")]
pub(crate) struct Page<'a> {
    css: &'a str,
    js: &'a str,
    /// The signed-in user's email; `None` shows the login form.
    user: Option<&'a str>,
    /// Why the last login failed, shown above the form.
    error: Option<&'a str>,
    /// The email typed last time, so a failed login doesn't make the user type it again.
    email: &'a str,
    max_upload_bytes: u64,
    max_upload_human: String,
}

impl<'a> Page<'a> {
    pub(crate) fn new(web: &'a Web, user: Option<&'a str>) -> Self {
        Self {
            css: &web.assets.css.name,
            js: &web.assets.js.name,
            user,
            error: None,
            email: "",
            max_upload_bytes: web.max_upload_bytes,
            max_upload_human: human_bytes(web.max_upload_bytes),
        }
    }

    /// The page as a response: never cached (it names the user), with `status`.
    pub(crate) fn respond(&self, status: StatusCode) -> Response {
        match self.render() {
            Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
            Err(e) => GatewayError::Internal(anyhow::Error::new(e).context("failed to render the page")).into_response(),
        }
    }
}

/// `GET /`: the app for a valid session, otherwise the login form (and an expired or
/// revoked session cookie is dropped).
#[tracing::instrument(skip_all)]
async fn page(State(state): State<AppState>, user: Result<AuthUser, GatewayError>, jar: CookieJar) -> Response {
    match user {
        Ok(AuthUser(claims)) => Page::new(&state.web, Some(&claims.username)).respond(StatusCode::OK),
        Err(GatewayError::Unavailable(e)) => {
            tracing::warn!(error.cause_chain = ?e, "auth unavailable while showing the page");
            let mut page = Page::new(&state.web, None);
            page.error = Some("The service is unavailable right now; try again in a few seconds.");
            page.respond(StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(_) if jar.get(session::COOKIE).is_some() => {
            let mut page = Page::new(&state.web, None);
            page.error = Some("Your session has ended; log in again.");
            (session::clear(jar), page.respond(StatusCode::OK)).into_response()
        }
        Err(_) => Page::new(&state.web, None).respond(StatusCode::OK),
    }
}

/// `2147483648` -> `2 GiB`, for the upload hint.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(2 * 1024 * 1024 * 1024), "2 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(100), "100 bytes");
    }
}
