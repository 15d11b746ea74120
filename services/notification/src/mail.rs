//! Turning mp3-queue messages into emails, at most once each.

use anyhow::Context;
use common::consumer::{Handler, Job, Outcome};
use common::email::Email;
use common::message::JobMessage;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mongodb::bson::{doc, DateTime, Document};
use mongodb::Collection;
use secrecy::ExposeSecret;
use tracing::info;

use crate::config::{SmtpSettings, TlsMode};

pub fn transport(smtp: &SmtpSettings) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder = match smtp.tls {
        TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        TlsMode::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).context("invalid SMTP_HOST")?,
        TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).context("invalid SMTP_HOST")?,
    };
    let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
    if let Some(password) = &smtp.password {
        builder = builder.credentials(Credentials::new(smtp.from.to_string(), password.expose_secret().to_owned()));
    }
    Ok(builder.build())
}

/// The mail for a message: `(dedup key, subject, body)`. Only checked values reach headers.
pub fn compose(msg: &JobMessage) -> Result<(String, &'static str, String), String> {
    match (&msg.mp3_fid, &msg.error) {
        (_, Some(reason)) => Ok((
            format!("failed:{}", msg.video_fid),
            "MP3 Download failed",
            format!("Your video {} could not be converted to MP3.\nReason: {reason}\n", msg.video_fid),
        )),
        (Some(fid), None) => Ok((format!("mp3:{fid}"), "MP3 Download", format!("mp3 file_id: {fid} is now ready!"))),
        (None, None) => Err("malformed message: neither mp3_fid nor error is set".into()),
    }
}

pub struct Notifier {
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Email,
    /// Keys of the mails already sent (`_id`), so a redelivered message sends nothing.
    pub sent: Collection<Document>,
}

impl Notifier {
    async fn already_sent(&self, key: &str) -> anyhow::Result<bool> {
        Ok(self.sent.find_one(doc! {"_id": key}).await.context("failed to read the sent-mail log")?.is_some())
    }
}

impl Handler for Notifier {
    async fn handle(&self, job: &Job) -> Outcome {
        let msg: JobMessage = match serde_json::from_slice(&job.body) {
            Ok(m) => m,
            Err(e) => return Outcome::Fail(format!("malformed message: {e}")),
        };
        let Ok(to) = msg.username.parse::<Email>() else {
            return Outcome::Fail(format!("invalid recipient address {:?}", msg.username));
        };
        let (key, subject, body) = match compose(&msg) {
            Ok(parts) => parts,
            Err(reason) => return Outcome::Fail(reason),
        };
        match self.already_sent(&key).await {
            Ok(true) => {
                info!(%key, "mail already sent; skipping duplicate");
                return Outcome::Done;
            }
            Ok(false) => {}
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        }
        let mailbox = |e: &Email| e.as_str().parse::<Mailbox>();
        let (Ok(from), Ok(to_box)) = (mailbox(&self.from), mailbox(&to)) else {
            return Outcome::Fail(format!("invalid recipient address {:?}", msg.username));
        };
        let email = match Message::builder().from(from).to(to_box).subject(subject).header(ContentType::TEXT_PLAIN).body(body) {
            Ok(m) => m,
            Err(e) => return Outcome::Fail(format!("cannot build the email: {e}")),
        };
        if let Err(e) = self.transport.send(email).await {
            // 5xx answers (unknown mailbox, refused sender) won't change on retry.
            return if e.is_permanent() {
                Outcome::Fail(format!("the mail server refused the email: {e}"))
            } else {
                Outcome::Retry(format!("could not reach the mail server: {e}"))
            };
        }
        info!(%key, to = %to, "mail sent");
        if let Err(e) = self.sent.insert_one(doc! {"_id": &key, "to": to.as_str(), "at": DateTime::now()}).await {
            // The mail went out; at worst a redelivery sends it again.
            tracing::warn!(error.cause_chain = ?e, %key, "failed to record the sent mail");
        }
        Outcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_the_original_mail() {
        let m = JobMessage { video_fid: "v".into(), mp3_fid: Some("abc".into()), username: "a@b.c".into(), error: None };
        let (key, subject, body) = compose(&m).unwrap();
        assert_eq!((key.as_str(), subject, body.as_str()), ("mp3:abc", "MP3 Download", "mp3 file_id: abc is now ready!"));
        let f = JobMessage { error: Some("the video has no audio track".into()), mp3_fid: None, ..m.clone() };
        let (key, subject, body) = compose(&f).unwrap();
        assert_eq!(key, "failed:v");
        assert_eq!(subject, "MP3 Download failed");
        assert!(body.contains("the video has no audio track"));
        assert!(compose(&JobMessage { mp3_fid: None, ..m }).is_err());
    }
}
