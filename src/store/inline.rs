//! Point reads of the embedded store on the caller's own thread. sqlx runs every SQLite
//! statement on a thread of its connection and hands the rows back, two thread switches a
//! query: for `GET /ledgers/:id` that was more than half the request's cost. A read of one
//! row by its primary key from SQLite's page cache takes microseconds, and in WAL mode a
//! reader never waits for a writer, so these reads are made where they are asked for, on
//! connections of their own (read-only, kept idle for the next read).
//!
//! A read that misses the page cache waits for the local disk on the thread that asked, as
//! short a wait as SQLite's own on its connection thread.
//!
//! They never wait for a lock: a connection is opened with no busy timeout, and a read SQLite answers
//! `SQLITE_BUSY` (a WAL being recovered, say) is [`Inline::Busy`], which the caller makes
//! through its pool instead. Writes all go through sqlx.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::StoreError;

/// Idle connections kept, at least: one for each thread that reads at once (the runtime's
/// workers, one a core).
const MIN_IDLE: usize = 8;

/// Why an inline read gave no answer.
#[derive(Debug)]
pub(super) enum Inline {
    /// SQLite would have had to wait: read through the pool instead.
    Busy,
    /// The read failed.
    Failed(StoreError),
}

impl From<rusqlite::Error> for Inline {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            // Locks another connection holds (or a WAL index being rebuilt, which SQLite
            // retries a while before it gives up with a protocol error).
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::FileLockingProtocolFailed,
            ) => Inline::Busy,
            _ => Inline::Failed(StoreError::Unavailable(format!(
                "reading the job store: {e}"
            ))),
        }
    }
}

/// Read-only connections to one database file.
pub(super) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Idle connections kept: [`MIN_IDLE`], or one a core where there are more.
    max_idle: usize,
}

impl InlineReads {
    /// Reads of the database at `path` (opened on first use).
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            max_idle: std::thread::available_parallelism()
                .map_or(MIN_IDLE, |cores| cores.get().max(MIN_IDLE)),
        }
    }

    /// Runs `read` on an idle connection (or a new one), then keeps the connection for the
    /// next read.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Inline> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
        Ok(result?)
    }

    fn connect(&self) -> Result<Connection, Inline> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        // Never wait for a lock: a busy database is read through the pool.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }
}

/// The one row of `sql` (its parameter `$1` = `id`) decoded by `decode`, if any.
pub(super) fn one_row<T>(
    conn: &Connection,
    sql: &str,
    id: i64,
    decode: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    conn.prepare_cached(sql)?.query_row([id], decode).optional()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::contract::new_ledger;
    use crate::store::rows::LEDGER_ROW_COLUMNS;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{InsertOutcome, JobStore};

    /// The read on the caller's thread gets the columns it decodes by position, and sees a
    /// ledger as soon as the pool committed it.
    #[tokio::test]
    async fn a_read_on_the_callers_thread_sees_what_the_pool_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        store.migrate().await.unwrap();

        let reads = InlineReads::new(&path);
        let sql = crate::store::sql::LEDGER_BY_ID.as_str();
        let names: Vec<String> = reads
            .read(|conn| {
                let statement = conn.prepare(sql)?;
                Ok(statement
                    .column_names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect())
            })
            .unwrap();
        assert_eq!(names, LEDGER_ROW_COLUMNS);

        let new = new_ledger(9800, "m_inline", "2026-01", None);
        let InsertOutcome::Created(created) = store.insert_ledger(&new, None).await.unwrap() else {
            panic!("not created");
        };
        assert_eq!(
            store.get_ledger(created.id).await.unwrap(),
            Some(created.clone())
        );
        let missing = crate::domain::LedgerId::from_i64(9801);
        assert_eq!(store.get_ledger(missing).await.unwrap(), None);
    }
}
