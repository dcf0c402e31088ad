//! The ledger job and its state machine. The transition table below is the only place that
//! decides which status change is legal and which error code a refused one gives; the API,
//! the worker and the recovery sweep all ask it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{InvalidInput, LedgerId, MerchantId, Period, Timezone};

// `$wire:tt`, not `:literal`: a `literal` fragment reaches the `ToSchema` derive wrapped in
// an invisible group, which it ignores, and the schema's enum said `Pending` instead of
// `PENDING`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the wire name exactly.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// What the document contains.
    LedgerType {
        /// Every entry with a running balance.
        Statement = "STATEMENT",
        /// Totals per day and entry type.
        Summary = "SUMMARY",
    }
);

wire_enum!(
    /// The document format.
    Format {
        /// A4 PDF.
        Pdf = "PDF",
        /// RFC 4180 CSV, UTF-8.
        Csv = "CSV",
        /// Office Open XML workbook.
        Xlsx = "XLSX",
    }
);

impl Format {
    /// The file extension, without a dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }

    /// The media type served on download.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

wire_enum!(
    /// Whether the period had ended when the document was generated.
    Stage {
        /// The period had not ended: may be regenerated.
        Draft = "DRAFT",
        /// Generated after the period ended: immutable.
        Final = "FINAL",
    }
);

wire_enum!(
    /// Where a job is in its life.
    Status {
        /// Stored and queued, not yet claimed.
        Pending = "PENDING",
        /// Claimed by a worker holding a lease.
        Processing = "PROCESSING",
        /// A file was produced.
        Completed = "COMPLETED",
        /// Failed; waits for a retry.
        Rejected = "REJECTED",
    }
);

/// Everything that can move a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A worker takes a queued job.
    Claim,
    /// A worker finished and uploaded the file.
    Complete,
    /// A worker failed the job.
    Fail,
    /// The queue refused the job at creation or retry.
    EnqueueFailed,
    /// A user asks to process a rejected job again.
    Retry,
    /// A user asks for a new version of a draft.
    Regenerate,
    /// A user deletes the ledger (soft).
    Delete,
    /// The sweep found an expired lease and puts the job back.
    Requeue,
    /// The sweep gives up on a job that stalled too often.
    Abandon,
    /// A worker shutting down gives its job back.
    Release,
    /// A worker extends its lease or records a phase: only while it holds the job.
    Renew,
    /// The sweep re-enqueues a job nobody claimed in time.
    Redeliver,
}

impl Action {
    /// Every action.
    pub const ALL: &'static [Action] = &[
        A::Claim,
        A::Complete,
        A::Fail,
        A::EnqueueFailed,
        A::Retry,
        A::Regenerate,
        A::Delete,
        A::Requeue,
        A::Abandon,
        A::Release,
        A::Renew,
        A::Redeliver,
    ];

    /// The `(from, to)` status changes `self` makes at every stage, in status order, as
    /// [`Status::apply`] decides them: what a set-based update may test without reading the
    /// stage (the job store's conditional updates are built from this).
    pub fn transitions(self) -> Vec<(Status, Status)> {
        Status::ALL
            .iter()
            .filter_map(|&from| {
                let mut to = Stage::ALL.iter().map(|&stage| from.apply(self, stage).ok());
                let first = to.next().flatten()?;
                to.all(|t| t == Some(first)).then_some((from, first))
            })
            .collect()
    }
}

/// A refused transition, with the stable error code the API returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TransitionError {
    /// `JOB_IN_PROGRESS`, `INVALID_STATE`, `LEDGER_FINAL`.
    pub code: &'static str,
    /// Readable explanation.
    pub message: &'static str,
}

const IN_PROGRESS: TransitionError = TransitionError {
    code: "JOB_IN_PROGRESS",
    message: "the ledger is being generated; wait until it is COMPLETED or REJECTED",
};
const FINAL: TransitionError = TransitionError {
    code: "LEDGER_FINAL",
    message: "the ledger is FINAL and cannot be regenerated",
};

const fn invalid(message: &'static str) -> TransitionError {
    TransitionError {
        code: "INVALID_STATE",
        message,
    }
}

use Action as A;
use Status as S;

/// The transition table: (from, action) → result. Stage rules follow in [`Status::apply`].
const TABLE: &[(Status, Action, Result<Status, TransitionError>)] = &[
    (S::Pending, A::Claim, Ok(S::Processing)),
    (
        S::Processing,
        A::Claim,
        Err(invalid("the job is already claimed")),
    ),
    (
        S::Completed,
        A::Claim,
        Err(invalid("the job is already completed")),
    ),
    (S::Rejected, A::Claim, Err(invalid("the job was rejected"))),
    (S::Processing, A::Complete, Ok(S::Completed)),
    (S::Processing, A::Fail, Ok(S::Rejected)),
    (S::Pending, A::EnqueueFailed, Ok(S::Rejected)),
    (S::Rejected, A::Retry, Ok(S::Pending)),
    (S::Pending, A::Retry, Err(IN_PROGRESS)),
    (S::Processing, A::Retry, Err(IN_PROGRESS)),
    (
        S::Completed,
        A::Retry,
        Err(invalid(
            "the ledger is COMPLETED; use regenerate for a new version of a DRAFT",
        )),
    ),
    (S::Completed, A::Regenerate, Ok(S::Pending)),
    (S::Pending, A::Regenerate, Err(IN_PROGRESS)),
    (S::Processing, A::Regenerate, Err(IN_PROGRESS)),
    (
        S::Rejected,
        A::Regenerate,
        Err(invalid("the ledger is REJECTED; use retry")),
    ),
    (S::Completed, A::Delete, Ok(S::Completed)),
    (S::Rejected, A::Delete, Ok(S::Rejected)),
    (S::Pending, A::Delete, Err(IN_PROGRESS)),
    (S::Processing, A::Delete, Err(IN_PROGRESS)),
    (S::Processing, A::Requeue, Ok(S::Pending)),
    (S::Processing, A::Abandon, Ok(S::Rejected)),
    (S::Processing, A::Release, Ok(S::Pending)),
    (S::Processing, A::Renew, Ok(S::Processing)),
    (S::Pending, A::Redeliver, Ok(S::Pending)),
];

impl Status {
    /// The status `action` leads to from `self` at `stage`, or why it is refused.
    pub fn apply(self, action: Action, stage: Stage) -> Result<Status, TransitionError> {
        let found = TABLE
            .iter()
            .find(|(from, a, _)| *from == self && *a == action)
            .map(|(_, _, to)| to.clone())
            .unwrap_or(Err(invalid(
                "this action is not possible in the ledger's current status",
            )));
        let to = found?;
        if action == Action::Regenerate && stage == Stage::Final {
            return Err(FINAL);
        }
        Ok(to)
    }

    /// True for COMPLETED and REJECTED.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Rejected)
    }
}

/// Why the last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReason {
    /// `FETCH_DATA_ERROR`, `JOB_EXECUTION_FAILED`, `ENQUEUE_FAILED`.
    pub error_code: String,
    /// Readable detail (never a secret).
    pub message: String,
    /// Whether a retry may succeed without a change of input.
    pub retryable: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// The newest completed file of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    /// Ledger version the file belongs to.
    #[schema(minimum = 1)]
    pub version: u32,
    /// Media type.
    #[schema(example = "text/csv; charset=utf-8")]
    pub content_type: String,
    /// Plaintext size.
    pub size_bytes: u64,
    /// Hex SHA-256 of the plaintext.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    /// Suggested download name.
    pub file_name: String,
    /// When the file became unreadable for good (its merchant's key was shredded, or
    /// retention removed it): downloads answer 410 `SHREDDED`. Absent while readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shredded_at: Option<DateTime<Utc>>,
}

/// A ledger job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// Snowflake id.
    pub id: LedgerId,
    /// Whose ledger.
    pub merchant_id: MerchantId,
    /// STATEMENT or SUMMARY.
    pub ledger_type: LedgerType,
    /// The canonical period.
    pub period: Period,
    /// The zone the request named, `None` for "the merchant's own".
    pub requested_timezone: Option<Timezone>,
    /// The zone actually used, once known.
    pub timezone: Option<Timezone>,
    /// Document format.
    pub format: Format,
    /// DRAFT or FINAL.
    pub stage: Stage,
    /// Life-cycle status.
    pub status: Status,
    /// 1, +1 per regenerate.
    pub version: u32,
    /// Lifetime claims; the fencing token of the running attempt.
    pub attempt_count: u32,
    /// Last failure.
    pub failure_reason: Option<FailureReason>,
    /// Newest completed file.
    pub file: Option<FileInfo>,
    /// The `sub` that created it.
    pub created_by: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Start of the last attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// Completion of the newest version.
    pub completed_at: Option<DateTime<Utc>>,
    /// Soft deletion.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Lease of the running attempt.
    pub lease_until: Option<DateTime<Utc>>,
}

impl Ledger {
    /// The object key of the encrypted file `attempt` writes for `version`. One object per
    /// attempt: an attempt that stalled after its last lease check and resumed after a newer
    /// attempt completed writes its own object, never the one the newer attempt recorded.
    /// (Files written before this rule, under `v{version}.{ext}.enc`, stay readable: the
    /// download reads the key recorded with the file.)
    pub fn object_key(&self, version: u32, attempt: u32) -> String {
        format!(
            "ledgers/{}/{}/v{}.a{}.{}.enc",
            self.merchant_id,
            self.id,
            version,
            attempt,
            self.format.extension()
        )
    }

    /// The download name of `version`'s file: only `[A-Za-z0-9_.+-]`, safe in a header (and
    /// an RFC 8187 `attr-char` each). A requested time zone is part of it (`/` → `-`), so two
    /// ledgers that differ only in their zone download under different names.
    pub fn file_name(&self, version: u32) -> String {
        let zone = self
            .requested_timezone
            .map(|tz| format!("-{}", tz.name().replace('/', "-")))
            .unwrap_or_default();
        format!(
            "ledger-{}-{}-{}{zone}-v{}.{}",
            self.merchant_id,
            self.ledger_type.as_str().to_ascii_lowercase(),
            self.period,
            version,
            self.format.extension()
        )
    }
}

/// The stage a document generated at `now` has: FINAL once the period is over.
pub fn stage_at(period: &Period, tz: Timezone, now: DateTime<Utc>) -> Stage {
    if period.has_ended(tz, now) {
        Stage::Final
    } else {
        Stage::Draft
    }
}

/// Parses a wire enum value for `field`, listing the allowed values on error.
pub fn parse_wire<T: Copy + fmt::Display>(
    field: &str,
    raw: &str,
    all: &[T],
    parse: fn(&str) -> Option<T>,
) -> Result<T, InvalidInput> {
    parse(raw).ok_or_else(|| {
        let allowed: Vec<String> = all.iter().map(|v| v.to_string()).collect();
        InvalidInput::new(field, format!("must be one of {}", allowed.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_transitions() {
        let d = Stage::Draft;
        assert_eq!(S::Pending.apply(A::Claim, d), Ok(S::Processing));
        assert_eq!(S::Processing.apply(A::Complete, d), Ok(S::Completed));
        assert_eq!(S::Processing.apply(A::Fail, d), Ok(S::Rejected));
        assert_eq!(S::Pending.apply(A::EnqueueFailed, d), Ok(S::Rejected));
        assert_eq!(S::Rejected.apply(A::Retry, d), Ok(S::Pending));
        assert_eq!(S::Rejected.apply(A::Retry, Stage::Final), Ok(S::Pending));
        assert_eq!(S::Completed.apply(A::Regenerate, d), Ok(S::Pending));
        assert_eq!(S::Completed.apply(A::Delete, d), Ok(S::Completed));
        assert_eq!(S::Rejected.apply(A::Delete, Stage::Final), Ok(S::Rejected));
        assert_eq!(S::Processing.apply(A::Requeue, d), Ok(S::Pending));
        assert_eq!(S::Processing.apply(A::Abandon, d), Ok(S::Rejected));
        // Only a claimed job can stall: a PENDING one holds no lease to expire.
        assert!(S::Pending.apply(A::Abandon, d).is_err());
        assert_eq!(S::Processing.apply(A::Release, d), Ok(S::Pending));
        assert_eq!(S::Processing.apply(A::Renew, d), Ok(S::Processing));
        assert_eq!(S::Pending.apply(A::Redeliver, d), Ok(S::Pending));
    }

    #[test]
    fn transitions_list_what_apply_allows_at_every_stage() {
        assert_eq!(A::Claim.transitions(), [(S::Pending, S::Processing)]);
        assert_eq!(A::Abandon.transitions(), [(S::Processing, S::Rejected)]);
        assert_eq!(
            A::Delete.transitions(),
            [(S::Completed, S::Completed), (S::Rejected, S::Rejected)]
        );
        // Regenerate is refused for FINAL ledgers: no stage-blind transition.
        assert!(A::Regenerate.transitions().is_empty());
        for &a in Action::ALL {
            for &s in Status::ALL {
                let listed = a
                    .transitions()
                    .iter()
                    .find(|(from, _)| *from == s)
                    .map(|p| p.1);
                let applied: Vec<_> = Stage::ALL.iter().map(|&st| s.apply(a, st).ok()).collect();
                if let Some(to) = listed {
                    assert!(applied.iter().all(|t| *t == Some(to)), "{s} {a:?}");
                } else {
                    assert!(applied.iter().any(Option::is_none), "{s} {a:?}");
                }
            }
        }
    }

    #[test]
    fn refused_transitions_carry_their_codes() {
        let code = |s: Status, a: Action, st: Stage| s.apply(a, st).unwrap_err().code;
        let d = Stage::Draft;
        assert_eq!(code(S::Pending, A::Retry, d), "JOB_IN_PROGRESS");
        assert_eq!(code(S::Processing, A::Retry, d), "JOB_IN_PROGRESS");
        assert_eq!(code(S::Completed, A::Retry, d), "INVALID_STATE");
        assert_eq!(code(S::Pending, A::Regenerate, d), "JOB_IN_PROGRESS");
        assert_eq!(
            code(S::Processing, A::Regenerate, Stage::Final),
            "JOB_IN_PROGRESS"
        );
        assert_eq!(
            code(S::Completed, A::Regenerate, Stage::Final),
            "LEDGER_FINAL"
        );
        assert_eq!(code(S::Rejected, A::Regenerate, d), "INVALID_STATE");
        assert_eq!(code(S::Pending, A::Delete, d), "JOB_IN_PROGRESS");
        assert_eq!(code(S::Processing, A::Delete, d), "JOB_IN_PROGRESS");
        assert_eq!(code(S::Processing, A::Claim, d), "INVALID_STATE");
        assert_eq!(code(S::Completed, A::Complete, d), "INVALID_STATE");
        assert_eq!(code(S::Rejected, A::Fail, d), "INVALID_STATE");
        assert_eq!(code(S::Completed, A::Requeue, d), "INVALID_STATE");
    }

    #[test]
    fn every_pair_is_decided_and_terminal_states_only_leave_by_user_action() {
        for &s in Status::ALL {
            for &a in Action::ALL {
                for &st in Stage::ALL {
                    let r = s.apply(a, st);
                    if s.is_terminal()
                        && let Ok(to) = r
                    {
                        assert!(
                            matches!(a, A::Retry | A::Regenerate | A::Delete),
                            "{s} --{a:?}--> {to} must be a user action"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wire_names_round_trip() {
        for &f in Format::ALL {
            assert_eq!(Format::parse(f.as_str()), Some(f));
        }
        assert_eq!(Format::parse("csv"), None);
        assert_eq!(
            serde_json::to_string(&Status::Processing).unwrap(),
            "\"PROCESSING\""
        );
    }
}
