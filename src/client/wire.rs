//! The JSON the client reads from the service (docs/api.md): a batch, a page of its
//! ledgers, a `batch.progress` event and the error body. Only what the commands use is
//! typed; what is shown as the service said it (type, formats, merchants) stays a string,
//! so a client never refuses an answer of a newer service over a value it only prints.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::{BatchCounts, BatchId, BatchStatus};

/// A batch as `POST /batches` and `GET /batches/{id}` answer it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// RUNNING, COMPLETED or COMPLETED_WITH_ERRORS.
    pub status: BatchStatus,
    /// Members so far.
    pub total: u64,
    /// Members by state.
    pub counts: BatchCounts,
    /// Whether members are still being added.
    #[serde(default)]
    pub expanding: bool,
    /// STATEMENT or SUMMARY.
    #[serde(rename = "type")]
    pub ledger_type: String,
    /// The period, canonical.
    pub period: String,
    /// The formats.
    pub formats: Vec<String>,
    /// The zone asked for; `None`: each merchant's own.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `"*"` for every merchant the source lists; `None` for named merchants.
    #[serde(default)]
    pub merchants: Option<String>,
    /// Merchants left out because the creator may not create for them.
    #[serde(default)]
    pub skipped: u64,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it last finished; `None` while RUNNING.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The body as the service sent it (its fields in its order), for `--json`.
    #[serde(skip)]
    pub raw: String,
}

impl Batch {
    /// Reads a batch from the body `json`, keeping the body.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        let mut batch: Batch = serde_json::from_slice(json)?;
        batch.raw = String::from_utf8_lossy(json).trim().to_owned();
        Ok(batch)
    }

    /// Takes the counts and status of a `batch.progress` event of this batch. The raw JSON
    /// is left as it was: `--json` prints a body read after the batch ended.
    pub fn apply(&mut self, event: &BatchProgress) {
        self.status = event.status;
        self.total = event.total;
        self.counts = event.counts;
        if let Some(expanding) = event.expanding {
            self.expanding = expanding;
        }
    }

    /// Members that will not change any more by themselves: COMPLETED, REJECTED, and those
    /// that existed before the batch (counted under EXISTING whatever their status).
    pub fn settled(&self) -> u64 {
        self.counts.completed + self.counts.rejected + self.counts.existing
    }
}

/// A `batch.progress` event of the WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchProgress {
    /// The batch.
    pub batch_id: BatchId,
    /// Its status now.
    pub status: BatchStatus,
    /// Members so far.
    pub total: u64,
    /// Whether members are still being added (absent from services before it was sent).
    #[serde(default)]
    pub expanding: Option<bool>,
    /// Members by state.
    pub counts: BatchCounts,
}

/// A ledger of a batch (`GET /batches/{id}/ledgers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchLedger {
    /// The ledger id.
    pub id: String,
    /// Its merchant.
    pub merchant_id: String,
    /// Its format.
    pub format: String,
    /// PENDING, PROCESSING, COMPLETED or REJECTED.
    pub status: String,
    /// Why its last attempt failed, if one did.
    #[serde(default)]
    pub failure_reason: Option<FailureReason>,
    /// Whether it existed before the batch reached it.
    #[serde(default)]
    pub existing: bool,
}

/// Why a ledger's last attempt failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReason {
    /// `FETCH_DATA_ERROR`, `JOB_EXECUTION_FAILED` or `ENQUEUE_FAILED`.
    pub error_code: String,
    /// What went wrong, readable.
    #[serde(default)]
    pub message: String,
}

/// A page of a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// The error body every API error has: `{"error":{"code","message","requestId",…}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` member of an error body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// The stable code, e.g. `FORBIDDEN`.
    pub code: String,
    /// Readable explanation.
    #[serde(default)]
    pub message: String,
    /// The request's id, for the service's logs.
    #[serde(default)]
    pub request_id: Option<String>,
    /// VALIDATION_ERROR: the field that is wrong.
    #[serde(default)]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_batch_keeps_its_json_and_takes_progress() {
        let raw = serde_json::to_vec(&json!({
            "id": "383687767063789568", "status": "RUNNING", "total": 3,
            "counts": {"PENDING": 1, "PROCESSING": 1, "COMPLETED": 1, "REJECTED": 0, "EXISTING": 0},
            "expanding": false, "type": "STATEMENT", "period": "2026-10", "formats": ["CSV"],
            "timezone": null, "merchants": null, "skipped": 0, "createdBy": "ops",
            "createdAt": "2026-11-01T10:00:00Z", "finishedAt": null, "newField": 1
        }))
        .unwrap();
        let mut batch = Batch::from_json(&raw).unwrap();
        assert_eq!(
            batch.raw.as_bytes(),
            raw,
            "unknown fields are kept for --json"
        );
        assert_eq!(batch.settled(), 1);
        let event: BatchProgress = serde_json::from_value(json!({
            "event": "batch.progress", "batchId": "383687767063789568", "status": "COMPLETED",
            "total": 3, "createdBy": "ops", "at": "2026-11-01T10:00:05Z",
            "counts": {"PENDING": 0, "PROCESSING": 0, "COMPLETED": 2, "REJECTED": 0, "EXISTING": 1}
        }))
        .unwrap();
        batch.apply(&event);
        assert_eq!(batch.status, BatchStatus::Completed);
        assert_eq!(batch.settled(), 3);
    }
}
