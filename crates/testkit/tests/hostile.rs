//! Hostile HTTP input against the running auth service and gateway: every case states the
//! exact status and body it must get, and the side effects that must (not) happen.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mongodb::bson::{doc, oid::ObjectId, Document};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use testkit::{media, unique_email, Media, Stack, JWT_SECRET};

const LIMIT: usize = 1024 * 1024;

struct Case {
    name: &'static str,
    method: Method,
    url: String,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Body,
    status: u16,
    body_is: Expect,
}

enum Body {
    None,
    Raw(&'static str, Vec<u8>),
    Form(Vec<(&'static str, Option<&'static str>, Vec<u8>)>),
    Chunked(Vec<u8>),
}

enum Expect {
    Exact(&'static str),
    Owned(String),
    StartsWith(&'static str),
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn bearer(t: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {t}")).unwrap()
}

/// The web page's session cookie holding `t`.
fn cookie(t: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("mp3c_session={t}")).unwrap()
}

fn basic(user: &str, pass: &str) -> HeaderValue {
    use base64::engine::general_purpose::STANDARD;
    HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))).unwrap()
}

async fn store_mp3(stack: &Stack, owner: &str, bytes: &[u8]) -> ObjectId {
    let client = stack.names.mongo().await;
    let bucket = client.database(&stack.names.mp3s_db).gridfs_bucket(None);
    let id = ObjectId::new();
    common::gridfs::upload(&bucket, id, "x.mp3", doc! {"username": owner, "video_fid": ObjectId::new().to_hex()}, bytes).await.unwrap();
    id
}

async fn video_count(stack: &Stack) -> u64 {
    let client = stack.names.mongo().await;
    client.database(&stack.names.videos_db).collection::<Document>("fs.files").count_documents(doc! {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_input_table() {
    let limit = LIMIT.to_string();
    let stack = Stack::start(&[("MAX_UPLOAD_BYTES", &limit), ("LOGIN_MAX_FAILURES", "1000"), ("LOGIN_MAX_FAILURES_PER_ADDRESS", "1000")])
        .await
        .unwrap();
    let (admin, plain, other) = (unique_email(), unique_email(), unique_email());
    let admin_token = stack.user_token(&admin, true).await.unwrap();
    let plain_token = stack.user_token(&plain, false).await.unwrap();
    stack.user_token(&other, true).await.unwrap();
    let own_mp3 = store_mp3(&stack, &admin, b"ID3 pretend mp3 bytes").await;
    let others_mp3 = store_mp3(&stack, &other, b"ID3 someone else's").await;
    let others_job = {
        let client = stack.names.mongo().await;
        let store = common::jobs::JobStore::new(&client.database(&stack.names.videos_db));
        let job = common::jobs::JobDoc::queued(common::ids::VideoId::new(ObjectId::new()), &other, "theirs.mkv", Default::default());
        store.create(&job).await.unwrap();
        job.id.to_hex()
    };
    let media_bytes = std::fs::read(media(Media::Mkv, 1)).unwrap();
    let with_option = |field: &'static str, value: &'static str| {
        Body::Form(vec![(field, None, value.as_bytes().to_vec()), ("file", Some("a.mkv"), media_bytes.clone())])
    };

    let auth = |p: &str| format!("http://127.0.0.1:{}{p}", stack.auth_port);
    let gw = |p: &str| stack.gateway_url(p);
    let mkv = std::fs::read(media(Media::Mkv, 2)).unwrap();
    let mut too_big = mkv.clone();
    too_big.resize(LIMIT + 1024, 0);

    let good = token(Algorithm::HS256, JWT_SECRET, serde_json::json!({"username": admin, "iat": now(), "exp": now() + 600, "admin": true}));
    let parts: Vec<&str> = good.split('.').collect();
    let none_alg = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&serde_json::json!({"username": other, "iat": now(), "exp": now() + 600, "admin": true})).unwrap()),
        parts[2]
    );
    let hs512 =
        token(Algorithm::HS512, JWT_SECRET, serde_json::json!({"username": admin, "iat": now(), "exp": now() + 600, "admin": true}));
    let wrong_key = token(
        Algorithm::HS256,
        "another-secret-another-secret-another",
        serde_json::json!({"username": admin, "iat": now(), "exp": now() + 600, "admin": true}),
    );
    let expired = token(
        Algorithm::HS256,
        JWT_SECRET,
        serde_json::json!({"username": admin, "iat": now() - 7200, "exp": now() - 3600, "admin": true}),
    );
    let no_exp = token(Algorithm::HS256, JWT_SECRET, serde_json::json!({"username": admin, "iat": now(), "admin": true}));
    let huge_token = "a".repeat(8000);
    let non_utf8 = HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap();
    let unknown = ObjectId::new().to_hex();
    let pdf = b"%PDF-1.7\n%binary\n".to_vec();

    use Expect::*;
    let c = |name, method, url: String, headers: Vec<(&'static str, HeaderValue)>, body, status, body_is| Case {
        name,
        method,
        url,
        headers,
        body,
        status,
        body_is,
    };
    let a = |t: &str| vec![("authorization", bearer(t))];
    let file = |name: &'static str, bytes: Vec<u8>| Body::Form(vec![("file", Some(name), bytes)]);
    let cases = vec![
        // auth /login
        c("login without credentials", Method::POST, auth("/login"), vec![], Body::None, 401, Exact("missing credentials")),
        c(
            "login with bad base64",
            Method::POST,
            auth("/login"),
            vec![("authorization", HeaderValue::from_static("Basic !!!!"))],
            Body::None,
            401,
            Exact("missing credentials"),
        ),
        c("login with a bearer token", Method::POST, auth("/login"), a(&good), Body::None, 401, Exact("missing credentials")),
        c(
            "login with no colon",
            Method::POST,
            auth("/login"),
            vec![("authorization", HeaderValue::from_static("Basic YWJj"))],
            Body::None,
            401,
            Exact("missing credentials"),
        ),
        c(
            "login wrong password",
            Method::POST,
            auth("/login"),
            vec![("authorization", basic(&admin, "wrong"))],
            Body::None,
            401,
            Exact("invalid credentials"),
        ),
        c(
            "login unknown user",
            Method::POST,
            auth("/login"),
            vec![("authorization", basic("nobody@example.com", "Password123!"))],
            Body::None,
            401,
            Exact("invalid credentials"),
        ),
        c(
            "login not an email",
            Method::POST,
            auth("/login"),
            vec![("authorization", basic("' OR 1=1 --", "x"))],
            Body::None,
            401,
            Exact("invalid credentials"),
        ),
        c(
            "login very long user",
            Method::POST,
            auth("/login"),
            vec![("authorization", basic(&"u".repeat(4000), "x"))],
            Body::None,
            401,
            Exact("invalid credentials"),
        ),
        c(
            "login non-utf8 header",
            Method::POST,
            auth("/login"),
            vec![("authorization", HeaderValue::from_bytes(b"Basic \xff\xff").unwrap())],
            Body::None,
            401,
            Exact("missing credentials"),
        ),
        c("login with GET", Method::GET, auth("/login"), vec![], Body::None, 405, Exact("")),
        // auth /validate
        c("validate without header", Method::POST, auth("/validate"), vec![], Body::None, 401, Exact("missing credentials")),
        c(
            "validate empty header",
            Method::POST,
            auth("/validate"),
            vec![("authorization", HeaderValue::from_static(""))],
            Body::None,
            401,
            Exact("missing credentials"),
        ),
        c(
            "validate bearer without token",
            Method::POST,
            auth("/validate"),
            vec![("authorization", HeaderValue::from_static("Bearer "))],
            Body::None,
            401,
            Exact("invalid authorization header: expected 'Bearer <token>'"),
        ),
        c(
            "validate basic scheme",
            Method::POST,
            auth("/validate"),
            vec![("authorization", basic(&admin, "x"))],
            Body::None,
            401,
            Exact("invalid authorization header: expected 'Bearer <token>'"),
        ),
        c(
            "validate bare token",
            Method::POST,
            auth("/validate"),
            vec![("authorization", HeaderValue::from_str(&good).unwrap())],
            Body::None,
            401,
            Exact("invalid authorization header: expected 'Bearer <token>'"),
        ),
        c("validate garbage", Method::POST, auth("/validate"), a("garbage"), Body::None, 403, Exact("not authorized")),
        c("validate alg none", Method::POST, auth("/validate"), a(&none_alg), Body::None, 403, Exact("not authorized")),
        c("validate tampered payload", Method::POST, auth("/validate"), a(&tampered), Body::None, 403, Exact("not authorized")),
        c("validate HS512", Method::POST, auth("/validate"), a(&hs512), Body::None, 403, Exact("not authorized")),
        c("validate wrong key", Method::POST, auth("/validate"), a(&wrong_key), Body::None, 403, Exact("not authorized")),
        c("validate expired", Method::POST, auth("/validate"), a(&expired), Body::None, 403, Exact("not authorized")),
        c("validate without exp", Method::POST, auth("/validate"), a(&no_exp), Body::None, 403, Exact("not authorized")),
        c("validate huge token", Method::POST, auth("/validate"), a(&huge_token), Body::None, 403, Exact("not authorized")),
        c(
            "validate non-utf8",
            Method::POST,
            auth("/validate"),
            vec![("authorization", non_utf8.clone())],
            Body::None,
            401,
            Exact("invalid authorization header: expected 'Bearer <token>'"),
        ),
        c("validate with GET", Method::GET, auth("/validate"), a(&good), Body::None, 405, Exact("")),
        c("auth unknown route", Method::GET, auth("/admin"), vec![], Body::None, 404, Exact("")),
        // gateway /login
        c(
            "gateway login wrong password",
            Method::POST,
            gw("/login"),
            vec![("authorization", basic(&admin, "nope"))],
            Body::None,
            401,
            Exact("invalid credentials"),
        ),
        c("gateway login without credentials", Method::POST, gw("/login"), vec![], Body::None, 401, Exact("missing credentials")),
        // gateway /upload
        c("upload without token", Method::POST, gw("/upload"), vec![], file("a.mkv", mkv.clone()), 401, Exact("missing credentials")),
        c("upload forged token", Method::POST, gw("/upload"), a(&tampered), file("a.mkv", mkv.clone()), 403, Exact("not authorized")),
        c("upload expired token", Method::POST, gw("/upload"), a(&expired), file("a.mkv", mkv.clone()), 403, Exact("not authorized")),
        c(
            "upload malformed authorization",
            Method::POST,
            gw("/upload"),
            vec![("authorization", HeaderValue::from_static("Token abc"))],
            file("a.mkv", mkv.clone()),
            401,
            Exact("invalid authorization header: expected 'Bearer <token>'"),
        ),
        c("upload by non-admin", Method::POST, gw("/upload"), a(&plain_token), file("a.mkv", mkv.clone()), 401, Exact("not authorized")),
        c(
            "upload not multipart",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            Body::Raw("application/json", b"{}".to_vec()),
            400,
            Exact("exactly 1 file required"),
        ),
        c("upload without body", Method::POST, gw("/upload"), a(&admin_token), Body::None, 400, Exact("exactly 1 file required")),
        c(
            "upload only text fields",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            Body::Form(vec![("note", None, b"hello".to_vec())]),
            400,
            Exact("exactly 1 file required"),
        ),
        c(
            "upload two files",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            Body::Form(vec![("a", Some("a.mkv"), mkv.clone()), ("b", Some("b.mkv"), mkv.clone())]),
            400,
            Exact("exactly 1 file required"),
        ),
        c(
            "upload a pdf",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            file("doc.mp4", pdf.clone()),
            415,
            Exact("unsupported file type: upload an audio or video file"),
        ),
        c(
            "upload an empty file",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            file("empty.mp4", vec![]),
            415,
            Exact("unsupported file type: upload an audio or video file"),
        ),
        c(
            "upload too large (content-length)",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            file("big.mkv", [mkv.clone(), vec![0; 2 * LIMIT]].concat()),
            413,
            Owned(format!("file too large: the limit is {LIMIT} bytes")),
        ),
        c(
            "upload too large (chunked)",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            Body::Chunked(too_big.clone()),
            413,
            Owned(format!("file too large: the limit is {LIMIT} bytes")),
        ),
        c(
            "upload broken multipart",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            Body::Raw(
                "multipart/form-data; boundary=XYZ",
                b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mkv\"\r\n\r\nabc".to_vec(),
            ),
            400,
            StartsWith(""),
        ),
        c("upload with GET", Method::GET, gw("/upload"), a(&admin_token), Body::None, 405, Exact("")),
        // gateway /download
        c(
            "download without token",
            Method::GET,
            gw(&format!("/download?fid={own_mp3}")),
            vec![],
            Body::None,
            401,
            Exact("missing credentials"),
        ),
        c(
            "download forged token",
            Method::GET,
            gw(&format!("/download?fid={own_mp3}")),
            a(&none_alg),
            Body::None,
            403,
            Exact("not authorized"),
        ),
        c(
            "download by non-admin",
            Method::GET,
            gw(&format!("/download?fid={own_mp3}")),
            a(&plain_token),
            Body::None,
            401,
            Exact("not authorized"),
        ),
        c("download without fid", Method::GET, gw("/download"), a(&admin_token), Body::None, 400, Exact("fid is required")),
        c("download empty fid", Method::GET, gw("/download?fid="), a(&admin_token), Body::None, 400, Exact("fid is required")),
        c(
            "download bad percent-encoding",
            Method::GET,
            gw("/download?fid=%ZZ%"),
            a(&admin_token),
            Body::None,
            400,
            Exact("invalid fid: expected a 24-character hexadecimal id"),
        ),
        c(
            "download non-hex fid",
            Method::GET,
            gw("/download?fid=zzzzzzzzzzzzzzzzzzzzzzzz"),
            a(&admin_token),
            Body::None,
            400,
            Exact("invalid fid: expected a 24-character hexadecimal id"),
        ),
        c(
            "download 25-char fid",
            Method::GET,
            gw(&format!("/download?fid={own_mp3}0")),
            a(&admin_token),
            Body::None,
            400,
            Exact("invalid fid: expected a 24-character hexadecimal id"),
        ),
        c(
            "download injection fid",
            Method::GET,
            gw("/download?fid=%7B%22%24ne%22%3Anull%7D"),
            a(&admin_token),
            Body::None,
            400,
            Exact("invalid fid: expected a 24-character hexadecimal id"),
        ),
        c(
            "download unknown fid",
            Method::GET,
            gw(&format!("/download?fid={unknown}")),
            a(&admin_token),
            Body::None,
            404,
            Exact("file not found"),
        ),
        c(
            "download someone else's mp3",
            Method::GET,
            gw(&format!("/download?fid={others_mp3}")),
            a(&admin_token),
            Body::None,
            404,
            Exact("file not found"),
        ),
        c(
            "download unsatisfiable range",
            Method::GET,
            gw(&format!("/download?fid={own_mp3}")),
            vec![("authorization", bearer(&admin_token)), ("range", HeaderValue::from_static("bytes=5000-"))],
            Body::None,
            416,
            Exact("requested range not satisfiable"),
        ),
        c("download with POST", Method::POST, gw(&format!("/download?fid={own_mp3}")), a(&admin_token), Body::None, 405, Exact("")),
        c(
            "download own mp3",
            Method::GET,
            gw(&format!("/download?fid={own_mp3}")),
            a(&admin_token),
            Body::None,
            200,
            Exact("ID3 pretend mp3 bytes"),
        ),
        c(
            "download own mp3 range",
            Method::GET,
            gw(&format!("/download?fid={own_mp3}")),
            vec![("authorization", bearer(&admin_token)), ("range", HeaderValue::from_static("bytes=4-10"))],
            Body::None,
            206,
            Exact("pretend"),
        ),
        // Jobs (issue 15): owner only, ids checked, links signed, options checked.
        c("jobs without a token", Method::GET, gw("/jobs"), vec![], Body::None, 401, Exact("missing credentials")),
        c(
            "jobs limit too large",
            Method::GET,
            gw("/jobs?limit=1000"),
            a(&admin_token),
            Body::None,
            400,
            StartsWith("invalid query: limit"),
        ),
        c(
            "jobs state deleted",
            Method::GET,
            gw("/jobs?state=deleted"),
            a(&admin_token),
            Body::None,
            400,
            StartsWith("invalid query: state"),
        ),
        c(
            "jobs forged cursor",
            Method::GET,
            gw("/jobs?cursor=1-%24where"),
            a(&admin_token),
            Body::None,
            400,
            StartsWith("invalid query: cursor"),
        ),
        c("jobs operator injection", Method::GET, gw("/jobs?state[$ne]=x"), a(&admin_token), Body::None, 200, StartsWith("{\"jobs\":")),
        c(
            "job malformed id",
            Method::GET,
            gw("/jobs/%7B%22$gt%22:%22%22%7D"),
            a(&admin_token),
            Body::None,
            400,
            Exact("invalid job id: expected a 24-character hexadecimal id"),
        ),
        c(
            "job unknown id",
            Method::GET,
            gw(&format!("/jobs/{}", ObjectId::new())),
            a(&admin_token),
            Body::None,
            404,
            Exact("job not found"),
        ),
        c("someone else's job", Method::GET, gw(&format!("/jobs/{others_job}")), a(&admin_token), Body::None, 404, Exact("job not found")),
        c(
            "follow someone else's job",
            Method::GET,
            gw(&format!("/jobs/{others_job}/events")),
            a(&admin_token),
            Body::None,
            404,
            Exact("job not found"),
        ),
        c(
            "delete someone else's job",
            Method::DELETE,
            gw(&format!("/jobs/{others_job}")),
            a(&admin_token),
            Body::None,
            404,
            Exact("job not found"),
        ),
        c("job with PUT", Method::PUT, gw(&format!("/jobs/{others_job}")), a(&admin_token), Body::None, 405, Exact("")),
        c(
            "job link without signature",
            Method::GET,
            gw(&format!("/jobs/{others_job}/download")),
            vec![],
            Body::None,
            403,
            Exact("invalid download link: it was altered or is incomplete"),
        ),
        c(
            "job link forged signature",
            Method::GET,
            gw(&format!("/jobs/{others_job}/download?expires=99999999999&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
            vec![],
            Body::None,
            403,
            Exact("invalid download link: it was altered or is incomplete"),
        ),
        c(
            "job link negative expiry",
            Method::GET,
            gw(&format!("/jobs/{others_job}/download?expires=-1&sig=%00")),
            vec![],
            Body::None,
            403,
            Exact("invalid download link: it was altered or is incomplete"),
        ),
        c(
            "upload bitrate out of range",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            with_option("bitrate", "1000k"),
            400,
            StartsWith("invalid bitrate: "),
        ),
        c(
            "upload quality injection",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            with_option("quality", "9; rm -rf /"),
            400,
            StartsWith("invalid quality: "),
        ),
        c(
            "upload start exponent",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            with_option("start", "1e400"),
            400,
            StartsWith("invalid start: "),
        ),
        c(
            "upload end as ffmpeg option",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            with_option("end", "-i /etc/passwd"),
            400,
            StartsWith("invalid end: "),
        ),
        c(
            "upload huge option value",
            Method::POST,
            gw("/upload"),
            a(&admin_token),
            Body::Form(vec![("start", None, vec![b'1'; 1 << 20]), ("file", Some("a.mkv"), media_bytes.clone())]),
            400,
            Exact("invalid start: value too long"),
        ),
        // The web page's session cookie (issue 11): accepted like the Bearer header, but a state
        // change made with it must come from the gateway's own pages.
        c(
            "cookie delete from another site",
            Method::DELETE,
            gw(&format!("/jobs/{others_job}")),
            vec![("cookie", cookie(&admin_token)), ("origin", HeaderValue::from_static("http://evil.example"))],
            Body::None,
            403,
            Exact("cross-site request refused"),
        ),
        c(
            "cookie upload without origin",
            Method::POST,
            gw("/upload"),
            vec![("cookie", cookie(&admin_token))],
            Body::Form(vec![("file", Some("a.mkv"), media_bytes.clone())]),
            403,
            Exact("cross-site request refused"),
        ),
        c(
            "cookie upload from a sibling site",
            Method::POST,
            gw("/upload"),
            vec![("cookie", cookie(&admin_token)), ("sec-fetch-site", HeaderValue::from_static("same-site"))],
            Body::Form(vec![("file", Some("a.mkv"), media_bytes.clone())]),
            403,
            Exact("cross-site request refused"),
        ),
        c(
            "cookie forged token",
            Method::GET,
            gw("/jobs"),
            vec![("cookie", HeaderValue::from_static("mp3c_session=forged.token.value"))],
            Body::None,
            403,
            Exact("not authorized"),
        ),
        c(
            "page login from another site",
            Method::POST,
            gw("/session"),
            vec![("sec-fetch-site", HeaderValue::from_static("cross-site"))],
            Body::Raw("application/x-www-form-urlencoded", b"email=a%40b.c&password=x".to_vec()),
            403,
            Exact("cross-site request refused"),
        ),
        c(
            "page login as JSON",
            Method::POST,
            gw("/session"),
            vec![("sec-fetch-site", HeaderValue::from_static("same-origin"))],
            Body::Raw("application/json", br#"{"email":"a@b.c","password":"x"}"#.to_vec()),
            400,
            StartsWith("<!doctype html>"),
        ),
        c("page logout from another site", Method::POST, gw("/logout"), vec![], Body::None, 403, Exact("cross-site request refused")),
        c("static path traversal", Method::GET, gw("/static/..%2f..%2fCargo.toml"), vec![], Body::None, 404, Exact("file not found")),
        c("gateway unknown route", Method::GET, gw("/../../etc/passwd"), vec![], Body::None, 404, Exact("")),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let before = video_count(&stack).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let mut headers = HeaderMap::new();
        for (k, v) in &case.headers {
            headers.insert(HeaderName::from_static(k), v.clone());
        }
        let mut req = client.request(case.method.clone(), &case.url).headers(headers);
        req = match &case.body {
            Body::None => req,
            Body::Raw(ct, bytes) => req.header("content-type", *ct).body(bytes.clone()),
            Body::Form(parts) => {
                let mut form = reqwest::multipart::Form::new();
                for (name, filename, bytes) in parts {
                    let mut part = reqwest::multipart::Part::bytes(bytes.clone());
                    if let Some(f) = filename {
                        part = part.file_name(*f);
                    }
                    form = form.part(*name, part);
                }
                req.multipart(form)
            }
            Body::Chunked(bytes) => {
                let boundary = "hostileboundary";
                let mut body =
                    format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mkv\"\r\n\r\n").into_bytes();
                body.extend_from_slice(bytes);
                body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
                    body.chunks(64 * 1024).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
                req.header("content-type", format!("multipart/form-data; boundary={boundary}"))
                    .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            }
        };
        let (status, body) = match req.send().await {
            Ok(resp) => (resp.status(), resp.text().await.unwrap_or_else(|e| format!("<unreadable body: {e}>"))),
            Err(e) => (StatusCode::IM_A_TEAPOT, format!("<request failed: {e}>")),
        };
        let body_ok = match &case.body_is {
            Exact(s) => body == *s,
            Owned(s) => body == *s,
            StartsWith(s) => body.starts_with(s) && !body.is_empty(),
        };
        if status.as_u16() != case.status || !body_ok {
            failures.push(format!("{}: expected {} got {} {:?}", case.name, case.status, status.as_u16(), body));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}\n{}", failures.len(), cases.len(), failures.join("\n"), stack.logs());
    // None of the refused uploads left anything behind.
    assert_eq!(video_count(&stack).await, before, "a refused upload left a file in GridFS");
    println!("HOSTILE-CASES {}", cases.len());
    testkit::delete_queues(&[&stack.names.video_queue, &stack.names.mp3_queue]).await;
}
