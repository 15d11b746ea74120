//! The browser session: a cookie holding the token the auth service issued, set by
//! `POST /session` and cleared by `POST /logout`. It is `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's request carries it) and `Secure` when PUBLIC_URL is https.
//! State-changing requests made with it must also show they come from our own pages
//! ([`same_origin`]), for browsers that don't honour SameSite.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use tracing::instrument;

use super::Page;
use crate::auth::{address_behind_trusted_proxies, unavailable};
use crate::error::GatewayError;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "mp3c_session";

/// The session token the request's cookie carries, if any.
pub fn token(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers).get(COOKIE).map(|c| c.value().to_owned()).filter(|v| !v.is_empty())
}

/// `Bearer <token>` for the auth service, marked sensitive so no log prints it.
pub fn bearer(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Whether a request was made by one of our own pages. Browsers say so in `Sec-Fetch-Site`;
/// older ones send `Origin` on every POST, which must then be PUBLIC_URL or the host the request
/// was sent to. A request showing neither is refused: only browsers carry cookies for us, and
/// every browser that could send this one sends one of the two.
pub fn same_origin(headers: &HeaderMap, uri: &Uri, public_url: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if origin.eq_ignore_ascii_case(public_url) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()));
    let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The cookie jar with the session removed (same name and path as it was set with).
pub fn clear(jar: CookieJar) -> CookieJar {
    jar.remove(Cookie::build(COOKIE).path("/"))
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// `POST /session` (form: `email`, `password`): logs in through the auth service as `/login`
/// does; on success sets the session cookie and sends the browser back to `/` (303); otherwise
/// shows the login form again with auth's reason and, when rate-limited, when to try again.
#[instrument(skip_all)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    jar: CookieJar,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, GatewayError> {
    // Login CSRF: another site must not sign the browser into an account of its choosing.
    if !same_origin(&headers, &uri, &state.web.public_url) {
        return Err(GatewayError::CrossSite);
    }
    let form = form.map(|Form(f)| f).unwrap_or(LoginForm { email: String::new(), password: String::new() });
    let email = form.email.trim();
    let refuse = |status: StatusCode, message: &str, retry_after: Option<HeaderValue>| {
        let mut page = Page::new(&state.web, None);
        page.error = Some(message);
        page.email = email;
        let mut resp = page.respond(status);
        if let Some(v) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    };
    if email.is_empty() || form.password.is_empty() {
        return Ok(refuse(StatusCode::BAD_REQUEST, "Enter your email and your password.", None));
    }
    let client = address_behind_trusted_proxies(&headers, peer, state.trusted_proxy_hops);
    let sent =
        state.http.post(state.auth.login.clone()).basic_auth(email, Some(&form.password)).header("x-forwarded-for", client).send().await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error.cause_chain = ?anyhow::Error::new(e), "auth unavailable for a page login");
            return Ok(refuse(StatusCode::SERVICE_UNAVAILABLE, "The service is unavailable right now; try again in a few seconds.", None));
        }
    };
    let status = resp.status();
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let body = resp.text().await.map_err(unavailable)?;
    if status == StatusCode::OK {
        let cookie = Cookie::build((COOKIE, body.trim().to_owned()))
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(state.web.secure_cookies)
            .path("/");
        return Ok((jar.add(cookie), Redirect::to("/")).into_response());
    }
    if status.is_server_error() {
        tracing::warn!(%status, "auth failed a page login");
        return Ok(refuse(StatusCode::SERVICE_UNAVAILABLE, "The service is unavailable right now; try again in a few seconds.", None));
    }
    let message = if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after.as_ref().and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        match wait {
            Some(s) => format!("Too many failed logins: try again in {}.", human_seconds(s)),
            None => "Too many failed logins: try again later.".to_owned(),
        }
    } else {
        // auth's own words ("invalid credentials"), as a sentence.
        sentence(&body)
    };
    Ok(refuse(status, &message, retry_after))
}

/// `POST /logout`: clears the session cookie and shows the login form.
#[instrument(skip_all)]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, uri: Uri, jar: CookieJar) -> Result<Response, GatewayError> {
    if !same_origin(&headers, &uri, &state.web.public_url) {
        return Err(GatewayError::CrossSite);
    }
    Ok((clear(jar), Redirect::to("/")).into_response())
}

/// `invalid credentials` -> `Invalid credentials.`
fn sentence(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    match chars.next() {
        None => "Login failed.".to_owned(),
        Some(first) => {
            let end = if text.ends_with('.') { "" } else { "." };
            format!("{}{}{end}", first.to_uppercase(), chars.as_str())
        }
    }
}

/// `75` -> `1 minute 15 seconds`.
fn human_seconds(s: u64) -> String {
    let plural = |n: u64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    match (s / 60, s % 60) {
        (0, sec) => plural(sec, "second"),
        (min, 0) => plural(min, "minute"),
        (min, sec) => format!("{} {}", plural(min, "minute"), plural(sec, "second")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn only_our_own_pages_may_change_state_with_the_cookie() {
        let uri: Uri = "/upload".parse().unwrap();
        let public = "https://mp3converter.com";
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")]), &uri, public));
        for site in ["cross-site", "same-site", "none"] {
            let h = headers(&[("sec-fetch-site", site), ("origin", "https://mp3converter.com")]);
            assert!(!same_origin(&h, &uri, public), "{site}");
        }
        assert!(same_origin(&headers(&[("origin", "https://mp3converter.com")]), &uri, public));
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]), &uri, public));
        assert!(!same_origin(&headers(&[("origin", "http://evil.example"), ("host", "127.0.0.1:8080")]), &uri, public));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:8080")]), &uri, public));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")]), &uri, public));
    }

    #[test]
    fn the_session_token_comes_from_its_cookie_only() {
        assert_eq!(token(&headers(&[("cookie", "a=b; mp3c_session=tok.en.x; c=d")])).as_deref(), Some("tok.en.x"));
        assert_eq!(token(&headers(&[("cookie", "mp3c_session=")])), None);
        assert_eq!(token(&headers(&[("cookie", "other=1")])), None);
        assert!(bearer("abc").unwrap().is_sensitive());
    }

    #[test]
    fn refusals_read_as_sentences() {
        assert_eq!(sentence("invalid credentials"), "Invalid credentials.");
        assert_eq!(human_seconds(75), "1 minute 15 seconds");
        assert_eq!(human_seconds(1), "1 second");
        assert_eq!(human_seconds(120), "2 minutes");
    }
}
