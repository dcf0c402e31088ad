//! The ledger domain: ids, periods, money, entries and the ledger state machine.
//! Pure values and rules; this module never does I/O.

pub mod batch;
pub mod entry;
pub mod event;
pub mod ids;
pub mod ledger;
pub mod locale;
pub mod merchant;
pub mod money;
pub mod period;
pub mod policy;
pub mod schedule;
pub mod webhook;

pub use batch::{Batch, BatchCounts, BatchId, BatchStatus, Selection, Tally};
pub use entry::{Balance, ControlTotals, CurrencyTotals, Entry, EntryType, Merchant};
pub use event::{Event, ProgressEvent, StatusEvent, TimelineItem};
pub use ids::{LedgerId, Snowflake};
pub use ledger::{
    Action, FailureReason, FileInfo, Format, Ledger, LedgerType, Stage, Status, TransitionError,
};
pub use locale::Locale;
pub use merchant::MerchantId;
pub use money::{Currency, format_minor, write_minor};
pub use period::{Period, Timezone};
pub use policy::{Grant, PolicyRevision, grant_digest};
pub use schedule::{Cadence, Schedule};
pub use webhook::{Delivery, DeliveryStatus, EventType, Webhook};

/// A value a user sent that does not parse; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    /// The request field (or query parameter) that is wrong.
    pub field: String,
    /// What is wrong with it, readable by a person.
    pub message: String,
}

impl InvalidInput {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
