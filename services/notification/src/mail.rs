//! Turning mp3-queue messages into emails, at most once each.

use std::time::Duration;

use anyhow::Context;
use common::consumer::{Handler, Job, Outcome};
use common::email::Email;
use common::ids::VideoId;
use common::links::LinkSigner;
use common::message::{Conversion, Failure, Mp3Notice};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mongodb::bson::{doc, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::Collection;
use secrecy::ExposeSecret;
use tracing::info;

use crate::config::{SmtpSettings, TlsMode};

/// How often a delivery waiting on another one's claim looks again.
const CLAIM_POLL: Duration = Duration::from_millis(250);

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

/// A composed mail: `key` deduplicates it; `html` is an alternative part when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub key: String,
    pub subject: &'static str,
    pub text: String,
    pub html: Option<String>,
}

/// What the owner can do, for the failures whose sentence does not already say it.
fn advice(failure: Failure) -> Option<&'static str> {
    match failure {
        Failure::NotMedia => Some("check that the file plays on your computer, then upload it again (or export it to MP4 first)"),
        Failure::NoAudio => Some("upload a video that has sound"),
        Failure::BadAudio => Some("export the video with a common audio format (AAC or MP3) and upload it again"),
        _ => None,
    }
}

/// The mail for a notice. The "ready" mail keeps the original's line verbatim and adds the
/// signed download link when there is one. Only checked values reach headers. A failure's
/// reason is one of the fixed sentences of [`Failure`] (the notice's decoding made any other
/// text an internal error).
pub fn compose(notice: &Mp3Notice, links: Option<&LinkSigner>) -> Composed {
    let video = notice.job.video;
    match notice.outcome {
        Conversion::Failed { failure } => {
            let mut text = format!("Your video {video} could not be converted to MP3.\nReason: {failure}\n");
            if let Some(todo) = advice(failure) {
                text.push_str(&format!("What you can do: {todo}.\n"));
            }
            Composed { key: format!("failed:{video}"), subject: "MP3 Download failed", text, html: None }
        }
        Conversion::Ready { mp3: fid } => {
            let line = format!("mp3 file_id: {fid} is now ready!");
            let link = links.map(|l| (l.url(video), common::jobs::human(l.ttl)));
            let (text, html) = match link {
                None => (line, None),
                Some((url, ttl)) => (
                    format!("{line}\n\nDownload it (no login needed; the link works for {ttl}):\n{url}\n"),
                    // The id is 24 hex digits and the URL ours (base from configuration, query
                    // of digits and base64url), but escape anyway: it goes into markup.
                    Some(format!(
                        "<p>{}</p><p><a href=\"{}\">Download your MP3</a> (no login needed; the link works for {ttl}).</p>",
                        escape(&line),
                        escape(&url)
                    )),
                ),
            };
            Composed { key: format!("mp3:{fid}"), subject: "MP3 Download", text, html }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub struct Notifier {
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Email,
    /// One document per mail key (`_id`): `state: "sending"` while a delivery holds the claim,
    /// `"sent"` once the mail went out (records without `state` are sent ones). A redelivered
    /// or duplicated message finds it and sends nothing.
    pub sent: Collection<Document>,
    /// Makes the download link of the "ready" mail.
    pub links: Option<LinkSigner>,
    /// Longest time one send may take; a claim older than twice this is taken to belong to a
    /// notifier that died mid-send, and is taken over.
    pub send_timeout: Duration,
}

/// Where a delivery stands with the mail of its key.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// This delivery holds the claim (made at the given time) and sends.
    Mine(DateTime),
    /// The mail went out already.
    Sent,
    /// Another delivery is sending it right now.
    Busy,
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

impl Notifier {
    fn lease(&self) -> Duration {
        self.send_timeout * 2
    }

    /// Claims `key` for this delivery. The claim is an insert on a unique `_id`, so of two
    /// deliveries of the same message handled at once (by one notifier or by two), exactly one
    /// sends; the other waits for the outcome instead of sending a second mail.
    async fn claim(&self, key: &str, to: &Email) -> anyhow::Result<Claim> {
        let now = DateTime::now();
        match self.sent.insert_one(doc! {"_id": key, "to": to.as_str(), "state": "sending", "at": now}).await {
            Ok(_) => return Ok(Claim::Mine(now)),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e).context("failed to claim the mail in the sent-mail log"),
        }
        let Some(record) = self.sent.find_one(doc! {"_id": key}).await.context("failed to read the sent-mail log")? else {
            // Released between our insert and this read: try again.
            return Ok(Claim::Busy);
        };
        if record.get_str("state").ok() != Some("sending") {
            return Ok(Claim::Sent);
        }
        // A claim past its lease belongs to a notifier that died before it recorded the mail:
        // take it over. The filter on the old time lets only one taker win.
        let stale = DateTime::from_millis(now.timestamp_millis() - self.lease().as_millis() as i64);
        let taken = self
            .sent
            .update_one(doc! {"_id": key, "state": "sending", "at": {"$lte": stale}}, doc! {"$set": {"at": now}})
            .await
            .context("failed to take over a stale claim")?;
        Ok(if taken.modified_count == 1 { Claim::Mine(now) } else { Claim::Busy })
    }

    /// Gives a claim back after a failed send, so that the retry (or a duplicate) can send.
    async fn release(&self, key: &str, claimed_at: DateTime) {
        if let Err(e) = self.sent.delete_one(doc! {"_id": key, "state": "sending", "at": claimed_at}).await {
            // The claim expires after its lease; the retry then takes it over.
            tracing::warn!(error.cause_chain = ?e, %key, "failed to release the mail claim");
        }
    }
}

impl Handler for Notifier {
    type Message = Mp3Notice;

    async fn handle(&self, notice: &Mp3Notice, _job: &Job) -> Outcome {
        let to = &notice.job.owner;
        let Composed { key, subject, text, html } = compose(notice, self.links.as_ref());
        let kind = match notice.outcome {
            Conversion::Failed { .. } => "failed",
            Conversion::Ready { .. } => "ready",
        };
        let count = |outcome: &'static str| metrics::counter!(common::metrics::EMAILS, "kind" => kind, "outcome" => outcome).increment(1);
        let mailbox = |e: &Email| e.as_str().parse::<Mailbox>();
        let (Ok(from), Ok(to_box)) = (mailbox(&self.from), mailbox(to)) else {
            return Outcome::Fail(format!("invalid recipient address {:?}", to.as_str()));
        };
        let builder = Message::builder().from(from).to(to_box).subject(subject);
        let built = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html)),
            None => builder.header(ContentType::TEXT_PLAIN).body(text),
        };
        let email = match built {
            Ok(m) => m,
            Err(e) => return Outcome::Fail(format!("cannot build the email: {e}")),
        };

        // Wait out another delivery that is sending this very mail (at most its lease: a
        // claim older than that is taken over).
        let give_up = tokio::time::Instant::now() + self.lease() + Duration::from_secs(5);
        let claimed_at = loop {
            match self.claim(&key, to).await {
                Ok(Claim::Mine(at)) => break at,
                Ok(Claim::Sent) => {
                    info!(%key, "mail already sent; skipping duplicate");
                    count("duplicate");
                    return Outcome::Done;
                }
                Ok(Claim::Busy) if tokio::time::Instant::now() < give_up => tokio::time::sleep(CLAIM_POLL).await,
                Ok(Claim::Busy) => {
                    count("retried");
                    return Outcome::Retry("another delivery is still sending this mail".into());
                }
                Err(e) => {
                    count("retried");
                    return Outcome::Retry(format!("{e:#}"));
                }
            }
        };
        let sent = match tokio::time::timeout(self.send_timeout, self.transport.send(email)).await {
            Ok(result) => result.map_err(|e| (e.is_permanent(), e.to_string())),
            Err(_) => Err((false, format!("no answer within {:?}", self.send_timeout))),
        };
        if let Err((permanent, e)) = sent {
            self.release(&key, claimed_at).await;
            // 5xx answers (unknown mailbox, refused sender) won't change on retry.
            count(if permanent { "refused" } else { "retried" });
            return if permanent {
                Outcome::Fail(format!("the mail server refused the email: {e}"))
            } else {
                Outcome::Retry(format!("could not reach the mail server: {e}"))
            };
        }
        info!(%key, to = %to, "mail sent");
        count("sent");
        if kind == "ready" {
            if let Some(waited) = since_upload(notice.job.video) {
                metrics::histogram!(common::metrics::UPLOAD_TO_EMAIL).record(waited);
            }
        }
        let record = doc! {"$set": {"state": "sent", "at": DateTime::now()}};
        if let Err(e) = self.sent.update_one(doc! {"_id": &key}, record).await {
            // The mail went out; only a duplicate arriving after the claim's lease would send
            // it again.
            tracing::warn!(error.cause_chain = ?e, %key, "failed to record the sent mail");
        }
        Outcome::Done
    }
}

/// Seconds since the upload of `video`, read from the id itself: an ObjectId starts with
/// its creation time (to the second), and the gateway makes the video's id as it stores it.
fn since_upload(video: VideoId) -> Option<f64> {
    let made = video.oid().timestamp().to_system_time();
    std::time::SystemTime::now().duration_since(made).ok().map(|d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::message::JobMessage;

    const V: &str = "65f0c0ffee0123456789abcd";
    const M: &str = "65f0c0ffee0123456789abce";

    fn notice(wire: &JobMessage) -> Mp3Notice {
        Mp3Notice::decode(&wire.to_json()).unwrap()
    }

    #[test]
    fn composes_the_original_mail() {
        let m = JobMessage { mp3_fid: Some(M.into()), ..JobMessage::new_video(V, "a@b.c") };
        let c = compose(&notice(&m), None);
        assert_eq!((c.key, c.subject, c.text), (format!("mp3:{M}"), "MP3 Download", format!("mp3 file_id: {M} is now ready!")));
        let f = JobMessage { error: Some("the video has no audio track".into()), mp3_fid: None, ..m.clone() };
        let c = compose(&notice(&f), None);
        assert_eq!(c.key, format!("failed:{V}"));
        assert_eq!(c.subject, "MP3 Download failed");
        assert!(c.text.contains("Reason: the video has no audio track"), "{}", c.text);
        assert!(c.text.contains("What you can do: upload a video that has sound."), "{}", c.text);
        let leaked = "gave up after 5 attempts: MongoDB unavailable: Connection refused (os error 111)";
        let c = compose(&notice(&JobMessage { error: Some(leaked.into()), mp3_fid: None, ..m }), None);
        assert_eq!(
            c.text,
            format!(
                "Your video {V} could not be converted to MP3.\nReason: an internal error stopped the conversion; please try again later\n"
            )
        );
    }

    #[test]
    fn the_ready_mail_carries_a_signed_link_and_keeps_the_original_line() {
        let links = LinkSigner::new(secrecy::SecretString::from("k".repeat(40)), "http://127.0.0.1:8080", Duration::from_secs(7 * 86_400));
        let m = JobMessage::new_video(V, "a@b.c");
        let m = JobMessage { mp3_fid: Some(M.into()), ..m };
        let c = compose(&notice(&m), Some(&links));
        assert!(c.text.starts_with("mp3 file_id: 65f0c0ffee0123456789abce is now ready!\n"), "{}", c.text);
        assert!(c.text.contains("http://127.0.0.1:8080/jobs/65f0c0ffee0123456789abcd/download?expires="), "{}", c.text);
        assert!(c.text.contains("works for 7 days"), "{}", c.text);
        let html = c.html.unwrap();
        assert!(html.contains("<a href=\"http://127.0.0.1:8080/jobs/65f0c0ffee0123456789abcd/download?expires="), "{html}");
    }
}
