//! The embedded SQLite ledger.
//!
//! Storage conventions (see `migrations/sqlite/0001_ledger.sql`): decimals as
//! TEXT in their exact `Decimal::to_string()` form (scale preserved), times as
//! INTEGER milliseconds of market time, enums as their `as_str()` text,
//! [`WindowMetrics`](super::records::WindowMetrics) as JSON text.
//!
//! Speed: rows are inserted with multi-row `INSERT ... VALUES (..), (..)`
//! statements of 256, 128, ..., 2 or 1 rows (a batch of `n` rows is split
//! into full 256-row chunks plus the binary decomposition of the rest). The
//! SQL of every shape is generated once per process, so each connection
//! prepares at most nine statements per table and reuses them from sqlx's
//! statement cache for every later batch. While the connection's worker
//! thread executes one statement, the next one's arguments are built.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rust_decimal::Decimal;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{
    Arguments, AssertSqlSafe, Encode, Row, SqlSafeStr as _, SqlStr, Type, TypeInfo, ValueRef,
};

use super::LedgerError;
use super::records::{
    AdjustmentOutcomeRecord, AdjustmentRecord, BreakerEventRecord, DecisionRecord, LedgerBatch,
    PositionRecord, RoundTrip, SessionEnd, SessionRecord, SnapshotRecord, TradeRecord,
};
use super::store::LedgerStore;

/// The schema migrations, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Default writer-lease length: a writer that has not written for this long
/// (wall clock) may be taken over by another `start_session`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// Phase stored for a session between `start_session` and `finish_session`.
pub const RUNNING_PHASE: &str = "Running";

/// Columns [`dump_session`] leaves out: wall-clock times and the random
/// fencing token, which differ between otherwise identical runs.
pub const DUMP_EXCLUDED_COLUMNS: &[&str] = &["created_at", "writer_token", "lease_expires_at"];

/// Busy timeout: how long a statement waits for another connection's write
/// lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest rows-per-statement shape; a power of two.
const MAX_CHUNK_ROWS: usize = 256;
/// Number of statement shapes per table: 1, 2, 4, ..., MAX_CHUNK_ROWS.
const CHUNK_SHAPES: usize = MAX_CHUNK_ROWS.trailing_zeros() as usize + 1;

/// The SQLite ledger store: a connection pool on one database file (or an
/// in-memory database) plus the state of the session this handle writes.
///
/// Not `Clone`: the writer state (fencing token, per-session counters) belongs
/// to one handle. Open a second handle for a second writer.
#[derive(Debug)]
pub struct SqliteLedger {
    pool: SqlitePool,
    lease_ttl: Duration,
    active: Option<ActiveSession>,
}

/// The session a handle currently writes.
#[derive(Debug)]
struct ActiveSession {
    id: Arc<str>,
    token: Arc<str>,
    /// Last stored store-assigned seqs (round trips, breaker events, snapshots).
    round_trips: i64,
    breaker_events: i64,
    snapshots: i64,
}

impl SqliteLedger {
    /// Open (creating if missing) the ledger database and bring its schema up
    /// to date.
    ///
    /// `path` is a file path (parent directories are created), a `sqlite:` URL,
    /// or `sqlite::memory:` / `:memory:` for a private in-memory database
    /// (one connection, lives as long as the handle). File databases use WAL
    /// journaling, `synchronous=NORMAL`, foreign keys and a 10 s busy timeout.
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
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        };
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
            pool,
            lease_ttl: DEFAULT_LEASE_TTL,
            active: None,
        })
    }

    /// Set the writer-lease length used by later `start_session` and
    /// `write_batch` calls (default [`DEFAULT_LEASE_TTL`]). The runner should
    /// write a batch (an empty one will do) at least every `ttl / 3` so that a
    /// live writer is never taken over.
    pub fn set_lease_ttl(&mut self, ttl: Duration) {
        self.lease_ttl = ttl;
    }

    /// The connection pool (for readers: reports, dumps, status).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Id of the session this handle is writing, if any.
    pub fn active_session(&self) -> Option<&str> {
        self.active.as_ref().map(|a| &*a.id)
    }

    fn lease_expiry(&self, now: i64) -> i64 {
        let ttl = i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        now.saturating_add(ttl)
    }

    async fn start_impl(&mut self, s: &SessionRecord) -> Result<(), LedgerError> {
        if let Some(active) = &self.active {
            return Err(LedgerError::AlreadyStarted {
                session_id: active.id.to_string(),
            });
        }
        let token: Arc<str> = new_fencing_token().into();
        let now = wall_clock_ms();
        let lease = self.lease_expiry(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<(Option<i64>, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT ended_at, writer_token, lease_expires_at FROM sessions WHERE id = ?1",
        )
        .bind(&s.id)
        .fetch_optional(&mut *tx)
        .await?;
        let active = match existing {
            None => {
                let initial_cash = s.initial_cash.to_string();
                sqlx::query(
                    "INSERT INTO sessions (id, name, account, strategy, base_currency, \
                     initial_cash, config_json, started_at, phase, cash, equity, \
                     writer_token, lease_expires_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?6, ?6, ?10, ?11, ?12)",
                )
                .bind(&s.id)
                .bind(&s.name)
                .bind(&s.account)
                .bind(&s.strategy)
                .bind(&s.base_currency)
                .bind(initial_cash)
                .bind(&s.config_json)
                .bind(s.started_at.millis())
                .bind(RUNNING_PHASE)
                .bind(token.clone())
                .bind(lease)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                ActiveSession {
                    id: s.id.as_str().into(),
                    token,
                    round_trips: 0,
                    breaker_events: 0,
                    snapshots: 0,
                }
            }
            Some((Some(_ended), _, _)) => {
                return Err(LedgerError::SessionFinished {
                    session_id: s.id.clone(),
                });
            }
            Some((None, holder, expires)) => {
                if let (Some(_), Some(expires)) = (holder, expires)
                    && expires > now
                {
                    return Err(LedgerError::LeaseHeld {
                        session_id: s.id.clone(),
                        remaining_ms: expires - now,
                    });
                }
                // Take over: the old holder's next write finds a foreign token.
                sqlx::query(
                    "UPDATE sessions SET writer_token = ?2, lease_expires_at = ?3 WHERE id = ?1",
                )
                .bind(&s.id)
                .bind(token.clone())
                .bind(lease)
                .execute(&mut *tx)
                .await?;
                let mut last = [0i64; 3];
                for (slot, table) in
                    last.iter_mut()
                        .zip(["round_trips", "breaker_events", "snapshots"])
                {
                    let sql =
                        format!("SELECT COALESCE(MAX(seq), 0) FROM {table} WHERE session_id = ?1");
                    *slot = sqlx::query_scalar(AssertSqlSafe(sql))
                        .bind(&s.id)
                        .fetch_one(&mut *tx)
                        .await?;
                }
                ActiveSession {
                    id: s.id.as_str().into(),
                    token,
                    round_trips: last[0],
                    breaker_events: last[1],
                    snapshots: last[2],
                }
            }
        };
        tx.commit().await?;
        self.active = Some(active);
        Ok(())
    }

    async fn write_impl(&mut self, b: &LedgerBatch) -> Result<(), LedgerError> {
        let lease = self.lease_expiry(wall_clock_ms());
        let active = self.active.as_mut().ok_or(LedgerError::NotStarted)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        match write_batch_rows(&mut tx, active, b, lease).await {
            Ok(()) => {
                tx.commit().await?;
                // Counters move only once the rows are durable in the database.
                active.round_trips += b.round_trips.len() as i64;
                active.breaker_events += b.breaker_events.len() as i64;
                active.snapshots += b.snapshots.len() as i64;
                Ok(())
            }
            Err(e) => {
                // Best effort: if the rollback itself fails the connection is
                // closed by sqlx, which also discards the transaction.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn finish_impl(&mut self, end: &SessionEnd) -> Result<(), LedgerError> {
        let active = self.active.as_ref().ok_or(LedgerError::NotStarted)?;
        let done = sqlx::query(
            "UPDATE sessions SET phase = ?3, ended_at = ?4, cash = ?5, equity = ?6, \
             summary_json = ?7, writer_token = NULL, lease_expires_at = NULL \
             WHERE id = ?1 AND writer_token = ?2 AND ended_at IS NULL",
        )
        .bind(active.id.clone())
        .bind(active.token.clone())
        .bind(&end.phase)
        .bind(end.ended_at.millis())
        .bind(end.cash.to_string())
        .bind(end.equity.to_string())
        .bind(&end.summary_json)
        .execute(&self.pool)
        .await?;
        let fenced = done.rows_affected() == 0;
        let session_id = active.id.to_string();
        // Either way this handle is done with the session.
        self.active = None;
        if fenced {
            return Err(LedgerError::Fenced { session_id });
        }
        Ok(())
    }
}

impl LedgerStore for SqliteLedger {
    /// Next free session id for a BotSession name: `name` if no session has
    /// that id, else `name-2`, `name-3`, ... (the smallest unused number).
    ///
    /// The id is only reserved by the following `start_session`; two writers
    /// racing for the same id are told apart there.
    ///
    /// # Errors
    /// [`LedgerError::Database`] if the sessions table cannot be read.
    async fn next_session_id(&self, name: &str) -> Result<String, LedgerError> {
        // '.' is the character after '-', so the range covers exactly the ids
        // that start with `name-` (and it uses the primary key).
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE id = ?1 OR (id >= ?1 || '-' AND id < ?1 || '.')",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        if !ids.iter().any(|id| id == name) {
            return Ok(name.to_owned());
        }
        let taken: HashSet<u64> = ids
            .iter()
            .filter_map(|id| id.strip_prefix(name)?.strip_prefix('-')?.parse().ok())
            .collect();
        let n = (2u64..)
            .find(|n| !taken.contains(n))
            .expect("fewer than u64::MAX sessions");
        Ok(format!("{name}-{n}"))
    }

    fn start_session(
        &mut self,
        s: &SessionRecord,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.start_impl(s)
    }

    fn write_batch(
        &mut self,
        b: &LedgerBatch,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.write_impl(b)
    }

    fn finish_session(
        &mut self,
        end: &SessionEnd,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.finish_impl(end)
    }
}

/// Everything a batch writes, inside the caller's transaction. The fencing
/// check comes first so a fenced writer stores nothing.
async fn write_batch_rows(
    conn: &mut SqliteConnection,
    active: &ActiveSession,
    b: &LedgerBatch,
    lease: i64,
) -> Result<(), LedgerError> {
    let equity = b.snapshots.last().map(|s| s.equity.to_string());
    let fence = sqlx::query(
        "UPDATE sessions SET cash = ?3, equity = COALESCE(?4, equity), last_batch_at = ?5, \
         lease_expires_at = ?6 WHERE id = ?1 AND writer_token = ?2 AND ended_at IS NULL",
    )
    .bind(active.id.clone())
    .bind(active.token.clone())
    .bind(b.cash.to_string())
    .bind(equity)
    .bind(b.time.millis())
    .bind(lease)
    .execute(&mut *conn)
    .await?;
    if fence.rows_affected() == 0 {
        return Err(LedgerError::Fenced {
            session_id: active.id.to_string(),
        });
    }

    // Build the arguments of statement i+1 while the connection's worker
    // thread executes statement i (`biased` polls the execution first, which
    // hands it to the worker before the builder runs).
    let mut inserts = BatchInserts::new(b, active);
    let mut next = inserts.next_statement()?;
    while let Some((sql, args)) = next {
        let (done, built) = tokio::join!(
            biased;
            sqlx::query_with(sql, args).execute(&mut *conn),
            async { inserts.next_statement() },
        );
        done?;
        next = built?;
    }
    // Verdicts last: their adjustments may be in this very batch.
    for o in &b.adjustment_outcomes {
        write_outcome(conn, &active.id, o).await?;
    }
    Ok(())
}

async fn write_outcome(
    conn: &mut SqliteConnection,
    sid: &Arc<str>,
    o: &AdjustmentOutcomeRecord,
) -> Result<(), LedgerError> {
    let metrics = serde_json::to_string(&o.metrics_after).map_err(|source| LedgerError::Json {
        what: "adjustment outcome metrics_after",
        source,
    })?;
    let done = sqlx::query(
        "UPDATE autopilot_adjustments SET outcome_time = ?3, outcome = ?4, \
         metrics_after_json = ?5 WHERE session_id = ?1 AND id = ?2",
    )
    .bind(sid.clone())
    .bind(to_i64("adjustment_outcome.id", o.id)?)
    .bind(o.time.millis())
    .bind(o.outcome.as_str())
    .bind(metrics)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(LedgerError::UnknownAdjustment {
            session_id: sid.to_string(),
            id: o.id,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Multi-row inserts

/// Pre-generated INSERT statements of one table, one per chunk shape.
struct TableSql {
    columns: usize,
    /// `by_shape[k]` inserts `2^k` rows.
    by_shape: Vec<SqlStr>,
}

impl TableSql {
    /// Builds `INSERT INTO table (session_id, cols..) VALUES (?, ?, ..), (?, ..) suffix`
    /// for every shape. Placeholders are anonymous: SQLite resolves the name
    /// of a numbered (`?NNN`) placeholder by a linear scan, which sqlx does for
    /// every bound value, making wide numbered statements quadratic.
    fn new(table: &str, columns: &[&str], suffix: &str) -> Self {
        let head = format!(
            "INSERT INTO {table} (session_id, {}) VALUES ",
            columns.join(", ")
        );
        let mut tuple = String::from("(?");
        for _ in 0..columns.len() {
            tuple.push_str(", ?");
        }
        tuple.push(')');
        let by_shape = (0..CHUNK_SHAPES)
            .map(|k| {
                let rows = 1usize << k;
                let mut sql = head.clone();
                for r in 0..rows {
                    if r > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&tuple);
                }
                sql.push_str(suffix);
                let sql: Arc<str> = sql.into();
                AssertSqlSafe(sql).into_sql_str()
            })
            .collect();
        Self {
            columns: columns.len(),
            by_shape,
        }
    }
}

struct Statements {
    decisions: TableSql,
    trades: TableSql,
    round_trips: TableSql,
    breaker_events: TableSql,
    adjustments: TableSql,
    snapshots: TableSql,
    positions: TableSql,
}

static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements {
    decisions: TableSql::new("decisions", &DecisionRecord::COLUMNS, ""),
    trades: TableSql::new("trades", &TradeRecord::COLUMNS, ""),
    round_trips: TableSql::new(
        "round_trips",
        &[
            "seq",
            "symbol",
            "entry_time",
            "entry_price",
            "exit_time",
            "exit_price",
            "quantity",
            "pnl",
            "fees",
            "return_pct",
            "exit_reason",
        ],
        "",
    ),
    breaker_events: TableSql::new(
        "breaker_events",
        &["seq", "time", "breaker", "from_state", "to_state", "reason"],
        "",
    ),
    adjustments: TableSql::new(
        "autopilot_adjustments",
        &[
            "id",
            "time",
            "parameter",
            "old_value",
            "new_value",
            "reason",
            "metrics_before_json",
        ],
        "",
    ),
    snapshots: TableSql::new(
        "snapshots",
        &[
            "seq",
            "time",
            "cash",
            "position_value",
            "equity",
            "realized_pnl",
            "unrealized_pnl",
            "drawdown_pct",
            "open_positions",
            "trades",
        ],
        "",
    ),
    positions: TableSql::new(
        "positions",
        &[
            "symbol",
            "quantity",
            "cost_basis",
            "last_price",
            "opened_at",
            "updated_at",
        ],
        // Portable upsert (SQLite >= 3.24, PostgreSQL >= 9.5). A batch holds
        // at most one state per symbol, as PostgreSQL requires.
        " ON CONFLICT (session_id, symbol) DO UPDATE SET quantity = excluded.quantity, \
         cost_basis = excluded.cost_basis, last_price = excluded.last_price, \
         opened_at = excluded.opened_at, updated_at = excluded.updated_at",
    ),
});

/// Rows in the next statement: 64 while at least 64 remain, else the largest
/// power of two not above `remaining` (so at most 7 distinct shapes).
fn chunk_rows(remaining: usize) -> usize {
    if remaining >= MAX_CHUNK_ROWS {
        MAX_CHUNK_ROWS
    } else {
        1 << (usize::BITS - 1 - remaining.leading_zeros())
    }
}

/// Produces a batch's multi-row INSERT statements one at a time, table by
/// table (decisions, trades, round trips, breaker events, adjustments,
/// snapshots, positions), each table's rows in chunks of [`chunk_rows`].
struct BatchInserts<'a> {
    batch: &'a LedgerBatch,
    active: &'a ActiveSession,
    table: usize,
    start: usize,
    args: RowArgs,
}

impl<'a> BatchInserts<'a> {
    fn new(batch: &'a LedgerBatch, active: &'a ActiveSession) -> Self {
        Self {
            batch,
            active,
            table: 0,
            start: 0,
            args: RowArgs::default(),
        }
    }

    /// The next statement and its arguments, or `None` when all rows are out.
    fn next_statement(&mut self) -> Result<Option<(SqlStr, SqliteArguments)>, LedgerError> {
        let sql = &*STATEMENTS;
        let (b, active) = (self.batch, self.active);
        loop {
            let (spec, len) = match self.table {
                0 => (&sql.decisions, b.decisions.len()),
                1 => (&sql.trades, b.trades.len()),
                2 => (&sql.round_trips, b.round_trips.len()),
                3 => (&sql.breaker_events, b.breaker_events.len()),
                4 => (&sql.adjustments, b.adjustments.len()),
                5 => (&sql.snapshots, b.snapshots.len()),
                6 => (&sql.positions, b.positions.len()),
                _ => return Ok(None),
            };
            if self.start >= len {
                self.table += 1;
                self.start = 0;
                continue;
            }
            let n = chunk_rows(len - self.start);
            let a = &mut self.args;
            a.args.reserve(n * (1 + spec.columns), 0);
            for i in self.start..self.start + n {
                // Store-assigned per-session numbers continue the stored ones.
                let seq = |last: i64| last + 1 + i as i64;
                a.text_shared(&active.id)?;
                match self.table {
                    0 => bind_decision(&b.decisions[i], a)?,
                    1 => bind_trade(&b.trades[i], a)?,
                    2 => bind_round_trip(seq(active.round_trips), &b.round_trips[i], a)?,
                    3 => bind_breaker_event(seq(active.breaker_events), &b.breaker_events[i], a)?,
                    4 => bind_adjustment(&b.adjustments[i], a)?,
                    5 => bind_snapshot(seq(active.snapshots), &b.snapshots[i], a)?,
                    _ => bind_position(&b.positions[i], a)?,
                }
            }
            debug_assert_eq!(a.args.len(), n * (1 + spec.columns));
            self.start += n;
            let statement = spec.by_shape[n.trailing_zeros() as usize].clone();
            return Ok(Some((statement, std::mem::take(&mut a.args))));
        }
    }
}

/// Arguments of one multi-row statement, with a scratch buffer for
/// formatting decimals. Text goes in as `Arc<str>` (one allocation; sqlx
/// would copy a `&str` into a `String` and then box it in an `Arc`).
#[derive(Default)]
struct RowArgs {
    args: SqliteArguments,
    scratch: String,
}

impl RowArgs {
    fn push<'q, T: Encode<'q, sqlx::Sqlite> + Type<sqlx::Sqlite>>(
        &mut self,
        value: T,
    ) -> Result<(), LedgerError> {
        Arguments::add(&mut self.args, value).map_err(|e| LedgerError::Encode(e.to_string()))
    }
    fn int(&mut self, v: i64) -> Result<(), LedgerError> {
        self.push(v)
    }
    fn opt_int(&mut self, v: Option<i64>) -> Result<(), LedgerError> {
        self.push(v)
    }
    fn text(&mut self, v: &str) -> Result<(), LedgerError> {
        self.push(Arc::<str>::from(v))
    }
    fn text_shared(&mut self, v: &Arc<str>) -> Result<(), LedgerError> {
        self.push(Arc::clone(v))
    }
    /// The exact decimal form, scale preserved (`Decimal`'s `Display`).
    fn dec(&mut self, d: &Decimal) -> Result<(), LedgerError> {
        use std::fmt::Write as _;
        self.scratch.clear();
        let _ = write!(self.scratch, "{d}");
        let text = Arc::<str>::from(self.scratch.as_str());
        self.push(text)
    }
    fn opt_dec(&mut self, d: Option<&Decimal>) -> Result<(), LedgerError> {
        match d {
            Some(d) => self.dec(d),
            None => self.push(None::<Arc<str>>),
        }
    }
}

fn to_i64(field: &'static str, value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::OutOfRange { field, value })
}

fn bind_decision(r: &DecisionRecord, a: &mut RowArgs) -> Result<(), LedgerError> {
    a.int(to_i64("decision.seq", r.seq)?)?;
    a.int(r.time.millis())?;
    a.text(r.symbol.as_str())?;
    a.text(r.action.as_str())?;
    a.dec(&r.confidence)?;
    a.dec(&r.price)?;
    a.opt_dec(r.quantity.as_ref())?;
    a.text(r.positive_signals.as_str())?;
    a.text(r.negative_signals.as_str())?;
    a.text(r.risk_assessment.as_str())?;
    a.text(r.reason.as_str())
}

fn bind_trade(r: &TradeRecord, a: &mut RowArgs) -> Result<(), LedgerError> {
    a.int(to_i64("trade.seq", r.seq)?)?;
    a.int(to_i64("trade.decision_seq", r.decision_seq)?)?;
    a.int(r.time.millis())?;
    a.text(r.symbol.as_str())?;
    a.text(r.side.as_str())?;
    a.dec(&r.quantity)?;
    a.dec(&r.reference_price)?;
    a.dec(&r.fill_price)?;
    a.dec(&r.fee)?;
    a.dec(&r.gas)?;
    a.dec(&r.slippage_cost)?;
    a.int(r.latency_ms)?;
    a.dec(&r.realized_pnl)?;
    a.text(r.reason.as_str())?;
    a.text(match r.status {
        super::records::FillStatus::Filled => "filled",
        super::records::FillStatus::Failed => "failed",
    })?;
    a.dec(&r.cash_after)?;
    a.dec(&r.position_after)?;
    a.dec(&r.cost_basis_after)
}

fn bind_round_trip(seq: i64, r: &RoundTrip, a: &mut RowArgs) -> Result<(), LedgerError> {
    a.int(seq)?;
    a.text(r.symbol.as_str())?;
    a.int(r.entry_time.millis())?;
    a.dec(&r.entry_price)?;
    a.int(r.exit_time.millis())?;
    a.dec(&r.exit_price)?;
    a.dec(&r.quantity)?;
    a.dec(&r.pnl)?;
    a.dec(&r.fees)?;
    a.dec(&r.return_pct)?;
    a.text(r.exit_reason.as_str())
}

fn bind_breaker_event(
    seq: i64,
    r: &BreakerEventRecord,
    a: &mut RowArgs,
) -> Result<(), LedgerError> {
    a.int(seq)?;
    a.int(r.time.millis())?;
    a.text(r.breaker.as_str())?;
    a.text(r.from_state.as_str())?;
    a.text(r.to_state.as_str())?;
    a.text(r.reason.as_str())
}

fn bind_adjustment(r: &AdjustmentRecord, a: &mut RowArgs) -> Result<(), LedgerError> {
    let metrics = serde_json::to_string(&r.metrics_before).map_err(|source| LedgerError::Json {
        what: "adjustment metrics_before",
        source,
    })?;
    a.int(to_i64("adjustment.id", r.id)?)?;
    a.int(r.time.millis())?;
    a.text(r.parameter.as_str())?;
    a.dec(&r.old_value)?;
    a.dec(&r.new_value)?;
    a.text(r.reason.as_str())?;
    a.text(&metrics)
}

fn bind_snapshot(seq: i64, r: &SnapshotRecord, a: &mut RowArgs) -> Result<(), LedgerError> {
    a.int(seq)?;
    a.int(r.time.millis())?;
    a.dec(&r.cash)?;
    a.dec(&r.position_value)?;
    a.dec(&r.equity)?;
    a.dec(&r.realized_pnl)?;
    a.dec(&r.unrealized_pnl)?;
    a.dec(&r.drawdown_pct)?;
    a.int(i64::from(r.open_positions))?;
    a.int(to_i64("snapshot.trades", r.trades)?)
}

fn bind_position(r: &PositionRecord, a: &mut RowArgs) -> Result<(), LedgerError> {
    a.text(r.symbol.as_str())?;
    a.dec(&r.quantity)?;
    a.dec(&r.cost_basis)?;
    a.dec(&r.last_price)?;
    a.opt_int(r.opened_at.map(|t| t.millis()))?;
    a.int(r.updated_at.millis())
}

// ---------------------------------------------------------------------------
// Fencing tokens and the wall clock

/// Wall-clock milliseconds since the epoch (leases and `created_at` only; the
/// ledger's records carry market time).
fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fencing token unique across handles and processes: 64 bits from std's
/// randomly keyed SipHash over (pid, wall-clock nanoseconds, process-wide
/// counter), followed by those inputs in clear.
fn new_fencing_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(pid);
    h.write_u128(nanos);
    h.write_u64(n);
    format!("{:016x}-{pid:x}-{nanos:x}-{n:x}", h.finish())
}

// ---------------------------------------------------------------------------
// Canonical dump

/// Canonical, deterministic text dump of every row of one session (all tables,
/// ordered by key, excluding wall-clock columns) — used by tests to prove that
/// the same inputs and seed give an identical ledger.
///
/// Format: for each table that holds rows of sessions (`sessions` by `id`,
/// the others by `session_id`), in table-name order, a line
/// `== table: col1|col2|...` with the column names (schema order, minus
/// [`DUMP_EXCLUDED_COLUMNS`]), then one line per row ordered by primary key:
/// values joined by `|`, `NULL`, integers in decimal, text as a Rust-escaped
/// quoted string (decimals therefore appear exactly as stored, e.g.
/// `"0.10"`). Tables are discovered from the schema, so tables added by
/// later migrations are included automatically.
///
/// # Errors
/// [`LedgerError::Database`] if the schema or a table cannot be read.
pub async fn dump_session(pool: &SqlitePool, session_id: &str) -> Result<String, LedgerError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let mut out = String::new();
    for table in tables {
        // (cid order) name, position in the primary key (0 = not in it).
        let info: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")
                .bind(&table)
                .fetch_all(pool)
                .await?;
        let key = if table == "sessions" {
            "id"
        } else if info.iter().any(|(c, _)| c == "session_id") {
            "session_id"
        } else {
            continue; // not session data (e.g. _sqlx_migrations)
        };
        let columns: Vec<&str> = info
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| !DUMP_EXCLUDED_COLUMNS.contains(c))
            .collect();
        let mut pk: Vec<&(String, i64)> = info.iter().filter(|(_, p)| *p > 0).collect();
        pk.sort_by_key(|(_, p)| *p);
        let order: Vec<String> = pk.iter().map(|(c, _)| quote_ident(c)).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1 ORDER BY {}",
            columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", "),
            quote_ident(&table),
            quote_ident(key),
            if order.is_empty() {
                "rowid".to_owned()
            } else {
                order.join(", ")
            },
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(session_id)
            .fetch_all(pool)
            .await?;
        out.push_str("== ");
        out.push_str(&table);
        out.push_str(": ");
        out.push_str(&columns.join("|"));
        out.push('\n');
        for row in &rows {
            for i in 0..columns.len() {
                if i > 0 {
                    out.push('|');
                }
                render_value(&mut out, row, i)?;
            }
            out.push('\n');
        }
    }
    Ok(out)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn render_value(
    out: &mut String,
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
) -> Result<(), LedgerError> {
    use std::fmt::Write as _;
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        out.push_str("NULL");
        return Ok(());
    }
    let kind = raw.type_info().name().to_owned();
    match kind.as_str() {
        "INTEGER" => {
            let v: i64 = row.try_get_unchecked(i)?;
            let _ = write!(out, "{v}");
        }
        "REAL" => {
            let v: f64 = row.try_get_unchecked(i)?;
            let _ = write!(out, "{v:?}");
        }
        "BLOB" => {
            let v: Vec<u8> = row.try_get_unchecked(i)?;
            out.push_str("x'");
            for byte in v {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\'');
        }
        _ => {
            let v: String = row.try_get_unchecked(i)?;
            let _ = write!(out, "{v:?}");
        }
    }
    Ok(())
}
