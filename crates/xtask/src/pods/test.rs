//! `xtask pods test`: the containerised phase of scripts/test.sh. The four images (`xtask
//! images`) run from the manifests (`pods up`, an instance of its own on free ports), and the
//! tutorial flow against the containerised gateway: a user added with the auth image's own CLI,
//! login, an upload of each common container format, the "ready" mail, the download (an MP3 of
//! the right length). Then every container is checked against its manifest (user, read-only root,
//! nothing written outside its volumes), and the instance is removed (`pods down`) whatever
//! happened. Succeeds only when all of it passed. Needs the servers of scripts/deps.sh and ffmpeg
//! on the host (to make the sample videos and check the MP3s).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use super::{log, secret, Instance, Name, Podman, SERVICES};

const ME: &str = "pods-test";

/// Common containers and their usual audio: each must become an MP3 through the image's ffmpeg.
/// Extension and ffmpeg output options (3 s of test video and a tone).
const SAMPLES: [(&str, &[&str]); 9] = [
    ("mkv", &["-c:v", "mpeg4", "-c:a", "aac"]),
    ("mp4", &["-c:v", "mpeg4", "-c:a", "aac"]),
    ("webm", &["-c:v", "libvpx", "-c:a", "libopus"]),
    ("mov", &["-c:v", "mpeg4", "-c:a", "aac"]),
    ("avi", &["-c:v", "mpeg4", "-c:a", "libmp3lame"]),
    ("flv", &["-c:v", "flv", "-c:a", "aac"]),
    ("ts", &["-c:v", "mpeg2video", "-c:a", "mp2"]),
    ("ogg", &["-c:v", "libtheora", "-c:a", "libvorbis"]),
    ("wmv", &["-c:v", "wmv2", "-c:a", "wmav2"]),
];

/// The JWT secret the repository used to ship: a token signed with it must be refused.
const PLACEHOLDER_JWT_SECRET: &str = "dev-placeholder-jwt-secret-change-me-not-for-production";

#[derive(clap::Args)]
pub struct Options {
    /// Use the images as they are instead of building them first.
    #[arg(long)]
    no_build: bool,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    if !opts.no_build {
        super::images::build(&super::images::Options::default())?;
    }
    let pid = std::process::id();
    let name: Name = format!("mp3c-test-{pid}").parse().map_err(anyhow::Error::msg)?;
    let work = crate::dev_dir().join(format!("pods-test-{pid}"));
    std::fs::create_dir_all(&work)?;
    let result = up_and_test(&name, &work).await;
    // Removed whatever happened.
    let me = std::env::current_exe().context("xtask's own path")?;
    if !super::succeeds(Command::new(me).args(["pods", "down", "--name", &name.to_string()])) {
        log(ME, format!("pods down --name {name} failed"));
    }
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn up_and_test(name: &Name, work: &Path) -> anyhow::Result<()> {
    let up_log = work.join("up.log");
    let log_file = std::fs::File::create(&up_log)?;
    let me = std::env::current_exe().context("xtask's own path")?;
    let status = Command::new(me)
        .args(["pods", "up", "--name", &name.to_string(), "--no-demo-user"])
        .envs(["PODS_GATEWAY_PORT", "PODS_AUTH_PORT", "PODS_CONVERTER_PORT", "PODS_NOTIFICATION_PORT"].map(|k| (k, "0")))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()?;
    if !status.success() {
        eprint!("{}", std::fs::read_to_string(&up_log).unwrap_or_default());
        bail!("pods up failed");
    }
    let instance = Instance::read(name)?.context("pods up recorded no instance")?;
    let gw = format!("http://127.0.0.1:{}", instance.gateway_port);
    log(ME, format!("instance {name} up; gateway {gw}"));
    let podman = Podman::setup()?;
    let flow = Flow { name, work, gw: &gw, podman: &podman };
    match flow.run().await {
        Ok(()) => Ok(()),
        Err(e) => {
            for svc in SERVICES {
                let container = name.container(svc);
                eprintln!("----- podman logs {container} (last 30 lines)");
                podman.show_logs(&container, 30);
            }
            Err(e)
        }
    }
}

struct Flow<'a> {
    name: &'a Name,
    work: &'a Path,
    gw: &'a str,
    podman: &'a Podman,
}

impl Flow<'_> {
    async fn run(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        // A user of this run, added by the auth image's own CLI inside its pod (the pod's environment).
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let email = format!("pods-{}-{now}@example.com", std::process::id());
        let password = secret(16);
        let mut add_user = self.podman.cmd();
        add_user.args(["exec", "-i", &self.name.container("auth"), "/usr/local/bin/auth", "user", "add", &email]);
        if !super::run_with_input(&mut add_user, &password) {
            bail!("auth user add inside the auth container failed");
        }

        let login = |pw: String| client.post(format!("{}/login", self.gw)).basic_auth(&email, Some(pw)).send();
        let resp = login(password.clone()).await.context("login failed")?;
        if !resp.status().is_success() {
            bail!("login failed: HTTP {}", resp.status());
        }
        let token = resp.text().await?;
        if login(format!("wrong-{password}")).await?.status() != 401 {
            bail!("a wrong password was not answered 401");
        }

        for (ext, codecs) in SAMPLES {
            let sample = self.work.join(format!("sample.{ext}"));
            let made = Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"])
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "3"])
                .args(codecs)
                .arg("-y")
                .arg(&sample)
                .status();
            if !made.is_ok_and(|s| s.success()) {
                bail!("host ffmpeg could not make a .{ext} sample");
            }
            let (code, body) = self.upload(&client, &token, &sample).await?;
            if code != 200 || body != "success!" {
                bail!("upload of .{ext}: HTTP {code} {}", body.chars().take(300).collect::<String>());
            }
        }
        log(ME, format!("uploaded {} videos ({})", SAMPLES.len(), SAMPLES.map(|(e, _)| e).join(" ")));

        let fids = ready_mails(&email, SAMPLES.len()).await?;
        log(ME, format!("{} ready mails", fids.len()));

        let out = self.work.join("out.mp3");
        for fid in &fids {
            let resp = client.get(format!("{}/download?fid={fid}", self.gw)).bearer_auth(&token).send().await?;
            let code = resp.status();
            if code != 200 {
                bail!("download of {fid}: HTTP {code}");
            }
            std::fs::write(&out, resp.bytes().await?)?;
            let (_, codec, duration) = testkit::probe(&out)?;
            if codec.as_deref() != Some("mp3") {
                bail!("download of {fid} is not an MP3 (codec {})", codec.as_deref().unwrap_or("none"));
            }
            if !(2.5..3.5).contains(&duration) {
                bail!("the MP3 of {fid} lasts {duration}s, the video 3 s");
            }
        }
        log(ME, format!("{} MP3 downloads of about 3 s each", fids.len()));

        // Someone else's token finds nothing: the containerised auth and gateway share one JWT
        // secret of their own (generated by pods up), not the placeholder.
        let (code, _) = self.upload(&client, &forged_token()?, &self.work.join("sample.mkv")).await?;
        if code != 403 {
            bail!("a token signed with the repository's placeholder JWT secret got HTTP {code} (want 403)");
        }

        let play = testkit::manifests::load_file(&self.name.state_dir().join("play.yaml"))?;
        super::play::inspect(self.podman, self.name, &play).context("a container does not run as its manifest says")?;
        log(
            ME,
            format!("PASS: tutorial flow against the containerised suite ({} formats), containers as their manifests say", SAMPLES.len()),
        );
        Ok(())
    }

    async fn upload(&self, client: &reqwest::Client, token: &str, file: &Path) -> anyhow::Result<(u16, String)> {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("video").to_owned();
        let part = reqwest::multipart::Part::bytes(std::fs::read(file)?).file_name(name);
        let form = reqwest::multipart::Form::new().part("file", part);
        let resp = client.post(format!("{}/upload", self.gw)).bearer_auth(token).multipart(form).send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }
}

/// Waits up to 240 s for one "ready" mail per upload, for this run's address only; the file ids.
async fn ready_mails(email: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mails = testkit::mails_to(email).await.context("maildev did not answer")?;
        let mut fids = Vec::new();
        for mail in &mails {
            let text = format!("{} {}", mail.subject, mail.text);
            if text.to_lowercase().contains("failed") {
                bail!("a conversion failed: {}", text.trim().replace('\n', " ").chars().take(300).collect::<String>());
            }
            fids.extend(ready_fids(&text));
        }
        fids.sort_unstable();
        fids.dedup();
        if fids.len() >= count {
            if fids.len() != count {
                bail!("{} ready mails for {count} uploads", fids.len());
            }
            return Ok(fids);
        }
        if Instant::now() > deadline {
            bail!("only {} of {count} ready mails within 240 s", fids.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every `mp3 file_id: <24 hex> is now ready` of a mail's text.
fn ready_fids(text: &str) -> Vec<String> {
    text.match_indices("mp3 file_id: ")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let fid = rest.get(..24)?;
            let hex = fid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            (hex && rest[24..].starts_with(" is now ready")).then(|| fid.to_owned())
        })
        .collect()
}

/// An admin token for someone else, signed with the placeholder secret.
fn forged_token() -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({"username": "x@example.com", "admin": true, "iat": now, "exp": now + 600});
    let key = jsonwebtoken::EncodingKey::from_secret(PLACEHOLDER_JWT_SECRET.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_ready_file_id() {
        let text = "Ready mp3 file_id: 0123456789abcdef01234567 is now ready! mp3 file_id: 0123456789ABCDEF01234567 is now ready mp3 file_id: 89abcdef0123456789abcdef is now ready";
        assert_eq!(ready_fids(text), ["0123456789abcdef01234567", "89abcdef0123456789abcdef"]);
    }
}
