//! The integration suite: one binary, every test against a real server on a port-0 listener
//! with its own data dir, database and source directory, so tests run in parallel.

mod helpers;

mod api_errors;
mod batches;
mod browser;
mod cli;
mod console;
mod deploy;
mod documents;
mod keys;
mod lifecycle;
mod live;
mod manifests;
mod memory;
mod openapi;
mod ops;
mod outages;
mod production;
mod recovery;
mod schedules;
mod security;
mod tls;
mod webhooks;
