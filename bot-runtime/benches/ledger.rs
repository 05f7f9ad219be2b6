//! Ledger batch-write throughput (rows/s), SQLite and PostgreSQL, on
//! batches shaped like the 1,026,720-candle backtest's: 45 batches of
//! 1,000 decisions, 1,000 trades, ~444 round trips, 378 snapshots and a
//! position (about 2,823 rows each, 127k rows in all), built by
//! `ledger::sample::Gen`.
//!
//! Each configuration runs `RUNS` times into a fresh database; the time is
//! wall clock from the first `write_batch` to the last commit (open, start
//! and finish excluded). Medians are printed with the range.
//!
//! PostgreSQL runs on a throw-away server from Debian's binaries
//! (`paperbot-testkit`), once with the test fixture's `fsync=off` and once
//! durable (`fsync=on`, `synchronous_commit=on`), both on this machine's
//! loopback. A second part compares PostgreSQL insert strategies on the
//! trades table: the ledger's multi-row `INSERT ... VALUES` (256 rows per
//! statement) against one `INSERT ... SELECT FROM UNNEST($1::text[], ...)`
//! per batch and against `COPY ... FROM STDIN` in text format. On the
//! development machine (2 cores, load average ~7) the three were within
//! each other's noise (medians 50k, 60k and 49k rows/s: the server's CPU
//! is the limit), so the ledger keeps the multi-row INSERTs it shares with
//! SQLite.
//!
//! Run: `cargo bench -p bot-runtime --bench ledger`

use std::time::Instant;

use anyhow::{Context, Result};
use bot_runtime::ledger::records::LedgerBatch;
use bot_runtime::ledger::sample::{Gen, end, session};
use bot_runtime::ledger::{self, Ledger, LedgerStore};
use paperbot_testkit::PostgresServer;
use rust_decimal::Decimal;

/// Runs per configuration.
const RUNS: usize = 5;

fn backtest_batches() -> Vec<LedgerBatch> {
    let mut g = Gen::default();
    (0..45)
        .map(|i| g.batch(1000, 1000, 444 + usize::from(i < 20), 378))
        .collect()
}

fn rows(batches: &[LedgerBatch]) -> usize {
    batches
        .iter()
        .map(|b| {
            b.decisions.len()
                + b.trades.len()
                + b.round_trips.len()
                + b.snapshots.len()
                + b.positions.len()
        })
        .sum()
}

/// Seconds to write `batches` as one session into the ledger at `url`.
async fn timed_session(url: &str, batches: &[LedgerBatch]) -> Result<f64> {
    let mut l = ledger::open(url).await?;
    l.start_session(&session("bench"), "bench").await?;
    let started = Instant::now();
    for b in batches {
        l.write_batch(b, "{}").await?;
    }
    let secs = started.elapsed().as_secs_f64();
    l.finish_session(&end(Decimal::ONE)).await?;
    l.close().await;
    Ok(secs)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn report(label: &str, rows: usize, secs: Vec<f64>, batches: usize) {
    let rates: Vec<f64> = secs.iter().map(|s| rows as f64 / s).collect();
    let (med, lo, hi) = median(rates);
    let (ms, _, _) = median(secs.iter().map(|s| s * 1000.0 / batches as f64).collect());
    println!(
        "{label:<34} median {med:>9.0} rows/s  (range {lo:.0}-{hi:.0}, {RUNS} runs; {ms:.2} ms/batch)"
    );
}

async fn bench_backends(batches: &[LedgerBatch]) -> Result<()> {
    let n = rows(batches);
    println!("workload: {} batches, {n} rows", batches.len());
    let dir = tempfile::tempdir()?;
    let mut secs = Vec::new();
    for i in 0..RUNS {
        let path = dir.path().join(format!("bench-{i}.db"));
        secs.push(timed_session(path.to_str().context("temp path")?, batches).await?);
    }
    report("SQLite (WAL, synchronous=NORMAL)", n, secs, batches.len());

    for (label, settings) in [
        ("PostgreSQL (fsync=off)", &[][..]),
        (
            "PostgreSQL (fsync=on)",
            &["fsync=on", "synchronous_commit=on"][..],
        ),
    ] {
        let server = PostgresServer::start_with(settings)?;
        let mut secs = Vec::new();
        for i in 0..RUNS {
            let url = server.create_database(&format!("bench_{i}"))?;
            secs.push(timed_session(&url, batches).await?);
        }
        report(label, n, secs, batches.len());
    }
    Ok(())
}

/// Trades only: the ledger's multi-row INSERTs against one UNNEST insert
/// per batch, on the same server and schema.
async fn bench_pg_strategies() -> Result<()> {
    let server = PostgresServer::start()?;
    let mut g = Gen::default();
    let batches: Vec<LedgerBatch> = (0..40).map(|_| g.batch(0, 1000, 0, 0)).collect();
    let n: usize = batches.iter().map(|b| b.trades.len()).sum();
    println!(
        "PostgreSQL trades-only: {} batches, {n} trade rows",
        batches.len()
    );

    let mut multi = Vec::new();
    for i in 0..RUNS {
        let url = server.create_database(&format!("multi_{i}"))?;
        multi.push(timed_session(&url, &batches).await?);
    }
    report("  multi-row INSERT (ledger)", n, multi, batches.len());

    let unnest = timed_raw(&server, "unnest", &batches, insert_trades_unnest).await?;
    report("  INSERT ... SELECT FROM UNNEST", n, unnest, batches.len());
    let copy = timed_raw(&server, "copy", &batches, insert_trades_copy).await?;
    report("  COPY ... FROM STDIN (text)", n, copy, batches.len());
    Ok(())
}

/// Seconds per run to store `batches` with `insert` (one call per batch)
/// into fresh databases whose session row the ledger created.
async fn timed_raw(
    server: &PostgresServer,
    prefix: &str,
    batches: &[LedgerBatch],
    insert: impl AsyncFn(&sqlx::PgPool, &LedgerBatch) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut secs = Vec::new();
    for i in 0..RUNS {
        let url = server.create_database(&format!("{prefix}_{i}"))?;
        let mut w = ledger::open(&url).await?;
        w.start_session(&session("bench"), "bench").await?;
        let pool = match &w {
            Ledger::Postgres(pg) => pg.pool().clone(),
            Ledger::Sqlite(_) => anyhow::bail!("expected PostgreSQL"),
        };
        let started = Instant::now();
        for b in batches {
            insert(&pool, b).await?;
        }
        secs.push(started.elapsed().as_secs_f64());
        w.close().await;
    }
    Ok(secs)
}

/// One transaction copying a batch's trades in COPY's text format.
async fn insert_trades_copy(pool: &sqlx::PgPool, b: &LedgerBatch) -> Result<()> {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(b.trades.len() * 200);
    for r in &b.trades {
        let _ = writeln!(
            text,
            "bench\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.seq,
            r.decision_seq,
            r.time.millis(),
            r.symbol,
            r.side.as_str(),
            r.quantity,
            r.reference_price,
            r.fill_price,
            r.fee,
            r.gas,
            r.slippage_cost,
            r.latency_ms,
            r.realized_pnl,
            r.reason.as_str(),
            r.status.as_str(),
            r.cash_after,
            r.position_after,
            r.cost_basis_after
        );
    }
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY trades (session_id, seq, decision_seq, time, symbol, side, quantity, \
             reference_price, fill_price, fee, gas, slippage_cost, latency_ms, realized_pnl, \
             reason, status, cash_after, position_after, cost_basis_after) FROM STDIN",
        )
        .await?;
    copy.send(text.as_bytes()).await?;
    copy.finish().await?;
    tx.commit().await?;
    Ok(())
}

/// One transaction inserting a batch's trades with one UNNEST statement
/// (column arrays), as an alternative PostgreSQL write path.
async fn insert_trades_unnest(pool: &sqlx::PgPool, b: &LedgerBatch) -> Result<()> {
    let t = &b.trades;
    let col_i = |f: fn(&bot_runtime::ledger::records::TradeRecord) -> i64| -> Vec<i64> {
        t.iter().map(f).collect()
    };
    let col_d = |f: fn(&bot_runtime::ledger::records::TradeRecord) -> Decimal| -> Vec<Decimal> {
        t.iter().map(f).collect()
    };
    let col_s = |f: fn(&bot_runtime::ledger::records::TradeRecord) -> String| -> Vec<String> {
        t.iter().map(f).collect()
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO trades (session_id, seq, decision_seq, time, symbol, side, quantity, \
         reference_price, fill_price, fee, gas, slippage_cost, latency_ms, realized_pnl, reason, \
         status, cash_after, position_after, cost_basis_after) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[], \
         $6::text[], $7::numeric[], $8::numeric[], $9::numeric[], $10::numeric[], \
         $11::numeric[], $12::numeric[], $13::int8[], $14::numeric[], $15::text[], $16::text[], \
         $17::numeric[], $18::numeric[], $19::numeric[])",
    )
    .bind(col_s(|_| "bench".to_owned()))
    .bind(col_i(|r| r.seq as i64))
    .bind(col_i(|r| r.decision_seq as i64))
    .bind(col_i(|r| r.time.millis()))
    .bind(col_s(|r| r.symbol.clone()))
    .bind(col_s(|r| r.side.as_str().to_owned()))
    .bind(col_d(|r| r.quantity))
    .bind(col_d(|r| r.reference_price))
    .bind(col_d(|r| r.fill_price))
    .bind(col_d(|r| r.fee))
    .bind(col_d(|r| r.gas))
    .bind(col_d(|r| r.slippage_cost))
    .bind(col_i(|r| r.latency_ms))
    .bind(col_d(|r| r.realized_pnl))
    .bind(col_s(|r| r.reason.as_str().to_owned()))
    .bind(col_s(|r| r.status.as_str().to_owned()))
    .bind(col_d(|r| r.cash_after))
    .bind(col_d(|r| r.position_after))
    .bind(col_d(|r| r.cost_basis_after))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        bench_backends(&backtest_batches()).await?;
        bench_pg_strategies().await
    })
}
