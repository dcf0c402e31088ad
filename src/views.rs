//! The JSON views of the resources (docs/data-model.md): how a ledger and a batch are written
//! on the wire. One definition serves every place they are written: the API's answers, and
//! the `data` of the webhook events the store records with a state change.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use crate::domain::{
    Batch, BatchCounts, BatchId, BatchStatus, Format, Ledger, LedgerType, Selection, Stage, Status,
};

/// An instant as the API writes it: RFC 3339 UTC with milliseconds.
pub fn millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// [`millis`] or `null`.
fn millis_or_null<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => millis(t, s),
        None => s.serialize_none(),
    }
}

/// The JSON view of a ledger (docs/data-model.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Ledger)]
pub struct LedgerView {
    /// Snowflake id, a decimal string.
    #[schema(pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")]
    pub id: String,
    /// The merchant.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "m_acme")]
    pub merchant_id: String,
    /// What the document contains.
    #[serde(rename = "type")]
    pub ledger_type: LedgerType,
    /// The period in canonical form (`2026`, `2026-Q3`, `2026-10`, `2026-W40`, `2026-10-15`).
    #[schema(example = "2026-10")]
    pub period: String,
    /// The IANA zone the period is cut in. A requested zone is shown from the start. Without
    /// one, the merchant's own zone is used, which only the source knows: it is `null` (also
    /// in the 202 of the create) until a worker has generated the ledger, since the API never
    /// waits for the source.
    #[schema(required = true, example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// The document format.
    pub format: Format,
    /// DRAFT while the period had not ended at generation time, FINAL after.
    pub stage: Stage,
    /// Where the job is.
    pub status: Status,
    /// 1, +1 on every regenerate.
    #[schema(minimum = 1)]
    pub version: u32,
    /// Lifetime count of processing attempts.
    pub attempt_count: u32,
    /// The last failure, if any.
    #[schema(required = true)]
    pub failure_reason: Option<FailureReasonView>,
    /// The newest completed file, if any.
    #[schema(required = true)]
    pub file: Option<crate::domain::FileInfo>,
    /// The subject (`sub`) that created the ledger.
    pub created_by: String,
    /// When it was created.
    #[serde(serialize_with = "millis")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "millis")]
    pub updated_at: DateTime<Utc>,
    /// When the last attempt was claimed.
    #[serde(serialize_with = "millis_or_null")]
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it last completed.
    #[serde(serialize_with = "millis_or_null")]
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was (softly) deleted.
    #[serde(serialize_with = "millis_or_null")]
    #[schema(required = true)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Why the last attempt failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FailureReason)]
pub struct FailureReasonView {
    /// `FETCH_DATA_ERROR`, `JOB_EXECUTION_FAILED` or `ENQUEUE_FAILED`.
    #[schema(example = "FETCH_DATA_ERROR")]
    pub error_code: String,
    /// Readable detail, e.g. the path of a bad field in the source.
    pub message: String,
    /// Whether a retry may succeed without a change of input.
    pub retryable: bool,
    /// When it failed.
    #[serde(serialize_with = "millis")]
    pub at: DateTime<Utc>,
}

/// The JSON view of a ledger (SPEC §3).
pub fn view(l: &Ledger) -> LedgerView {
    LedgerView {
        id: l.id.to_string(),
        merchant_id: l.merchant_id.to_string(),
        ledger_type: l.ledger_type,
        period: l.period.to_string(),
        timezone: l
            .timezone
            .or(l.requested_timezone)
            .map(|t| t.name().to_owned()),
        format: l.format,
        stage: l.stage,
        status: l.status,
        version: l.version,
        attempt_count: l.attempt_count,
        failure_reason: l.failure_reason.as_ref().map(|f| FailureReasonView {
            error_code: f.error_code.clone(),
            message: f.message.clone(),
            retryable: f.retryable,
            at: f.at,
        }),
        file: l.file.clone(),
        created_by: l.created_by.clone(),
        created_at: l.created_at,
        updated_at: l.updated_at,
        started_at: l.started_at,
        completed_at: l.completed_at,
        deleted_at: l.deleted_at,
    }
}

/// A batch and its members counted by state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Batch)]
pub struct BatchBody {
    /// The batch id (a decimal string).
    #[schema(value_type = String, example = "383687767063789568")]
    pub id: BatchId,
    /// `RUNNING` until members stop being added and every one is COMPLETED or REJECTED;
    /// then `COMPLETED`, or `COMPLETED_WITH_ERRORS` when any is REJECTED.
    pub status: BatchStatus,
    /// Members so far.
    pub total: u64,
    /// Each member once: one that already existed under `EXISTING`, every other under its
    /// status.
    pub counts: BatchCounts,
    /// Whether members are still being added.
    pub expanding: bool,
    /// What the documents contain.
    #[serde(rename = "type")]
    pub ledger_type: LedgerType,
    /// The period, canonical.
    pub period: String,
    /// The formats.
    pub formats: Vec<Format>,
    /// The zone asked for; `null`: each merchant's own.
    pub timezone: Option<String>,
    /// `"*"` when the batch covers every merchant the source lists; otherwise `null` (the
    /// merchants are its ledgers' merchants).
    pub merchants: Option<String>,
    /// Merchants left out because the creator may not create for them.
    pub skipped: u64,
    /// The creator's subject.
    pub created_by: String,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it last finished; `null` while RUNNING.
    pub finished_at: Option<DateTime<Utc>>,
}

/// The body of a batch with the counts `counts` in `status`, finished at `finished_at`.
pub fn batch_body(
    batch: &Batch,
    status: BatchStatus,
    counts: BatchCounts,
    finished_at: Option<DateTime<Utc>>,
) -> BatchBody {
    BatchBody {
        id: batch.id,
        status,
        total: counts.total(),
        counts,
        expanding: batch.expanding,
        ledger_type: batch.ledger_type,
        period: batch.period.to_string(),
        formats: batch.formats.clone(),
        timezone: batch.timezone.map(|t| t.name().to_owned()),
        merchants: matches!(batch.merchants, Selection::All).then(|| "*".to_owned()),
        skipped: batch.skipped,
        created_by: batch.created_by.clone(),
        created_at: batch.created_at,
        finished_at,
    }
}
