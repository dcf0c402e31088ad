//! The webhook half of the job store port (SPEC §12): endpoints, and the deliveries of the
//! events the store records — in the same transaction as the state change they report (an
//! outbox), so an event is never announced that did not happen nor lost to a crash.
//!
//! A delivery is claimed by moving its next attempt to the end of a lease, so one whose
//! worker died is due again when the lease ends (at least once); each claim takes a new
//! lease number, which fences the finish of an attempt that outlived its lease.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::MerchantId;
use crate::domain::webhook::{Delivery, EventType, Webhook};

/// What a new endpoint is made of.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Snowflake id.
    pub id: i64,
    /// The creator's subject.
    pub created_by: String,
    /// Where deliveries go (checked already).
    pub url: String,
    /// What it is told about.
    pub events: Vec<EventType>,
    /// `None`: every merchant the creator may read.
    pub merchants: Option<Vec<MerchantId>>,
    /// Its secret, sealed under the master key.
    pub sealed_secret: String,
    /// Now.
    pub created_at: DateTime<Utc>,
}

/// A delivery claimed for one attempt, with all the attempt needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery.
    pub id: i64,
    /// The lease number of this claim (to finish it with).
    pub lease: i64,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The endpoint, as it is now.
    pub webhook: Webhook,
    /// Its secret, sealed.
    pub sealed_secret: String,
    /// The secret a rotation replaced, sealed, while it still signs too.
    pub sealed_previous: Option<String>,
    /// The event's stored id (`msg_<id>` on the wire).
    pub message_id: i64,
    /// The event's type.
    pub event_type: EventType,
    /// A ledger event's merchant.
    pub merchant: Option<MerchantId>,
    /// A batch event's creator.
    pub owner: Option<String>,
    /// The body every attempt sends.
    pub payload: String,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// A 2xx: done; the endpoint's run of failures ends.
    Delivered {
        /// The status it answered.
        status: u16,
    },
    /// Failed; tried again at `next_at`.
    Retry {
        /// The status it answered, if it did.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When the next attempt is due.
        next_at: DateTime<Utc>,
    },
    /// Failed, and the retry schedule is spent: FAILED.
    GiveUp {
        /// The status it answered, if it did.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// 410 Gone: FAILED, and the endpoint is disabled (its other deliveries fail too).
    Gone,
    /// Not sent, for good: FAILED without an attempt (the endpoint was disabled meanwhile).
    Cancelled {
        /// Why.
        reason: String,
    },
    /// Not sent: SKIPPED for `reason`.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// What is in flight in the claiming process, so a claim takes only what fits each share.
#[derive(Debug, Clone, Default)]
pub struct Share {
    /// Deliveries one endpoint may have in flight.
    pub per_webhook: u32,
    /// Endpoints with deliveries in flight, and how many.
    pub webhooks: Vec<(i64, u32)>,
    /// Subjects whose endpoints hold their whole share of the process: none of theirs.
    pub full_creators: Vec<String>,
}

/// When failures disable an endpoint.
#[derive(Debug, Clone, Copy)]
pub struct FailingRule {
    /// An endpoint whose run of failures began at or before this is disabled.
    pub disable_before: DateTime<Utc>,
    /// A failure after none since this time begins a new run (the endpoint was quiet, not
    /// failing).
    pub restart_before: DateTime<Utc>,
}

/// The deliveries waiting, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// PENDING deliveries.
    pub pending: u64,
    /// When the oldest of them was created.
    pub oldest: Option<DateTime<Utc>>,
}

/// The webhook half of the job store port.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint.
    async fn insert_webhook(&self, new: &NewWebhook) -> Result<Webhook, StoreError>;
    /// One endpoint, deleted or not.
    async fn get_webhook(&self, id: i64) -> Result<Option<Webhook>, StoreError>;
    /// Endpoints not deleted, newest first (`created_by = None`: everyone's), below `before`.
    async fn list_webhooks(
        &self,
        created_by: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Webhook>, StoreError>;
    /// Deletes an endpoint (softly) and skips its PENDING deliveries; false when there was
    /// none to delete.
    async fn delete_webhook(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Replaces an endpoint's secret; the old one keeps signing (next to the new one) until
    /// `previous_until`. False when the endpoint is deleted or missing.
    async fn rotate_webhook_secret(
        &self,
        id: i64,
        sealed_secret: &str,
        previous_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// An endpoint's deliveries, newest first, below `before`.
    async fn list_deliveries(
        &self,
        webhook_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Sends the event of delivery `delivery_id` (of `webhook_id`) again: a new PENDING
    /// delivery of the same message, due now. `None` when there is no such delivery.
    async fn redeliver(
        &self,
        webhook_id: i64,
        delivery_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>, StoreError>;
    /// Claims up to `limit` due deliveries until `lease_until`: each endpoint's oldest due
    /// first, round-robin over the endpoints, only what fits in each endpoint's share and
    /// none of a full creator's. A claim may be lost to a power failure (the delivery is
    /// then sent again: at least once).
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        share: &Share,
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// Records how the attempt of claim `lease` ended; false (nothing written) when the
    /// claim was lost. Like a claim, a recording may be lost to a power failure (the
    /// delivery is then sent again). A failure of an endpoint failing since `rule.disable_before` or
    /// earlier disables it (FAILING); a [`Finish::Gone`] disables it (GONE). Disabling fails
    /// its other PENDING deliveries.
    async fn finish_delivery(
        &self,
        id: i64,
        lease: i64,
        finish: &Finish,
        now: DateTime<Utc>,
        rule: FailingRule,
    ) -> Result<bool, StoreError>;
    /// Gives claim `lease` of a delivery back without an attempt: due again at `due_at`.
    async fn release_delivery(
        &self,
        id: i64,
        lease: i64,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Removes up to `limit` finished deliveries last changed before `before`, and the
    /// messages older than that no delivery refers to any more; how many rows went.
    async fn purge_webhook_history(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;
    /// The PENDING deliveries and the oldest one's age.
    async fn delivery_backlog(&self) -> Result<Backlog, StoreError>;
}
