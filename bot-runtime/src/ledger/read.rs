//! The read side, for either backend: sessions, the next free session id,
//! and every committed record of a session.

use std::collections::HashSet;

use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, Pool, SqlSafeStr as _, SqlStr};

use super::LedgerError;
use super::bind::{Args, StoredSeqs};
use super::decode::{self, Cursor, SessionState};
use super::dialect::Dialect;
use super::records::LedgerBatch;
use super::schema::{self, Table};
use super::sql::{select_list, select_session_rows};
use super::store::SessionInfo;
use crate::types::Timestamp;

/// `SELECT` of every `sessions` column plus the session's trade count, from
/// `sessions s`, followed by `tail` (a WHERE / ORDER BY clause).
fn sessions_query<DB: Dialect>(tail: &str) -> SqlStr {
    AssertSqlSafe(format!(
        "SELECT {}, (SELECT COUNT(*) FROM trades t WHERE t.session_id = s.id) AS trades \
         FROM sessions s {tail}",
        select_list::<DB>(schema::SESSIONS.columns, "s."),
    ))
    .into_sql_str()
}

async fn sessions_where<DB: Dialect>(
    conn: &mut DB::Connection,
    tail: &str,
    mut args: Args<DB>,
) -> Result<Vec<SessionState>, LedgerError> {
    let rows = DB::fetch_all(conn, sessions_query::<DB>(tail), args.take()?).await?;
    rows.iter()
        .map(|row| decode::session(&mut Cursor::<DB>::new(row, &schema::SESSIONS, "")))
        .collect()
}

/// One session's row on `conn` (e.g. inside a transaction).
pub(crate) async fn session_state_on<DB: Dialect>(
    conn: &mut DB::Connection,
    id: &str,
) -> Result<Option<SessionState>, LedgerError> {
    let mut a = Args::<DB>::default();
    a.text(id);
    Ok(sessions_where::<DB>(conn, "WHERE s.id = $1", a)
        .await?
        .pop())
}

/// One session's row.
pub(crate) async fn session_state<DB: Dialect>(
    pool: &Pool<DB>,
    id: &str,
) -> Result<Option<SessionState>, LedgerError> {
    let mut conn = pool.acquire().await?;
    session_state_on::<DB>(&mut conn, id).await
}

/// Every session, newest first.
pub(crate) async fn list_sessions<DB: Dialect>(
    pool: &Pool<DB>,
) -> Result<Vec<SessionInfo>, LedgerError> {
    let mut conn = pool.acquire().await?;
    let all = sessions_where::<DB>(
        &mut conn,
        "ORDER BY s.created_at DESC, s.id DESC",
        Args::default(),
    );
    Ok(all.await?.into_iter().map(|s| s.info).collect())
}

/// The newest unfinished session of BotSession `name`.
pub(crate) async fn find_unfinished<DB: Dialect>(
    pool: &Pool<DB>,
    name: &str,
) -> Result<Option<SessionInfo>, LedgerError> {
    let mut conn = pool.acquire().await?;
    let mut a = Args::<DB>::default();
    a.text(name);
    let found = sessions_where::<DB>(
        &mut conn,
        "WHERE s.name = $1 AND s.ended_at IS NULL ORDER BY s.created_at DESC, s.id DESC",
        a,
    )
    .await?;
    Ok(found.into_iter().next().map(|s| s.info))
}

/// `name` if no session has that id, else `name-N` for the smallest free N >= 2.
pub(crate) async fn next_session_id<DB: Dialect>(
    pool: &Pool<DB>,
    name: &str,
) -> Result<String, LedgerError> {
    let mut conn = pool.acquire().await?;
    let mut a = Args::<DB>::default();
    a.text(name);
    let rows = DB::fetch_all(
        &mut conn,
        "SELECT id FROM sessions WHERE id = $1 OR substr(id, 1, length($1) + 1) = $1 || '-'"
            .into_sql_str(),
        a.take()?,
    )
    .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| DB::text_at(r, 0).map(Option::unwrap_or_default))
        .collect::<Result<_, _>>()?;
    if !ids.iter().any(|id| id == name) {
        return Ok(name.to_owned());
    }
    let taken: HashSet<u64> = ids
        .iter()
        .filter_map(|id| id.strip_prefix(name)?.strip_prefix('-')?.parse().ok())
        .collect();
    // At most `ids.len()` numbers are taken, so one of the next
    // `ids.len() + 1` is free.
    let n = (2u64..)
        .take(ids.len() + 1)
        .find(|n| !taken.contains(n))
        .unwrap_or(2);
    Ok(format!("{name}-{n}"))
}

/// The last store-assigned numbers of a session.
pub(crate) async fn stored_seqs<DB: Dialect>(
    conn: &mut DB::Connection,
    id: &str,
) -> Result<StoredSeqs, LedgerError> {
    let mut a = Args::<DB>::default();
    a.text(id);
    let rows = DB::fetch_all(
        conn,
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM round_trips WHERE session_id = $1), \
         (SELECT COALESCE(MAX(seq), 0) FROM breaker_events WHERE session_id = $1), \
         (SELECT COALESCE(MAX(seq), 0) FROM snapshots WHERE session_id = $1)"
            .into_sql_str(),
        a.take()?,
    )
    .await?;
    let max = |i| -> Result<i64, LedgerError> {
        Ok(match rows.first() {
            Some(row) => DB::int_at(row, i)?.unwrap_or(0),
            None => 0,
        })
    };
    Ok(StoredSeqs {
        round_trips: max(0)?,
        breaker_events: max(1)?,
        snapshots: max(2)?,
    })
}

/// One page of a child table: rows whose `order` column is above `after`,
/// at most `limit`, in order.
async fn page<DB: Dialect>(
    conn: &mut DB::Connection,
    table: &'static Table,
    order: &str,
    id: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<DB::Row>, LedgerError> {
    let sql = select_session_rows::<DB>(
        table,
        &format!(" AND {order} > $2 ORDER BY {order} LIMIT $3"),
    );
    let mut a = Args::<DB>::default();
    a.text(id)
        .int(after)
        .int(i64::try_from(limit).unwrap_or(i64::MAX));
    Ok(DB::fetch_all(conn, sql, a.take()?).await?)
}

/// Paging state of one child table.
struct Pager {
    table: &'static Table,
    /// The ordering column (`seq`, or `id` for adjustments).
    order: &'static str,
    /// Last value of `order` returned.
    after: i64,
    done: bool,
}

impl Pager {
    fn new(table: &'static Table, order: &'static str) -> Self {
        Self {
            table,
            order,
            after: 0,
            done: false,
        }
    }

    /// The next page (empty once done); `order` is the column at index 1.
    async fn next<DB: Dialect>(
        &mut self,
        conn: &mut DB::Connection,
        id: &str,
        chunk: usize,
    ) -> Result<Vec<DB::Row>, LedgerError> {
        if self.done {
            return Ok(Vec::new());
        }
        let rows = page::<DB>(conn, self.table, self.order, id, self.after, chunk).await?;
        self.done = rows.len() < chunk;
        if let Some(last) = rows.last() {
            self.after = Cursor::<DB>::new(last, self.table, id).skip(1).int()?;
        }
        Ok(rows)
    }
}

/// See [`LedgerStore::read_records`](super::LedgerStore::read_records).
///
/// Each batch holds the next `chunk` (at least 1) rows of every kind;
/// positions (their current state) come with the last batch. A batch's
/// `cash` is the `cash_after` of its last trade (else the previous batch's,
/// starting from the initial cash; the last batch carries the session's
/// stored cash), its `time` the latest market time of its records.
pub(crate) async fn read_records<DB: Dialect>(
    pool: &Pool<DB>,
    id: &str,
    chunk: usize,
    sink: &mut (dyn FnMut(LedgerBatch) -> Result<(), LedgerError> + Send),
) -> Result<(), LedgerError> {
    let chunk = chunk.max(1);
    let mut conn = pool.acquire().await?;
    let Some(session) = session_state_on::<DB>(&mut conn, id).await? else {
        return Err(LedgerError::UnknownSession {
            session_id: id.to_owned(),
        });
    };
    let mut pagers = [
        Pager::new(&schema::DECISIONS, "seq"),
        Pager::new(&schema::TRADES, "seq"),
        Pager::new(&schema::ROUND_TRIPS, "seq"),
        Pager::new(&schema::BREAKER_EVENTS, "seq"),
        Pager::new(&schema::ADJUSTMENTS, "id"),
        Pager::new(&schema::SNAPSHOTS, "seq"),
    ];
    let mut cash: Decimal = session.info.initial_cash;
    let mut time: Timestamp = session.info.started_at;
    loop {
        let mut b = LedgerBatch::default();
        for (k, pager) in pagers.iter_mut().enumerate() {
            for row in pager.next::<DB>(&mut conn, id, chunk).await? {
                let c = &mut Cursor::<DB>::new(&row, pager.table, id);
                match k {
                    0 => b.decisions.push(decode::decision(c)?),
                    1 => b.trades.push(decode::trade(c)?),
                    2 => b.round_trips.push(decode::round_trip(c)?),
                    3 => b.breaker_events.push(decode::breaker_event(c)?),
                    4 => {
                        let (adjustment, outcome) = decode::adjustment(c)?;
                        b.adjustments.push(adjustment);
                        b.adjustment_outcomes.extend(outcome);
                    }
                    _ => b.snapshots.push(decode::snapshot(c)?),
                }
            }
        }
        let last = pagers.iter().all(|p| p.done);
        if let Some(t) = b.trades.last() {
            cash = t.cash_after;
        }
        time = time.max(latest_time(&b));
        if last {
            let rows = DB::fetch_all(
                &mut conn,
                select_session_rows::<DB>(&schema::POSITIONS, " ORDER BY symbol"),
                {
                    let mut a = Args::<DB>::default();
                    a.text(id);
                    a.take()?
                },
            )
            .await?;
            for row in &rows {
                b.positions.push(decode::position(&mut Cursor::<DB>::new(
                    row,
                    &schema::POSITIONS,
                    id,
                ))?);
            }
            cash = session.info.cash;
            time = time.max(session.info.last_batch_at.unwrap_or(time));
        }
        b.cash = cash;
        b.time = time;
        sink(b)?;
        if last {
            return Ok(());
        }
    }
}

/// The latest market time of any record in `b` (the epoch when empty).
fn latest_time(b: &LedgerBatch) -> Timestamp {
    let times = b
        .decisions
        .iter()
        .map(|r| r.time)
        .chain(b.trades.iter().map(|r| r.time))
        .chain(b.round_trips.iter().map(|r| r.exit_time))
        .chain(b.breaker_events.iter().map(|r| r.time))
        .chain(b.adjustments.iter().map(|r| r.time))
        .chain(b.adjustment_outcomes.iter().map(|r| r.time))
        .chain(b.snapshots.iter().map(|r| r.time));
    times.max().unwrap_or(Timestamp(i64::MIN))
}
