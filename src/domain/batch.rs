//! Batches (SPEC §11): the ledgers of many merchants and formats for one type and period,
//! asked for at once. A batch's members are ledgers — made by it, or already there
//! (`EXISTING`) — and its status follows theirs.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Format, InvalidInput, LedgerType, MerchantId, Period, Status, Timezone};

/// A batch id: a Snowflake from the same generator as ledger ids. Always a decimal string in
/// JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(i64);

impl BatchId {
    /// Wraps a stored id.
    pub fn from_i64(raw: i64) -> Self {
        Self(raw)
    }
    /// The id as stored.
    pub fn as_i64(self) -> i64 {
        self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for BatchId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<i64>() {
            Ok(v) if v > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Self(v)),
            _ => Err(InvalidInput::new(
                "id",
                "must be a batch id (a positive decimal integer)",
            )),
        }
    }
}

impl TryFrom<String> for BatchId {
    type Error = InvalidInput;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<BatchId> for String {
    fn from(value: BatchId) -> Self {
        value.to_string()
    }
}

/// At most this many merchant ids may be named in one request (SPEC §11).
pub const MAX_EXPLICIT_MERCHANTS: usize = 10_000;

/// Which merchants a batch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every merchant the source lists that the creator may create for (`"*"`).
    All,
    /// These merchants, in the order asked for, without repeats.
    Only(Vec<MerchantId>),
}

impl Selection {
    /// The stored form: `*`, or a JSON array of ids.
    pub fn to_stored(&self) -> String {
        match self {
            Selection::All => "*".to_owned(),
            Selection::Only(ids) => {
                let names: Vec<&str> = ids.iter().map(MerchantId::as_str).collect();
                serde_json::Value::from(names).to_string()
            }
        }
    }

    /// The selection of a request: `*`, or 1 to [`MAX_EXPLICIT_MERCHANTS`] ids, a repeat
    /// counting once (the first stays, in order).
    pub fn checked(self) -> Result<Self, InvalidInput> {
        let Selection::Only(ids) = self else {
            return Ok(Selection::All);
        };
        if ids.is_empty() {
            return Err(InvalidInput::new(
                "merchantIds",
                "name at least one merchant, or \"*\" for every merchant",
            ));
        }
        if ids.len() > MAX_EXPLICIT_MERCHANTS {
            return Err(InvalidInput::new(
                "merchantIds",
                format!(
                    "at most {MAX_EXPLICIT_MERCHANTS} merchants may be named; use \"*\" for \
                     every merchant"
                ),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        Ok(Selection::Only(
            ids.into_iter().filter(|m| seen.insert(m.clone())).collect(),
        ))
    }

    /// Reads [`Self::to_stored`]'s form.
    pub fn from_stored(raw: &str) -> Result<Self, String> {
        if raw == "*" {
            return Ok(Selection::All);
        }
        let names: Vec<String> =
            serde_json::from_str(raw).map_err(|e| format!("merchant list: {e}"))?;
        names
            .iter()
            .map(|n| MerchantId::parse(n).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Selection::Only)
    }
}

/// A batch's status (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    /// Members are still being added, or some member is not COMPLETED or REJECTED yet.
    Running,
    /// Every member COMPLETED.
    Completed,
    /// Every member is COMPLETED or REJECTED, and at least one is REJECTED.
    CompletedWithErrors,
}

impl BatchStatus {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Running => "RUNNING",
            BatchStatus::Completed => "COMPLETED",
            BatchStatus::CompletedWithErrors => "COMPLETED_WITH_ERRORS",
        }
    }
}

impl FromStr for BatchStatus {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RUNNING" => Ok(BatchStatus::Running),
            "COMPLETED" => Ok(BatchStatus::Completed),
            "COMPLETED_WITH_ERRORS" => Ok(BatchStatus::CompletedWithErrors),
            _ => Err(InvalidInput::new(
                "status",
                "must be RUNNING, COMPLETED or COMPLETED_WITH_ERRORS",
            )),
        }
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many members a batch has in each state. Each member is counted once: one that
/// already existed under `EXISTING` (whatever its status), every other under its status.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct BatchCounts {
    /// Made by the batch, waiting for a worker.
    #[serde(rename = "PENDING")]
    pub pending: u64,
    /// Made by the batch, being generated.
    #[serde(rename = "PROCESSING")]
    pub processing: u64,
    /// Made by the batch, done.
    #[serde(rename = "COMPLETED")]
    pub completed: u64,
    /// Made by the batch, failed.
    #[serde(rename = "REJECTED")]
    pub rejected: u64,
    /// Already there when the batch reached them.
    #[serde(rename = "EXISTING")]
    pub existing: u64,
}

impl BatchCounts {
    /// Every member.
    pub fn total(&self) -> u64 {
        self.pending + self.processing + self.completed + self.rejected + self.existing
    }
}

/// The members of a batch by state, as counted from the ledgers themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// The counts shown.
    pub counts: BatchCounts,
    /// Members (existing ones included) not COMPLETED or REJECTED yet.
    pub open: u64,
    /// Members (existing ones included) REJECTED.
    pub rejected: u64,
    /// When a member last changed status: once none is open, when the batch finished.
    pub last_change: Option<DateTime<Utc>>,
}

impl Tally {
    /// Adds `n` members of `status`; `existing` when they were there before the batch.
    pub fn add(&mut self, existing: bool, status: Status, n: u64) {
        match (existing, status) {
            (true, _) => self.counts.existing += n,
            (false, Status::Pending) => self.counts.pending += n,
            (false, Status::Processing) => self.counts.processing += n,
            (false, Status::Completed) => self.counts.completed += n,
            (false, Status::Rejected) => self.counts.rejected += n,
        }
        match status {
            Status::Completed => {}
            Status::Rejected => self.rejected += n,
            Status::Pending | Status::Processing => self.open += n,
        }
    }

    /// Notes that a member changed status at `at`.
    pub fn changed_at(&mut self, at: DateTime<Utc>) {
        self.last_change = self.last_change.max(Some(at));
    }

    /// When the batch finished, if it has: when its last member ended (its creation for a
    /// batch of none).
    pub fn finished_at(&self, expanding: bool, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.status(expanding) != BatchStatus::Running)
            .then(|| self.last_change.unwrap_or(created_at).max(created_at))
    }

    /// The batch's status: `RUNNING` while members are being added or any is open.
    pub fn status(&self, expanding: bool) -> BatchStatus {
        if expanding || self.open > 0 {
            BatchStatus::Running
        } else if self.rejected > 0 {
            BatchStatus::CompletedWithErrors
        } else {
            BatchStatus::Completed
        }
    }
}

/// What makes a batch a schedule's run: it grows pass by pass as each merchant's period
/// closes (in its zone) and the delay passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The schedule.
    pub schedule_id: i64,
    /// How long after a merchant's close its ledgers are made.
    pub delay: std::time::Duration,
    /// Merchants whose close (plus the delay) is at or before this were added by an
    /// earlier pass.
    pub pass_from: Option<DateTime<Utc>>,
    /// The current pass adds the merchants whose close (plus the delay) is at or before
    /// this; `None` between passes.
    pub pass_to: Option<DateTime<Utc>>,
    /// Between passes: when the next is due. During one: the earliest close (plus the
    /// delay) after `pass_to` seen so far.
    pub pass_at: Option<DateTime<Utc>>,
}

impl Run {
    /// Whether a merchant whose close (plus the delay) is `close` belongs to the current
    /// pass.
    pub fn in_pass(&self, close: DateTime<Utc>) -> bool {
        self.pass_to.is_some_and(|to| close <= to) && self.pass_from.is_none_or(|from| close > from)
    }
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// The `sub` of its creator.
    pub created_by: String,
    /// The merchants asked for.
    pub merchants: Selection,
    /// STATEMENT or SUMMARY.
    pub ledger_type: LedgerType,
    /// The period.
    pub period: Period,
    /// One ledger per merchant and format.
    pub formats: Vec<Format>,
    /// The zone asked for; `None`: each merchant's own.
    pub timezone: Option<Timezone>,
    /// Whether members are still being added.
    pub expanding: bool,
    /// Merchants left out because the creator may not create for them.
    pub skipped: u64,
    /// The status as last published.
    pub status: BatchStatus,
    /// The counts as last published.
    pub counts: BatchCounts,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When its status last changed to COMPLETED or COMPLETED_WITH_ERRORS.
    pub finished_at: Option<DateTime<Utc>>,
    /// The first merchants left out (at most [`MAX_SKIPPED_NAMED`]).
    pub skipped_ids: Vec<MerchantId>,
    /// Set when the batch is a schedule's run.
    pub run: Option<Run>,
}

/// How many of the merchants a batch left out it names.
pub const MAX_SKIPPED_NAMED: usize = 100;

/// The formats of a request: at least one, each once.
pub fn check_formats(formats: &[Format]) -> Result<(), InvalidInput> {
    if formats.is_empty() {
        return Err(InvalidInput::new("formats", "name at least one format"));
    }
    for (i, f) in formats.iter().enumerate() {
        if formats[..i].contains(f) {
            return Err(InvalidInput::new(
                format!("formats[{i}]"),
                format!("{} is named twice", f.as_str()),
            ));
        }
    }
    Ok(())
}

/// The stored form of `formats`: their names, comma-separated.
pub fn formats_to_stored(formats: &[Format]) -> String {
    formats
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads [`formats_to_stored`]'s form.
pub fn formats_from_stored(raw: &str) -> Result<Vec<Format>, String> {
    raw.split(',')
        .map(|f| Format::parse(f).ok_or_else(|| format!("format {f:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_runs_until_every_member_is_done() {
        let mut t = Tally::default();
        t.add(false, Status::Completed, 3);
        t.add(true, Status::Processing, 1);
        assert_eq!(t.counts.existing, 1);
        assert_eq!(t.counts.total(), 4);
        assert_eq!(
            t.status(false),
            BatchStatus::Running,
            "an existing member is open"
        );
        let mut t = Tally::default();
        t.add(false, Status::Completed, 3);
        assert_eq!(t.status(true), BatchStatus::Running, "still expanding");
        assert_eq!(t.status(false), BatchStatus::Completed);
        t.add(true, Status::Rejected, 1);
        assert_eq!(t.status(false), BatchStatus::CompletedWithErrors);
    }

    #[test]
    fn selections_and_formats_round_trip_their_stored_form() {
        let only = Selection::Only(vec![
            MerchantId::parse("m_b").unwrap(),
            MerchantId::parse("m_a").unwrap(),
        ]);
        assert_eq!(Selection::from_stored(&only.to_stored()).unwrap(), only);
        assert_eq!(Selection::from_stored("*").unwrap(), Selection::All);
        let formats = vec![Format::Pdf, Format::Csv];
        assert_eq!(
            formats_from_stored(&formats_to_stored(&formats)).unwrap(),
            formats
        );
        assert!(check_formats(&[]).is_err());
        assert_eq!(
            check_formats(&[Format::Csv, Format::Csv])
                .unwrap_err()
                .field,
            "formats[1]"
        );
    }

    #[test]
    fn batch_ids_are_decimal_strings() {
        let id: BatchId = "123".parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"123\"");
        assert!("0".parse::<BatchId>().is_err());
        assert!("-1".parse::<BatchId>().is_err());
        assert!("1e3".parse::<BatchId>().is_err());
    }
}
