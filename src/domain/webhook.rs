//! Webhook endpoints and their deliveries (SPEC §12): which events an endpoint wants, for
//! which merchants, and where each delivery of an event stands. Pure values; the store
//! keeps them, the worker role delivers them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{InvalidInput, MerchantId};

/// Merchants one endpoint may name; more is a 422 (an endpoint for more merchants omits
/// `merchantIds` and gets every merchant its creator may read).
pub const MAX_WEBHOOK_MERCHANTS: usize = 1_000;

/// What happened, as an event's `type` names it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum EventType {
    /// A ledger version completed: its file can be downloaded.
    #[serde(rename = "ledger.completed")]
    LedgerCompleted,
    /// A ledger was REJECTED (its `failureReason` says why).
    #[serde(rename = "ledger.rejected")]
    LedgerRejected,
    /// A batch finished: COMPLETED or COMPLETED_WITH_ERRORS.
    #[serde(rename = "batch.completed")]
    BatchCompleted,
}

impl EventType {
    /// Every event type, in the order of the documentation.
    pub const ALL: [EventType; 3] = [
        EventType::LedgerCompleted,
        EventType::LedgerRejected,
        EventType::BatchCompleted,
    ];

    /// The wire name (`ledger.completed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::LedgerCompleted => "ledger.completed",
            EventType::LedgerRejected => "ledger.rejected",
            EventType::BatchCompleted => "batch.completed",
        }
    }

    /// The type a wire name names.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// Its bit in a stored set of types.
    pub fn bit(self) -> i64 {
        match self {
            EventType::LedgerCompleted => 1,
            EventType::LedgerRejected => 2,
            EventType::BatchCompleted => 4,
        }
    }

    /// The stored set of `types`.
    pub fn mask(types: &[EventType]) -> i64 {
        types.iter().fold(0, |m, t| m | t.bit())
    }

    /// The types of a stored set, in the order of [`Self::ALL`].
    pub fn from_mask(mask: i64) -> Vec<EventType> {
        Self::ALL
            .into_iter()
            .filter(|t| mask & t.bit() != 0)
            .collect()
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the `events` of a request: 1 to 3 known types, each once; returned in the order
/// of [`EventType::ALL`].
pub fn check_event_types(raw: &[String]) -> Result<Vec<EventType>, InvalidInput> {
    if raw.is_empty() {
        return Err(InvalidInput::new("events", "name at least one event type"));
    }
    let mut types = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let t = EventType::parse(name).ok_or_else(|| {
            InvalidInput::new(
                format!("events[{i}]"),
                format!(
                    "unknown event type; expected one of {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            )
        })?;
        if types.contains(&t) {
            return Err(InvalidInput::new(
                format!("events[{i}]"),
                "each event type at most once",
            ));
        }
        types.push(t);
    }
    types.sort();
    Ok(types)
}

/// Why an endpoint no longer receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DisabledReason {
    /// It answered 410 Gone.
    Gone,
    /// Every attempt failed for 5 days.
    Failing,
}

impl DisabledReason {
    /// The stored (and wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Gone => "GONE",
            DisabledReason::Failing => "FAILING",
        }
    }

    /// The reason a stored name names.
    pub fn parse(raw: &str) -> Option<Self> {
        [DisabledReason::Gone, DisabledReason::Failing]
            .into_iter()
            .find(|r| r.as_str() == raw)
    }
}

/// A webhook endpoint. Its secret is not part of it: the store keeps it sealed and hands
/// it out only to the delivery worker ([`DueDelivery`]) and to a creation or rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Snowflake id.
    pub id: i64,
    /// The subject that made it; deliveries are judged against their grants.
    pub created_by: String,
    /// Where deliveries go.
    pub url: String,
    /// What it is told about, in the order of [`EventType::ALL`].
    pub events: Vec<EventType>,
    /// `None`: every merchant its creator may read; else these, sorted.
    pub merchants: Option<Vec<MerchantId>>,
    /// When it stopped receiving deliveries, and why.
    pub disabled: Option<(DateTime<Utc>, DisabledReason)>,
    /// When the failures it keeps answering began (cleared by a success).
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was deleted (softly).
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Where one delivery of one event to one endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`nextAttemptAt`).
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Every attempt failed, the endpoint answered 410, or it was disabled meanwhile.
    Failed,
    /// Not sent: the endpoint's creator may no longer read the event's merchant, or the
    /// endpoint was deleted.
    Skipped,
}

impl DeliveryStatus {
    /// The stored (and wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
            DeliveryStatus::Skipped => "SKIPPED",
        }
    }

    /// The status a stored name names.
    pub fn parse(raw: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Skipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// One delivery as its endpoint's owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The endpoint.
    pub webhook_id: i64,
    /// The event's id, the `webhook-id` header: the same for every attempt and redelivery
    /// of the event (receivers deduplicate on it).
    pub message_id: String,
    /// The event's type.
    pub event_type: EventType,
    /// The ledger or batch the event is about.
    pub resource_id: i64,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The HTTP status of the last attempt, if one was answered.
    pub last_status: Option<u16>,
    /// What went wrong in the last attempt, in words (no secret, no body beyond a bound).
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (PENDING only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
}

/// The event id of stored message `id`, as the `webhook-id` header carries it.
pub fn message_id(id: i64) -> String {
    format!("msg_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_parse_once_each_and_round_trip_through_their_mask() {
        let ok = check_event_types(&["ledger.rejected".into(), "ledger.completed".into()]).unwrap();
        assert_eq!(
            ok,
            vec![EventType::LedgerCompleted, EventType::LedgerRejected]
        );
        assert_eq!(EventType::from_mask(EventType::mask(&ok)), ok);
        assert_eq!(check_event_types(&[]).unwrap_err().field, "events");
        let twice = check_event_types(&["batch.completed".into(), "batch.completed".into()]);
        assert_eq!(twice.unwrap_err().field, "events[1]");
        let unknown = check_event_types(&["ledger.created".into()]).unwrap_err();
        assert_eq!(unknown.field, "events[0]");
        assert!(unknown.message.contains("batch.completed"), "{unknown}");
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
    }
}
