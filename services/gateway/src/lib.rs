//! The gateway: the only public service. Forwards logins to auth, validates every protected
//! request through auth, streams uploads into GridFS and announces them on the video queue,
//! and streams mp3s back to their owners.

pub mod auth;
pub mod config;
pub mod download;
pub mod error;
pub mod jobs;
pub mod outbox;
pub mod quota;
pub mod sniff;
pub mod startup;
pub mod upload;
pub mod web;

pub use config::Config;
pub use startup::{AppState, Application};
