//! Webhook delivery (SPEC §12), in the worker role: claims due deliveries from the store's
//! outbox, judges each against its endpoint creator's grants now, signs it (Standard
//! Webhooks) and posts it through [`DeliveryClient`] — `https` only, no private address at
//! connect time, no redirect, answers read up to a bound — then records how it ended: a 2xx
//! delivers, a 410 disables the endpoint, anything else is tried again on the retry
//! schedule (with jitter) until it is spent, and an endpoint failing for 5 days is disabled.
//!
//! Deliveries run concurrently up to `concurrency`, at most a quarter of them (at least
//! one) to one endpoint, so a slow or dead receiver holds a few slots, never all of them,
//! and never a generation job: this loop shares nothing with the job pipeline but the
//! store. A delivery whose process dies mid-attempt is due again when its claim's lease
//! ends (at least once; the `webhook-id` lets receivers drop the duplicate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authorizer, MerchantScope, Permission};
use crate::domain::webhook::message_id;
use crate::store::JobStore;
use crate::store::webhooks::{DueDelivery, FailingRule, Finish, Share};
use crate::webhooks::network::{ATTEMPT_TIMEOUT, DeliveryClient, read_answer};
use crate::webhooks::retry::next_delay;
use crate::webhooks::signature::{WebhookSecret, headers};

/// How long a delivery that could not be attempted for a reason of ours (grants or keys
/// unavailable) waits before it is tried again.
const POSTPONED_FOR: Duration = Duration::from_secs(60);

/// How long finished deliveries and their events are kept (the deliveries list shows them).
pub const HISTORY_KEPT: Duration = Duration::from_secs(30 * 86_400);

/// How the delivery loop runs.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Delays after each failed attempt (`APP_ENV_WEBHOOK_RETRY_SCHEDULE`).
    pub schedule: Vec<Duration>,
    /// Deliveries in flight (`APP_ENV_WEBHOOK_CONCURRENCY`).
    pub concurrency: usize,
    /// How long a claim holds a delivery: longer than an attempt can take.
    pub lease: Duration,
    /// How often the store is asked for due deliveries when none were found.
    pub poll: Duration,
    /// Failing this long disables an endpoint.
    pub disable_after: Duration,
    /// How often the backlog gauges are refreshed.
    pub backlog_every: Duration,
    /// How long attempts in flight may finish at shutdown.
    pub grace: Duration,
}

impl DeliverySettings {
    /// The settings of SPEC §12 with this schedule and concurrency.
    pub fn new(schedule: Vec<Duration>, concurrency: usize) -> Self {
        Self {
            schedule,
            concurrency: concurrency.max(1),
            // An attempt ends within its timeout; the rest covers judging and recording it.
            lease: ATTEMPT_TIMEOUT + Duration::from_secs(10),
            poll: Duration::from_millis(500),
            disable_after: Duration::from_secs(5 * 86_400),
            backlog_every: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        }
    }

    /// Deliveries one endpoint may have in flight.
    pub fn per_endpoint(&self) -> usize {
        (self.concurrency / 4).max(1)
    }

    /// Deliveries the endpoints of one creator may have in flight together, so one subject's
    /// many slow endpoints cannot take every slot either.
    pub fn per_creator(&self) -> usize {
        (self.concurrency / 2).max(1)
    }
}

/// What an attempt came to.
enum Outcome {
    /// Record this.
    Finish(Finish),
    /// Not attempted for a reason of ours (a backend down, a key missing): due again at
    /// the end of the claim's lease, no attempt counted against the endpoint.
    Later(String),
}

/// The delivery loop.
#[derive(Clone)]
pub struct Deliverer {
    /// Job store (the outbox).
    pub store: Arc<dyn JobStore>,
    /// Grants, judged at delivery time.
    pub authz: Arc<Authorizer>,
    /// Master keys the endpoints' secrets are sealed with.
    /// The key hierarchy: the service key opening webhook secrets comes from it.
    pub keys: crate::keys::Keys,
    /// The only way out.
    pub client: Arc<DeliveryClient>,
    /// Settings.
    pub settings: Arc<DeliverySettings>,
}

/// Deliveries in flight in this process, per endpoint and per endpoint creator.
#[derive(Default, Clone)]
struct InFlight(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    webhooks: HashMap<i64, usize>,
    creators: HashMap<String, usize>,
}

/// One delivery's place in [`InFlight`], given back when dropped (however the attempt ends,
/// a panic included).
struct Slot {
    inflight: InFlight,
    webhook: i64,
    creator: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .inflight
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.webhooks.get_mut(&self.webhook) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.webhooks.remove(&self.webhook);
            }
        }
        if let Some(n) = counts.creators.get_mut(&self.creator) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.creators.remove(&self.creator);
            }
        }
    }
}

impl InFlight {
    /// What a claim may take: each endpoint's room and the creators with none left.
    fn share(&self, per_webhook: usize, per_creator: usize) -> Share {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Share {
            per_webhook: u32::try_from(per_webhook).unwrap_or(u32::MAX),
            webhooks: counts
                .webhooks
                .iter()
                .map(|(id, n)| (*id, u32::try_from(*n).unwrap_or(u32::MAX)))
                .collect(),
            full_creators: counts
                .creators
                .iter()
                .filter(|(_, n)| **n >= per_creator)
                .map(|(c, _)| c.clone())
                .collect(),
        }
    }

    /// A slot for a delivery of `webhook` (made by `creator`) if both have room.
    fn take(
        &self,
        webhook: i64,
        creator: &str,
        per_webhook: usize,
        per_creator: usize,
    ) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let w = counts.webhooks.get(&webhook).copied().unwrap_or(0);
        let c = counts.creators.get(creator).copied().unwrap_or(0);
        if w >= per_webhook || c >= per_creator {
            return None;
        }
        *counts.webhooks.entry(webhook).or_insert(0) += 1;
        *counts.creators.entry(creator.to_owned()).or_insert(0) += 1;
        Some(Slot {
            inflight: self.clone(),
            webhook,
            creator: creator.to_owned(),
        })
    }
}

impl Deliverer {
    /// Delivers until `shutdown`; attempts in flight then finish (they are bounded by the
    /// attempt timeout) and are recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        let backlog = {
            let me = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { me.backlog_loop(stop).await })
        };
        let inflight = InFlight::default();
        let (cap, creator_cap) = (self.settings.per_endpoint(), self.settings.per_creator());
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let free = self.settings.concurrency.saturating_sub(tasks.len());
            let mut started = 0;
            if free > 0 && !shutdown.is_cancelled() {
                match self.claim(free, &inflight.share(cap, creator_cap)).await {
                    Ok(due) => {
                        for d in due {
                            let Some(slot) = inflight.take(
                                d.webhook.id,
                                &d.webhook.created_by,
                                cap,
                                creator_cap,
                            ) else {
                                // Past its creator's share (several of their endpoints came
                                // in one round): due again at once.
                                self.put_back(&d, Utc::now()).await;
                                continue;
                            };
                            started += 1;
                            let me = self.clone();
                            tasks.spawn(async move {
                                me.attempt(d).await;
                                drop(slot);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(target: "ledger::worker::webhooks", error = %e, "claiming webhook deliveries failed");
                    }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            // A full round: look again as soon as a slot frees; else wait for the poll.
            let pause = if started > 0 && started == free {
                Duration::ZERO
            } else {
                self.settings.poll
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(pause), if !tasks.is_empty() || pause > Duration::ZERO => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.settings.grace, drain)
            .await
            .is_err()
        {
            tracing::info!(target: "ledger::worker::webhooks", running = tasks.len(), "webhook attempts still running at shutdown were stopped; they are due again when their claims end");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        backlog.abort();
    }

    async fn claim(
        &self,
        free: usize,
        share: &Share,
    ) -> Result<Vec<DueDelivery>, crate::store::StoreError> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.settings.lease)
            .unwrap_or_else(|_| chrono::Duration::minutes(1));
        self.store
            .claim_deliveries(
                now,
                now + lease,
                u32::try_from(free).unwrap_or(u32::MAX),
                share,
            )
            .await
    }

    /// Gives a claimed delivery back without an attempt, due at `at`.
    async fn put_back(&self, d: &DueDelivery, at: chrono::DateTime<Utc>) {
        if let Err(e) = self.store.release_delivery(d.id, d.lease, at).await {
            tracing::warn!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, error = %e, "giving a delivery back failed; it is due again when its claim ends");
        }
    }

    /// One attempt of `d`, recorded.
    async fn attempt(&self, d: DueDelivery) {
        let started = std::time::Instant::now();
        let outcome = self.deliver(&d).await;
        let now = Utc::now();
        let finish = match outcome {
            Outcome::Finish(finish) => finish,
            Outcome::Later(why) => {
                let at = now
                    + chrono::Duration::from_std(POSTPONED_FOR)
                        .unwrap_or_else(|_| chrono::Duration::minutes(1));
                tracing::warn!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, messageId = %message_id(d.message_id), reason = %why, retryAt = %at, "webhook delivery postponed");
                metrics::counter!("ledger_webhook_deliveries_total", "outcome" => "postponed")
                    .increment(1);
                self.put_back(&d, at).await;
                return;
            }
        };
        let rule = FailingRule {
            disable_before: now
                - chrono::Duration::from_std(self.settings.disable_after)
                    .unwrap_or_else(|_| chrono::Duration::days(5)),
            // Longer than any retry delay (at most 1 d + 20%): no failure in that long means
            // the endpoint was quiet, and a new failure begins a new run.
            restart_before: now - chrono::Duration::days(2),
        };
        let label = match &finish {
            Finish::Delivered { .. } => "delivered",
            Finish::Retry { .. } => "retrying",
            Finish::GiveUp { .. } => "failed",
            Finish::Gone => "gone",
            Finish::Skipped { .. } => "skipped",
            Finish::Cancelled { .. } => "cancelled",
        };
        match self
            .store
            .finish_delivery(d.id, d.lease, &finish, now, rule)
            .await
        {
            Ok(true) => {
                metrics::counter!("ledger_webhook_deliveries_total", "outcome" => label)
                    .increment(1);
                let elapsed_ms = started.elapsed().as_millis();
                let host = url::Url::parse(&d.webhook.url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default();
                match &finish {
                    Finish::Delivered { status } => {
                        tracing::debug!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, messageId = %message_id(d.message_id), event = %d.event_type, host = %host, status, elapsedMs = elapsed_ms, "webhook delivered");
                    }
                    Finish::Retry {
                        status,
                        error,
                        next_at,
                    } => {
                        tracing::warn!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, messageId = %message_id(d.message_id), event = %d.event_type, host = %host, status = ?status, attempt = d.attempts + 1, nextAttemptAt = %next_at, error = %error, "webhook delivery failed; it will be tried again");
                    }
                    Finish::GiveUp { status, error } => {
                        tracing::error!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, messageId = %message_id(d.message_id), event = %d.event_type, host = %host, status = ?status, attempts = d.attempts + 1, error = %error, "webhook delivery failed for good");
                    }
                    Finish::Gone => {
                        tracing::warn!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, host = %host, "the webhook endpoint answered 410 Gone: it is disabled");
                    }
                    Finish::Cancelled { reason } => {
                        tracing::info!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, messageId = %message_id(d.message_id), reason = %reason, "webhook delivery cancelled");
                    }
                    Finish::Skipped { reason } => {
                        tracing::info!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, messageId = %message_id(d.message_id), reason = %reason, "webhook delivery skipped");
                    }
                }
            }
            Ok(false) => {
                tracing::info!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, "a webhook delivery's claim was lost (it ran past its lease, or its endpoint was disabled or deleted)");
            }
            Err(e) => {
                tracing::error!(target: "ledger::worker::webhooks", deliveryId = d.id, webhookId = d.webhook.id, error = %e, "recording a webhook attempt failed; the delivery is due again when its claim ends");
            }
        }
    }

    /// Judges, signs and sends one delivery.
    async fn deliver(&self, d: &DueDelivery) -> Outcome {
        // Deleted or disabled after the event was recorded: nothing is sent.
        if d.webhook.deleted_at.is_some() {
            return Outcome::Finish(Finish::Skipped {
                reason: "not sent: the endpoint was deleted".into(),
            });
        }
        if let Some((_, reason)) = d.webhook.disabled {
            return Outcome::Finish(Finish::Cancelled {
                reason: format!("not sent: the endpoint is disabled ({})", reason.as_str()),
            });
        }
        match self.may_see(d).await {
            Ok(None) => {}
            Ok(Some(reason)) => return Outcome::Finish(Finish::Skipped { reason }),
            Err(why) => return Outcome::Later(why),
        }
        let keyring = match self.keys.secrets().await {
            Ok(k) => k,
            Err(e) => {
                crate::keys::count_unavailable();
                return Outcome::Later(format!("the key of webhook secrets is unavailable ({e})"));
            }
        };
        let secret = match WebhookSecret::unseal(&keyring, d.webhook.id, &d.sealed_secret) {
            Ok(s) => s,
            Err(e) => {
                return Outcome::Later(format!(
                    "the endpoint's secret cannot be opened with the configured master keys ({e})"
                ));
            }
        };
        let previous = d.sealed_previous.as_deref().and_then(|sealed| {
            WebhookSecret::unseal(&keyring, d.webhook.id, sealed)
                .inspect_err(|e| tracing::warn!(target: "ledger::worker::webhooks", webhookId = d.webhook.id, error = %e, "the rotated-out secret cannot be opened; signing with the new one only"))
                .ok()
        });
        let request = match self.client.post(&d.webhook.url) {
            Ok(r) => r,
            Err(refused) => return self.failed(d, None, format!("the URL is refused: {refused}")),
        };
        let id = message_id(d.message_id);
        let timestamp = Utc::now().timestamp();
        let mut request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(d.payload.clone());
        for (name, value) in headers(
            &secret,
            previous.as_ref(),
            &id,
            timestamp,
            d.payload.as_bytes(),
        ) {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let (status, body) = read_answer(response).await;
                match status {
                    200..=299 => Outcome::Finish(Finish::Delivered { status }),
                    410 => Outcome::Finish(Finish::Gone),
                    300..=399 => self.failed(
                        d,
                        Some(status),
                        format!("answered {status}: redirects are not followed"),
                    ),
                    _ => {
                        let said = body.trim();
                        let error = if said.is_empty() {
                            format!("answered {status}")
                        } else {
                            format!("answered {status}: {said}")
                        };
                        self.failed(d, Some(status), error)
                    }
                }
            }
            Err(e) => self.failed(d, None, describe(&e)),
        }
    }

    /// A failed attempt: tried again on the schedule, or failed for good.
    fn failed(&self, d: &DueDelivery, status: Option<u16>, error: String) -> Outcome {
        Outcome::Finish(match next_delay(&self.settings.schedule, d.attempts + 1) {
            Some(delay) => Finish::Retry {
                status,
                error,
                next_at: Utc::now()
                    + chrono::Duration::from_std(delay)
                        .unwrap_or_else(|_| chrono::Duration::hours(1)),
            },
            None => Finish::GiveUp { status, error },
        })
    }

    /// `None` when the endpoint's creator may see the event now; else why not. `Err` when
    /// the grants could not be read.
    async fn may_see(&self, d: &DueDelivery) -> Result<Option<String>, String> {
        let creator = &d.webhook.created_by;
        if let Some(merchant) = &d.merchant {
            return match self
                .authz
                .allowed(creator, merchant, Permission::Read)
                .await
            {
                Ok(true) => Ok(None),
                Ok(false) => Ok(Some(format!(
                    "not sent: the endpoint's creator may no longer read merchant {merchant}"
                ))),
                Err(e) => Err(format!("grants unavailable: {e}")),
            };
        }
        if d.owner.as_deref() == Some(creator.as_str()) {
            return Ok(None);
        }
        match self.authz.scope(creator, Permission::Read).await {
            Ok(MerchantScope::All) => Ok(None),
            Ok(MerchantScope::Only(_)) => Ok(Some(
                "not sent: the batch is another subject's and the endpoint's creator may no longer read every merchant".to_owned(),
            )),
            Err(e) => Err(format!("grants unavailable: {e}")),
        }
    }

    /// Refreshes the backlog gauges until `shutdown`, and removes the history older than
    /// [`HISTORY_KEPT`] once an hour.
    async fn backlog_loop(&self, shutdown: CancellationToken) {
        let mut purged_at: Option<std::time::Instant> = None;
        loop {
            if purged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                purged_at = Some(std::time::Instant::now());
                self.purge_history().await;
            }
            match self.store.delivery_backlog().await {
                Ok(backlog) => {
                    metrics::gauge!("ledger_webhook_deliveries_pending")
                        .set(backlog.pending as f64);
                    let age = backlog
                        .oldest
                        .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                        .unwrap_or(0.0);
                    metrics::gauge!("ledger_webhook_oldest_pending_seconds").set(age);
                }
                Err(e) => {
                    tracing::warn!(target: "ledger::worker::webhooks", error = %e, "reading the webhook backlog failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.backlog_every) => {}
            }
        }
    }
}

impl Deliverer {
    /// Removes finished deliveries and their messages older than [`HISTORY_KEPT`], in
    /// rounds of 10,000 rows.
    async fn purge_history(&self) {
        let before = Utc::now()
            - chrono::Duration::from_std(HISTORY_KEPT)
                .unwrap_or_else(|_| chrono::Duration::days(30));
        let mut total = 0;
        loop {
            match self.store.purge_webhook_history(before, 10_000).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(target: "ledger::worker::webhooks", error = %e, "removing old webhook deliveries failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(target: "ledger::worker::webhooks", removed = total, "webhook deliveries older than 30 days removed");
        }
    }
}

/// What went wrong with a request, in words, without its URL (which may hold a token).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let url = e.url().map(|u| u.to_string());
    if let Some(url) = url {
        text = text.replace(&url, "the endpoint");
    }
    text
}
