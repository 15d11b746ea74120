//! The auth service against a real MariaDB database of its own.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{bin_path, unique_email, AuthDb};

mod helpers;

use helpers::spawn_app;

#[tokio::test]
async fn login_issues_a_token_that_validates_to_the_contract_claims() {
    let app = spawn_app(&[]).await;
    let email = unique_email();
    app.add_user(&email, "Password123!", true).unwrap();
    let resp = app.login(&email, "Password123!").await;
    assert_eq!(resp.status(), 200);
    let token = resp.text().await.unwrap();
    let resp = app.validate(&token).await;
    assert_eq!(resp.status(), 200);
    let claims: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(claims["username"], email.as_str());
    assert_eq!(claims["admin"], true);
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert_eq!(exp - iat, 86_400, "a day, as in the original");

    // Typed in other letter case, the login succeeds and the token names the address as stored
    // (downloads are matched and mail is sent by it).
    let resp = app.login(&email.to_uppercase(), "Password123!").await;
    assert_eq!(resp.status(), 200);
    let token = resp.text().await.unwrap();
    let resp = app.validate(&token).await;
    let claims: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(claims["username"], email.as_str());
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes() {
    let app = spawn_app(&[]).await;
    let email = unique_email();
    app.add_user(&email, "Password123!", true).unwrap();
    let mut conn: sqlx::MySqlConnection = sqlx::Connection::connect(&testkit::mysql_admin_url()).await.unwrap();
    let (stored,): (String,) = sqlx::query_as(&format!("SELECT password FROM `{}`.`user` WHERE email = ?", app.db.database))
        .bind(&email)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains("Password123!"), "{stored}");
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same() {
    let app = spawn_app(&[]).await;
    let email = unique_email();
    app.add_user(&email, "Password123!", true).unwrap();
    let wrong = app.login(&email, "nope").await;
    let unknown = app.login(&unique_email(), "nope").await;
    assert_eq!((wrong.status(), unknown.status()), (reqwest::StatusCode::UNAUTHORIZED, reqwest::StatusCode::UNAUTHORIZED));
    assert_eq!(wrong.text().await.unwrap(), "invalid credentials");
    assert_eq!(unknown.text().await.unwrap(), "invalid credentials");
}

#[tokio::test]
async fn repeated_failures_are_rate_limited_per_account_and_address() {
    let app = spawn_app(&[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_MAX_FAILURES_PER_ADDRESS", "5"), ("LOGIN_WINDOW_SECONDS", "60")]).await;
    let (victim, other) = (unique_email(), unique_email());
    app.add_user(&victim, "Password123!", true).unwrap();
    app.add_user(&other, "Password123!", true).unwrap();
    for _ in 0..3 {
        assert_eq!(app.login(&victim, "guess").await.status(), 401);
    }
    // This address must wait now, even with the right password, with a Retry-After within the
    // window (other addresses are not slowed: see hostile.rs `strangers_cannot_lock_an_account_out`).
    let blocked = app.login(&victim, "Password123!").await;
    assert_eq!(blocked.status(), 429);
    let retry: u64 = blocked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(blocked.text().await.unwrap(), "too many failed logins; try again later");
    // Another email from the same address still works until the address limit (5) is hit.
    assert_eq!(app.login(&other, "Password123!").await.status(), 200);
    assert_eq!(app.login(&other, "guess").await.status(), 401);
    assert_eq!(app.login(&unique_email(), "guess").await.status(), 401);
    assert_eq!(app.login(&other, "Password123!").await.status(), 429, "address limit reached");
}

#[tokio::test]
async fn user_command_creates_non_admins_and_resets_passwords() {
    let app = spawn_app(&[]).await;
    let email = unique_email();
    app.add_user(&email, "Password123!", false).unwrap();
    let token = app.login(&email, "Password123!").await.text().await.unwrap();
    let claims: serde_json::Value = app.validate(&token).await.json().await.unwrap();
    assert_eq!(claims["admin"], false);

    // A duplicate is refused with a clear message.
    let dup = app.add_user(&email, "Password123!", true).unwrap_err().to_string();
    assert!(dup.contains("already exists"), "{dup}");

    // set-password reads the new password from stdin.
    let mut child = Command::new(bin_path("auth"))
        .args(["user", "set-password", &email])
        .env_clear()
        .envs(app.db.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"NewPassword456\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(app.login(&email, "Password123!").await.status(), 401);
    assert_eq!(app.login(&email, "NewPassword456").await.status(), 200);

    // Too short a password is refused before anything is written.
    let short = app.add_user(&unique_email(), "short", true).unwrap_err().to_string();
    assert!(short.contains("at least 8 characters"), "{short}");
}

#[tokio::test]
async fn refuses_to_start_without_a_strong_jwt_secret() {
    let db = AuthDb::create().await.unwrap();
    for (secret, expected) in
        [(None, "missing required environment variable JWT_SECRET"), (Some("too-short"), "JWT_SECRET: must be at least 32 bytes")]
    {
        let mut cmd = Command::new(bin_path("auth"));
        cmd.env_clear().envs(db.env()).env("PORT", "0");
        if let Some(s) = secret {
            cmd.env("JWT_SECRET", s);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "{stderr}");
        if let Some(s) = secret {
            assert!(!stderr.contains(s), "the secret itself is never printed");
        }
    }
}

#[tokio::test]
async fn answers_503_when_mysql_is_unreachable() {
    let port = testkit::free_port().to_string();
    let app = spawn_app(&[("MYSQL_PORT", &port)]).await;
    let started = std::time::Instant::now();
    let resp = app.login("a@b.c", "whatever").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(resp.text().await.unwrap(), "service unavailable; try again later");
    assert!(started.elapsed() < Duration::from_secs(10));
    let ready = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(reqwest::get(format!("{}/healthz", app.base)).await.unwrap().status(), 200);
}
