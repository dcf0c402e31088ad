//! Merchant keys and their files in SQL (SPEC §15).
//!
//! A shred and a completion race on the merchant key's row: the shred updates it (a row
//! lock) before it marks the key's files, and a completion reads it `FOR SHARE` before it
//! records its file (see `jobs::complete_job`), so either the completion waits and records
//! its file as shredded, or it commits first and the shred's marking (a later statement)
//! sees its file.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Arg, Dialect, Driver, SqlStore, args};
use crate::domain::{LedgerId, MerchantId};
use crate::store::StoreError;
use crate::store::keys::{
    AuditRecord, KeyCounts, KeyStore, MerchantKeyRow, Resealed, RootCount, RootSealedFile,
    SealedSecrets, ServiceKeyRow, ShredError, Shredded,
};

const KEY_COLUMNS: &str = "key_id, merchant_id, root_key_id, wrapped, created_at, shredded_at";

type KeyTuple = (String, String, String, String, i64, Option<i64>);

fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("time {ms} out of range")))
}

fn key_row(t: KeyTuple) -> Result<MerchantKeyRow, StoreError> {
    let (key_id, merchant, root_key_id, wrapped, created_at, shredded_at) = t;
    Ok(MerchantKeyRow {
        merchant_id: MerchantId::parse(&merchant)
            .map_err(|_| StoreError::Corrupt(format!("merchant {merchant:?} of key {key_id}")))?,
        key_id,
        root_key_id,
        wrapped,
        created_at: time(created_at)?,
        shredded_at: shredded_at.map(time).transpose()?,
    })
}

/// Orders the transaction on `conn` against a shred of merchant key `key_id`: PostgreSQL
/// reads the key's row `FOR SHARE`, so a shred either committed before (and the statements
/// after this one read the key as shredded) or waits for the transaction; nothing on
/// SQLite, where the transaction's first write takes the one write lock with its read (a
/// read first would make that upgrade fail when another process wrote meanwhile).
pub(super) async fn order_against_shred<D: Dialect>(
    conn: &mut <D::Db as sqlx::Database>::Connection,
    key_id: &str,
) -> Result<(), sqlx::Error> {
    if !D::SHARE_ROW.is_empty() {
        D::Db::execute(
            conn,
            &format!(
                "SELECT 1 FROM merchant_keys WHERE key_id = $1{}",
                D::SHARE_ROW
            ),
            args![key_id],
        )
        .await?;
    }
    Ok(())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl<D: Dialect> SqlStore<D> {
    async fn service_keys_where(
        &self,
        filter: &str,
        args: super::Args,
    ) -> Result<Vec<ServiceKeyRow>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = self
            .fetch_all(
                &format!(
                    "SELECT name, root_key_id, wrapped, created_at FROM service_keys WHERE {filter}"
                ),
                args,
            )
            .await?;
        rows.into_iter()
            .map(|(name, root_key_id, wrapped, created_at)| {
                Ok(ServiceKeyRow {
                    name,
                    root_key_id,
                    wrapped,
                    created_at: time(created_at)?,
                })
            })
            .collect()
    }

    async fn keys_where(
        &self,
        filter: &str,
        args: super::Args,
    ) -> Result<Vec<MerchantKeyRow>, StoreError> {
        let rows: Vec<KeyTuple> = self
            .fetch_all(
                &format!("SELECT {KEY_COLUMNS} FROM merchant_keys WHERE {filter}"),
                args,
            )
            .await?;
        rows.into_iter().map(key_row).collect()
    }
}

#[async_trait]
impl<D: Dialect> KeyStore for SqlStore<D> {
    async fn live_merchant_key(
        &self,
        merchant: &MerchantId,
    ) -> Result<Option<MerchantKeyRow>, StoreError> {
        Ok(self
            .keys_where(
                "merchant_id = $1 AND shredded_at IS NULL",
                args![merchant.as_str()],
            )
            .await?
            .into_iter()
            .next())
    }

    async fn merchant_key(&self, key_id: &str) -> Result<Option<MerchantKeyRow>, StoreError> {
        Ok(self
            .keys_where("key_id = $1", args![key_id])
            .await?
            .into_iter()
            .next())
    }

    async fn insert_merchant_key(&self, key: &MerchantKeyRow) -> Result<bool, StoreError> {
        // The unique index on a merchant's live key turns a racing second insert into no
        // row: the caller reads the winner's key.
        let n = self
            .execute(
                "INSERT INTO merchant_keys (key_id, merchant_id, root_key_id, wrapped, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                args![
                    key.key_id.as_str(),
                    key.merchant_id.as_str(),
                    key.root_key_id.as_str(),
                    key.wrapped.as_str(),
                    key.created_at,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn service_key(&self, name: &str) -> Result<Option<ServiceKeyRow>, StoreError> {
        Ok(self
            .service_keys_where("name = $1", args![name])
            .await?
            .into_iter()
            .next())
    }

    async fn insert_service_key(&self, key: &ServiceKeyRow) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "INSERT INTO service_keys (name, root_key_id, wrapped, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                args![
                    key.name.as_str(),
                    key.root_key_id.as_str(),
                    key.wrapped.as_str(),
                    key.created_at
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn service_keys_not_under(
        &self,
        root_key_id: &str,
    ) -> Result<Vec<ServiceKeyRow>, StoreError> {
        self.service_keys_where("root_key_id <> $1 ORDER BY name", args![root_key_id])
            .await
    }

    async fn rewrap_service_key(
        &self,
        name: &str,
        from_root: &str,
        to_root: &str,
        wrapped: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE service_keys SET root_key_id = $1, wrapped = $2, rewrapped_at = $3 \
                 WHERE name = $4 AND root_key_id = $5",
                args![to_root, wrapped, at, name, from_root],
            )
            .await?;
        Ok(n == 1)
    }

    async fn sealed_secrets(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SealedSecrets>, StoreError> {
        let rows: Vec<(i64, String, Option<String>)> = self
            .fetch_all(
                "SELECT id, secret, previous_secret FROM webhooks WHERE id > $1 \
                 ORDER BY id LIMIT $2",
                args![after.unwrap_or(i64::MIN), i64::from(limit)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(webhook_id, secret, previous)| SealedSecrets {
                webhook_id,
                secret,
                previous,
            })
            .collect())
    }

    async fn reseal_secrets(
        &self,
        old: &SealedSecrets,
        new: &SealedSecrets,
    ) -> Result<bool, StoreError> {
        // NULL-safe comparison of the previous secret, written for both engines.
        let n = self
            .execute(
                "UPDATE webhooks SET secret = $1, previous_secret = $2 \
                 WHERE id = $3 AND secret = $4 \
                 AND COALESCE(previous_secret, '') = COALESCE($5, '')",
                vec![
                    Arg::Text(new.secret.clone()),
                    Arg::OptText(new.previous.clone()),
                    Arg::Int(old.webhook_id),
                    Arg::Text(old.secret.clone()),
                    Arg::OptText(old.previous.clone()),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn keys_not_under(
        &self,
        root_key_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MerchantKeyRow>, StoreError> {
        self.keys_where(
            "shredded_at IS NULL AND root_key_id <> $1 AND key_id > $2 ORDER BY key_id LIMIT $3",
            args![root_key_id, after.unwrap_or(""), i64::from(limit)],
        )
        .await
    }

    async fn rewrap_merchant_key(
        &self,
        key_id: &str,
        from_root: &str,
        to_root: &str,
        wrapped: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE merchant_keys SET root_key_id = $1, wrapped = $2, rewrapped_at = $3 \
                 WHERE key_id = $4 AND root_key_id = $5 AND shredded_at IS NULL",
                args![to_root, wrapped, at, key_id, from_root],
            )
            .await?;
        Ok(n == 1)
    }

    async fn root_sealed_files(
        &self,
        after: Option<(LedgerId, u32)>,
        limit: u32,
    ) -> Result<Vec<RootSealedFile>, StoreError> {
        let (after_id, after_version) = after
            .map(|(id, v)| (id.as_i64(), i64::from(v)))
            .unwrap_or((i64::MIN, 0));
        let rows: Vec<(i64, String, i64, i64, String, Option<String>, String)> = self
            .fetch_all(
                "SELECT f.ledger_id, l.merchant_id, f.version, f.attempt, f.object_key, \
                 f.header_sha256, f.sha256 FROM ledger_files f JOIN ledgers l ON l.id = f.ledger_id \
                 WHERE f.key_id IS NULL AND f.shredded_at IS NULL \
                 AND (f.ledger_id > $1 OR (f.ledger_id = $1 AND f.version > $2)) \
                 ORDER BY f.ledger_id, f.version LIMIT $3",
                args![after_id, after_version, i64::from(limit)],
            )
            .await?;
        rows.into_iter()
            .map(
                |(id, merchant, version, attempt, object_key, header_sha256, sha256)| {
                    Ok(RootSealedFile {
                        ledger_id: LedgerId::from_i64(id),
                        merchant_id: MerchantId::parse(&merchant)
                            .map_err(|_| StoreError::Corrupt(format!("merchant {merchant:?}")))?,
                        version: u32::try_from(version)
                            .map_err(|_| StoreError::Corrupt(format!("version {version}")))?,
                        attempt: u32::try_from(attempt)
                            .map_err(|_| StoreError::Corrupt(format!("attempt {attempt}")))?,
                        object_key,
                        header_sha256,
                        sha256,
                    })
                },
            )
            .collect()
    }

    async fn swap_file_object(&self, r: &Resealed) -> Result<bool, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        // A shred either committed before (the update below sees the key shredded) or waits
        // for this transaction, as with a completion.
        order_against_shred::<D>(&mut tx, &r.key_id).await?;
        let n = D::Db::execute(
            &mut tx,
            "UPDATE ledger_files SET object_key = $1, header_sha256 = $2, key_id = $3, \
             replaced_object_key = object_key \
             WHERE ledger_id = $4 AND version = $5 AND object_key = $6 AND key_id IS NULL \
             AND shredded_at IS NULL AND EXISTS (SELECT 1 FROM merchant_keys \
             WHERE key_id = $3 AND shredded_at IS NULL)",
            args![
                r.object_key.as_str(),
                r.header_sha256.as_str(),
                r.key_id.as_str(),
                r.ledger_id.as_i64(),
                i64::from(r.version),
                r.old_object_key.as_str(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn replaced_objects(
        &self,
        limit: u32,
    ) -> Result<Vec<(LedgerId, u32, String)>, StoreError> {
        let rows: Vec<(i64, i64, String)> = self
            .fetch_all(
                "SELECT ledger_id, version, replaced_object_key FROM ledger_files \
                 WHERE replaced_object_key IS NOT NULL ORDER BY ledger_id, version LIMIT $1",
                args![i64::from(limit)],
            )
            .await?;
        rows.into_iter()
            .map(|(id, version, key)| {
                Ok((
                    LedgerId::from_i64(id),
                    u32::try_from(version)
                        .map_err(|_| StoreError::Corrupt(format!("version {version}")))?,
                    key,
                ))
            })
            .collect()
    }

    async fn forget_replaced(
        &self,
        ledger: LedgerId,
        version: u32,
        object_key: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE ledger_files SET replaced_object_key = NULL \
             WHERE ledger_id = $1 AND version = $2 AND replaced_object_key = $3",
            args![ledger.as_i64(), i64::from(version), object_key],
        )
        .await?;
        Ok(())
    }

    async fn key_counts(&self) -> Result<KeyCounts, StoreError> {
        let keys: Vec<(String, i64)> = self
            .fetch_all(
                "SELECT root_key_id, COUNT(*) FROM merchant_keys WHERE shredded_at IS NULL \
                 GROUP BY root_key_id ORDER BY root_key_id",
                vec![],
            )
            .await?;
        let files: Vec<(String, i64)> = self
            .fetch_all(
                "SELECT k.root_key_id, COUNT(*) FROM ledger_files f \
                 JOIN merchant_keys k ON k.key_id = f.key_id \
                 WHERE f.shredded_at IS NULL GROUP BY k.root_key_id",
                vec![],
            )
            .await?;
        let (root_sealed, shredded_files, shredded_keys): (i64, i64, i64) = self
            .fetch_one(
                "SELECT \
                 (SELECT COUNT(*) FROM ledger_files WHERE key_id IS NULL AND shredded_at IS NULL), \
                 (SELECT COUNT(*) FROM ledger_files WHERE shredded_at IS NOT NULL), \
                 (SELECT COUNT(*) FROM merchant_keys WHERE shredded_at IS NOT NULL)",
                vec![],
            )
            .await?;
        let services: Vec<(String, i64)> = self
            .fetch_all(
                "SELECT root_key_id, COUNT(*) FROM service_keys GROUP BY root_key_id",
                vec![],
            )
            .await?;
        // (root, merchant keys, service keys, files), one entry per root.
        let mut roots: Vec<RootCount> = Vec::new();
        let mut add = |root: String, n: i64, field: fn(&mut RootCount) -> &mut u64| {
            let i = match roots.iter().position(|r| r.root_key_id == root) {
                Some(i) => i,
                None => {
                    roots.push(RootCount {
                        root_key_id: root,
                        merchant_keys: 0,
                        service_keys: 0,
                        files: 0,
                    });
                    roots.len() - 1
                }
            };
            *field(&mut roots[i]) = count(n);
        };
        for (root, n) in keys {
            add(root, n, |r| &mut r.merchant_keys);
        }
        for (root, n) in services {
            add(root, n, |r| &mut r.service_keys);
        }
        for (root, n) in files {
            add(root, n, |r| &mut r.files);
        }
        roots.sort_by(|a, b| a.root_key_id.cmp(&b.root_key_id));
        Ok(KeyCounts {
            roots,
            root_sealed_files: count(root_sealed),
            shredded_files: count(shredded_files),
            shredded_keys: count(shredded_keys),
        })
    }

    async fn shred_merchant(
        &self,
        merchant: &MerchantId,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Shredded, ShredError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let m = merchant.as_str();
        // The key rows first: their row locks order this shred with completions and swaps.
        let destroyed: Vec<(String,)> = D::Db::fetch_all(
            &mut tx,
            "UPDATE merchant_keys SET wrapped = '', shredded_at = $1, shredded_by = $2 \
             WHERE merchant_id = $3 AND shredded_at IS NULL RETURNING key_id",
            args![at, actor, m],
        )
        .await
        .map_err(StoreError::from)?;
        let keys = destroyed.len() as u64;
        let ids: Vec<String> = destroyed.into_iter().map(|(id,)| id).collect();
        let (root_sealed,): (i64,) = D::Db::fetch_all(
            &mut tx,
            "SELECT COUNT(*) FROM ledger_files f JOIN ledgers l ON l.id = f.ledger_id \
             WHERE l.merchant_id = $1 AND ((f.key_id IS NULL AND f.shredded_at IS NULL) \
             OR f.replaced_object_key IS NOT NULL)",
            args![m],
        )
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .next()
        .unwrap_or((0,));
        if root_sealed > 0 {
            tx.rollback().await.map_err(StoreError::from)?;
            return Err(ShredError::RootSealed(count(root_sealed)));
        }
        let files = D::Db::execute(
            &mut tx,
            "UPDATE ledger_files SET shredded_at = $1, shred_reason = 'MERCHANT_SHRED' \
             WHERE shredded_at IS NULL AND key_id IN \
             (SELECT key_id FROM merchant_keys WHERE merchant_id = $2 AND shredded_at = $1)",
            args![at, m],
        )
        .await
        .map_err(StoreError::from)?;
        D::Db::execute(
            &mut tx,
            "INSERT INTO key_audit (at, actor, action, merchant_id, key_id, detail) \
             VALUES ($1, $2, 'MERCHANT_SHRED', $3, $4, $5)",
            vec![
                at.into(),
                Arg::Text(actor.to_owned()),
                Arg::Text(m.to_owned()),
                Arg::OptText((!ids.is_empty()).then(|| ids.join(","))),
                Arg::Text(format!(
                    "{keys} merchant key(s) destroyed, {files} file(s) made unreadable"
                )),
            ],
        )
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Shredded { keys, files })
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Result<(), (String, DateTime<Utc>)>, StoreError> {
        let n = self
            .execute(
                "INSERT INTO key_leases (name, holder, until) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE key_leases.holder = excluded.holder OR key_leases.until < $4",
                args![name, holder, until, now],
            )
            .await?;
        if n == 1 {
            return Ok(Ok(()));
        }
        let held: Option<(String, i64)> = self
            .fetch_optional(
                "SELECT holder, until FROM key_leases WHERE name = $1",
                args![name],
            )
            .await?;
        match held {
            Some((other, until)) => Ok(Err((other, time(until)?))),
            // Released between the two statements: free now.
            None => Box::pin(self.take_lease(name, holder, until, now)).await,
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM key_leases WHERE name = $1 AND holder = $2",
            args![name, holder],
        )
        .await?;
        Ok(())
    }

    async fn expired_ledgers(
        &self,
        before: DateTime<Utc>,
        after: Option<LedgerId>,
        limit: u32,
    ) -> Result<Vec<(LedgerId, MerchantId)>, StoreError> {
        let rows: Vec<(i64, String)> = self
            .fetch_all(
                "SELECT l.id, l.merchant_id FROM ledgers l \
                 WHERE l.stage = 'FINAL' AND l.completed_at < $1 AND l.id > $2 \
                 AND EXISTS (SELECT 1 FROM ledger_files f \
                   WHERE f.ledger_id = l.id AND f.removed_at IS NULL) \
                 ORDER BY l.id LIMIT $3",
                args![
                    before,
                    after.map_or(i64::MIN, LedgerId::as_i64),
                    i64::from(limit)
                ],
            )
            .await?;
        rows.into_iter()
            .map(|(id, m)| {
                Ok((
                    LedgerId::from_i64(id),
                    MerchantId::parse(&m)
                        .map_err(|_| StoreError::Corrupt(format!("merchant {m:?}")))?,
                ))
            })
            .collect()
    }

    async fn mark_retained(&self, ledger: LedgerId, at: DateTime<Utc>) -> Result<u64, StoreError> {
        self.execute(
            "UPDATE ledger_files SET shredded_at = $1, shred_reason = 'RETENTION' \
             WHERE ledger_id = $2 AND shredded_at IS NULL",
            args![at, ledger.as_i64()],
        )
        .await
    }

    async fn mark_removed(&self, ledger: LedgerId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.execute(
            "UPDATE ledger_files SET removed_at = $1 WHERE ledger_id = $2 AND removed_at IS NULL",
            args![at, ledger.as_i64()],
        )
        .await?;
        Ok(())
    }

    async fn record_audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO key_audit (at, actor, action, merchant_id, key_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                r.at.into(),
                Arg::Text(r.actor.clone()),
                Arg::Text(r.action.clone()),
                Arg::OptText(r.merchant_id.clone()),
                Arg::OptText(r.key_id.clone()),
                Arg::Text(r.detail.clone()),
            ],
        )
        .await?;
        Ok(())
    }

    async fn audit_log(
        &self,
        merchant: Option<&MerchantId>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<(i64, String, String, Option<String>, Option<String>, String)> = self
            .fetch_all(
                "SELECT at, actor, action, merchant_id, key_id, detail FROM key_audit \
                 WHERE ($1 IS NULL OR merchant_id = $1) ORDER BY id DESC LIMIT $2",
                vec![
                    Arg::OptText(merchant.map(|m| m.as_str().to_owned())),
                    Arg::Int(i64::from(limit)),
                ],
            )
            .await?;
        rows.into_iter()
            .map(|(at, actor, action, merchant_id, key_id, detail)| {
                Ok(AuditRecord {
                    at: time(at)?,
                    actor,
                    action,
                    merchant_id,
                    key_id,
                    detail,
                })
            })
            .collect()
    }
}
