//! The embedded SQLite ledger: a connection pool on one database file (or a
//! private in-memory database), writer locks by `flock` on files beside it.
//!
//! Storage conventions (see `migrations/sqlite/`): decimals as TEXT in their
//! exact `Decimal` form (scale preserved), times as INTEGER milliseconds,
//! enums as their `as_str()` text. The statements, fencing, readers and the
//! dump are shared with PostgreSQL (see [`dialect`](super::dialect)).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::LedgerError;
use super::lock::FileLock;
use super::writer::Writer;

/// The schema migrations, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Busy timeout: how long a statement waits for another connection's write
/// lock before failing (with a transient `SQLITE_BUSY`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite ledger store.
///
/// Not `Clone`: the writer state (lock, fencing token, per-session counters)
/// belongs to one handle. Open a second handle for a second writer.
#[derive(Debug)]
pub struct SqliteLedger {
    pub(crate) core: Writer<Sqlite, FileLock>,
    /// The database file; `None` in memory.
    file: Option<PathBuf>,
}

impl SqliteLedger {
    /// Open (creating if missing) the ledger database and bring its schema up
    /// to date.
    ///
    /// `path` is a file path (parent directories are created), a `sqlite:` URL,
    /// or `sqlite::memory:` / `:memory:` for a private in-memory database
    /// (one connection, lives as long as the handle). File databases use WAL
    /// journaling, `synchronous=NORMAL`, foreign keys and a 10 s busy timeout;
    /// writer locks live in `<database>.locks/`.
    ///
    /// # Errors
    /// [`LedgerError::CreateDir`] if the parent directory cannot be created,
    /// [`LedgerError::Database`] if the database cannot be opened,
    /// [`LedgerError::Migrate`] if the migrations fail (e.g. the file was
    /// written by a newer schema).
    pub async fn open(path: &str) -> Result<Self, LedgerError> {
        let memory = matches!(path, "sqlite::memory:" | ":memory:" | "sqlite://:memory:");
        let options = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")?
        } else if path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        };
        let file = (!memory).then(|| options.get_filename().to_path_buf());
        if let Some(dir) = file.as_deref().and_then(std::path::Path::parent)
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = options
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .statement_cache_capacity(256)
            .pragma("wal_autocheckpoint", "16384");
        let pool_options = if memory {
            // Every connection of a `sqlite::memory:` pool shares one database
            // that lives only while a connection is open: keep exactly one.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        };
        let pool = pool_options.connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            core: Writer::new(pool, FileLock::new(file.as_deref())),
            file,
        })
    }

    /// The connection pool (for readers and tests).
    pub fn pool(&self) -> &SqlitePool {
        self.core.pool()
    }

    /// The database file (`None` for an in-memory database).
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// Id of the session this handle is writing, if any.
    pub fn active_session(&self) -> Option<&str> {
        self.core.active_session()
    }

    /// Checkpoint the WAL into the database file (`TRUNCATE`: the `-wal`
    /// file is emptied, so the main file alone holds every committed row)
    /// and close the pool. A failed checkpoint (e.g. another process is
    /// reading) is logged; the rows stay safe in the WAL.
    pub(crate) async fn close_pool(self) {
        let pool = self.core.pool().clone();
        if self.file.is_some() {
            // One row: (busy, WAL frames, frames checkpointed); busy = 1 when
            // a reader kept the checkpoint from completing.
            let done: Result<(i64, i64, i64), _> =
                sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_one(&pool)
                    .await;
            match done {
                Ok((0, _, _)) => {}
                Ok((_, frames, copied)) => tracing::warn!(
                    frames,
                    copied,
                    "ledger WAL checkpoint at close was blocked by a reader; rows stay in -wal"
                ),
                Err(e) => tracing::warn!(error = %e, "ledger WAL checkpoint at close failed"),
            }
        }
        drop(self);
        pool.close().await;
    }
}
