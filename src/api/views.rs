//! The JSON views of the API's pages and timelines; a ledger's own view is
//! [`crate::views`]'s, shared with the webhook events.

use serde::Serialize;
use utoipa::ToSchema;

pub use crate::views::{FailureReasonView, LedgerView, view};

/// A page of ledgers, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LedgerPage)]
pub struct LedgerPage {
    /// At most `limit` ledgers.
    pub items: Vec<LedgerView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
}

/// A ledger's timeline, oldest first: one item per status change and per pipeline phase.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    /// The items.
    pub items: Vec<crate::domain::TimelineItem>,
}
