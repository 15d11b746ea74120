//! The converter: consumes the video queue, turns each video's audio track into an MP3 with
//! ffmpeg, stores it in GridFS and announces it on the mp3 queue.
//!
//! # Layout
//!
//! * `startup`: [`Application`], the consumer service (`common::consumer`) around the handler.
//! * `job`: the handler: one `VideoJob` in, the mp3 stored (`common::mp3s`) and an
//!   `Mp3Notice` out, or a failure notice once the message is dead-lettered.
//! * `ffmpeg`: the one place ffprobe and ffmpeg are run (typed errors, timeouts, kill on drop).
//! * `config` ([`Config`]).

mod config;
mod ffmpeg;
mod job;
mod startup;

pub use config::Config;
pub use startup::Application;
