//! Read-only paged queries over one session's rows, for the runtime's HTTP
//! API (`GET /v1/trades` and friends).
//!
//! A [`LedgerReader`] is a connection pool of its own beside the writer's
//! ([`LedgerReader::open`] on the same URL): SQLite in WAL mode lets readers
//! run while the writer commits, PostgreSQL's reader connections are set
//! `default_transaction_read_only`, so a reader can never change the
//! ledger. An in-memory SQLite ledger is private to its pool; read it through
//! [`LedgerReader::from_ledger`], which shares the writer's pool.
//!
//! Paging is by keyset, never `OFFSET`: a page holds the rows whose key
//! (`seq`, or `id` for autopilot adjustments) is above the previous page's
//! last key, in key order, so every page costs one index range scan however
//! deep it is, and rows committed while a client pages are neither skipped
//! nor repeated. Filters: market time (`from` inclusive, `to` exclusive) and,
//! for the kinds that have one, the symbol. Statements are shared by both
//! backends through the ledger's `Dialect` layer; rows decode with the same decoders
//! as [`LedgerStore::read_records`](super::LedgerStore::read_records).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Pool, Postgres, Sqlite};

use super::bind::Args;
use super::decode::{self, Cursor};
use super::dialect::Dialect;
use super::error::{connect_reason, sqlx_is_transient};
use super::records::{
    AdjustmentOutcomeRecord, AdjustmentRecord, BreakerEventRecord, DecisionRecord, RoundTrip,
    TradeRecord,
};
use super::schema::{self, Table};
use super::sql::select_session_rows;
use super::url::{self as ledger_url, redact, scrub};
use super::{Ledger, LedgerError};
use crate::types::Timestamp;

/// Largest page a query returns; larger limits are clamped to it.
pub const MAX_PAGE_ROWS: usize = 1000;

/// Connections of a reader's own pool (a few concurrent API requests).
const READER_CONNECTIONS: u32 = 2;

/// How long a reader waits for a pool connection or SQLite's write lock, so
/// that an unreachable database answers with an error instead of hanging.
const READER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which page to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// Rows whose key is above this one (the previous page's
    /// [`Page::next_after`]); `None` = from the first row.
    pub after: Option<u64>,
    /// Rows per page, 1 to [`MAX_PAGE_ROWS`] (0 is read as 1, larger values
    /// as [`MAX_PAGE_ROWS`]).
    pub limit: usize,
    /// Only rows at or after this market time.
    pub from: Option<Timestamp>,
    /// Only rows before this market time.
    pub to: Option<Timestamp>,
}

/// One page of rows, each with its key (`seq`, or `id` for adjustments).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// `(key, row)` in key order.
    pub rows: Vec<(u64, T)>,
    /// Key to pass as [`PageQuery::after`] for the next page; `None` when this
    /// page is the last one (under the same filters).
    pub next_after: Option<u64>,
}

/// A kind of row a page can hold.
struct Kind {
    table: &'static Table,
    /// The key column (column 1 of the table).
    key: &'static str,
    /// The market-time column filtered by `from`/`to`.
    time: &'static str,
}

const TRADES: Kind = Kind {
    table: &schema::TRADES,
    key: "seq",
    time: "time",
};
const DECISIONS: Kind = Kind {
    table: &schema::DECISIONS,
    key: "seq",
    time: "time",
};
const ROUND_TRIPS: Kind = Kind {
    table: &schema::ROUND_TRIPS,
    key: "seq",
    time: "exit_time",
};
const BREAKER_EVENTS: Kind = Kind {
    table: &schema::BREAKER_EVENTS,
    key: "seq",
    time: "time",
};
const ADJUSTMENTS: Kind = Kind {
    table: &schema::ADJUSTMENTS,
    key: "id",
    time: "time",
};

/// A read-only handle on a ledger of either backend (cheap to clone: a pool).
#[derive(Clone, Debug)]
pub enum LedgerReader {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

impl LedgerReader {
    /// Open a read-only pool on the ledger at `url` (the URL forms of
    /// [`super::open`]). The schema is not created or migrated: the writer
    /// does that, so a reader opened before the writer's first start finds
    /// no tables and its queries fail until then. A SQLite file must exist.
    ///
    /// # Errors
    /// [`LedgerError::InvalidUrl`] for an in-memory SQLite URL (a second pool
    /// would see an empty database of its own: use
    /// [`from_ledger`](Self::from_ledger)) or a URL that does not parse;
    /// [`LedgerError::Connect`] when the database cannot be opened or reached.
    /// No error shows the URL's password.
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        let connect_error = |e: sqlx::Error| LedgerError::Connect {
            url: redact(url),
            reason: connect_reason(&e, url),
            transient: sqlx_is_transient(&e),
        };
        match ledger_url::backend(url) {
            ledger_url::Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| LedgerError::InvalidUrl {
                        url: redact(url),
                        reason: scrub(&e.to_string(), url),
                    })?
                    .options([("default_transaction_read_only", "on")]);
                let pool = PgPoolOptions::new()
                    .max_connections(READER_CONNECTIONS)
                    .acquire_timeout(READER_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                Ok(Self::Postgres(pool))
            }
            ledger_url::Backend::Sqlite => {
                if matches!(url, "sqlite::memory:" | ":memory:" | "sqlite://:memory:") {
                    return Err(LedgerError::InvalidUrl {
                        url: url.to_owned(),
                        reason: "an in-memory ledger is private to the pool that created it; \
                                 a reader must share the writer's pool"
                            .into(),
                    });
                }
                let options = if url.starts_with("sqlite:") {
                    SqliteConnectOptions::from_str(url).map_err(|e| LedgerError::InvalidUrl {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    })?
                } else {
                    SqliteConnectOptions::new().filename(url)
                };
                let options = options
                    .read_only(true)
                    .create_if_missing(false)
                    .busy_timeout(READER_TIMEOUT);
                let pool = SqlitePoolOptions::new()
                    .max_connections(READER_CONNECTIONS)
                    .acquire_timeout(READER_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                Ok(Self::Sqlite(pool))
            }
        }
    }

    /// A reader sharing `ledger`'s pool (for an in-memory SQLite ledger, and
    /// tests). Its queries take connections the writer could use.
    pub fn from_ledger(ledger: &Ledger) -> Self {
        match ledger {
            Ledger::Sqlite(l) => Self::Sqlite(l.pool().clone()),
            Ledger::Postgres(l) => Self::Postgres(l.pool().clone()),
        }
    }

    /// Session `id`'s row, `None` when the ledger has none.
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    pub async fn session(&self, id: &str) -> Result<Option<super::SessionInfo>, LedgerError> {
        let state = match self {
            Self::Sqlite(p) => super::read::session_state(p, id).await?,
            Self::Postgres(p) => super::read::session_state(p, id).await?,
        };
        Ok(state.map(|s| s.info))
    }

    /// Session `id`'s last committed checkpoint (JSON text).
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures.
    pub async fn checkpoint(&self, id: &str) -> Result<Option<String>, LedgerError> {
        let state = match self {
            Self::Sqlite(p) => super::read::session_state(p, id).await?,
            Self::Postgres(p) => super::read::session_state(p, id).await?,
        };
        Ok(state.and_then(|s| s.checkpoint))
    }

    /// Every committed record of session `id`, in ledger order, as
    /// [`LedgerStore::read_records`](super::LedgerStore::read_records).
    ///
    /// # Errors
    /// [`LedgerError::Database`] or a decode error; an error of `sink` stops
    /// the read and is returned.
    pub async fn read_records(
        &self,
        id: &str,
        chunk: usize,
        sink: &mut (dyn FnMut(super::records::LedgerBatch) -> Result<(), LedgerError> + Send),
    ) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(p) => super::read::read_records(p, id, chunk, sink).await,
            Self::Postgres(p) => super::read::read_records(p, id, chunk, sink).await,
        }
    }

    /// `"SQLite"` or `"PostgreSQL"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// Whether the database answers a trivial query (for readiness).
    ///
    /// # Errors
    /// [`LedgerError::Database`] when it does not.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
            Self::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop),
        }
        .map_err(LedgerError::from)
    }

    /// Close the pool (waits for queries in flight).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }

    /// Fills and failed orders of session `id` by `seq`, optionally of one
    /// `symbol`.
    ///
    /// # Errors
    /// [`LedgerError::Database`] on database failures,
    /// [`LedgerError::Corrupt`] for a stored value that does not parse.
    pub async fn trades(
        &self,
        id: &str,
        q: &PageQuery,
        symbol: Option<&str>,
    ) -> Result<Page<TradeRecord>, LedgerError> {
        match self {
            Self::Sqlite(p) => page::<Sqlite, _>(p, &TRADES, id, q, symbol, decode::trade).await,
            Self::Postgres(p) => {
                page::<Postgres, _>(p, &TRADES, id, q, symbol, decode::trade).await
            }
        }
    }

    /// Decisions of session `id` by `seq`, optionally of one `symbol`.
    ///
    /// # Errors
    /// As [`trades`](Self::trades).
    pub async fn decisions(
        &self,
        id: &str,
        q: &PageQuery,
        symbol: Option<&str>,
    ) -> Result<Page<DecisionRecord>, LedgerError> {
        match self {
            Self::Sqlite(p) => {
                page::<Sqlite, _>(p, &DECISIONS, id, q, symbol, decode::decision).await
            }
            Self::Postgres(p) => {
                page::<Postgres, _>(p, &DECISIONS, id, q, symbol, decode::decision).await
            }
        }
    }

    /// Closed positions (round trips) of session `id` by `seq`, filtered by
    /// their exit time, optionally of one `symbol`.
    ///
    /// # Errors
    /// As [`trades`](Self::trades).
    pub async fn round_trips(
        &self,
        id: &str,
        q: &PageQuery,
        symbol: Option<&str>,
    ) -> Result<Page<RoundTrip>, LedgerError> {
        match self {
            Self::Sqlite(p) => {
                page::<Sqlite, _>(p, &ROUND_TRIPS, id, q, symbol, decode::round_trip).await
            }
            Self::Postgres(p) => {
                page::<Postgres, _>(p, &ROUND_TRIPS, id, q, symbol, decode::round_trip).await
            }
        }
    }

    /// Circuit-breaker transitions of session `id` by `seq`.
    ///
    /// # Errors
    /// As [`trades`](Self::trades).
    pub async fn breaker_events(
        &self,
        id: &str,
        q: &PageQuery,
    ) -> Result<Page<BreakerEventRecord>, LedgerError> {
        match self {
            Self::Sqlite(p) => {
                page::<Sqlite, _>(p, &BREAKER_EVENTS, id, q, None, decode::breaker_event).await
            }
            Self::Postgres(p) => {
                page::<Postgres, _>(p, &BREAKER_EVENTS, id, q, None, decode::breaker_event).await
            }
        }
    }

    /// Autopilot adjustments of session `id` by `id`, each with its verdict
    /// once one is stored.
    ///
    /// # Errors
    /// As [`trades`](Self::trades).
    pub async fn adjustments(
        &self,
        id: &str,
        q: &PageQuery,
    ) -> Result<Page<(AdjustmentRecord, Option<AdjustmentOutcomeRecord>)>, LedgerError> {
        match self {
            Self::Sqlite(p) => {
                page::<Sqlite, _>(p, &ADJUSTMENTS, id, q, None, decode::adjustment).await
            }
            Self::Postgres(p) => {
                page::<Postgres, _>(p, &ADJUSTMENTS, id, q, None, decode::adjustment).await
            }
        }
    }
}

/// One page of `kind` rows of session `id`: one statement reading up to
/// `limit + 1` rows (the extra row only tells whether another page follows).
async fn page<DB: Dialect, T>(
    pool: &Pool<DB>,
    kind: &Kind,
    id: &str,
    q: &PageQuery,
    symbol: Option<&str>,
    decode: fn(&mut Cursor<'_, DB>) -> Result<T, LedgerError>,
) -> Result<Page<T>, LedgerError> {
    let limit = q.limit.clamp(1, MAX_PAGE_ROWS);
    let mut a = Args::<DB>::default();
    a.text(id);
    let mut n = 1;
    let mut tail = String::new();
    let mut param = |tail: &mut String, clause: &str| {
        n += 1;
        tail.push_str(&clause.replace('#', &format!("${n}")));
    };
    if let Some(after) = q.after {
        param(&mut tail, &format!(" AND {} > #", kind.key));
        a.int(i64::try_from(after).unwrap_or(i64::MAX));
    }
    if let Some(from) = q.from {
        param(&mut tail, &format!(" AND {} >= #", kind.time));
        a.int(from.millis());
    }
    if let Some(to) = q.to {
        param(&mut tail, &format!(" AND {} < #", kind.time));
        a.int(to.millis());
    }
    if let Some(symbol) = symbol {
        param(&mut tail, " AND symbol = #");
        a.text(symbol);
    }
    param(&mut tail, &format!(" ORDER BY {} LIMIT #", kind.key));
    // `limit` <= MAX_PAGE_ROWS, so this cannot overflow.
    a.int(limit as i64 + 1);

    let sql = select_session_rows::<DB>(kind.table, &tail);
    let mut conn = pool.acquire().await?;
    let mut rows = DB::fetch_all(&mut conn, sql, a.take()?).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = Cursor::<DB>::new(row, kind.table, id).skip(1).count()?;
        let value = decode(&mut Cursor::<DB>::new(row, kind.table, id))?;
        out.push((key, value));
    }
    let next_after = if more {
        out.last().map(|(k, _)| *k)
    } else {
        None
    };
    Ok(Page {
        rows: out,
        next_after,
    })
}
