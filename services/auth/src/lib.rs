//! The auth service: `POST /login` (HTTP Basic -> JWT) and `POST /validate` (Bearer -> claims),
//! backed by MySQL with argon2id password hashes.

pub mod config;
pub mod error;
pub mod password;
pub mod ratelimit;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod token;
pub mod users;

pub use config::Config;
pub use schema::migrate;
pub use startup::Application;
