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

#[cfg(test)]
mod tests {
    use super::*;

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
