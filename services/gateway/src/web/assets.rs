//! The page's stylesheet and script, compiled into the binary. Each is served under a name
//! carrying a hash of its content (`app.<hash>.css`), so browsers may keep it for a year
//! (`immutable`): a new build changes the name the page asks for. An ETag answers revalidation.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// One embedded file.
pub struct Asset {
    /// The hashed name the page links to.
    pub name: String,
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(stem: &str, ext: &str, body: &'static [u8], content_type: &'static str) -> Self {
        let hash = format!("{:x}", Sha256::digest(body));
        let etag = HeaderValue::from_str(&format!("\"{}\"", &hash[..32])).expect("hex is a valid header value");
        Self { name: format!("{stem}.{}.{ext}", &hash[..12]), body, content_type, etag }
    }

    /// Its size in bytes (reported with the page's weight).
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// Every file under `/static/`.
pub struct Assets {
    pub css: Asset,
    pub js: Asset,
}

impl Assets {
    pub fn new() -> Self {
        Self {
            css: Asset::new("app", "css", include_bytes!("../../static/app.css"), "text/css; charset=utf-8"),
            js: Asset::new("app", "js", include_bytes!("../../static/app.js"), "text/javascript; charset=utf-8"),
        }
    }
}

impl Default for Assets {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /static/<hashed name>`; any other name (an old build's) is 404.
pub async fn serve(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let assets = &state.web.assets;
    let Some(asset) = [&assets.css, &assets.js].into_iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "file not found").into_response();
    };
    let cache =
        [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")), (header::ETAG, asset.etag.clone())];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii() == asset.etag.as_bytes()))
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
}
