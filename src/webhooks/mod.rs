//! Webhooks (SPEC §12): programs are told when a ledger completes or is rejected, without
//! holding a WebSocket open. This module holds the parts every delivery needs, each usable
//! and tested on its own:
//!
//! - [`signature`]: signing per the Standard Webhooks specification (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,…`), the `whsec_` secrets;
//! - [`network`]: the HTTP client deliveries go out with ([`network::DeliveryClient`], the
//!   only way to send one) — `https` only, no private, loopback or link-local address (a
//!   host written as an address judged before any connection, a name judged by the
//!   addresses it resolves to at connect time, so DNS rebinding cannot slip past a check
//!   made earlier), no redirects, no proxy, answers read up to a bound
//!   ([`network::read_answer`]);
//! - [`retry`]: when a failed delivery is tried again (exponential, with jitter).
//!
//! What it must never do: put a secret into a log line, an error or `Debug` output; connect
//! to an address it refused by name; follow a redirect.

pub mod network;
pub mod retry;
pub mod signature;
