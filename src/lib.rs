//! `ledger`: merchant ledgers generated asynchronously, encrypted at rest, downloadable only
//! by those allowed to. [`app::run`] starts the configured roles; `main.rs` only parses the
//! command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod client;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod keys;
pub mod manifest;
pub mod notify;
pub mod output;
pub mod queue;
pub mod ready;
pub mod render;
pub mod source;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod usecases;
pub mod vault;
pub mod views;
pub mod webhooks;
pub mod worker;

pub use app::run;
