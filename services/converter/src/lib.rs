//! The converter: consumes the video queue, turns each video's audio track into an MP3 with
//! ffmpeg, stores it in GridFS and announces it on the mp3 queue.

pub mod config;
pub mod ffmpeg;
pub mod job;
pub mod startup;

pub use config::Config;
pub use startup::Application;
