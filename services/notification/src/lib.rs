//! The notifier: consumes the mp3 queue and emails each owner the id of their mp3 (or why
//! their video could not be converted). Each message yields at most one email.

pub mod config;
pub mod mail;
pub mod startup;

pub use config::Config;
pub use startup::Application;
