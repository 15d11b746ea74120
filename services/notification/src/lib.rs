//! The notifier: consumes the mp3 queue and emails each owner the id of their mp3 (or why
//! their video could not be converted). Each message yields at most one email.
//!
//! # Layout
//!
//! * `startup`: [`Application`], the consumer service (`common::consumer`) around the handler.
//! * `mail`: the handler: one `Mp3Notice` in, one mail composed and sent at most once (a
//!   claim per mail key in the sent-mail log).
//! * `config` ([`Config`]).

mod config;
mod mail;
mod startup;

pub use config::Config;
pub use startup::Application;
