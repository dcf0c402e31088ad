//! Status and progress events (SPEC §5) and the per-ledger timeline (SPEC §3).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BatchCounts, BatchId, BatchStatus, LedgerId, MerchantId, Stage, Status};

/// A status change, published after the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// The ledger.
    #[schema(value_type = String, pattern = "^[1-9][0-9]{0,18}$")]
    pub ledger_id: LedgerId,
    /// Its merchant, for routing to authorised clients.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub merchant_id: MerchantId,
    /// The new status.
    pub status: Status,
    /// DRAFT or FINAL.
    pub stage: Stage,
    /// The version being produced or produced.
    pub version: u32,
    /// Lifetime processing attempts.
    pub attempt_count: u32,
    /// Set on REJECTED.
    #[schema(required = true)]
    pub error_code: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// Progress of a running job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressEvent {
    /// The ledger.
    #[schema(value_type = String, pattern = "^[1-9][0-9]{0,18}$")]
    pub ledger_id: LedgerId,
    /// Its merchant.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub merchant_id: MerchantId,
    /// FETCH, GENERATE, UPLOAD.
    pub phase: String,
    /// Rows done within the phase; never goes down within it.
    pub rows_done: u64,
    /// Rows in the phase when known.
    #[schema(required = true)]
    pub rows_total: Option<u64>,
    /// When it was measured.
    pub at: DateTime<Utc>,
}

/// Progress of a batch (SPEC §11): sent to its creator's sockets and to those of callers
/// who may read every merchant, at most a few times a second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchProgressEvent {
    /// The batch.
    #[schema(value_type = String, pattern = "^[1-9][0-9]{0,18}$")]
    pub batch_id: BatchId,
    /// Its status now.
    pub status: BatchStatus,
    /// Members so far.
    pub total: u64,
    /// Whether members are still being added.
    pub expanding: bool,
    /// Members by state, as `GET /batches/{id}` counts them.
    pub counts: BatchCounts,
    /// The creator's subject, for routing.
    pub created_by: String,
    /// When it was counted.
    pub at: DateTime<Utc>,
}

/// An event on the status bus, serialised as the wire JSON documented in docs/api.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event")]
pub enum Event {
    /// `ledger.status`.
    #[serde(rename = "ledger.status")]
    Status(StatusEvent),
    /// `ledger.progress`.
    #[serde(rename = "ledger.progress")]
    Progress(ProgressEvent),
    /// `batch.progress`.
    #[serde(rename = "batch.progress")]
    BatchProgress(BatchProgressEvent),
}

impl Event {
    /// The merchant a ledger's event belongs to; `None` for a batch's.
    pub fn merchant_id(&self) -> Option<&MerchantId> {
        match self {
            Event::Status(e) => Some(&e.merchant_id),
            Event::Progress(e) => Some(&e.merchant_id),
            Event::BatchProgress(_) => None,
        }
    }

    /// The ledger a ledger's event belongs to; `None` for a batch's.
    pub fn ledger_id(&self) -> Option<LedgerId> {
        match self {
            Event::Status(e) => Some(e.ledger_id),
            Event::Progress(e) => Some(e.ledger_id),
            Event::BatchProgress(_) => None,
        }
    }
}

/// One item of a ledger's timeline: a status change or a pipeline phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineItem {
    /// When.
    pub at: DateTime<Utc>,
    /// The attempt it belongs to (0 before the first claim).
    pub attempt: u32,
    /// Set for a status change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Set for a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Set for a pipeline phase: `FETCH_START`, `GENERATE_START`, `FETCH_DONE`,
    /// `GENERATE_DONE`, `UPLOAD_DONE`. Fetch and render stream together, so their phases
    /// overlap: `GENERATE_START` comes before `FETCH_DONE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Extra words on a phase (`1200 entries`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
