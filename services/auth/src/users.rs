//! `auth user add EMAIL [--no-admin]` and `auth user set-password EMAIL`: users can't be
//! added with a plain SQL INSERT any more, since passwords are stored as argon2id hashes.
//! The password comes from `AUTH_USER_PASSWORD` or the first line of stdin, never from argv.

use std::io::BufRead;

use anyhow::{bail, Context};
use common::email::Email;
use common::Env;
use secrecy::SecretString;
use sqlx::MySqlPool;

use crate::config::MysqlSettings;
use crate::password;

pub const USAGE: &str = "usage: auth user add EMAIL [--no-admin] | auth user set-password EMAIL | auth user remove EMAIL\n\
    (password from AUTH_USER_PASSWORD or the first line of stdin; MySQL settings from MYSQL_*)";

/// Runs the user command given the arguments after `user`.
pub async fn run(args: &[String], env: &Env) -> anyhow::Result<String> {
    let (cmd, email, no_admin) = match args {
        [cmd, email] => (cmd.as_str(), email, false),
        [cmd, email, flag] if flag == "--no-admin" && cmd == "add" => (cmd.as_str(), email, true),
        _ => bail!("{USAGE}"),
    };
    let email: Email = email.parse().with_context(|| format!("{email:?} is not a valid email address"))?;
    if !matches!(cmd, "add" | "set-password" | "remove") {
        bail!("{USAGE}");
    }
    let password = if cmd == "remove" { None } else { Some(read_password(env)?) };
    let pool = crate::startup::pool(&MysqlSettings::from_env(env)?);
    let result = match (cmd, password) {
        ("add", Some(password)) => add_user(&pool, &email, password, !no_admin).await.map(|()| format!("added user {email}")),
        ("set-password", Some(password)) => {
            set_password(&pool, &email, password).await.map(|()| format!("password of {email} updated; older tokens are revoked"))
        }
        _ => remove_user(&pool, &email).await.map(|()| format!("removed user {email}; their tokens are revoked")),
    };
    pool.close().await;
    result
}

fn read_password(env: &Env) -> anyhow::Result<SecretString> {
    let password = match env.get("AUTH_USER_PASSWORD") {
        Some(p) => p.to_owned(),
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("failed to read the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.chars().count() < 8 {
        bail!("the password must be at least 8 characters long");
    }
    Ok(SecretString::from(password))
}

pub async fn add_user(pool: &MySqlPool, email: &Email, password: SecretString, admin: bool) -> anyhow::Result<()> {
    let phc = password::hash(password).await?;
    let result = sqlx::query("INSERT INTO `user` (email, password, admin) VALUES (?, ?, ?)")
        .bind(email.as_str())
        .bind(phc)
        .bind(admin)
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => bail!("user {email} already exists"),
        Err(e) => Err(e).context("failed to insert the user"),
    }
}

pub async fn set_password(pool: &MySqlPool, email: &Email, password: SecretString) -> anyhow::Result<()> {
    let phc = password::hash(password).await?;
    // Moving the token generation on revokes every token issued before (auth's /validate
    // compares it with the token's).
    let done = sqlx::query("UPDATE `user` SET password = ?, token_generation = token_generation + 1 WHERE email = ?")
        .bind(phc)
        .bind(email.as_str())
        .execute(pool)
        .await
        .context("failed to update the password")?;
    if done.rows_affected() == 0 {
        bail!("no user {email}");
    }
    Ok(())
}

/// Deletes the user; their tokens stop validating at once (no row, no valid generation).
pub async fn remove_user(pool: &MySqlPool, email: &Email) -> anyhow::Result<()> {
    let done =
        sqlx::query("DELETE FROM `user` WHERE email = ?").bind(email.as_str()).execute(pool).await.context("failed to delete the user")?;
    if done.rows_affected() == 0 {
        bail!("no user {email}");
    }
    Ok(())
}
