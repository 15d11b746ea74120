//! The gateway's web page: the browser session (cookie, cross-site refusals, login reasons and
//! rate limit) over plain HTTP, then the whole page in a real browser (crates/testkit/web/page_test.py:
//! Playwright driving Debian's chromium, with axe-core).

use std::path::Path;
use std::process::Command;

use reqwest::header::{self, HeaderMap};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use testkit::{add_user, media, unique_email, Media, Stack};

const PASSWORD: &str = "Password123!";

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

fn set_cookie(headers: &HeaderMap) -> String {
    headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>().join("\n")
}

/// `mp3c_session=<token>` from a Set-Cookie header.
fn session_pair(set_cookie: &str) -> String {
    set_cookie.lines().find(|l| l.starts_with("mp3c_session=")).unwrap().split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_session_cookie_login_logout_and_cross_site_refusals() {
    let stack = Stack::start(&[("LOGIN_MAX_FAILURES", "3")]).await.unwrap();
    let email = unique_email();
    add_user(&stack.db, &email, PASSWORD, true).unwrap();
    let origin = stack.gateway_url("");
    let http = client();

    // The page without a session: the login form, with the security headers.
    let resp = http.get(stack.gateway_url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", stack.logs());
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<label for="email">Email</label>"#) && html.contains(">Log in</button>"), "{html}");
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style: {html}");

    // Its assets: hashed names, cached for good, revalidated by ETag; other names are 404.
    let css = html.split("/static/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(css.starts_with("app.") && css.ends_with(".css"), "{css}");
    let resp = http.get(stack.gateway_url(&format!("/static/{css}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(resp.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));
    let etag = resp.headers()[header::ETAG].clone();
    let resp = http.get(stack.gateway_url(&format!("/static/{css}"))).header(header::IF_NONE_MATCH, etag).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(http.get(stack.gateway_url("/static/app.css")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // Logging in from another site (or from nowhere a browser would say) is refused.
    let form = [("email", email.as_str()), ("password", PASSWORD)];
    let resp = http.post(stack.gateway_url("/session")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.text().await.unwrap(), "cross-site request refused");
    let resp = http.post(stack.gateway_url("/session")).header("sec-fetch-site", "cross-site").form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // A wrong password: auth's reason on the page, no cookie.
    let wrong = [("email", email.as_str()), ("password", "nope")];
    let resp = http.post(stack.gateway_url("/session")).header(header::ORIGIN, &origin).form(&wrong).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
    let html = resp.text().await.unwrap();
    assert!(html.contains("Invalid credentials.") && html.contains(&format!(r#"value="{email}""#)), "{html}");

    // The right one: a 303 to the page and a session cookie a script can't read or send cross-site.
    let resp = http.post(stack.gateway_url("/session")).header("sec-fetch-site", "same-origin").form(&form).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/");
    let cookie = set_cookie(resp.headers());
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "PUBLIC_URL is http here: {cookie}");
    let session = session_pair(&cookie);
    assert!(stack.logs().matches(&session["mp3c_session=".len()..]).count() == 0, "the token must never be logged");

    // The page with it: the app, naming the user.
    let html = http.get(stack.gateway_url("/")).header(header::COOKIE, &session).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(">Log out</button>") && html.contains(&email) && html.contains(r#"<label for="video">Video</label>"#), "{html}");

    // The cookie works on the API like the Bearer header; a state change needs our own origin.
    let video = media(Media::Mp4, 1);
    let upload = |extra: Option<(&'static str, String)>| {
        let bytes = std::fs::read(&video).unwrap();
        let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(bytes).file_name("clip.mp4"));
        let mut req = http.post(stack.gateway_url("/upload")).header(header::COOKIE, &session).multipart(form);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.send()
    };
    let resp = upload(None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.text().await.unwrap(), "cross-site request refused");
    let resp = upload(Some(("origin", "http://evil.example".into()))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = upload(Some(("origin", origin.clone()))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
    // The original's clients are unchanged: a Bearer token needs no Origin.
    let token = stack.user_token(&unique_email(), true).await.unwrap();
    let (status, body) = stack.upload(&token, &video).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "success!"));

    // Logging out clears the cookie.
    let resp = http.post(stack.gateway_url("/logout")).header(header::COOKIE, &session).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "logout from another site is refused too");
    let resp =
        http.post(stack.gateway_url("/logout")).header(header::COOKIE, &session).header(header::ORIGIN, &origin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookie(resp.headers());
    assert!(cleared.starts_with("mp3c_session=;") && cleared.contains("Max-Age=0"), "{cleared}");

    // An invalid session cookie shows the login form and is dropped.
    let resp = http.get(stack.gateway_url("/")).header(header::COOKIE, "mp3c_session=forged.token.value").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(set_cookie(resp.headers()).contains("Max-Age=0"));
    assert!(resp.text().await.unwrap().contains("Your session has ended; log in again."));

    // The login rate limit: the page says when to try again, and passes Retry-After on.
    let mut last = None;
    for _ in 0..5 {
        let resp = http.post(stack.gateway_url("/session")).header(header::ORIGIN, &origin).form(&wrong).send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            last = Some(resp);
            break;
        }
    }
    let resp = last.expect("the login rate limit answers 429");
    let retry: u64 = resp.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry > 0);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Too many failed logins: try again in "), "{html}");

    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_in_a_real_browser() {
    let stack = Stack::start(&[]).await.unwrap();
    let (user, other) = (unique_email(), unique_email());
    add_user(&stack.db, &user, PASSWORD, true).unwrap();
    add_user(&stack.db, &other, PASSWORD, true).unwrap();
    let video = media(Media::Mkv, 4);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = root.join("target/web-test");
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("crates/testkit/web/page_test.py"))
        .args(["--url", &stack.gateway_url("")])
        .args(["--user", &user, "--password", PASSWORD, "--other-user", &other, "--other-password", PASSWORD])
        .arg("--video")
        .arg(&video)
        .arg("--out")
        .arg(&out);
    // MP3C_README_SHOT=docs/web-page.png remakes the README's screenshot.
    if let Ok(path) = std::env::var("MP3C_README_SHOT") {
        cmd.arg("--readme-shot").arg(root.join(path));
    }
    let result = cmd.output().expect("python3 runs (scripts/test.sh installs playwright and chromium)");
    let stdout = String::from_utf8_lossy(&result.stdout);
    println!("{stdout}");
    assert!(result.status.success(), "the browser test failed:\n{stdout}\n{}\n{}", String::from_utf8_lossy(&result.stderr), stack.logs());
    assert!(stdout.contains("WEB-METRICS "), "{stdout}");
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}
