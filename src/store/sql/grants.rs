//! Authorization grants and the policy revision that tells caches they changed, Snowflake
//! node-id leases, and which migrations are pending.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{Conn, Dialect, Driver, SqlStore, args};
use crate::domain::{Grant, PolicyRevision, grant_digest};
use crate::store::StoreError;

/// Whether a grant change adds or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GrantChange {
    /// `INSERT … ON CONFLICT DO NOTHING`.
    Add,
    /// `DELETE`.
    Remove,
}

type GrantRow = (String, String, String);

fn grant_of((subject, role, domain): GrantRow) -> Grant {
    Grant {
        subject,
        role,
        domain,
    }
}

/// Every grant, read on `conn` (inside the transaction that changes them).
async fn grants_in<D: Dialect>(conn: &mut Conn<D>) -> Result<Vec<Grant>, StoreError> {
    let rows: Vec<GrantRow> = D::Db::fetch_all(
        conn,
        "SELECT subject, role, domain FROM policy_grants",
        args![],
    )
    .await?;
    Ok(rows.into_iter().map(grant_of).collect())
}

/// Takes the policy row's lock for the rest of the transaction; returns the revision.
async fn lock_revision<D: Dialect>(conn: &mut Conn<D>) -> Result<i64, StoreError> {
    let rows: Vec<(i64,)> = D::Db::fetch_all(conn, D::LOCK_POLICY, args![]).await?;
    rows.into_iter()
        .next()
        .map(|(revision,)| revision)
        .ok_or_else(|| StoreError::Corrupt("the policy revision row is missing".into()))
}

/// Moves the policy revision and records the digest of the grants as they now are, inside
/// the grant's transaction, so a cache that sees the new revision also sees the new grants.
async fn bump_revision<D: Dialect>(conn: &mut Conn<D>) -> Result<(), StoreError> {
    let digest = grant_digest(&grants_in::<D>(conn).await?);
    let sql = format!(
        "UPDATE policy_revision SET revision = {}, digest = $1 WHERE id = 1",
        D::RANDOM_REVISION
    );
    D::Db::execute(conn, &sql, args![digest]).await?;
    Ok(())
}

impl<D: Dialect> SqlStore<D> {
    /// [`crate::store::JobStore::list_grants`].
    pub(super) async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        let rows: Vec<GrantRow> = self
            .fetch_all(
                "SELECT subject, role, domain FROM policy_grants ORDER BY subject, domain, role",
                args![],
            )
            .await?;
        Ok(rows.into_iter().map(grant_of).collect())
    }

    /// [`crate::store::JobStore::add_grant`] and [`crate::store::JobStore::remove_grant`]:
    /// true when the grant set changed.
    pub(super) async fn change_grant(
        &self,
        grant: &Grant,
        change: GrantChange,
    ) -> Result<bool, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        lock_revision::<D>(&mut tx).await?;
        let (sql, binds) = match change {
            GrantChange::Add => (
                "INSERT INTO policy_grants (subject, role, domain, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                args![
                    grant.subject.as_str(),
                    grant.role.as_str(),
                    grant.domain.as_str(),
                    Utc::now(),
                ],
            ),
            GrantChange::Remove => (
                "DELETE FROM policy_grants WHERE subject = $1 AND role = $2 AND domain = $3",
                args![
                    grant.subject.as_str(),
                    grant.role.as_str(),
                    grant.domain.as_str(),
                ],
            ),
        };
        let changed = D::Db::execute(&mut tx, sql, binds).await? == 1;
        if changed {
            bump_revision::<D>(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// [`crate::store::JobStore::policy_revision`].
    pub(super) async fn revision(&self) -> Result<PolicyRevision, StoreError> {
        let (revision, digest): (i64, Option<String>) = self
            .fetch_one(
                "SELECT revision, digest FROM policy_revision WHERE id = 1",
                args![],
            )
            .await?;
        if let Some(digest) = digest {
            return Ok(PolicyRevision { revision, digest });
        }
        // A database from before digests: compute it once, under the same lock as changes.
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let revision = lock_revision::<D>(&mut tx).await?;
        let digest = grant_digest(&grants_in::<D>(&mut tx).await?);
        D::Db::execute(
            &mut tx,
            "UPDATE policy_revision SET digest = $1 WHERE id = 1",
            args![digest.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(PolicyRevision { revision, digest })
    }

    /// [`crate::store::JobStore::lease_node_id`].
    pub(super) async fn take_node_id(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u16>, StoreError> {
        let taken: Vec<(i64,)> = self
            .fetch_all(
                "SELECT CAST(node_id AS BIGINT) FROM node_leases WHERE expires_at >= $1",
                args![now],
            )
            .await?;
        let taken: HashSet<i64> = taken.into_iter().map(|(n,)| n).collect();
        for candidate in (0..1024i64).filter(|n| !taken.contains(n)) {
            // Conditional upsert: only a free or expired row is taken, so racing processes
            // never end up with the same id.
            let won = self
                .execute(
                    "INSERT INTO node_leases (node_id, holder, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (node_id) DO UPDATE SET holder = excluded.holder, \
                     expires_at = excluded.expires_at WHERE node_leases.expires_at < $4",
                    args![candidate, holder, until, now],
                )
                .await?;
            if won == 1 {
                return Ok(u16::try_from(candidate).ok());
            }
        }
        Ok(None)
    }

    /// [`crate::store::JobStore::pending_migrations`].
    pub(super) async fn pending_migration_names(&self) -> Result<Vec<String>, StoreError> {
        let (exists,): (bool,) = self.fetch_one(D::MIGRATIONS_TABLE_EXISTS, args![]).await?;
        let applied: Vec<(i64,)> = if exists {
            self.fetch_all(
                "SELECT version FROM _sqlx_migrations WHERE success",
                args![],
            )
            .await?
        } else {
            Vec::new()
        };
        Ok(D::migrator()
            .iter()
            .filter(|m| !applied.iter().any(|(v,)| *v == m.version))
            .map(|m| format!("{}_{}", m.version, m.description))
            .collect())
    }
}
