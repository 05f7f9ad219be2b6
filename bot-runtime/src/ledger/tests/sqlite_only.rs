//! SQLite-only behaviour: the file left by `close`, the stored text form,
//! upgrading a version-1 database, in-memory ledgers.

use rust_decimal_macros::dec;

use super::fixture::{Fixture, Sqlite, open};
use super::suite::{concat, read_all, workload};
use crate::ledger::sample::{Gen, end, session};
use crate::ledger::{Ledger, LedgerError, LedgerStore, SqliteLedger};

fn sqlite(l: &Ledger) -> &SqliteLedger {
    match l {
        Ledger::Sqlite(l) => l,
        Ledger::Postgres(_) => panic!("expected a SQLite ledger"),
    }
}

#[tokio::test]
async fn close_leaves_the_main_database_file_complete() {
    let fx = Sqlite::new();
    let url = fx.fresh("close");
    let mut l = open(&url).await;
    l.start_session(&session("close"), "w").await.unwrap();
    let batches = workload();
    for b in &batches {
        l.write_batch(b, "{}").await.unwrap();
    }
    l.finish_session(&end(dec!(1))).await.unwrap();
    let want = l.dump_session("close").await.unwrap();
    l.close().await;

    // Only the main file is copied: nothing may live in -wal alone.
    let wal = std::fs::metadata(format!("{url}-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "the WAL still holds data after close");
    let copy = tempfile::tempdir().unwrap();
    let alone = copy.path().join("alone.db");
    std::fs::copy(&url, &alone).unwrap();
    let ro = format!("sqlite:{}?mode=ro", alone.display());
    let pool = sqlx::SqlitePool::connect(&ro).await.unwrap();
    let decisions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM decisions WHERE session_id = 'close'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let trades: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM trades WHERE session_id = 'close'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let phase: String = sqlx::query_scalar("SELECT phase FROM sessions WHERE id = 'close'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!((decisions, trades, phase.as_str()), (750, 600, "Completed"));
    // And opened as a ledger, the copy dumps identically.
    let l = open(alone.to_str().unwrap()).await;
    assert_eq!(l.dump_session("close").await.unwrap(), want);
    l.close().await;
}

#[tokio::test]
async fn decimals_are_stored_as_their_exact_text() {
    let fx = Sqlite::new();
    let mut l = open(&fx.fresh("text")).await;
    l.start_session(&session("text"), "w").await.unwrap();
    l.write_batch(&Gen::default().batch(1, 1, 0, 0), "{}")
        .await
        .unwrap();
    let (kind, fee, gas): (String, String, String) =
        sqlx::query_as("SELECT typeof(fee), fee, gas FROM trades WHERE session_id = 'text'")
            .fetch_one(sqlite(&l).pool())
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), fee.as_str(), gas.as_str()),
        ("text", "0.0997", "0.50")
    );
    l.close().await;
}

#[tokio::test]
async fn migrations_apply_once_and_the_journal_is_wal() {
    let fx = Sqlite::new();
    let url = fx.fresh("migrate");
    for _ in 0..3 {
        let l = open(&url).await;
        let pool = sqlite(&l).pool();
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(applied, [1, 2]);
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        l.close().await;
    }
}

/// A database written by the first schema (lease columns, no checkpoints)
/// upgrades in place: finished sessions read as before, and a crashed
/// session whose batches have no checkpoint is refused a resume with the
/// way out (`sessions close`) rather than resumed from a wrong state.
#[tokio::test]
async fn a_version_1_database_upgrades_and_its_orphans_are_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1");
    std::fs::create_dir(&v1).unwrap();
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/sqlite/0001_ledger.sql"
    );
    std::fs::copy(src, v1.join("0001_ledger.sql")).unwrap();
    let db = dir.path().join("old.db");
    let url = format!("sqlite:{}?mode=rwc", db.display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(v1.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO sessions (id, name, account, strategy, base_currency, initial_cash, \
             config_json, started_at, phase, ended_at, cash, equity, last_batch_at, summary_json, \
             writer_token, lease_expires_at, created_at) VALUES \
             ('old', 'old', 'a', 's', 'USD', '100.00', '{}', 1, 'Completed', 9, '101.50', \
              '101.50', 9, '{}', NULL, NULL, 1), \
             ('orphan', 'orphan', 'a', 's', 'USD', '100.00', '{}', 1, 'Running', NULL, '99', \
              '99', 5, NULL, 'tok', 1, 2)",
            "INSERT INTO decisions VALUES ('orphan', 1, 5, 'BTCUSD', 'hold', '50.00', '1.5', \
             NULL, '', '', '', 'r')",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let mut l = open(db.to_str().unwrap()).await;
    let old = l.session("old").await.unwrap().unwrap();
    assert_eq!((old.phase.as_str(), old.cash), ("Completed", dec!(101.50)));
    assert_eq!(
        l.find_unfinished("orphan")
            .await
            .unwrap()
            .map(|s| s.batches),
        Some(0)
    );
    let err = l.resume_session("orphan", "w").await.unwrap_err();
    assert!(matches!(err, LedgerError::NotResumable { .. }), "{err}");
    assert!(err.to_string().contains("sessions close"), "{err}");
    let records = concat(&read_all(&l, "orphan", 10).await);
    assert_eq!(records.decisions.len(), 1);
    let lease_column: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pragma_table_info('sessions') WHERE name = 'lease_expires_at'",
    )
    .fetch_one(sqlite(&l).pool())
    .await
    .unwrap();
    assert_eq!(lease_column, 0);
    l.close().await;
}

#[tokio::test]
async fn an_in_memory_ledger_runs_a_session() {
    let mut l = open("sqlite::memory:").await;
    assert_eq!(l.backend(), "SQLite");
    l.start_session(&session("mem"), "w").await.unwrap();
    let batches = workload();
    for b in &batches {
        l.write_batch(b, "{}").await.unwrap();
    }
    assert_eq!(l.active_session(), Some("mem"));
    l.finish_session(&end(dec!(1))).await.unwrap();
    let all = concat(&read_all(&l, "mem", 500).await);
    assert_eq!(all.trades.len(), 600);
    l.close().await;
}

#[tokio::test]
async fn an_unwritable_lock_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    // A file where the lock directory should be.
    std::fs::write(dir.path().join("l.db.locks"), b"").unwrap();
    let mut l = open(db.to_str().unwrap()).await;
    let err = l.start_session(&session("x"), "w").await.unwrap_err();
    assert!(matches!(err, LedgerError::LockFile { .. }), "{err}");
    assert!(err.to_string().contains("l.db.locks"), "{err}");
    // Nothing was registered.
    assert_eq!(l.session("x").await.unwrap(), None);
    l.close().await;
}

#[tokio::test]
async fn a_corrupt_stored_value_is_reported_not_panicked_on() {
    let fx = Sqlite::new();
    let mut l = open(&fx.fresh("corrupt")).await;
    l.start_session(&session("bad"), "w").await.unwrap();
    l.write_batch(&Gen::default().batch(2, 2, 0, 0), "{}")
        .await
        .unwrap();
    sqlx::query("UPDATE trades SET fee = '1,5' WHERE session_id = 'bad' AND seq = 2")
        .execute(sqlite(&l).pool())
        .await
        .unwrap();
    let err = l
        .read_records("bad", 10, &mut |_| Ok(()))
        .await
        .unwrap_err();
    match &err {
        LedgerError::Corrupt {
            session_id,
            table,
            detail,
        } => {
            assert_eq!((session_id.as_str(), *table), ("bad", "trades"));
            assert!(
                detail.contains("fee") && detail.contains("\"1,5\""),
                "{detail}"
            );
        }
        e => panic!("expected Corrupt, got {e}"),
    }
    sqlx::query("UPDATE sessions SET cash = 'lots' WHERE id = 'bad'")
        .execute(sqlite(&l).pool())
        .await
        .unwrap();
    let err = l.session("bad").await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::Corrupt { session_id, table: "sessions", .. } if session_id == "bad"),
        "{err}"
    );
    assert!(err.to_string().contains("cash"), "{err}");
    l.close().await;
}
