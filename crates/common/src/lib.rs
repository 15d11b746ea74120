//! What two or more mp3converter services share.
//!
//! # Layout
//!
//! * What travels: [`message`] (the queues' wire document and the typed [`message::VideoJob`]
//!   and [`message::Mp3Notice`] it decodes into), [`ids`] (`VideoId`, `Mp3Id`), [`email`],
//!   [`claims`] (the JWT's claims).
//! * The stores, one module each: [`videos`] and [`mp3s`] (GridFS files with typed metadata,
//!   over the [`gridfs`] helpers), [`jobs`] (the state of every upload).
//! * Queues: [`amqp`] (connection, topology, confirmed publishing) and [`consumer`] (the
//!   loop the converter and the notifier run: decode, handle, retry, dead-letter).
//! * Running a service: [`config`] ([`Env`] and the shared settings), [`telemetry`],
//!   [`shutdown`], [`http`] (serving with tracing), [`health`], [`metrics`], [`trace`] (W3C
//!   trace context across HTTP and AMQP), [`links`] (signed download links).

pub mod amqp;
pub mod claims;
pub mod config;
pub mod consumer;
pub mod email;
pub mod gridfs;
pub mod health;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod links;
pub mod message;
pub mod metrics;
pub mod mp3s;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
pub mod videos;

pub use config::{ConfigError, Env};
