//! MySQL as an administrator, the one way every task reaches it: the mysql client as root over
//! TCP when MariaDB allows it, else through the socket (as the OS root, or with sudo); and a URL
//! for sqlx (root over TCP, else a password-less `mp3c_test` user made through the socket).

use std::process::Command;

use anyhow::Context;
use sqlx::{Connection, MySqlConnection};

use crate::pods::{run_with_input, succeeds};

const TCP: [&str; 4] = ["--protocol=tcp", "-h127.0.0.1", "-P3306", "-uroot"];

/// Whether this process runs as the OS root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|u| u.split_whitespace().next() == Some("0"))))
        .unwrap_or(false)
}

/// The mysql client as an administrator.
pub fn client() -> Command {
    if succeeds(Command::new("mysql").args(TCP).args(["-e", "SELECT 1"])) {
        let mut cmd = Command::new("mysql");
        cmd.args(TCP);
        return cmd;
    }
    let mut cmd = if is_root() { Command::new("mysql") } else { Command::new("sudo") };
    if !is_root() {
        cmd.arg("mysql");
    }
    cmd.arg("-uroot");
    cmd
}

/// Runs `sql` (several statements) as an administrator; `what` names it in the error.
pub fn run(sql: &str, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(run_with_input(&mut client(), sql), "applying {what} with the mysql client failed");
    Ok(())
}

/// An administrator's URL for sqlx: root over TCP when MariaDB allows it, else a password-less
/// `mp3c_test` user with every privilege, made through the socket.
pub async fn admin_url() -> anyhow::Result<String> {
    let root = "mysql://root@127.0.0.1:3306";
    if MySqlConnection::connect(root).await.is_ok() {
        return Ok(root.to_owned());
    }
    eprintln!("[xtask] MariaDB refuses root over TCP; creating the password-less user mp3c_test through the socket");
    run(
        "CREATE USER IF NOT EXISTS 'mp3c_test'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'mp3c_test'@'localhost';
GRANT ALL PRIVILEGES ON *.* TO 'mp3c_test'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'mp3c_test'@'localhost' WITH GRANT OPTION;",
        "the mp3c_test user",
    )?;
    let url = "mysql://mp3c_test@127.0.0.1:3306";
    MySqlConnection::connect(url).await.context("mp3c_test cannot log in over TCP either")?;
    Ok(url.to_owned())
}
