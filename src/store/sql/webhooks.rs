//! Webhooks in SQL: endpoints, the outbox the state changes write into, and the claim and
//! finish of deliveries.
//!
//! The outbox ([`announce`]) runs inside the transaction of the state change it reports:
//! one read finds the endpoints that want the event (none, most of the time, and then
//! nothing else is done), then the message — the signed body of every attempt — and one
//! PENDING delivery per endpoint are inserted. Whether the endpoint's creator may see the
//! event is judged when it is delivered, not here.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{Arg, Args, Conn, Dialect, Driver, SqlStore, args};
use crate::domain::webhook::{
    Delivery, DeliveryStatus, DisabledReason, EventType, Webhook, message_id,
};
use crate::domain::{Batch, Ledger, MerchantId};
use crate::store::StoreError;
use crate::store::rows::{opt_time, time};
use crate::store::webhooks::{
    Backlog, DueDelivery, FailingRule, Finish, NewWebhook, Share, WebhookStore,
};

/// What an event is about, for [`announce`].
pub(super) enum Subject<'a> {
    /// A ledger's state change.
    Ledger(&'a Ledger),
    /// A batch that finished (as published).
    Batch(&'a Batch),
}

/// The longest `last_error` kept.
const MAX_ERROR_CHARS: usize = 500;

/// Endpoints that want `$1` (an event type's bit) about merchant `$2` (a ledger event).
const FOR_MERCHANT: &str = "w.deleted_at IS NULL AND w.disabled_at IS NULL \
    AND (w.event_mask & $1) <> 0 AND (w.all_merchants OR EXISTS (SELECT 1 \
    FROM webhook_merchants m WHERE m.merchant_id = $2 AND m.webhook_id = w.id))";

/// Endpoints that want `$1` about a batch of creator `$2`: the creator's own, and those
/// without a merchant list (their creator may read every merchant, judged at delivery).
const FOR_OWNER: &str = "w.deleted_at IS NULL AND w.disabled_at IS NULL \
    AND (w.event_mask & $1) <> 0 AND (w.all_merchants OR w.created_by = $2)";

/// Records `event` about `subject`, at `at`, for every endpoint that wants it, on `conn`
/// (inside the transaction of the change it reports).
pub(super) async fn announce<D: Dialect>(
    conn: &mut Conn<D>,
    event: EventType,
    subject: Subject<'_>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (filter, key, resource, merchant, owner) = match &subject {
        Subject::Ledger(l) => (
            FOR_MERCHANT,
            l.merchant_id.as_str().to_owned(),
            l.id.as_i64(),
            Some(l.merchant_id.as_str().to_owned()),
            None,
        ),
        Subject::Batch(b) => (
            FOR_OWNER,
            b.created_by.clone(),
            b.id.as_i64(),
            None,
            Some(b.created_by.clone()),
        ),
    };
    let endpoints: Vec<(i64,)> = D::Db::fetch_all(
        conn,
        &format!("SELECT w.id FROM webhooks w WHERE {filter} ORDER BY w.id"),
        args![event.bit(), key],
    )
    .await?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let data = match subject {
        Subject::Ledger(l) => serde_json::to_value(crate::views::view(l)),
        Subject::Batch(b) => serde_json::to_value(crate::views::batch_body(
            b,
            b.status,
            b.counts,
            b.finished_at,
        )),
    }
    .map_err(|e| StoreError::Corrupt(format!("an event's data does not serialise: {e}")))?;
    let payload = serde_json::json!({
        "type": event.as_str(),
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string();
    let (message,): (i64,) = D::Db::fetch_all(
        conn,
        "INSERT INTO webhook_messages (type, resource_id, merchant_id, owner, payload, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        vec![
            Arg::Text(event.as_str().to_owned()),
            Arg::Int(resource),
            Arg::OptText(merchant),
            Arg::OptText(owner),
            Arg::Text(payload),
            at.into(),
        ],
    )
    .await?
    .into_iter()
    .next()
    .ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?;
    let mut binds = args![message, at];
    let rows: Vec<String> = endpoints
        .iter()
        .map(|(id,)| {
            binds.push(Arg::Int(*id));
            format!("(${}, $1, 'PENDING', 0, $2, 0, $2, $2)", binds.len())
        })
        .collect();
    D::Db::execute(
        conn,
        &format!(
            "INSERT INTO webhook_deliveries (webhook_id, message_id, status, attempts, \
             next_attempt_at, lease, created_at, updated_at) VALUES {}",
            rows.join(", ")
        ),
        binds,
    )
    .await?;
    Ok(())
}

const WEBHOOK_COLUMNS: &str = "w.id, w.created_by, w.url, w.event_mask, w.all_merchants, \
    w.failing_since, w.disabled_at, w.disabled_reason, w.created_at, w.deleted_at";

/// A row of [`WEBHOOK_COLUMNS`].
#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: i64,
    created_by: String,
    url: String,
    event_mask: i64,
    all_merchants: bool,
    failing_since: Option<i64>,
    disabled_at: Option<i64>,
    disabled_reason: Option<String>,
    created_at: i64,
    deleted_at: Option<i64>,
}

impl WebhookRow {
    fn into_webhook(self, merchants: Option<Vec<MerchantId>>) -> Result<Webhook, StoreError> {
        let disabled = match (self.disabled_at, self.disabled_reason) {
            (Some(at), Some(reason)) => Some((
                time(at)?,
                DisabledReason::parse(&reason).ok_or_else(|| {
                    StoreError::Corrupt(format!("webhook disabled reason {reason:?}"))
                })?,
            )),
            (None, _) => None,
            (Some(_), None) => {
                return Err(StoreError::Corrupt(
                    "a disabled webhook without a reason".into(),
                ));
            }
        };
        Ok(Webhook {
            id: self.id,
            created_by: self.created_by,
            url: self.url,
            events: EventType::from_mask(self.event_mask),
            merchants,
            disabled,
            failing_since: opt_time(self.failing_since)?,
            created_at: time(self.created_at)?,
            deleted_at: opt_time(self.deleted_at)?,
        })
    }
}

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.message_id, m.type, m.resource_id, \
    d.status, d.attempts, d.last_status, d.last_error, d.last_attempt_at, d.next_attempt_at, \
    d.created_at";

/// A row of [`DELIVERY_COLUMNS`].
#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    webhook_id: i64,
    message_id: i64,
    #[sqlx(rename = "type")]
    event_type: String,
    resource_id: i64,
    status: String,
    attempts: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    last_attempt_at: Option<i64>,
    next_attempt_at: Option<i64>,
    created_at: i64,
}

fn event_type(raw: &str) -> Result<EventType, StoreError> {
    EventType::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("event type {raw:?}")))
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        let status = DeliveryStatus::parse(&r.status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {:?}", r.status)))?;
        Ok(Delivery {
            id: r.id,
            webhook_id: r.webhook_id,
            message_id: message_id(r.message_id),
            event_type: event_type(&r.event_type)?,
            resource_id: r.resource_id,
            status,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            last_attempt_at: opt_time(r.last_attempt_at)?,
            next_attempt_at: match status {
                DeliveryStatus::Pending => opt_time(r.next_attempt_at)?,
                _ => None,
            },
            created_at: time(r.created_at)?,
        })
    }
}

/// A claimed delivery with its endpoint and message.
#[derive(sqlx::FromRow)]
struct DueRow {
    d_id: i64,
    d_lease: i64,
    d_attempts: i64,
    #[sqlx(flatten)]
    webhook: WebhookRow,
    secret: String,
    previous_secret: Option<String>,
    previous_until: Option<i64>,
    m_id: i64,
    m_type: String,
    m_merchant: Option<String>,
    m_owner: Option<String>,
    m_payload: String,
    m_created_at: i64,
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn clip(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

impl<D: Dialect> SqlStore<D> {
    /// The merchant lists of `ids`' endpoints.
    async fn webhook_merchants(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<MerchantId>>, StoreError> {
        let mut out = std::collections::HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(i64, String)> = self
            .fetch_all_once(
                &format!(
                    "SELECT webhook_id, merchant_id FROM webhook_merchants \
                     WHERE webhook_id IN ({}) ORDER BY webhook_id, merchant_id",
                    placeholders(1, ids.len())
                ),
                ids.iter().map(|id| Arg::Int(*id)).collect(),
            )
            .await?;
        for (id, merchant) in rows {
            let merchant = MerchantId::parse(&merchant)
                .map_err(|_| StoreError::Corrupt(format!("webhook merchant {merchant:?}")))?;
            out.entry(id).or_insert_with(Vec::new).push(merchant);
        }
        Ok(out)
    }

    /// Endpoints of `filter`, with their merchants.
    async fn webhooks_where(&self, filter: &str, args: Args) -> Result<Vec<Webhook>, StoreError> {
        let rows: Vec<WebhookRow> = self
            .fetch_all(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE {filter}"),
                args,
            )
            .await?;
        let named: Vec<i64> = rows
            .iter()
            .filter(|r| !r.all_merchants)
            .map(|r| r.id)
            .collect();
        let mut merchants = self.webhook_merchants(&named).await?;
        rows.into_iter()
            .map(|r| {
                let list = (!r.all_merchants).then(|| merchants.remove(&r.id).unwrap_or_default());
                r.into_webhook(list)
            })
            .collect()
    }

    /// [`Self::fetch_all`] of a statement whose text varies with its input.
    async fn fetch_all_once<T: super::Decoded>(
        &self,
        sql: &str,
        args: Args,
    ) -> Result<Vec<T>, StoreError> {
        Ok(D::Db::fetch_all_once(&mut *self.pool.acquire().await?, sql, args).await?)
    }

    /// The deliveries of `filter`, newest first.
    async fn deliveries_where(
        conn: &mut Conn<D>,
        filter: &str,
        args: Args,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = D::Db::fetch_all(
            conn,
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                 JOIN webhook_messages m ON m.id = d.message_id WHERE {filter}"
            ),
            args,
        )
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }
}

#[async_trait]
impl<D: Dialect> WebhookStore for SqlStore<D> {
    async fn insert_webhook(&self, new: &NewWebhook) -> Result<Webhook, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        D::Db::execute(
            &mut tx,
            "INSERT INTO webhooks (id, created_by, url, event_mask, all_merchants, secret, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            vec![
                Arg::Int(new.id),
                Arg::Text(new.created_by.clone()),
                Arg::Text(new.url.clone()),
                Arg::Int(EventType::mask(&new.events)),
                Arg::Bool(new.merchants.is_none()),
                Arg::Text(new.sealed_secret.clone()),
                new.created_at.into(),
            ],
        )
        .await?;
        let mut merchants = new.merchants.clone();
        if let Some(list) = &mut merchants {
            list.sort();
            list.dedup();
            // In chunks: a statement holds at most 32,766 parameters (SQLite).
            for chunk in list.chunks(500) {
                let mut binds = args![new.id];
                let rows: Vec<String> = chunk
                    .iter()
                    .map(|m| {
                        binds.push(Arg::Text(m.as_str().to_owned()));
                        format!("(${}, $1)", binds.len())
                    })
                    .collect();
                D::Db::fetch_all_once::<(i64,)>(
                    &mut tx,
                    &format!(
                        "INSERT INTO webhook_merchants (merchant_id, webhook_id) VALUES {} \
                         RETURNING webhook_id",
                        rows.join(", ")
                    ),
                    binds,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Webhook {
            id: new.id,
            created_by: new.created_by.clone(),
            url: new.url.clone(),
            events: new.events.clone(),
            merchants,
            disabled: None,
            failing_since: None,
            created_at: new.created_at,
            deleted_at: None,
        })
    }

    async fn get_webhook(&self, id: i64) -> Result<Option<Webhook>, StoreError> {
        Ok(self
            .webhooks_where("w.id = $1", args![id])
            .await?
            .into_iter()
            .next())
    }

    async fn list_webhooks(
        &self,
        created_by: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Webhook>, StoreError> {
        self.webhooks_where(
            "w.deleted_at IS NULL AND ($1 IS NULL OR w.created_by = $1) AND w.id < $2 \
             ORDER BY w.id DESC LIMIT $3",
            vec![
                Arg::OptText(created_by.map(str::to_owned)),
                Arg::Int(before.unwrap_or(i64::MAX)),
                Arg::Int(i64::from(limit)),
            ],
        )
        .await
    }

    async fn delete_webhook(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let deleted = D::Db::execute(
            &mut tx,
            "UPDATE webhooks SET deleted_at = $1, updated_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL",
            args![now, id],
        )
        .await?;
        if deleted == 1 {
            D::Db::execute(
                &mut tx,
                &format!(
                    "UPDATE webhook_deliveries SET status = 'SKIPPED', next_attempt_at = NULL, \
                     last_error = 'not sent: the endpoint was deleted', updated_at = $1 \
                     WHERE id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $2 \
                     AND status = 'PENDING' ORDER BY id{})",
                    D::LOCK_ROWS
                ),
                args![now, id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn rotate_webhook_secret(
        &self,
        id: i64,
        sealed_secret: &str,
        previous_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE webhooks SET previous_secret = secret, previous_until = $1, \
                 secret = $2, updated_at = $3 WHERE id = $4 AND deleted_at IS NULL",
                args![previous_until, sealed_secret, now, id],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn list_deliveries(
        &self,
        webhook_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        Self::deliveries_where(
            &mut *self.pool.acquire().await?,
            "d.webhook_id = $1 AND d.id < $2 ORDER BY d.id DESC LIMIT $3",
            args![webhook_id, before.unwrap_or(i64::MAX), i64::from(limit)],
        )
        .await
    }

    async fn redeliver(
        &self,
        webhook_id: i64,
        delivery_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let inserted: Vec<(i64,)> = D::Db::fetch_all(
            &mut tx,
            "INSERT INTO webhook_deliveries (webhook_id, message_id, status, attempts, \
             next_attempt_at, lease, created_at, updated_at) \
             SELECT d.webhook_id, d.message_id, 'PENDING', 0, $1, 0, $1, $1 \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.id = $2 AND d.webhook_id = $3 AND w.deleted_at IS NULL \
             AND w.disabled_at IS NULL RETURNING id",
            args![now, delivery_id, webhook_id],
        )
        .await?;
        let Some((id,)) = inserted.into_iter().next() else {
            tx.rollback().await?;
            return Ok(None);
        };
        let delivery = Self::deliveries_where(&mut tx, "d.id = $1", args![id])
            .await?
            .into_iter()
            .next();
        tx.commit().await?;
        Ok(delivery)
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        share: &Share,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        // The candidates: due, each endpoint's oldest first and only as many as fit in its
        // share beside those in flight here, none of a full creator's; taken round-robin
        // (every endpoint's first before any endpoint's second), so one endpoint's backlog
        // never fills a round.
        let mut binds = args![now, i64::from(share.per_webhook), i64::from(limit)];
        let mut with = String::new();
        let mut in_flight = "0".to_owned();
        if !share.webhooks.is_empty() {
            let rows: Vec<String> = share
                .webhooks
                .iter()
                .map(|(id, n)| {
                    binds.push(Arg::Int(*id));
                    binds.push(Arg::Int(i64::from(*n)));
                    format!("(${}, ${})", binds.len() - 1, binds.len())
                })
                .collect();
            with = format!("WITH f (webhook_id, n) AS (VALUES {}) ", rows.join(", "));
            in_flight =
                "COALESCE((SELECT f.n FROM f WHERE f.webhook_id = r.webhook_id), 0)".to_owned();
        }
        let mut not_full = String::new();
        if !share.full_creators.is_empty() {
            let list = placeholders(binds.len() + 1, share.full_creators.len());
            binds.extend(share.full_creators.iter().map(|c| Arg::Text(c.clone())));
            not_full = format!(" AND w.created_by NOT IN ({list})");
        }
        let candidates: Vec<(i64,)> = self
            .fetch_all_once(
                &format!(
                    "{with}SELECT r.id FROM (SELECT d.id, d.webhook_id, d.next_attempt_at, \
                     ROW_NUMBER() OVER (PARTITION BY d.webhook_id \
                     ORDER BY d.next_attempt_at, d.id) AS rank \
                     FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE d.status = 'PENDING' AND d.next_attempt_at <= $1{not_full}) r \
                     WHERE r.rank <= $2 - {in_flight} \
                     ORDER BY r.rank, r.next_attempt_at, r.id LIMIT $3"
                ),
                binds,
            )
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // The claim: a conditional update, so of two claimers only one moves a row; rows
        // another claimer holds are skipped rather than waited for (PostgreSQL). Through
        // the relaxed pool: a claim lost to a power failure only sends a delivery again.
        let mut binds = args![lease_until, now];
        binds.extend(candidates.iter().map(|(id,)| Arg::Int(*id)));
        let sql = format!(
            "UPDATE webhook_deliveries SET next_attempt_at = $1, lease = lease + 1, \
             updated_at = $2 WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE id IN ({}) AND status = 'PENDING' AND next_attempt_at <= $2 \
             ORDER BY id{}) RETURNING id",
            placeholders(3, candidates.len()),
            D::SKIP_LOCKED
        );
        let claimed: Vec<(i64,)> = {
            let _gate = self.write_gate().await;
            D::Db::fetch_all_once(&mut *self.relaxed().acquire().await?, &sql, binds).await?
        };
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Args = claimed.iter().map(|(id,)| Arg::Int(*id)).collect();
        let rows: Vec<DueRow> = self
            .fetch_all_once(
                &format!(
                    "SELECT d.id AS d_id, d.lease AS d_lease, d.attempts AS d_attempts, \
                     {WEBHOOK_COLUMNS}, w.secret, w.previous_secret, w.previous_until, \
                     m.id AS m_id, m.type AS m_type, m.merchant_id AS m_merchant, \
                     m.owner AS m_owner, m.payload AS m_payload, m.created_at AS m_created_at \
                     FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                     JOIN webhook_messages m ON m.id = d.message_id \
                     WHERE d.id IN ({}) ORDER BY d.next_attempt_at, d.id",
                    placeholders(1, claimed.len())
                ),
                ids,
            )
            .await?;
        let named: Vec<i64> = rows
            .iter()
            .filter(|r| !r.webhook.all_merchants)
            .map(|r| r.webhook.id)
            .collect();
        let merchants = self.webhook_merchants(&named).await?;
        rows.into_iter()
            .map(|r| {
                let list = (!r.webhook.all_merchants)
                    .then(|| merchants.get(&r.webhook.id).cloned().unwrap_or_default());
                let previous = match (r.previous_secret, r.previous_until) {
                    (Some(s), Some(until)) if until > now.timestamp_millis() => Some(s),
                    _ => None,
                };
                Ok(DueDelivery {
                    id: r.d_id,
                    lease: r.d_lease,
                    attempts: u32::try_from(r.d_attempts).unwrap_or(u32::MAX),
                    webhook: r.webhook.into_webhook(list)?,
                    sealed_secret: r.secret,
                    sealed_previous: previous,
                    message_id: r.m_id,
                    event_type: event_type(&r.m_type)?,
                    merchant: r
                        .m_merchant
                        .map(|m| {
                            MerchantId::parse(&m)
                                .map_err(|_| StoreError::Corrupt(format!("message merchant {m:?}")))
                        })
                        .transpose()?,
                    owner: r.m_owner,
                    payload: r.m_payload,
                    created_at: time(r.m_created_at)?,
                })
            })
            .collect()
    }

    async fn finish_delivery(
        &self,
        id: i64,
        lease: i64,
        finish: &Finish,
        now: DateTime<Utc>,
        rule: FailingRule,
    ) -> Result<bool, StoreError> {
        let (status, next_at, http, error, attempted) = match finish {
            Finish::Delivered { status } => ("DELIVERED", None, Some(*status), None, true),
            Finish::Retry {
                status,
                error,
                next_at,
            } => ("PENDING", Some(*next_at), *status, Some(clip(error)), true),
            Finish::GiveUp { status, error } => ("FAILED", None, *status, Some(clip(error)), true),
            Finish::Gone => (
                "FAILED",
                None,
                Some(410),
                Some("the endpoint answered 410 Gone: it was disabled".to_owned()),
                true,
            ),
            Finish::Skipped { reason } => ("SKIPPED", None, None, Some(clip(reason)), false),
            Finish::Cancelled { reason } => ("FAILED", None, None, Some(clip(reason)), false),
        };
        let _gate = self.write_gate().await;
        // On the relaxed pool, as claims are: a recording a power failure takes sends the
        // delivery again (at least once; the webhook-id lets receivers drop it), and the
        // endpoint's failing state is recomputed by the next attempt. Spares every
        // delivery an fsync.
        let mut tx = self.relaxed().begin().await?;
        // The endpoint first, then its deliveries, as every writer of both does: two
        // recordings (or a recording and a deletion) queue up instead of deadlocking.
        let locked: Vec<(i64,)> = D::Db::fetch_all(
            &mut tx,
            &format!(
                "SELECT w.id FROM webhooks w WHERE w.id = \
                 (SELECT webhook_id FROM webhook_deliveries WHERE id = $1){}",
                D::LOCK_ROWS
            ),
            args![id],
        )
        .await?;
        if locked.is_empty() {
            tx.rollback().await?;
            return Ok(false);
        }
        let changed: Vec<(i64,)> = D::Db::fetch_all(
            &mut tx,
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, \
             attempts = attempts + $3, last_status = $4, last_error = $5, \
             last_attempt_at = CASE WHEN $3 = 1 THEN $6 ELSE last_attempt_at END, \
             updated_at = $6 WHERE id = $7 AND lease = $8 AND status = 'PENDING' \
             RETURNING webhook_id",
            vec![
                Arg::Text(status.to_owned()),
                Arg::OptInt(next_at.map(|t| t.timestamp_millis())),
                Arg::Int(i64::from(attempted)),
                Arg::OptInt(http.map(i64::from)),
                Arg::OptText(error),
                now.into(),
                Arg::Int(id),
                Arg::Int(lease),
            ],
        )
        .await?;
        let Some((webhook,)) = changed.into_iter().next() else {
            tx.rollback().await?;
            return Ok(false);
        };
        let disable = match finish {
            Finish::Delivered { .. } => {
                D::Db::execute(
                    &mut tx,
                    "UPDATE webhooks SET failing_since = NULL WHERE id = $1 \
                     AND failing_since IS NOT NULL",
                    args![webhook],
                )
                .await?;
                None
            }
            Finish::Gone => Some(DisabledReason::Gone),
            Finish::Retry { .. } | Finish::GiveUp { .. } => {
                let failing: Vec<(Option<i64>,)> = D::Db::fetch_all(
                    &mut tx,
                    "UPDATE webhooks SET failing_since = CASE WHEN failing_since IS NULL \
                     OR last_failed_at IS NULL OR last_failed_at < $3 THEN $1 \
                     ELSE failing_since END, last_failed_at = $1 \
                     WHERE id = $2 RETURNING failing_since",
                    args![now, webhook, rule.restart_before],
                )
                .await?;
                let since = failing.into_iter().next().and_then(|(s,)| s);
                since
                    .is_some_and(|s| s <= rule.disable_before.timestamp_millis())
                    .then_some(DisabledReason::Failing)
            }
            Finish::Skipped { .. } | Finish::Cancelled { .. } => None,
        };
        if let Some(reason) = disable {
            D::Db::execute(
                &mut tx,
                "UPDATE webhooks SET disabled_at = $1, disabled_reason = $2, updated_at = $1 \
                 WHERE id = $3 AND disabled_at IS NULL",
                args![now, reason.as_str(), webhook],
            )
            .await?;
            D::Db::execute(
                &mut tx,
                &format!(
                    "UPDATE webhook_deliveries SET status = 'FAILED', next_attempt_at = NULL, \
                     last_error = $1, updated_at = $2 WHERE id IN (SELECT id \
                     FROM webhook_deliveries WHERE webhook_id = $3 AND status = 'PENDING' \
                     ORDER BY id{})",
                    D::LOCK_ROWS
                ),
                args![
                    match reason {
                        DisabledReason::Gone =>
                            "not sent: the endpoint answered 410 Gone and was disabled",
                        DisabledReason::Failing =>
                            "not sent: the endpoint failed for 5 days and was disabled",
                    },
                    now,
                    webhook
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn release_delivery(
        &self,
        id: i64,
        lease: i64,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.execute_relaxed(
            "UPDATE webhook_deliveries SET next_attempt_at = $1, updated_at = $1 \
             WHERE id = $2 AND lease = $3 AND status = 'PENDING'",
            args![due_at, id, lease],
        )
        .await?;
        Ok(())
    }

    async fn purge_webhook_history(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let deliveries = self
            .execute(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
                 WHERE status <> 'PENDING' AND updated_at < $1 LIMIT $2)",
                args![before, i64::from(limit)],
            )
            .await?;
        let messages = self
            .execute(
                "DELETE FROM webhook_messages WHERE id IN (SELECT m.id FROM webhook_messages m \
                 WHERE m.created_at < $1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                 WHERE d.message_id = m.id) LIMIT $2)",
                args![before, i64::from(limit)],
            )
            .await?;
        Ok(deliveries + messages)
    }

    async fn delivery_backlog(&self) -> Result<Backlog, StoreError> {
        let (pending, oldest): (i64, Option<i64>) = self
            .fetch_one(
                "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries \
                 WHERE status = 'PENDING'",
                args![],
            )
            .await?;
        Ok(Backlog {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest: opt_time(oldest)?,
        })
    }
}
