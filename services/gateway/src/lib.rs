//! The gateway: the only public service. Forwards logins to auth, validates every protected
//! request through auth, streams uploads into GridFS and announces them on the video queue,
//! and streams mp3s back to their owners.
//!
//! # Layout
//!
//! * `startup`: [`Application`] (bind, run until stopped, background sweeps) and the one
//!   router that merges every area's `router()`.
//! * `state`: [`AppState`], the clients and settings every handler shares.
//! * Areas, each with its `router()`: `auth` (`POST /login`, and the `AuthUser` extractor),
//!   `upload` (`POST /upload`; with `sniff`, the container check, and `quota`), `download`
//!   (`GET /download`), [`jobs`] (`/jobs...`: list, state, events, delete, signed links,
//!   retention), `web` (the HTML page and its session).
//! * [`outbox`]: announces videos whose upload never published its message.
//! * `config` ([`Config`]) and `error` (the one error type and its responses).
//!
//! The stores live in `common` (`videos`, `mp3s`, `jobs`); `jobs` and `outbox` are public
//! for the tests that run their sweeps.

mod auth;
mod config;
mod download;
mod error;
pub mod jobs;
pub mod outbox;
mod quota;
mod sniff;
mod startup;
mod state;
mod upload;
mod web;

pub use config::Config;
pub use startup::Application;
pub use state::AppState;
