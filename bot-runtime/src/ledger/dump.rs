//! The canonical dump of one session: the same text on both backends for the
//! same stored rows, used to prove that a resumed session equals an
//! uninterrupted one and that the backends store the same thing.
//!
//! Format: for each table of [`schema::TABLES`] (in name order) a line
//! `== table: col1|col2|...` with the dumped columns (schema order; see
//! [`Column::dumped`](super::schema::Column) for what is left out), then one
//! line per row ordered by primary key: values joined by `|`, `NULL`,
//! integers in decimal, text and decimals as Rust-escaped quoted strings
//! (decimals exactly as stored, e.g. `"0.10"`).

use std::fmt::Write as _;

use sqlx::{AssertSqlSafe, Pool, SqlSafeStr as _};

use super::LedgerError;
use super::bind::Args;
use super::dialect::Dialect;
use super::schema::{Kind, TABLES};
use super::sql::select_list;

/// Canonical text of every row of session `id` (empty tables still get their
/// header line; an unknown session gives headers only).
///
/// # Errors
/// [`LedgerError::Database`] if a table cannot be read.
pub(crate) async fn dump_session<DB: Dialect>(
    pool: &Pool<DB>,
    id: &str,
) -> Result<String, LedgerError> {
    let mut conn = pool.acquire().await?;
    let mut out = String::new();
    for table in TABLES {
        let columns: Vec<_> = table.dumped().collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1 ORDER BY {}",
            select_list::<DB>(columns.iter().copied(), ""),
            table.name,
            table.session_column,
            table.key.join(", "),
        );
        let mut a = Args::<DB>::default();
        a.text(id);
        let rows = DB::fetch_all(&mut conn, AssertSqlSafe(sql).into_sql_str(), a.take()?).await?;
        let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
        let _ = writeln!(out, "== {}: {}", table.name, names.join("|"));
        for row in &rows {
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                let rendered = match column.kind {
                    Kind::Int => DB::int_at(row, i)?.map(|v| v.to_string()),
                    Kind::Text | Kind::Decimal => DB::text_at(row, i)?.map(|v| format!("{v:?}")),
                };
                out.push_str(rendered.as_deref().unwrap_or("NULL"));
            }
            out.push('\n');
        }
    }
    Ok(out)
}
