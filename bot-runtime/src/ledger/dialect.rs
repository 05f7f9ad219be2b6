//! What differs between SQLite and PostgreSQL for the ledger's statements:
//! placeholders, how a decimal is bound and read back, how a write
//! transaction starts. Everything else (the statements, fencing, readers,
//! the dump) is written once, generic over [`Dialect`].
//!
//! The trait also wraps binding, decoding and execution in plain methods, so
//! that generic code needs no higher-ranked `Executor`/`Encode`/`Decode`
//! bounds: each backend implements them on its concrete types.

use std::future::Future;
use std::sync::{Arc, LazyLock};

use rust_decimal::Decimal;
use sqlx::{Arguments, Database, Postgres, Row, SqlStr, Sqlite};

use super::LedgerError;
use super::sql::Inserts;

/// A database the ledger runs on.
pub(crate) trait Dialect: Database {
    /// Statement that opens a write transaction. SQLite takes the write lock
    /// at once (`BEGIN IMMEDIATE`), so a busy database fails (and is retried)
    /// before any work is done.
    const BEGIN_WRITE: &'static str;

    /// Append the placeholder of argument `n` (1-based) of a multi-row insert.
    fn placeholder(out: &mut String, n: usize);

    /// A select-list item reading decimal expression `expr` as its exact text
    /// (scale preserved), named `alias`.
    fn decimal_text(expr: &str, alias: &str) -> String;

    /// The multi-row INSERT statements of every child table, generated once
    /// per process.
    fn inserts() -> &'static Inserts;

    /// Bind a nullable 64-bit integer.
    fn add_int(args: &mut Self::Arguments, v: Option<i64>) -> Result<(), LedgerError>;

    /// Bind nullable text.
    fn add_text(args: &mut Self::Arguments, v: Option<Arc<str>>) -> Result<(), LedgerError>;

    /// Bind a nullable decimal (`scratch` is a reusable formatting buffer).
    fn add_decimal(
        args: &mut Self::Arguments,
        v: Option<Decimal>,
        scratch: &mut String,
    ) -> Result<(), LedgerError>;

    /// Integer column `i` of a row (`None` for NULL).
    fn int_at(row: &Self::Row, i: usize) -> Result<Option<i64>, sqlx::Error>;

    /// Text column `i` of a row (`None` for NULL).
    fn text_at(row: &Self::Row, i: usize) -> Result<Option<String>, sqlx::Error>;

    /// Run a statement; returns the number of rows it changed.
    fn execute<'c>(
        conn: &'c mut Self::Connection,
        sql: SqlStr,
        args: Self::Arguments,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'c;

    /// Run a query; returns every row.
    fn fetch_all<'c>(
        conn: &'c mut Self::Connection,
        sql: SqlStr,
        args: Self::Arguments,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + 'c;
}

/// The methods whose bodies are the same text for both backends (each
/// expands to calls on the backend's concrete types).
macro_rules! shared_methods {
    ($db:ty) => {
        fn inserts() -> &'static Inserts {
            static INSERTS: LazyLock<Inserts> = LazyLock::new(Inserts::new::<$db>);
            &INSERTS
        }

        fn add_int(args: &mut Self::Arguments, v: Option<i64>) -> Result<(), LedgerError> {
            args.add(v).map_err(encode_error)
        }

        fn add_text(args: &mut Self::Arguments, v: Option<Arc<str>>) -> Result<(), LedgerError> {
            args.add(v).map_err(encode_error)
        }

        fn int_at(row: &Self::Row, i: usize) -> Result<Option<i64>, sqlx::Error> {
            row.try_get(i)
        }

        fn text_at(row: &Self::Row, i: usize) -> Result<Option<String>, sqlx::Error> {
            row.try_get(i)
        }

        fn execute<'c>(
            conn: &'c mut Self::Connection,
            sql: SqlStr,
            args: Self::Arguments,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'c {
            async move {
                let done = sqlx::query_with(sql, args).execute(conn).await?;
                Ok(done.rows_affected())
            }
        }

        fn fetch_all<'c>(
            conn: &'c mut Self::Connection,
            sql: SqlStr,
            args: Self::Arguments,
        ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + 'c {
            sqlx::query_with(sql, args).fetch_all(conn)
        }
    };
}

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    /// Anonymous `?`: SQLite resolves a numbered placeholder's name by a
    /// linear scan, which sqlx does for every bound value, making wide
    /// numbered statements quadratic.
    fn placeholder(out: &mut String, _n: usize) {
        out.push('?');
    }

    /// Decimals are stored as their exact text already.
    fn decimal_text(expr: &str, alias: &str) -> String {
        if expr == alias {
            expr.to_owned()
        } else {
            format!("{expr} AS {alias}")
        }
    }

    /// As TEXT in `Decimal`'s exact `Display` form (`0.10` stays `0.10`).
    fn add_decimal(
        args: &mut Self::Arguments,
        v: Option<Decimal>,
        scratch: &mut String,
    ) -> Result<(), LedgerError> {
        use std::fmt::Write as _;
        let text = v.map(|d| {
            scratch.clear();
            // Writing to a String cannot fail.
            let _ = write!(scratch, "{}", canonical(d));
            Arc::<str>::from(scratch.as_str())
        });
        args.add(text).map_err(encode_error)
    }

    shared_methods!(Sqlite);
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";

    fn placeholder(out: &mut String, n: usize) {
        use std::fmt::Write as _;
        let _ = write!(out, "${n}");
    }

    /// NUMERIC's text output keeps the stored scale (`0.10`).
    fn decimal_text(expr: &str, alias: &str) -> String {
        format!("{expr}::text AS {alias}")
    }

    /// As NUMERIC with the decimal's scale (zero included, see [`ScaledNumeric`]).
    fn add_decimal(
        args: &mut Self::Arguments,
        v: Option<Decimal>,
        _scratch: &mut String,
    ) -> Result<(), LedgerError> {
        args.add(v.map(|d| ScaledNumeric(canonical(d))))
            .map_err(encode_error)
    }

    shared_methods!(Postgres);
}

/// The stored form of a decimal: negative zero (`-0.00`, which `Decimal` can
/// hold but NUMERIC cannot) becomes `0.00`, the same on both backends.
fn canonical(mut d: Decimal) -> Decimal {
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    d
}

/// A decimal bound as PostgreSQL NUMERIC keeping its scale even when it is
/// zero: sqlx encodes every zero as a scale-0 `0`, which would store `0.00`
/// as `0` (SQLite keeps `0.00`). Non-zero values use sqlx's encoding, which
/// keeps the scale.
#[derive(Debug)]
struct ScaledNumeric(Decimal);

impl sqlx::Type<Postgres> for ScaledNumeric {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Decimal as sqlx::Type<Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, Postgres> for ScaledNumeric {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        if !self.0.is_zero() {
            return <Decimal as sqlx::Encode<'_, Postgres>>::encode_by_ref(&self.0, buf);
        }
        // NUMERIC's binary form: ndigits, weight, sign (0 = positive),
        // display scale, then no base-10000 digits.
        let scale = u16::try_from(self.0.scale()).unwrap_or(0);
        for word in [0u16, 0, 0, scale] {
            buf.extend_from_slice(&word.to_be_bytes());
        }
        Ok(sqlx::encode::IsNull::No)
    }
}

fn encode_error(e: sqlx::error::BoxDynError) -> LedgerError {
    LedgerError::Encode(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_zero_is_stored_as_zero_with_its_scale() {
        let mut z = Decimal::new(0, 2);
        z.set_sign_negative(true);
        assert_eq!(canonical(z).to_string(), "0.00");
        assert_eq!(canonical(Decimal::new(-150, 2)).to_string(), "-1.50");
    }
}
