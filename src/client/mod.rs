//! A client of a running `ledger` service, for the operator's commands: `ledger batch
//! create|show` ([`batch`]). It speaks the service's HTTP API ([`api`]) and WebSocket
//! ([`live`]) as any other client does, with a bearer token it never prints or logs; what
//! the operator sees is [`summary`] and [`progress`]. `main.rs` only parses the command
//! line and hands it to [`batch::run`]. `ledger verify` ([`verify`]) checks a downloaded
//! document against its manifest, with no account at all.

pub mod api;
pub mod batch;
pub mod live;
pub mod progress;
pub mod summary;
pub mod verify;
pub mod wire;
