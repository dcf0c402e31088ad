//! Ledgers as users see them: creation with its idempotency key, reads, lists, the timeline
//! and the replay of status changes, and a user's retry, regenerate or delete.

use chrono::{DateTime, Utc};

use super::{Arg, Args, Conn, Dialect, Driver, SqlStore, Taken, args, select_ledgers};
use crate::domain::{Ledger, LedgerId, MerchantId, Status, StatusEvent, TimelineItem};
use crate::store::rows::{EventRow, FileRow, IdempotencyRow, LedgerRow, StatusEventRow};
use crate::store::{
    Expected, IdempotencyRecord, InsertOutcome, ListQuery, NewLedger, StoreError, StoredFile,
    UserChange, idempotency_cutoff,
};

/// The merchants of a scope as one JSON array parameter (`NULL`: every merchant): a scope
/// of any size is one parameter, and SQLite caps their number.
fn merchant_scope(merchants: Option<&[MerchantId]>) -> Result<Arg, StoreError> {
    let Some(list) = merchants else {
        return Ok(Arg::OptText(None));
    };
    let names: Vec<&str> = list.iter().map(MerchantId::as_str).collect();
    serde_json::to_string(&names)
        .map(|json| Arg::OptText(Some(json)))
        .map_err(|e| StoreError::Corrupt(format!("merchant list: {e}")))
}

/// The record of a key that has not expired at `now`, read on `conn`.
async fn find_idempotency<D: Dialect>(
    conn: &mut Conn<D>,
    subject: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let rows: Vec<IdempotencyRow> = D::Db::fetch_all(
        conn,
        "SELECT request_hash, ledger_id, status_code, body FROM idempotency_keys \
         WHERE subject = $1 AND key = $2 AND created_at > $3",
        args![subject, key, idempotency_cutoff(now)],
    )
    .await?;
    Ok(rows
        .into_iter()
        .next()
        .map(|row| row.into_record(subject, key)))
}

/// Why an insert was undone inside its savepoint.
pub(super) enum Undone {
    /// A uniqueness rule of `ledgers` was broken.
    Taken(Taken),
    /// The idempotency key holds a live record (of this request or another).
    KeyTaken,
    /// A uniqueness rule of `ledgers` was broken, which one unknown (a multi-row insert
    /// skips such rows without saying).
    Skipped,
    /// Anything else: this ledger's error.
    Failed(StoreError),
}

impl From<StoreError> for Undone {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}

/// Inserts one ledger (and its idempotency record) inside the open transaction on `conn`,
/// within a savepoint of its own: whatever happens to this ledger, the transaction stays
/// usable for the others of a group commit, and nothing of a refused insert remains. The
/// outer error means the transaction itself broke (nothing in it may be committed); the
/// inner one is this ledger's.
pub(super) async fn insert_one<D: Dialect>(
    conn: &mut Conn<D>,
    new: &NewLedger,
    idempotency: Option<&IdempotencyRecord>,
) -> Result<Result<InsertOutcome, StoreError>, StoreError> {
    D::Db::execute(conn, "SAVEPOINT create_ledger", args![]).await?;
    let undone = match try_insert::<D>(conn, new, idempotency).await {
        Ok(ledger) => {
            D::Db::execute(conn, "RELEASE SAVEPOINT create_ledger", args![]).await?;
            return Ok(Ok(InsertOutcome::Created(ledger)));
        }
        Err(undone) => undone,
    };
    // A failed statement aborts a PostgreSQL transaction until the savepoint is rolled back:
    // undo first, then read.
    D::Db::execute(conn, "ROLLBACK TO SAVEPOINT create_ledger", args![]).await?;
    D::Db::execute(conn, "RELEASE SAVEPOINT create_ledger", args![]).await?;
    explain::<D>(conn, new, idempotency, undone).await
}

/// The start of an insert of new ledgers; [`ledger_values`] gives each row.
const INSERT_LEDGERS: &str = "INSERT INTO ledgers (merchant_id, type, period, \
    requested_timezone, format, id, stage, status, version, attempt_count, created_by, \
    created_at, updated_at, enqueued_at) VALUES ";

/// What an insert of new ledgers hands back: the rows as written, in the shape of
/// [`super::LEDGER_COLUMNS`] (a new ledger has no file yet).
const RETURNING_LEDGERS: &str = " RETURNING id, merchant_id, type, period, requested_timezone, \
    timezone, format, stage, status, version, attempt_count, lease_until, failure_code, \
    failure_message, failure_retryable, failure_at, created_by, created_at, updated_at, \
    started_at, completed_at, deleted_at, NULL AS f_version, NULL AS f_content_type, \
    NULL AS f_size_bytes, NULL AS f_sha256, NULL AS f_file_name, NULL AS f_shredded_at";

/// Parameters of one row of [`INSERT_LEDGERS`].
const LEDGER_PARAMS: usize = 10;

/// One row of [`INSERT_LEDGERS`], its parameters numbered from `$first`, and their values.
fn ledger_values(first: usize, new: &NewLedger) -> (String, Args) {
    let p: Vec<String> = (first..first + LEDGER_PARAMS)
        .map(|n| format!("${n}"))
        .collect();
    let row = format!(
        "({}, {}, {}, {}, {}, {}, {}, {}, 1, 0, {}, {}, {}, {})",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[9], p[9]
    );
    let args = args![
        new.merchant_id.as_str(),
        new.ledger_type.as_str(),
        new.period.to_string(),
        new.requested_timezone.map(|t| t.name()).unwrap_or(""),
        new.format.as_str(),
        new.id.as_i64(),
        new.stage.as_str(),
        Status::Pending.as_str(),
        new.created_by.as_str(),
        new.created_at,
    ];
    (row, args)
}

/// The start of an insert of idempotency records; [`key_values`] gives each row.
const INSERT_KEYS: &str = "INSERT INTO idempotency_keys (subject, key, request_hash, \
    ledger_id, status_code, body, created_at) VALUES ";

/// Parameters of one row of [`INSERT_KEYS`].
const KEY_PARAMS: usize = 7;

/// An upsert that only replaces an expired key (its parameter: the time a key lives, in
/// milliseconds), instead of an error: the transaction stays usable, and a concurrent
/// insert of the same key is waited for, so the loser sees the winner's record.
fn upsert_expired_keys(ttl_param: usize) -> String {
    format!(
        " ON CONFLICT (subject, key) DO UPDATE SET request_hash = excluded.request_hash, \
         ledger_id = excluded.ledger_id, status_code = excluded.status_code, \
         body = excluded.body, created_at = excluded.created_at \
         WHERE idempotency_keys.created_at <= excluded.created_at - ${ttl_param}"
    )
}

/// The time an idempotency record lives, as the parameter of [`upsert_expired_keys`].
fn key_ttl() -> Arg {
    i64::try_from(crate::store::IDEMPOTENCY_TTL.as_millis())
        .unwrap_or(i64::MAX)
        .into()
}

/// One row of [`INSERT_KEYS`] for `new`, its parameters numbered from `$first`.
fn key_values(first: usize, new: &NewLedger, rec: &IdempotencyRecord) -> (String, Args) {
    let p: Vec<String> = (first..first + KEY_PARAMS)
        .map(|n| format!("${n}"))
        .collect();
    let row = format!("({})", p.join(", "));
    let args = args![
        rec.subject.as_str(),
        rec.key.as_str(),
        rec.request_hash.as_str(),
        new.id.as_i64(),
        i64::from(rec.status_code),
        rec.body.as_str(),
        new.created_at,
    ];
    (row, args)
}

/// The ledger row, then the idempotency record; the stored ledger as written.
async fn try_insert<D: Dialect>(
    conn: &mut Conn<D>,
    new: &NewLedger,
    idempotency: Option<&IdempotencyRecord>,
) -> Result<Ledger, Undone> {
    let (row, values) = ledger_values(1, new);
    let sql = format!("{INSERT_LEDGERS}{row}{RETURNING_LEDGERS}");
    let inserted: Result<Vec<LedgerRow>, _> = D::Db::fetch_all(conn, &sql, values).await;
    let rows = match inserted {
        Ok(rows) => rows,
        Err(e) => {
            return Err(match D::taken(&e) {
                Some(taken) => Undone::Taken(taken),
                None => Undone::Failed(e.into()),
            });
        }
    };
    if let Some(rec) = idempotency {
        let (row, mut values) = key_values(1, new, rec);
        values.push(key_ttl());
        let sql = format!("{INSERT_KEYS}{row}{}", upsert_expired_keys(KEY_PARAMS + 1));
        let stored = D::Db::execute(conn, &sql, values)
            .await
            .map_err(StoreError::from)?;
        if stored == 0 {
            return Err(Undone::KeyTaken);
        }
    }
    match rows.into_iter().next() {
        Some(row) => Ok(Ledger::try_from(row)?),
        None => Err(Undone::Failed(StoreError::Corrupt(
            "an inserted ledger came back empty".into(),
        ))),
    }
}

/// Inserts `group` — creates of which no two share an id, an identity or an idempotency
/// key — inside the open transaction on `conn`, in two statements whatever its size: the
/// idempotency records first, then the ledgers whose record was stored (or that have
/// none). A create the store refuses gets its [`Undone`], and nothing of it remains; the
/// error means a statement failed, and the caller must undo everything since it began.
pub(super) async fn insert_many<D: Dialect>(
    conn: &mut Conn<D>,
    group: &[(&NewLedger, Option<&IdempotencyRecord>)],
) -> Result<Vec<Result<Ledger, Undone>>, StoreError> {
    let mut results: Vec<Option<Result<Ledger, Undone>>> = group.iter().map(|_| None).collect();

    let keyed: Vec<(&NewLedger, &IdempotencyRecord)> = group
        .iter()
        .filter_map(|(new, rec)| rec.map(|rec| (*new, rec)))
        .collect();
    let mut stored_keys = std::collections::HashSet::new();
    if !keyed.is_empty() {
        let mut sql = INSERT_KEYS.to_owned();
        let mut values = Args::new();
        for (i, (new, rec)) in keyed.iter().enumerate() {
            let (row, args) = key_values(values.len() + 1, new, rec);
            sql.push_str(if i == 0 { "" } else { ", " });
            sql.push_str(&row);
            values.extend(args);
        }
        values.push(key_ttl());
        sql.push_str(&upsert_expired_keys(values.len()));
        sql.push_str(" RETURNING ledger_id");
        let ids: Vec<(i64,)> = D::Db::fetch_all_once(conn, &sql, values).await?;
        stored_keys.extend(ids.into_iter().map(|(id,)| id));
    }
    for (slot, (new, rec)) in results.iter_mut().zip(group) {
        if rec.is_some() && !stored_keys.contains(&new.id.as_i64()) {
            *slot = Some(Err(Undone::KeyTaken));
        }
    }

    let mut sql = INSERT_LEDGERS.to_owned();
    let mut values = Args::new();
    for (slot, (new, _)) in results.iter().zip(group) {
        if slot.is_none() {
            let (row, args) = ledger_values(values.len() + 1, new);
            sql.push_str(if values.is_empty() { "" } else { ", " });
            sql.push_str(&row);
            values.extend(args);
        }
    }
    if !values.is_empty() {
        sql.push_str(" ON CONFLICT DO NOTHING");
        sql.push_str(RETURNING_LEDGERS);
        let rows: Vec<LedgerRow> = D::Db::fetch_all_once(conn, &sql, values).await?;
        let mut written = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let ledger = Ledger::try_from(row)?;
            written.insert(ledger.id, ledger);
        }
        for (slot, (new, rec)) in results.iter_mut().zip(group) {
            if slot.is_some() {
                continue;
            }
            if let Some(ledger) = written.remove(&new.id) {
                *slot = Some(Ok(ledger));
                continue;
            }
            if let Some(rec) = rec {
                // Its record went in with the others: it goes with the ledger.
                D::Db::execute(
                    conn,
                    "DELETE FROM idempotency_keys WHERE subject = $1 AND key = $2 \
                     AND ledger_id = $3",
                    args![rec.subject.as_str(), rec.key.as_str(), new.id.as_i64()],
                )
                .await?;
            }
            *slot = Some(Err(Undone::Skipped));
        }
    }
    Ok(results
        .into_iter()
        .map(|slot| slot.unwrap_or(Err(Undone::Skipped)))
        .collect())
}

/// What an undone insert tells the caller, read on `conn` after the undo. The inner error
/// is this ledger's own (its statement failed and was undone); the outer one is a failed
/// read, after which the transaction may be gone (SQLite rolls a transaction back by
/// itself on an I/O error), so nothing else in it may be trusted or committed.
pub(super) async fn explain<D: Dialect>(
    conn: &mut Conn<D>,
    new: &NewLedger,
    idempotency: Option<&IdempotencyRecord>,
    undone: Undone,
) -> Result<Result<InsertOutcome, StoreError>, StoreError> {
    // Replays win over "exists": the same key resent after success must replay.
    let replay = async |conn: &mut Conn<D>| match idempotency {
        Some(rec) => find_idempotency::<D>(conn, &rec.subject, &rec.key, new.created_at).await,
        None => Ok(None),
    };
    let outcome = match undone {
        Undone::Failed(e) => return Ok(Err(e)),
        Undone::Taken(Taken::Id) => InsertOutcome::IdTaken,
        Undone::KeyTaken => match replay(conn).await? {
            Some(found) => InsertOutcome::Replay(found),
            // Expired in between: the caller may simply try again.
            None => InsertOutcome::IdTaken,
        },
        Undone::Taken(Taken::Identity) | Undone::Skipped => {
            if let Some(found) = replay(conn).await? {
                return Ok(Ok(InsertOutcome::Replay(found)));
            }
            let requested = new.requested_timezone.map(|t| t.name()).unwrap_or("");
            let existing: Vec<(i64,)> = D::Db::fetch_all(
                conn,
                "SELECT id FROM ledgers WHERE merchant_id = $1 AND type = $2 \
                 AND period = $3 AND requested_timezone = $4 AND format = $5 \
                 AND deleted_at IS NULL",
                args![
                    new.merchant_id.as_str(),
                    new.ledger_type.as_str(),
                    new.period.to_string(),
                    requested,
                    new.format.as_str(),
                ],
            )
            .await?;
            match existing.first() {
                Some((id,)) => InsertOutcome::Exists(LedgerId::from_i64(*id)),
                // Deleted in between: the caller may simply try again.
                None => InsertOutcome::IdTaken,
            }
        }
    };
    Ok(Ok(outcome))
}

/// Lists naming at most this many merchants are read merchant by merchant, each newest
/// first through its own index and cut at the page size, then merged: a viewer of a big
/// merchant and a few small ones costs a page per merchant, not every row of theirs.
/// Longer lists are filtered while reading all ledgers newest first.
pub(crate) const MERGED_MERCHANTS: usize = 64;

/// The statement of one page of `GET /ledgers` and its arguments; `None` when nothing can
/// match (an empty merchant list).
///
/// Every filter combination has an index whose equal columns are its filters and which
/// ends in `id` (migration 0010), so a page is read newest first and stops at the page size:
/// `status`, `period`, `status, period`, `merchant_id`, `merchant_id, status`,
/// `merchant_id, period`; no filter (or the type alone, two values) reads the
/// primary key backwards. `deleted_at` is left out of the index choice ([`Dialect::UNINDEXED`]):
/// otherwise SQLite answers from the identity index (partial on it) and sorts.
pub(crate) fn list_sql<D: Dialect>(
    query: &ListQuery,
) -> Result<Option<(String, Args)>, StoreError> {
    let merchants = match &query.merchants {
        Some(list) if list.is_empty() => return Ok(None),
        other => other.as_deref(),
    };
    let mut binds: Args = Vec::new();
    let bind = |binds: &mut Args, arg: Arg| {
        binds.push(arg);
        format!("${}", binds.len())
    };
    let unindexed = D::UNINDEXED;
    let mut conds = String::new();
    if !query.include_deleted {
        conds.push_str(&format!(" AND {unindexed}l.deleted_at IS NULL"));
    }
    if let Some(s) = query.status {
        conds.push_str(&format!(
            " AND l.status = {}",
            bind(&mut binds, s.as_str().into())
        ));
    }
    if let Some(t) = query.ledger_type {
        conds.push_str(&format!(
            " AND l.type = {}",
            bind(&mut binds, t.as_str().into())
        ));
    }
    if let Some(p) = &query.period {
        conds.push_str(&format!(
            " AND l.period = {}",
            bind(&mut binds, p.as_str().into())
        ));
    }
    if let Some(before) = query.before {
        conds.push_str(&format!(
            " AND l.id < {}",
            bind(&mut binds, before.as_i64().into())
        ));
    }
    let limit = bind(&mut binds, i64::from(query.limit).into());
    let page = format!("ORDER BY l.id DESC LIMIT {limit}");
    let sql = match merchants {
        None => format!("{} WHERE 1 = 1{conds} {page}", select_ledgers("ledgers")),
        Some([merchant]) => {
            let m = bind(&mut binds, merchant.as_str().into());
            format!(
                "{} WHERE l.merchant_id = {m}{conds} {page}",
                select_ledgers("ledgers")
            )
        }
        Some(list) if list.len() <= MERGED_MERCHANTS => {
            // Each merchant's page newest first through its index, then the page of pages.
            // PostgreSQL plans one LATERAL arm, run per merchant (a UNION ALL of fifty arms
            // costs more to plan than to run); SQLite, without LATERAL, a UNION ALL.
            let lateral = match D::merchant_rows("") {
                Some(_) => {
                    let scope = bind(&mut binds, merchant_scope(Some(list))?);
                    D::merchant_rows(&scope)
                }
                None => None,
            };
            let pages = match lateral {
                Some(rows) => format!(
                    "SELECT l.* FROM {rows} CROSS JOIN LATERAL (SELECT * FROM ledgers l \
                     WHERE l.merchant_id = s.merchant_id{conds} {page}) l"
                ),
                None => list
                    .iter()
                    .enumerate()
                    .map(|(i, merchant)| {
                        let m = bind(&mut binds, merchant.as_str().into());
                        format!(
                            "SELECT * FROM (SELECT l.* FROM ledgers l \
                             WHERE l.merchant_id = {m}{conds} {page}) AS m{i}"
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL "),
            };
            // The page is cut from the merged rows before the files are joined: a file is
            // looked up for the page's ledgers only, not for every merchant's page.
            format!(
                "{} ORDER BY l.id DESC",
                select_ledgers(&format!(
                    "(SELECT * FROM ({pages}) AS merged ORDER BY id DESC LIMIT {limit})"
                ))
            )
        }
        Some(list) => {
            let scope = bind(&mut binds, merchant_scope(Some(list))?);
            format!(
                "{} WHERE {unindexed}l.merchant_id IN ({}){conds} {page}",
                select_ledgers("ledgers"),
                D::json_texts(&scope)
            )
        }
    };
    Ok(Some((sql, binds)))
}

/// The statement finding where a replay's first page starts: the oldest status event after
/// `since` — of the scope's merchants for a list of at most [`MERGED_MERCHANTS`], read
/// through their (merchant_id, at, seq) index (migration 0011: a merchant's window, not
/// every merchant's), else of every merchant through the (at, seq) index. `seq + 0`: not
/// the engines' MIN-through-the-primary-key shortcut, which walks every event from the
/// first until one is after `since`.
pub(crate) fn replay_start_sql<D: Dialect>(
    merchants: Option<&[MerchantId]>,
    since: DateTime<Utc>,
) -> Result<(String, Args), StoreError> {
    let every = "SELECT MIN(seq + 0) FROM ledger_events WHERE status IS NOT NULL AND at > $1";
    Ok(match merchants {
        Some(list) if list.len() <= MERGED_MERCHANTS => {
            // PostgreSQL: merchant by merchant (LATERAL), each planned as one merchant's
            // window; a list's estimate (100 rows for any JSON array) would not be.
            let sql = match D::merchant_rows("$2") {
                Some(rows) => format!(
                    "SELECT MIN(p.seq) FROM {rows} CROSS JOIN LATERAL ({every} \
                     AND merchant_id = s.merchant_id) AS p(seq)"
                ),
                None => format!("{every} AND merchant_id IN ({})", D::json_texts("$2")),
            };
            (sql, args![since, merchant_scope(Some(list))?])
        }
        _ => (every.to_owned(), args![since]),
    })
}

/// The statement of one page of a `?since=` replay: the status events after `since` and
/// after `seq` `after` the scope may see, in `seq` order (the order they were recorded in,
/// which is each ledger's own order whatever the writers' clocks).
///
/// Every merchant: the primary key walked from `after` (a page reads a page). A list of at
/// most [`MERGED_MERCHANTS`]: the seqs of the merchants' events of the window, from
/// `ledger_events_merchant_at` alone (migration 0011), sorted and cut at the page, then
/// those events — a dashboard of one merchant reads that merchant's events, not every
/// merchant's. A longer list
/// filters the walk of every event.
pub(crate) fn replay_sql<D: Dialect>(
    merchants: Option<&[MerchantId]>,
    since: DateTime<Utc>,
    after: i64,
    limit: u32,
) -> Result<(String, Args), StoreError> {
    let select = crate::store::rows::STATUS_EVENT_SELECT;
    let unindexed = D::UNINDEXED;
    let mut binds = args![since, after, i64::from(limit)];
    let page = "e.seq > $2 ORDER BY e.seq LIMIT $3";
    let sql = match merchants {
        // `at` is left out of the index choice: its index would read the whole window of
        // every merchant and sort it.
        None => format!("{select} WHERE e.status IS NOT NULL AND {unindexed}e.at > $1 AND {page}"),
        Some(list) => {
            binds.push(merchant_scope(Some(list))?);
            let scope = D::json_texts("$4");
            if list.len() <= MERGED_MERCHANTS {
                // The page's events are chosen from the index alone (merchant, time, seq),
                // then read: a big merchant's window costs an index range, not its rows.
                // PostgreSQL plans them merchant by merchant (see `replay_start_sql`).
                let chosen = "SELECT seq FROM ledger_events WHERE status IS NOT NULL \
                     AND at > $1 AND seq > $2";
                let seqs = match D::merchant_rows("$4") {
                    Some(rows) => format!(
                        "SELECT p.seq FROM {rows} CROSS JOIN LATERAL ({chosen} \
                         AND merchant_id = s.merchant_id ORDER BY seq LIMIT $3) p \
                         ORDER BY p.seq LIMIT $3"
                    ),
                    None => format!("{chosen} AND merchant_id IN ({scope}) ORDER BY seq LIMIT $3"),
                };
                format!("{select} WHERE e.seq IN ({seqs}) ORDER BY e.seq")
            } else {
                format!(
                    "{select} WHERE {unindexed}e.merchant_id IN ({scope}) \
                     AND e.status IS NOT NULL AND {unindexed}e.at > $1 AND {page}"
                )
            }
        }
    };
    Ok((sql, binds))
}

impl<D: Dialect> SqlStore<D> {
    /// [`crate::store::JobStore::insert_ledger`]: through the group commit where the store
    /// has one, else in a transaction of its own.
    pub(super) async fn insert(
        &self,
        new: &NewLedger,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        if let Some(group) = &self.group {
            return group.insert(new.clone(), idempotency.cloned()).await;
        }
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let outcome = insert_one::<D>(&mut tx, new, idempotency).await?;
        tx.commit().await?;
        outcome
    }

    /// [`crate::store::JobStore::update_idempotency`].
    pub(super) async fn set_idempotency_response(
        &self,
        subject: &str,
        key: &str,
        status_code: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE idempotency_keys SET status_code = $1, body = $2 \
             WHERE subject = $3 AND key = $4",
            args![i64::from(status_code), body, subject, key],
        )
        .await?;
        Ok(())
    }

    /// [`crate::store::JobStore::list_ledgers`].
    pub(super) async fn list(&self, query: &ListQuery) -> Result<Vec<Ledger>, StoreError> {
        let Some((sql, binds)) = list_sql::<D>(query)? else {
            return Ok(Vec::new());
        };
        let rows: Vec<LedgerRow> = self.fetch_all(&sql, binds).await?;
        rows.into_iter().map(Ledger::try_from).collect()
    }

    /// [`crate::store::JobStore::list_events`].
    pub(super) async fn timeline(&self, id: LedgerId) -> Result<Vec<TimelineItem>, StoreError> {
        let rows: Vec<EventRow> = self
            .fetch_all(
                "SELECT at, attempt, status, error_code, phase, detail FROM ledger_events \
                 WHERE ledger_id = $1 ORDER BY seq",
                args![id.as_i64()],
            )
            .await?;
        rows.into_iter().map(TimelineItem::try_from).collect()
    }

    /// [`crate::store::JobStore::status_events_since`].
    pub(super) async fn status_events(
        &self,
        merchants: Option<&[MerchantId]>,
        since: DateTime<Utc>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StatusEvent)>, StoreError> {
        if merchants.is_some_and(<[MerchantId]>::is_empty) {
            return Ok(Vec::new());
        }
        // The pages read the events in `seq` order. The first one starts at the oldest
        // status event after `since`, found through the (at, seq) index: a reconnect reads
        // the events of its window, not every event recorded before it.
        let after = if after == 0 {
            let (sql, binds) = replay_start_sql::<D>(merchants, since)?;
            let oldest: Option<(Option<i64>,)> = self.fetch_optional(&sql, binds).await?;
            match oldest.and_then(|(seq,)| seq) {
                Some(seq) => seq - 1,
                None => return Ok(Vec::new()),
            }
        } else {
            after
        };
        let (sql, binds) = replay_sql::<D>(merchants, since, after, limit)?;
        let rows: Vec<StatusEventRow> = self.fetch_all(&sql, binds).await?;
        rows.into_iter().map(TryFrom::try_from).collect()
    }

    /// [`crate::store::JobStore::get_file`].
    pub(super) async fn file(
        &self,
        id: LedgerId,
        version: u32,
    ) -> Result<Option<StoredFile>, StoreError> {
        let row: Option<FileRow> = self
            .fetch_optional(
                "SELECT version, content_type, size_bytes, sha256, file_name, object_key, \
                 header_sha256, manifest, key_id, shredded_at, shred_reason \
                 FROM ledger_files WHERE ledger_id = $1 AND version = $2",
                args![id.as_i64(), i64::from(version)],
            )
            .await?;
        row.map(StoredFile::try_from).transpose()
    }

    /// [`crate::store::JobStore::user_change`]: the caller asked the state machine with the
    /// status it read; the update applies only if the row is still in that state.
    pub(super) async fn change_by_user(
        &self,
        id: LedgerId,
        expected: Expected,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        let set = match change {
            // A user's action starts the stall count afresh: the sweep judges this run only.
            UserChange::Retry => {
                "status = $6, lease_until = NULL, stall_count = 0, enqueued_at = $1, \
                 updated_at = $1"
            }
            UserChange::Regenerate => {
                "status = $6, version = version + 1, lease_until = NULL, stall_count = 0, \
                 enqueued_at = $1, updated_at = $1"
            }
            UserChange::Delete => "deleted_at = $1, updated_at = $1",
        };
        // Retry and regenerate put the job back in the queue; a delete keeps the status (and
        // leaves $6 unused).
        let requeued = Status::Pending;
        self.update_one(
            set,
            "id = $2 AND status = $3 AND stage = $4 AND version = $5 AND deleted_at IS NULL",
            args![
                now,
                id.as_i64(),
                expected.status.as_str(),
                expected.stage.as_str(),
                i64::from(expected.version),
                requeued.as_str(),
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::RETURNING_LEDGERS;
    use crate::store::sql::LEDGER_COLUMNS;

    /// A new ledger comes back in the columns every read of ledgers gives, its file NULL.
    #[test]
    fn an_insert_returns_the_columns_of_a_read() {
        let names = |list: &str| -> Vec<String> {
            list.split(',')
                .map(|c| {
                    let c = c.trim();
                    let name = c.rsplit(' ').next().unwrap_or(c);
                    name.trim_start_matches("l.").to_owned()
                })
                .collect()
        };
        let returned = RETURNING_LEDGERS
            .trim_start()
            .trim_start_matches("RETURNING ");
        assert_eq!(names(returned), names(LEDGER_COLUMNS));
        for column in returned.split(',').filter(|c| c.contains(" AS ")) {
            assert!(column.trim().starts_with("NULL AS f_"), "{column}");
        }
    }
}
