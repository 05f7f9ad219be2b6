//! The PostgreSQL ledger: a connection pool on one database, writer locks by
//! advisory lock on a dedicated connection per session.
//!
//! Storage conventions (see `migrations/postgres/`): decimals as NUMERIC
//! (scale preserved), times as BIGINT milliseconds, enums as TEXT with
//! CHECKs, text keys in byte order (`COLLATE "C"`). The statements, fencing,
//! readers and the dump are shared with SQLite (see
//! [`dialect`](super::dialect)).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::LedgerError;
use super::advisory::AdvisoryLock;
use super::error::{connect_reason, sqlx_is_transient};
use super::url::{redact, scrub};
use super::writer::Writer;

/// The schema migrations, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections per handle: one writer plus readers (reports, status).
const MAX_CONNECTIONS: u32 = 4;

/// How long taking a pool connection may wait. Short, so that a database
/// outage surfaces as a (transient) error the runner retries with backoff
/// instead of a call that hangs.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL ledger store.
///
/// Not `Clone`: the writer state (lock connection, fencing token,
/// per-session counters) belongs to one handle.
#[derive(Debug)]
pub struct PgLedger {
    pub(crate) core: Writer<Postgres, AdvisoryLock>,
}

impl PgLedger {
    /// Connect to the database at `url` (`postgres://` or `postgresql://`,
    /// with sqlx's options, e.g. `?sslmode=require`) and bring its schema up
    /// to date. The migrations run on their own connection under sqlx's
    /// migration lock (`pg_advisory_lock` keyed by the database name), so
    /// runtimes starting together apply them once.
    ///
    /// # Errors
    /// [`LedgerError::InvalidUrl`] for a URL that does not parse,
    /// [`LedgerError::Connect`] if the server cannot be reached or refuses
    /// (transient when it may come back, see [`LedgerError::is_transient`]),
    /// [`LedgerError::Migrate`] if the migrations fail. The URL's password is
    /// never part of an error.
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| LedgerError::InvalidUrl {
                url: redact(url),
                reason: scrub(&e.to_string(), url),
            })?
            .statement_cache_capacity(256);
        let connect_error = |e: sqlx::Error| LedgerError::Connect {
            url: redact(url),
            reason: connect_reason(&e, url),
            transient: sqlx_is_transient(&e),
        };
        // A one-connection pool of its own: closing it ends the session, so
        // the migration lock cannot outlive it even when a migration failed
        // half-way.
        let migration = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(connect_error)?;
        let migrated = MIGRATOR.run(&migration).await;
        migration.close().await;
        migrated?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(connect_error)?;
        Ok(Self {
            core: Writer::new(pool, AdvisoryLock::new(options)),
        })
    }

    /// The connection pool (for readers and tests).
    pub fn pool(&self) -> &PgPool {
        self.core.pool()
    }

    /// Id of the session this handle is writing, if any.
    pub fn active_session(&self) -> Option<&str> {
        self.core.active_session()
    }

    /// Release the writer lock and close the pool.
    pub(crate) async fn close_pool(self) {
        let pool = self.core.pool().clone();
        self.core.release_lock().await;
        pool.close().await;
    }
}
