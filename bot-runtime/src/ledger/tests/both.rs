//! The two backends side by side: the same batches give the same dump and
//! the same records; both schemas match the table list the code relies on.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::fixture::{Fixture, Postgres, Sqlite, open};
use super::suite::{concat, every_kind, read_all, workload};
use crate::ledger::records::LedgerBatch;
use crate::ledger::sample::{Gen, end, session};
use crate::ledger::schema::TABLES;
use crate::ledger::{Ledger, LedgerStore};

/// The workload plus every record kind and decimals of every scale and sign.
fn batches() -> Vec<LedgerBatch> {
    let mut all = workload();
    let mut g = Gen {
        decision_seq: 10_000,
        trade_seq: 10_000,
        adjustment_id: 100,
        minute: 100_000,
    };
    let [mut b1, b2] = every_kind(&mut g);
    for (t, v) in b1.trades.iter_mut().zip([
        Decimal::MAX,
        Decimal::MIN,
        Decimal::new(1, 28),
        dec!(-0.000),
        dec!(100),
        Decimal::new(1, 5),
    ]) {
        t.fee = v;
    }
    let mut b2 = b2;
    b2.adjustment_outcomes[0].id = 101;
    all.push(b1);
    all.push(b2);
    all
}

async fn write(url: &str, batches: &[LedgerBatch]) -> (String, LedgerBatch) {
    let mut l = open(url).await;
    l.start_session(&session("same"), "w").await.unwrap();
    for b in batches {
        l.write_batch(b, "{}").await.unwrap();
    }
    l.finish_session(&end(dec!(9876.54))).await.unwrap();
    let dump = l.dump_session("same").await.unwrap();
    let records = concat(&read_all(&l, "same", 333).await);
    l.close().await;
    (dump, records)
}

#[tokio::test]
async fn both_backends_store_and_dump_identically() {
    let batches = batches();
    let sqlite = Sqlite::new();
    let (sqlite_dump, sqlite_records) = write(&sqlite.fresh("same"), &batches).await;
    let (pg_dump, pg_records) = write(&Postgres::new().fresh("same"), &batches).await;
    assert!(sqlite_dump.lines().count() > 1500, "{sqlite_dump}");
    assert_eq!(sqlite_dump, pg_dump);
    assert_eq!(format!("{sqlite_records:?}"), format!("{pg_records:?}"));

    // Differences do show: the same value with another scale.
    let mut tweaked = batches.clone();
    tweaked[3].trades[17].fee = dec!(0.09970);
    let (pg_tweaked, _) = write(&Postgres::new().fresh("tweaked"), &tweaked).await;
    assert_ne!(pg_tweaked, pg_dump);
    assert_eq!(pg_tweaked.lines().count(), pg_dump.lines().count());
}

/// Column names of `table` in the live schema, in order.
async fn live_columns(l: &Ledger, table: &str) -> Vec<String> {
    match l {
        Ledger::Sqlite(l) => {
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(l.pool())
                .await
                .unwrap()
        }
        Ledger::Postgres(l) => sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(l.pool())
        .await
        .unwrap(),
    }
}

async fn live_tables(l: &Ledger) -> Vec<String> {
    let mut tables: Vec<String> = match l {
        Ledger::Sqlite(l) => sqlx::query_scalar(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'",
        )
        .fetch_all(l.pool())
        .await
        .unwrap(),
        Ledger::Postgres(l) => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema()",
        )
        .fetch_all(l.pool())
        .await
        .unwrap(),
    };
    tables.retain(|t| t != "_sqlx_migrations");
    tables.sort();
    tables
}

/// The table list the statements, readers and dump are generated from is
/// the schema the migrations build, on both backends, so a column added by
/// a migration but not to the list (or the reverse) fails here.
#[tokio::test]
async fn both_schemas_match_the_table_list() {
    let sqlite = Sqlite::new();
    for url in [sqlite.fresh("schema"), Postgres::new().fresh("schema")] {
        let l = open(&url).await;
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        assert_eq!(live_tables(&l).await, names, "{}", l.backend());
        for table in TABLES {
            let want: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
            assert_eq!(
                live_columns(&l, table.name).await,
                want,
                "{} {}",
                l.backend(),
                table.name
            );
        }
        l.close().await;
    }
}
