//! The message both queues carry, and the typed values it decodes into.
//!
//! The wire format is the original's (plus two optional fields): [`JobMessage`] is that
//! document, kept byte for byte. Nothing past the consumer loop reads it: the video queue
//! decodes into a [`VideoJob`], the mp3 queue into an [`Mp3Notice`], with checked ids and
//! owner and one [`Conversion`] outcome, so a notice that is neither ready nor failed (or both)
//! is refused at the edge with a clear reason.

use serde::{Deserialize, Serialize};

use crate::email::Email;
use crate::ids::{Mp3Id, VideoId};
use crate::jobs::OutputOptions;

/// `{"video_fid": "...", "mp3_fid": null, "username": "..."}` on the video queue; the converter
/// fills `mp3_fid` for the mp3 queue. When a job fails for good, the converter sends the same
/// document with `mp3_fid: null` and `error` set, so the owner is told what went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub video_fid: String,
    pub mp3_fid: Option<String>,
    pub username: String,
    /// Added field: why the conversion failed (absent on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Added field: the output options asked for at upload (absent when none were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<OutputOptions>,
}

impl JobMessage {
    pub fn new_video(video_fid: impl Into<String>, username: impl Into<String>) -> Self {
        Self { video_fid: video_fid.into(), mp3_fid: None, username: username.into(), error: None, options: None }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("JobMessage always serialises")
    }

    fn parse(body: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(body).map_err(DecodeError::Json)
    }

    fn video(&self) -> Result<VideoId, DecodeError> {
        self.video_fid.parse().map_err(|_| DecodeError::VideoId(self.video_fid.clone()))
    }

    fn owner(&self) -> Result<Email, DecodeError> {
        self.username.parse().map_err(|_| DecodeError::Owner(self.username.clone()))
    }
}

/// Why a message body is not a job or a notice: the reason it is dead-lettered with.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Json(#[source] serde_json::Error),
    #[error("malformed message: video_fid {0:?} is not an id")]
    VideoId(String),
    #[error("malformed message: mp3_fid {0:?} is not an id")]
    Mp3Id(String),
    #[error("invalid recipient address {0:?}")]
    Owner(String),
    #[error("malformed message: neither mp3_fid nor error is set")]
    Neither,
    #[error("malformed message: both mp3_fid and error are set")]
    Both,
}

/// A video to convert, as the video queue carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoJob {
    pub video: VideoId,
    /// Who uploaded it: whom the mp3 belongs to and who is told.
    pub owner: Email,
    /// The output asked for at upload (empty: the defaults, and no field on the wire).
    pub options: OutputOptions,
}

impl VideoJob {
    pub fn new(video: VideoId, owner: Email, options: OutputOptions) -> Self {
        Self { video, owner, options }
    }

    /// Reads a video-queue body. `mp3_fid` and `error` mean nothing on this queue and are
    /// ignored, as they always were.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let wire = JobMessage::parse(body)?;
        Ok(Self { video: wire.video()?, owner: wire.owner()?, options: wire.options.unwrap_or_default() })
    }

    /// The original's document; `options` only when some were asked for, so the original's
    /// clients' messages stay exactly as they were.
    pub fn to_json(&self) -> Vec<u8> {
        self.wire(None, None).to_json()
    }

    fn wire(&self, mp3: Option<Mp3Id>, error: Option<Failure>) -> JobMessage {
        JobMessage {
            video_fid: self.video.to_string(),
            mp3_fid: mp3.map(|m| m.to_string()),
            username: self.owner.to_string(),
            error: error.map(|f| f.user_text().to_owned()),
            options: (!self.options.is_empty()).then(|| self.options.clone()),
        }
    }

    /// The notice that the video's mp3 is stored as `mp3`.
    pub fn ready(self, mp3: Mp3Id) -> Mp3Notice {
        Mp3Notice { job: self, outcome: Conversion::Ready { mp3 } }
    }

    /// The notice that the video could not be converted, and why.
    pub fn failed(self, failure: Failure) -> Mp3Notice {
        Mp3Notice { job: self, outcome: Conversion::Failed { failure } }
    }
}

impl crate::consumer::Decode for VideoJob {
    type Error = DecodeError;
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        VideoJob::decode(body)
    }
}

impl crate::consumer::Decode for Mp3Notice {
    type Error = DecodeError;
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        Mp3Notice::decode(body)
    }
}

/// How a conversion ended, as its owner is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// The mp3 is stored (the original's message: `mp3_fid` set).
    Ready { mp3: Mp3Id },
    /// The job failed for good (`mp3_fid: null`, `error` set).
    Failed { failure: Failure },
}

/// What the mp3 queue carries: the job it is about, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Mp3Notice {
    pub job: VideoJob,
    pub outcome: Conversion,
}

impl Mp3Notice {
    /// Reads an mp3-queue body. A failure's `error` that is not one of [`Failure`]'s sentences
    /// (an older converter's, with driver or OS detail) is read as [`Failure::Internal`], so
    /// that nothing else reaches the owner.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let wire = JobMessage::parse(body)?;
        let owner = wire.owner()?;
        let video = wire.video()?;
        let outcome = match (&wire.mp3_fid, &wire.error) {
            (Some(_), Some(_)) => return Err(DecodeError::Both),
            (None, None) => return Err(DecodeError::Neither),
            (Some(fid), None) => Conversion::Ready { mp3: fid.parse().map_err(|_| DecodeError::Mp3Id(fid.clone()))? },
            (None, Some(error)) => {
                let failure = Failure::from_text(error);
                if failure.user_text() != error {
                    tracing::warn!(video_fid = %video, %error, "failure notice with an unknown reason; read as an internal error");
                }
                Conversion::Failed { failure }
            }
        };
        Ok(Self { job: VideoJob { video, owner, options: wire.options.unwrap_or_default() }, outcome })
    }

    pub fn to_json(&self) -> Vec<u8> {
        match self.outcome {
            Conversion::Ready { mp3 } => self.job.wire(Some(mp3), None),
            Conversion::Failed { failure } => self.job.wire(None, Some(failure)),
        }
        .to_json()
    }
}

/// Why a job failed for good, as its owner is told: one fixed, helpful sentence per class.
/// The `error` field of a failure notice carries [`Failure::user_text`]; driver and operating
/// system error text stays in the log, never in a message or a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// ffprobe found no media container it accepts (also playlists and other references).
    NotMedia,
    NoAudio,
    /// ffmpeg could read the file but not turn its audio into MP3.
    BadAudio,
    /// The job ran past its deadline; retrying would only time out again.
    TooLong,
    /// Handling the file stopped the converter again and again (out of memory, crash).
    Unprocessable,
    /// The video was gone when its job ran (its upload was refused after it was stored).
    VideoMissing,
    /// The cut asked for at upload (`start`) begins after the end of the audio.
    CutPastEnd,
    /// Anything on our side (a dependency down past the retries, a bug).
    Internal,
}

impl Failure {
    const ALL: [Failure; 8] = [
        Failure::NotMedia,
        Failure::NoAudio,
        Failure::BadAudio,
        Failure::TooLong,
        Failure::Unprocessable,
        Failure::VideoMissing,
        Failure::CutPastEnd,
        Failure::Internal,
    ];

    pub fn user_text(self) -> &'static str {
        match self {
            Failure::NotMedia => "the uploaded file is not a video or audio file ffmpeg can read",
            Failure::NoAudio => "the video has no audio track",
            Failure::BadAudio => "the audio track could not be converted to MP3",
            Failure::TooLong => "the video took too long to convert; try a shorter or smaller file",
            Failure::Unprocessable => "the file could not be processed (it stopped the converter repeatedly); try another file",
            Failure::VideoMissing => "the uploaded video is no longer stored; please upload it again",
            Failure::CutPastEnd => "the cut starts after the end of the audio; upload it again with an earlier start",
            Failure::Internal => "an internal error stopped the conversion; please try again later",
        }
    }

    /// The class whose text `text` is; any other text (an older converter's, a driver's) is
    /// an internal error, so that nothing but the fixed sentences reaches a mail.
    pub fn from_text(text: &str) -> Failure {
        Failure::ALL.into_iter().find(|f| f.user_text() == text).unwrap_or(Failure::Internal)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.user_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_texts_round_trip_and_anything_else_is_internal() {
        for f in Failure::ALL {
            assert_eq!(Failure::from_text(f.user_text()), f);
        }
        let leaked = "gave up after 5 attempts: MongoDB unavailable: Kind: I/O error: Connection refused (os error 111)";
        assert_eq!(Failure::from_text(leaked), Failure::Internal);
    }

    #[test]
    fn wire_format_matches_the_original() {
        let m = JobMessage::new_video("65f0c0ffee0123456789abcd", "a@b.c");
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(v, serde_json::json!({"video_fid": "65f0c0ffee0123456789abcd", "mp3_fid": null, "username": "a@b.c"}));
        // The original's own messages parse.
        let orig = br#"{"video_fid": "x", "mp3_fid": "y", "username": "u"}"#;
        let m: JobMessage = serde_json::from_slice(orig).unwrap();
        assert_eq!(m.mp3_fid.as_deref(), Some("y"));
        assert_eq!(m.error, None);
        // Options ride along as one optional field.
        let with = JobMessage { options: Some(OutputOptions { bitrate: Some("128k".into()), ..Default::default() }), ..m };
        let v: serde_json::Value = serde_json::from_slice(&with.to_json()).unwrap();
        assert_eq!(v["options"], serde_json::json!({"bitrate": "128k"}));
    }

    const V: &str = "65f0c0ffee0123456789abcd";
    const M: &str = "65f0c0ffee0123456789abce";

    fn json(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn a_video_job_decodes_into_typed_values_and_encodes_as_the_original() {
        let orig = format!(r#"{{"video_fid": "{V}", "mp3_fid": null, "username": "a@b.c"}}"#);
        let job = VideoJob::decode(orig.as_bytes()).unwrap();
        assert_eq!((job.video.to_string().as_str(), job.owner.as_str()), (V, "a@b.c"));
        assert!(job.options.is_empty());
        assert_eq!(job.to_json(), JobMessage::new_video(V, "a@b.c").to_json(), "byte for byte");
        let with = format!(r#"{{"video_fid": "{V}", "mp3_fid": null, "username": "a@b.c", "options": {{"bitrate": "128k"}}}}"#);
        let job = VideoJob::decode(with.as_bytes()).unwrap();
        assert_eq!(job.options.bitrate.as_deref(), Some("128k"));
        assert_eq!(json(&job.to_json())["options"], serde_json::json!({"bitrate": "128k"}));
    }

    #[test]
    fn a_done_notice_round_trips() {
        let body = format!(r#"{{"video_fid": "{V}", "mp3_fid": "{M}", "username": "a@b.c"}}"#);
        let notice = Mp3Notice::decode(body.as_bytes()).unwrap();
        assert_eq!(notice.outcome, Conversion::Ready { mp3: M.parse().unwrap() });
        assert_eq!(notice.job.owner.as_str(), "a@b.c");
        assert_eq!(json(&notice.to_json()), serde_json::json!({"video_fid": V, "mp3_fid": M, "username": "a@b.c"}));
        let job = VideoJob::decode(JobMessage::new_video(V, "a@b.c").to_json().as_slice()).unwrap();
        let original = JobMessage { mp3_fid: Some(M.into()), ..JobMessage::new_video(V, "a@b.c") };
        assert_eq!(job.ready(M.parse().unwrap()).to_json(), original.to_json(), "byte for byte");
    }

    #[test]
    fn a_failure_notice_round_trips_and_unknown_reasons_are_internal() {
        let text = Failure::NoAudio.user_text();
        let body = format!(r#"{{"video_fid": "{V}", "mp3_fid": null, "username": "a@b.c", "error": "{text}"}}"#);
        let notice = Mp3Notice::decode(body.as_bytes()).unwrap();
        assert_eq!(notice.outcome, Conversion::Failed { failure: Failure::NoAudio });
        assert_eq!(json(&notice.to_json()), serde_json::json!({"video_fid": V, "mp3_fid": null, "username": "a@b.c", "error": text}));
        let leaked =
            format!(r#"{{"video_fid": "{V}", "mp3_fid": null, "username": "a@b.c", "error": "Connection refused (os error 111)"}}"#);
        assert_eq!(Mp3Notice::decode(leaked.as_bytes()).unwrap().outcome, Conversion::Failed { failure: Failure::Internal });
    }

    #[test]
    fn impossible_and_malformed_notices_are_refused_at_decode() {
        let neither = format!(r#"{{"video_fid": "{V}", "mp3_fid": null, "username": "a@b.c"}}"#);
        let e = Mp3Notice::decode(neither.as_bytes()).unwrap_err();
        assert!(matches!(e, DecodeError::Neither));
        assert_eq!(e.to_string(), "malformed message: neither mp3_fid nor error is set");
        let both = format!(r#"{{"video_fid": "{V}", "mp3_fid": "{M}", "username": "a@b.c", "error": "x"}}"#);
        let e = Mp3Notice::decode(both.as_bytes()).unwrap_err();
        assert!(matches!(e, DecodeError::Both));
        assert_eq!(e.to_string(), "malformed message: both mp3_fid and error are set");
        let bad_mp3 = format!(r#"{{"video_fid": "{V}", "mp3_fid": "abc", "username": "a@b.c"}}"#);
        assert!(matches!(Mp3Notice::decode(bad_mp3.as_bytes()), Err(DecodeError::Mp3Id(f)) if f == "abc"));
        let injected = format!(r#"{{"video_fid": "{V}", "mp3_fid": "{M}", "username": "a@b.c\r\nBcc: x@y.z"}}"#);
        let e = Mp3Notice::decode(injected.as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("invalid recipient address"), "{e}");
        let e = VideoJob::decode(br#"{"video_fid": "x", "mp3_fid": null, "username": "a@b.c"}"#).unwrap_err();
        assert_eq!(e.to_string(), r#"malformed message: video_fid "x" is not an id"#);
        assert!(VideoJob::decode(b"not json").unwrap_err().to_string().starts_with("malformed message: "));
    }
}
