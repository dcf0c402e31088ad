//! Decoding of database rows into domain values, for both SQL engines. The row structs
//! hold only types that SQLite and PostgreSQL decode identically (`i64`, `String`, `bool`
//! and their `Option`s: both schemas store ids, counters and millisecond times as 64-bit
//! integers), so one [`sqlx::FromRow`] derive serves both; the `TryFrom` conversions turn
//! values the domain does not accept into [`StoreError::Corrupt`].

use chrono::{DateTime, TimeZone, Utc};
use sqlx::FromRow;

use super::{IdempotencyRecord, StoreError, StoredFile};
use crate::domain::{
    Batch, BatchCounts, BatchId, BatchStatus, Cadence, FailureReason, FileInfo, Format, Ledger,
    LedgerId, LedgerType, MerchantId, Period, Schedule, Selection, Stage, Status, TimelineItem,
    Timezone, batch::Run,
};

pub(super) fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

pub(super) fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(time).transpose()
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

fn u32_of(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(what, &v.to_string()))
}

/// A column the query's joins guarantee when another one is set (a NULL means a bug).
fn present<T>(v: Option<T>, what: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| StoreError::Corrupt(format!("{what} is missing")))
}

/// A ledger row with its newest file joined in (`f_*`, all NULL when it has none): the
/// columns of `store::sql`'s `LEDGER_COLUMNS`.
#[derive(Debug, FromRow)]
pub(super) struct LedgerRow {
    id: i64,
    merchant_id: String,
    #[sqlx(rename = "type")]
    ledger_type: String,
    period: String,
    /// `''` = the merchant's own zone.
    requested_timezone: String,
    timezone: Option<String>,
    format: String,
    stage: String,
    status: String,
    version: i64,
    attempt_count: i64,
    lease_until: Option<i64>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    /// INTEGER in SQLite, BOOLEAN in PostgreSQL: both decode as `bool`.
    failure_retryable: Option<bool>,
    failure_at: Option<i64>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    deleted_at: Option<i64>,
    f_version: Option<i64>,
    f_content_type: Option<String>,
    f_size_bytes: Option<i64>,
    f_sha256: Option<String>,
    f_file_name: Option<String>,
    f_shredded_at: Option<i64>,
}

/// The columns of a ledger row in the order of `store::sql`'s `LEDGER_COLUMNS` (and of the
/// fields of [`LedgerRow`]), which [`LedgerRow::from_sqlite`] reads by position (a test
/// holds the query to it).
#[cfg(test)]
pub(super) const LEDGER_ROW_COLUMNS: [&str; 28] = [
    "id",
    "merchant_id",
    "type",
    "period",
    "requested_timezone",
    "timezone",
    "format",
    "stage",
    "status",
    "version",
    "attempt_count",
    "lease_until",
    "failure_code",
    "failure_message",
    "failure_retryable",
    "failure_at",
    "created_by",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "deleted_at",
    "f_version",
    "f_content_type",
    "f_size_bytes",
    "f_sha256",
    "f_file_name",
    "f_shredded_at",
];

impl LedgerRow {
    /// The row as SQLite gives it to a read on the caller's thread ([`super::inline`]):
    /// the columns of `LEDGER_ROW_COLUMNS`, by position (a look-up by name scans every
    /// column name for each field).
    pub(super) fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            merchant_id: row.get(1)?,
            ledger_type: row.get(2)?,
            period: row.get(3)?,
            requested_timezone: row.get(4)?,
            timezone: row.get(5)?,
            format: row.get(6)?,
            stage: row.get(7)?,
            status: row.get(8)?,
            version: row.get(9)?,
            attempt_count: row.get(10)?,
            lease_until: row.get(11)?,
            failure_code: row.get(12)?,
            failure_message: row.get(13)?,
            failure_retryable: row.get(14)?,
            failure_at: row.get(15)?,
            created_by: row.get(16)?,
            created_at: row.get(17)?,
            updated_at: row.get(18)?,
            started_at: row.get(19)?,
            completed_at: row.get(20)?,
            deleted_at: row.get(21)?,
            f_version: row.get(22)?,
            f_content_type: row.get(23)?,
            f_size_bytes: row.get(24)?,
            f_sha256: row.get(25)?,
            f_file_name: row.get(26)?,
            f_shredded_at: row.get(27)?,
        })
    }
}

impl TryFrom<LedgerRow> for Ledger {
    type Error = StoreError;

    fn try_from(row: LedgerRow) -> Result<Self, StoreError> {
        let failure_reason = match row.failure_code {
            Some(error_code) => Some(FailureReason {
                error_code,
                message: row.failure_message.unwrap_or_default(),
                retryable: row.failure_retryable.unwrap_or(false),
                at: time(row.failure_at.unwrap_or(0))?,
            }),
            None => None,
        };
        let file = match row.f_version {
            Some(v) => Some(FileInfo {
                version: u32_of(v, "file version")?,
                content_type: present(row.f_content_type, "file content_type")?,
                size_bytes: u64::try_from(present(row.f_size_bytes, "file size_bytes")?)
                    .unwrap_or(0),
                sha256: present(row.f_sha256, "file sha256")?,
                file_name: present(row.f_file_name, "file file_name")?,
                shredded_at: opt_time(row.f_shredded_at)?,
            }),
            None => None,
        };
        let tz = |name: &str| Timezone::parse(name).map_err(|_| corrupt("timezone", name));
        let requested = &row.requested_timezone;
        Ok(Ledger {
            id: LedgerId::from_i64(row.id),
            merchant_id: MerchantId::parse(&row.merchant_id)
                .map_err(|_| corrupt("merchant", &row.merchant_id))?,
            ledger_type: LedgerType::parse(&row.ledger_type)
                .ok_or_else(|| corrupt("type", &row.ledger_type))?,
            period: Period::parse(&row.period).map_err(|_| corrupt("period", &row.period))?,
            requested_timezone: if requested.is_empty() {
                None
            } else {
                Some(tz(requested)?)
            },
            timezone: row.timezone.as_deref().map(tz).transpose()?,
            format: Format::parse(&row.format).ok_or_else(|| corrupt("format", &row.format))?,
            stage: Stage::parse(&row.stage).ok_or_else(|| corrupt("stage", &row.stage))?,
            status: Status::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?,
            version: u32_of(row.version, "version")?,
            attempt_count: u32_of(row.attempt_count, "attempt_count")?,
            failure_reason,
            file,
            created_by: row.created_by,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
            started_at: opt_time(row.started_at)?,
            completed_at: opt_time(row.completed_at)?,
            deleted_at: opt_time(row.deleted_at)?,
            lease_until: opt_time(row.lease_until)?,
        })
    }
}

/// A `ledger_events` row: `at, attempt, status, error_code, phase, detail`.
#[derive(Debug, FromRow)]
pub(super) struct EventRow {
    at: i64,
    attempt: i64,
    status: Option<String>,
    error_code: Option<String>,
    phase: Option<String>,
    detail: Option<String>,
}

impl TryFrom<EventRow> for TimelineItem {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        Ok(TimelineItem {
            at: time(row.at)?,
            attempt: u32_of(row.attempt, "attempt")?,
            status: row
                .status
                .map(|s| Status::parse(&s).ok_or_else(|| corrupt("status", &s)))
                .transpose()?,
            error_code: row.error_code,
            phase: row.phase,
            detail: row.detail,
        })
    }
}

/// A status change joined with its ledger: `seq, ledger_id, merchant_id, at, attempt,
/// status, error_code, stage, version`.
#[derive(Debug, FromRow)]
pub(super) struct StatusEventRow {
    seq: i64,
    ledger_id: i64,
    merchant_id: String,
    at: i64,
    attempt: i64,
    status: String,
    error_code: Option<String>,
    stage: String,
    version: i64,
}

/// The SELECT list and joins of [`StatusEventRow`].
pub(super) const STATUS_EVENT_SELECT: &str = "SELECT e.seq, e.ledger_id, l.merchant_id, e.at, \
     e.attempt, e.status, e.error_code, l.stage, l.version \
     FROM ledger_events e JOIN ledgers l ON l.id = e.ledger_id";

impl TryFrom<StatusEventRow> for (i64, crate::domain::StatusEvent) {
    type Error = StoreError;

    fn try_from(row: StatusEventRow) -> Result<Self, StoreError> {
        Ok((
            row.seq,
            crate::domain::StatusEvent {
                ledger_id: crate::domain::LedgerId::from_i64(row.ledger_id),
                merchant_id: crate::domain::MerchantId::parse(&row.merchant_id)
                    .map_err(|_| corrupt("merchant_id", &row.merchant_id))?,
                status: Status::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?,
                stage: Stage::parse(&row.stage).ok_or_else(|| corrupt("stage", &row.stage))?,
                version: u32_of(row.version, "version")?,
                attempt_count: u32_of(row.attempt, "attempt")?,
                error_code: row.error_code,
                at: time(row.at)?,
            },
        ))
    }
}

/// A `ledger_files` row: `version, content_type, size_bytes, sha256, file_name, object_key,
/// header_sha256, manifest`.
#[derive(Debug, FromRow)]
pub(super) struct FileRow {
    version: i64,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    file_name: String,
    object_key: String,
    header_sha256: Option<String>,
    manifest: Option<String>,
    key_id: Option<String>,
    shredded_at: Option<i64>,
    shred_reason: Option<String>,
}

impl TryFrom<FileRow> for StoredFile {
    type Error = StoreError;

    fn try_from(row: FileRow) -> Result<Self, StoreError> {
        Ok(StoredFile {
            info: FileInfo {
                version: u32_of(row.version, "version")?,
                content_type: row.content_type,
                size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
                sha256: row.sha256,
                file_name: row.file_name,
                shredded_at: opt_time(row.shredded_at)?,
            },
            object_key: row.object_key,
            header_sha256: row.header_sha256,
            manifest: row.manifest,
            key_id: row.key_id,
            shred_reason: row.shred_reason,
        })
    }
}

/// An `idempotency_keys` row: `request_hash, ledger_id, status_code, body` (the subject and
/// key are what the query looked up).
#[derive(Debug, FromRow)]
pub(super) struct IdempotencyRow {
    request_hash: String,
    ledger_id: i64,
    status_code: i64,
    body: String,
}

impl IdempotencyRow {
    /// The record of the key `key` of `subject`.
    pub(super) fn into_record(self, subject: &str, key: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            subject: subject.to_owned(),
            key: key.to_owned(),
            request_hash: self.request_hash,
            ledger_id: LedgerId::from_i64(self.ledger_id),
            status_code: u16::try_from(self.status_code).unwrap_or(500),
            body: self.body,
        }
    }
}

/// The columns of a batch row that [`BatchRow`] decodes.
pub(super) const BATCH_COLUMNS: &str = "b.id, b.created_by, b.merchants, b.type, b.period, \
    b.formats, b.timezone, b.expanding, b.expand_cursor, b.skipped, b.status, b.total, \
    b.n_pending, b.n_processing, b.n_completed, b.n_rejected, b.n_existing, b.progress_seq, \
    b.created_at, b.finished_at, b.skipped_ids, b.schedule_id, b.delay_ms, b.pass_from, \
    b.pass_to, b.pass_at";

/// A batch row: the columns of [`BATCH_COLUMNS`].
#[derive(Debug, FromRow)]
pub(super) struct BatchRow {
    id: i64,
    created_by: String,
    merchants: String,
    #[sqlx(rename = "type")]
    ledger_type: String,
    period: String,
    formats: String,
    timezone: Option<String>,
    /// INTEGER in SQLite, BOOLEAN in PostgreSQL: both decode as `bool`.
    expanding: bool,
    pub(super) expand_cursor: Option<String>,
    skipped: i64,
    status: String,
    pub(super) total: i64,
    n_pending: i64,
    n_processing: i64,
    n_completed: i64,
    n_rejected: i64,
    n_existing: i64,
    pub(super) progress_seq: i64,
    created_at: i64,
    finished_at: Option<i64>,
    skipped_ids: Option<String>,
    schedule_id: Option<i64>,
    delay_ms: Option<i64>,
    pass_from: Option<i64>,
    pass_to: Option<i64>,
    pass_at: Option<i64>,
}

fn count_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(what, &v.to_string()))
}

impl TryFrom<BatchRow> for Batch {
    type Error = StoreError;

    fn try_from(row: BatchRow) -> Result<Self, StoreError> {
        Ok(Batch {
            id: BatchId::from_i64(row.id),
            created_by: row.created_by,
            merchants: Selection::from_stored(&row.merchants)
                .map_err(|e| StoreError::Corrupt(format!("batch {}: {e}", row.id)))?,
            ledger_type: LedgerType::parse(&row.ledger_type)
                .ok_or_else(|| corrupt("type", &row.ledger_type))?,
            period: Period::parse(&row.period).map_err(|_| corrupt("period", &row.period))?,
            formats: crate::domain::batch::formats_from_stored(&row.formats)
                .map_err(|e| StoreError::Corrupt(format!("batch {}: {e}", row.id)))?,
            timezone: row
                .timezone
                .as_deref()
                .map(|name| Timezone::parse(name).map_err(|_| corrupt("timezone", name)))
                .transpose()?,
            expanding: row.expanding,
            skipped: count_of(row.skipped, "skipped")?,
            status: row
                .status
                .parse::<BatchStatus>()
                .map_err(|_| corrupt("batch status", &row.status))?,
            counts: BatchCounts {
                pending: count_of(row.n_pending, "count")?,
                processing: count_of(row.n_processing, "count")?,
                completed: count_of(row.n_completed, "count")?,
                rejected: count_of(row.n_rejected, "count")?,
                existing: count_of(row.n_existing, "count")?,
            },
            created_at: time(row.created_at)?,
            finished_at: opt_time(row.finished_at)?,
            skipped_ids: match row.skipped_ids.as_deref() {
                None => Vec::new(),
                Some(raw) => match Selection::from_stored(raw) {
                    Ok(Selection::Only(ids)) => ids,
                    _ => return Err(corrupt("skipped merchants", raw)),
                },
            },
            run: match row.schedule_id {
                None => None,
                Some(schedule_id) => Some(Run {
                    schedule_id,
                    delay: std::time::Duration::from_millis(
                        u64::try_from(row.delay_ms.unwrap_or(0)).unwrap_or(0),
                    ),
                    pass_from: opt_time(row.pass_from)?,
                    pass_to: opt_time(row.pass_to)?,
                    pass_at: opt_time(row.pass_at)?,
                }),
            },
        })
    }
}

/// A member of a batch: its ledger row and whether it existed before the batch.
#[derive(Debug, FromRow)]
pub(super) struct MemberRow {
    #[sqlx(flatten)]
    pub(super) ledger: LedgerRow,
    /// INTEGER in SQLite, BOOLEAN in PostgreSQL: both decode as `bool`.
    pub(super) existing: bool,
}

/// The columns of a schedule row that [`ScheduleRow`] decodes.
pub(super) const SCHEDULE_COLUMNS: &str = "s.id, s.created_by, s.merchants, s.type, s.formats, \
    s.cadence, s.delay_ms, s.from_period, s.paused, s.next_period, s.zones, s.created_at, \
    s.deleted_at";

/// A schedule row: the columns of [`SCHEDULE_COLUMNS`].
#[derive(Debug, FromRow)]
pub(super) struct ScheduleRow {
    id: i64,
    created_by: String,
    merchants: String,
    #[sqlx(rename = "type")]
    ledger_type: String,
    formats: String,
    cadence: String,
    delay_ms: i64,
    from_period: Option<String>,
    /// INTEGER in SQLite, BOOLEAN in PostgreSQL: both decode as `bool`.
    paused: bool,
    next_period: String,
    zones: Option<String>,
    created_at: i64,
    deleted_at: Option<i64>,
}

impl TryFrom<ScheduleRow> for Schedule {
    type Error = StoreError;

    fn try_from(row: ScheduleRow) -> Result<Self, StoreError> {
        let period = |raw: &str| Period::parse(raw).map_err(|_| corrupt("period", raw));
        let zones: Vec<String> = match row.zones.as_deref() {
            None => Vec::new(),
            Some(raw) => serde_json::from_str(raw).map_err(|_| corrupt("zones", raw))?,
        };
        Ok(Schedule {
            id: row.id,
            created_by: row.created_by,
            merchants: Selection::from_stored(&row.merchants)
                .map_err(|e| StoreError::Corrupt(format!("schedule {}: {e}", row.id)))?,
            ledger_type: LedgerType::parse(&row.ledger_type)
                .ok_or_else(|| corrupt("type", &row.ledger_type))?,
            formats: crate::domain::batch::formats_from_stored(&row.formats)
                .map_err(|e| StoreError::Corrupt(format!("schedule {}: {e}", row.id)))?,
            cadence: Cadence::parse(&row.cadence)
                .ok_or_else(|| corrupt("cadence", &row.cadence))?,
            delay: std::time::Duration::from_millis(count_of(row.delay_ms, "delay")?),
            from: row.from_period.as_deref().map(period).transpose()?,
            paused: row.paused,
            next_period: period(&row.next_period)?,
            zones: zones
                .iter()
                .map(|z| Timezone::parse(z).map_err(|_| corrupt("timezone", z)))
                .collect::<Result<_, _>>()?,
            created_at: time(row.created_at)?,
            deleted_at: opt_time(row.deleted_at)?,
        })
    }
}
