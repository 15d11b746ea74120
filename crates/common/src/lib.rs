//! What two or more mp3converter services share: configuration loading, telemetry, shutdown,
//! queue messages and topology, the AMQP consumer loop, GridFS helpers, health endpoints, and
//! observability (Prometheus metrics, W3C trace context).

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
pub mod shutdown;
pub mod telemetry;
pub mod trace;

pub use config::{ConfigError, Env};
