//! The message both queues carry (the original's format, plus an optional failure reason).

use serde::{Deserialize, Serialize};

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
}
