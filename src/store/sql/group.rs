//! Group commit of new ledgers: the creates that arrive while a commit is being made wait
//! for the next one, and go in together: one transaction, one `fsync`, however many
//! ledgers. No 202 is sent before its ledger is durable (SPEC §3): a create's reply comes
//! after the commit that holds it.
//!
//! Each ledger keeps its own outcome: it is inserted within a savepoint of its own
//! ([`super::ledgers::insert_one`]), so an identity already taken, a replayed idempotency
//! key or a failed statement concerns that ledger alone, and ledgers of the same group see
//! one another as a later transaction would (a second create of the same identity is
//! `Exists`, of the same key a replay). Only a failure of the transaction itself (the
//! commit, a broken connection) fails the whole group, and every waiter hears of it.
//!
//! There is no waiting to gather a group: the writer takes whatever is queued when it is
//! free, so a lone create is committed at once and under load the groups grow by
//! themselves with the time a commit takes. Only the embedded store (SQLite: one writer at
//! a time, whose every commit is an `fsync`) uses it. PostgreSQL already groups the WAL
//! flushes of concurrent commits, and there one transaction holding many creates could
//! deadlock on the unique index with another replica's.

use tokio::sync::{mpsc, oneshot};

use std::collections::HashSet;

use super::ledgers::{explain, insert_many, insert_one};
use super::{Dialect, Driver, WriteGate, args};
use crate::store::{IdempotencyRecord, InsertOutcome, NewLedger, StoreError};

/// At most this many creates in one transaction: the write lock is held for no longer
/// than a few milliseconds, so the workers' own writes are not kept waiting.
const MAX_GROUP: usize = 256;
/// Creates waiting for the writer; a full queue holds the caller back (back-pressure).
const QUEUE: usize = 4 * MAX_GROUP;

/// One create waiting for its commit.
struct Pending {
    new: NewLedger,
    idempotency: Option<IdempotencyRecord>,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

/// The handle of the writer task; the task ends when the handle is dropped, after the
/// creates already queued.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the writer on `pool` (on the current Tokio runtime).
    pub(super) fn start<D: Dialect>(pool: sqlx::Pool<D::Db>, gate: Option<WriteGate>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(write::<D>(pool, gate, pending));
        Self { queue }
    }

    /// Inserts `new` in the next group and answers once that group is committed.
    pub(super) async fn insert(
        &self,
        new: NewLedger,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            new,
            idempotency,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::Unavailable("the job store is shutting down".into()))?;
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the job store stopped before the ledger was committed".into(),
            ))
        })
    }
}

/// The writer: one group at a time, until every handle is gone.
async fn write<D: Dialect>(
    pool: sqlx::Pool<D::Db>,
    gate: Option<WriteGate>,
    mut pending: mpsc::Receiver<Pending>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while pending.recv_many(&mut group, MAX_GROUP).await > 0 {
        let turn = match &gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        let committed = commit::<D>(&pool, &group).await;
        drop(turn);
        match committed {
            Ok(outcomes) => {
                for (one, outcome) in group.drain(..).zip(outcomes) {
                    // A caller that went away still has its ledger: queued, like any other.
                    let _ = one.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(target: "ledger::store", error = %e, ledgers = group.len(), "a group of new ledgers could not be committed");
                let message = e.to_string();
                for one in group.drain(..) {
                    let _ = one
                        .reply
                        .send(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// One transaction holding every create of `group`; their outcomes in order, valid only
/// once committed (which they are when this returns `Ok`). The creates that share nothing
/// with an earlier one of the group go in together ([`insert_many`]); the others, and all
/// of them should that fail, one at a time after them ([`insert_one`]), so each sees the
/// group's earlier ledgers as it would have in a transaction of its own.
async fn commit<D: Dialect>(
    pool: &sqlx::Pool<D::Db>,
    group: &[Pending],
) -> Result<Vec<Result<InsertOutcome, StoreError>>, StoreError> {
    let mut tx = pool.begin().await?;
    let (together, mut alone) = apart(group);
    let mut outcomes: Vec<Option<Result<InsertOutcome, StoreError>>> =
        group.iter().map(|_| None).collect();

    let creates: Vec<_> = together
        .iter()
        .map(|&i| (&group[i].new, group[i].idempotency.as_ref()))
        .collect();
    D::Db::execute(&mut tx, "SAVEPOINT create_ledgers", args![]).await?;
    match insert_many::<D>(&mut tx, &creates).await {
        Ok(results) => {
            D::Db::execute(&mut tx, "RELEASE SAVEPOINT create_ledgers", args![]).await?;
            for (i, result) in together.into_iter().zip(results) {
                let one = &group[i];
                outcomes[i] = Some(match result {
                    Ok(ledger) => Ok(InsertOutcome::Created(ledger)),
                    // A failed read fails the group: the transaction may be gone with it.
                    Err(undone) => {
                        explain::<D>(&mut tx, &one.new, one.idempotency.as_ref(), undone).await?
                    }
                });
            }
        }
        Err(e) => {
            tracing::warn!(target: "ledger::store", error = %e, ledgers = together.len(), "new ledgers could not be inserted together; inserting them one by one");
            D::Db::execute(&mut tx, "ROLLBACK TO SAVEPOINT create_ledgers", args![]).await?;
            D::Db::execute(&mut tx, "RELEASE SAVEPOINT create_ledgers", args![]).await?;
            alone.extend(together);
            alone.sort_unstable();
        }
    }
    for i in alone {
        let one = &group[i];
        outcomes[i] = Some(insert_one::<D>(&mut tx, &one.new, one.idempotency.as_ref()).await?);
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::Corrupt("a create was left out".into()))))
        .collect())
}

/// The positions in `group` of the creates that share no id, identity or idempotency key
/// with an earlier one, and of the others.
fn apart(group: &[Pending]) -> (Vec<usize>, Vec<usize>) {
    let mut ids = HashSet::new();
    let mut identities = HashSet::new();
    let mut keys = HashSet::new();
    let (mut together, mut alone) = (Vec::new(), Vec::new());
    for (i, one) in group.iter().enumerate() {
        let new = &one.new;
        let identity = (
            new.merchant_id.as_str(),
            new.ledger_type,
            new.period.to_string(),
            new.requested_timezone,
            new.format,
        );
        let key = one
            .idempotency
            .as_ref()
            .map(|r| (r.subject.as_str(), r.key.as_str()));
        let first = !ids.contains(&new.id)
            && !identities.contains(&identity)
            && key.is_none_or(|k| !keys.contains(&k));
        ids.insert(new.id);
        identities.insert(identity);
        keys.extend(key);
        if first {
            together.push(i);
        } else {
            alone.push(i);
        }
    }
    (together, alone)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::contract::new_ledger;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{InsertOutcome, JobStore, StoreError};

    /// Every create answered `Created` is in the file when it is opened afresh: the reply
    /// came after the commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answered_create_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        store.migrate().await.unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let period = format!("{}-{:02}", 2000 + i / 12, 1 + i % 12);
                    let new = new_ledger(9000 + i, "m_group", &period, None);
                    store.insert_ledger(&new, None).await.unwrap()
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                InsertOutcome::Created(l) => ids.push(l.id),
                other => panic!("{other:?}"),
            }
        }
        drop(store);
        let reopened = SqliteStore::open(&path).await.unwrap();
        for id in ids {
            assert!(reopened.get_ledger(id).await.unwrap().is_some(), "{id}");
        }
    }

    /// A create the database refuses fails alone: the others of its group are stored.
    #[tokio::test]
    async fn a_refused_create_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("ledger.db"))
                .await
                .unwrap(),
        );
        store.migrate().await.unwrap();
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON ledgers WHEN NEW.merchant_id = 'm_poison' \
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let tasks: Vec<_> = ["m_fine_a", "m_poison", "m_fine_b", "m_fine_c"]
            .into_iter()
            .enumerate()
            .map(|(i, merchant)| {
                let store = store.clone();
                tokio::spawn(async move {
                    let new = new_ledger(9700 + i as i64, merchant, "2026-01", None);
                    (merchant, store.insert_ledger(&new, None).await)
                })
            })
            .collect();
        for task in tasks {
            let (merchant, outcome) = task.await.unwrap();
            if merchant == "m_poison" {
                assert!(
                    matches!(outcome, Err(StoreError::Backend(_))),
                    "{outcome:?}"
                );
            } else {
                assert!(
                    matches!(outcome, Ok(InsertOutcome::Created(_))),
                    "{outcome:?}"
                );
            }
        }
        for (i, stored) in [true, false, true, true].into_iter().enumerate() {
            let id = crate::domain::LedgerId::from_i64(9700 + i as i64);
            assert_eq!(
                store.get_ledger(id).await.unwrap().is_some(),
                stored,
                "{id}"
            );
        }
    }

    /// A group that cannot be committed fails every one of its creates, none hangs, and
    /// nothing of it is stored.
    #[tokio::test]
    async fn a_failed_commit_fails_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        store.migrate().await.unwrap();
        store.pool.close().await;
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let new = new_ledger(9500 + i, "m_group_fail", "2026-01", None);
                    store.insert_ledger(&new, None).await
                })
            })
            .collect();
        for task in tasks {
            let outcome = task.await.unwrap();
            assert!(
                matches!(
                    outcome,
                    Err(StoreError::Unavailable(_) | StoreError::Backend(_))
                ),
                "{outcome:?}"
            );
        }
        drop(store);
        let reopened = SqliteStore::open(&path).await.unwrap();
        assert!(
            reopened
                .get_ledger(crate::domain::LedgerId::from_i64(9500))
                .await
                .unwrap()
                .is_none()
        );
    }
}
