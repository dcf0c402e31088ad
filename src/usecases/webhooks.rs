//! What a caller can do with webhook endpoints (SPEC §12): make one, read and list their
//! own, rotate its secret, delete it, and see or redo its deliveries. The worker role
//! delivers (`worker::webhooks`).
//!
//! Making an endpoint needs `manage_webhooks` on every merchant it names, or on `*` when it
//! names none. An endpoint is visible to its creator, and to a caller who may manage the
//! webhooks of every merchant; to anyone else it does not exist (404).

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use zeroize::Zeroizing;

use super::LedgerError;
use crate::auth::{Authorizer, Caller, MerchantScope, Permission, assert_merchant_access};
use crate::crypto::Keyring;
use crate::domain::webhook::{Delivery, EventType, MAX_WEBHOOK_MERCHANTS, Webhook};
use crate::domain::{InvalidInput, MerchantId, Snowflake};
use crate::store::JobStore;
use crate::store::webhooks::NewWebhook;
use crate::webhooks::network::Reach;
use crate::webhooks::signature::WebhookSecret;

/// How long a rotated-out secret keeps signing next to the new one, so receivers can
/// switch over without dropping a delivery.
pub const PREVIOUS_SECRET_SIGNS_FOR: Duration = Duration::from_secs(24 * 3600);

/// Endpoints one subject may have.
pub const MAX_WEBHOOKS_PER_SUBJECT: u32 = 100;

const MISSING: LedgerError = LedgerError::NotFound("no such webhook");

/// The ports the webhook use cases work with.
#[derive(Clone)]
pub struct Webhooks {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Authorization decisions.
    pub authz: Arc<Authorizer>,
    /// Endpoint ids.
    pub ids: Arc<Snowflake>,
    /// The master keys secrets are sealed with.
    /// The key hierarchy: the service key sealing webhook secrets comes from it.
    pub keys: crate::keys::Keys,
    /// Where deliveries may go (`APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS`).
    pub reach: Reach,
}

/// A validated request for an endpoint.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// The receiver's URL.
    pub url: String,
    /// What it is told about.
    pub events: Vec<EventType>,
    /// `None`: every merchant the creator may read.
    pub merchants: Option<Vec<MerchantId>>,
}

impl WebhookRequest {
    /// Checks the URL against `reach` and the merchant list's size.
    pub fn new(
        url: &str,
        events: Vec<EventType>,
        merchants: Option<Vec<MerchantId>>,
        reach: Reach,
    ) -> Result<Self, InvalidInput> {
        let url = reach
            .check_url(url)
            .map_err(|e| InvalidInput::new("url", e.to_string()))?;
        if let Some(list) = &merchants {
            if list.is_empty() {
                return Err(InvalidInput::new(
                    "merchantIds",
                    "name at least one merchant, or omit it for every merchant you may read",
                ));
            }
            if list.len() > MAX_WEBHOOK_MERCHANTS {
                return Err(InvalidInput::new(
                    "merchantIds",
                    format!(
                        "at most {MAX_WEBHOOK_MERCHANTS} merchants; omit it for every merchant you may read"
                    ),
                ));
            }
        }
        Ok(Self {
            url: url.to_string(),
            events,
            merchants,
        })
    }
}

/// An endpoint with its secret: the answer of a creation or a rotation, the only times the
/// secret is shown.
pub struct WithSecret {
    /// The endpoint.
    pub webhook: Webhook,
    /// `whsec_…`.
    pub secret: Zeroizing<String>,
}

impl Webhooks {
    /// Makes an endpoint for the caller.
    pub async fn create(
        &self,
        caller: &Caller,
        request: WebhookRequest,
    ) -> Result<WithSecret, LedgerError> {
        match &request.merchants {
            Some(ids) => {
                for merchant in ids {
                    assert_merchant_access(
                        &self.authz,
                        caller,
                        merchant,
                        Permission::ManageWebhooks,
                    )
                    .await?;
                }
            }
            None => {
                if !matches!(self.scope(caller).await?, MerchantScope::All) {
                    return Err(LedgerError::EveryMerchantOnly(
                        "a webhook without merchantIds needs manage_webhooks on every merchant \
                         (merchant_admin or platform_admin on *); name the merchants instead",
                    ));
                }
            }
        }
        let own = self
            .store
            .list_webhooks(Some(&caller.subject), None, MAX_WEBHOOKS_PER_SUBJECT)
            .await?;
        if own.len() >= MAX_WEBHOOKS_PER_SUBJECT as usize {
            return Err(LedgerError::Invalid(InvalidInput::new(
                "url",
                format!(
                    "you have {MAX_WEBHOOKS_PER_SUBJECT} webhooks already, the most one subject \
                     may have; delete one first"
                ),
            )));
        }
        let id = self.ids.next_id().as_i64();
        let secret = WebhookSecret::generate();
        let sealed = secret
            .seal(&self.secrets_key().await?, id)
            .map_err(|e| LedgerError::Internal(format!("sealing a webhook secret: {e}")))?;
        let webhook = self
            .store
            .insert_webhook(&NewWebhook {
                id,
                created_by: caller.subject.clone(),
                url: request.url,
                events: request.events,
                merchants: request.merchants,
                sealed_secret: sealed,
                created_at: Utc::now().trunc_subsecs(3),
            })
            .await?;
        tracing::info!(target: "ledger::api::webhooks", webhookId = id, subject = %caller.subject, events = ?webhook.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(), merchants = webhook.merchants.as_ref().map_or(0, Vec::len), "webhook created");
        Ok(WithSecret {
            webhook,
            secret: secret.expose(),
        })
    }

    /// One endpoint the caller may see.
    pub async fn get(&self, caller: &Caller, id: i64) -> Result<Webhook, LedgerError> {
        self.visible(caller, id).await
    }

    /// The caller's endpoints, newest first, and the cursor of the next page.
    pub async fn list(
        &self,
        caller: &Caller,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<Webhook>, Option<i64>), LedgerError> {
        let mut items = self
            .store
            .list_webhooks(Some(&caller.subject), before, limit + 1)
            .await?;
        let more = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|w| w.id)
        } else {
            None
        };
        Ok((items, more))
    }

    /// Deletes an endpoint: nothing more is delivered to it.
    pub async fn delete(&self, caller: &Caller, id: i64) -> Result<(), LedgerError> {
        let webhook = self.visible(caller, id).await?;
        if !self.store.delete_webhook(webhook.id, Utc::now()).await? {
            return Err(MISSING);
        }
        tracing::info!(target: "ledger::api::webhooks", webhookId = id, subject = %caller.subject, "webhook deleted");
        Ok(())
    }

    /// The key that seals webhook secrets; a root that cannot be reached is 503
    /// `KEY_UNAVAILABLE`, logged with the key.
    async fn secrets_key(&self) -> Result<Keyring, LedgerError> {
        self.keys.secrets().await.map_err(|e| match e {
            crate::keys::KeyError::Unavailable { key_id, reason } => {
                crate::keys::count_unavailable();
                tracing::error!(target: "ledger::keys", keyId = %key_id, reason = %reason,
                    "the key of webhook secrets is unavailable");
                LedgerError::KeyUnavailable(format!("key {key_id}: {reason}"))
            }
            other => LedgerError::Unavailable(other.to_string()),
        })
    }

    /// Gives an endpoint a new secret; the old one keeps signing next to it for
    /// [`PREVIOUS_SECRET_SIGNS_FOR`].
    pub async fn rotate_secret(&self, caller: &Caller, id: i64) -> Result<WithSecret, LedgerError> {
        let webhook = self.visible(caller, id).await?;
        let secret = WebhookSecret::generate();
        let sealed = secret
            .seal(&self.secrets_key().await?, webhook.id)
            .map_err(|e| LedgerError::Internal(format!("sealing a webhook secret: {e}")))?;
        let now = Utc::now();
        let until = now
            + chrono::Duration::from_std(PREVIOUS_SECRET_SIGNS_FOR)
                .unwrap_or_else(|_| chrono::Duration::days(1));
        if !self
            .store
            .rotate_webhook_secret(webhook.id, &sealed, until, now)
            .await?
        {
            return Err(MISSING);
        }
        tracing::info!(target: "ledger::api::webhooks", webhookId = id, subject = %caller.subject, "webhook secret rotated");
        Ok(WithSecret {
            webhook,
            secret: secret.expose(),
        })
    }

    /// An endpoint's deliveries, newest first, and the cursor of the next page.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<Delivery>, Option<i64>), LedgerError> {
        let webhook = self.visible(caller, id).await?;
        let mut items = self
            .store
            .list_deliveries(webhook.id, before, limit + 1)
            .await?;
        let more = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|d| d.id)
        } else {
            None
        };
        Ok((items, more))
    }

    /// Sends a delivery's event again (same `webhook-id`), as a new delivery due now.
    pub async fn redeliver(
        &self,
        caller: &Caller,
        id: i64,
        delivery: i64,
    ) -> Result<Delivery, LedgerError> {
        let webhook = self.visible(caller, id).await?;
        if webhook.disabled.is_some() {
            return Err(LedgerError::Conflict(crate::domain::TransitionError {
                code: "INVALID_STATE",
                message: "the webhook is disabled (it answered 410 Gone or failed for 5 days): \
                          make a new one for this URL",
            }));
        }
        let again = self
            .store
            .redeliver(webhook.id, delivery, Utc::now())
            .await?
            .ok_or(LedgerError::NotFound("no such delivery"))?;
        tracing::info!(target: "ledger::api::webhooks", webhookId = id, deliveryId = delivery, redeliveryId = again.id, subject = %caller.subject, "webhook event redelivered");
        Ok(again)
    }

    /// The endpoint `id` if not deleted and `caller` made it or may manage the webhooks of
    /// every merchant; anything else is the same [`LedgerError::NotFound`].
    async fn visible(&self, caller: &Caller, id: i64) -> Result<Webhook, LedgerError> {
        let webhook = self.store.get_webhook(id).await?.ok_or(MISSING)?;
        if webhook.deleted_at.is_some() {
            return Err(MISSING);
        }
        if webhook.created_by == caller.subject {
            return Ok(webhook);
        }
        match self.scope(caller).await? {
            MerchantScope::All => Ok(webhook),
            MerchantScope::Only(_) => Err(MISSING),
        }
    }

    async fn scope(&self, caller: &Caller) -> Result<MerchantScope, LedgerError> {
        self.authz
            .scope(&caller.subject, Permission::ManageWebhooks)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))
    }
}
