//! Tests of the SQLite ledger: storage round trip, atomicity, fencing, ids,
//! migrations and dump determinism.

use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sqlx::Row;

use super::records::*;
use super::*;
use crate::types::{Side, Timestamp};

const T0: i64 = 1_640_995_200_000; // 2022-01-01T00:00:00Z
const MIN: i64 = 60_000;

fn db_path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_owned()
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        name: id.split('-').next().unwrap().to_owned(),
        account: "paper-main".into(),
        strategy: "sma-cross".into(),
        base_currency: "USDT".into(),
        initial_cash: dec!(10000.00),
        config_json: r#"{"risk":{"maxPositionPct":"10"}}"#.into(),
        started_at: Timestamp(T0),
    }
}

fn end(cash: Decimal) -> SessionEnd {
    SessionEnd {
        phase: "Completed".into(),
        ended_at: Timestamp(T0 + 1000 * MIN),
        cash,
        equity: cash + dec!(12.5),
        summary_json: r#"{"trades":2}"#.into(),
    }
}

fn metrics(trades: u32, pf: Option<Decimal>) -> WindowMetrics {
    WindowMetrics {
        trades,
        win_rate_pct: dec!(55.50),
        pnl: dec!(-12.345),
        avg_return_pct: dec!(0.10),
        profit_factor: pf,
    }
}

/// Deterministic generator of realistic records with running sequence numbers.
#[derive(Default)]
struct Gen {
    decision_seq: u64,
    trade_seq: u64,
    adjustment_id: u64,
    minute: i64,
}

impl Gen {
    fn time(&mut self) -> Timestamp {
        self.minute += 1;
        Timestamp(T0 + self.minute * MIN)
    }

    fn decision(&mut self) -> DecisionRecord {
        self.decision_seq += 1;
        let n = self.decision_seq;
        let action = [Action::Buy, Action::Sell, Action::Skip, Action::Hold][(n % 4) as usize];
        DecisionRecord {
            seq: n,
            time: self.time(),
            symbol: if n.is_multiple_of(3) {
                "ETHUSDT"
            } else {
                "BTCUSDT"
            }
            .into(),
            action,
            confidence: Decimal::new(5000 + (n % 5000) as i64, 2),
            price: Decimal::new(4_681_020 + n as i64, 2),
            quantity: matches!(action, Action::Buy | Action::Sell)
                .then(|| Decimal::new(2_130_000 + n as i64, 8)),
            positive_signals: format!(
                "sma_crossover: fast 46810.2 crossed above slow 46795.1; rsi 41.{n}"
            ),
            negative_signals: "volume below 20-bar mean (0.82x)".into(),
            risk_assessment: "position 9.8% of equity, 1/3 positions, breakers closed".into(),
            reason: format!(
                "buy: crossover with confidence {}.00 above threshold 60 (decision {n})",
                50 + n % 50
            ),
        }
    }

    fn trade(&mut self) -> TradeRecord {
        self.trade_seq += 1;
        let n = self.trade_seq;
        TradeRecord {
            seq: n,
            decision_seq: if n.is_multiple_of(5) { 0 } else { n },
            time: self.time().plus_ms(250),
            symbol: "BTCUSDT".into(),
            side: if n.is_multiple_of(2) {
                Side::Sell
            } else {
                Side::Buy
            },
            quantity: Decimal::new(2_130_000 + n as i64, 8),
            reference_price: Decimal::new(4_681_020 + n as i64, 2),
            fill_price: Decimal::new(4_681_254 + n as i64, 2),
            fee: dec!(0.0997),
            gas: dec!(0.50),
            slippage_cost: dec!(0.0498),
            latency_ms: 250,
            realized_pnl: if n.is_multiple_of(2) {
                dec!(-3.21)
            } else {
                Decimal::ZERO
            },
            reason: [
                FillReason::Signal,
                FillReason::StopLoss,
                FillReason::TakeProfit,
            ][(n % 3) as usize],
            status: if n.is_multiple_of(7) {
                FillStatus::Failed
            } else {
                FillStatus::Filled
            },
            cash_after: Decimal::new(1_000_000 - n as i64, 2),
            position_after: if n.is_multiple_of(2) {
                Decimal::ZERO
            } else {
                dec!(0.0213)
            },
            cost_basis_after: dec!(997.15),
        }
    }

    fn round_trip(&mut self) -> RoundTrip {
        let t = self.time();
        RoundTrip {
            symbol: "BTCUSDT".into(),
            entry_time: Timestamp(t.0 - 30 * MIN),
            entry_price: dec!(46810.20),
            exit_time: t,
            exit_price: dec!(46990.75),
            quantity: dec!(0.0213),
            pnl: dec!(2.7416),
            fees: dec!(1.1994),
            return_pct: dec!(0.27),
            exit_reason: FillReason::TrailingStop,
        }
    }

    fn breaker_event(&mut self) -> BreakerEventRecord {
        BreakerEventRecord {
            time: self.time(),
            breaker: "dailyLoss".into(),
            from_state: "Closed".into(),
            to_state: "Open".into(),
            reason: "daily loss 3.2% > limit 3%".into(),
        }
    }

    fn adjustment(&mut self) -> AdjustmentRecord {
        self.adjustment_id += 1;
        AdjustmentRecord {
            id: self.adjustment_id,
            time: self.time(),
            parameter: "stopLossPct".into(),
            old_value: dec!(2.0),
            new_value: dec!(2.50),
            reason: "win rate 38% < 45%: widen the stop".into(),
            metrics_before: metrics(12, None),
        }
    }

    fn snapshot(&mut self) -> SnapshotRecord {
        SnapshotRecord {
            time: self.time(),
            cash: dec!(9001.10),
            position_value: dec!(997.00),
            equity: dec!(9998.10),
            realized_pnl: dec!(-1.90),
            unrealized_pnl: dec!(0.00),
            drawdown_pct: dec!(0.019),
            open_positions: 1,
            trades: self.trade_seq,
        }
    }

    /// A batch with `d` decisions, `t` trades, `r` round trips, `s` snapshots,
    /// and one position update.
    fn batch(&mut self, d: usize, t: usize, r: usize, s: usize) -> LedgerBatch {
        let mut b = LedgerBatch {
            decisions: (0..d).map(|_| self.decision()).collect(),
            trades: (0..t).map(|_| self.trade()).collect(),
            round_trips: (0..r).map(|_| self.round_trip()).collect(),
            snapshots: (0..s).map(|_| self.snapshot()).collect(),
            ..LedgerBatch::default()
        };
        let time = self.time();
        b.positions.push(PositionRecord {
            symbol: "BTCUSDT".into(),
            quantity: dec!(0.0213),
            cost_basis: dec!(997.15),
            last_price: dec!(46990.75),
            opened_at: Some(Timestamp(T0)),
            updated_at: time,
        });
        b.cash = Decimal::new(1_000_000 - self.trade_seq as i64, 2);
        b.time = time;
        b
    }
}

// ---------------------------------------------------------------------------
// Reading rows back (test-only decoding of the stored form)

fn d(row: &sqlx::sqlite::SqliteRow, col: &str) -> Decimal {
    Decimal::from_str(&row.get::<String, _>(col)).unwrap()
}
fn od(row: &sqlx::sqlite::SqliteRow, col: &str) -> Option<Decimal> {
    row.get::<Option<String>, _>(col)
        .map(|s| Decimal::from_str(&s).unwrap())
}
fn ts(row: &sqlx::sqlite::SqliteRow, col: &str) -> Timestamp {
    Timestamp(row.get(col))
}
fn u(row: &sqlx::sqlite::SqliteRow, col: &str) -> u64 {
    u64::try_from(row.get::<i64, _>(col)).unwrap()
}
fn s(row: &sqlx::sqlite::SqliteRow, col: &str) -> String {
    row.get(col)
}
fn fill_reason(s: &str) -> FillReason {
    [
        FillReason::Signal,
        FillReason::StopLoss,
        FillReason::TakeProfit,
        FillReason::TrailingStop,
        FillReason::MaxHoldTime,
        FillReason::Liquidation,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
    .unwrap()
}
fn metrics_from_json(text: &str) -> WindowMetrics {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let dec = |k: &str| Decimal::from_str(v[k].as_str().unwrap()).unwrap();
    WindowMetrics {
        trades: v["trades"].as_u64().unwrap() as u32,
        win_rate_pct: dec("win_rate_pct"),
        pnl: dec("pnl"),
        avg_return_pct: dec("avg_return_pct"),
        profit_factor: v["profit_factor"]
            .as_str()
            .map(|p| Decimal::from_str(p).unwrap()),
    }
}

async fn rows(
    pool: &sqlx::SqlitePool,
    sql: &'static str,
    id: &str,
) -> Vec<sqlx::sqlite::SqliteRow> {
    sqlx::query(sql).bind(id).fetch_all(pool).await.unwrap()
}

/// `assert_eq!` plus equality of the Debug forms, which include each
/// Decimal's scale (`1.5 == 1.50` but they print differently).
fn assert_exact<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T]) {
    assert_eq!(got, want);
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
}

#[tokio::test]
async fn every_record_type_round_trips_through_storage_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SqliteLedger::open(&db_path(&dir, "ledger.db"))
        .await
        .unwrap();
    let id = "btc-sma";
    ledger.start_session(&session(id)).await.unwrap();

    let mut g = Gen::default();
    let mut b1 = g.batch(8, 7, 2, 2);
    b1.breaker_events.push(g.breaker_event());
    b1.adjustments.push(g.adjustment());
    b1.adjustments.push(g.adjustment());
    ledger.write_batch(&b1).await.unwrap();

    let mut b2 = g.batch(2, 2, 1, 1);
    let outcome = AdjustmentOutcomeRecord {
        id: 1,
        time: g.time(),
        outcome: Outcome::Negative,
        metrics_after: metrics(9, Some(dec!(0.85))),
    };
    b2.adjustment_outcomes.push(outcome.clone());
    // The position goes flat: the upsert replaces the earlier state.
    b2.positions[0].quantity = dec!(0);
    b2.positions[0].opened_at = None;
    b2.breaker_events.push(g.breaker_event());
    ledger.write_batch(&b2).await.unwrap();
    ledger.finish_session(&end(b2.cash)).await.unwrap();
    let pool = ledger.pool();

    // Sessions row.
    let srow = &rows(pool, "SELECT * FROM sessions WHERE id = ?1", id).await[0];
    assert_eq!(s(srow, "name"), "btc");
    assert_eq!(s(srow, "initial_cash"), "10000.00");
    assert_eq!(s(srow, "config_json"), session(id).config_json);
    assert_eq!(ts(srow, "started_at"), Timestamp(T0));
    assert_eq!(s(srow, "phase"), "Completed");
    assert_eq!(ts(srow, "ended_at"), end(b2.cash).ended_at);
    assert_eq!(s(srow, "cash"), b2.cash.to_string());
    assert_eq!(s(srow, "equity"), end(b2.cash).equity.to_string());
    assert_eq!(s(srow, "summary_json"), r#"{"trades":2}"#);
    assert_eq!(ts(srow, "last_batch_at"), b2.time);
    assert!(srow.get::<Option<String>, _>("writer_token").is_none());

    // Decisions.
    let got: Vec<DecisionRecord> = rows(
        pool,
        "SELECT * FROM decisions WHERE session_id = ?1 ORDER BY seq",
        id,
    )
    .await
    .iter()
    .map(|r| DecisionRecord {
        seq: u(r, "seq"),
        time: ts(r, "time"),
        symbol: s(r, "symbol"),
        action: [Action::Buy, Action::Sell, Action::Skip, Action::Hold]
            .into_iter()
            .find(|a| a.as_str() == s(r, "action"))
            .unwrap(),
        confidence: d(r, "confidence"),
        price: d(r, "price"),
        quantity: od(r, "quantity"),
        positive_signals: s(r, "positive_signals"),
        negative_signals: s(r, "negative_signals"),
        risk_assessment: s(r, "risk_assessment"),
        reason: s(r, "reason"),
    })
    .collect();
    let want: Vec<_> = b1.decisions.iter().chain(&b2.decisions).cloned().collect();
    assert!(want.iter().any(|d| d.quantity.is_none()) && want.iter().any(|d| d.quantity.is_some()));
    assert_exact(&got, &want);

    // Trades.
    let got: Vec<TradeRecord> = rows(
        pool,
        "SELECT * FROM trades WHERE session_id = ?1 ORDER BY seq",
        id,
    )
    .await
    .iter()
    .map(|r| TradeRecord {
        seq: u(r, "seq"),
        decision_seq: u(r, "decision_seq"),
        time: ts(r, "time"),
        symbol: s(r, "symbol"),
        side: if s(r, "side") == "buy" {
            Side::Buy
        } else {
            Side::Sell
        },
        quantity: d(r, "quantity"),
        reference_price: d(r, "reference_price"),
        fill_price: d(r, "fill_price"),
        fee: d(r, "fee"),
        gas: d(r, "gas"),
        slippage_cost: d(r, "slippage_cost"),
        latency_ms: r.get("latency_ms"),
        realized_pnl: d(r, "realized_pnl"),
        reason: fill_reason(&s(r, "reason")),
        status: if s(r, "status") == "filled" {
            FillStatus::Filled
        } else {
            FillStatus::Failed
        },
        cash_after: d(r, "cash_after"),
        position_after: d(r, "position_after"),
        cost_basis_after: d(r, "cost_basis_after"),
    })
    .collect();
    let want: Vec<_> = b1.trades.iter().chain(&b2.trades).cloned().collect();
    assert!(want.iter().any(|t| t.status == FillStatus::Failed));
    assert_exact(&got, &want);

    // Round trips, numbered by the store across batches.
    let rt = rows(
        pool,
        "SELECT * FROM round_trips WHERE session_id = ?1 ORDER BY seq",
        id,
    )
    .await;
    assert_eq!(
        rt.iter().map(|r| u(r, "seq")).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let got: Vec<RoundTrip> = rt
        .iter()
        .map(|r| RoundTrip {
            symbol: s(r, "symbol"),
            entry_time: ts(r, "entry_time"),
            entry_price: d(r, "entry_price"),
            exit_time: ts(r, "exit_time"),
            exit_price: d(r, "exit_price"),
            quantity: d(r, "quantity"),
            pnl: d(r, "pnl"),
            fees: d(r, "fees"),
            return_pct: d(r, "return_pct"),
            exit_reason: fill_reason(&s(r, "exit_reason")),
        })
        .collect();
    let want: Vec<_> = b1
        .round_trips
        .iter()
        .chain(&b2.round_trips)
        .cloned()
        .collect();
    assert_exact(&got, &want);

    // Breaker events.
    let be = rows(
        pool,
        "SELECT * FROM breaker_events WHERE session_id = ?1 ORDER BY seq",
        id,
    )
    .await;
    assert_eq!(be.iter().map(|r| u(r, "seq")).collect::<Vec<_>>(), [1, 2]);
    let got: Vec<BreakerEventRecord> = be
        .iter()
        .map(|r| BreakerEventRecord {
            time: ts(r, "time"),
            breaker: s(r, "breaker"),
            from_state: s(r, "from_state"),
            to_state: s(r, "to_state"),
            reason: s(r, "reason"),
        })
        .collect();
    let want: Vec<_> = b1
        .breaker_events
        .iter()
        .chain(&b2.breaker_events)
        .cloned()
        .collect();
    assert_exact(&got, &want);

    // Adjustments and the outcome filled in by the later batch.
    let adj = rows(
        pool,
        "SELECT * FROM autopilot_adjustments WHERE session_id = ?1 ORDER BY id",
        id,
    )
    .await;
    let got: Vec<AdjustmentRecord> = adj
        .iter()
        .map(|r| AdjustmentRecord {
            id: u(r, "id"),
            time: ts(r, "time"),
            parameter: s(r, "parameter"),
            old_value: d(r, "old_value"),
            new_value: d(r, "new_value"),
            reason: s(r, "reason"),
            metrics_before: metrics_from_json(&s(r, "metrics_before_json")),
        })
        .collect();
    assert_exact(&got, &b1.adjustments);
    let got_outcome = AdjustmentOutcomeRecord {
        id: u(&adj[0], "id"),
        time: ts(&adj[0], "outcome_time"),
        outcome: match s(&adj[0], "outcome").as_str() {
            "positive" => Outcome::Positive,
            "neutral" => Outcome::Neutral,
            _ => Outcome::Negative,
        },
        metrics_after: metrics_from_json(&s(&adj[0], "metrics_after_json")),
    };
    assert_exact(&[got_outcome], &[outcome]);
    assert!(adj[1].get::<Option<String>, _>("outcome").is_none());
    assert!(adj[1].get::<Option<i64>, _>("outcome_time").is_none());

    // Snapshots.
    let snaps = rows(
        pool,
        "SELECT * FROM snapshots WHERE session_id = ?1 ORDER BY seq",
        id,
    )
    .await;
    let got: Vec<SnapshotRecord> = snaps
        .iter()
        .map(|r| SnapshotRecord {
            time: ts(r, "time"),
            cash: d(r, "cash"),
            position_value: d(r, "position_value"),
            equity: d(r, "equity"),
            realized_pnl: d(r, "realized_pnl"),
            unrealized_pnl: d(r, "unrealized_pnl"),
            drawdown_pct: d(r, "drawdown_pct"),
            open_positions: r.get::<i64, _>("open_positions") as u32,
            trades: u(r, "trades"),
        })
        .collect();
    let want: Vec<_> = b1.snapshots.iter().chain(&b2.snapshots).cloned().collect();
    assert_exact(&got, &want);

    // Positions: one row per symbol holding the latest state.
    let got: Vec<PositionRecord> = rows(
        pool,
        "SELECT * FROM positions WHERE session_id = ?1 ORDER BY symbol",
        id,
    )
    .await
    .iter()
    .map(|r| PositionRecord {
        symbol: s(r, "symbol"),
        quantity: d(r, "quantity"),
        cost_basis: d(r, "cost_basis"),
        last_price: d(r, "last_price"),
        opened_at: r.get::<Option<i64>, _>("opened_at").map(Timestamp),
        updated_at: ts(r, "updated_at"),
    })
    .collect();
    assert_exact(&got, &b2.positions);

    // The dump holds the same rows in canonical form, without wall-clock columns.
    let dump = dump_session(pool, id).await.unwrap();
    for table in [
        "autopilot_adjustments",
        "breaker_events",
        "decisions",
        "positions",
        "round_trips",
        "sessions",
        "snapshots",
        "trades",
    ] {
        assert!(
            dump.contains(&format!("== {table}: ")),
            "{table} missing:\n{dump}"
        );
    }
    assert!(!dump.contains("created_at") && !dump.contains("writer_token"));
    assert!(!dump.contains("_sqlx_migrations"));
    assert!(dump.contains(
        "== positions: session_id|symbol|quantity|cost_basis|last_price|opened_at|updated_at\n\
         \"btc-sma\"|\"BTCUSDT\"|\"0\"|\"997.15\"|\"46990.75\"|NULL|"
    ));
    // An adjustment without a verdict yet: exact decimals, JSON metrics, NULL outcome.
    let line = format!(
        concat!(
            r#""btc-sma"|2|{}|"stopLossPct"|"2.0"|"2.50"|"win rate 38% < 45%: widen the stop"|"#,
            r#""{{\"trades\":12,\"win_rate_pct\":\"55.50\",\"pnl\":\"-12.345\","#,
            r#"\"avg_return_pct\":\"0.10\",\"profit_factor\":null}}"|NULL|NULL|NULL"#,
            "\n"
        ),
        b1.adjustments[1].time.millis()
    );
    assert!(dump.contains(&line), "{line}\nnot in\n{dump}");
    let data_lines = dump.lines().filter(|l| !l.starts_with("== ")).count();
    assert_eq!(data_lines, 1 + 10 + 9 + 3 + 2 + 2 + 3 + 1);
}

#[tokio::test]
async fn failed_batch_leaves_nothing_and_earlier_batches_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SqliteLedger::open(&db_path(&dir, "ledger.db"))
        .await
        .unwrap();
    let id = "atomic";
    ledger.start_session(&session(id)).await.unwrap();
    let mut g = Gen::default();
    let mut b1 = g.batch(100, 100, 30, 5);
    b1.adjustments.push(g.adjustment());
    ledger.write_batch(&b1).await.unwrap();
    let after_b1 = dump_session(ledger.pool(), id).await.unwrap();

    // Decisions, trades, round trips, breaker events go in, then the
    // adjustments hit a duplicate primary key: everything must roll back,
    // including the session's cash and the position change.
    let mut b2 = g.batch(70, 70, 20, 3);
    b2.breaker_events.push(g.breaker_event());
    let dup = g.adjustment();
    b2.adjustments.push(dup.clone());
    b2.adjustments.push(dup);
    b2.positions[0].quantity = dec!(5);
    b2.cash = dec!(1.23);
    let err = ledger.write_batch(&b2).await.unwrap_err();
    assert!(matches!(err, LedgerError::Database(_)), "{err}");
    assert_eq!(dump_session(ledger.pool(), id).await.unwrap(), after_b1);

    // An outcome for an adjustment that does not exist fails after all the
    // inserts of its batch, and also leaves nothing.
    let mut b3 = g.batch(10, 10, 5, 1);
    b3.adjustment_outcomes.push(AdjustmentOutcomeRecord {
        id: 99,
        time: g.time(),
        outcome: Outcome::Positive,
        metrics_after: metrics(1, None),
    });
    let err = ledger.write_batch(&b3).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::UnknownAdjustment { id: 99, .. }),
        "{err}"
    );
    assert_eq!(dump_session(ledger.pool(), id).await.unwrap(), after_b1);

    // The handle is still usable, and store-assigned numbers continue without
    // gaps (the failed batches did not consume any).
    let mut g2 = Gen {
        decision_seq: 100,
        trade_seq: 100,
        adjustment_id: 1,
        minute: 10_000,
    };
    let b4 = g2.batch(5, 5, 4, 2);
    ledger.write_batch(&b4).await.unwrap();
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM round_trips WHERE session_id = ?1 ORDER BY seq")
            .bind(id)
            .fetch_all(ledger.pool())
            .await
            .unwrap();
    assert_eq!(seqs, (1..=34).collect::<Vec<_>>());
    let snaps: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM snapshots WHERE session_id = ?1")
        .bind(id)
        .fetch_one(ledger.pool())
        .await
        .unwrap();
    assert_eq!(snaps, 7);
    let cash: String = sqlx::query_scalar("SELECT cash FROM sessions WHERE id = ?1")
        .bind(id)
        .fetch_one(ledger.pool())
        .await
        .unwrap();
    assert_eq!(cash, b4.cash.to_string());
}

#[tokio::test]
async fn second_writer_is_refused_then_fenced_after_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir, "shared.db");
    let mut a = SqliteLedger::open(&path).await.unwrap();
    let mut b = SqliteLedger::open(&path).await.unwrap();
    let id = "fenced";

    // Writing needs a started session.
    assert!(matches!(
        a.write_batch(&Gen::default().batch(1, 1, 0, 0)).await,
        Err(LedgerError::NotStarted)
    ));
    let mut g = Gen::default();

    a.start_session(&session(id)).await.unwrap();
    // A's lease is live: B may not take the session.
    let err = b.start_session(&session(id)).await.unwrap_err();
    assert!(matches!(err, LedgerError::LeaseHeld { .. }), "{err}");
    assert!(matches!(
        a.start_session(&session("other")).await,
        Err(LedgerError::AlreadyStarted { .. })
    ));

    let a1 = g.batch(10, 10, 3, 1);
    a.write_batch(&a1).await.unwrap();
    // A stalls: its last write leaves a lease that is already expired.
    a.set_lease_ttl(Duration::ZERO);
    a.write_batch(&LedgerBatch {
        cash: a1.cash,
        time: a1.time,
        ..LedgerBatch::default()
    })
    .await
    .unwrap();

    // B takes over and continues the store-assigned numbering.
    b.start_session(&session(id)).await.unwrap();
    let a2 = g.batch(10, 10, 3, 1);
    let b_batch = {
        let mut gb = Gen {
            decision_seq: 10,
            trade_seq: 10,
            adjustment_id: 0,
            minute: 5_000,
        };
        gb.batch(4, 4, 2, 1)
    };
    let err = a.write_batch(&a2).await.unwrap_err();
    assert!(matches!(err, LedgerError::Fenced { .. }), "{err}");
    b.write_batch(&b_batch).await.unwrap();
    let err = a.finish_session(&end(a2.cash)).await.unwrap_err();
    assert!(matches!(err, LedgerError::Fenced { .. }), "{err}");
    b.finish_session(&end(b_batch.cash)).await.unwrap();

    // Only A's first batch and B's batch are stored; the session ended as B said.
    let pool = b.pool();
    let decisions: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM decisions WHERE session_id = ?1 ORDER BY seq")
            .bind(id)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(decisions, (1..=14).collect::<Vec<_>>());
    let rt: Vec<(i64, i64)> =
        sqlx::query_as("SELECT seq, exit_time FROM round_trips WHERE session_id = ?1 ORDER BY seq")
            .bind(id)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(rt.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(rt[3].1 > T0 + 5_000 * MIN, "rows 4 and 5 are B's");
    let cash: String = sqlx::query_scalar("SELECT cash FROM sessions WHERE id = ?1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(cash, b_batch.cash.to_string());

    // A finished session cannot be restarted by anyone.
    let mut c = SqliteLedger::open(&path).await.unwrap();
    let err = c.start_session(&session(id)).await.unwrap_err();
    assert!(matches!(err, LedgerError::SessionFinished { .. }), "{err}");
    // A is free again for a new session.
    a.start_session(&session("fenced-2")).await.unwrap();
}

#[tokio::test]
async fn next_session_id_picks_the_smallest_free_run_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SqliteLedger::open(&db_path(&dir, "ids.db")).await.unwrap();
    assert_eq!(ledger.next_session_id("btc").await.unwrap(), "btc");

    let start = async |ledger: &mut SqliteLedger, id: &str| {
        ledger.start_session(&session(id)).await.unwrap();
        ledger.finish_session(&end(dec!(1))).await.unwrap();
    };
    start(&mut ledger, "btc").await;
    assert_eq!(ledger.next_session_id("btc").await.unwrap(), "btc-2");
    start(&mut ledger, "btc-2").await;
    assert_eq!(ledger.next_session_id("btc").await.unwrap(), "btc-3");
    // Unrelated ids sharing the prefix do not count; gaps are reused.
    start(&mut ledger, "btc-4").await;
    start(&mut ledger, "btc-x").await;
    start(&mut ledger, "btcusd").await;
    assert_eq!(ledger.next_session_id("btc").await.unwrap(), "btc-3");
    assert_eq!(ledger.next_session_id("btc-2").await.unwrap(), "btc-2-2");
    assert_eq!(ledger.next_session_id("bt").await.unwrap(), "bt");
    assert_eq!(ledger.next_session_id("eth").await.unwrap(), "eth");
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir, "nested/dir/ledger.db");
    let before = {
        let mut ledger = SqliteLedger::open(&path).await.unwrap();
        ledger.start_session(&session("reopen")).await.unwrap();
        ledger
            .write_batch(&Gen::default().batch(3, 3, 1, 1))
            .await
            .unwrap();
        let dump = dump_session(ledger.pool(), "reopen").await.unwrap();
        ledger.pool().close().await;
        dump
    };
    for _ in 0..2 {
        let ledger = SqliteLedger::open(&path).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(ledger.pool())
            .await
            .unwrap();
        assert_eq!(applied, 1);
        assert_eq!(dump_session(ledger.pool(), "reopen").await.unwrap(), before);
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(ledger.pool())
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        ledger.pool().close().await;
    }
}

#[tokio::test]
async fn identical_sessions_dump_identically_and_differences_show() {
    let dir = tempfile::tempdir().unwrap();
    async fn run(path: &str, tweak: bool) -> String {
        let mut ledger = SqliteLedger::open(path).await.unwrap();
        ledger.start_session(&session("same")).await.unwrap();
        let mut g = Gen::default();
        for i in 0..5 {
            let mut b = g.batch(150, 120, 40, 9);
            b.breaker_events.push(g.breaker_event());
            b.adjustments.push(g.adjustment());
            if i > 0 {
                b.adjustment_outcomes.push(AdjustmentOutcomeRecord {
                    id: g.adjustment_id - 1,
                    time: g.time(),
                    outcome: Outcome::Neutral,
                    metrics_after: metrics(7, Some(dec!(1.5))),
                });
            }
            if tweak && i == 3 {
                // Same value, different scale: the ledger must tell them apart.
                b.trades[17].fee = dec!(0.09970);
            }
            ledger.write_batch(&b).await.unwrap();
        }
        ledger.finish_session(&end(dec!(9876.54))).await.unwrap();
        dump_session(ledger.pool(), "same").await.unwrap()
    }
    let one = run(&db_path(&dir, "one.db"), false).await;
    let two = run(&db_path(&dir, "two.db"), false).await;
    assert_eq!(
        one.lines().count(),
        8 + 1 + 750 + 600 + 200 + 5 + 5 + 45 + 1
    );
    assert_eq!(one, two);
    let tweaked = run(&db_path(&dir, "three.db"), true).await;
    assert_ne!(one, tweaked);
    assert_eq!(one.lines().count(), tweaked.lines().count());
}

#[tokio::test]
async fn batches_of_every_size_are_stored_completely() {
    // Every chunk shape (256, 128, ..., 1) and combinations of them.
    let mut ledger = SqliteLedger::open("sqlite::memory:").await.unwrap();
    ledger.start_session(&session("sizes")).await.unwrap();
    let mut g = Gen::default();
    let mut total = 0;
    for n in [0usize, 1, 2, 3, 63, 64, 65, 255, 256, 257, 1000] {
        ledger.write_batch(&g.batch(n, n, n, n)).await.unwrap();
        total += n as i64;
    }
    for table in ["decisions", "trades", "round_trips", "snapshots"] {
        let sql =
            format!("SELECT COUNT(*), MIN(seq), MAX(seq) FROM {table} WHERE session_id = 'sizes'");
        let (count, min, max): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(ledger.pool())
            .await
            .unwrap();
        assert_eq!((count, min, max), (total, 1, total), "{table}");
    }
}
