//! The auth service: `POST /login` (HTTP Basic -> JWT) and `POST /validate` (Bearer -> claims),
//! backed by MySQL with argon2id password hashes.
//!
//! # Layout
//!
//! * `startup`: [`Application`] (bind, run until stopped) and the router.
//! * `routes`: the two handlers, with the login rate limit (`ratelimit`, per address and per
//!   account) in front of the password check (`password`, argon2id off the runtime).
//! * `token`: issuing and checking the HS256 JWT; `generations`: whether a token was revoked
//!   since (its account's token generation, read from MySQL and kept for a second).
//! * `schema`: the sqlx migrations (`migrations/`), applied at start ([`migrate`] for tests).
//! * [`users`]: the `user` table, and the `auth user ...` command line that manages it.
//! * `config` ([`Config`]) and `error` (the one error type and its responses).

mod config;
mod error;
mod generations;
mod password;
mod ratelimit;
mod routes;
mod schema;
mod startup;
mod token;
pub mod users;

pub use config::Config;
pub use schema::migrate;
pub use startup::Application;
