//! What a caller can do with batches (SPEC §11): ask for one (idempotently), read one with
//! its counts taken from its members now, list their own, and page a batch's ledgers. The
//! worker role expands batches (`worker::batches`); here a batch is only stored.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::LedgerError;
use crate::auth::{Authorizer, Caller, MerchantScope, Permission, assert_merchant_access};
use crate::domain::batch::{check_formats, formats_to_stored};
use crate::domain::{
    Batch, BatchId, Format, InvalidInput, LedgerId, LedgerType, Period, Selection, Snowflake,
    Tally, Timezone,
};
use crate::store::JobStore;
use crate::store::batches::{BatchInsert, BatchKey, Member, MemberFilter, NewBatch};

/// The ports the batch use cases work with.
#[derive(Clone)]
pub struct Batches {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Authorization decisions.
    pub authz: Arc<Authorizer>,
    /// Batch ids.
    pub ids: Arc<Snowflake>,
}

/// A validated request for a batch.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// The merchants.
    pub merchants: Selection,
    /// What the documents contain.
    pub ledger_type: LedgerType,
    /// The period.
    pub period: Period,
    /// One ledger per merchant and format.
    pub formats: Vec<Format>,
    /// The zone asked for; `None`: each merchant's own.
    pub timezone: Option<Timezone>,
}

impl BatchRequest {
    /// A request for a period that has started by `now` (as for one ledger), naming at most
    /// [`crate::domain::batch::MAX_EXPLICIT_MERCHANTS`] merchants (repeats count once) and each format once.
    pub fn new(
        merchants: Selection,
        ledger_type: LedgerType,
        period: Period,
        formats: Vec<Format>,
        timezone: Option<Timezone>,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidInput> {
        let merchants = merchants.checked()?;
        check_formats(&formats)?;
        let earliest = Timezone(chrono_tz::Pacific::Kiritimati);
        if !period.has_started(timezone.unwrap_or(earliest), now) {
            return Err(InvalidInput::new(
                "period",
                "the period has not started yet",
            ));
        }
        Ok(Self {
            merchants,
            ledger_type,
            period,
            formats,
            timezone,
        })
    }

    /// A hash of the normalised request.
    pub fn fingerprint(&self) -> String {
        let canonical = format!(
            "{}|{}|{}|{}|{}",
            self.merchants.to_stored(),
            self.ledger_type,
            self.period,
            formats_to_stored(&self.formats),
            self.timezone.map(|t| t.name()).unwrap_or("")
        );
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// A batch with its members counted now.
#[derive(Debug, Clone)]
pub struct BatchView {
    /// The batch.
    pub batch: Batch,
    /// Its members by state.
    pub tally: Tally,
}

impl BatchView {
    /// Its status now.
    pub fn status(&self) -> crate::domain::BatchStatus {
        self.tally.status(self.batch.expanding)
    }
}

/// What a create did.
#[derive(Debug)]
pub enum BatchCreated {
    /// Stored; the worker role expands it.
    New(BatchView),
    /// The same key and request came before: that batch, as it is now.
    Replayed(BatchView),
}

/// A page of something listed newest first, and the last item's id when more follow.
#[derive(Debug)]
pub struct Paged<T, C> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next page.
    pub more_after: Option<C>,
}

const MISSING: LedgerError = LedgerError::NotFound("no such batch");

impl Batches {
    /// Stores a batch for the ledgers of `request`. Every named merchant must allow the
    /// caller `create` (else [`LedgerError::Forbidden`] naming the first that does not);
    /// `"*"` is judged per merchant when it is expanded. With a key, the same key and
    /// request answer the first batch again; the same key with another request is refused.
    pub async fn create(
        &self,
        caller: &Caller,
        request: BatchRequest,
        key: Option<String>,
    ) -> Result<BatchCreated, LedgerError> {
        match &request.merchants {
            Selection::Only(ids) => {
                for merchant in ids {
                    assert_merchant_access(&self.authz, caller, merchant, Permission::Create)
                        .await?;
                }
            }
            // Every merchant the caller may create for: one who may create for none would
            // make a worker list the whole source for nothing.
            Selection::All => {
                if matches!(self.scope(caller, Permission::Create).await?, MerchantScope::Only(ref m) if m.is_empty())
                {
                    return Err(LedgerError::EveryMerchantOnly(
                        "a batch of \"*\" needs create on at least one merchant",
                    ));
                }
            }
        }
        let new = NewBatch {
            id: BatchId::from_i64(self.ids.next_id().as_i64()),
            created_by: caller.subject.clone(),
            merchants: request.merchants.clone(),
            ledger_type: request.ledger_type,
            period: request.period,
            formats: request.formats.clone(),
            timezone: request.timezone,
            created_at: Utc::now(),
        };
        let key = key.map(|key| BatchKey {
            subject: caller.subject.clone(),
            key,
            request_hash: request.fingerprint(),
        });
        match self.store.insert_batch(&new, key.as_ref()).await? {
            BatchInsert::Created(batch) => {
                tracing::info!(target: "ledger::api::batches", batchId = %batch.id, subject = %caller.subject, period = %batch.period, "batch created");
                Ok(BatchCreated::New(BatchView {
                    batch,
                    tally: Tally::default(),
                }))
            }
            BatchInsert::Replay {
                request_hash,
                batch,
            } => {
                if request_hash != request.fingerprint() {
                    return Err(LedgerError::IdempotencyMismatch);
                }
                let tally = self.store.tally_batch(batch.id).await?;
                Ok(BatchCreated::Replayed(BatchView { batch, tally }))
            }
        }
    }

    /// The batch `id` with its members counted now, if the caller created it or may read
    /// every merchant; anything else is the same [`LedgerError::NotFound`].
    pub async fn get(&self, caller: &Caller, id: BatchId) -> Result<BatchView, LedgerError> {
        let batch = self.visible(caller, id).await?;
        let tally = self.store.tally_batch(batch.id).await?;
        Ok(BatchView { batch, tally })
    }

    /// The caller's batches, newest first, with the counts last published (at most a
    /// second old while they run).
    pub async fn list(
        &self,
        caller: &Caller,
        before: Option<BatchId>,
        limit: u32,
    ) -> Result<Paged<Batch, BatchId>, LedgerError> {
        let mut items = self
            .store
            .list_batches(Some(&caller.subject), before, limit + 1)
            .await?;
        let more_after = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|b| b.id)
        } else {
            None
        };
        Ok(Paged { items, more_after })
    }

    /// A page of the batch's ledgers, newest first, leaving out any of a merchant the
    /// caller may not read.
    pub async fn members(
        &self,
        caller: &Caller,
        id: BatchId,
        filter: Option<MemberFilter>,
        before: Option<LedgerId>,
        limit: u32,
    ) -> Result<Paged<Member, LedgerId>, LedgerError> {
        let batch = self.visible(caller, id).await?;
        let scope = self.scope(caller, Permission::Read).await?;
        let mut items = self
            .store
            .batch_members(batch.id, filter, before, limit + 1)
            .await?;
        let more_after = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|m| m.ledger.id)
        } else {
            None
        };
        items.retain(|m| scope.contains(&m.ledger.merchant_id));
        Ok(Paged { items, more_after })
    }

    /// The batch `id` if `caller` may see it: its creator, or one who may read every
    /// merchant.
    async fn visible(&self, caller: &Caller, id: BatchId) -> Result<Batch, LedgerError> {
        let batch = self.store.get_batch(id).await?.ok_or(MISSING)?;
        if batch.created_by == caller.subject {
            return Ok(batch);
        }
        match self.scope(caller, Permission::Read).await? {
            MerchantScope::All => Ok(batch),
            MerchantScope::Only(_) => Err(MISSING),
        }
    }

    async fn scope(&self, caller: &Caller, perm: Permission) -> Result<MerchantScope, LedgerError> {
        self.authz
            .scope(&caller.subject, perm)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))
    }
}
