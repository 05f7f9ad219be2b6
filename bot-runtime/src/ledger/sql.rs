//! Generated SQL text: the multi-row INSERT statements of the write path and
//! the select lists of the readers, for either [`Dialect`].
//!
//! Speed: rows are inserted with multi-row `INSERT ... VALUES (..), (..)`
//! statements of 256, 128, ..., 2 or 1 rows (a batch of `n` rows is split
//! into full 256-row chunks plus the binary decomposition of the rest). The
//! SQL of every shape is generated once per process, so each connection
//! prepares at most nine statements per table and reuses them from sqlx's
//! statement cache for every later batch.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr};

use super::dialect::Dialect;
use super::schema::{self, Column, Kind, Table};

/// Largest rows-per-statement shape; a power of two. At 19 arguments per
/// trade row, 256 rows stay far below PostgreSQL's 65,535 arguments per
/// statement and SQLite's 32,766.
pub(crate) const MAX_CHUNK_ROWS: usize = 256;

/// Number of statement shapes per table: 1, 2, 4, ..., MAX_CHUNK_ROWS.
const CHUNK_SHAPES: usize = MAX_CHUNK_ROWS.trailing_zeros() as usize + 1;

/// Rows in the next statement: [`MAX_CHUNK_ROWS`] while at least that many
/// remain, else the largest power of two not above `remaining` (>= 1).
pub(crate) fn chunk_rows(remaining: usize) -> usize {
    if remaining >= MAX_CHUNK_ROWS {
        MAX_CHUNK_ROWS
    } else {
        1 << (usize::BITS - 1 - remaining.max(1).leading_zeros())
    }
}

/// The INSERT statements of one table, one per chunk shape.
#[derive(Debug)]
pub(crate) struct TableInserts {
    /// Arguments per row.
    pub columns: usize,
    /// `by_shape[k]` inserts `2^k` rows.
    by_shape: Vec<SqlStr>,
}

impl TableInserts {
    /// `INSERT INTO table (c1, ..) VALUES (p, ..), (p, ..) suffix` for every
    /// shape, over the first `columns` columns of `table`.
    fn new<DB: Dialect>(table: &Table, columns: usize, suffix: &str) -> Self {
        let names: Vec<&str> = table.columns[..columns].iter().map(|c| c.name).collect();
        let head = format!("INSERT INTO {} ({}) VALUES ", table.name, names.join(", "));
        let by_shape = (0..CHUNK_SHAPES)
            .map(|k| {
                let rows = 1usize << k;
                let mut sql = head.clone();
                let mut n = 0;
                for r in 0..rows {
                    sql.push_str(if r == 0 { "(" } else { ", (" });
                    for c in 0..columns {
                        if c > 0 {
                            sql.push_str(", ");
                        }
                        n += 1;
                        DB::placeholder(&mut sql, n);
                    }
                    sql.push(')');
                }
                sql.push_str(suffix);
                AssertSqlSafe(Arc::<str>::from(sql)).into_sql_str()
            })
            .collect();
        Self { columns, by_shape }
    }

    /// The statement inserting `rows` rows (a power of two up to
    /// [`MAX_CHUNK_ROWS`], as [`chunk_rows`] returns).
    pub fn for_rows(&self, rows: usize) -> SqlStr {
        debug_assert!(rows.is_power_of_two() && rows <= MAX_CHUNK_ROWS);
        self.by_shape[rows.trailing_zeros() as usize].clone()
    }
}

/// The INSERT statements of every child table.
#[derive(Debug)]
pub(crate) struct Inserts {
    pub decisions: TableInserts,
    pub trades: TableInserts,
    pub round_trips: TableInserts,
    pub breaker_events: TableInserts,
    pub adjustments: TableInserts,
    pub snapshots: TableInserts,
    pub positions: TableInserts,
}

impl Inserts {
    /// Generate every statement for dialect `DB`.
    pub fn new<DB: Dialect>() -> Self {
        let all = |t: &Table| TableInserts::new::<DB>(t, t.columns.len(), "");
        Self {
            decisions: all(&schema::DECISIONS),
            trades: all(&schema::TRADES),
            round_trips: all(&schema::ROUND_TRIPS),
            breaker_events: all(&schema::BREAKER_EVENTS),
            adjustments: TableInserts::new::<DB>(
                &schema::ADJUSTMENTS,
                schema::ADJUSTMENT_INSERT_COLUMNS,
                "",
            ),
            snapshots: all(&schema::SNAPSHOTS),
            // Portable upsert (SQLite >= 3.24, PostgreSQL >= 9.5). A batch
            // holds at most one state per symbol, as PostgreSQL requires.
            positions: TableInserts::new::<DB>(
                &schema::POSITIONS,
                schema::POSITIONS.columns.len(),
                " ON CONFLICT (session_id, symbol) DO UPDATE SET quantity = excluded.quantity, \
                 cost_basis = excluded.cost_basis, last_price = excluded.last_price, \
                 opened_at = excluded.opened_at, updated_at = excluded.updated_at",
            ),
        }
    }
}

/// A select list of `columns`, each qualified by `prefix` (e.g. `"s."`, or
/// empty) and named by its column name, decimals read as exact text.
pub(crate) fn select_list<'a, DB: Dialect>(
    columns: impl IntoIterator<Item = &'a Column>,
    prefix: &str,
) -> String {
    columns
        .into_iter()
        .map(|c| {
            let expr = format!("{prefix}{}", c.name);
            match c.kind {
                Kind::Decimal => DB::decimal_text(&expr, c.name),
                Kind::Int | Kind::Text if prefix.is_empty() => expr,
                Kind::Int | Kind::Text => format!("{expr} AS {}", c.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT <all columns> FROM table WHERE session_column = $1` plus `tail`
/// (e.g. an ORDER BY), decimals as exact text.
pub(crate) fn select_session_rows<DB: Dialect>(table: &Table, tail: &str) -> SqlStr {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = $1{tail}",
        select_list::<DB>(table.columns, ""),
        table.name,
        table.session_column,
    );
    AssertSqlSafe(sql).into_sql_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_any_count_with_few_shapes() {
        for n in [1usize, 2, 3, 63, 255, 256, 257, 1000, 4097] {
            let mut left = n;
            let mut shapes = Vec::new();
            while left > 0 {
                let k = chunk_rows(left);
                assert!(k.is_power_of_two() && k <= left && k <= MAX_CHUNK_ROWS);
                shapes.push(k);
                left -= k;
            }
            assert_eq!(shapes.iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn placeholders_follow_each_dialect() {
        let sqlite = Inserts::new::<sqlx::Sqlite>();
        let pg = Inserts::new::<sqlx::Postgres>();
        let s = sqlite.breaker_events.for_rows(2);
        let p = pg.breaker_events.for_rows(2);
        assert_eq!(
            s.as_str(),
            "INSERT INTO breaker_events (session_id, seq, time, breaker, from_state, to_state, \
             reason) VALUES (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?)"
        );
        assert!(
            p.as_str()
                .ends_with("($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)")
        );
        assert!(
            pg.adjustments
                .for_rows(1)
                .as_str()
                .ends_with("metrics_before_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        );
        assert!(
            sqlite
                .positions
                .for_rows(1)
                .as_str()
                .contains("ON CONFLICT (session_id, symbol)")
        );
    }
}
